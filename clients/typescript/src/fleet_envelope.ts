/**
 * The fleet license envelope: the fleet's signed license, sealed with AES-256-GCM under
 * that fleet's own key, shared by the server and the fleet's hosts. Each fleet key is
 * derived from the server's master fleet key (deriveFleetKey: HKDF-SHA256 over the fleet
 * name and a key generation), so a host holding one fleet's key cannot open another
 * fleet's envelope, and a rotation (a new generation) retires the old key. Someone who can
 * publish on NATS but lacks the key cannot make an envelope that opens; the license inside
 * is still a signed JWS, so someone who has the key still cannot forge a license.
 *
 * Wire format (JSON): {"v":2,"alg":"A256GCM","fleet","gen","seq","iv","ct"} with iv and ct
 * (ciphertext followed by the 16-byte tag) in base64url; `gen` names the key generation
 * that sealed it. Fleet, generation and seq are bound as additional authenticated data,
 * so none can be altered or the envelope moved to another fleet without failing to open.
 * Version 1 envelopes (one server-wide key for every fleet) are refused.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

export const ENVELOPE_VERSION = 2;
export const FLEET_KEY_BYTES = 32;
/** The HKDF info prefix of a per-fleet key; the fleet name and generation follow. */
const FLEET_KEY_INFO = 'aegis fleet key';
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** An envelope larger than this is refused before any parsing. */
export const MAX_ENVELOPE_BYTES = 64 * 1024;

export interface SealedEnvelope {
  v: 2;
  alg: 'A256GCM';
  fleet: string;
  /** The fleet key generation that sealed it (1 until the first rotation). */
  gen: number;
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

const isGeneration = (g: unknown): g is number => Number.isSafeInteger(g) && (g as number) >= 1;

/**
 * The key of one fleet at one generation: HKDF-SHA256 of the master fleet key with info
 * "aegis fleet key" NUL fleet NUL generation (no salt: the master key is uniformly random).
 * Different fleets or generations give unrelated keys; none reveals the master key.
 */
export function deriveFleetKey(master: Buffer, fleet: string, generation: number): Buffer {
  if (master.length !== FLEET_KEY_BYTES) throw new EnvelopeError('master fleet key must be 32 bytes');
  if (typeof fleet !== 'string' || fleet.length === 0 || fleet.includes('\0')) throw new EnvelopeError('fleet name must be a non-empty string without NUL');
  if (!isGeneration(generation)) throw new EnvelopeError('fleet key generation must be a positive integer');
  const info = Buffer.from(`${FLEET_KEY_INFO}\0${fleet}\0${generation}`, 'utf8');
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), info, FLEET_KEY_BYTES));
}

function aad(fleet: string, gen: number, seq: number): Buffer {
  return Buffer.from(`aegis.license.v${ENVELOPE_VERSION}|${fleet}|${gen}|${seq}`);
}

/** Seals `plaintext` for `fleet` with that fleet's key of generation `gen`. */
export function sealEnvelope(key: Buffer, fleet: string, gen: number, seq: number, plaintext: string): string {
  if (key.length !== FLEET_KEY_BYTES) throw new EnvelopeError('fleet key must be 32 bytes');
  if (!isGeneration(gen)) throw new EnvelopeError('fleet key generation must be a positive integer');
  if (!Number.isSafeInteger(seq) || seq < 0) throw new EnvelopeError('seq must be a non-negative integer');
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad(fleet, gen, seq));
  const ct = Buffer.concat([c.update(plaintext, 'utf8'), c.final(), c.getAuthTag()]);
  const env: SealedEnvelope = { v: ENVELOPE_VERSION, alg: 'A256GCM', fleet, gen, seq, iv: iv.toString('base64url'), ct: ct.toString('base64url') };
  return JSON.stringify(env);
}

/** Opens an envelope; throws EnvelopeError for anything malformed, altered, for another fleet or sealed with another key. */
export function openEnvelope(key: Buffer, expectedFleet: string, data: string | Uint8Array): { seq: number; gen: number; plaintext: string } {
  const text = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
  if (text.length > MAX_ENVELOPE_BYTES) throw new EnvelopeError('envelope too large');
  let env: Partial<SealedEnvelope>;
  try {
    env = JSON.parse(text) as Partial<SealedEnvelope>;
  } catch {
    throw new EnvelopeError('envelope is not JSON');
  }
  if (env === null || typeof env !== 'object') throw new EnvelopeError('envelope is not a JSON object');
  if (env.v !== ENVELOPE_VERSION || env.alg !== 'A256GCM') {
    throw new EnvelopeError(`unknown envelope version ${JSON.stringify(env.v)} (this agent opens version ${ENVELOPE_VERSION}, sealed with a per-fleet key)`);
  }
  if (env.fleet !== expectedFleet) throw new EnvelopeError(`envelope is for fleet ${JSON.stringify(env.fleet)}, not ${expectedFleet}`);
  if (!isGeneration(env.gen)) throw new EnvelopeError('bad key generation');
  if (!Number.isSafeInteger(env.seq) || (env.seq as number) < 0) throw new EnvelopeError('bad seq');
  if (typeof env.iv !== 'string' || typeof env.ct !== 'string') throw new EnvelopeError('missing iv or ciphertext');
  const iv = Buffer.from(env.iv, 'base64url');
  const ct = Buffer.from(env.ct, 'base64url');
  if (iv.length !== IV_BYTES || ct.length < TAG_BYTES) throw new EnvelopeError('bad iv or ciphertext length');
  try {
    const d = createDecipheriv('aes-256-gcm', key, iv);
    d.setAAD(aad(env.fleet, env.gen, env.seq as number));
    d.setAuthTag(ct.subarray(ct.length - TAG_BYTES));
    const pt = Buffer.concat([d.update(ct.subarray(0, ct.length - TAG_BYTES)), d.final()]);
    return { seq: env.seq as number, gen: env.gen, plaintext: pt.toString('utf8') };
  } catch {
    throw new EnvelopeError(
      `envelope (key generation ${env.gen}) does not decrypt with this fleet key; install the fleet's current key (aegis-server fleet-key show ${expectedFleet})`,
    );
  }
}
