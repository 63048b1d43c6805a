/**
 * The keyring's own compact JWS against jose's: byte for byte the same token for the
 * same key, header and claims (Ed25519 is deterministic), and jose verifies it; a
 * signer that only exposes `sign` (as a PKCS#11 key does) gives the same bytes.
 */
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { CompactSign, SignJWT, compactVerify, jwtVerify } from 'jose';
import { signCompactJws, signJwt } from './jws_sign.js';
import { softwareSigningKey } from './keystore.js';

t.test('signJwt and signCompactJws equal jose and verify with it', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const key = softwareSigningKey('aegis-2026-07', privateKey);
  const claims = { iss: 'aegis', aud: 'aegis-license', sub: 'lic_1', iat: 1_780_000_000, features: ['a', 'ü'], nested: { x: 1 } };
  const ours = signJwt(key, { typ: 'JWT' }, claims);
  const jose = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: key.kid }).sign(privateKey);
  t.equal(ours, jose, 'the same JWT as jose');
  const verified = await jwtVerify(ours, publicKey, { algorithms: ['EdDSA'] });
  t.same(verified.payload, claims, 'jose verifies it');
  t.same(verified.protectedHeader, { alg: 'EdDSA', typ: 'JWT', kid: key.kid });

  const payload = new TextEncoder().encode('{"iat":1,"jwks":{"keys":[]},"seq":3}');
  const compact = signCompactJws(key, { typ: 'aegis-jwks+jws' }, payload);
  t.equal(compact, await new CompactSign(payload).setProtectedHeader({ alg: 'EdDSA', typ: 'aegis-jwks+jws', kid: key.kid }).sign(privateKey), 'the same compact JWS as jose');
  t.same(Buffer.from((await compactVerify(compact, publicKey)).payload), Buffer.from(payload));

  const bare = { kid: key.kid, sign: key.sign };
  t.equal(signJwt(bare, { typ: 'JWT' }, claims), ours, 'a signer without a KeyObject gives the same token');
  const other = softwareSigningKey(key.kid, generateKeyPairSync('ed25519').privateKey);
  await t.rejects(jwtVerify(signJwt(other, { typ: 'JWT' }, claims), publicKey), /signature verification failed/, "another key's signature does not verify");
});
