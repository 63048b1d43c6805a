/**
 * The agent reads the kernel module's hwid parameter back from sysfs (a fake directory
 * here) and says loudly, in the log and in what the control API shows, when the module
 * was loaded without this machine's hardware id or with another machine's. The token is
 * written either way (see KernelToken.write for why).
 */
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KernelToken } from './kernel_token.js';
import type { Logger } from './logger.js';

const HWID = 'ab'.repeat(32);
const OTHER = 'cd'.repeat(32);

interface Logged {
  level: string;
  message: string;
  meta: unknown;
}

function setup(t: Test, moduleHwid: string | null, loaded = true) {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-kmod-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The layout of sysfs: /sys/kernel/aegis/{reload,status} and /sys/module/aegis/parameters/hwid.
  const kernel = join(dir, 'sys/kernel/aegis');
  const params = join(dir, 'sys/module/aegis/parameters');
  if (loaded) {
    mkdirSync(kernel, { recursive: true });
    mkdirSync(params, { recursive: true });
    writeFileSync(join(kernel, 'reload'), '');
    writeFileSync(join(kernel, 'status'), 'valid\n');
    if (moduleHwid !== null) writeFileSync(join(params, 'hwid'), `${moduleHwid}\n`);
  }
  const logged: Logged[] = [];
  const rec = (level: string) => (message: string, meta?: unknown) => void logged.push({ level, message, meta });
  const log = { debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') } as unknown as Logger;
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir);
  mkdirSync(join(dir, 'etc'));
  const kt = new KernelToken({
    tokenPath: join(dir, 'etc/aegis/auth.token'),
    stateDir,
    kmodReloadPath: join(kernel, 'reload'),
    kmodHwidPath: join(params, 'hwid'),
    hardwareId: HWID,
    log,
  });
  return { kt, logged, dir, tokenPath: join(dir, 'etc/aegis/auth.token') };
}

t.test('a module loaded with this machine hwid is bound, and nothing is warned', async (t) => {
  const { kt, logged, tokenPath } = setup(t, HWID);
  t.match(kt.binding(), { state: 'bound', module_hwid: HWID, hardware_id: HWID, warning: null });
  await kt.write('a.b.c');
  t.equal(readFileSync(tokenPath, 'utf8'), 'a.b.c');
  t.same(logged.filter((l) => l.level === 'error' || l.level === 'warn'), [], 'no warnings');
  // ASCII case is ignored by the module, so here too.
  const upper = setup(t, HWID.toUpperCase());
  t.equal(upper.kt.binding().state, 'bound');
});

t.test('a module loaded without hwid is reported loudly on every token write', async (t) => {
  const { kt, logged, tokenPath } = setup(t, '');
  const b = kt.checkBinding();
  t.match(b, { state: 'unbound', module_hwid: '' });
  t.match(b.warning, /loaded without hwid: it accepts a kernel token copied from any machine/);
  t.match(b.warning, `hwid=${HWID}`, 'the warning says what to load it with');
  t.equal(logged.length, 1);
  t.match(logged[0], { level: 'error', message: /^KERNEL MODULE NOT BOUND TO THIS MACHINE: / , meta: { kmod_hwid: 'unbound' } });
  await kt.write('a.b.c');
  await kt.write('d.e.f');
  t.equal(logged.filter((l) => l.level === 'error').length, 3, 'said again on each write');
  t.equal(readFileSync(tokenPath, 'utf8'), 'd.e.f', 'the token is still written');
});

t.test("a module loaded with another machine's hwid is reported as a mismatch", async (t) => {
  const { kt, logged } = setup(t, OTHER);
  await kt.write('a.b.c');
  const b = kt.binding();
  t.match(b, { state: 'mismatch', module_hwid: OTHER, hardware_id: HWID });
  t.match(b.warning, /refuses this host's kernel token \(hwid mismatch\)/);
  t.match(logged.find((l) => l.level === 'error'), { meta: { kmod_hwid: 'mismatch', module_hwid: OTHER } });
});

t.test('an unreadable hwid parameter is unknown; no module is not loaded', async (t) => {
  const unreadable = setup(t, null);
  t.match(unreadable.kt.binding(), { state: 'unknown', module_hwid: null });
  t.match(unreadable.kt.binding().warning, /cannot be read/);
  const none = setup(t, null, false);
  await none.kt.write('a.b.c');
  t.match(none.kt.binding(), { state: 'not_loaded', warning: null });
  t.same(none.logged.filter((l) => l.level === 'error'), [], 'no module: nothing to warn about');
  t.equal(none.kt.kmodStatus(), null);
});
