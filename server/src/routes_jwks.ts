/**
 * `GET /.well-known/jwks.signed`: the JWKS with a signature by every key in it, over the
 * set, the signing time and the keyring generation. An agent that pins the server's key(s)
 * adopts a rotated key only from this document, after checking a signature by a key it
 * already trusts, and refuses a set older than the newest it accepted. Public, like
 * /.well-known/jwks.json.
 */
import { JWKS_SCHEMA, JWKS_SIGNATURE_TYP, SIGNED_JWKS_SCHEMA, signedJwksPayload, type SignedJwksDocument } from '../../protocol/src/index.js';
import type { Router } from './http/router.js';
import type { RouteDoc } from './http/route_doc.js';
import type { Keyring } from './keys/keyring.js';
import { signCompactJws } from './keys/jws_sign.js';

/** The key set and one compact JWS per verifying key over `{ iat, jwks, seq }`. */
export async function signedJwks(keys: Keyring, now: Date = new Date()): Promise<SignedJwksDocument> {
  // The generation before and after reading the set: a rotation in between would pair
  // a set with the wrong generation, so read again until both agree.
  let seq = keys.generation();
  let jwks = keys.jwks();
  for (let i = 0; i < 3 && keys.generation() !== seq; i++) {
    seq = keys.generation();
    jwks = keys.jwks();
  }
  const iat = Math.floor(now.getTime() / 1000);
  const payload = new TextEncoder().encode(signedJwksPayload({ iat, jwks, seq }));
  const signatures: string[] = [];
  for (const k of keys.verifyingSigningKeys()) {
    signatures.push(signCompactJws(k, { typ: JWKS_SIGNATURE_TYP }, payload));
  }
  return { jwks, iat, seq, signatures };
}

/** `GET /.well-known/jwks.json`, on the main and the agent listener. */
export const JWKS_DOC: RouteDoc = {
  summary: 'The server signing keys (JWKS)',
  description: 'Public keys that verify license, kernel, CA and snapshot signatures.',
  tag: 'system',
  auth: { kind: 'public' },
  responses: { 200: { description: 'The key set.', schema: JWKS_SCHEMA } },
};

export function addJwksRoutes(router: Router, deps: { keys: Keyring }): void {
  router.add(
    'GET',
    '/.well-known/jwks.signed',
    async () => ({
      status: 200,
      body: await signedJwks(deps.keys),
      headers: { 'cache-control': 'public, max-age=300' },
    }),
    {
      doc: {
        summary: 'The signing keys, signed by every key in the set',
        description: 'An agent that pins the server keys adopts a rotated key only from this document, after a signature by a key it trusts, and refuses a set older (lower seq) than the newest it accepted.',
        tag: 'system',
        auth: { kind: 'public' },
        responses: { 200: { description: 'The key set with its signatures.', schema: SIGNED_JWKS_SCHEMA } },
      },
    },
  );
}
