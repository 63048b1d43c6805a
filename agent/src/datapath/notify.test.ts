/**
 * sd_notify over a real unix datagram socket (path and abstract '@' names), received by
 * a small python3 listener standing in for systemd.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { missingCommand, requireCapability } from '../../../test/harness/capabilities.js';
import { formatNotifyState, InvalidArgumentError, NotifyError, sdNotify } from './index.js';
import { loadAddon } from './addon.js';

const LISTENER = `
import socket, sys
name = sys.argv[1]
addr = '\\0' + name[1:] if name.startswith('@') else name
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(addr)
print('ready', flush=True)
for _ in range(int(sys.argv[2])):
    data = s.recv(4096)
    sys.stdout.write(repr(data.decode()) + '\\n')
    sys.stdout.flush()
`;

function listen(name: string, count: number): Promise<{ ready: Promise<void>; done: Promise<string[]> }> {
  const p = spawn('python3', ['-c', LISTENER, name, String(count)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  p.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.startsWith('ready\n')) onReady();
  });
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<string[]>((resolve, reject) => {
    p.on('close', (code) => {
      if (code !== 0) reject(new Error(`listener failed: ${err}`));
      else resolve(out.split('\n').slice(1).filter(Boolean));
    });
  });
  return Promise.resolve({ ready, done });
}

t.test('sd_notify', async (t) => {
  let missing: string | null = missingCommand('python3');
  try {
    loadAddon();
  } catch (e) {
    missing = (e as Error).message;
  }
  if (!requireCapability(t, missing)) return;

  t.equal(formatNotifyState({ ready: true, status: 'enforcing 3 services' }), 'READY=1\nSTATUS=enforcing 3 services\n');
  t.throws(() => formatNotifyState({}), InvalidArgumentError);
  t.throws(() => formatNotifyState({ status: 'two\nlines' }), InvalidArgumentError);

  const dir = mkdtempSync(join(tmpdir(), 'aegis-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const name of [join(dir, 'notify.sock'), `@aegis-notify-test-${process.pid}`]) {
    const l = await listen(name, 3);
    await l.ready;
    t.equal(await sdNotify({ ready: true, status: 'up' }, name), true, `sent to ${name}`);
    t.equal(await sdNotify({ watchdog: true }, name), true);
    t.equal(await sdNotify({ stopping: true }, name), true);
    t.same(await l.done, [`'READY=1\\nSTATUS=up\\n'`, `'WATCHDOG=1\\n'`, `'STOPPING=1\\n'`], `received on ${name}`);
  }
  const e = await sdNotify({ ready: true }, join(dir, 'nobody-listens.sock')).catch((x: unknown) => x);
  t.ok(e instanceof NotifyError, 'a socket nobody listens on is an error');
  t.equal((e as NotifyError).nativeCode, 'ENOENT');
  await t.rejects(sdNotify({ ready: true }, 'relative.sock'), NotifyError, 'relative socket path refused');
});
