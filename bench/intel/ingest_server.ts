/**
 * The server under the ingest benchmark (bench/intel/ingest.ts forks it, so the load
 * generator does not share its event loop): a real aegis-server on SQLite with rate limits
 * lifted and the periodic correlation pass parked (AEGIS_RULES_INTERVAL_SECONDS=3600); the
 * parent switches a correlation loop on and off over IPC instead (a pass every intervalMs,
 * as the server's timer does, or back to back with 0), so it knows every pass's duration.
 * Every alert raised is reported to the parent with its wall-clock time and the arrival
 * (received_at) of the latest event in its evidence.
 *
 * IPC, parent → child: {cmd: 'correlate', on, intervalMs}, {cmd: 'emptyPasses', n},
 * {cmd: 'bareInsert', machineId, rows, batch, kind, source}, {cmd: 'stop'}.
 * Child → parent: {type: 'ready', url, adminKey}, {type: 'alert', rule_id, machine_id, t, arrived},
 * {type: 'passes', ms: number[]}, {type: 'inserted', rows, ms}.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setImmediate as yieldLoop, setTimeout as sleep } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import { startApp } from '../../server/src/app.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { loadConfig } from '../../server/src/config.js';
import type { Database } from '../../server/src/db/schema.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { createLogger } from '../../server/src/logger.js';

type Command =
  | { cmd: 'correlate'; on: boolean; intervalMs?: number }
  | { cmd: 'emptyPasses'; n: number }
  | { cmd: 'bareInsert'; machineId: string; rows: number; batch: number; kind: string; source: 'telemetry' | 'threat' }
  | { cmd: 'stop' };

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
const wall = () => performance.timeOrigin + performance.now();
const send = (m: unknown) => process.send!(m);

const dir = mkdtempSync(join(tmpdir(), 'aegis-bench-intel-'));
KeyStore.open(join(dir, 'keys')).generate();
const app = await startApp(
  loadConfig({ listen: '127.0.0.1:0', database: `sqlite:${join(dir, 'aegis.db')}`, keysDir: join(dir, 'keys') }, { AEGIS_RULES_INTERVAL_SECONDS: '3600', LOG_LEVEL: 'error', AEGIS_HTTP_KEEPALIVE_TIMEOUT_MS: '65000', AEGIS_RATE_LIMITS: 'off' }),
  {
    logger: createLogger({ silent: true }),
    auditRefusalsPerMinute: 1e9,
  },
);
const db = app.ctx.db as Kysely<Database>;
const admin = await app.apiKeys.create('bench', [...SCOPES]);

const audited = app.correlator.onAlert;
app.correlator.onAlert = async (a, rule) => {
  const t = wall();
  await audited?.(a, rule);
  // The arrival of the event that completed the alert: the latest received_at among the events in its evidence.
  const ids = a.evidence.refs.filter((r) => r.startsWith('e:')).map((r) => Number(r.slice(2)));
  const rows = ids.length > 0 ? await db.selectFrom('events').select('received_at').where('id', 'in', ids).execute() : [];
  const arrived = rows.length > 0 ? Math.max(...rows.map((r) => Date.parse(r.received_at))) : null;
  send({ type: 'alert', rule_id: a.rule_id, machine_id: a.machine_id, t, arrived });
};

let looping: Promise<void> | null = null;
let loopOn = false;
let loopPasses: number[] = [];
let intervalMs = 1000;
async function loop(): Promise<void> {
  while (loopOn) {
    const t0 = performance.now();
    await app.correlator.evaluate();
    const ms = performance.now() - t0;
    loopPasses.push(ms);
    // The server's timer runs a pass every AEGIS_RULES_INTERVAL_SECONDS (1 s at the least);
    // intervalMs 0 runs them back to back (then ingest waits behind passes).
    if (intervalMs > 0) await sleep(Math.max(0, intervalMs - ms));
    else await yieldLoop();
  }
}

async function handle(m: Command): Promise<void> {
  switch (m.cmd) {
    case 'correlate':
      if (m.on && !looping) {
        intervalMs = m.intervalMs ?? intervalMs;
        loopOn = true;
        loopPasses = [];
        looping = loop();
      } else if (!m.on && looping) {
        loopOn = false;
        await looping;
        looping = null;
        send({ type: 'passes', ms: loopPasses });
      }
      return;
    case 'emptyPasses': {
      const ms: number[] = [];
      for (let i = 0; i < m.n; i++) {
        const t0 = performance.now();
        await app.correlator.evaluate();
        ms.push(performance.now() - t0);
      }
      send({ type: 'passes', ms });
      return;
    }
    case 'bareInsert': {
      // The same rows the telemetry route writes (same columns, same JSON body shape, same
      // batch per transaction, RETURNING id), without HTTP, tokens, validation or lookups.
      const at = new Date().toISOString();
      const t0 = performance.now();
      for (let done = 0; done < m.rows; done += m.batch) {
        const n = Math.min(m.batch, m.rows - done);
        await db.transaction().execute(async (trx) => {
          const rows = Array.from({ length: n }, (_, i) => ({
            source: m.source,
            machine_id: m.machineId,
            customer_id: null,
            at,
            received_at: at,
            kind: m.kind,
            severity: m.source === 'threat' ? 'high' : null,
            body: JSON.stringify(m.source === 'threat' ? { kind: m.kind, severity: 'high', observed_at: at, process: { pid: done + i } } : { fields: { seq: done + i, dst: '10.0.0.1', port: 443 } }),
          }));
          await trx.insertInto('events').values(rows).returning('id').execute();
        });
      }
      send({ type: 'inserted', rows: m.rows, ms: performance.now() - t0 });
      return;
    }
    case 'stop':
      loopOn = false;
      await looping;
      await app.close();
      rmSync(dir, { recursive: true, force: true });
      process.exit(0); // a clean exit writes the --cpu-prof profile
  }
}

process.on('message', (m: Command) => {
  handle(m).catch((e: unknown) => {
    process.stderr.write(`bench server: ${(e as Error).stack}\n`);
    process.exit(1);
  });
});
send({ type: 'ready', url: app.http.url, adminKey: admin.key });
