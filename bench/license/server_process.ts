/**
 * The server under benchmark, in its own process so the load generator does not share
 * its event loop. Rate limits are lifted through the operator setting
 * (AEGIS_RATE_LIMITS=off: the benchmark measures throughput, not the brakes). Prints one JSON line {url, adminKey, dir} when ready.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApp } from '../../server/src/app.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { loadConfig } from '../../server/src/config.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { createLogger } from '../../server/src/logger.js';

// AEGIS_BENCH_DIR: a directory kept between runs (the database size phase's generated
// databases); else a fresh one.
const dir = process.env.AEGIS_BENCH_DIR ?? mkdtempSync(join(tmpdir(), 'aegis-bench-'));
const keys = KeyStore.open(join(dir, 'keys'));
if (keys.activeKid() === null) keys.generate();
const app = await startApp(
  loadConfig(
    { listen: '127.0.0.1:0', database: process.env.DATABASE_URL ?? `sqlite:${join(dir, 'aegis.db')}`, keysDir: join(dir, 'keys') },
    { AEGIS_RATE_LIMIT_STORE: process.env.AEGIS_RATE_LIMIT_STORE, AEGIS_RATE_LIMITS: process.env.AEGIS_RATE_LIMITS ?? 'off' },
  ),
  { logger: createLogger({ silent: true }) },
);
const admin = await app.apiKeys.create('bench', [...SCOPES]);
process.stdout.write(JSON.stringify({ url: app.http.url, adminKey: admin.key, dir }) + '\n');
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
