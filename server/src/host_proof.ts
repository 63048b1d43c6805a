/**
 * Host-key proofs: compact JWS signed by the machine's own Ed25519 key, payload
 * `{aud, hwid, iat, jti}`. A proof is accepted once (its jti is recorded in the database,
 * so replicas sharing the database share the replay record) and only within the clock
 * skew window, so a captured proof is worthless minutes later and never twice.
 */
import { createPublicKey, verify as edVerify, type KeyObject } from 'node:crypto';
import type { Kysely } from 'kysely';
import { AegisError, PROOF_MAX_SKEW_SECONDS, TOKEN_ALG, type Ed25519PublicJwk } from '../../protocol/src/index.js';
import type { Database } from './db/schema.js';
import { decodeCompact } from './tokens.js';
import { iso, type Clock } from './clock.js';

const JTI_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;

export function publicKeyFromJwk(jwk: Ed25519PublicJwk): KeyObject {
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' });
  } catch (cause) {
    throw new AegisError('VALIDATION_FAILED', 'host_public_key is not a valid Ed25519 public key', {
      details: [{ path: '/host_public_key', message: 'not a valid Ed25519 public key' }],
      cause,
    });
  }
}

export interface ProofExpectation {
  audience: string;
  hardwareId: string;
  key: KeyObject;
}

function invalid(message: string): AegisError {
  return new AegisError('PROOF_INVALID', `proof rejected: ${message}`);
}

/** Verifies a proof and records its jti; throws PROOF_INVALID or PROOF_REPLAYED; answers its claims. */
export async function acceptProof(db: Kysely<Database>, clock: Clock, proof: unknown, want: ProofExpectation): Promise<Record<string, unknown>> {
  const decoded = decodeCompact(proof);
  if (!decoded) throw invalid('not a compact JWS');
  if (decoded.header.alg !== TOKEN_ALG) throw invalid(`algorithm must be ${TOKEN_ALG}`);
  const [h, p, s] = (proof as string).split('.') as [string, string, string];
  const signature = Buffer.from(s, 'base64url');
  if (signature.length !== 64 || !edVerify(null, Buffer.from(`${h}.${p}`), want.key, signature)) {
    throw invalid('signature does not verify with the host key');
  }
  const c = decoded.payload;
  if (c.aud !== want.audience) throw invalid(`audience must be ${want.audience}`);
  if (c.hwid !== want.hardwareId) throw invalid('hwid does not match the hardware_id');
  const now = Math.floor(clock.now().getTime() / 1000);
  if (typeof c.iat !== 'number' || !Number.isInteger(c.iat) || Math.abs(c.iat - now) > PROOF_MAX_SKEW_SECONDS) {
    throw invalid(`iat must be within ${PROOF_MAX_SKEW_SECONDS} s of the server clock (server time ${now})`);
  }
  if (typeof c.jti !== 'string' || !JTI_PATTERN.test(c.jti)) throw invalid('jti must be 16-128 URL-safe characters');
  // Keep the record past the skew window: after that the iat check alone refuses it.
  const expires = iso(new Date((c.iat + 2 * PROOF_MAX_SKEW_SECONDS) * 1000));
  try {
    await db.insertInto('used_proofs').values({ jti: c.jti, audience: want.audience, expires_at: expires }).execute();
  } catch (cause) {
    const exists = await db.selectFrom('used_proofs').select('jti').where('jti', '=', c.jti).executeTakeFirst();
    if (exists) throw new AegisError('PROOF_REPLAYED', 'proof rejected: this jti was already used');
    throw cause;
  }
  return c;
}

/** Drops replay records that can no longer matter (their iat is outside the window). */
export async function pruneProofs(db: Kysely<Database>, clock: Clock): Promise<void> {
  await db.deleteFrom('used_proofs').where('expires_at', '<', iso(clock.now())).execute();
}
