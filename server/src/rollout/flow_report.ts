/**
 * Reading an agent's flow report (aegis.agent.<machine>.flows, AgentFlowsReport) into flow
 * log rows. Reports are hostile input: every field the log keeps is checked against its
 * type and bounds, and one bad field refuses the whole report (FlowReportError naming it),
 * so the log never holds part of a report. Reports of older agents (no verdict, direction,
 * rule, reason, revision or interval) read as dropped egress over the moment of receipt.
 * Fields the contract does not name are ignored, never stored.
 */
import {
  CidrError,
  FLOW_LOG_VERDICTS,
  FLOW_REASONS,
  MAX_RULES_PER_SERVICE,
  parseCidr,
  ValidationError,
  type FlowLogVerdict,
  type FlowReason,
} from '../../../protocol/src/index.js';

/** Lines per report: what an agent aggregates at most per interval. */
export const MAX_FLOWS_PER_REPORT = 10_000;
/** How far ahead of the server's clock an interval may end (host clock skew). */
export const FLOW_CLOCK_SKEW_MS = 60_000;
/** How long before receipt an interval may start: longer is no report interval, only a way to rewrite history. */
export const MAX_FLOW_INTERVAL_MS = 86_400_000;
/** The largest count, revision and service id: what both backends' integer columns hold. */
const MAX_INT32 = 2_147_483_647;
/** The longest textual IP address (IPv6 with an embedded IPv4 tail). */
const MAX_ADDRESS_CHARS = 45;
const MAX_HOST_CHARS = 253;
const MAX_TIME_CHARS = 40;
/** RFC 3339 date-time: what agents send (toISOString) and nothing looser. */
const DATE_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)$/;

/** Protocol numbers stored under the name rules use for them. */
const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp' };

/** A flow report that cannot be kept: `problems[0]` names the first bad field by JSON pointer. */
export class FlowReportError extends ValidationError {
  constructor(path: string, message: string) {
    super([{ path, message }], `${path}: ${message}`);
    this.name = 'FlowReportError';
  }
}

/** One flow log row as a report gives it (the store adds id and machine). */
export interface FlowRow {
  service_id: number;
  revision: number | null;
  direction: 'egress' | 'ingress';
  verdict: FlowLogVerdict;
  proto: string;
  remote: string;
  port: number;
  rule: number | null;
  reason: FlowReason | null;
  count: number;
  interval_start: string;
  interval_end: string;
}

export interface ParsedFlowReport {
  service_id: number;
  rows: FlowRow[];
}

/** A short, printable rendering of a hostile value for a refusal message. */
function shown(v: unknown): string {
  let text: string;
  try {
    text = typeof v === 'string' ? JSON.stringify(v) : v === undefined ? 'nothing' : (JSON.stringify(v) ?? String(v));
  } catch {
    text = typeof v;
  }
  return text.length > 48 ? `${text.slice(0, 45)}...` : text;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function integerIn(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

/** A strict RFC 3339 date-time as epoch milliseconds, or null. */
export function parseDateTime(v: unknown): number | null {
  if (typeof v !== 'string' || v.length > MAX_TIME_CHARS || !DATE_TIME.test(v)) return null;
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? null : ms;
}

/** A single IP address in canonical text (IPv6 compressed, lower case), or null. */
export function canonicalAddress(v: unknown): string | null {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_ADDRESS_CHARS || v.includes('/')) return null;
  try {
    const c = parseCidr(v);
    return c.canonical.slice(0, c.canonical.indexOf('/'));
  } catch (e) {
    if (e instanceof CidrError) return null;
    throw e;
  }
}

function protoOf(v: unknown): string | null {
  if (v === 'tcp' || v === 'udp' || v === 'icmp') return v;
  if (integerIn(v, 0, 255)) return PROTO_NAMES[v] ?? String(v);
  return null;
}

/**
 * Reads a flow report received at `nowMs`. Throws FlowReportError at the first field that
 * is not what the contract allows.
 */
export function parseFlowReport(data: unknown, nowMs: number): ParsedFlowReport {
  if (!isObject(data)) throw new FlowReportError('/', `must be an object, got ${shown(data)}`);
  if (!integerIn(data.service_id, 0, MAX_INT32)) throw new FlowReportError('/service_id', `must be an integer from 0 to ${MAX_INT32}, got ${shown(data.service_id)}`);
  if (data.host !== undefined && (typeof data.host !== 'string' || data.host.length > MAX_HOST_CHARS)) {
    throw new FlowReportError('/host', `must be a string of at most ${MAX_HOST_CHARS} characters`);
  }
  if (data.sent_at !== undefined && parseDateTime(data.sent_at) === null) throw new FlowReportError('/sent_at', `must be an RFC 3339 date-time, got ${shown(data.sent_at)}`);
  const revision = data.revision ?? null;
  if (revision !== null && !integerIn(revision, 1, MAX_INT32)) throw new FlowReportError('/revision', `must be null or an integer from 1 to ${MAX_INT32}, got ${shown(revision)}`);

  let start = new Date(nowMs).toISOString();
  let end = start;
  if (data.interval !== undefined) {
    const iv = data.interval;
    if (!isObject(iv)) throw new FlowReportError('/interval', `must be an object {start, end}, got ${shown(iv)}`);
    const s = parseDateTime(iv.start);
    const e = parseDateTime(iv.end);
    if (s === null) throw new FlowReportError('/interval/start', `must be an RFC 3339 date-time, got ${shown(iv.start)}`);
    if (e === null) throw new FlowReportError('/interval/end', `must be an RFC 3339 date-time, got ${shown(iv.end)}`);
    if (e < s) throw new FlowReportError('/interval/end', 'must not be before the start');
    if (e > nowMs + FLOW_CLOCK_SKEW_MS) throw new FlowReportError('/interval/end', `is in the future (${new Date(e).toISOString()}, server time ${new Date(nowMs).toISOString()})`);
    if (s < nowMs - MAX_FLOW_INTERVAL_MS) throw new FlowReportError('/interval/start', `is more than ${MAX_FLOW_INTERVAL_MS / 3_600_000} hours before receipt`);
    start = new Date(s).toISOString();
    end = new Date(e).toISOString();
  }

  const flows = data.flows;
  if (!Array.isArray(flows)) throw new FlowReportError('/flows', `must be an array, got ${shown(flows)}`);
  if (flows.length > MAX_FLOWS_PER_REPORT) throw new FlowReportError('/flows', `holds ${flows.length} lines, more than ${MAX_FLOWS_PER_REPORT}`);
  const rows: FlowRow[] = [];
  for (let i = 0; i < flows.length; i++) {
    const f: unknown = flows[i];
    const at = `/flows/${i}`;
    if (!isObject(f)) throw new FlowReportError(at, `must be an object {dst, proto, port, count}, got ${shown(f)}`);
    const remote = canonicalAddress(f.dst);
    if (remote === null) throw new FlowReportError(`${at}/dst`, `must be one IP address, got ${shown(f.dst)}`);
    const proto = protoOf(f.proto);
    if (proto === null) throw new FlowReportError(`${at}/proto`, `must be "tcp", "udp", "icmp" or an IP protocol number 0..255, got ${shown(f.proto)}`);
    const maxPort = proto === 'icmp' ? 255 : 65535;
    if (!integerIn(f.port, 0, maxPort)) throw new FlowReportError(`${at}/port`, `must be an integer from 0 to ${maxPort}, got ${shown(f.port)}`);
    if (!integerIn(f.count, 1, MAX_INT32)) throw new FlowReportError(`${at}/count`, `must be an integer from 1 to ${MAX_INT32}, got ${shown(f.count)}`);
    const verdict = f.verdict ?? 'dropped';
    if (!(FLOW_LOG_VERDICTS as readonly unknown[]).includes(verdict)) throw new FlowReportError(`${at}/verdict`, `must be one of ${FLOW_LOG_VERDICTS.join(', ')}, got ${shown(verdict)}`);
    const direction = f.direction ?? 'egress';
    if (direction !== 'egress' && direction !== 'ingress') throw new FlowReportError(`${at}/direction`, `must be egress or ingress, got ${shown(direction)}`);
    const rule = f.rule ?? null;
    if (rule !== null && !integerIn(rule, 0, MAX_RULES_PER_SERVICE - 1)) throw new FlowReportError(`${at}/rule`, `must be null or an integer from 0 to ${MAX_RULES_PER_SERVICE - 1}, got ${shown(rule)}`);
    const reason = f.reason ?? null;
    if (reason !== null && !(FLOW_REASONS as readonly unknown[]).includes(reason)) throw new FlowReportError(`${at}/reason`, `must be one of ${FLOW_REASONS.join(', ')}, got ${shown(reason)}`);
    rows.push({
      service_id: data.service_id,
      revision,
      direction,
      verdict: verdict as FlowLogVerdict,
      proto,
      remote,
      port: f.port,
      rule,
      reason: reason as FlowReason | null,
      count: f.count,
      interval_start: start,
      interval_end: end,
    });
  }
  return { service_id: data.service_id, rows };
}
