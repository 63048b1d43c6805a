/**
 * Named fingerprint components: the hardware id split into the facts it is made of, each
 * hashed on its own, so that a machine whose NIC or disk was replaced can still be told
 * apart from a new machine. A license's `fingerprint_match` strategy says how many of the
 * components recorded at activation a host must still present to remain that machine.
 *
 * Each component is HMAC-SHA256 of its canonical value (the canonicalisation of
 * fingerprint.ts) under a salt derived from the license key. The server stores only these
 * digests: no raw serial, MAC or machine-id ever leaves the host, the digests of one host
 * differ between licenses (no correlation across customers or licenses), and a database
 * leak alone cannot be brute-forced over the small space of MAC addresses without the
 * license key. The whole-host hardware id (`aegis-hwid-v1`, what the kernel module is
 * loaded with) is unchanged: the SHA-256 of all canonical facts together.
 */
import { createHash, createHmac } from 'node:crypto';
import { canonicalizeFacts, type CanonicalFacts } from './fingerprint.js';

export const FINGERPRINT_COMPONENTS_VERSION = 'aegis-fp-component-v1';

/** The component names, in a fixed order. Lists (MACs, disk serials) are one component each. */
export const FINGERPRINT_COMPONENT_NAMES = ['machine_id', 'product_uuid', 'board_serial', 'cpu_model', 'macs', 'disk_serials'] as const;
export type FingerprintComponentName = (typeof FINGERPRINT_COMPONENT_NAMES)[number];
/** Component name → 64 lowercase hex characters. */
export type FingerprintComponents = Partial<Record<FingerprintComponentName, string>>;

export const COMPONENT_DIGEST_PATTERN = /^[0-9a-f]{64}$/;

/** How many recorded components a host must still present to remain the same machine. */
export const FINGERPRINT_MATCH_STRATEGIES = ['any', 'majority', 'all'] as const;
export type FingerprintMatch = (typeof FINGERPRINT_MATCH_STRATEGIES)[number];
export const DEFAULT_FINGERPRINT_MATCH: FingerprintMatch = 'majority';

/** What activating a VM clone of an active machine does: refused, or a machine of its own (a seat). */
export const CLONE_POLICIES = ['refuse', 'new_machine'] as const;
export type ClonePolicy = (typeof CLONE_POLICIES)[number];
export const DEFAULT_CLONE_POLICY: ClonePolicy = 'refuse';

/** Where the agent runs, as it detects it (host_environment on the agent). */
export const HOST_ENVIRONMENTS = ['host', 'vm', 'container'] as const;
export type HostEnvironment = (typeof HOST_ENVIRONMENTS)[number];

/**
 * The components that identify a VM's disk image and firmware identity: a host presenting
 * both equal to another active machine's, under another host key, is a clone of it.
 */
export const CLONE_IDENTITY_COMPONENTS: readonly FingerprintComponentName[] = ['machine_id', 'product_uuid'];

/** The per-license salt, derived from the (canonical) license key; kept on the host after activation. */
export function fingerprintSalt(canonicalLicenseKey: string): string {
  return createHash('sha256').update(`aegis-fingerprint-salt-v1\n${canonicalLicenseKey}`).digest('hex');
}

function valuesOf(c: CanonicalFacts): Partial<Record<FingerprintComponentName, string>> {
  const out: Partial<Record<FingerprintComponentName, string>> = {};
  if (c.machine_id !== undefined) out.machine_id = c.machine_id;
  if (c.system_uuid !== undefined) out.product_uuid = c.system_uuid;
  if (c.board_serial !== undefined) out.board_serial = c.board_serial;
  if (c.cpu_model !== undefined) out.cpu_model = c.cpu_model;
  if (c.macs.length > 0) out.macs = c.macs.join(',');
  if (c.disk_serials.length > 0) out.disk_serials = c.disk_serials.join(',');
  return out;
}

/** The salted digest of each component the facts have (missing facts give no component). */
export function fingerprintComponents(facts: unknown, salt: string): FingerprintComponents {
  const values = valuesOf(canonicalizeFacts(facts));
  const out: FingerprintComponents = {};
  for (const name of FINGERPRINT_COMPONENT_NAMES) {
    const v = values[name];
    if (v === undefined) continue;
    out[name] = createHmac('sha256', Buffer.from(salt, 'utf8')).update(`${FINGERPRINT_COMPONENTS_VERSION}\n${name}=${v}`).digest('hex');
  }
  return out;
}

export interface FingerprintMatchResult {
  /** True when the presented components are the recorded machine's under the strategy. */
  same: boolean;
  /** Recorded components the host still presents with the same digest. */
  matched: FingerprintComponentName[];
  /** Recorded components that differ or are missing now, and components new since. */
  changed: FingerprintComponentName[];
  /** How many components were recorded. */
  known: number;
}

/**
 * Compares what a host presents with what was recorded: `any` needs one recorded
 * component to match, `majority` more than half of them, `all` every one of them and no
 * new one. Nothing recorded matches nothing.
 */
export function matchFingerprint(recorded: FingerprintComponents, presented: FingerprintComponents, strategy: FingerprintMatch): FingerprintMatchResult {
  const matched: FingerprintComponentName[] = [];
  const changed: FingerprintComponentName[] = [];
  let known = 0;
  for (const name of FINGERPRINT_COMPONENT_NAMES) {
    const r = recorded[name];
    const p = presented[name];
    if (r === undefined) {
      if (p !== undefined) changed.push(name);
      continue;
    }
    known++;
    if (p === r) matched.push(name);
    else changed.push(name);
  }
  let same: boolean;
  if (known === 0) same = false;
  else if (strategy === 'any') same = matched.length >= 1;
  else if (strategy === 'majority') same = matched.length * 2 > known;
  else same = changed.length === 0;
  return { same, matched, changed, known };
}

/** True when both hosts present every clone identity component and they are all equal. */
export function sameCloneIdentity(a: FingerprintComponents, b: FingerprintComponents): boolean {
  return CLONE_IDENTITY_COMPONENTS.every((n) => a[n] !== undefined && a[n] === b[n]);
}
