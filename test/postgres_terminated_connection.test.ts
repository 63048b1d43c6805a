/**
 * PostgreSQL ends a connection the server holds checked out (a transaction between its
 * statements) — an administrator's pg_terminate_backend, a restart, a failover. pg emits
 * 'error' on that client, outside any query; with no listener that would end the whole
 * server process. Against a real PostgreSQL: the process survives, the transaction's next
 * statement fails, and the next query on the pool works on a fresh connection.
 */
import t from 'tap';
import { sql } from 'kysely';
import { openDatabase } from '../server/src/db/database.js';
import { requireCapability } from './harness/capabilities.js';
import { missingPostgres, startPostgres } from './harness/postgres.js';

if (requireCapability(t, missingPostgres())) {
  t.test('a checked-out connection terminated by PostgreSQL does not end the process', async (t) => {
    const pg = await startPostgres();
    t.teardown(() => pg.stop());
    const { db } = openDatabase(await pg.newDatabase());
    t.teardown(() => db.destroy());
    let uncaught: Error | null = null;
    const onUncaught = (e: Error): void => {
      uncaught = e;
    };
    process.on('uncaughtException', onUncaught);
    t.teardown(() => void process.off('uncaughtException', onUncaught));

    const other = openDatabase(await pg.newDatabase());
    t.teardown(() => other.db.destroy());
    const outcome = await db
      .transaction()
      .execute(async (trx) => {
        const pid = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid;
        const killed = (await sql<{ ok: boolean }>`select pg_terminate_backend(${pid}) as ok`.execute(other.db)).rows[0]!.ok;
        t.equal(killed, true, 'PostgreSQL terminated the transaction’s backend');
        // The FATAL message reaches the idle, checked-out client now, outside any query.
        await new Promise((r) => setTimeout(r, 300));
        await sql`select 1`.execute(trx);
        return 'committed';
      })
      .catch((e: Error) => `failed: ${e.message}`);
    t.match(outcome, /^failed:/, 'the transaction’s next statement fails and the caller sees it');
    t.equal(uncaught, null, 'no uncaught error: the process lives');
    const after = await sql<{ one: number }>`select 1 as one`.execute(db);
    t.equal(after.rows[0]!.one, 1, 'the pool answers on a fresh connection');
  });
}
