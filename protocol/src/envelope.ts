/**
 * The fleet license envelope: the fleet's signed license, sealed with AES-256-GCM under
 * the fleet key shared by server and agents. Someone who can publish on NATS but lacks
 * the key cannot make an envelope that opens; the license inside is still a signed JWS,
 * so someone who has the key still cannot forge a license.
 *
 * Wire format (JSON): {"v":1,"alg":"A256GCM","fleet","seq","iv","ct"} with iv and ct
 * (ciphertext followed by the 16-byte tag) in base64url. The fleet and seq are bound as
 * additional authenticated data, so neither can be altered or the envelope moved to
 * another fleet without failing to open.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

export const ENVELOPE_VERSION = 1;
export const FLEET_KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** An envelope larger than this is refused before any parsing. */
export const MAX_ENVELOPE_BYTES = 64 * 1024;

export interface SealedEnvelope {
  v: 1;
  alg: 'A256GCM';
  fleet: string;
  /** Monotonic per fleet: an agent refuses any envelope not newer than the one it holds. */
  seq: number;
  iv: string;
  ct: string;
}

export class EnvelopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EnvelopeError';
  }
}

/** Parses a fleet key: 32 bytes as base64 or base64url (AEGIS_FLEET_KEY). */
export function parseFleetKey(text: string): Buffer {
  const t = text.trim();
  const key = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (key.length !== FLEET_KEY_BYTES || !/^[A-Za-z0-9+/_=-]+$/.test(t)) {
    throw new EnvelopeError(`fleet key must be ${FLEET_KEY_BYTES} bytes in base64 (openssl rand -base64 32)`);
  }
  return key;
}

function aad(fleet: string, seq: number): Buffer {
  return Buffer.from(`aegis.license.v${ENVELOPE_VERSION}|${fleet}|${seq}`);
}

export function sealEnvelope(key: Buffer, fleet: string, seq: number, plaintext: string): string {
  if (key.length !== FLEET_KEY_BYTES) throw new EnvelopeError('fleet key must be 32 bytes');
  if (!Number.isSafeInteger(seq) || seq < 0) throw new EnvelopeError('seq must be a non-negative integer');
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad(fleet, seq));
  const ct = Buffer.concat([c.update(plaintext, 'utf8'), c.final(), c.getAuthTag()]);
  const env: SealedEnvelope = { v: ENVELOPE_VERSION, alg: 'A256GCM', fleet, seq, iv: iv.toString('base64url'), ct: ct.toString('base64url') };
  return JSON.stringify(env);
}

/** Opens an envelope; throws EnvelopeError for anything malformed, altered or for another fleet. */
export function openEnvelope(key: Buffer, expectedFleet: string, data: string | Uint8Array): { seq: number; plaintext: string } {
  const text = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
  if (text.length > MAX_ENVELOPE_BYTES) throw new EnvelopeError('envelope too large');
  let env: Partial<SealedEnvelope>;
  try {
    env = JSON.parse(text) as Partial<SealedEnvelope>;
  } catch {
    throw new EnvelopeError('envelope is not JSON');
  }
  if (env === null || typeof env !== 'object' || env.v !== ENVELOPE_VERSION || env.alg !== 'A256GCM') throw new EnvelopeError('unknown envelope version');
  if (env.fleet !== expectedFleet) throw new EnvelopeError(`envelope is for fleet ${JSON.stringify(env.fleet)}, not ${expectedFleet}`);
  if (!Number.isSafeInteger(env.seq) || (env.seq as number) < 0) throw new EnvelopeError('bad seq');
  if (typeof env.iv !== 'string' || typeof env.ct !== 'string') throw new EnvelopeError('missing iv or ciphertext');
  const iv = Buffer.from(env.iv, 'base64url');
  const ct = Buffer.from(env.ct, 'base64url');
  if (iv.length !== IV_BYTES || ct.length < TAG_BYTES) throw new EnvelopeError('bad iv or ciphertext length');
  try {
    const d = createDecipheriv('aes-256-gcm', key, iv);
    d.setAAD(aad(env.fleet, env.seq as number));
    d.setAuthTag(ct.subarray(ct.length - TAG_BYTES));
    const pt = Buffer.concat([d.update(ct.subarray(0, ct.length - TAG_BYTES)), d.final()]);
    return { seq: env.seq as number, plaintext: pt.toString('utf8') };
  } catch {
    throw new EnvelopeError('envelope does not decrypt with this fleet key');
  }
}
