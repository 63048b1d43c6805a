/**
 * Metrics and health of a real aegis-server: counters move by what happened, labels are
 * route patterns and fixed codes (never ids in a route, never customer text), /metrics
 * refuses keys that may not read every customer's counts, hostile text cannot break the
 * exposition format, and /readyz turns 503 when the database or the schema is not right
 * and 200 again once it is. Every scrape is parsed strictly and checked by
 * `promtool check metrics`. Run per storage backend (observability_sqlite.test.ts,
 * observability_postgres.test.ts).
 */
import { connect } from 'node:net';
import type { Test } from 'tap';
import { sql } from 'kysely';
import type { ValidationCode } from '../../protocol/src/index.js';
import { loadConfig } from '../../server/src/config.js';
import { parseExposition, promtoolCheckMetrics, type Exposition } from '../harness/prometheus_text.js';
import { activateTestHost, startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

/** Stops and starts the database under a running server (PostgreSQL only). */
export interface DatabaseOutage {
  halt(): void;
  resume(): void;
}

const SERVICE = 4711;
const UUID_IN_TEXT = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

/** A request written byte for byte (what fetch would refuse to send), and the status line answered. */
function rawRequest(url: string, requestLine: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, () => sock.end(`${requestLine}\r\nHost: x\r\nConnection: close\r\n\r\n`));
    let got = '';
    sock.on('data', (d) => (got += d.toString('latin1')));
    sock.on('end', () => resolve(got.split('\r\n')[0] ?? ''));
    sock.on('error', reject);
  });
}

async function eventually(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export function observabilitySuite(t: Test, newDatabase: DatabaseFactory, outage?: DatabaseOutage): void {
  let s: TestServer;

  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer({ ...(url === undefined ? {} : { databaseUrl: url }), env: { AEGIS_METRICS_LISTEN: '127.0.0.1:0' } });
  });
  t.teardown(async () => {
    await s?.close();
  });

  /** The metrics listener's text, parsed strictly and passed through promtool (our families lint-clean). */
  async function scrape(t: Test): Promise<Exposition> {
    const r = await fetch(`${s.app.metricsHttp!.url}/metrics`);
    t.equal(r.status, 200, 'the metrics listener answers without a key');
    const text = await r.text();
    const ours = promtoolCheckMetrics(text).filter((l) => l.startsWith('aegis_'));
    t.same(ours, [], 'promtool finds nothing to lint in the aegis_ families');
    return parseExposition(text);
  }

  const counter = (e: Exposition, name: string, labels: Record<string, string>) => e.value(name, labels) ?? 0;

  t.test('counters move by what happened; the route label is the pattern, not the path', async (t) => {
    const before = await scrape(t);
    const name = 'Metrics "Customer"} 1\nx';
    const c = await s.req('POST', '/api/v1/customers', { name });
    const lic = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', max_machines: 3 });
    const h = new TestHost('metrics-host');
    const act = await s.req('POST', '/api/v1/activations', h.activation(lic.body.license_key), { key: null });
    t.equal(act.status, 201);
    const refusedAct = await s.req('POST', '/api/v1/activations', new TestHost('nokey').activation('AEGIS-NOPE-NOPE-NOPE'), { key: null });
    const refusedCode = refusedAct.body.error.code as string;
    const valid = await s.req('POST', '/api/v1/licenses/validate', { token: act.body.license_token }, { key: null });
    t.equal(valid.body.code, 'VALID');
    const bad = await s.req('POST', '/api/v1/licenses/validate', { token: 'not.a.token' }, { key: null });
    t.equal(bad.body.valid, false);
    const badCode = bad.body.code as string;
    t.equal((await s.req('GET', `/api/v1/customers/${c.body.id}`)).status, 200);

    const during = await scrape(t);
    t.equal(during.value('aegis_server_license_seats_used', { license: lic.body.id }), 1, 'one seat used on the license');
    t.equal(during.value('aegis_server_license_seats_limit', { license: lic.body.id }), 3, 'of its three');
    t.ok((during.value('aegis_server_seats_used') ?? 0) >= 1, 'the aggregate counts it');

    t.equal((await s.req('DELETE', `/api/v1/machines/${act.body.machine_id}`)).status, 200);
    const after = await scrape(t);
    const delta = (name: string, labels: Record<string, string>) => counter(after, name, labels) - counter(before, name, labels);
    t.equal(delta('aegis_server_activations_total', { outcome: 'created' }), 1, 'one activation created');
    t.equal(delta('aegis_server_activations_total', { outcome: refusedCode }), 1, `one activation refused as ${refusedCode}`);
    t.equal(delta('aegis_server_license_validations_total', { code: 'VALID' }), 1, 'one valid validation');
    t.equal(delta('aegis_server_license_validations_total', { code: badCode }), 1, `one failed validation, ${badCode}`);
    t.equal(delta('aegis_server_deactivations_total', { outcome: 'ok' }), 1, 'one deactivation');
    const validateRoute = { method: 'POST', route: '/api/v1/licenses/validate', status: '200' };
    t.equal(delta('aegis_server_http_requests_total', validateRoute), 2, 'two validate requests, by pattern and status');
    t.equal(
      delta('aegis_server_http_request_duration_seconds_count', { method: 'POST', route: '/api/v1/licenses/validate' }),
      2,
      'and two latency observations',
    );
    t.equal(delta('aegis_server_http_requests_total', { method: 'GET', route: '/api/v1/customers/:id', status: '200' }), 1, 'a customer read counts under its pattern');
    t.equal(after.value('aegis_server_license_seats_used', { license: lic.body.id }), undefined, 'no seat left on the license');

    const routes = new Set(after.all('aegis_server_http_requests_total').map((x) => x.labels.route!));
    t.notOk([...routes].some((r) => UUID_IN_TEXT.test(r)), 'no route label holds an id');
    const labelText = after.samples.flatMap((x) => Object.values(x.labels)).join('\n');
    t.notOk(labelText.includes('Metrics'), "the customer's name is in no label");
    t.notOk(labelText.includes(c.body.id), "nor the customer's id");
  });

  t.test('agents last seen and unacknowledged snapshots come from the database', async (t) => {
    const a = await activateTestHost(s, 'metrics-agent');
    t.equal(await s.app.agents.record('status', a.machineId, { edition: 'test', services: [] }), null, 'a status report filed');
    const posted = await s.req('POST', `/seg/maps?target_machine=${a.machineId}`, {
      version: 1,
      service_id: SERVICE,
      edges: [{ dst_cidr: '10.1.0.0/16', proto: 'tcp', port: 5432 }],
      ttl_seconds: 900,
    });
    t.equal(posted.status, 200);
    const e1 = await scrape(t);
    const seen = e1.value('aegis_server_agent_last_seen_timestamp_seconds', { machine: a.machineId });
    t.ok(seen !== undefined && Math.abs(seen - Date.now() / 1000) < 60, 'the agent was seen just now');
    t.equal(e1.value('aegis_server_snapshot_targets', { service: String(SERVICE), stage: 'canary' }), 1, 'one canary target');
    t.equal(e1.value('aegis_server_snapshot_unacked', { service: String(SERVICE) }), 1, 'its agent has not acknowledged');
    const ack = { service_id: SERVICE, revision: posted.body.revision, stage: 'canary', mode: 'enforce', ok: true, error: null, applied_at: new Date().toISOString() };
    t.equal(await s.app.agents.record('ack', a.machineId, ack), null, 'the ack filed');
    const e2 = await scrape(t);
    t.equal(e2.value('aegis_server_snapshot_unacked', { service: String(SERVICE) }), 0, 'acknowledged: nothing outstanding');
    t.equal(e2.value('aegis_server_metrics_series_omitted', { family: 'agent_last_seen' }), 0, 'nothing left out below the bound');
  });

  t.test('ATTACK: /metrics on the main listener refuses no key, a key without metrics:read and a customer-limited key', async (t) => {
    const none = await s.req('GET', '/metrics', undefined, { key: null });
    t.equal(none.status, 401, 'no key: 401');
    const other = await s.app.apiKeys.create('no-metrics', ['admin:read', 'licenses:read']);
    const denied = await s.req('GET', '/metrics', undefined, { key: other.key });
    t.equal(denied.status, 403, 'no metrics:read: 403');
    t.match(denied.body.error, { code: 'FORBIDDEN', details: { required_scope: 'metrics:read' } });
    const c = await s.req('POST', '/api/v1/customers', { name: 'Tenant of metrics' });
    const limited = await s.app.apiKeys.create('tenant-metrics', ['metrics:read'], c.body.id);
    const tenant = await s.req('GET', '/metrics', undefined, { key: limited.key });
    t.equal(tenant.status, 403, 'a customer-limited key: 403 (metrics count over every customer)');
    t.equal(typeof tenant.body, 'object', 'an error envelope, no exposition text');
    const reader = await s.app.apiKeys.create('prometheus', ['metrics:read']);
    const ok = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${reader.key}` } });
    t.equal(ok.status, 200, 'an unrestricted metrics:read key reads them');
    t.match(ok.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    parseExposition(await ok.text());
    const off = await fetch(`${s.app.metricsHttp!.url}/api/v1/customers`);
    t.equal(off.status, 404, 'the metrics listener serves nothing but metrics and health');
  });

  t.test('ATTACK: hostile paths, methods and codes cannot break the exposition format', async (t) => {
    const lines = [
      'GET /api/v1/customers/%22%7D%201%0A%23%20HELP HTTP/1.1',
      'GET /nope%22%0Aaegis_server_ready%201 HTTP/1.1',
      'GET /"quoted"/\\back HTTP/1.1',
      'GET /api/v1/licenses/x%5C%22 HTTP/1.1',
    ];
    for (const l of lines) t.match(await rawRequest(s.url, l), /^HTTP\/1\.1 4\d\d /, `answered 4xx: ${l}`);
    // What a bug elsewhere could hand the metrics: every value outside the vocabulary is OTHER.
    s.app.metrics.validated('EVIL"} 1\n# TYPE' as ValidationCode);
    s.app.metrics.activated('EVIL\\"\n' as 'created');
    s.app.metrics.deactivated('x"y' as 'ok');
    s.app.metrics.observeRequest({ method: 'G"ET', route: '/a"b\n}', status: 9999, seconds: 0.01 });
    const e = await scrape(t);
    t.ok(counter(e, 'aegis_server_license_validations_total', { code: 'OTHER' }) >= 1, 'a hostile validation code counts as OTHER');
    t.ok(counter(e, 'aegis_server_activations_total', { outcome: 'OTHER' }) >= 1, 'so does a hostile activation outcome');
    t.ok(counter(e, 'aegis_server_deactivations_total', { outcome: 'OTHER' }) >= 1, 'and deactivation outcome');
    t.ok(counter(e, 'aegis_server_http_requests_total', { method: 'OTHER', route: 'OTHER', status: 'OTHER' }) >= 1, 'and a hostile method, route and status');
    t.ok(counter(e, 'aegis_server_http_requests_total', { method: 'GET', route: '/api/v1/licenses/:id', status: '401' }) >= 1, 'an id of quotes and backslashes counts under its pattern');
    t.ok(counter(e, 'aegis_server_http_requests_total', { method: 'GET', route: 'unmatched', status: '400' }) >= 1, 'a refused parameter and an unknown path count as unmatched');
    const values = e.samples.flatMap((x) => Object.values(x.labels));
    t.notOk(values.some((v) => /["\n\\]|EVIL|nope|quoted/.test(v)), 'no label value carries the hostile text');
  });

  t.test('/healthz answers while the process serves; /readyz is 503 naming the failing check while migrations are not current', async (t) => {
    t.same((await s.req('GET', '/healthz', undefined, { key: null })).body, { status: 'ok' });
    const ready = await s.req('GET', '/readyz', undefined, { key: null });
    t.equal(ready.status, 200);
    t.match(ready.body, { status: 'ready', failing: [], checks: { database: { ok: true }, migrations: { ok: true, detail: 'current' }, signing_key: { ok: true }, nats: { detail: 'not configured' } } });
    t.equal((await s.req('GET', '/health', undefined, { key: null })).status, 200, '/health still answers');
    const db = s.app.ctx.db;
    const last = await sql<{ name: string; timestamp: string }>`select name, timestamp from kysely_migration order by name desc limit 1`.execute(db);
    const row = last.rows[0]!;
    await sql`delete from kysely_migration where name = ${row.name}`.execute(db);
    try {
      const stale = await s.req('GET', '/readyz', undefined, { key: null });
      t.equal(stale.status, 503, 'a migration not run: not ready');
      t.same(stale.body.failing, ['migrations']);
      t.equal(stale.body.checks.migrations.detail, '1 pending');
      const e = await scrape(t);
      t.equal(e.value('aegis_server_ready'), 0);
      t.equal(e.value('aegis_server_migrations_pending'), 1);
      t.equal(e.value('aegis_server_readiness_check', { check: 'migrations' }), 0);
    } finally {
      await sql`insert into kysely_migration (name, timestamp) values (${row.name}, ${row.timestamp})`.execute(db);
    }
    t.equal((await s.req('GET', '/readyz', undefined, { key: null })).status, 200, 'ready again once current');
  });

  t.test('the signing key age and readiness are metrics', async (t) => {
    const e = await scrape(t);
    t.equal(e.value('aegis_server_ready'), 1);
    t.equal(e.value('aegis_server_database_up'), 1);
    const age = e.value('aegis_server_signing_key_age_seconds');
    t.ok(age !== undefined && age >= 0 && age < 3600, `the test key is new (${age} s)`);
    t.ok((e.value('aegis_server_database_ping_duration_seconds') ?? -1) >= 0, 'the ping was timed');
    t.equal(e.value('aegis_server_nats_configured'), 0);
    t.ok((e.value('process_resident_memory_bytes') ?? 0) > 0, 'process metrics are there');
  });

  t.test('an unauthenticated metrics listener must be asked for beyond loopback', async (t) => {
    t.throws(() => loadConfig({}, { AEGIS_METRICS_LISTEN: '0.0.0.0:9464' }), /not a loopback address/);
    t.throws(() => loadConfig({}, { AEGIS_METRICS_LISTEN: 'nonsense' }), /must be host:port/);
    t.same(loadConfig({}, { AEGIS_METRICS_LISTEN: '10.0.0.5:9464', AEGIS_METRICS_ALLOW_REMOTE: 'true' }).metricsListen, { host: '10.0.0.5', port: 9464 });
    t.equal(loadConfig({}, {}).metricsListen, null, 'off unless set');
  });

  t.test('NATS configured but unreachable: not ready, and the gauges say so', async (t) => {
    const url = await newDatabase();
    const n = await startTestServer({ ...(url === undefined ? {} : { databaseUrl: url }), natsUrl: 'nats://127.0.0.1:1' });
    t.teardown(() => n.close());
    const r = await n.req('GET', '/readyz', undefined, { key: null });
    t.equal(r.status, 503);
    t.same(r.body.failing, ['nats']);
    const text = await (await fetch(`${n.url}/metrics`, { headers: { 'x-api-key': n.adminKey } })).text();
    const e = parseExposition(text);
    t.equal(e.value('aegis_server_nats_configured'), 1);
    t.equal(e.value('aegis_server_nats_connected'), 0);
  });

  if (outage) {
    t.test('/readyz is 503 while the database is down and 200 once it is back; metrics still answer on their listener', async (t) => {
      outage.halt();
      let resumed = false;
      try {
        const down = await s.req('GET', '/readyz', undefined, { key: null });
        t.equal(down.status, 503, 'database down: not ready');
        t.ok(down.body.failing.includes('database'), 'the database check is named');
        t.notMatch(JSON.stringify(down.body), /ECONNREFUSED|127\.0\.0\.1|postgres/i, 'no driver message leaks');
        t.equal((await s.req('GET', '/healthz', undefined, { key: null })).status, 200, 'alive all the same');
        const e = await scrape(t);
        t.equal(e.value('aegis_server_database_up'), 0);
        t.equal(e.value('aegis_server_ready'), 0);
        t.ok(Number.isNaN(e.value('aegis_server_seats_used')!), 'database gauges are unknown (NaN), not 0');
        const main = await s.req('GET', '/metrics', undefined, { key: s.adminKey });
        t.not(main.status, 200, 'the main listener cannot check a key without its database: no metrics there');
        outage.resume();
        resumed = true;
        await eventually('/readyz 200', async () => (await s.req('GET', '/readyz', undefined, { key: null })).status === 200);
        t.pass('ready again once the database is back');
        t.equal((await scrape(t)).value('aegis_server_database_up'), 1);
      } finally {
        if (!resumed) outage.resume();
      }
    });
  }
}
