/**
 * The operator's flow log: a bounded in-memory ring of the datapath's recent verdicts
 * (allowed new flows with their rule, denials, would-drops, cuts, unparsed drops), each
 * attributed to the snapshot revision it was decided under. Served by GET /v1/flows
 * (`aegisctl flows`); followers get every new entry as it is added. Nothing is written to
 * disk: the ring holds what happened lately, the flow reports carry the aggregate.
 */
import { FLOW_LOG_VERDICTS, type FlowLogVerdict, type FlowReason } from '../../protocol/src/index.js';
import { AgentError } from './errors.js';
import type { AttributedFlowEvent } from './policy.js';

export interface FlowLogEntry {
  /** When the agent received the event (ISO 8601). */
  time: string;
  service_id: number;
  direction: 'egress' | 'ingress';
  verdict: FlowLogVerdict;
  reason: FlowReason;
  proto: 'tcp' | 'udp' | 'icmp' | number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** The far end: destination of egress, source of ingress. */
  remote: string;
  /** The port rules name: remote port of egress, local port of ingress (ICMP type for icmp). */
  port: number;
  /** Index of the deciding entry in edges (egress) or allow_cidrs (ingress); null: no rule. */
  rule: number | null;
  /** Snapshot revision the verdict was decided under; null when the agent does not know it. */
  revision: number | null;
}

/** IANA numbers of ICMP and ICMPv6, which flow reports and rules both call `icmp`. */
const ICMP_PROTOS = new Set([1, 58]);

/** A datapath verdict as the flow log (and the flow reports) name it. */
export function entryOf(e: AttributedFlowEvent, at: Date = new Date()): FlowLogEntry {
  const egress = e.direction === 'egress';
  return {
    time: at.toISOString(),
    service_id: e.serviceId,
    direction: e.direction,
    verdict: e.verdict,
    reason: e.reason,
    proto: typeof e.proto === 'number' && ICMP_PROTOS.has(e.proto) ? 'icmp' : e.proto,
    src: e.src,
    sport: e.sport,
    dst: e.dst,
    dport: e.dport,
    remote: egress ? e.dst : e.src,
    // Egress: the remote port; ingress: the local one (the destination of the inbound packet).
    // ICMP: the type (the datapath puts it in dport). Portless protocols: 0.
    port: e.dport,
    rule: e.rule,
    revision: e.revision,
  };
}

export interface FlowLogQuery {
  service: number | null;
  verdict: FlowLogVerdict | null;
  limit: number;
  follow: boolean;
}

export const DEFAULT_FLOW_LOG_LIMIT = 100;

/**
 * Parses the query string of GET /v1/flows. Anything unexpected is a 400 BAD_QUERY naming the
 * parameter: a service that is not a non-negative integer, an unknown verdict, a limit that
 * is not an integer from 1 to `capacity`, follow other than 0/1, or an unknown parameter.
 */
export function parseFlowLogQuery(q: URLSearchParams, capacity: number): FlowLogQuery {
  const bad = (param: string, message: string): never => {
    throw new AgentError('BAD_QUERY', message, { status: 400, details: { param } });
  };
  const known = new Set(['service', 'verdict', 'limit', 'follow']);
  for (const k of q.keys()) if (!known.has(k)) bad(k, `unknown query parameter ${JSON.stringify(k.slice(0, 64))} (known: service, verdict, limit, follow)`);
  for (const k of known) if (q.getAll(k).length > 1) bad(k, `query parameter ${k} given more than once`);
  const out: FlowLogQuery = { service: null, verdict: null, limit: Math.min(DEFAULT_FLOW_LOG_LIMIT, capacity), follow: false };
  const svc = q.get('service');
  if (svc !== null) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(svc) || Number(svc) > 0xffffffff) bad('service', `service must be a service id (an integer from 0 to 4294967295), got ${JSON.stringify(svc.slice(0, 64))}`);
    out.service = Number(svc);
  }
  const verdict = q.get('verdict');
  if (verdict !== null) {
    if (!(FLOW_LOG_VERDICTS as readonly string[]).includes(verdict)) bad('verdict', `verdict must be one of ${FLOW_LOG_VERDICTS.join(', ')}, got ${JSON.stringify(verdict.slice(0, 64))}`);
    out.verdict = verdict as FlowLogVerdict;
  }
  const limit = q.get('limit');
  if (limit !== null) {
    if (!/^[1-9][0-9]{0,9}$/.test(limit) || Number(limit) > capacity) bad('limit', `limit must be an integer from 1 to ${capacity} (the flow log's size), got ${JSON.stringify(limit.slice(0, 64))}`);
    out.limit = Number(limit);
  }
  const follow = q.get('follow');
  if (follow !== null) {
    if (follow !== '0' && follow !== '1') bad('follow', `follow must be 0 or 1, got ${JSON.stringify(follow.slice(0, 64))}`);
    out.follow = follow === '1';
  }
  return out;
}

export function matchesQuery(e: FlowLogEntry, q: Pick<FlowLogQuery, 'service' | 'verdict'>): boolean {
  return (q.service === null || e.service_id === q.service) && (q.verdict === null || e.verdict === q.verdict);
}

/** A fixed-size ring: the oldest entry goes when a new one arrives at capacity. */
export class FlowLog {
  private readonly ring: Array<FlowLogEntry | undefined>;
  private next = 0;
  private size = 0;
  private readonly followers = new Set<(e: FlowLogEntry) => void>();
  /** Entries pushed out of the ring since start (the log is bounded, not lossless). */
  overwritten = 0;
  /** Entries added since start. */
  added = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('flow log capacity must be a positive integer');
    this.ring = new Array<FlowLogEntry | undefined>(capacity);
  }

  add(e: FlowLogEntry): void {
    this.added++;
    if (this.size === this.capacity) this.overwritten++;
    else this.size++;
    this.ring[this.next] = e;
    this.next = (this.next + 1) % this.capacity;
    for (const f of [...this.followers]) f(e);
  }

  /** The newest `limit` entries matching the query, oldest first (newest last). */
  recent(q: Pick<FlowLogQuery, 'service' | 'verdict' | 'limit'>): FlowLogEntry[] {
    const out: FlowLogEntry[] = [];
    for (let i = 1; i <= this.size && out.length < q.limit; i++) {
      const e = this.ring[(this.next - i + this.capacity) % this.capacity]!;
      if (matchesQuery(e, q)) out.push(e);
    }
    return out.reverse();
  }

  /** Calls `cb` for every entry added from now on; returns the unsubscribe function. */
  follow(cb: (e: FlowLogEntry) => void): () => void {
    this.followers.add(cb);
    return () => this.followers.delete(cb);
  }

  get followerCount(): number {
    return this.followers.size;
  }
}
