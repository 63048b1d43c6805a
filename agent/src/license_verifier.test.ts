import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { exportJWK, SignJWT } from 'jose';
import { AUD_LICENSE } from '../../protocol/src/index.js';
import { verifyLicenseOffline } from './license_verifier.js';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const want = { hardwareId: 'h'.repeat(64), hostKeyThumbprint: 'thumb', agentVersion: '1.2.0' };

async function token(claims: Record<string, unknown>): Promise<string> {
  const base = { aud: AUD_LICENSE, sub: 'm1', iat: 1_000, license_id: 'l1', hwid: want.hardwareId, cnf: { jkt: 'thumb' }, product: { allowed_major_versions: [] } };
  return new SignJWT({ ...base, ...claims }).setProtectedHeader({ alg: 'EdDSA', kid: 'aegis-2026-01' }).sign(privateKey);
}

t.test('a perpetual license: the token exp bounds offline use, and its end asks for a refresh', async (t) => {
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'aegis-2026-01', alg: 'EdDSA' }] };
  const tok = await token({ license_type: 'perpetual', exp: 2_000 });
  const before = await verifyLicenseOffline(tok, jwks, { ...want, now: new Date(1_500_000) });
  t.ok(before.ok, 'accepted while the token is current');
  const after = await verifyLicenseOffline(tok, jwks, { ...want, now: new Date(2_000_000) });
  t.match(after, { ok: false, code: 'EXPIRED', message: /license token expired .*perpetual.*refresh/ }, 'past exp: the token, not the license, is over');
  const sub = await verifyLicenseOffline(await token({ license_type: 'subscription', exp: 2_000 }), jwks, { ...want, now: new Date(2_000_000) });
  t.match(sub, { ok: false, code: 'EXPIRED', message: /^license expired at/ }, 'a subscription past exp is over');
});
