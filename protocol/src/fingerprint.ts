/**
 * The canonical hardware fingerprint. Agent and server call this one function, so a
 * fingerprint computed by `aegisctl hwid` and by POST /api/v1/licenses/fingerprint agree.
 *
 * Canonicalisation makes the hash stable: case and whitespace are normalised, lists are
 * sorted and deduplicated (interface order does not matter), placeholder values that
 * firmware vendors ship ("To Be Filled By O.E.M.", all-zero UUIDs) count as missing, and
 * missing facts are simply left out.
 */
import { createHash } from 'node:crypto';
import { ValidationError, type FieldProblem } from './errors.js';

export const FINGERPRINT_VERSION = 'aegis-hwid-v1';

export interface HardwareFacts {
  machine_id?: string | null;
  system_uuid?: string | null;
  board_serial?: string | null;
  cpu_model?: string | null;
  macs?: readonly string[] | null;
  disk_serials?: readonly string[] | null;
}

export interface CanonicalFacts {
  machine_id?: string;
  system_uuid?: string;
  board_serial?: string;
  cpu_model?: string;
  macs: string[];
  disk_serials: string[];
}

export interface Fingerprint {
  hardware_id: string;
  version: typeof FINGERPRINT_VERSION;
  components: CanonicalFacts;
}

const PLACEHOLDERS = new Set([
  '',
  'none',
  'null',
  'unknown',
  'default string',
  'to be filled by o.e.m.',
  'not specified',
  'not applicable',
  'system serial number',
  '0',
  '00000000-0000-0000-0000-000000000000',
  'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '03000200-0400-0500-0006-000700080009',
]);

const MAX_FACT_LENGTH = 256;
const MAX_LIST_LENGTH = 64;
const SCALAR_KEYS = ['machine_id', 'system_uuid', 'board_serial', 'cpu_model'] as const;

function canonicalScalar(value: string): string | undefined {
  const v = value.trim().replace(/\s+/g, ' ').toLowerCase();
  return PLACEHOLDERS.has(v) ? undefined : v;
}

function canonicalMac(value: string): string | undefined {
  const hex = value.toLowerCase().replace(/[^0-9a-f]/g, '');
  if (hex.length !== 12) return undefined;
  if (/^0+$/.test(hex) || /^f+$/.test(hex)) return undefined;
  return hex.match(/../g)!.join(':');
}

/**
 * Validates raw facts and returns their canonical form. Throws ValidationError naming
 * each bad field; values that are merely placeholders are dropped, not rejected.
 */
export function canonicalizeFacts(facts: unknown): CanonicalFacts {
  const problems: FieldProblem[] = [];
  if (facts === null || typeof facts !== 'object' || Array.isArray(facts)) {
    throw new ValidationError([{ path: '/', message: 'must be an object of hardware facts' }]);
  }
  const input = facts as Record<string, unknown>;
  const known = new Set<string>([...SCALAR_KEYS, 'macs', 'disk_serials']);
  for (const key of Object.keys(input)) {
    if (!known.has(key)) problems.push({ path: `/${key}`, message: 'unknown hardware fact' });
  }
  const out: CanonicalFacts = { macs: [], disk_serials: [] };
  for (const key of SCALAR_KEYS) {
    const v = input[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string') {
      problems.push({ path: `/${key}`, message: 'must be a string' });
      continue;
    }
    if (v.length > MAX_FACT_LENGTH) {
      problems.push({ path: `/${key}`, message: `must be at most ${MAX_FACT_LENGTH} characters` });
      continue;
    }
    const c = canonicalScalar(v);
    if (c !== undefined) out[key] = c;
  }
  for (const key of ['macs', 'disk_serials'] as const) {
    const v = input[key];
    if (v === undefined || v === null) continue;
    if (!Array.isArray(v) || v.length > MAX_LIST_LENGTH) {
      problems.push({ path: `/${key}`, message: `must be an array of at most ${MAX_LIST_LENGTH} strings` });
      continue;
    }
    const set = new Set<string>();
    v.forEach((item, i) => {
      if (typeof item !== 'string' || item.length > MAX_FACT_LENGTH) {
        problems.push({ path: `/${key}/${i}`, message: 'must be a string of at most 256 characters' });
        return;
      }
      const c = key === 'macs' ? canonicalMac(item) : canonicalScalar(item);
      if (c !== undefined) set.add(c);
    });
    out[key] = [...set].sort();
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return out;
}

/** The string that is hashed: versioned, one `key=value` per line, fixed key order. */
export function canonicalString(c: CanonicalFacts): string {
  const lines = [FINGERPRINT_VERSION];
  for (const key of SCALAR_KEYS) if (c[key] !== undefined) lines.push(`${key}=${c[key]}`);
  lines.push(`macs=${c.macs.join(',')}`);
  lines.push(`disk_serials=${c.disk_serials.join(',')}`);
  return lines.join('\n');
}

/** Hashes hardware facts into the hardware id (64 lowercase hex characters). */
export function computeFingerprint(facts: unknown): Fingerprint {
  const components = canonicalizeFacts(facts);
  const hasAny =
    SCALAR_KEYS.some((k) => components[k] !== undefined) || components.macs.length > 0 || components.disk_serials.length > 0;
  if (!hasAny) {
    throw new ValidationError([{ path: '/', message: 'no usable hardware fact: at least one identifier is required' }]);
  }
  const hardware_id = createHash('sha256').update(canonicalString(components)).digest('hex');
  return { hardware_id, version: FINGERPRINT_VERSION, components };
}

export const HARDWARE_ID_PATTERN = /^[0-9a-f]{64}$/;
