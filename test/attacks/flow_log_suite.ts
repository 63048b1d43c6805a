/**
 * The flow log against a real aegis-server, once per storage backend (flow_log_sqlite.test.ts,
 * flow_log_postgres.test.ts). Flow reports of the new and the older format are kept line by
 * line under the reporting machine; a machine reporting for a service not targeted at it,
 * and reports with any hostile field (over-long strings, non-IP remotes, ports and counts
 * out of range, intervals in the future or absurdly long, too many lines) are refused whole,
 * nothing stored; GET /api/v1/flows filters, pages by keyset cursor, refuses bad and SQL-ish
 * parameters with 400, and shows a key limited to one customer none of another's machines;
 * the segmenter's from_agents sums denied egress per destination; retention prunes by age
 * and row count. The NATS part publishes on real nats-server in operator mode.
 */
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql, type Kysely } from 'kysely';
import { connect as natsConnect, credsAuthenticator, StringCodec, type NatsConnection } from 'nats';
import { MAX_RULES_PER_SERVICE, subjects } from '../../protocol/src/index.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { loadConfig } from '../../server/src/config.js';
import { openDatabase } from '../../server/src/db/database.js';
import { migratorFor } from '../../server/src/db/migrations.js';
import { NatsAuthority } from '../../server/src/nats/credentials.js';
import { missingCommand, requireCapability } from '../harness/capabilities.js';
import { eventually } from '../harness/middlebox.js';
import { startNats } from '../harness/nats.js';
import { activateTestHost, startTestServer, TestHost, type ActivatedHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const sc = StringCodec();
const snap = (service_id: number) => ({ version: 1, service_id, edges: [{ dst_cidr: '10.9.0.0/24', proto: 'tcp', port: 443 }], ttl_seconds: 900 });

export function flowLogSuite(t: Test, newDatabase: DatabaseFactory): void {
  t.test('0007_flow_log moves agent_flows into the flow log, and back on the way down', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-flowmig-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const { db, dialect } = openDatabase((await newDatabase()) ?? `sqlite:${join(dir, 'aegis.db')}`);
    t.teardown(() => db.destroy());
    const raw = db as unknown as Kysely<any>;
    const m = migratorFor(db, dialect);
    t.notOk((await m.migrateTo('0006_machine_identity')).error);
    const seen = '2026-11-30T10:00:00.000Z';
    await raw
      .insertInto('agent_flows')
      .values([
        { machine_id: 'm-1', service_id: 5, dst: '10.0.0.1', proto: 'tcp', port: 443, count: 12, last_seen_at: seen },
        { machine_id: 'm-2', service_id: 5, dst: '10.0.0.2', proto: 'udp', port: 53, count: 3, last_seen_at: seen },
      ])
      .execute();
    t.notOk((await m.migrateToLatest()).error);
    const rows = (await raw.selectFrom('flow_log').selectAll().orderBy('machine_id').execute()).map((r: any) => ({ ...r, id: undefined, port: Number(r.port), count: Number(r.count), service_id: Number(r.service_id) }));
    t.same(
      rows.map((r: any) => [r.machine_id, r.service_id, r.direction, r.verdict, r.proto, r.remote, r.port, r.count, r.rule, r.reason, r.revision, r.interval_start, r.interval_end, r.received_at]),
      [
        ['m-1', 5, 'egress', 'dropped', 'tcp', '10.0.0.1', 443, 12, null, null, null, seen, seen, seen],
        ['m-2', 5, 'egress', 'dropped', 'udp', '10.0.0.2', 53, 3, null, null, null, seen, seen, seen],
      ],
      'each running total became one dropped egress row received at its last_seen_at',
    );
    const tables = dialect === 'postgres' ? sql`select table_name as name from information_schema.tables where table_name = 'agent_flows'` : sql`select name from sqlite_master where name = 'agent_flows'`;
    t.same((await tables.execute(db)).rows, [], 'agent_flows is gone: one home for flows');
    await raw.insertInto('flow_log').values({ machine_id: 'm-1', service_id: 5, revision: 3, direction: 'egress', verdict: 'would-drop', proto: 'tcp', remote: '10.0.0.1', port: 443, rule: null, reason: 'policy', count: 8, interval_start: seen, interval_end: seen, received_at: '2026-11-30T11:00:00.000Z' }).execute();
    await raw.insertInto('flow_log').values({ machine_id: 'm-1', service_id: 5, revision: 3, direction: 'egress', verdict: 'allowed', proto: 'tcp', remote: '10.0.0.9', port: 443, rule: 0, reason: 'policy', count: 8, interval_start: seen, interval_end: seen, received_at: seen }).execute();
    t.notOk((await m.migrateTo('0006_machine_identity')).error);
    const back = (await raw.selectFrom('agent_flows').selectAll().orderBy('machine_id').execute()).map((r: any) => [r.machine_id, r.dst, r.proto, Number(r.port), Number(r.count), r.last_seen_at]);
    t.same(back, [['m-1', '10.0.0.1', 'tcp', 443, 20, '2026-11-30T11:00:00.000Z'], ['m-2', '10.0.0.2', 'udp', 53, 3, seen]], 'down: denied egress summed back into running totals');
  });

  t.test('flow log: ingest, hostile reports, queries, tenancy, segmenter input, retention', async (t) => {
    const url = await newDatabase();
    const s: TestServer = await startTestServer({
      ...(url === undefined ? {} : { databaseUrl: url }),
      env: { AEGIS_FLOW_RETENTION_DAYS: '2', AEGIS_FLOW_MAX_ROWS: '50' },
    });
    t.teardown(() => s.close());
    const reg = s.app.agents;
    const a1 = await activateTestHost(s, 'flow-a1');
    const a2 = await activateTestHost(s, 'flow-a2', { licenseKey: a1.licenseKey, customerId: a1.customerId });
    const b1 = await activateTestHost(s, 'flow-b1');
    t.equal((await s.req('POST', `/seg/maps?target_machine=${a1.machineId},${a2.machineId}`, snap(810))).status, 200);
    t.equal((await s.req('POST', `/seg/maps?target_machine=${b1.machineId}`, snap(820))).status, 200);
    const keyA = (await s.app.apiKeys.create('flows-a', [...SCOPES], a1.customerId)).key;
    const keyB = (await s.app.apiKeys.create('flows-b', [...SCOPES], b1.customerId)).key;
    const now = () => s.clock.now().getTime();
    const interval = (fromMs: number, toMs: number) => ({ start: new Date(fromMs).toISOString(), end: new Date(toMs).toISOString() });
    const all = async (query = '') => (await s.req('GET', `/api/v1/flows?limit=1000${query}`)).body.items as any[];

    // New format: verdicts, directions, rules, reasons, a revision and an interval.
    const report = {
      host: 'flow-a1',
      service_id: 810,
      revision: 1,
      interval: interval(now() - 30_000, now()),
      flows: [
        { dst: '10.9.0.1', proto: 'tcp', port: 5432, count: 3, verdict: 'dropped', direction: 'egress', rule: null, reason: 'policy' },
        { dst: '10.9.0.1', proto: 'tcp', port: 5432, count: 2, verdict: 'would-drop', direction: 'egress', rule: null, reason: 'policy' },
        { dst: '10.9.0.2', proto: 'udp', port: 53, count: 4, verdict: 'would-drop' },
        { dst: '10.9.0.3', proto: 'tcp', port: 443, count: 7, verdict: 'allowed', rule: 0, reason: 'policy' },
        { dst: '192.0.2.5', proto: 'tcp', port: 22, count: 5, verdict: 'dropped', direction: 'ingress', reason: 'policy' },
        { dst: '10.9.0.4', proto: 'icmp', port: 8, count: 1, verdict: 'dropped' },
        { dst: '10.9.0.5', proto: 47, port: 0, count: 1, verdict: 'dropped', reason: 'unparsed' },
        { dst: '10.9.0.6', proto: 6, port: 80, count: 1, verdict: 'dropped', reason: 'cut' },
        { dst: '2001:DB8:0:0::1', proto: 'tcp', port: 443, count: 2, verdict: 'dropped', reason: 'expired' },
      ],
      sent_at: new Date(now()).toISOString(),
    };
    t.equal(await reg.record('flows', a1.machineId, report), null, 'a new-format report is kept');
    // Older agents: denials only, no verdict, direction, rule, reason, revision or interval.
    t.equal(await reg.record('flows', a2.machineId, { host: 'flow-a2', service_id: 810, flows: [{ dst: '10.9.0.1', proto: 'tcp', port: 5432, count: 10 }], sent_at: new Date(now()).toISOString() }), null, 'an old-format report is kept');
    t.equal(await reg.record('flows', b1.machineId, { service_id: 820, flows: [{ dst: '198.51.100.7', proto: 'tcp', port: 8443, count: 6 }] }), null);

    const a1rows = await all(`&machine=${a1.machineId}`);
    t.equal(a1rows.length, 9, 'one row per report line');
    const v6 = a1rows.find((r) => r.port === 443 && r.remote.includes(':'));
    t.equal(v6.remote, '2001:db8::1', 'remote stored in canonical form');
    const gre = a1rows.find((r) => r.remote === '10.9.0.5');
    t.same([gre.proto, gre.reason], [47, 'unparsed'], 'a protocol without a name is its number');
    t.equal(a1rows.find((r) => r.remote === '10.9.0.6').proto, 'tcp', 'protocol 6 is stored as tcp');
    const allowed = a1rows.find((r) => r.verdict === 'allowed');
    t.same([allowed.rule, allowed.revision, allowed.interval], [0, 1, report.interval], 'rule, revision and interval kept');
    const [old] = await all(`&machine=${a2.machineId}`);
    t.same(
      { verdict: old.verdict, direction: old.direction, rule: old.rule, reason: old.reason, revision: old.revision, start: old.interval.start, end: old.interval.end },
      { verdict: 'dropped', direction: 'egress', rule: null, reason: null, revision: null, start: old.received_at, end: old.received_at },
      'an old-format line reads as dropped egress over the moment it was received',
    );

    // A machine reporting for a service not targeted at it: refused, nothing kept.
    t.equal(await reg.record('flows', b1.machineId, { service_id: 810, flows: [{ dst: '203.0.113.9', proto: 'tcp', port: 22, count: 1000 }] }), 'service not targeted at this machine');
    t.notOk((await all('&service_id=810')).some((r) => r.machine_id === b1.machineId), "nothing filed for another machine's service");

    // Hostile fields: each report is refused whole, naming the field, and nothing is stored.
    const good = { dst: '10.9.0.1', proto: 'tcp', port: 5432, count: 1 };
    const line = (patch: Record<string, unknown>) => ({ service_id: 810, flows: [good, good, { ...good, ...patch }] });
    const hostile: Array<[string, unknown, RegExp]> = [
      ['over-long remote', line({ dst: 'x'.repeat(10_000) }), /\/flows\/2\/dst/],
      ['a CIDR as remote', line({ dst: '10.0.0.0/8' }), /\/flows\/2\/dst/],
      ['SQL in the remote', line({ dst: "1.2.3.4'; drop table flow_log; --" }), /\/flows\/2\/dst/],
      ['a zoned IPv6 remote', line({ dst: 'fe80::1%eth0' }), /\/flows\/2\/dst/],
      ['a hostname as remote', line({ dst: 'db.example.com' }), /\/flows\/2\/dst/],
      ['port 65536', line({ port: 65536 }), /\/flows\/2\/port/],
      ['port -1', line({ port: -1 }), /\/flows\/2\/port/],
      ['port 1.5', line({ port: 1.5 }), /\/flows\/2\/port/],
      ['port as text', line({ port: '80' }), /\/flows\/2\/port/],
      ['icmp type 300', line({ proto: 'icmp', port: 300 }), /\/flows\/2\/port/],
      ['count 0', line({ count: 0 }), /\/flows\/2\/count/],
      ['count -3', line({ count: -3 }), /\/flows\/2\/count/],
      ['count 2.5', line({ count: 2.5 }), /\/flows\/2\/count/],
      ['count 2^31', line({ count: 2 ** 31 }), /\/flows\/2\/count/],
      ['count as text', line({ count: '5' }), /\/flows\/2\/count/],
      ['count null', line({ count: null }), /\/flows\/2\/count/],
      ['proto sctp', line({ proto: 'sctp' }), /\/flows\/2\/proto/],
      ['proto 256', line({ proto: 256 }), /\/flows\/2\/proto/],
      ['verdict denied', line({ verdict: 'denied' }), /\/flows\/2\/verdict/],
      ['direction sideways', line({ direction: 'sideways' }), /\/flows\/2\/direction/],
      ['rule -1', line({ rule: -1 }), /\/flows\/2\/rule/],
      ['rule past the capacity', line({ rule: MAX_RULES_PER_SERVICE }), /\/flows\/2\/rule/],
      ['reason because', line({ reason: 'because' }), /\/flows\/2\/reason/],
      ['a line that is no object', { service_id: 810, flows: [good, 'drop table'] }, /\/flows\/1/],
      ['revision 0', { ...line({}), revision: 0 }, /\/revision/],
      ['revision as text', { ...line({}), revision: '1' }, /\/revision/],
      ['interval ending in the future', { ...line({}), interval: interval(now() - 1000, now() + 3_600_000) }, /\/interval\/end: is in the future/],
      ['interval ending before it starts', { ...line({}), interval: interval(now() - 1000, now() - 2000) }, /\/interval\/end/],
      ['an absurdly long interval', { ...line({}), interval: interval(now() - 3 * 86_400_000, now()) }, /\/interval\/start/],
      ['interval start in words', { ...line({}), interval: { start: 'yesterday', end: new Date(now()).toISOString() } }, /\/interval\/start/],
      ['interval that is no object', { ...line({}), interval: 'all day' }, /\/interval/],
      ['sent_at that is no time', { ...line({}), sent_at: 'x'.repeat(500) }, /\/sent_at/],
      ['over-long host', { ...line({}), host: 'h'.repeat(1000) }, /\/host/],
      ['more lines than the cap', { service_id: 810, flows: Array.from({ length: 10_001 }, () => good) }, /\/flows: holds 10001 lines/],
      ['flows that are no array', { service_id: 810, flows: { 0: good } }, /\/flows/],
      ['service id past 32 bits', { service_id: 2 ** 31, flows: [good] }, /\/service_id/],
    ];
    const before = (await all()).length;
    for (const [what, data, path] of hostile) {
      const refused = await reg.record('flows', a1.machineId, data);
      t.match(refused, /^malformed: /, `${what}: refused`);
      t.match(refused, path, `${what}: the refusal names the field (${String(refused).slice(0, 120)})`);
    }
    t.equal((await all()).length, before, 'no line of any refused report was stored');

    // Queries: filters.
    const verdicts = (rows: any[]) => rows.map((r) => r.verdict).sort();
    t.same(verdicts(await all('&service_id=810&verdict=would-drop')), ['would-drop', 'would-drop']);
    t.equal((await all('&service_id=810&verdict=dropped,would-drop')).length, 9, 'a comma-separated verdict list');
    t.same((await all('&direction=ingress')).map((r) => r.remote), ['192.0.2.5']);
    t.same((await all(`&machine=${a2.machineId}`)).map((r) => r.count), [10]);
    t.same((await all('&service_id=820')).map((r) => r.machine_id), [b1.machineId]);
    const later = new Date(now() + 1000).toISOString();
    t.same(await all(`&since=${later}`), [], 'since: nothing received later');
    t.equal((await all(`&until=${later}`)).length, 11, 'until: everything received before');

    // Keyset paging: newest first, no row twice, none left out, a last page without a cursor.
    const whole = await all('&service_id=810');
    t.equal(whole.length, 10);
    for (let i = 1; i < whole.length; i++) {
      const [p, c] = [whole[i - 1], whole[i]];
      t.ok(p.received_at > c.received_at || (p.received_at === c.received_at && p.id > c.id), 'ordered newest first');
    }
    const paged: any[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res: { status: number; body: any } = await s.req('GET', `/api/v1/flows?service_id=810&limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      t.equal(res.status, 200, JSON.stringify(res.body));
      paged.push(...res.body.items);
      cursor = res.body.next_cursor;
      pages++;
    } while (cursor !== null && pages < 10);
    t.equal(pages, 4, '10 rows at 3 a page');
    t.same(paged.map((r) => r.id), whole.map((r) => r.id), 'the pages are the whole log in order');
    t.equal((await s.req('GET', '/api/v1/flows')).body.items.length, 11, 'limit defaults to 100');

    // Bad and SQL-ish parameters: 400 naming the parameter; the log is untouched.
    const badQueries: Array<[string, string]> = [
      ['limit=0', 'limit'],
      ['limit=1001', 'limit'],
      ['limit=ten', 'limit'],
      ['since=yesterday', 'since'],
      ['until=2026-13-40T99:00:00Z', 'until'],
      [`since=${later}&until=2000-01-01T00:00:00Z`, 'until'],
      ['verdict=denied', 'verdict'],
      ['direction=up', 'direction'],
      ['machine=web-1', 'machine'],
      ['service_id=-1', 'service_id'],
      ['service_id=99999999999', 'service_id'],
      ['cursor=garbage!', 'cursor'],
      [`cursor=${Buffer.from('{"id":1}').toString('base64url')}`, 'cursor'],
      [`cursor=${Buffer.from(JSON.stringify(["2026-01-01T00:00:00.000Z' OR 1=1 --", 5])).toString('base64url')}`, 'cursor'],
      ['machine_id=x', 'machine_id'],
      ['limit=5&limit=6', 'limit'],
      [`machine=${encodeURIComponent("' OR 1=1 --")}`, 'machine'],
      [`verdict=${encodeURIComponent("dropped' OR '1'='1")}`, 'verdict'],
      [`service_id=${encodeURIComponent('810 OR 1=1')}`, 'service_id'],
      [`since=${encodeURIComponent("2026-01-01T00:00:00Z'; delete from flow_log; --")}`, 'since'],
    ];
    for (const [query, param] of badQueries) {
      const res = await s.req('GET', `/api/v1/flows?${query}`);
      t.equal(res.status, 400, `${query}: 400`);
      t.ok(res.body.error?.details?.some((d: { path: string }) => d.path === param), `${query}: names ${param}`);
    }
    t.equal((await all()).length, 11, 'the log is intact after the SQL-ish parameters');
    t.equal((await s.req('GET', '/api/v1/flows', undefined, { key: null })).status, 401, 'no key, no flows');

    // Tenancy: a key limited to one customer sees only its own machines' flows.
    const asA = await s.req('GET', '/api/v1/flows?limit=1000', undefined, { key: keyA });
    t.ok(asA.body.items.length === 10 && asA.body.items.every((r: any) => r.machine_id === a1.machineId || r.machine_id === a2.machineId), "A's key lists A's machines' rows only");
    const asB = await s.req('GET', '/api/v1/flows?limit=1000', undefined, { key: keyB });
    t.same(asB.body.items.map((r: any) => r.machine_id), [b1.machineId], "B's key lists B's machine's rows only");
    const probe = await s.req('GET', `/api/v1/flows?machine=${a1.machineId}`, undefined, { key: keyB });
    t.equal(probe.status, 404, "B's key asking for A's machine: 404");
    const unknown = await s.req('GET', '/api/v1/flows?machine=00000000-0000-4000-8000-000000000000', undefined, { key: keyB });
    t.same([unknown.status, unknown.body.error?.message], [404, probe.body.error?.message], 'the same 404 as an unknown machine');
    t.same((await s.req('GET', '/api/v1/flows?service_id=810', undefined, { key: keyB })).body.items, [], "B's key: none of service 810's rows");
    t.same((await s.req('GET', '/api/v1/seg/flows/810', undefined, { key: keyB })).body.items, [], "B's key: none of 810's denied egress");
    const bProposal = await s.req('POST', '/segment/propose', { service_id: 810, from_agents: true }, { key: keyB });
    t.same(bProposal.body.edges, [], "B's key proposes nothing from A's flows");

    // The segmenter's input: denied (dropped and would-drop) egress, TCP and UDP, summed per destination.
    t.same(
      await s.app.flowLog.deniedEgress(810, null),
      [
        { dst: '10.9.0.1', proto: 'tcp', port: 5432, count: 15 },
        { dst: '10.9.0.2', proto: 'udp', port: 53, count: 4 },
        { dst: '10.9.0.6', proto: 'tcp', port: 80, count: 1 },
        { dst: '2001:db8::1', proto: 'tcp', port: 443, count: 2 },
      ],
      'allowed, ingress, icmp and numbered protocols are no segmenter input; old and new lines sum',
    );
    const proposal = await s.req('POST', '/segment/propose', { service_id: 810, from_agents: true, max_unseen_ratio: 0 });
    t.equal(proposal.status, 200, JSON.stringify(proposal.body));
    t.same(
      proposal.body.edges.map((e: any) => `${e.dst_cidr} ${e.proto} ${e.port} ${e.flows}`).sort(),
      ['10.9.0.1/32 tcp 5432 15', '10.9.0.2/32 udp 53 4', '10.9.0.6/32 tcp 80 1', '2001:db8::1/128 tcp 443 2'],
    );
    const perMachine = await s.req('GET', '/api/v1/seg/flows/810');
    t.same(
      perMachine.body.items.map((i: any) => [i.machine_id, i.dst, i.proto, i.port, i.count]).filter((i: any[]) => i[1] === '10.9.0.1'),
      [[a1.machineId, '10.9.0.1', 'tcp', 5432, 5], [a2.machineId, '10.9.0.1', 'tcp', 5432, 10]].sort((x, y) => String(x[0]).localeCompare(String(y[0]))),
      'GET /seg/flows keeps its shape: per machine and destination',
    );
    t.ok(perMachine.body.items.every((i: any) => typeof i.last_seen_at === 'string'));
    s.clock.offsetMs += 3_600_000;
    const cut = new Date(now() - 1000).toISOString();
    t.equal(await reg.record('flows', a1.machineId, { service_id: 810, interval: interval(now() - 10_000, now()), flows: [{ ...good, count: 100, verdict: 'would-drop' }] }), null);
    t.same(await s.app.flowLog.deniedEgress(810, null, cut), [{ dst: '10.9.0.1', proto: 'tcp', port: 5432, count: 100 }], 'since: only what was received after');
    const sinceProposal = await s.req('POST', '/segment/propose', { service_id: 810, from_agents: true, since: cut });
    t.same(sinceProposal.body.edges.map((e: any) => `${e.dst_cidr} ${e.flows}`), ['10.9.0.1/32 100'], 'from_agents with since');
    const badSince = await s.req('POST', '/segment/propose', { service_id: 810, from_agents: true, since: 'last week' });
    t.same([badSince.status, badSince.body.error?.details?.[0]?.path], [400, '/since']);

    // Retention: the row cap (50) keeps the newest rows; the window (2 days) drops old ones.
    const many = Array.from({ length: 60 }, (_, i) => ({ dst: `10.10.${Math.floor(i / 250)}.${i % 250}`, proto: 'tcp', port: 9000, count: 1 }));
    t.equal(await reg.record('flows', a1.machineId, { service_id: 810, flows: many }), null);
    const total = (await all()).length;
    t.equal(total, 72);
    t.same(await s.app.flowLog.prune(), { expired: 0, over_cap: 22 }, 'the oldest rows beyond the cap are dropped');
    const kept = await all();
    t.equal(kept.length, 50);
    t.ok(kept.every((r) => r.remote.startsWith('10.10.')), 'the newest rows stay');
    t.equal(kept[kept.length - 1].remote, '10.10.0.10', 'the oldest of the newest report went first');
    s.clock.advanceDays(2.5);
    t.equal(await reg.record('flows', a1.machineId, { service_id: 810, flows: [{ ...good, count: 9 }] }), null);
    t.same(await s.app.flowLog.prune(), { expired: 50, over_cap: 0 }, 'rows older than the window are dropped');
    t.same((await all()).map((r) => r.count), [9]);
    t.same(await s.app.flowLog.deniedEgress(810, null), [{ dst: '10.9.0.1', proto: 'tcp', port: 5432, count: 9 }], 'the segmenter sees only what was kept');

    // Settings out of range stop the server at start.
    t.throws(() => loadConfig({}, { AEGIS_FLOW_RETENTION_DAYS: '0' }), /AEGIS_FLOW_RETENTION_DAYS must be an integer from 1 to 3650/);
    t.throws(() => loadConfig({}, { AEGIS_FLOW_MAX_ROWS: 'lots' }), /AEGIS_FLOW_MAX_ROWS/);
  });

  t.test('flow log over NATS: reports filed under the subject machine, foreign services and hostile reports refused', async (t) => {
    if (!requireCapability(t, missingCommand('nats-server'))) return;
    const url = await newDatabase();
    const keysDir = mkdtempSync(join(tmpdir(), 'aegis-flowlog-'));
    t.teardown(() => rmSync(keysDir, { recursive: true, force: true }));
    const authority = await NatsAuthority.open({ dir: join(keysDir, 'nats') });
    const nats = await startNats({ operatorConfig: authority.renderServerConfig() });
    t.teardown(() => nats.stop());
    const s = await startTestServer({ keysDir, natsUrl: nats.url, natsOperatorConfig: nats.operatorConfigPath, ...(url === undefined ? {} : { databaseUrl: url }) });
    t.teardown(() => s.close());
    async function machine(name: string): Promise<ActivatedHost & { nc: NatsConnection }> {
      const c = await s.req('POST', '/api/v1/customers', { name: `Customer ${name}` });
      const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
      const host = new TestHost(name);
      const a = await s.req('POST', '/api/v1/activations', host.activation(l.body.license_key), { key: null });
      if (a.status !== 201 || !a.body.nats?.creds) throw new Error(`activation: ${a.status} ${JSON.stringify(a.body)}`);
      const nc = await natsConnect({ servers: nats.url, authenticator: credsAuthenticator(new TextEncoder().encode(a.body.nats.creds)), inboxPrefix: subjects.inboxPrefix(a.body.machine_id) });
      t.teardown(() => nc.close().catch(() => undefined));
      return { host, machineId: a.body.machine_id, licenseKey: l.body.license_key, customerId: c.body.id, nc };
    }
    const a = await machine('nats-flow-a');
    const b = await machine('nats-flow-b');
    t.equal((await s.req('POST', `/seg/maps?target_machine=${a.machineId}`, snap(830))).status, 200);
    const keyB = (await s.app.apiKeys.create('nats-flows-b', [...SCOPES], b.customerId)).key;
    const publish = async (m: { nc: NatsConnection; machineId: string }, report: unknown) => {
      m.nc.publish(subjects.agentFlows(m.machineId), sc.encode(JSON.stringify(report)));
      await m.nc.flush();
    };
    const rows = async (query: string) => (await s.req('GET', `/api/v1/flows?limit=1000&${query}`)).body.items as any[];
    const at = () => s.clock.now().getTime();

    // B, whose machine 830 is not targeted at, reports for it on its own subject; A reports a
    // hostile report (good lines, then a count of zero); then A's genuine reports, new and old.
    await publish(b, { service_id: 830, flows: [{ dst: '203.0.113.9', proto: 'tcp', port: 22, count: 1000 }] });
    await publish(a, { service_id: 830, flows: [{ dst: '10.9.9.1', proto: 'tcp', port: 443, count: 5 }, { dst: '10.9.9.2', proto: 'tcp', port: 443, count: 0 }] });
    await publish(a, {
      service_id: 830,
      revision: 1,
      interval: { start: new Date(at() - 30_000).toISOString(), end: new Date(at()).toISOString() },
      flows: [{ dst: '10.9.9.3', proto: 'udp', port: 53, count: 2, verdict: 'would-drop', direction: 'egress', rule: null, reason: 'policy' }],
      sent_at: new Date(at()).toISOString(),
    });
    await publish(a, { host: 'nats-flow-a', service_id: 830, flows: [{ dst: '10.9.9.4', proto: 'tcp', port: 5432, count: 3 }], sent_at: new Date(at()).toISOString() });
    await eventually('both genuine reports are in the log', async () => (await rows('service_id=830')).length === 2, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const got = await rows('service_id=830');
    t.same(got.map((r) => [r.machine_id, r.remote, r.verdict, r.count]).sort(), [
      [a.machineId, '10.9.9.3', 'would-drop', 2],
      [a.machineId, '10.9.9.4', 'dropped', 3],
    ], "new and old format kept under the subject's machine; nothing of B's or of the hostile report");
    t.same(await rows(`machine=${b.machineId}`), [], 'nothing filed under B');
    t.equal((await s.req('GET', `/api/v1/flows?machine=${a.machineId}`, undefined, { key: keyB })).status, 404, "B's restricted key cannot read A's machine");
    t.same((await s.req('GET', '/api/v1/flows', undefined, { key: keyB })).body.items, [], "B's restricted key lists none of A's rows");
  });
}
