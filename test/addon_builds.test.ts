/**
 * The addon builds two ways from the same sources: cmake-js (what `npm ci` runs, from
 * CMakeLists.txt) and node-gyp (binding.gyp). CI proves the second here, in a scratch
 * copy so the installed build/ is untouched, and loads the result.
 */
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireCapability, missingCommand } from './harness/capabilities.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

t.test('node-gyp rebuild from binding.gyp produces a loadable addon', async (t) => {
  if (!requireCapability(t, missingCommand('clang', 'bpftool', 'pkg-config', 'make', 'g++'))) return;
  const dir = mkdtempSync(join(tmpdir(), 'aegis-gyp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const p of ['binding.gyp', 'package.json', 'bpf', 'native']) cpSync(join(ROOT, p), join(dir, p), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  const r = spawnSync(process.execPath, [join(ROOT, 'node_modules/node-gyp/bin/node-gyp.js'), 'rebuild', '--jobs', '2'], { cwd: dir, encoding: 'utf8' });
  t.equal(r.status, 0, `node-gyp rebuild: ${r.stderr.slice(-2000)}`);
  const addon = join(dir, 'build/Release/aegis.node');
  t.ok(existsSync(addon), 'build/Release/aegis.node');
  const mod = createRequire(import.meta.url)(addon) as Record<string, unknown>;
  for (const fn of ['writeFileAtomic', 'notify', 'peerCredentials']) t.type(mod[fn], 'function', `exports ${fn}`);
  t.ok(execFileSync('nm', ['-D', addon], { encoding: 'utf8' }).includes('bpf_'), 'linked against libbpf');
});
