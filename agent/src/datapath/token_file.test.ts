/**
 * The atomic writer used for the kernel token: concurrent readers (in worker threads)
 * never see a partial or mixed file while it is replaced over and over, the mode is
 * exactly as asked whatever the umask, and failures leave the old file and no temp files.
 */
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { sdNotify, TokenWriteError, writeFileAtomic } from './index.js';
import { loadAddon } from './addon.js';

function addonMissing(): string | null {
  try {
    loadAddon();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

// Each version is large (several pages) and self-describing, so a torn read is detectable.
function content(i: number): string {
  const tag = `v${i}:`;
  return tag + String(i % 10).repeat(64 * 1024 + (i % 7) * 4099) + `:end${i}`;
}

const READER = `
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const stop = new Int32Array(workerData.stop);
let reads = 0, bad = 0, missing = 0; let example = '';
while (Atomics.load(stop, 0) === 0) {
  let s;
  try { s = readFileSync(workerData.path, 'utf8'); } catch (e) { missing++; continue; }
  reads++;
  const m = /^v(\\d+):/.exec(s);
  const i = m ? Number(m[1]) : -1;
  const want = i < 0 ? null : 'v' + i + ':' + String(i % 10).repeat(64 * 1024 + (i % 7) * 4099) + ':end' + i;
  if (s !== want) { bad++; if (!example) example = s.slice(0, 40) + '...' + s.slice(-20) + ' len=' + s.length; }
}
parentPort.postMessage({ reads, bad, missing, example });
`;

t.test('writeFileAtomic', async (t) => {
  if (!requireCapability(t, addonMissing())) return;
  const dir = mkdtempSync(join(tmpdir(), 'aegis-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'auth.token');

  await t.test('concurrent readers never see a partial file', async (t) => {
    await writeFileAtomic(path, content(0), { mode: 0o600 });
    const stop = new SharedArrayBuffer(4);
    const workers = Array.from({ length: 3 }, () => new Worker(READER, { eval: true, workerData: { path, stop } }));
    const results = workers.map(
      (w) => new Promise<{ reads: number; bad: number; missing: number; example: string }>((r) => w.once('message', r)),
    );
    for (let i = 1; i <= 300; i++) await writeFileAtomic(path, content(i), { mode: 0o600 });
    Atomics.store(new Int32Array(stop), 0, 1);
    const rs = await Promise.all(results);
    await Promise.all(workers.map((w) => w.terminate()));
    const reads = rs.reduce((n, r) => n + r.reads, 0);
    t.ok(reads > 100, `${reads} reads raced 300 replacements`);
    t.equal(rs.reduce((n, r) => n + r.bad, 0), 0, `no partial or mixed content ${rs.map((r) => r.example).join(' ')}`);
    t.equal(rs.reduce((n, r) => n + r.missing, 0), 0, 'the file never disappeared');
    t.equal(readFileSync(path, 'utf8'), content(300), 'last write wins');
    t.same(readdirSync(dir), ['auth.token'], 'no temp files left behind');
  });

  await t.test('mode is exactly as asked, whatever the umask', async (t) => {
    const old = process.umask(0o077);
    try {
      for (const mode of [0o600, 0o640, 0o644, 0o666]) {
        await writeFileAtomic(path, `mode ${mode.toString(8)}`, { mode });
        t.equal(statSync(path).mode & 0o7777, mode, `mode ${mode.toString(8)}`);
      }
    } finally {
      process.umask(old);
    }
  });

  await t.test('failure leaves the old file and no temp file', async (t) => {
    writeFileSync(path, 'old');
    const e = await writeFileAtomic(join(dir, 'missing-dir', 'x'), 'new').catch((x: unknown) => x);
    t.ok(e instanceof TokenWriteError, 'TokenWriteError');
    t.equal((e as TokenWriteError).errno, 2, 'errno ENOENT carried over');
    t.equal((e as TokenWriteError).op, 'open', 'failed operation named');
    t.equal(readFileSync(path, 'utf8'), 'old');
    t.same(readdirSync(dir), ['auth.token']);
    await t.rejects(writeFileAtomic('relative/path', 'x'), { code: 'INVALID_ARGUMENT' });
  });

  await t.test('sd_notify outside systemd is a no-op', async (t) => {
    t.equal(await sdNotify({ ready: true }, ''), false);
  });
});
