/**
 * The host key and the state directory are written by the TypeScript atomic writer, not
 * the native addon: a host whose addon is missing or broken still gets its identity (and
 * can activate). The key is 0600 whatever the umask, and a failed write of a state file
 * leaves the previous one in place.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrCreateHostKey } from './host_identity.js';
import type { Logger } from './logger.js';

/** The child runs plain node, without the test runner's NODE_OPTIONS hooks (they write files of their own). */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}

const quiet = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;
const HOST_IDENTITY = new URL('./host_identity.js', import.meta.url).href;
const STATE_STORE = new URL('./state_store.js', import.meta.url).href;

function scratch(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-hostkey-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `body` (an ES module body, with a `quiet` logger) in a child node under a file size limit of `fsizeKiB`. */
function child(body: string, fsizeKiB = 'unlimited', preamble = ''): { status: number | null; stdout: string; stderr: string } {
  // A file over the limit raises SIGXFSZ, which would kill the child: caught, the write fails with EFBIG.
  const script = `${preamble}
    process.on('SIGXFSZ', () => {});
    const quiet = { debug() {}, info() {}, warn() {}, error() {} };
    ${body}`;
  return spawnSync('bash', ['-c', `ulimit -f ${fsizeKiB}; exec "${process.execPath}" --input-type=module -e "$0"`, script], { encoding: 'utf8', env: childEnv() });
}

/** Like child(), but importing anything of the datapath (the addon's loader) throws. */
function withoutAddon(dir: string, body: string): { status: number | null; stdout: string; stderr: string } {
  const hooks = join(dir, 'refuse_datapath.mjs');
  writeFileSync(
    hooks,
    `export async function resolve(specifier, context, next) {
      const r = await next(specifier, context);
      if (r.url.includes('/datapath/') || r.url.endsWith('.node')) throw new Error('the datapath must not be loaded: ' + r.url);
      return r;
    }`,
  );
  return child(body, 'unlimited', `import { register } from 'node:module'; import { pathToFileURL } from 'node:url';
    register(pathToFileURL(${JSON.stringify(hooks)}));`);
}

t.test('a new host key is 0600 whatever the umask, and loads back as the same identity', async (t) => {
  const dir = scratch(t);
  const old = process.umask(0);
  t.teardown(() => process.umask(old));
  const path = join(dir, 'host_key.pem');
  const made = await loadOrCreateHostKey(path, quiet);
  t.equal(made.created, true);
  t.equal(statSync(path).mode & 0o777, 0o600, 'host key 0600 under umask 0');
  t.same(readdirSync(dir), ['host_key.pem'], 'no temp file left');
  const again = await loadOrCreateHostKey(path, quiet);
  t.equal(again.created, false);
  t.equal(again.thumbprint, made.thumbprint, 'same identity on the next start');
});

t.test('the host key and state files are written without the native addon', async (t) => {
  const dir = scratch(t);
  const r = withoutAddon(
    dir,
    `const { loadOrCreateHostKey } = await import(${JSON.stringify(HOST_IDENTITY)});
     const { StateStore } = await import(${JSON.stringify(STATE_STORE)});
     const store = new StateStore(${JSON.stringify(join(dir, 'state'))}, quiet);
     const id = await loadOrCreateHostKey(store.path('host_key.pem'), quiet);
     await store.write('machine.json', { machine_id: 'm-1' });
     console.log(JSON.stringify({ created: id.created, thumbprint: id.thumbprint }));`,
  );
  t.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim()) as { created: boolean; thumbprint: string };
  t.equal(out.created, true, 'key created with the datapath refused');
  t.equal(statSync(join(dir, 'state', 'host_key.pem')).mode & 0o777, 0o600, 'host key 0600');
  t.equal(statSync(join(dir, 'state', 'machine.json')).mode & 0o777, 0o600, 'state file 0600');
  t.same(JSON.parse(readFileSync(join(dir, 'state', 'machine.json'), 'utf8')), { machine_id: 'm-1' });
});

t.test('a state file write that fails part-way leaves the old file intact', async (t) => {
  const dir = scratch(t);
  const state = join(dir, 'state');
  const first = child(
    `const { StateStore } = await import(${JSON.stringify(STATE_STORE)});
     await new StateStore(${JSON.stringify(state)}, quiet).write('license.json', { license_token: 'old' });`,
  );
  t.equal(first.status, 0, first.stderr);
  const before = readFileSync(join(state, 'license.json'), 'utf8');
  // 8 KiB file size limit: the 64 KiB document fails with EFBIG in the middle of the write.
  const r = child(
    `const { StateStore } = await import(${JSON.stringify(STATE_STORE)});
     try { await new StateStore(${JSON.stringify(state)}, quiet).write('license.json', { license_token: 'x'.repeat(65536) }); console.log('written'); }
     catch (e) { console.log(e.code); }`,
    '8',
  );
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), 'EFBIG', 'the write failed');
  t.equal(readFileSync(join(state, 'license.json'), 'utf8'), before, 'old license.json intact');
  t.same(readdirSync(state), ['license.json'], 'no temp file left');
});
