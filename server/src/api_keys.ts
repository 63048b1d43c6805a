/**
 * Admin API keys: shown once at creation, stored as a SHA-256 hash (the key is 256 random
 * bits, so a fast hash is enough: there is nothing to brute-force).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { AegisError } from '../../protocol/src/index.js';
import type { Database } from './db/schema.js';
import { iso, type Clock } from './clock.js';

export const SCOPES = [
  'customers:read',
  'customers:write',
  'licenses:read',
  'licenses:write',
  'admin:read',
  'seg:read',
  'seg:write',
  /** GET /metrics: counts over every customer, so only an unrestricted key may hold it usefully. */
  'metrics:read',
  'webhooks:read',
  'webhooks:write',
  /** Findings and package inventories of machines (tenancy applies); YARA rules and hash lists (an unrestricted key only). */
  'intel:read',
  /** YARA rules and hash lists: they judge every customer's files, so an unrestricted key only. */
  'intel:write',
  /** GET /api/v1/events: what agents reported (threats, file verdicts, telemetry). */
  'events:read',
  /** Correlation rules (they run over every customer's events: writing them needs an unrestricted key). */
  'rules:read',
  'rules:write',
  /** Alerts raised by correlation rules (tenancy applies). */
  'alerts:read',
  /** Decisions of rules with an action (tenancy applies): read, and approve/reject. */
  'decisions:read',
  'decisions:write',
] as const;
export type Scope = (typeof SCOPES)[number];

export interface ApiPrincipal {
  id: string;
  name: string;
  scopes: Scope[];
  /** The one customer the key is limited to (see tenancy.ts); null: every customer. */
  customer_id: string | null;
}

export interface ApiKeyListing {
  id: string;
  name: string;
  key_prefix: string;
  scopes: string[];
  customer_id: string | null;
  created_at: string;
  revoked_at: string | null;
}

export function isScope(s: string): s is Scope {
  return (SCOPES as readonly string[]).includes(s);
}

function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** What signs a request in by the operator console's session cookie (console/sessions.ts). */
export interface SessionAuthenticator {
  presented(req: { headers: Record<string, string | string[] | undefined> }): boolean;
  authenticate(req: any): Promise<{ principal: ApiPrincipal }>;
}

export class ApiKeys {
  /** Console sessions: a request without a key may carry one instead (http/auth.ts). */
  sessions: SessionAuthenticator | null = null;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  /**
   * Creates a key; the returned `key` is the only time it exists in clear. With
   * `customerId` the key is limited to that customer, which must exist.
   */
  async create(
    name: string,
    scopes: string[],
    customerId: string | null = null,
  ): Promise<{ id: string; name: string; scopes: Scope[]; customer_id: string | null; key: string }> {
    const bad = scopes.filter((s) => !isScope(s));
    if (bad.length > 0) throw new AegisError('BAD_REQUEST', `unknown scope(s): ${bad.join(', ')}; known: ${SCOPES.join(', ')}`);
    if (!name.trim()) throw new AegisError('BAD_REQUEST', 'a key needs a name');
    if (customerId !== null) {
      const c = await this.db.selectFrom('customers').select('id').where('id', '=', customerId).executeTakeFirst();
      if (!c) throw new AegisError('NOT_FOUND', `no customer ${customerId}; a key can only be limited to an existing customer`);
    }
    const key = `aegis_sk_${randomBytes(32).toString('base64url')}`;
    const id = randomUUID();
    const uniq = [...new Set(scopes)] as Scope[];
    await this.db
      .insertInto('api_keys')
      .values({
        id,
        name: name.trim(),
        key_hash: hashKey(key),
        key_prefix: key.slice(0, 13),
        scopes: JSON.stringify(uniq),
        customer_id: customerId,
        created_at: iso(this.clock.now()),
        last_used_at: null,
        revoked_at: null,
      })
      .execute();
    return { id, name: name.trim(), scopes: uniq, customer_id: customerId, key };
  }

  async count(): Promise<number> {
    const { n } = await this.db
      .selectFrom('api_keys')
      .select((eb) => eb.fn.countAll<string | number>().as('n'))
      .where('revoked_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  async list(): Promise<ApiKeyListing[]> {
    const rows = await this.db.selectFrom('api_keys').selectAll().orderBy('created_at').execute();
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      key_prefix: r.key_prefix,
      scopes: JSON.parse(r.scopes) as string[],
      customer_id: r.customer_id,
      created_at: r.created_at,
      revoked_at: r.revoked_at,
    }));
  }

  async revoke(id: string): Promise<boolean> {
    const r = await this.db
      .updateTable('api_keys')
      .set({ revoked_at: iso(this.clock.now()) })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** The principal of key `id` (a console session's), or null when unknown or revoked. */
  async principalById(id: string): Promise<ApiPrincipal | null> {
    const row = await this.db.selectFrom('api_keys').selectAll().where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
    if (!row) return null;
    return { id: row.id, name: row.name, scopes: (JSON.parse(row.scopes) as string[]).filter(isScope), customer_id: row.customer_id };
  }

  /** The principal for a presented key, or null when unknown or revoked. */
  async authenticate(key: string): Promise<ApiPrincipal | null> {
    if (key.length < 16 || key.length > 256) return null;
    const row = await this.db
      .selectFrom('api_keys')
      .selectAll()
      .where('key_hash', '=', hashKey(key))
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (!row) return null;
    return { id: row.id, name: row.name, scopes: (JSON.parse(row.scopes) as string[]).filter(isScope), customer_id: row.customer_id };
  }
}
