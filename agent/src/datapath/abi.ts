/**
 * The datapath's numbers under the names TypeScript uses: every value comes from the C
 * headers through protocol's generated BPF_ABI / RULE_RECORD_LAYOUT, except the IANA
 * protocol numbers, which the C side takes from <netinet/in.h> and which are written
 * once here. abi.test.ts checks all of them against the addon's compiled values.
 */
import { BPF_ABI, RULE_RECORD_LAYOUT } from '../../../protocol/src/index.js';
import type { DatapathMode, FlowLogVerdict, FlowReason } from '../../../protocol/src/index.js';

export const DIR_EGRESS = BPF_ABI.AEGIS_DIR_EGRESS;
export const DIR_INGRESS = BPF_ABI.AEGIS_DIR_INGRESS;

/** IANA protocol numbers (IPPROTO_TCP / IPPROTO_UDP / IPPROTO_ICMP / IPPROTO_ICMPV6 of <netinet/in.h>). */
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMP = 1;
export const IPPROTO_ICMPV6 = 58;
/** Protocol byte of a rule for every protocol (`any` with port 0). */
export const PROTO_ALL = BPF_ABI.AEGIS_PROTO_ALL;

export const MODE_OBSERVE = BPF_ABI.AEGIS_MODE_OBSERVE;
export const MODE_ENFORCE = BPF_ABI.AEGIS_MODE_ENFORCE;
export const CFG_FAIL_CLOSED = BPF_ABI.AEGIS_CFG_FAIL_CLOSED;

/** Services one datapath holds at once (outer map size). */
export const MAX_SERVICES: number = BPF_ABI.AEGIS_MAX_SERVICES;

/** IPv4 lives in the v4-mapped range ::ffff:0:0/96 of the 16-byte key. */
export const V4_MAPPED_BITS = BPF_ABI.AEGIS_V4_MAPPED_BITS;

export const RULE_RECORD_BYTES = RULE_RECORD_LAYOUT.bytes;
export const RULE_FIELDS = RULE_RECORD_LAYOUT.fields;

/** Why the programs decided as they did (BPF_PROG_TEST_RUN's reason code). */
export type VerdictReason =
  | 'unbound'
  | 'no-policy'
  | 'allowed'
  | 'dropped'
  | 'would-drop'
  | 'bypass'
  | 'expired-open'
  | 'expired-closed'
  | 'reply'
  | 'unparsed'
  | 'cut'
  | 'unknown';

const REASON_BY_CODE = new Map<number, VerdictReason>([
  [BPF_ABI.AEGIS_R_UNBOUND, 'unbound'],
  [BPF_ABI.AEGIS_R_NO_POLICY, 'no-policy'],
  [BPF_ABI.AEGIS_R_ALLOWED, 'allowed'],
  [BPF_ABI.AEGIS_R_DROPPED, 'dropped'],
  [BPF_ABI.AEGIS_R_WOULD_DROP, 'would-drop'],
  [BPF_ABI.AEGIS_R_BYPASS, 'bypass'],
  [BPF_ABI.AEGIS_R_EXPIRED_OPEN, 'expired-open'],
  [BPF_ABI.AEGIS_R_EXPIRED_CLOSED, 'expired-closed'],
  [BPF_ABI.AEGIS_R_REPLY, 'reply'],
  [BPF_ABI.AEGIS_R_UNPARSED, 'unparsed'],
  [BPF_ABI.AEGIS_R_CUT, 'cut'],
]);

/** The reason named by a reason code; 'unknown' for a code this build does not know. */
export function reasonOf(code: number): VerdictReason {
  return REASON_BY_CODE.get(code) ?? 'unknown';
}

export type FlowVerdict = FlowLogVerdict;

const EVENT_VERDICT_BY_CODE = new Map<number, FlowVerdict>([
  [BPF_ABI.AEGIS_EV_ALLOWED, 'allowed'],
  [BPF_ABI.AEGIS_EV_DROPPED, 'dropped'],
  [BPF_ABI.AEGIS_EV_WOULD_DROP, 'would-drop'],
]);

/** The verdict of a flow event; an unknown code reads as 'dropped' (never as allowed). */
export function eventVerdictOf(code: number): FlowVerdict {
  return EVENT_VERDICT_BY_CODE.get(code) ?? 'dropped';
}

const EVENT_REASON_BY_CODE = new Map<number, FlowReason>([
  [BPF_ABI.AEGIS_EVR_POLICY, 'policy'],
  [BPF_ABI.AEGIS_EVR_EXPIRED, 'expired'],
  [BPF_ABI.AEGIS_EVR_UNPARSED, 'unparsed'],
  [BPF_ABI.AEGIS_EVR_CUT, 'cut'],
]);

/** Why a flow event's verdict was reached; an unknown code reads as 'policy'. */
export function eventReasonOf(code: number): FlowReason {
  return EVENT_REASON_BY_CODE.get(code) ?? 'policy';
}

/** rule_id of a verdict that no rule decided. */
export const RULE_NONE = BPF_ABI.AEGIS_RULE_NONE;

/**
 * The snapshot entry a rule id names: its direction (bit 31) and its index in `edges`
 * (egress) or `allow_cidrs` (ingress); null for RULE_NONE.
 */
export function ruleOf(ruleId: number): { direction: 'egress' | 'ingress'; index: number } | null {
  if (ruleId === RULE_NONE) return null;
  return { direction: ruleId >>> 31 === DIR_INGRESS ? 'ingress' : 'egress', index: ruleId & 0x7fffffff };
}

export function modeNumber(mode: DatapathMode): number {
  return mode === 'enforce' ? MODE_ENFORCE : MODE_OBSERVE;
}

export function modeName(mode: number): DatapathMode {
  return mode === MODE_ENFORCE ? 'enforce' : 'observe';
}

/** 'tcp' / 'udp' for their protocol numbers, the number itself otherwise. */
export function protoName(proto: number): 'tcp' | 'udp' | number {
  return proto === IPPROTO_TCP ? 'tcp' : proto === IPPROTO_UDP ? 'udp' : proto;
}
