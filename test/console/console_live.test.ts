/**
 * The console's live stream (GET /console/api/events) against a real server, over raw
 * HTTP: a session's stream hears what changed (a license issued, an agent's report, an
 * ack) as topics and no data; a key limited to one customer hears nothing of another's;
 * no cookie or a stale one is 401; streams are capped per session and in all (429); sign-
 * out, expiry and a revoked key end the stream with an `end` event.
 */
import t from 'tap';
import { request, type IncomingMessage } from 'node:http';
import { activateTestHost, startTestServer, type TestServer } from '../harness/server.js';
import { SCOPES } from '../../server/src/api_keys.js';

interface Stream {
  status: number;
  events: { event: string; data: any }[];
  /** Resolves with the first event of `name` (after `from` events) whose data passes `ok`. */
  next(name: string, ok?: (d: any) => boolean, timeoutMs?: number): Promise<any>;
  ended: Promise<void>;
  close(): void;
  body: string;
}

function openStream(s: TestServer, cookie: string | null): Promise<Stream> {
  const u = new URL(s.url + '/console/api/events');
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, headers: { accept: 'text/event-stream', ...(cookie ? { cookie: `aegis_console=${cookie}` } : {}) } }, (res: IncomingMessage) => {
      const events: { event: string; data: any }[] = [];
      const waiters: (() => void)[] = [];
      let buf = '';
      let body = '';
      let endResolve!: () => void;
      const ended = new Promise<void>((r) => (endResolve = r));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data === '') continue;
          events.push({ event, data: JSON.parse(data) });
          for (const w of waiters.splice(0)) w();
        }
      });
      res.on('end', () => endResolve());
      res.on('close', () => endResolve());
      const stream: Stream = {
        status: res.statusCode ?? 0,
        events,
        get body() {
          return body;
        },
        ended,
        close: () => req.destroy(),
        next(name, ok = () => true, timeoutMs = 5000) {
          return new Promise((resolveNext, rejectNext) => {
            const seen = new Set<number>();
            const timer = setTimeout(() => rejectNext(new Error(`no ${name} event within ${timeoutMs} ms; got ${JSON.stringify(events)}`)), timeoutMs);
            const check = () => {
              const hit = events.find((e, idx) => !seen.has(idx) && e.event === name && ok(e.data));
              if (hit) {
                clearTimeout(timer);
                resolveNext(hit.data);
              } else waiters.push(check);
            };
            check();
          });
        },
      };
      resolve(stream);
    });
    req.on('error', reject);
    req.end();
  });
}

async function signIn(s: TestServer, key: string): Promise<{ cookie: string; csrf: string }> {
  const r = await fetch(s.url + '/console/api/session', { method: 'POST', headers: { 'content-type': 'application/json', origin: s.url }, body: JSON.stringify({ api_key: key }) });
  if (r.status !== 201) throw new Error(`sign-in: ${r.status}`);
  const cookie = /aegis_console=([^;]+)/.exec(r.headers.get('set-cookie')!)![1]!;
  return { cookie, csrf: ((await r.json()) as any).csrf_token };
}

t.test('console live stream', async (t) => {
  const s = await startTestServer({
    env: { AEGIS_CONSOLE_SESSION_SECONDS: '600', AEGIS_CONSOLE_STREAMS_PER_SESSION: '2', AEGIS_CONSOLE_STREAMS_MAX: '3', AEGIS_CONSOLE_STREAM_HEARTBEAT_MS: '200', AEGIS_CONSOLE_STREAM_COALESCE_MS: '20' },
  });
  t.teardown(() => s.close());
  const a = await activateTestHost(s, 'live-a1');
  const b = await activateTestHost(s, 'live-b1');

  t.equal((await openStream(s, null)).status, 401, 'no session cookie: 401');
  t.equal((await openStream(s, 'x'.repeat(43))).status, 401, 'an unknown cookie: 401');

  const admin = await signIn(s, s.adminKey);
  const st = await openStream(s, admin.cookie);
  t.equal(st.status, 200, 'a session opens a stream');
  t.same((await st.next('ready')).topics.includes('licenses'), true, 'ready names the topics');

  // A license issued through the API: the stream names licenses (and audit), no data.
  const issued = await s.req('POST', '/api/v1/licenses', { customer_id: a.customerId, tier: 'server', license_type: 'subscription', duration_days: 30, max_machines: 2 });
  t.equal(issued.status, 201);
  const change = await st.next('change', (d) => d.topics.includes('licenses'));
  t.ok(change.topics.includes('audit'), 'an audited change names audit too');
  t.notOk(st.body.includes(issued.body.id) || st.body.includes(issued.body.license_key), 'the stream carries no ids and no keys');

  // An agent's status and ack reports (what NATS delivers) name agents and acks.
  await s.app.agents.record('status', a.machineId, { edition: 'licensed', services: [], agent_version: 't', datapath: { available: true, reason: null } });
  await st.next('change', (d) => d.topics.includes('agents'));
  t.pass('an agent report names agents');

  // A key limited to customer B hears nothing of customer A.
  const limitedKey = await s.app.apiKeys.create('b-ops', [...SCOPES], b.customerId);
  const limited = await signIn(s, limitedKey.key);
  const lst = await openStream(s, limited.cookie);
  await lst.next('ready');
  await s.app.agents.record('status', a.machineId, { edition: 'licensed', services: [], agent_version: 't2', datapath: { available: true, reason: null } });
  await st.next('change', (d) => d.topics.includes('agents') && st.events.filter((e) => e.event === 'change' && e.data.topics.includes('agents')).length >= 2);
  await s.app.agents.record('status', b.machineId, { edition: 'licensed', services: [], agent_version: 't', datapath: { available: true, reason: null } });
  await lst.next('change', (d) => d.topics.includes('agents'));
  t.equal(lst.events.filter((e) => e.event === 'change').length, 1, "the limited stream heard its own customer's change only, not A's");

  // Caps: two per session, three in all.
  const st2 = await openStream(s, admin.cookie);
  t.equal(st2.status, 200, 'a second stream of the session');
  const st3 = await openStream(s, admin.cookie);
  t.equal(st3.status, 429, 'a third stream of the session: 429 (cap per session)');
  const other = await signIn(s, s.adminKey);
  const st4 = await openStream(s, other.cookie);
  t.equal(st4.status, 429, 'the server holds three streams: 429 for another session too (overall cap)');
  t.equal(s.app.live.count(), 3, 'three held');
  st2.close();
  await st2.ended;
  for (let i = 0; i < 50 && s.app.live.count() > 2; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(s.app.live.count(), 2, 'a stream the client closed is released');

  // Sign-out ends the session's streams at once.
  const out = await fetch(s.url + '/console/api/session', { method: 'DELETE', headers: { cookie: `aegis_console=${admin.cookie}`, 'x-csrf-token': admin.csrf, origin: s.url } });
  t.equal(out.status, 204);
  t.same(await st.next('end'), { reason: 'session_ended' }, 'sign-out: an end event');
  await st.ended;
  t.pass('and the stream closed');

  // Expiry ends the stream at the next heartbeat.
  const exp = await openStream(s, other.cookie);
  t.equal(exp.status, 200);
  await exp.next('ready');
  s.clock.offsetMs += 601_000;
  t.same(await exp.next('end'), { reason: 'session_ended' }, 'an expired session: end');
  await exp.ended;
  s.clock.offsetMs = 0;

  // A revoked key ends its stream (the heartbeat rechecks the session's key).
  await lst.ended;
  t.ok(lst.events.some((e) => e.event === 'end'), 'the limited session expired with the clock too: its stream ended');
  t.equal((await openStream(s, limited.cookie)).status, 401, 'the limited session expired with the clock too');
  const again = await signIn(s, limitedKey.key);
  const rst = await openStream(s, again.cookie);
  await rst.next('ready');
  await s.app.apiKeys.revoke(limitedKey.id);
  t.same(await rst.next('end', () => true, 5000), { reason: 'session_ended' }, 'its key revoked: end');
  await rst.ended;
  for (let i = 0; i < 50 && s.app.live.count() > 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(s.app.live.count(), 0, 'no stream left');
});
