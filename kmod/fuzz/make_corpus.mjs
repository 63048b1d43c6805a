// SPDX-License-Identifier: GPL-2.0 OR MIT
// Regenerates the seed corpus in kmod/fuzz/corpus/ from tokens minted by aegis-server's
// signer (run after `npx tsc -p .` from the repository root: node kmod/fuzz/make_corpus.mjs).
// Each seed starts with the mode byte fuzz_verify.c dispatches on.
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', '..', 'dist', 'server', 'src');
const { KeyStore } = await import(join(dist, 'keys', 'keystore.js'));
const { TokenService } = await import(join(dist, 'tokens.js'));

const keysDir = mkdtempSync(join(tmpdir(), 'aegis-corpus-'));
const ks = KeyStore.open(keysDir);
ks.generate('aegis-2026-01');
const tokens = new TokenService(ks);
const token = await tokens.signKernel({
  sub: 'machine-1', hwid: 'ab'.repeat(32), tier: 'server',
  features: ['basic_features', 'priority_updates', 'segmentation_enforce'],
  iat: 1763788800, exp: 1763792400,
});
const [h, p] = token.split('.');
const json = (seg) => Buffer.from(seg, 'base64url');
const out = join(here, 'corpus');
mkdirSync(out, { recursive: true });
const seed = (name, mode, body) => writeFileSync(join(out, name), Buffer.concat([Buffer.from([mode]), Buffer.from(body)]));

seed('token-valid', 0, token);
seed('token-alg-none', 0, `${Buffer.from('{"alg":"none","kid":"aegis-2026-01"}').toString('base64url')}.${p}.`);
seed('claims-server', 1, json(p));
seed('claims-escapes', 1, '{"aud":"aegis-kmod","sub":"m\\u0031","hwid":"ab","tier":"b\\"x","features":["a","\\ud83d\\ude00"],"fmask":-0,"iat":1,"exp":2,"x":[1.5e3,true,null]}');
seed('claims-duplicate', 1, '{"aud":"aegis-kmod","aud":"aegis-kmod"}');
seed('header', 2, json(h));
seed('header-crit', 2, '{"alg":"EdDSA","kid":"k2","crit":["b64"]}');
seed('b64-sig', 3, token.split('.')[2]);
seed('pubkeys', 4, `aegis-2026-01=${ks.jwks().keys[0].x},k2=${ks.jwks().keys[0].x}`);
rmSync(keysDir, { recursive: true, force: true });
console.log(`wrote seeds to ${out}`);
