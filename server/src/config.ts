/** Server configuration: flags override environment, environment overrides defaults. */
import { DEFAULT_KERNEL_TOKEN_TTL_SECONDS } from '../../protocol/src/index.js';

export interface ServerConfig {
  host: string;
  port: number;
  databaseUrl: string;
  keysDir: string;
  kernelTokenTtlSeconds: number;
  logLevel: string;
  logFormat: 'json' | 'text';
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[3]) > 65535) throw new Error(`--listen must be host:port (e.g. 127.0.0.1:8000), got ${JSON.stringify(listen)}`);
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

export function loadConfig(flags: { listen?: string; database?: string; keysDir?: string } = {}, env = process.env): ServerConfig {
  const { host, port } = parseListen(flags.listen ?? env.AEGIS_LISTEN ?? '127.0.0.1:8000');
  const ttlText = env.AEGIS_KERNEL_TOKEN_TTL;
  const ttl = ttlText === undefined ? DEFAULT_KERNEL_TOKEN_TTL_SECONDS : Number(ttlText);
  if (!Number.isInteger(ttl) || ttl < 60 || ttl > 7 * 86400) {
    throw new Error(`AEGIS_KERNEL_TOKEN_TTL must be an integer number of seconds from 60 to 604800, got ${JSON.stringify(ttlText)}`);
  }
  const format = (env.LOG_FORMAT ?? 'json').toLowerCase();
  if (format !== 'json' && format !== 'text') throw new Error(`LOG_FORMAT must be json or text, got ${JSON.stringify(format)}`);
  return {
    host,
    port,
    databaseUrl: flags.database ?? env.DATABASE_URL ?? 'sqlite:./var/aegis.db',
    keysDir: flags.keysDir ?? env.AEGIS_KEYS_DIR ?? 'keys',
    kernelTokenTtlSeconds: ttl,
    logLevel: (env.LOG_LEVEL ?? 'info').toLowerCase(),
    logFormat: format,
  };
}
