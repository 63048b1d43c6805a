/** Server configuration: flags override environment, environment overrides defaults. */
import { readFileSync, statSync } from 'node:fs';
import { DEFAULT_KERNEL_TOKEN_TTL_SECONDS, parseFleetKey } from '../../protocol/src/index.js';

export interface ServerConfig {
  host: string;
  port: number;
  databaseUrl: string;
  keysDir: string;
  kernelTokenTtlSeconds: number;
  logLevel: string;
  logFormat: 'json' | 'text';
  /** NATS for snapshot and license distribution; empty: HTTP fallback only. */
  natsUrl: string;
  natsUser: string;
  natsPassword: string;
  /** Seed 002's fleet key (AEGIS_FLEET_KEY, or AEGIS_FLEET_KEY_FILE, 0600); null: no license envelopes. */
  fleetKey: Buffer | null;
  /** How often current snapshots are republished (the TTL renewal hosts see). */
  segRepublishSeconds: number;
}

function fleetKeyFrom(env: NodeJS.ProcessEnv): Buffer | null {
  let text = env.AEGIS_FLEET_KEY;
  const file = env.AEGIS_FLEET_KEY_FILE;
  if (!text && file) {
    const st = statSync(file);
    if ((st.mode & 0o077) !== 0) throw new Error(`AEGIS_FLEET_KEY_FILE ${file} must not be readable by group or others (chmod 600 ${file})`);
    text = readFileSync(file, 'utf8');
  }
  return text ? parseFleetKey(text) : null;
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[3]) > 65535) throw new Error(`--listen must be host:port (e.g. 127.0.0.1:8000), got ${JSON.stringify(listen)}`);
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

export function loadConfig(flags: { listen?: string; database?: string; keysDir?: string; natsUrl?: string } = {}, env = process.env): ServerConfig {
  const { host, port } = parseListen(flags.listen ?? env.AEGIS_LISTEN ?? '127.0.0.1:8000');
  const ttlText = env.AEGIS_KERNEL_TOKEN_TTL;
  const ttl = ttlText === undefined ? DEFAULT_KERNEL_TOKEN_TTL_SECONDS : Number(ttlText);
  if (!Number.isInteger(ttl) || ttl < 60 || ttl > 7 * 86400) {
    throw new Error(`AEGIS_KERNEL_TOKEN_TTL must be an integer number of seconds from 60 to 604800, got ${JSON.stringify(ttlText)}`);
  }
  const format = (env.LOG_FORMAT ?? 'json').toLowerCase();
  if (format !== 'json' && format !== 'text') throw new Error(`LOG_FORMAT must be json or text, got ${JSON.stringify(format)}`);
  const republish = Number(env.AEGIS_SEG_REPUBLISH_SECONDS ?? 20);
  if (!Number.isInteger(republish) || republish < 1 || republish > 3600) {
    throw new Error(`AEGIS_SEG_REPUBLISH_SECONDS must be 1..3600, got ${JSON.stringify(env.AEGIS_SEG_REPUBLISH_SECONDS)}`);
  }
  return {
    host,
    port,
    natsUrl: flags.natsUrl ?? env.NATS_URL ?? '',
    natsUser: env.AEGIS_NATS_USER ?? '',
    natsPassword: env.AEGIS_NATS_PASSWORD ?? '',
    fleetKey: fleetKeyFrom(env),
    segRepublishSeconds: republish,
    databaseUrl: flags.database ?? env.DATABASE_URL ?? 'sqlite:./var/aegis.db',
    keysDir: flags.keysDir ?? env.AEGIS_KEYS_DIR ?? 'keys',
    kernelTokenTtlSeconds: ttl,
    logLevel: (env.LOG_LEVEL ?? 'info').toLowerCase(),
    logFormat: format,
  };
}
