/**
 * Tenancy: an admin API key may be limited to one customer. Such a key sees and targets
 * only that customer's customer row, licenses, machines, audit rows and segmentation
 * targets (its machines, by id). Every route asks this one class, so the
 * rule lives in one place per resource:
 *
 * - a row of another customer is NOT_FOUND with the same message as an unknown id, never
 *   FORBIDDEN, so a restricted key cannot probe which ids exist;
 * - what a restricted key can never do (create customers, target every host) is FORBIDDEN;
 * - lists take `scopeOf(principal)` as a filter the store applies in its query.
 *
 * An unrestricted key (customer_id null) passes every check unchanged.
 */
import type { Kysely } from 'kysely';
import { AegisError } from '../../protocol/src/index.js';
import type { ApiPrincipal } from './api_keys.js';
import type { Database } from './db/schema.js';
import { NOT_FOUND_MESSAGE } from './customers.js';

/** A refusal because of the key's customer limit (NOT_FOUND for others' rows, FORBIDDEN otherwise). */
export class TenancyError extends AegisError {
  constructor(code: 'NOT_FOUND' | 'FORBIDDEN', message: string, details?: unknown) {
    super(code, message, details === undefined ? {} : { details });
    this.name = 'TenancyError';
  }
}

/** The customer a principal is limited to, or null for every customer: the filter lists apply. */
export function scopeOf(p: ApiPrincipal): string | null {
  return p.customer_id;
}

const notFound = (): TenancyError => new TenancyError('NOT_FOUND', NOT_FOUND_MESSAGE);

export class Tenancy {
  constructor(private readonly db: Kysely<Database>) {}

  /** Customer `id` is visible to `p` (else the unknown-id 404). */
  assertCustomer(p: ApiPrincipal, id: string): void {
    if (p.customer_id !== null && p.customer_id !== id) throw notFound();
  }

  /** Refuses what only an unrestricted key may do (such as creating customers). */
  assertUnrestricted(p: ApiPrincipal, what: string): void {
    if (p.customer_id !== null) {
      throw new TenancyError('FORBIDDEN', `this API key is limited to one customer and cannot ${what}`, { customer_id: p.customer_id });
    }
  }

  /** License `id` belongs to p's customer (else the unknown-id 404). */
  async assertLicense(p: ApiPrincipal, id: string): Promise<void> {
    if (p.customer_id === null) return;
    const row = await this.db.selectFrom('licenses').select('customer_id').where('id', '=', id).executeTakeFirst();
    if (!row || row.customer_id !== p.customer_id) throw notFound();
  }

  /** Machine `id` is held under a license of p's customer (else the unknown-id 404). */
  async assertMachine(p: ApiPrincipal, id: string): Promise<void> {
    if (p.customer_id === null) return;
    const row = await this.db
      .selectFrom('machines')
      .innerJoin('licenses', 'licenses.id', 'machines.license_id')
      .select('licenses.customer_id')
      .where('machines.id', '=', id)
      .executeTakeFirst();
    if (!row || row.customer_id !== p.customer_id) throw notFound();
  }

  /**
   * The machines whose segmentation p may see: every machine of its customer (active or
   * not, so history stays visible); null for an unrestricted key (every machine). Machine
   * ids are unique, so unlike hostnames they never reach into another customer.
   */
  async machinesOf(p: ApiPrincipal): Promise<Set<string> | null> {
    if (p.customer_id === null) return null;
    const rows = await this.db
      .selectFrom('machines')
      .innerJoin('licenses', 'licenses.id', 'machines.license_id')
      .select('machines.id')
      .where('licenses.customer_id', '=', p.customer_id)
      .execute();
    return new Set(rows.map((r) => r.id));
  }

  /**
   * A restricted key names its targets (target_host or target_machine, resolved among its
   * customer's machines): every host, `_all`, reaches other customers' machines.
   */
  assertMayTargetEveryHost(p: ApiPrincipal): void {
    if (p.customer_id !== null) {
      throw new TenancyError('FORBIDDEN', 'this API key is limited to one customer: name its hosts with target_host or target_machine (every host is not allowed)', {
        customer_id: p.customer_id,
      });
    }
  }

  /** Whether `target` (a machine id, or `_all`) is visible to p given its machines (null: all). */
  static visible(own: Set<string> | null, target: string): boolean {
    return own === null || own.has(target);
  }

  /**
   * A service p may read and change: every target it currently runs on is one of p's
   * machines. Otherwise the same 404 as a service with no snapshot.
   */
  async assertService(p: ApiPrincipal, serviceId: number, currentTargets: readonly string[]): Promise<void> {
    const own = await this.machinesOf(p);
    if (own === null) return;
    if (currentTargets.length === 0 || !currentTargets.every((t) => own.has(t))) {
      throw new TenancyError('NOT_FOUND', `no snapshot for service ${serviceId}`);
    }
  }
}
