/**
 * What travels over NATS besides envelopes. Every message a host acts on is a compact
 * JWS signed by the server's current key (the same JWKS as licenses): NATS
 * authorization keeps strangers off the subjects, and the signature keeps a message that
 * got past it from being obeyed.
 */
import type { DatapathMode, MapSnapshot, Stage } from './snapshot.js';
import type { Feature, Tier } from './tiers.js';
import { AUD_FLEET_LICENSE } from '../../clients/typescript/src/fleet_license.js';

export const AUD_SEG_MAP = 'aegis-seg-map';
// The fleet license's audience and the age bound on an arriving envelope are defined with
// the envelope check every licensed service shares (the license client library).
export { AUD_FLEET_LICENSE, FLEET_ENVELOPE_MAX_AGE_SECONDS } from '../../clients/typescript/src/fleet_license.js';

/**
 * The shortest acceptance window of a signed snapshot message (seconds after its iat). The
 * server re-signs what is current on every republication (every AEGIS_SEG_REPUBLISH_SECONDS)
 * and on every fallback answer, so a host only ever needs a recent message; a short window
 * bounds how old a recorded message a replay can use, even against a host with no saved
 * floor yet. The server uses max(this, 3 × its republish interval).
 */
export const SEG_MESSAGE_MIN_LIFETIME_SECONDS = 900;
/** Clock skew tolerated between server and host when checking a snapshot message's exp. */
export const SEG_EXP_LEEWAY_SECONDS = 60;

/**
 * The exp of a snapshot message: iat + the message lifetime, and never later than the
 * snapshot's own ttl_seconds (a message is no use after the policy it carries would have run
 * out). How long the policy then runs is the snapshot's TTL from receipt, not this.
 */
export function segMessageExp(iat: number, snapshot: MapSnapshot | null, lifetimeSeconds = SEG_MESSAGE_MIN_LIFETIME_SECONDS): number {
  return iat + (snapshot === null ? lifetimeSeconds : Math.min(snapshot.ttl_seconds, lifetimeSeconds));
}

/** Payload of a snapshot message on aegis.seg.maps.<host|_all>.<service_id>. */
export interface SegMapClaims {
  aud: typeof AUD_SEG_MAP;
  iss: string;
  iat: number;
  /** After this (epoch seconds, with SEG_EXP_LEEWAY_SECONDS) hosts refuse the message. */
  exp: number;
  /** A machine id, or "_all". */
  target: string;
  service_id: number;
  revision: number;
  stage: Stage;
  /** null withdraws the service's policy on the target. */
  snapshot: MapSnapshot | null;
}

/** Payload of the signed fleet license inside a license envelope. */
export interface FleetLicenseClaims {
  aud: typeof AUD_FLEET_LICENSE;
  iss: string;
  iat: number;
  exp?: number;
  fleet: string;
  /** Same as the envelope's seq: binds the signed content to its place in the order. */
  seq: number;
  status: 'active' | 'revoked' | 'none';
  license_id: string | null;
  tier: Tier | null;
  features: Feature[];
}

/**
 * Why the server refused a license request on aegis.agent.<token>.license: the token names
 * no active machine (REQUESTER_UNKNOWN), the fleet asked for is not the fleet of that
 * machine's license (FLEET_MISMATCH), or no license names the fleet (FLEET_UNKNOWN).
 */
export const LICENSE_REQUEST_REFUSALS = ['REQUESTER_UNKNOWN', 'FLEET_MISMATCH', 'FLEET_UNKNOWN'] as const;
export type LicenseRequestRefusalCode = (typeof LICENSE_REQUEST_REFUSALS)[number];

/** The reply to a refused license request, instead of an envelope. */
export interface LicenseRequestRefusal {
  error: { code: LicenseRequestRefusalCode; message: string };
}

/** The refusal in a license request's reply, or null when the reply is something else (an envelope, empty). */
export function licenseRequestRefusalOf(reply: string): LicenseRequestRefusal['error'] | null {
  let v: unknown;
  try {
    v = JSON.parse(reply);
  } catch {
    return null;
  }
  const e = (v as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (!e || typeof e !== 'object' || !(LICENSE_REQUEST_REFUSALS as readonly unknown[]).includes(e.code)) return null;
  return { code: e.code as LicenseRequestRefusalCode, message: typeof e.message === 'string' ? e.message : '' };
}

/** aegis.agent.<host>.status, every 30 s. */
export interface AgentStatusReport {
  host: string;
  machine_id: string | null;
  agent_version: string;
  edition: 'licensed' | 'community';
  tier: Tier | null;
  datapath: { available: boolean; reason: string | null };
  services: Array<{
    service_id: number;
    revision: number | null;
    stage: Stage | null;
    mode: DatapathMode | null;
    ttl_left_s: number | null;
    counters: { allowed: number; dropped: number; would_drop: number } | null;
  }>;
  /** This host's own license: licensed, grace (expired, within its grace period), community, activating (absent from older agents). */
  license_state?: 'licensed' | 'grace' | 'community' | 'activating';
  /** With license_state grace: when the grace ends. */
  grace_ends_at?: string | null;
  /** The host's clock against what it already saw signed (absent from older agents). */
  clock?: { clock_tampered: boolean; behind_seconds: number };
  sent_at: string;
}

/** aegis.agent.<host>.ack, once per applied revision. */
export interface AgentAck {
  host: string;
  service_id: number;
  revision: number;
  stage: Stage;
  mode: DatapathMode;
  ok: boolean;
  error: string | null;
  applied_at: string;
}

/** Verdict of a flow as the flow log and flow reports name it. */
export type FlowLogVerdict = 'allowed' | 'dropped' | 'would-drop';
export const FLOW_LOG_VERDICTS: readonly FlowLogVerdict[] = ['allowed', 'dropped', 'would-drop'];

/** Why the datapath decided: a rule (or none) of the policy, a policy past its expiry, headers it
 * could not walk, or a tracked flow the new policy generation no longer allows. */
export type FlowReason = 'policy' | 'expired' | 'unparsed' | 'cut';
export const FLOW_REASONS: readonly FlowReason[] = ['policy', 'expired', 'unparsed', 'cut'];

/** Protocol of a flow: a name for the ones rules can name, else the IP protocol number (0..255). */
export type FlowProto = 'tcp' | 'udp' | 'icmp' | number;

/** One aggregated line of a flow report: `count` flows (first packets) with the same key in the interval. */
export interface AgentFlowLine {
  /** Remote address: the destination of egress, the source of ingress. */
  dst: string;
  proto: FlowProto;
  /** Remote port for egress, local port for ingress (the port rules name); ICMP type for icmp; 0 for portless protocols. */
  port: number;
  count: number;
  /** Absent in reports of older agents, which sent only denials: read as 'dropped'. */
  verdict?: FlowLogVerdict;
  /** Absent in reports of older agents: read as 'egress'. */
  direction?: 'egress' | 'ingress';
  /** Index of the deciding entry in the snapshot's `edges` (egress) or `allow_cidrs` (ingress); null = no rule matched. */
  rule?: number | null;
  reason?: FlowReason;
}

/**
 * aegis.agent.<machine>.flows: what the datapath decided for a service over one interval,
 * aggregated. `revision` is the snapshot revision in force (what `rule` indexes into).
 * Older agents send only `host`, `service_id`, `flows` (denials) and `sent_at`.
 */
export interface AgentFlowsReport {
  host: string;
  service_id: number;
  revision?: number | null;
  /** The interval the counts cover, ISO 8601. */
  interval?: { start: string; end: string };
  flows: AgentFlowLine[];
  sent_at: string;
}
