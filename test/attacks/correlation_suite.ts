/**
 * The correlator against a real aegis-server (correlation_sqlite.test.ts,
 * correlation_postgres.test.ts): telemetry through the agent route with host-proof tokens,
 * flow reports through the agent registry's ingest (what NATS delivers), findings written
 * as the matcher writes them; rules through POST /api/v1/rules and from AEGIS_RULES_DIR
 * (YAML); passes run with the server's movable clock. Each rule type fires exactly at its
 * threshold, group-by separates machines, old events fall out of the window,
 * temporal_ordered respects order, the exposed-critical + egress-burst rule fires; attacks:
 * malformed JSON and YAML, unknown fields, absurd timespans, huge bodies, restricted keys.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { Kysely } from 'kysely';
import { AGENT_API, AUD_AGENT_TOKEN_PROOF } from '../../protocol/src/index.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { openDatabase } from '../../server/src/db/database.js';
import { migratorFor } from '../../server/src/db/migrations.js';
import { activateTestHost, startTestServer, type ActivatedHost, type TestServer } from '../harness/server.js';

const snap = (service_id: number) => ({ version: 1, service_id, edges: [{ dst_cidr: '10.9.0.0/24', proto: 'tcp', port: 443 }], ttl_seconds: 900 });

const FILE_RULE = `# loaded at start
id: file-threats
title: Two threats from a file rule
type: event_count
rules:
  - source: threat
group-by: [machine_id]
timespan: 1h
condition: {gte: 2}
level: high
`;

export function correlationSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let dir: string;
  let s: TestServer;
  let A1: ActivatedHost;
  let A2: ActivatedHost;
  let B1: ActivatedHost;
  let keyA: string;

  t.before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-corr-'));
    const rulesDir = join(dir, 'rules');
    mkdirSync(rulesDir, { recursive: true });
    writeFileSync(join(rulesDir, 'threats.yaml'), FILE_RULE);
    s = await startTestServer({ databaseUrl: await newDatabase(), env: { AEGIS_RULES_DIR: rulesDir, AEGIS_RULES_INTERVAL_SECONDS: '3600' } });
    A1 = await activateTestHost(s, 'corr-a1');
    A2 = await activateTestHost(s, 'corr-a2', { licenseKey: A1.licenseKey, customerId: A1.customerId });
    B1 = await activateTestHost(s, 'corr-b1');
    const r = await s.req('POST', `/seg/maps?target_machine=${A1.machineId},${A2.machineId},${B1.machineId}`, snap(910));
    if (r.status !== 200) throw new Error(`seg map: ${r.status}`);
    keyA = (await s.app.apiKeys.create('corr-a', [...SCOPES], A1.customerId)).key;
  });
  t.teardown(async () => {
    await s?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const iso = () => s.clock.now().toISOString();
  /** Telemetry through the agent route; `agoMs` back-dates the host timestamp (the proof needs the real clock). */
  const telemetry = async (h: ActivatedHost, kind: string, n = 1, agoMs = 0) => {
    const tok = await s.req('POST', AGENT_API.token, { machine_id: h.machineId, proof: h.host.proof(AUD_AGENT_TOKEN_PROOF), scope: ['telemetry'] }, { key: null });
    const at = new Date(s.clock.now().getTime() - agoMs).toISOString();
    const events = Array.from({ length: n }, () => ({ kind, at }));
    const r = await s.req('POST', AGENT_API.telemetry, { events }, { key: null, headers: { authorization: `Bearer ${tok.body.access_token}` } });
    if (r.status >= 300) throw new Error(`telemetry: ${r.status} ${JSON.stringify(r.body)}`);
  };
  const flows = async (h: ActivatedHost, remotes: string[], verdict = 'dropped') => {
    const err = await s.app.agents.record('flows', h.machineId, {
      service_id: 910,
      flows: remotes.map((dst) => ({ dst, proto: 'tcp', port: 443, count: 1, verdict, direction: 'egress' })),
      sent_at: iso(),
    });
    if (err !== null) throw new Error(`flows: ${err}`);
  };
  const finding = async (h: ActivatedHost, severity: string, exposed: boolean, advisory: string) => {
    const db = (s.app as unknown as { ctx: { db: Kysely<any> } }).ctx.db;
    await db
      .insertInto('findings')
      .values({ machine_id: h.machineId, advisory_id: advisory, package: 'openssh-server', architecture: 'amd64', version: '1', source: 'openssh', source_version: '1', fixed_version: '2', severity, severity_level: severity, exposed: exposed ? 1 : 0, sockets: '[]', first_seen_at: iso() })
      .execute();
  };
  const addRule = (rule: unknown, key?: string) => s.req('POST', '/api/v1/rules', rule, key ? { key } : {});
  const alerts = async (q = '', key?: string) => {
    const r = await s.req('GET', `/api/v1/alerts${q}`, undefined, key ? { key } : {});
    if (r.status !== 200) throw new Error(`alerts: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.items as any[];
  };
  const count = async (rule: string) => (await alerts(`?rule=${rule}`)).length;

  t.test('0017_rules_alerts goes up and down', async (t) => {
    const mdir = mkdtempSync(join(tmpdir(), 'aegis-corrmig-'));
    t.teardown(() => rmSync(mdir, { recursive: true, force: true }));
    const { db, dialect } = openDatabase((await newDatabase()) ?? `sqlite:${join(mdir, 'aegis.db')}`);
    t.teardown(() => db.destroy());
    const m = migratorFor(db, dialect);
    t.notOk((await m.migrateToLatest()).error);
    const names = (await m.getMigrations()).map((x) => x.name);
    const at = names.indexOf('0017_rules_alerts');
    t.ok(at > 0, 'a migration');
    t.notOk((await m.migrateTo(names[at - 1]!)).error, 'down');
    const raw = db as unknown as Kysely<any>;
    await t.rejects(raw.selectFrom('alerts').selectAll().execute(), 'the alerts table is gone');
    t.notOk((await m.migrateToLatest()).error, 'up again');
    t.same(await raw.selectFrom('correlation_rules').selectAll().execute(), [], 'empty after a fresh up');
  });

  t.test('rule files from AEGIS_RULES_DIR (YAML) are loaded and fire', async (t) => {
    const list = (await s.req('GET', '/api/v1/rules')).body.items as any[];
    const f = list.find((x) => x.rule.id === 'file-threats');
    t.same([f?.origin, f?.rule.condition], ['file', { gte: 2 }], 'the YAML rule is listed as a file rule');
    t.equal((await s.req('DELETE', '/api/v1/rules/file-threats')).status, 409, 'a file rule is not deleted through the API');
  });

  t.test('event_count fires at its threshold, per machine, once per window; old events fall out', async (t) => {
    t.equal((await addRule({ id: 'ec-login', title: 'Three failed logins', type: 'event_count', rules: [{ source: 'telemetry', kind: 'login_failed' }], 'group-by': ['machine_id'], timespan: '5m', condition: { gte: 3 }, level: 'medium' })).status, 201);
    await telemetry(A1, 'login_failed', 2);
    // A2: two six minutes ago (outside the 5m window) and one now.
    await telemetry(A2, 'login_failed', 2, 6 * 60_000);
    await telemetry(A2, 'login_failed', 1);
    await telemetry(A1, 'other', 5);
    await s.app.correlator.evaluate();
    t.equal(await count('ec-login'), 0, 'two events: below the threshold');
    await telemetry(A1, 'login_failed', 1);
    await s.app.correlator.evaluate();
    const [a] = await alerts('?rule=ec-login');
    t.same([a?.machine_id, a?.group, a?.evidence.counts, a?.level], [A1.machineId, { machine_id: A1.machineId }, [3], 'medium'], 'three on A1: fires for A1 only (A2 has one in the window)');
    t.equal(a.evidence.refs.length, 3, 'evidence names the three events');
    await telemetry(A1, 'login_failed', 1);
    await s.app.correlator.evaluate();
    t.equal(await count('ec-login'), 1, 'the same rule and machine within the window: no second alert');
    t.equal((await alerts(`?rule=ec-login&machine=${A2.machineId}`)).length, 0, 'events older than the timespan do not count');
  });

  t.test('value_count fires at more than N distinct values, not at N', async (t) => {
    t.equal((await addRule({ id: 'vc-scan', title: 'Denied egress to many hosts', type: 'value_count', rules: [{ source: 'flow', verdict: 'deny', direction: 'egress' }], 'group-by': ['machine_id'], timespan: '10m', condition: { gt: 3, field: 'remote' }, level: 'high' })).status, 201);
    await flows(B1, ['10.9.0.1', '10.9.0.2', '10.9.0.3', '10.9.0.3', '10.9.0.1']);
    await flows(B1, ['10.9.0.4', '10.9.0.5'], 'allowed');
    await s.app.correlator.evaluate();
    t.equal(await count('vc-scan'), 0, 'three distinct denied destinations (allowed ones do not count)');
    await flows(B1, ['10.9.0.4']);
    await s.app.correlator.evaluate();
    const [a] = await alerts('?rule=vc-scan');
    t.equal(a?.machine_id, B1.machineId, 'the fourth distinct destination fires');
  });

  t.test('temporal_ordered respects order; temporal does not', async (t) => {
    t.equal((await addRule({ id: 'to-chain', title: 'Recon then exfil', type: 'temporal_ordered', rules: [{ source: 'telemetry', kind: 'recon' }, { source: 'telemetry', kind: 'exfil' }], 'group-by': ['machine_id'], timespan: '10m', level: 'high' })).status, 201);
    t.equal((await addRule({ id: 'tu-chain', title: 'Recon and exfil', type: 'temporal', rules: [{ source: 'telemetry', kind: 'recon' }, { source: 'telemetry', kind: 'exfil' }], 'group-by': ['machine_id'], timespan: '10m', level: 'high' })).status, 201);
    await telemetry(B1, 'exfil', 1, 2000);
    await telemetry(B1, 'recon', 1, 1000);
    await s.app.correlator.evaluate();
    t.equal(await count('to-chain'), 0, 'exfil before recon: the ordered rule does not fire');
    t.equal(await count('tu-chain'), 1, 'the unordered rule does');
    await telemetry(B1, 'exfil');
    await s.app.correlator.evaluate();
    t.equal(await count('to-chain'), 1, 'recon then exfil: fires');
  });

  t.test('critical exposed finding and denied egress to more than 20 destinations in 10 minutes', async (t) => {
    const rule = {
      id: 'exposed-critical-egress-burst',
      title: 'Critical exposed finding and egress burst',
      type: 'temporal',
      rules: [
        { source: 'finding', severity: 'critical', exposed: true },
        { source: 'flow', verdict: 'deny', direction: 'egress', condition: { gt: 20, field: 'remote' } },
      ],
      'group-by': ['machine_id'],
      timespan: '10m',
      level: 'critical',
    };
    t.equal((await addRule(rule)).status, 201);
    s.clock.offsetMs += 11 * 60_000; // earlier flows out of the window
    await finding(A2, 'critical', true, 'DEBIAN-CVE-2024-0001');
    await finding(A1, 'critical', false, 'DEBIAN-CVE-2024-0002');
    const hosts = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `10.9.0.${from + i + 1}`);
    await flows(A2, hosts(20));
    await flows(A1, hosts(25));
    await s.app.correlator.evaluate();
    t.equal(await count(rule.id), 0, 'twenty destinations (and A1: not exposed): no alert');
    await flows(A2, hosts(1, 20));
    await s.app.correlator.evaluate();
    const [a] = await alerts(`?rule=${rule.id}`);
    t.same([a?.machine_id, a?.level, a?.evidence.counts], [A2.machineId, 'critical', [1, 21]], 'the 21st destination fires on the exposed machine');
  });

  t.test('attacks: malformed and hostile rules are refused, nothing stored', async (t) => {
    const before = ((await s.req('GET', '/api/v1/rules')).body.items as any[]).length;
    const good = { id: 'x-good', title: 'x', type: 'event_count', rules: [{ source: 'threat' }], 'group-by': ['machine_id'], timespan: '10m', condition: { gt: 1 }, level: 'low' };
    const raw = await fetch(`${s.url}/api/v1/rules`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${s.adminKey}` }, body: '{"id": "x", ' });
    t.equal(raw.status, 400, 'malformed JSON: 400');
    const cases: [string, unknown, string][] = [
      ['unknown top-level field', { ...good, actions: ['quarantine'] }, 'actions'],
      ['unknown selector field', { ...good, rules: [{ source: 'flow', colour: 'red' }] }, 'colour'],
      ['unknown source', { ...good, rules: [{ source: 'dns' }] }, 'source'],
      ['absurd timespan', { ...good, timespan: '9999999d' }, 'timespan'],
      ['zero timespan', { ...good, timespan: '0s' }, 'timespan'],
      ['timespan over a week', { ...good, timespan: '8d' }, 'timespan'],
      ['two operators', { ...good, condition: { gt: 1, lt: 5 } }, 'condition'],
      ['value_count without a field', { ...good, type: 'value_count' }, 'field'],
      ['value_count over an unknown field', { ...good, type: 'value_count', rules: [{ source: 'flow' }], condition: { gt: 1, field: 'colour' } }, 'field'],
      ['temporal with one selector', { ...good, type: 'temporal', condition: undefined }, 'rules'],
      ['temporal selector with lt', { ...good, type: 'temporal', condition: undefined, rules: [{ source: 'threat', condition: { lt: 2 } }, { source: 'telemetry' }] }, 'condition'],
      ['group-by without machine_id', { ...good, 'group-by': ['customer_id'] }, 'group-by'],
      ['negative threshold', { ...good, condition: { gt: -1 } }, 'condition'],
      ['too many selectors', { ...good, rules: Array.from({ length: 11 }, () => ({ source: 'threat' })) }, 'rules'],
      ['bad id', { ...good, id: '../etc' }, 'id'],
    ];
    for (const [name, body, names] of cases) {
      const r = await addRule(JSON.parse(JSON.stringify(body)));
      t.equal(r.status, 400, `${name}: 400`);
      t.match(JSON.stringify(r.body.error), names, `${name}: the error names ${names}`);
    }
    const huge = await addRule({ ...good, description: 'x'.repeat(64 * 1024) });
    t.equal(huge.status, 413, 'a huge rule body: 413');
    t.equal(((await s.req('GET', '/api/v1/rules')).body.items as any[]).length, before, 'nothing stored');
    t.equal((await addRule(good)).status, 201);
    t.equal((await addRule(good)).status, 409, 'the same id twice: CONFLICT');
    t.equal((await s.req('DELETE', '/api/v1/rules/x-good')).status, 200);
    t.equal((await s.req('DELETE', '/api/v1/rules/x-good')).status, 404, 'deleted once');
  });

  t.test('attacks: a malformed YAML rule file stops the start, naming the file', async (t) => {
    const bad = join(dir, 'bad-rules');
    mkdirSync(bad, { recursive: true });
    writeFileSync(join(bad, 'broken.yml'), 'id: [unclosed\n  title: x: y:\n');
    await t.rejects(startTestServer({ databaseUrl: await newDatabase(), env: { AEGIS_RULES_DIR: bad } }), /broken\.yml/);
    writeFileSync(join(bad, 'broken.yml'), FILE_RULE + 'quarantine: true\n');
    await t.rejects(startTestServer({ databaseUrl: await newDatabase(), env: { AEGIS_RULES_DIR: bad } }), /quarantine/);
  });

  t.test('tenancy: restricted keys see their alerts only and cannot change global rules', async (t) => {
    const mine = await alerts('', keyA);
    t.ok(mine.length > 0, 'customer A sees its alerts');
    t.ok(mine.every((a) => a.customer_id === A1.customerId), 'and only its own');
    t.ok((await alerts('')).some((a) => a.machine_id === B1.machineId), 'the unrestricted key sees B\'s');
    const foreign = await s.req('GET', `/api/v1/alerts?machine=${B1.machineId}`, undefined, { key: keyA });
    t.equal(foreign.status, 404, 'another customer\'s machine: 404');
    const add = await addRule({ id: 'a-rule', title: 'x', type: 'event_count', rules: [{ source: 'threat' }], 'group-by': ['machine_id'], timespan: '10m', condition: { gt: 1 }, level: 'low' }, keyA);
    t.equal(add.status, 403, 'a restricted key cannot add a global rule');
    t.equal((await s.req('DELETE', '/api/v1/rules/ec-login', undefined, { key: keyA })).status, 403, 'nor delete one');
    t.equal((await s.req('GET', '/api/v1/alerts?colour=red')).status, 400, 'unknown parameter: 400');
  });
}
