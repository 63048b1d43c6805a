/**
 * The check of a fleet license envelope, shared by aegis-agent and every licensed service
 * (LicenseClient): open it with the fleet's key (fleet_envelope.ts), verify the signed
 * license inside, and check that its claims are the envelope's (audience, fleet, seq), that
 * it is newer than the one held and, when it arrives from the network, recent (an old one is
 * a recording). No I/O: the caller supplies the signature verifier (its own key source).
 */
import { openEnvelope } from './fleet_envelope.js';

/** Audience of the signed license inside a fleet envelope. */
export const AUD_FLEET_LICENSE = 'aegis-fleet-license';

/**
 * How old (seconds since its iat) a fleet license envelope may be when it arrives: the
 * server seals a fresh one every 5 minutes and on every change and request, so an older one
 * is a recording. Bounds what a host with no saved envelope accepts.
 */
export const FLEET_ENVELOPE_MAX_AGE_SECONDS = 900;
/** Clock difference tolerated between server and host on that age. */
export const FLEET_ENVELOPE_LEEWAY_SECONDS = 60;

/** The signed fleet license (tier and features as the server names them). */
export interface FleetLicense {
  aud: typeof AUD_FLEET_LICENSE;
  iss: string;
  iat: number;
  exp?: number;
  fleet: string;
  seq: number;
  status: 'active' | 'revoked' | 'none';
  license_id: string | null;
  tier: string | null;
  features: string[];
}

export interface FleetEnvelopeInput {
  fleet: string;
  /** The fleet's 32-byte key. */
  key: Buffer;
  data: string | Uint8Array;
  /** Verifies a compact JWS (EdDSA) and answers its payload, or throws why not. */
  verify: (jws: string) => Promise<Record<string, unknown>> | Record<string, unknown>;
  /** The seq of the envelope held (-1 for none); a network envelope must be newer. */
  heldSeq: number;
  /** 'cache': the host's own saved envelope (any age, its seq may equal the held one). */
  source: 'network' | 'cache';
  /** ms since the epoch (default Date.now()). */
  now?: number;
}

export type FleetEnvelopeCheck = { ok: true; seq: number; gen: number; claims: FleetLicense } | { ok: false; reason: string };

/** Opens and checks a fleet envelope; answers the license or why it was rejected. */
export async function checkFleetEnvelope(input: FleetEnvelopeInput): Promise<FleetEnvelopeCheck> {
  let opened: { seq: number; gen: number; plaintext: string };
  try {
    opened = openEnvelope(input.key, input.fleet, input.data);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  if (input.source !== 'cache' && opened.seq <= input.heldSeq) {
    return { ok: false, reason: `sequence ${opened.seq} is not newer than ${input.heldSeq} (replay or rollback)` };
  }
  let c: Partial<FleetLicense>;
  try {
    c = (await input.verify(opened.plaintext)) as Partial<FleetLicense>;
  } catch (e) {
    return { ok: false, reason: `bad signature: ${(e as Error).message}` };
  }
  if (c.aud !== AUD_FLEET_LICENSE || c.fleet !== input.fleet || c.seq !== opened.seq) return { ok: false, reason: 'claims do not match the envelope' };
  if (input.source !== 'cache') {
    const age = Math.floor((input.now ?? Date.now()) / 1000) - Number(c.iat);
    if (!Number.isFinite(age) || age > FLEET_ENVELOPE_MAX_AGE_SECONDS + FLEET_ENVELOPE_LEEWAY_SECONDS) {
      return { ok: false, reason: `signed ${Number.isFinite(age) ? `${age} s ago` : 'at no valid time'}, more than ${FLEET_ENVELOPE_MAX_AGE_SECONDS} s: replay refused` };
    }
  }
  if (c.status !== 'active' && c.status !== 'revoked' && c.status !== 'none') return { ok: false, reason: 'bad status' };
  if (!Array.isArray(c.features)) c.features = [];
  return { ok: true, seq: opened.seq, gen: opened.gen, claims: c as FleetLicense };
}

/** True when the fleet license grants something at `now`: active and not past its exp. */
export function fleetLicenseActive(c: FleetLicense | null, now = Date.now()): boolean {
  return c !== null && c.status === 'active' && (c.exp === undefined || c.exp * 1000 > now);
}
