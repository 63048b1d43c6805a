/**
 * Attack: a local process holds the agent's control socket with slow or idle connections,
 * so aegisctl cannot reach the agent. The socket must cut headers that never finish and
 * bodies that trickle, and refuse connections beyond its cap while a freed slot serves.
 * (No database is involved: the control socket is the agent's.)
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { ControlApi } from '../../agent/src/control_api.js';
import { openRaw, rawRequest, within, type RawConnection } from '../harness/raw_socket.js';

const HEADERS_TIMEOUT_MS = 600;
const REQUEST_TIMEOUT_MS = 1200;
const MAX_CONNECTIONS = 3;
const SLACK_MS = 1000;

const dir = mkdtempSync(join(tmpdir(), 'aegis-ctl-'));
const socket = join(dir, 'agent.sock');
const api = new ControlApi(winston.createLogger({ silent: true }), {
  headersTimeoutMs: HEADERS_TIMEOUT_MS,
  requestTimeoutMs: REQUEST_TIMEOUT_MS,
  maxConnections: MAX_CONNECTIONS,
});
let puts = 0;
api.on('GET', '/status', async () => ({ ok: true }));
api.on('PUT', '/snapshots/:id', async () => {
  puts++;
  return { ok: true };
});

t.before(() => api.listen(socket, ''));
t.teardown(async () => {
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

const status = 'GET /status HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n';

t.test('headers that never finish are cut within the headers timeout', async (t) => {
  const c = await openRaw(socket);
  c.socket.write('GET /status HTTP/1.1\r\n');
  c.trickle(Array.from({ length: 100 }, (_, i) => `X-Slow-${i}: 1\r\n`), 150);
  const ms = await within(c.closed, HEADERS_TIMEOUT_MS + SLACK_MS + 2000);
  c.socket.destroy();
  t.ok(ms !== null && ms <= HEADERS_TIMEOUT_MS + SLACK_MS, `closed after ${ms} ms`);
});

t.test('a trickled body is cut within the request timeout and never reaches the handler', async (t) => {
  const c = await openRaw(socket);
  c.socket.write('PUT /snapshots/101 HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n');
  c.trickle(Array.from({ length: 100 }, () => ' '), 100);
  const ms = await within(c.closed, REQUEST_TIMEOUT_MS + SLACK_MS + 3000);
  c.socket.destroy();
  t.ok(ms !== null && ms <= REQUEST_TIMEOUT_MS + SLACK_MS, `closed after ${ms} ms`);
  const answer = c.received();
  t.ok(answer === '' || answer.startsWith('HTTP/1.1 408'), `answered 408 or nothing (got ${JSON.stringify(answer.slice(0, 40))})`);
  t.equal(puts, 0, 'the handler never ran');
});

t.test('connections beyond the cap are refused; a freed slot serves aegisctl', async (t) => {
  const held: RawConnection[] = [];
  for (let i = 0; i < MAX_CONNECTIONS; i++) held.push(await openRaw(socket));
  await new Promise((r) => setTimeout(r, 100));
  const extra = await openRaw(socket).catch(() => null);
  t.not(extra ? await within(extra.closed, 500) : 0, null, 'a connection beyond the cap is closed at once');
  held.pop()!.socket.destroy();
  await new Promise((r) => setTimeout(r, 100));
  t.equal((await rawRequest(socket, status, 2000)).status, 200, 'an honest request on the freed slot is answered');
  for (const c of held) c.socket.destroy();
});
