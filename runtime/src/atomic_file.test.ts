/**
 * The TypeScript atomic writer (sync for the server, async for the agent): the file gets
 * exactly the mode asked for whatever the umask, and a write that fails part-way (here:
 * the file size limit, EFBIG, as a full disk would) leaves the old file and no temp file.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic, writeFileAtomicAsync } from './atomic_file.js';

/** The child runs plain node, without the test runner's NODE_OPTIONS hooks (they write files of their own). */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}

const WRITER = new URL('./atomic_file.js', import.meta.url).href;

function scratch(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-atomic-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('replaces the file with exactly the mode asked for, whatever the umask', async (t) => {
  const dir = scratch(t);
  const old = process.umask(0o027);
  t.teardown(() => process.umask(old));
  const p = join(dir, 'state.json');
  writeFileAtomic(p, 'one', 0o644);
  t.equal(readFileSync(p, 'utf8'), 'one');
  t.equal(statSync(p).mode & 0o777, 0o644, 'sync: 0644 despite umask 027');
  await writeFileAtomicAsync(p, 'two', 0o600);
  t.equal(readFileSync(p, 'utf8'), 'two');
  t.equal(statSync(p).mode & 0o777, 0o600, 'async: 0600');
  process.umask(0);
  await writeFileAtomicAsync(p, new TextEncoder().encode('three'));
  t.equal(statSync(p).mode & 0o777, 0o600, 'default mode 0600 even with umask 0');
  t.same(readdirSync(dir), ['state.json'], 'no temp files left');
});

for (const variant of ['sync', 'async'] as const) {
  t.test(`${variant}: a write that fails part-way leaves the old file and no temp file`, async (t) => {
    const dir = scratch(t);
    const p = join(dir, 'license.json');
    writeFileSync(p, 'old content', { mode: 0o600 });
    // 8 KiB file size limit: writing 64 KiB fails with EFBIG after the first blocks,
    // as a full disk or a crash in the middle of the write would leave it.
    const call = variant === 'sync' ? 'w.writeFileAtomic(p, big)' : 'await w.writeFileAtomicAsync(p, big)';
    // SIGXFSZ would kill the child: caught, the write fails with EFBIG.
    const script = `process.on('SIGXFSZ', () => {}); const w = await import(${JSON.stringify(WRITER)}); const p = ${JSON.stringify(p)}; const big = 'x'.repeat(65536);
      try { ${call}; console.log('written'); } catch (e) { console.log(e.code); }`;
    const r = spawnSync('bash', ['-c', `ulimit -f 8; exec "${process.execPath}" --input-type=module -e "$0"`, script], { encoding: 'utf8', env: childEnv() });
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stdout.trim(), 'EFBIG', 'the write failed');
    t.equal(readFileSync(p, 'utf8'), 'old content', 'old file intact');
    t.same(readdirSync(dir), ['license.json'], 'temp file removed');
  });
}

t.test('a rename that fails removes the temp file and throws', async (t) => {
  const dir = scratch(t);
  const p = join(dir, 'occupied');
  mkdirSync(join(p, 'inside'), { recursive: true });
  t.throws(() => writeFileAtomic(p, 'x'), { code: 'EISDIR' });
  await t.rejects(writeFileAtomicAsync(p, 'x'), { code: 'EISDIR' });
  t.same(readdirSync(dir), ['occupied'], 'no temp files left');
});
