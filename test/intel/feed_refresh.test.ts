/**
 * The periodic feed refresh of a real aegis-server (AEGIS_INTEL_FEEDS) against a real
 * local HTTP feed: the first fetch imports, the next ones are conditional (304, nothing
 * written), a changed feed is imported again, and a broken body is refused and recorded
 * while the stored advisories stay.
 */
import t from 'tap';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestServer, type TestServer } from '../harness/server.js';

let body = '';
let etag = '"v1"';
const seen: IncomingHttpHeaders[] = [];
const feed = createServer((req, res) => {
  seen.push(req.headers);
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, { etag });
    res.end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json', etag });
  res.end(body);
});

const record = (modified: string, fixed: string) =>
  JSON.stringify([{ id: 'DEBIAN-CVE-2099-7777', modified, affected: [{ package: { ecosystem: 'Debian:12', name: 'bash' }, ranges: [{ type: 'ECOSYSTEM', events: [{ introduced: '0' }, { fixed }] }] }] }]);

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let s: TestServer;
t.teardown(async () => {
  await s?.close();
  feed.close();
});

t.test('configured feeds are imported, then refreshed with conditional requests', async (t) => {
  await new Promise<void>((r) => feed.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(feed.address() as AddressInfo).port}/osv.json`;
  body = record('2026-01-01T00:00:00Z', '5.3-1');
  s = await startTestServer({ env: { AEGIS_INTEL_FEEDS: url, AEGIS_INTEL_REFRESH_SECONDS: '1' } });
  const db = s.app.ctx.db;
  const advisory = () => db.selectFrom('advisories').selectAll().where('id', '=', 'DEBIAN-CVE-2099-7777').executeTakeFirst();
  const first = await until('the first import', advisory);
  t.match(JSON.parse(first.affected), [{ release: 'bookworm', package: 'bash' }]);
  t.equal(first.source, url);
  await until('a conditional request', async () => seen.some((h) => h['if-none-match'] === '"v1"'));
  t.equal((await advisory())!.imported_at, first.imported_at, 'a 304 writes nothing');
  const state = await db.selectFrom('intel_feed_state').selectAll().where('url', '=', url).executeTakeFirstOrThrow();
  t.equal(state.etag, '"v1"');
  t.equal(state.last_error, null);

  body = record('2026-02-01T00:00:00Z', '5.3-2');
  etag = '"v2"';
  await until('the changed feed imported', async () => (await advisory())!.modified === '2026-02-01T00:00:00Z');
  t.match(JSON.parse((await advisory())!.affected)[0].ranges[0], [{ kind: 'introduced' }, { kind: 'fixed', text: '5.3-2' }]);

  const before = await advisory();
  body = '[{"id": "broken", ';
  etag = '"v3"';
  const failed = await until('the refused body recorded', async () => {
    const st = await db.selectFrom('intel_feed_state').selectAll().where('url', '=', url).executeTakeFirst();
    return st?.last_error ? st : null;
  });
  t.match(failed.last_error, /FEED_MALFORMED_JSON/);
  t.equal(failed.etag, '"v2"', 'the validators stay those of the last good import, so it is fetched again');
  t.same(await advisory(), before, 'the stored advisory is unchanged');
});
