/**
 * The verifier core in userspace, built from the same C sources as the module with ASan
 * and UBSan: known-answer vectors, a differential check against node:crypto's Ed25519,
 * and every kernel-token case minted by aegis-server's signer with its expected verdict.
 */
import t from 'tap';
import { generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { missingCommand, requireCapability } from '../../test/harness/capabilities.js';
import { mintTokenSet } from './token_cases.js';

const KMOD = fileURLToPath(new URL('../../../kmod/', import.meta.url));
const CORE_TEST = join(KMOD, 'build', 'aegis-core-test');
const CORE_BENCH = join(KMOD, 'build', 'aegis-core-bench');

function sh(cmd: string, args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

t.test('kmod verifier core (userspace, ASan + UBSan)', { timeout: 300_000 }, async (t) => {
  if (!requireCapability(t, missingCommand('make', 'cc'))) return;

  const build = sh('make', ['-C', KMOD, '--no-print-directory', 'userspace-test', 'bench']);
  t.equal(build.status, 0, `make userspace-test bench${build.status === 0 ? '' : `: ${build.stderr}${build.stdout}`}`);
  if (build.status !== 0) return;

  t.test('known-answer vectors: SHA-512, RFC 8032, base64url, JSON reader, pubkeys', async (t) => {
    const r = sh(CORE_TEST, ['vectors']);
    const results = r.stdout.split('\n').filter((l) => /^(ok|not ok) \d+ - /.test(l));
    for (const line of results) {
      const m = /^(ok|not ok) \d+ - (.*)$/.exec(line)!;
      t.equal(m[1], 'ok', m[2]!);
    }
    t.ok(results.length >= 100, `${results.length} vector checks ran`);
    for (const name of ['sha512 abc', 'sha512 empty', 'sha512 896-bit', "sha512 one million 'a'",
      'rfc8032 TEST 1 verifies', 'rfc8032 TEST 2 verifies', 'rfc8032 TEST 3 verifies',
      'rfc8032 TEST 1024 verifies', 'rfc8032 TEST SHA(abc) verifies']) {
      t.ok(results.some((l) => l.endsWith(` - ${name}`)), `vector present: ${name}`);
    }
    t.equal(r.status, 0, `exit status (sanitizers quiet)${r.stderr ? `: ${r.stderr}` : ''}`);
  });

  t.test('Ed25519 agrees with node:crypto on random keys, messages and corrupted signatures', async (t) => {
    const lines: string[] = [];
    const want: string[] = [];
    for (let i = 0; i < 300; i++) {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const pub = Buffer.from((publicKey.export({ format: 'jwk' }) as { x: string }).x, 'base64url');
      const msg = randomBytes(i % 257);
      let sig = sign(null, msg, privateKey);
      if (i % 3 === 1) sig[i % 64]! ^= 1 << (i % 8);
      if (i % 3 === 2) sig = randomBytes(64);
      lines.push(`${pub.toString('hex')} ${msg.length ? msg.toString('hex') : '-'} ${sig.toString('hex')}`);
      want.push(verify(null, msg, publicKey, sig) ? '1' : '0');
    }
    const r = sh(CORE_TEST, ['ed25519-stdin'], lines.join('\n') + '\n');
    t.equal(r.status, 0, 'exit status');
    const got = r.stdout.trim().split('\n');
    const mismatches = want.filter((w, i) => got[i] !== w).length;
    t.equal(mismatches, 0, `${want.length} verifications, ${want.filter((w) => w === '1').length} valid, 0 disagreements`);
  });

  t.test('kernel tokens minted by aegis-server: each verdict', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-kmod-tokens-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const now = Math.floor(Date.now() / 1000);
    const set = await mintTokenSet(dir, now);
    const files = set.cases.map((c) => c.file);
    const r = sh(CORE_TEST, ['verify', '--pubkeys', set.pubkeys, '--hwid', set.hwid, '--now', String(now),
      ...files, join(dir, 'no-such.token')]);
    t.equal(r.status, 0, `exit status (sanitizers quiet)${r.stderr ? `: ${r.stderr}` : ''}`);
    const byFile = new Map(r.stdout.trim().split('\n').map((l) => {
      const [file, status, info] = l.split('\t');
      return [file!, { status: status!, info: info ?? '' }];
    }));
    for (const c of set.cases) {
      t.equal(byFile.get(c.file)?.status, c.expected, `${c.name}: ${c.expected}`);
    }
    t.equal(byFile.get(join(dir, 'no-such.token'))?.status, 'missing', 'absent file: missing');
    const valid = byFile.get(set.cases.find((c) => c.name === 'valid')!.file)!;
    t.equal(valid.info, `tier=${set.tier} fmask=${set.fmask} features=${set.features.length} exp=${set.validExp}`,
      'valid token: tier, fmask, feature count and exp read back');

    // Without the hwid parameter a foreign machine's token passes the hwid check.
    const wrongHwid = set.cases.find((c) => c.name === 'wrong-hwid')!.file;
    const noHwid = sh(CORE_TEST, ['verify', '--pubkeys', set.pubkeys, '--now', String(now), wrongHwid]);
    t.match(noHwid.stdout, /\tvalid/, 'hwid unchecked when the parameter is empty');
    // The same expired token was valid while it was in date, and a valid one expires.
    const validFile = set.cases.find((c) => c.name === 'valid')!.file;
    const later = sh(CORE_TEST, ['verify', '--pubkeys', set.pubkeys, '--now', String(set.validExp), validFile]);
    t.match(later.stdout, /\texpired/, 'valid token reads expired at exactly exp');
  });

  t.test('verification time (optimised build, no sanitizers)', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-kmod-bench-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const now = Math.floor(Date.now() / 1000);
    const set = await mintTokenSet(dir, now);
    const valid = set.cases.find((c) => c.name === 'valid')!.file;
    const r = sh(CORE_BENCH, ['verify', '--pubkeys', set.pubkeys, '--hwid', set.hwid, '--bench', '500', valid]);
    t.equal(r.status, 0, 'bench exit status');
    t.match(r.stdout, /\tvalid/, 'bench token is valid');
    const m = /(\d+) ns\/verify/.exec(r.stdout);
    t.ok(m, 'bench printed a time');
    if (m) {
      t.comment(`userspace verify: ${(Number(m[1]) / 1000).toFixed(1)} us per token`);
      t.ok(Number(m[1]) < 20_000_000, `one verification takes ${m[1]} ns (< 20 ms)`);
    }
  });
});
