/**
 * Opens the database named by DATABASE_URL: `sqlite:<path>` (default, better-sqlite3) or
 * `postgres://…` (pg). The rest of the server sees only Kysely<Database>.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import SqliteDatabase from 'better-sqlite3';
import pg from 'pg';
import type { Database } from './schema.js';

export type Dialect = 'sqlite' | 'postgres';

export interface OpenedDatabase {
  db: Kysely<Database>;
  dialect: Dialect;
  /** A description safe to log (no password). */
  description: string;
}

/** `poolSize`: PostgreSQL connections at most (default 10). */
export function openDatabase(url: string, opts: { poolSize?: number } = {}): OpenedDatabase {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 10 });
    // An idle pooled connection that PostgreSQL closes (a restart, a failover) is dropped
    // by the pool and the next query opens a new one; without a listener the pool's
    // 'error' event would end the process instead.
    pool.on('error', () => undefined);
    // The pool listens only while a connection is idle in it. One checked out (a
    // transaction between its statements, a scrape's queries) that PostgreSQL terminates
    // emits 'error' on the client itself, which would end the process too; swallowed here,
    // the client's next query fails, the caller sees that error, and the pool drops the
    // dead client when it comes back.
    pool.on('connect', (client) => client.on('error', () => undefined));
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    const safe = url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
    return { db, dialect: 'postgres', description: safe };
  }
  const path = url.startsWith('sqlite:') ? url.slice('sqlite:'.length) : url;
  if (path.length === 0) throw new Error('DATABASE_URL sqlite: needs a path, e.g. sqlite:./var/aegis.db');
  const file = path === ':memory:' ? path : resolve(path);
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const handle = new SqliteDatabase(file);
  // WAL lets readers proceed during a write; busy_timeout makes a second process wait
  // for the write lock (e.g. `aegis-server admin create-key` next to a running server).
  handle.pragma('journal_mode = WAL');
  handle.pragma('busy_timeout = 5000');
  handle.pragma('foreign_keys = ON');
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: cachingStatements(handle) }) });
  return { db, dialect: 'sqlite', description: `sqlite:${file}` };
}

/** Prepared statements kept per SQLite handle (distinct SQL texts; the oldest goes first). */
const MAX_CACHED_STATEMENTS = 500;

/**
 * The handle kysely queries through, preparing each SQL text once: kysely prepares every
 * query it runs, and SQLite's prepare cost more than most of the server's queries
 * themselves. Safe on one connection: kysely runs one query at a time on it (its mutex),
 * and SQLite re-prepares a statement itself after a schema change.
 */
function cachingStatements(handle: InstanceType<typeof SqliteDatabase>): { prepare(sql: string): ReturnType<typeof handle.prepare>; close(): void } {
  const statements = new Map<string, ReturnType<typeof handle.prepare>>();
  return {
    prepare(text: string) {
      let stmt = statements.get(text);
      if (stmt === undefined) {
        stmt = handle.prepare(text);
        if (statements.size >= MAX_CACHED_STATEMENTS) statements.delete(statements.keys().next().value!);
        statements.set(text, stmt);
      }
      return stmt;
    },
    close() {
      statements.clear();
      handle.close();
    },
  };
}

export async function pingDatabase(db: Kysely<Database>): Promise<void> {
  await sql`select 1`.execute(db);
}
