/**
 * Heartbeats, floating leases and grace: the pure decisions, from a license's policy
 * columns, a machine's heartbeat columns and the server's clock. The machine lifecycle
 * applies them (heartbeat, culler, activation, validation); nothing here writes.
 *
 *   window end   last heartbeat (or activation) + heartbeat_interval_seconds
 *   grace end    window end + grace_period_seconds: until then the seat validates
 *                VALID_IN_GRACE; after it the culler applies heartbeat_cull
 *   lease        a floating license's seat lapses at lease_expires_at unless a heartbeat
 *                renews it (a lapsed lease is a freed seat: the machine is deactivated)
 *   expiry grace an expired license validates VALID_IN_GRACE until expires_at + grace
 */
import type { LicensesTable, MachinesTable } from './db/schema.js';

export type HeartbeatPolicy = Pick<LicensesTable, 'heartbeat_interval_seconds' | 'heartbeat_cull' | 'floating' | 'lease_ttl_seconds' | 'grace_period_seconds'>;
export type HeartbeatColumns = Pick<MachinesTable, 'activated_at' | 'last_heartbeat_at' | 'heartbeat_status' | 'lease_expires_at'>;

const ms = (s: number | null | undefined): number => Number(s ?? 0) * 1000;

/** The machine's heartbeat state once `now` is judged: fine, in grace (until), or past its grace. */
export type HeartbeatVerdict = { state: 'none' } | { state: 'alive' } | { state: 'grace'; until: Date } | { state: 'missed'; cull: 'deactivate' | 'keep' } | { state: 'dead' };

export function heartbeatVerdict(lic: HeartbeatPolicy, m: HeartbeatColumns, now: Date): HeartbeatVerdict {
  if (lic.heartbeat_interval_seconds === null || lic.heartbeat_interval_seconds === undefined) return { state: 'none' };
  if (m.heartbeat_status === 'dead') return { state: 'dead' };
  const base = Date.parse(m.last_heartbeat_at ?? m.activated_at);
  const windowEnd = base + ms(lic.heartbeat_interval_seconds);
  if (now.getTime() <= windowEnd) return { state: 'alive' };
  const graceEnd = windowEnd + ms(lic.grace_period_seconds);
  if (now.getTime() < graceEnd) return { state: 'grace', until: new Date(graceEnd) };
  return { state: 'missed', cull: lic.heartbeat_cull === 'keep' ? 'keep' : 'deactivate' };
}

/** True when a floating license's lease on this seat has lapsed at `now`. */
export function leaseLapsed(lic: HeartbeatPolicy, m: Pick<MachinesTable, 'lease_expires_at'>, now: Date): boolean {
  return Number(lic.floating) === 1 && m.lease_expires_at !== null && Date.parse(m.lease_expires_at) <= now.getTime();
}

/** A new lease's end from `now` (null for a license that does not float). */
export function leaseEnd(lic: HeartbeatPolicy, now: Date): string | null {
  return Number(lic.floating) === 1 && lic.lease_ttl_seconds !== null ? new Date(now.getTime() + ms(lic.lease_ttl_seconds)).toISOString() : null;
}

/** When an expired license's grace ends, if it is in grace at `now`; else null. */
export function expiryGraceEnd(lic: Pick<LicensesTable, 'status' | 'expires_at' | 'grace_period_seconds'>, now: Date): Date | null {
  if (lic.status === 'revoked' || lic.expires_at === null || !lic.grace_period_seconds) return null;
  const exp = Date.parse(lic.expires_at);
  if (exp > now.getTime()) return null;
  const end = exp + ms(lic.grace_period_seconds);
  return now.getTime() < end ? new Date(end) : null;
}

/** The heartbeat columns of a seat taken or renewed at `now`. */
export function freshHeartbeatColumns(lic: HeartbeatPolicy, now: Date): Pick<MachinesTable, 'heartbeat_status' | 'last_heartbeat_at' | 'lease_expires_at'> {
  const beats = lic.heartbeat_interval_seconds !== null && lic.heartbeat_interval_seconds !== undefined;
  return {
    heartbeat_status: beats ? 'alive' : null,
    last_heartbeat_at: beats || Number(lic.floating) === 1 ? now.toISOString() : null,
    lease_expires_at: leaseEnd(lic, now),
  };
}
