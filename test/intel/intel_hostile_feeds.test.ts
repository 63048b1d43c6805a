/**
 * Hostile feeds: every one is refused whole with a stable code, and a refusal leaves no
 * partial result (the match CLI prints no findings, the reader returns nothing). Archives:
 * a real 2 GiB deflate bomb (declared honestly, and hidden behind a small declared size),
 * names escaping the directory, encrypted and zip64 entries, too many entries, a wrong CRC.
 */
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants, createInflateRaw, deflateRawSync } from 'node:zlib';
import { FeedError } from '../../server/src/intel/feed_error.js';
import { DEFAULT_FEED_LIMITS, loadFeedBytes, loadFeedPath } from '../../server/src/intel/feed_loader.js';
import { readZip, ZipError, DEFAULT_ZIP_LIMITS } from '../../server/src/intel/zip_archive.js';
import { buildZip } from './zip_builder.js';

const CLI = fileURLToPath(new URL('../../server/src/cli.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'aegis-intel-hostile-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const osv = (id: string, extra: Record<string, unknown> = {}) => ({
  id,
  modified: '2026-01-01T00:00:00Z',
  affected: [{ package: { ecosystem: 'Debian:12', name: 'bash' }, ranges: [{ type: 'ECOSYSTEM', events: [{ introduced: '0' }] }] }],
  ...extra,
});
const json = (v: unknown) => Buffer.from(JSON.stringify(v));

function refusal(f: () => unknown): { code: string; message: string } {
  try {
    f();
  } catch (err) {
    if (err instanceof FeedError || err instanceof ZipError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('accepted');
}

/** 2 GiB of zeros in about 2 MB: 2048 copies of a sync-flushed MiB, then a final empty block. */
function deflateBomb(mib: number): Buffer {
  const chunk = deflateRawSync(Buffer.alloc(1 << 20), { level: 9, finishFlush: constants.Z_SYNC_FLUSH });
  return Buffer.concat([...Array<Buffer>(mib).fill(chunk), deflateRawSync(Buffer.alloc(0))]);
}

async function inflatedLength(raw: Buffer): Promise<number> {
  let n = 0;
  const inf = createInflateRaw();
  inf.on('data', (c: Buffer) => (n += c.length));
  const done = new Promise((resolve) => inf.on('end', resolve));
  inf.end(raw);
  await done;
  return n;
}

t.test('a zip bomb that expands to 2 GiB is refused before it is inflated', async (t) => {
  const raw = deflateBomb(2048);
  t.equal(await inflatedLength(raw), 2 ** 31, 'the crafted entry really expands to 2 GiB');
  t.ok(raw.length < 3 << 20, `from ${raw.length} bytes`);
  const honest = buildZip([{ name: 'bomb.json', raw, usize: 2 ** 31, crc: 0 }]);
  const before = process.memoryUsage().rss;
  const r = refusal(() => loadFeedBytes(honest, 'honest.zip'));
  t.equal(r.code, 'FEED_ARCHIVE_REFUSED');
  t.match(r.message, /ZIP_ENTRY_TOO_LARGE/, 'its declared size passes the per-entry cap');
  t.match(refusal(() => readZip(honest, { ...DEFAULT_ZIP_LIMITS, maxEntryBytes: 2 ** 32 })).code, 'ZIP_RATIO', 'and, with a larger cap, the ratio');
  // Declared small, the same stream is cut at the declared size plus one byte.
  const lying = buildZip([{ name: 'bomb.json', raw, usize: 1000, crc: 0 }]);
  const l = refusal(() => loadFeedBytes(lying, 'lying.zip'));
  t.equal(l.code, 'FEED_ARCHIVE_REFUSED');
  t.match(l.message, /ZIP_CORRUPT.*expands past its declared 1000 bytes/);
  t.ok(process.memoryUsage().rss - before < 256 << 20, 'memory stays far below the bomb');
});

t.test('many entries, each under the cap, are stopped by the total cap', async (t) => {
  const entries = Array.from({ length: 20 }, (_, i) => ({ name: `e${i}.json`, data: Buffer.alloc(1 << 16, 0x20), method: 0 }));
  const r = refusal(() => readZip(buildZip(entries), { ...DEFAULT_ZIP_LIMITS, maxTotalBytes: 1 << 20 }));
  t.equal(r.code, 'ZIP_TOO_LARGE');
  t.equal(refusal(() => readZip(buildZip(entries), { ...DEFAULT_ZIP_LIMITS, maxEntries: 10 })).code, 'ZIP_TOO_MANY_ENTRIES');
});

t.test('entry names that leave the directory are refused', async (t) => {
  for (const name of ['../evil.json', 'a/../../evil.json', '/etc/passwd', 'C:/x.json', 'a\\..\\b.json', 'nul\u0000.json', '..']) {
    const r = refusal(() => readZip(buildZip([{ name, data: json(osv('X')) }])));
    t.equal(r.code, 'ZIP_UNSAFE_NAME', JSON.stringify(name));
  }
});

t.test('encrypted, zip64, unknown-method and corrupted entries are refused', async (t) => {
  const data = json(osv('X'));
  t.equal(refusal(() => readZip(buildZip([{ name: 'a.json', data, flags: 1 }]))).code, 'ZIP_ENCRYPTED');
  t.equal(refusal(() => readZip(buildZip([{ name: 'a.json', data, usize: 0xffffffff }]))).code, 'ZIP_UNSUPPORTED');
  t.equal(refusal(() => readZip(buildZip([{ name: 'a.json', data, method: 12 }]))).code, 'ZIP_UNSUPPORTED');
  t.equal(refusal(() => readZip(buildZip([{ name: 'a.json', data, crc: 1234 }]))).code, 'ZIP_CORRUPT');
  t.equal(refusal(() => readZip(buildZip([{ name: 'a.json', data }]).subarray(0, 40))).code, 'ZIP_MALFORMED', 'a truncated archive');
  const ok = readZip(buildZip([{ name: 'dir/', data: Buffer.alloc(0), method: 0 }, { name: 'dir/a.json', data }, { name: 'b.json', data, method: 0 }]));
  t.same(ok.map((e) => e.name), ['dir/a.json', 'b.json'], 'an honest archive reads, directories skipped');
});

t.test('one bad record refuses the whole archive', async (t) => {
  const zip = buildZip([{ name: 'good.json', data: json(osv('GOOD')) }, { name: 'bad.json', data: Buffer.from('{"id": "BAD", ') }]);
  const r = refusal(() => loadFeedBytes(zip, 'all.zip'));
  t.equal(r.code, 'FEED_MALFORMED_JSON');
  t.match(r.message, /all\.zip!bad\.json/, 'names the entry');
});

t.test('OSV: unknown fields are tolerated, known fields of the wrong type refused with their pointer', async (t) => {
  const [a] = loadFeedBytes(json(osv('EXT', { x_vendor: { anything: [1, 2] }, schema_version: '1.6.0' })), 'ext.json');
  t.equal(a!.id, 'EXT', 'an extension field is tolerated (OSV lets databases add them)');
  const cases: Array<[unknown, RegExp]> = [
    [osv('T', { affected: 'bash' }), /\/affected: expected an array/],
    [osv('T', { aliases: [1] }), /\/aliases\/0/],
    [{ ...osv('T'), modified: undefined }, /\/modified/],
    [osv('T', { affected: [{ package: { ecosystem: 'Debian:12', name: 'bash' }, ranges: [{ type: 'ECOSYSTEM', events: [{ fixed: '1:' }] }] }] }), /\/affected\/0\/ranges\/0\/events\/0\/fixed: invalid Debian version/],
    [osv('T', { affected: [{ package: { ecosystem: 'Debian:12', name: 'bash' }, ranges: [{ type: 'ECOSYSTEM', events: [{ introduced: '0', fixed: '1' }] }] }] }), /exactly one of/],
    [osv('T', { severity: [{ type: 'CVSS_V3' }] }), /\/severity\/0\/score/],
  ];
  for (const [doc, re] of cases) {
    const r = refusal(() => loadFeedBytes(json(doc), 'rec.json'));
    t.equal(r.code, 'FEED_INVALID');
    t.match(r.message, re);
  }
});

t.test('tracker: a malformed entry refuses the feed', async (t) => {
  t.equal(refusal(() => loadFeedBytes(json({ bash: { 'CVE-1': { releases: { bookworm: { status: 'fixed?' } } } } }), 't.json')).code, 'FEED_INVALID');
  t.equal(refusal(() => loadFeedBytes(json({ bash: { 'CVE-1': { releases: { bookworm: { status: 'resolved', fixed_version: 'x:1' } } } } }), 't.json')).code, 'FEED_INVALID');
  t.equal(refusal(() => loadFeedBytes(json({ 'Bad Name': {} }), 't.json')).code, 'FEED_INVALID');
  t.equal(refusal(() => loadFeedBytes(json(42), 'n.json')).code, 'FEED_UNKNOWN_FORMAT');
});

t.test('malformed JSON, JSON nested too deep, and oversize files', async (t) => {
  t.equal(refusal(() => loadFeedBytes(Buffer.from('{"id":'), 'm.json')).code, 'FEED_MALFORMED_JSON');
  const deep = `{"id":"D","modified":"2026-01-01T00:00:00Z","affected":${'['.repeat(200_000)}${']'.repeat(200_000)}}`;
  t.equal(refusal(() => loadFeedBytes(Buffer.from(deep), 'deep.json')).code, 'FEED_INVALID', 'nesting 200,000 deep is refused, not a crash');
  t.equal(refusal(() => loadFeedBytes(Buffer.from('\u0000\u00ff binary junk'), 'junk.bin')).code, 'FEED_MALFORMED_JSON');
  const big = join(dir, 'big.json');
  writeFileSync(big, Buffer.alloc(2 << 20, 0x20));
  t.equal(refusal(() => loadFeedPath(big, { ...DEFAULT_FEED_LIMITS, maxFeedBytes: 1 << 20 })).code, 'FEED_TOO_LARGE');
});

t.test('the match CLI prints nothing when any feed is refused', async (t) => {
  const good = join(dir, 'good.json');
  writeFileSync(good, JSON.stringify(osv('GOOD-1')));
  const bomb = join(dir, 'all.zip');
  writeFileSync(bomb, buildZip([{ name: 'bomb.json', raw: deflateBomb(64), usize: 64 << 20, crc: 0 }]));
  const base = ['intel', 'match', '--dpkg-status', '/var/lib/dpkg/status', '--release', 'bookworm', '--json'];
  const okRun = JSON.parse(execFileSync('node', [CLI, ...base, '--feed', good], { encoding: 'utf8' })) as unknown[];
  t.ok(okRun.length > 0, 'the good feed alone matches bash');
  const r = spawnSync('node', [CLI, ...base, '--feed', good, '--feed', bomb], { encoding: 'utf8' });
  t.equal(r.status, 1);
  t.equal(r.stdout, '', 'no findings from the good feed either');
  t.match(r.stderr, /aegis-server: error: .*all\.zip: ZIP_ENTRY_TOO_LARGE.*\(FEED_ARCHIVE_REFUSED\)/);
});
