/**
 * Kernel tokens for the kmod tests, minted by aegis-server's own signer (KeyStore +
 * TokenService), plus hand-made variants signed with the same key for the cases the
 * signer would never produce (duplicate claims, wrong types, alg none...). Each case
 * carries the exact status line the verifier must report for it.
 */
import { randomBytes, sign } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { effectiveFeatures, featureMask } from '../../protocol/src/index.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { TokenService } from '../../server/src/tokens.js';

export const KID = 'aegis-2026-01';
export const TOKEN_CAP = 8192;

export interface TokenCase {
  name: string;
  file: string;
  expected: string;
}

export interface TokenSet {
  /** Value for the module's pubkeys parameter (and the test binary's --pubkeys). */
  pubkeys: string;
  /** This "machine's" hwid, for the hwid parameter. */
  hwid: string;
  now: number;
  tier: string;
  features: string[];
  fmask: number;
  validExp: number;
  cases: TokenCase[];
}

const b64 = (v: string | Buffer): string => Buffer.from(v).toString('base64url');

/**
 * Mints every case into `dir` relative to `now` (seconds). `shortLifetime`, when given,
 * adds a valid token named "short" that expires that many seconds after `now`.
 */
export async function mintTokenSet(dir: string, now: number, opts: { shortLifetime?: number } = {}): Promise<TokenSet> {
  mkdirSync(dir, { recursive: true });
  const keys = KeyStore.open(join(dir, 'keys'));
  keys.generate(KID);
  const tokens = new TokenService(keys);
  // Another authority: its kid is not in pubkeys.
  const otherKeys = KeyStore.open(join(dir, 'keys-other'));
  otherKeys.generate('aegis-2026-02');
  const other = new TokenService(otherKeys);
  // An impostor that claims our kid with a key of its own.
  const impostorKeys = KeyStore.open(join(dir, 'keys-impostor'));
  impostorKeys.generate(KID);
  const impostor = new TokenService(impostorKeys);

  const hwid = randomBytes(32).toString('hex');
  const tier = 'server' as const;
  const features = effectiveFeatures(tier);
  const base = { sub: 'machine-0001', hwid, tier, features, iat: now - 60, exp: now + 3600 };

  const { privateKey } = keys.signingKey();
  const header = b64(JSON.stringify({ alg: 'EdDSA', typ: 'JWT', kid: KID }));
  /** Signs an arbitrary payload text with the real key, the way the server would. */
  const signRaw = (payloadJson: string, headerB64 = header): string => {
    const input = `${headerB64}.${b64(payloadJson)}`;
    return `${input}.${b64(sign(null, Buffer.from(input), privateKey))}`;
  };
  const claims = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
    iss: 'aegis-server', aud: 'aegis-kmod', sub: base.sub, hwid, tier, features,
    fmask: featureMask(features), iat: base.iat, nbf: base.iat, exp: base.exp, ...over,
  });

  const valid = await tokens.signKernel(base);
  const [vh, vp, vs] = valid.split('.') as [string, string, string];

  const sigBytes = Buffer.from(vs, 'base64url');
  sigBytes[17] ^= 0x04;
  const flippedSig = `${vh}.${vp}.${b64(sigBytes)}`;
  const tamperedPayload = `${vh}.${b64(Buffer.from(vp, 'base64url').toString().replace('"server"', '"gamer"'))}.${vs}`;

  const noHwid = claims();
  delete noHwid.hwid;
  const dupJson = JSON.stringify(claims()).replace(/}$/, `,"exp":${now + 999999}}`);
  // A token just under the cap is still read whole; one just over is refused unread.
  const padTo = (target: number): string => {
    let pad = target - signRaw(JSON.stringify(claims({ pad: '' }))).length;
    let t = '';
    // base64 expands 3 -> 4, so approach the target length in a couple of rounds.
    for (let i = 0; i < 4; i++) {
      t = signRaw(JSON.stringify(claims({ pad: 'x'.repeat(Math.max(0, Math.floor((pad * 3) / 4))) })));
      pad += target - t.length;
    }
    return t;
  };
  const nearCap = padTo(TOKEN_CAP - 40);
  const overCap = padTo(TOKEN_CAP + 200);

  const list: Array<[string, string, string]> = [
    ['valid', valid, 'valid'],
    ['valid-newline', `${valid}\n`, 'valid'],
    ['valid-near-cap', nearCap, 'valid'],
    ['expired', await tokens.signKernel({ ...base, iat: now - 7200, exp: now - 3600 }), 'expired'],
    ['not-yet-valid', await tokens.signKernel({ ...base, nbf: now + 3600, exp: now + 7200 }), 'invalid: not yet valid'],
    ['wrong-aud', await tokens.signKernel({ ...base, aud: 'aegis-license' }), 'invalid: wrong audience'],
    ['wrong-kid', await other.signKernel(base), 'invalid: unknown kid'],
    ['wrong-hwid', await tokens.signKernel({ ...base, hwid: randomBytes(32).toString('hex') }), 'invalid: hwid mismatch'],
    ['flipped-sig', flippedSig, 'invalid: bad signature'],
    ['tampered', tamperedPayload, 'invalid: bad signature'],
    ['impostor-key', await impostor.signKernel(base), 'invalid: bad signature'],
    ['alg-none', `${b64('{"alg":"none","typ":"JWT"}')}.${vp}.`, 'invalid: bad algorithm'],
    ['alg-hs256', `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: KID }))}.${vp}.${vs}`, 'invalid: bad algorithm'],
    ['header-crit', signRaw(JSON.stringify(claims()), b64(JSON.stringify({ alg: 'EdDSA', kid: KID, crit: ['exp'] }))), 'invalid: malformed'],
    ['truncated', valid.slice(0, Math.floor(valid.length / 2)), 'invalid: malformed'],
    ['truncated-sig', valid.slice(0, -3), 'invalid: malformed'],
    ['oversized', overCap, 'invalid: token too large'],
    ['bad-base64', `${vh}.${vp.slice(0, 10)}+/${vp.slice(12)}.${vs}`, 'invalid: malformed'],
    ['padded-base64', `${vh}.${vp}==.${vs}`, 'invalid: malformed'],
    ['four-segments', `${valid}.${vs}`, 'invalid: malformed'],
    ['empty', '', 'invalid: malformed'],
    ['duplicate-claim', signRaw(dupJson), 'invalid: duplicate claim'],
    ['non-string-tier', signRaw(JSON.stringify(claims({ tier: 5 }))), 'invalid: bad claim type'],
    ['non-string-hwid', signRaw(JSON.stringify(claims({ hwid: [hwid] }))), 'invalid: bad claim type'],
    ['string-exp', signRaw(JSON.stringify(claims({ exp: String(now + 3600) }))), 'invalid: bad claim type'],
    ['fraction-exp', signRaw(JSON.stringify(claims({ exp: now + 3600.5 }))), 'invalid: bad claim type'],
    ['non-string-feature', signRaw(JSON.stringify(claims({ features: ['basic_features', 7] }))), 'invalid: bad claim type'],
    ['missing-hwid', signRaw(JSON.stringify(noHwid)), 'invalid: missing claim'],
    ['nested-claim', signRaw(JSON.stringify(claims({ cnf: { jkt: 'x' } }))), 'invalid: malformed'],
    ['not-json', signRaw('{"aud":"aegis-kmod",'), 'invalid: malformed'],
  ];
  if (opts.shortLifetime !== undefined) {
    list.push(['short', await tokens.signKernel({ ...base, exp: now + opts.shortLifetime }), 'valid']);
  }

  const cases = list.map(([name, text, expected]) => {
    const file = join(dir, `${name}.token`);
    writeFileSync(file, text);
    return { name, file, expected };
  });
  return {
    pubkeys: `${KID}=${keys.jwks().keys[0]!.x}`,
    hwid,
    now,
    tier,
    features: [...features],
    fmask: featureMask(features),
    validExp: base.exp,
    cases,
  };
}
