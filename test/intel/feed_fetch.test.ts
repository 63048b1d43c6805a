/**
 * Fetching a feed: conditional requests answer "unchanged" without a body, a body past the
 * cap is refused (declared or streamed), and an HTTP error is a FEED_FETCH_FAILED.
 */
import t from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FeedError } from '../../server/src/intel/feed_error.js';
import { fetchFeed, loadFeedBytes } from '../../server/src/intel/feed_loader.js';

const body = JSON.stringify({ bash: { 'CVE-2099-1': { releases: { bookworm: { status: 'open' } } } } });
const seen: Array<Record<string, string | undefined>> = [];
const server = createServer((req, res) => {
  seen.push({ inm: req.headers['if-none-match'], ims: req.headers['if-modified-since'] });
  if (req.url === '/tracker.json') {
    if (req.headers['if-none-match'] === '"v1"') return res.writeHead(304).end();
    return res.writeHead(200, { etag: '"v1"', 'last-modified': 'Mon, 01 Jan 2026 00:00:00 GMT', 'content-type': 'application/json' }).end(body);
  }
  if (req.url === '/chunked') {
    res.writeHead(200);
    const chunk = Buffer.alloc(64 << 10, 0x20);
    for (let i = 0; i < 64; i++) res.write(chunk);
    return res.end();
  }
  if (req.url === '/declared') return res.writeHead(200, { 'content-length': String(10 << 20) }).end(Buffer.alloc(10 << 20));
  return res.writeHead(404).end();
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
t.teardown(() => server.close());
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

const code = async (p: Promise<unknown>) => p.then(() => 'accepted', (e: unknown) => (e instanceof FeedError ? e.code : String(e)));

t.test('conditional GET', async (t) => {
  const first = await fetchFeed(`${base}/tracker.json`);
  if (first.notModified) throw new Error('expected a body');
  t.equal(first.etag, '"v1"');
  t.equal(loadFeedBytes(first.bytes, 'tracker.json')[0]!.id, 'CVE-2099-1');
  const again = await fetchFeed(`${base}/tracker.json`, { etag: first.etag, lastModified: first.lastModified });
  t.same(again, { notModified: true }, '304: unchanged, no body');
  t.same(seen.at(-1), { inm: '"v1"', ims: 'Mon, 01 Jan 2026 00:00:00 GMT' }, 'both validators sent');
});

t.test('size cap and errors', async (t) => {
  t.equal(await code(fetchFeed(`${base}/chunked`, {}, 1 << 20)), 'FEED_TOO_LARGE', 'a streamed body past the cap');
  t.equal(await code(fetchFeed(`${base}/declared`, {}, 1 << 20)), 'FEED_TOO_LARGE', 'a declared Content-Length past the cap');
  t.equal(await code(fetchFeed(`${base}/missing`)), 'FEED_FETCH_FAILED');
  t.equal(await code(fetchFeed('file:///etc/passwd')), 'FEED_FETCH_FAILED', 'only http and https');
});
