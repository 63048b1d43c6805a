/** Customers: the accounts licenses are issued to. */
import { randomUUID } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import { AegisError, ValidationError, isExternalId, type Customer, type CustomerInput, type Paged } from '../../protocol/src/index.js';
import type { CustomersTable, Database } from './db/schema.js';
import { iso, type Clock } from './clock.js';
import type { Page } from './pagination.js';
import { usableLicense } from './usable_license.js';

export interface CustomerFilters {
  is_active?: boolean;
  email?: string;
  external_id?: string;
  q?: string;
  /** Only this customer (an API key limited to one customer; see tenancy.ts). */
  tenant?: string | null;
}

function toCustomer(r: Selectable<CustomersTable>): Customer {
  return { ...r, is_active: Number(r.is_active) === 1 };
}

export const NOT_FOUND_MESSAGE = 'not found';

export class Customers {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  async create(input: CustomerInput): Promise<Customer> {
    const now = iso(this.clock.now());
    const external_id = input.external_id ?? null;
    if (external_id !== null && !isExternalId(external_id)) {
      throw new ValidationError([{ path: '/external_id', message: 'must be 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit) and not the form of an id' }]);
    }
    const row = {
      id: randomUUID(),
      external_id,
      name: input.name,
      email: input.email ?? null,
      company: input.company ?? null,
      is_active: input.is_active === false ? 0 : 1,
      created_at: now,
      updated_at: now,
    };
    const taken = () => new AegisError('CONFLICT', `external_id ${external_id} is already another customer's`, { details: [{ path: '/external_id', message: 'already in use' }] });
    if (external_id !== null && (await this.idOfExternal(external_id)) !== null) throw taken();
    try {
      await this.db.insertInto('customers').values(row).execute();
    } catch (e) {
      // Two creations racing for one reference: the unique index lets one in.
      if (external_id !== null && (await this.idOfExternal(external_id)) !== null) throw taken();
      throw e;
    }
    return toCustomer(row);
  }

  private async idOfExternal(externalId: string): Promise<string | null> {
    const r = await this.db.selectFrom('customers').select('id').where('external_id', '=', externalId).executeTakeFirst();
    return r?.id ?? null;
  }

  /**
   * The Aegis id of the customer a reference names: its id, else its external reference
   * (ids the API assigns are UUIDs, a form no external reference may take, so the two
   * cannot collide). Null when it names no customer.
   */
  async resolve(ref: string): Promise<string | null> {
    const byId = await this.db.selectFrom('customers').select('id').where('id', '=', ref).executeTakeFirst();
    if (byId) return byId.id;
    return isExternalId(ref) ? this.idOfExternal(ref) : null;
  }


  async get(id: string): Promise<Customer> {
    const row = await this.db.selectFrom('customers').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return toCustomer(row);
  }

  async list(f: CustomerFilters, page: Page): Promise<Paged<Customer>> {
    let q = this.db.selectFrom('customers');
    if (f.tenant) q = q.where('id', '=', f.tenant);
    if (f.is_active !== undefined) q = q.where('is_active', '=', f.is_active ? 1 : 0);
    if (f.email) q = q.where('email', '=', f.email);
    if (f.external_id) q = q.where('external_id', '=', f.external_id);
    if (f.q) {
      // LIKE is case-sensitive on PostgreSQL and not on SQLite; lower() both sides so the
      // two backends answer the same.
      const pattern = `%${f.q.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      q = q.where((eb) =>
        eb.or([
          eb(eb.fn('lower', ['name']), 'like', pattern),
          eb(eb.fn('lower', ['company']), 'like', pattern),
          eb(eb.fn('lower', ['email']), 'like', pattern),
        ]),
      );
    }
    const { n } = await q.select((eb) => eb.fn.countAll<string | number>().as('n')).executeTakeFirstOrThrow();
    const rows = await q.selectAll().orderBy('created_at').orderBy('id').limit(page.limit).offset(page.offset).execute();
    return { items: rows.map(toCustomer), total: Number(n), ...page };
  }

  async update(id: string, patch: Partial<CustomerInput>): Promise<Customer> {
    const set: Partial<CustomersTable> = { updated_at: iso(this.clock.now()) };
    if (patch.name !== undefined) set.name = patch.name;
    if (patch.email !== undefined) set.email = patch.email;
    if (patch.company !== undefined) set.company = patch.company;
    if (patch.is_active !== undefined) set.is_active = patch.is_active ? 1 : 0;
    const r = await this.db.updateTable('customers').set(set).where('id', '=', id).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return this.get(id);
  }

  /**
   * Deletes a customer with its licenses and machine bindings. Refused while the
   * customer holds a license that is neither revoked nor expired, unless `force`.
   * Returns the ids of licenses that were still active (the caller audits them) and of
   * the machines removed (whose certificates and NATS users the caller must revoke:
   * those live outside these rows).
   */
  async delete(id: string, force: boolean): Promise<{ revokedLicenseIds: string[]; machineIds: string[] }> {
    return this.db.transaction().execute(async (tx) => {
      const customer = await tx.selectFrom('customers').select('id').where('id', '=', id).executeTakeFirst();
      if (!customer) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
      const now = iso(this.clock.now());
      const active = await tx
        .selectFrom('licenses')
        .select('id')
        .where('customer_id', '=', id)
        .where(usableLicense(now))
        .execute();
      if (active.length > 0 && !force) {
        throw new AegisError('CUSTOMER_HAS_ACTIVE_LICENSES', `customer has ${active.length} active license(s); revoke them or pass ?force=true`, {
          details: { active_license_ids: active.map((l) => l.id) },
        });
      }
      const licenseIds = (await tx.selectFrom('licenses').select('id').where('customer_id', '=', id).execute()).map((l) => l.id);
      let machineIds: string[] = [];
      if (licenseIds.length > 0) {
        machineIds = (await tx.selectFrom('machines').select('id').where('license_id', 'in', licenseIds).execute()).map((m) => m.id);
        await tx.deleteFrom('machines').where('license_id', 'in', licenseIds).execute();
        await tx.deleteFrom('licenses').where('id', 'in', licenseIds).execute();
      }
      await tx.deleteFrom('customers').where('id', '=', id).execute();
      return { revokedLicenseIds: active.map((l) => l.id), machineIds };
    });
  }
}
