/** `npm start`'s stack: it comes up whole, works, and Ctrl-C stops every part of it. */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './harness/postgres.js';
import { requireCapability, missingCommand } from './harness/capabilities.js';

const STACK = fileURLToPath(new URL('../scripts/dev_stack.js', import.meta.url));

function status(socket: string): Promise<any> {
  return new Promise((resolve, reject) => {
    request({ socketPath: socket, path: '/v1/status' }, (res) => {
      let out = '';
      res.on('data', (c) => (out += c));
      res.on('end', () => resolve(JSON.parse(out)));
    })
      .on('error', reject)
      .end();
  });
}

async function runStack(dir: string, port: number, natsPort: number) {
  const child = spawn(process.execPath, [STACK], {
    env: { ...process.env, AEGIS_DEV_DIR: dir, AEGIS_LISTEN: `127.0.0.1:${port}`, AEGIS_DEV_NATS_PORT: String(natsPort), AEGIS_HOSTNAME: `devstack-${process.pid}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stack did not come up: ${out}`)), 60_000);
    const check = setInterval(() => {
      if (out.includes('Ctrl-C stops everything.')) {
        clearInterval(check);
        clearTimeout(timer);
        resolve();
      }
    }, 100);
    child.once('exit', (code) => {
      clearInterval(check);
      clearTimeout(timer);
      reject(new Error(`stack exited ${code}: ${out}`));
    });
  });
  return {
    out: () => out,
    stop: () =>
      new Promise<number | null>((resolve) => {
        child.removeAllListeners('exit');
        child.once('exit', (code) => resolve(code));
        child.kill('SIGINT');
      }),
  };
}

t.test('npm start: nats-server, aegis-server and aegis-agent, demo data, clean Ctrl-C', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const dir = mkdtempSync(join(tmpdir(), 'aegis-dev-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const natsPort = await freePort();
  const first = await runStack(dir, port, natsPort);
  t.match(first.out(), /aegis-server\s+http:\/\/127\.0\.0\.1:\d+/);
  t.match(first.out(), /admin API key aegis_sk_/);
  t.equal((first.out().match(/^ {2}\S.*(status|snapshots|licenses list)$/gm) ?? []).length, 3, 'three commands to try');
  const st = await status(join(dir, 'agent.sock'));
  t.equal(st.edition, 'licensed', 'demo license activated on first run');
  t.equal(st.nats.connected, true, 'agent on NATS with its own credentials');
  t.equal(await first.stop(), 0, 'Ctrl-C exits 0');
  t.match(first.out(), /dev-stack: stopped/);
  const left = await fetch(`http://127.0.0.1:${port}/health`).then(() => true, () => false);
  t.equal(left, false, 'server stopped');

  const second = await runStack(dir, port, natsPort);
  const st2 = await status(join(dir, 'agent.sock'));
  t.equal(st2.edition, 'licensed', 'second start reuses the demo state');
  t.equal(st2.machine_id, st.machine_id, 'same machine, no second activation');
  t.equal(await second.stop(), 0);
});
