/** `aegis-server migrate status|down`: what has run, and reverting the last migration. */
import type { Kysely } from 'kysely';
import type { Dialect } from '../db/database.js';
import { migratorFor } from '../db/migrations.js';
import type { Database } from '../db/schema.js';

export interface MigrationState {
  name: string;
  executed_at: string | null;
}

export async function migrationStatus(db: Kysely<Database>, dialect: Dialect): Promise<MigrationState[]> {
  return (await migratorFor(db, dialect).getMigrations()).map((m) => ({ name: m.name, executed_at: m.executedAt ? m.executedAt.toISOString() : null }));
}

/** Reverts the last executed migration (its `down`, in a transaction where the engine allows); returns its name, or null when none has run. */
export async function migrateDownOne(db: Kysely<Database>, dialect: Dialect): Promise<string | null> {
  const { error, results } = await migratorFor(db, dialect).migrateDown();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  const done = (results ?? []).find((r) => r.status === 'Success');
  return done ? done.migrationName : null;
}
