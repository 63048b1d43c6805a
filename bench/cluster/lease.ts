/**
 * bench/cluster, lease takeover: two aegis-server replica processes on one PostgreSQL with
 * a short AEGIS_LEASE_SECONDS; the holder is killed with SIGKILL (no hand-back) and the
 * time until the other holds the singleton lease is read from the leases table (polled
 * every few ms). Repeated, a fresh replica started in place of each killed one; the
 * baseline is the lease length itself: the row of a killed holder expires at most one
 * lease after its last renewal and the survivor tries every third of a lease, so a
 * takeover lands between 2/3 and 4/3 of a lease after the kill.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { startPostgres } from '../../test/harness/postgres.js';
import { startReplica, type Replica } from '../../test/harness/replica.js';
import { line, opt, pct, ratio } from './common.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function leasePhase(): Promise<void> {
  const LEASE = opt('lease-seconds', 2);
  const ROUNDS = opt('takeovers', 5);
  const pgc = await startPostgres();
  const work = mkdtempSync(join(tmpdir(), 'aegis-bench-lease-'));
  const keysDir = join(work, 'keys');
  KeyStore.open(keysDir).generate();
  const dbUrl = await pgc.newDatabase();
  const env = { DATABASE_URL: dbUrl, AEGIS_KEYS_DIR: keysDir, AEGIS_LEASE_SECONDS: String(LEASE), LOG_LEVEL: 'error' };
  const sqlc = new pg.Client({ connectionString: dbUrl });
  let replicas: Replica[] = [];
  try {
    replicas.push(await startReplica(env)); // the first migrates the fresh database
    replicas.push(await startReplica(env));
    await sqlc.connect();
    const holderNow = async () => ((await sqlc.query("select holder from leases where name = 'singleton'")).rows[0] as { holder: string } | undefined)?.holder;
    const taken: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const holder = await holderNow();
      const victim = replicas.find((x) => x.holder === holder);
      if (!victim) throw new Error(`no replica holds the lease (row: ${holder ?? 'none'})`);
      const survivor = replicas.find((x) => x !== victim)!;
      // Kill at a random point of the renewal cycle, as a crash would.
      await sleep(Math.random() * (LEASE * 1000) / 3);
      const t0 = performance.now();
      await victim.kill();
      const deadline = t0 + (LEASE * 2 + 5) * 1000;
      while ((await holderNow()) !== survivor.holder) {
        if (performance.now() > deadline) throw new Error(`no takeover within ${LEASE * 2 + 5} s`);
        await sleep(5);
      }
      taken.push(performance.now() - t0);
      replicas = [survivor, await startReplica(env)];
    }
    const ms = LEASE * 1000;
    process.stdout.write(
      [
        `bench/cluster lease takeover: 2 replicas on one PostgreSQL, AEGIS_LEASE_SECONDS=${LEASE}, the holder killed with SIGKILL ${ROUNDS} times, leases table polled every 5 ms`,
        line('baseline', 'lease length (expected takeover: 2/3 to 4/3 of it)', `${ms.toFixed(0).padStart(7)} ms`),
        line('measured', 'kill -9 of the holder → the other holds the lease', `p50 ${pct(taken, 50).toFixed(0).padStart(6)} ms   max ${Math.max(...taken).toFixed(0).padStart(6)} ms   (${taken.map((x) => x.toFixed(0)).join(', ')})`),
        line('ratio', 'takeover p50 / lease length', ratio(pct(taken, 50), ms)),
        line('ratio', 'takeover max / lease length', ratio(Math.max(...taken), ms)),
      ].join('\n') + '\n',
    );
  } finally {
    await sqlc.end().catch(() => undefined);
    for (const r of replicas) await r.stop().catch(() => undefined);
    await pgc.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
