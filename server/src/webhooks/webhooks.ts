/**
 * Signed webhooks: the endpoints operators register, the outbox of deliveries and the
 * dispatcher that sends them.
 *
 * An event becomes deliveries in the statement that audits it (AuditLog.record calls
 * `enqueue` with the same database handle, so inside a transaction both commit or
 * neither): one row per subscribed endpoint, holding the exact body that is signed. The
 * request that caused the event only writes those rows; sending happens here, later, on
 * a timer and at once when kicked, so a slow or dead receiver never slows an API call.
 * Rows survive a restart: a row is claimed by moving its next attempt a lease ahead
 * (compare-and-set on the old value, so replicas never send one attempt twice), the
 * result is written only while that claim stands, and a claim a crash (kill -9) left
 * behind comes due again once it runs out (the attempt timeout plus CLAIM_MARGIN_MS):
 * at-least-once, the repeat under the same event id, so receivers dedupe on it.
 *
 * Tenancy: an endpoint registered with a key limited to one customer carries that
 * customer, and is given only events whose customer is that one; an endpoint of an
 * unrestricted key is given every customer's events.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import {
  AegisError,
  backoffDelay,
  signWebhook,
  WEBHOOK_EVENT_ID_HEADER,
  WEBHOOK_EVENT_TYPE_HEADER,
  WEBHOOK_KEY_ID_HEADER,
  WEBHOOK_SIGNATURE_HEADER,
  type WebhookEvent,
  type WebhookEventType,
} from '../../../protocol/src/index.js';
import type { AuditEntry } from '../audit.js';
import { epochSeconds, iso, type Clock } from '../clock.js';
import { NOT_FOUND_MESSAGE } from '../customers.js';
import type { Database, WebhookDeliveriesTable, WebhookEndpointsTable } from '../db/schema.js';
import type { Keyring } from '../keys/keyring.js';
import type { Logger } from '../logger.js';
import { checkWebhookUrl, postJson, type OutboundPolicy } from './outbound.js';

export interface WebhookSettings extends OutboundPolicy {
  /** Attempts per delivery before it is marked failed (AEGIS_WEBHOOK_MAX_ATTEMPTS). */
  maxAttempts: number;
  /** Backoff between attempts: full jitter under min(cap, base * 2^n) (AEGIS_WEBHOOK_BACKOFF_BASE_MS / _CAP_MS). */
  backoffBaseMs: number;
  backoffCapMs: number;
  /** How often due deliveries are looked for (AEGIS_WEBHOOK_POLL_MS). */
  pollMs: number;
}

/** 8 attempts over about an hour; https only; metadata, link-local and loopback refused. */
export const DEFAULT_WEBHOOK_SETTINGS: Readonly<WebhookSettings> = {
  maxAttempts: 8,
  backoffBaseMs: 60_000,
  backoffCapMs: 3_600_000,
  pollMs: 1_000,
  timeoutMs: 10_000,
  maxResponseBytes: 4096,
  allowHttp: false,
  allowLoopback: false,
  allowLinkLocal: false,
};

/** Deliveries in flight at once per server. */
const CONCURRENCY = 4;
/**
 * How long a claim outlasts the attempt's timeout: room for the endpoint lookup and the
 * result's write. A replica killed mid-attempt leaves its claims, due again this long
 * after the attempt's timeout would have ended it (test/scale_out/webhooks_replicas.test.ts).
 */
export const CLAIM_MARGIN_MS = 5_000;
/** Endpoints per customer (and for unrestricted keys). */
export const MAX_ENDPOINTS = 100;

/** Which audited events are webhook events, under which type. */
const EVENT_OF_AUDIT: Readonly<Record<string, WebhookEventType>> = {
  'license.issued': 'license.created',
  'license.revoked': 'license.revoked',
  'machine.activated': 'machine.activated',
  'machine.reactivated': 'machine.activated',
  'machine.deactivated': 'machine.deactivated',
  // Seats ended by the heartbeat culler or a lapsed floating lease.
  'machine.culled': 'machine.deactivated',
  'machine.lease_expired': 'machine.deactivated',
  'machine.clock_tampered': 'machine.clock_tampered',
  'alert.raised': 'alert.raised',
  'decision.proposed': 'decision.proposed',
  'decision.notified': 'decision.proposed',
  'decision.promoted': 'decision.promoted',
  'decision.rolled_back': 'decision.rolled_back',
  'decision.failed': 'decision.rolled_back',
};

export interface WebhookEndpoint {
  id: string;
  url: string;
  events: WebhookEventType[];
  description: string | null;
  /** The one customer whose events it receives; null: every customer's. */
  customer_id: string | null;
  created_at: string;
}

export interface WebhookAttempt {
  at: string;
  status_code: number | null;
  error: string | null;
  duration_ms: number;
}

export interface WebhookDelivery {
  id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  attempt_log: WebhookAttempt[];
  last_status_code: number | null;
  last_error: string | null;
  next_attempt_at: string | null;
  last_attempt_at: string | null;
  created_at: string;
  delivered_at: string | null;
}

function toEndpoint(r: Selectable<WebhookEndpointsTable>): WebhookEndpoint {
  return { id: r.id, url: r.url, events: JSON.parse(r.events) as WebhookEventType[], description: r.description, customer_id: r.customer_id, created_at: r.created_at };
}

function toDelivery(r: Selectable<WebhookDeliveriesTable>): WebhookDelivery {
  return {
    id: r.id,
    endpoint_id: r.endpoint_id,
    event_id: r.event_id,
    event_type: r.event_type,
    status: r.status as WebhookDelivery['status'],
    attempts: Number(r.attempts),
    attempt_log: JSON.parse(r.attempt_log) as WebhookAttempt[],
    last_status_code: r.last_status_code === null ? null : Number(r.last_status_code),
    last_error: r.last_error,
    next_attempt_at: r.next_attempt_at,
    last_attempt_at: r.last_attempt_at,
    created_at: r.created_at,
    delivered_at: r.delivered_at,
  };
}

/** A uuid-shaped id derived from `text` (the same event announced twice gets one id). */
function derivedId(text: string): string {
  const h = createHash('sha256').update(text).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

const EXPIRY_WATERMARK = 'license_expired_until';

export class Webhooks {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private closed = false;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly keys: Keyring,
    readonly settings: WebhookSettings,
    private readonly log: Logger,
  ) {}

  // --- endpoints ----------------------------------------------------------------------

  async createEndpoint(input: { url: string; events: WebhookEventType[]; description?: string | null; customer_id: string | null; created_by: string }): Promise<WebhookEndpoint> {
    const url = checkWebhookUrl(input.url, this.settings).toString();
    let q = this.db.selectFrom('webhook_endpoints').select((eb) => eb.fn.countAll<string | number>().as('n'));
    q = input.customer_id === null ? q.where('customer_id', 'is', null) : q.where('customer_id', '=', input.customer_id);
    const { n } = await q.executeTakeFirstOrThrow();
    if (Number(n) >= MAX_ENDPOINTS) throw new AegisError('CONFLICT', `at most ${MAX_ENDPOINTS} webhook endpoints per customer`);
    const row: Selectable<WebhookEndpointsTable> = {
      id: randomUUID(),
      customer_id: input.customer_id,
      url,
      events: JSON.stringify([...new Set(input.events)]),
      description: input.description ?? null,
      created_by: input.created_by,
      created_at: iso(this.clock.now()),
    };
    await this.db.insertInto('webhook_endpoints').values(row).execute();
    return toEndpoint(row);
  }

  async listEndpoints(tenant: string | null): Promise<WebhookEndpoint[]> {
    let q = this.db.selectFrom('webhook_endpoints').selectAll().orderBy('created_at').orderBy('id');
    if (tenant !== null) q = q.where('customer_id', '=', tenant);
    return (await q.execute()).map(toEndpoint);
  }

  /** The endpoint, visible to a key of `tenant` (null: every customer); else the unknown-id 404. */
  async endpoint(id: string, tenant: string | null): Promise<WebhookEndpoint> {
    const r = await this.db.selectFrom('webhook_endpoints').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r || (tenant !== null && r.customer_id !== tenant)) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return toEndpoint(r);
  }

  /** Deletes an endpoint and its deliveries: nothing more is sent to it. */
  async deleteEndpoint(id: string, tenant: string | null): Promise<WebhookEndpoint> {
    const e = await this.endpoint(id, tenant);
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('webhook_deliveries').where('endpoint_id', '=', id).execute();
      await tx.deleteFrom('webhook_endpoints').where('id', '=', id).execute();
    });
    return e;
  }

  async deliveries(endpointId: string, tenant: string | null, page: { limit: number; offset: number }): Promise<{ items: WebhookDelivery[]; total: number; limit: number; offset: number }> {
    await this.endpoint(endpointId, tenant);
    const q = this.db.selectFrom('webhook_deliveries').where('endpoint_id', '=', endpointId);
    const { n } = await q.select((eb) => eb.fn.countAll<string | number>().as('n')).executeTakeFirstOrThrow();
    const rows = await q.selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').limit(page.limit).offset(page.offset).execute();
    return { items: rows.map(toDelivery), total: Number(n), ...page };
  }

  /** Sends a delivery again now (one more attempt, whatever it went through before). */
  async retry(endpointId: string, deliveryId: string, tenant: string | null): Promise<WebhookDelivery> {
    await this.endpoint(endpointId, tenant);
    const now = iso(this.clock.now());
    const r = await this.db
      .updateTable('webhook_deliveries')
      .set({ status: 'pending', next_attempt_at: now })
      .where('id', '=', deliveryId)
      .where('endpoint_id', '=', endpointId)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    this.kick();
    return toDelivery(await this.db.selectFrom('webhook_deliveries').selectAll().where('id', '=', deliveryId).executeTakeFirstOrThrow());
  }

  // --- events -----------------------------------------------------------------------

  /**
   * Writes the deliveries of an audited event (called by AuditLog.record with the handle
   * the audit row went through). Refusals and events that are not webhook events write
   * nothing.
   */
  async enqueue(entry: AuditEntry, db: Kysely<Database> = this.db): Promise<void> {
    if ((entry.outcome ?? 'ok') !== 'ok') return;
    const type = EVENT_OF_AUDIT[entry.event_type];
    if (!type) return;
    const data: Record<string, unknown> = {
      license_id: entry.license_id ?? null,
      customer_id: entry.customer_id ?? null,
      machine_id: entry.machine_id ?? null,
      ...(entry.event_type === 'machine.reactivated' ? { reactivated: true } : {}),
      ...(entry.reason ? { reason: entry.reason } : {}),
      ...entry.data,
    };
    const written = await this.write(db, { id: randomUUID(), type, created_at: iso(this.clock.now()), data }, entry.customer_id ?? null);
    if (written > 0) this.kick();
  }

  private async write(db: Kysely<Database>, event: WebhookEvent, customerId: string | null): Promise<number> {
    let q = db.selectFrom('webhook_endpoints').select(['id', 'events']);
    // Restricted endpoints hear only their customer; an event of no customer reaches only unrestricted ones.
    q = customerId === null ? q.where('customer_id', 'is', null) : q.where((eb) => eb.or([eb('customer_id', 'is', null), eb('customer_id', '=', customerId)]));
    const endpoints = (await q.execute()).filter((e) => (JSON.parse(e.events) as string[]).includes(event.type));
    if (endpoints.length === 0) return 0;
    const body = JSON.stringify(event);
    const now = iso(this.clock.now());
    await db
      .insertInto('webhook_deliveries')
      .values(
        endpoints.map((e) => ({
          id: randomUUID(),
          endpoint_id: e.id,
          event_id: event.id,
          event_type: event.type,
          customer_id: customerId,
          payload: body,
          status: 'pending',
          attempts: 0,
          attempt_log: '[]',
          next_attempt_at: now,
          last_attempt_at: null,
          last_status_code: null,
          last_error: null,
          created_at: now,
          delivered_at: null,
        })),
      )
      .onConflict((oc) => oc.columns(['endpoint_id', 'event_id']).doNothing())
      .execute();
    return endpoints.length;
  }

  /**
   * Announces licenses whose expiry passed since the last sweep. Expiry is a comparison
   * with the clock, not a write, so the watermark (first set at the first sweep: no
   * backfill of older expiries) says how far announcements went; the event id derives
   * from the license, so two replicas announcing the same expiry write one delivery.
   */
  async sweepExpiries(): Promise<void> {
    const now = iso(this.clock.now());
    const mark = await this.db.selectFrom('webhook_state').select('value').where('name', '=', EXPIRY_WATERMARK).executeTakeFirst();
    if (!mark) {
      await this.db.insertInto('webhook_state').values({ name: EXPIRY_WATERMARK, value: now }).onConflict((oc) => oc.column('name').doNothing()).execute();
      return;
    }
    if (mark.value >= now) return;
    const expired = await this.db
      .selectFrom('licenses')
      .select(['id', 'customer_id', 'expires_at', 'tier', 'module_name'])
      .where('status', '=', 'active')
      .where('expires_at', 'is not', null)
      .where('expires_at', '>', mark.value)
      .where('expires_at', '<=', now)
      .execute();
    let written = 0;
    for (const l of expired) {
      const event: WebhookEvent = {
        id: derivedId(`license.expired|${l.id}|${l.expires_at}`),
        type: 'license.expired',
        created_at: now,
        data: { license_id: l.id, customer_id: l.customer_id, machine_id: null, expires_at: l.expires_at, tier: l.tier, module_name: l.module_name },
      };
      written += await this.write(this.db, event, l.customer_id);
    }
    await this.db.updateTable('webhook_state').set({ value: now }).where('name', '=', EXPIRY_WATERMARK).execute();
    if (written > 0) this.kick();
  }

  // --- the dispatcher ---------------------------------------------------------------

  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => this.kick(), this.settings.pollMs);
    this.timer.unref();
    this.kick();
  }

  /** Looks for due deliveries now (after an enqueue, a retry, and on every poll). */
  kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((e: unknown) => {
        this.log.warn('webhook dispatch failed', { error: (e as Error).message });
      })
      .finally(() => {
        this.running = null;
        if (this.again && !this.closed) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async pass(): Promise<void> {
    await this.sweepExpiries();
    for (;;) {
      if (this.closed) return;
      const free = CONCURRENCY - this.inFlight.size;
      if (free <= 0) {
        await Promise.race(this.inFlight);
        continue;
      }
      const now = this.clock.now();
      const due = await this.db
        .selectFrom('webhook_deliveries')
        .selectAll()
        .where('status', '=', 'pending')
        .where('next_attempt_at', '<=', iso(now))
        .orderBy('next_attempt_at')
        .limit(free)
        .execute();
      if (due.length === 0) return;
      let claimed = 0;
      for (const d of due) {
        // The claim outlasts the attempt; a crash mid-attempt leaves it due again after.
        const lease = iso(new Date(now.getTime() + this.settings.timeoutMs + CLAIM_MARGIN_MS));
        const r = await this.db
          .updateTable('webhook_deliveries')
          .set({ next_attempt_at: lease })
          .where('id', '=', d.id)
          .where('status', '=', 'pending')
          .where('next_attempt_at', '=', d.next_attempt_at)
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) === 0) continue;
        claimed += 1;
        const p: Promise<void> = this.attempt(d, lease)
          .catch((e: unknown) => {
            this.log.warn('webhook attempt failed', { delivery: d.id, error: (e as Error).message });
          })
          .finally(() => this.inFlight.delete(p));
        this.inFlight.add(p);
      }
      if (claimed === 0) return;
    }
  }

  /** One attempt of a delivery this replica claimed (its next attempt set to `claim`). */
  private async attempt(d: Selectable<WebhookDeliveriesTable>, claim: string): Promise<void> {
    const endpoint = await this.db.selectFrom('webhook_endpoints').select(['url']).where('id', '=', d.endpoint_id).executeTakeFirst();
    if (!endpoint) return; // deleted meanwhile (its deliveries go with it)
    const at = this.clock.now();
    const key = this.keys.signingKey();
    const headers = {
      [WEBHOOK_SIGNATURE_HEADER]: signWebhook((data) => key.sign(data), epochSeconds(at), d.payload),
      [WEBHOOK_KEY_ID_HEADER]: key.kid,
      [WEBHOOK_EVENT_ID_HEADER]: d.event_id,
      [WEBHOOK_EVENT_TYPE_HEADER]: d.event_type,
    };
    const res = await postJson(endpoint.url, d.payload, headers, this.settings);
    const attempts = Number(d.attempts) + 1;
    const log = [...(JSON.parse(d.attempt_log) as WebhookAttempt[]), { at: iso(at), status_code: res.statusCode, error: res.error, duration_ms: res.durationMs }].slice(-50);
    const delivered = res.error === null;
    const exhausted = !delivered && attempts >= this.settings.maxAttempts;
    const next = delivered || exhausted ? null : iso(new Date(this.clock.now().getTime() + backoffDelay(attempts - 1, { baseMs: this.settings.backoffBaseMs, capMs: this.settings.backoffCapMs })));
    // Written only while the claim is still ours: an attempt that outlived it (another
    // replica claimed the row since, or an operator retried it) leaves that one's result.
    const w = await this.db
      .updateTable('webhook_deliveries')
      .set({
        status: delivered ? 'delivered' : exhausted ? 'failed' : 'pending',
        attempts,
        attempt_log: JSON.stringify(log),
        next_attempt_at: next,
        last_attempt_at: iso(at),
        last_status_code: res.statusCode,
        last_error: res.error === null ? null : res.error.slice(0, 500),
        delivered_at: delivered ? iso(this.clock.now()) : null,
      })
      .where('id', '=', d.id)
      .where('status', '=', 'pending')
      .where('next_attempt_at', '=', claim)
      .executeTakeFirst();
    if (Number(w.numUpdatedRows) === 0) {
      this.log.warn('webhook attempt outlived its claim; its result is not recorded', { delivery: d.id, endpoint: d.endpoint_id, delivered });
      return;
    }
    if (!delivered) this.log.info('webhook attempt failed', { delivery: d.id, endpoint: d.endpoint_id, attempts, error: res.error, next_attempt_at: next });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
    await Promise.allSettled([...this.inFlight]);
  }
}
