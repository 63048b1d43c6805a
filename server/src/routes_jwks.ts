/**
 * `GET /.well-known/jwks.signed`: the JWKS with a signature by every key in it. An agent
 * that pins the server's key(s) adopts a rotated key only from this document, after
 * checking a signature by a key it already trusts. Public, like /.well-known/jwks.json.
 */
import { CompactSign } from 'jose';
import { JWKS_SIGNATURE_TYP, TOKEN_ALG, canonicalJson, type SignedJwksDocument } from '../../protocol/src/index.js';
import type { Router } from './http/router.js';
import type { KeyStore } from './keys/keystore.js';

/** The key set and one compact JWS over its canonical JSON per verifying key. */
export async function signedJwks(keys: KeyStore): Promise<SignedJwksDocument> {
  const jwks = keys.jwks();
  const payload = new TextEncoder().encode(canonicalJson(jwks));
  const signatures: string[] = [];
  for (const k of keys.verifyingSigningKeys()) {
    signatures.push(await new CompactSign(payload).setProtectedHeader({ alg: TOKEN_ALG, typ: JWKS_SIGNATURE_TYP, kid: k.kid }).sign(k.privateKey));
  }
  return { jwks, signatures };
}

export function addJwksRoutes(router: Router, deps: { keys: KeyStore }): void {
  router.add('GET', '/.well-known/jwks.signed', async () => ({
    status: 200,
    body: await signedJwks(deps.keys),
    headers: { 'cache-control': 'public, max-age=300' },
  }));
}
