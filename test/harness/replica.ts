/**
 * One aegis-server replica in its own process, for the scale-out tests: several of them on
 * one database (a test PostgreSQL), each killable with SIGKILL. The configuration is the
 * server's own (environment: DATABASE_URL, NATS_URL, AEGIS_LEASE_SECONDS, ...); rate limits
 * are AEGIS_RATE_LIMITS (off but for those a test names). Prints one JSON line
 * {url, adminKey, holder} when listening, and closes gracefully on SIGTERM.
 *
 *   startReplica({ env }) from a test (below), or: node dist/test/harness/replica.js
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { onlyRateLimits } from './server.js';


export interface Replica {
  url: string;
  adminKey: string;
  /** Its lease holder id. */
  holder: string;
  process: ChildProcess;
  /** SIGKILL, no cleanup (the lease row stays until it expires). */
  kill(): Promise<void>;
  /** SIGTERM: graceful close (hands the lease back). */
  stop(): Promise<void>;
  stderr(): string;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** `rateLimits`: AEGIS_RATE_LIMITS entries (e.g. `validate_per_license=4/min`); every limit not named is off. */
export async function startReplica(env: Record<string, string>, rateLimits = ''): Promise<Replica> {
  const entry = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [entry], {
    env: { PATH: process.env.PATH, LOG_LEVEL: 'warn', AEGIS_HTTP_KEEPALIVE_TIMEOUT_MS: '65000', AEGIS_RATE_LIMITS: onlyRateLimits(rateLimits), ...env, AEGIS_REPLICA_CHILD: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 200_000) err = err.slice(-100_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => { live.delete(child); resolve(); }));
  const first = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', resolve);
    child.once('exit', (code, sig) => reject(new Error(`replica exited (${code ?? sig}) before listening: ${err}`)));
  });
  const info = JSON.parse(first) as { url: string; adminKey: string; holder: string };
  return {
    ...info,
    process: child,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
    stderr: () => err,
  };
}

async function main(): Promise<void> {
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { startApp } = await import('../../server/src/app.js');
  const { SCOPES } = await import('../../server/src/api_keys.js');
  const { loadConfig } = await import('../../server/src/config.js');
  const { KeyStore } = await import('../../server/src/keys/keystore.js');
  const { createLogger } = await import('../../server/src/logger.js');
  const keysDir = process.env.AEGIS_KEYS_DIR ?? join(mkdtempSync(join(tmpdir(), 'aegis-replica-')), 'keys');
  const keys = KeyStore.open(keysDir);
  if (keys.activeKid() === null) keys.generate();
  const config = loadConfig({ listen: '127.0.0.1:0', keysDir }, process.env);
  const log = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' }); // every level to stderr: stdout is the JSON line
  const app = await startApp(config, { auditRefusalsPerMinute: 100000, logger: log });
  const admin = await app.apiKeys.create(`replica-admin-${process.pid}`, [...SCOPES]);
  process.stdout.write(JSON.stringify({ url: app.http.url, adminKey: admin.key, holder: app.lease.holder }) + '\n');
  process.on('SIGTERM', () => {
    void app.close().finally(() => process.exit(0));
  });
}

if (process.env.AEGIS_REPLICA_CHILD === '1') {
  main().catch((e: unknown) => {
    process.stderr.write(`replica failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
