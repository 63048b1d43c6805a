/**
 * Decisions against a real aegis-server (decisions_sqlite.test.ts, decisions_postgres.test.ts):
 * rules with an action fire on findings written as the matcher writes them; acks and flow
 * reports go through the agent registry's ingest (what NATS delivers); the correlator and
 * the decision pass run with the server's movable clock. Approve and reject flows, the
 * guard rails of `mode: auto` (fleet share, no-ack and error rollbacks, drops outside the
 * intent), tenancy attacks and hostile rule actions.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { Kysely } from 'kysely';
import { SCOPES } from '../../server/src/api_keys.js';
import { openDatabase } from '../../server/src/db/database.js';
import { migratorFor } from '../../server/src/db/migrations.js';
import { activateTestHost, startTestServer, type ActivatedHost, type TestServer } from '../harness/server.js';

const SERVICE = 920;
const CANARY_SECONDS = 60;
const MGMT = { cidr: '10.77.0.0/24', proto: 'tcp', port: 22 };

export function decisionsSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let dir: string;
  let s: TestServer;
  const A: ActivatedHost[] = [];
  let B1: ActivatedHost;
  let keyA: string;
  let readOnly: string;
  let db: Kysely<any>;

  t.before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-dec-'));
    s = await startTestServer({
      databaseUrl: await newDatabase(),
      env: {
        AEGIS_RULES_INTERVAL_SECONDS: '3600',
        AEGIS_DECISION_INTERVAL_SECONDS: '3600',
        AEGIS_DECISION_CANARY_SECONDS: String(CANARY_SECONDS),
        AEGIS_DECISION_MAX_FLEET_SHARE: '0.1',
        AEGIS_WEBHOOK_ALLOW_HTTP: '1',
        AEGIS_WEBHOOK_ALLOW_LOOPBACK: '1',
        AEGIS_WEBHOOK_POLL_MS: '3600000',
      },
    });
    db = (s.app as unknown as { ctx: { db: Kysely<any> } }).ctx.db;
    // Customer A: ten machines (a share of 0.1 is one at once); customer B: one.
    A.push(await activateTestHost(s, 'dec-a0'));
    for (let i = 1; i < 10; i++) A.push(await activateTestHost(s, `dec-a${i}`, { licenseKey: A[0]!.licenseKey, customerId: A[0]!.customerId }));
    B1 = await activateTestHost(s, 'dec-b1');
    const all = [...A, B1].map((h) => h.machineId).join(',');
    const r = await s.req('POST', `/seg/maps?target_machine=${all}&stage=enforce`, { version: 1, service_id: SERVICE, edges: [{ dst_cidr: '10.9.0.0/24', proto: 'tcp', port: 443 }], ttl_seconds: 900 });
    if (r.status !== 200) throw new Error(`seg map: ${r.status} ${JSON.stringify(r.body)}`);
    keyA = (await s.app.apiKeys.create('dec-a', [...SCOPES], A[0]!.customerId)).key;
    readOnly = (await s.app.apiKeys.create('dec-ro', ['decisions:read'])).key;
    const hook = await s.req('POST', '/api/v1/webhook-endpoints', { url: 'http://127.0.0.1:9/hook', events: ['decision.proposed', 'decision.promoted', 'decision.rolled_back'] });
    if (hook.status !== 201) throw new Error(`webhook: ${hook.status} ${JSON.stringify(hook.body)}`);
  });
  t.teardown(async () => {
    await s?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const iso = () => s.clock.now().toISOString();
  const finding = async (h: ActivatedHost, advisory: string) => {
    await db
      .insertInto('findings')
      .values({ machine_id: h.machineId, advisory_id: advisory, package: 'openssh-server', architecture: 'amd64', version: '1', source: 'openssh', source_version: '1', fixed_version: '2', severity: 'critical', severity_level: 'critical', exposed: 1, sockets: '[]', first_seen_at: iso() })
      .execute();
  };
  const rule = (id: string, advisory: string, action: unknown, mode?: string) => ({
    id,
    title: `Decision test ${id}`,
    type: 'event_count',
    rules: [{ source: 'finding', advisory }],
    'group-by': ['machine_id'],
    timespan: '1m',
    condition: { gte: 1 },
    level: 'critical',
    action,
    ...(mode ? { mode } : {}),
  });
  /** Added for one test and deleted when it ends (findings stand: a rule left behind would fire again). */
  const addRule = async (body: { id: string }, t: Test) => {
    const r = await s.req('POST', '/api/v1/rules', body);
    if (r.status !== 201) throw new Error(`rule: ${r.status} ${JSON.stringify(r.body)}`);
    t.teardown(async () => {
      await s.req('DELETE', `/api/v1/rules/${body.id}`);
    });
  };
  const decisions = async (q = '', key?: string) => {
    const r = await s.req('GET', `/api/v1/decisions${q}`, undefined, key ? { key } : {});
    if (r.status !== 200) throw new Error(`decisions: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.items as any[];
  };
  const ack = async (h: ActivatedHost, revision: number, ok = true, error: string | null = null) => {
    const err = await s.app.agents.record('ack', h.machineId, { host: 'x', service_id: SERVICE, revision, stage: 'canary', mode: 'observe', ok, error, applied_at: iso() });
    if (err !== null) throw new Error(`ack: ${err}`);
  };
  const wouldDrop = async (h: ActivatedHost, revision: number, dst: string, port: number, direction = 'egress') => {
    const err = await s.app.agents.record('flows', h.machineId, { host: 'x', service_id: SERVICE, revision, flows: [{ dst, proto: 'tcp', port, count: 3, verdict: 'would-drop', direction }], sent_at: iso() });
    if (err !== null) throw new Error(`flows: ${err}`);
  };
  const audits = async (id: number) =>
    (await db.selectFrom('audit_logs').select(['event_type', 'event_data']).orderBy('id').execute()).filter((r: any) => JSON.parse(r.event_data).decision_id === id).map((r: any) => r.event_type as string);
  const revision = async (rev: number) => ((await s.req('GET', `/seg/maps/${SERVICE}`)).body.revisions as any[]).find((r) => r.revision === rev);
  const pastWindow = () => {
    s.clock.offsetMs += (CANARY_SECONDS + 1) * 1000;
  };

  t.test('0018_decisions goes up and down', async (t) => {
    const mdir = mkdtempSync(join(tmpdir(), 'aegis-decmig-'));
    t.teardown(() => rmSync(mdir, { recursive: true, force: true }));
    const { db: mdb, dialect } = openDatabase((await newDatabase()) ?? `sqlite:${join(mdir, 'aegis.db')}`);
    t.teardown(() => mdb.destroy());
    const m = migratorFor(mdb, dialect);
    t.notOk((await m.migrateToLatest()).error);
    const names = (await m.getMigrations()).map((x) => x.name);
    const at = names.indexOf('0018_decisions');
    t.ok(at > 0, 'a migration');
    t.notOk((await m.migrateTo(names[at - 1]!)).error, 'down');
    const raw = mdb as unknown as Kysely<any>;
    await t.rejects(raw.selectFrom('decisions').selectAll().execute(), 'the decisions table is gone');
    t.notOk((await m.migrateToLatest()).error, 'up again');
    t.same(await raw.selectFrom('decisions').selectAll().execute(), [], 'empty after a fresh up');
  });

  t.test('propose: approve → canary (targeted at the machine) → promoted by the guard rails; reject rolls back', async (t) => {
    await addRule(rule('q-propose', 'ADV-PROPOSE', { type: 'quarantine', allow: [MGMT] }), t);
    const h = A[1]!;
    const before = (await s.req('GET', `/seg/maps/${SERVICE}`)).body.revisions[0].revision as number;
    await finding(h, 'ADV-PROPOSE');
    t.equal(await s.app.correlator.evaluate(), 1, 'an alert');
    const [d] = await decisions('?rule=q-propose');
    t.match(d, { machine_id: h.machineId, customer_id: h.customerId, state: 'proposed', mode: 'propose', action: { type: 'quarantine', allow: [{ ...MGMT, direction: 'both' }] }, revisions: [] });
    t.ok(d.evidence.refs.some((r: string) => r.includes('ADV-PROPOSE')), 'the evidence names the finding');
    t.equal(d.evidence.alert.level, 'critical');
    t.equal((await revision(before + 1)), undefined, 'nothing submitted while proposed');

    // The same rule and machine while the decision is open: a second alert, no second decision.
    s.clock.offsetMs += 61_000;
    t.equal(await s.app.correlator.evaluate(), 1, 'a second alert after the window');
    t.equal((await decisions('?rule=q-propose')).length, 1, 'still one open decision per rule and machine');

    const ap = await s.req('POST', `/api/v1/decisions/${d.id}/approve`, {});
    t.equal(ap.status, 200, JSON.stringify(ap.body));
    t.equal(ap.body.state, 'canary');
    const [rv] = ap.body.revisions;
    t.same([rv.service_id, rv.prior_revision, rv.restored_by], [SERVICE, before, null], 'one revision for the service, and what it replaces');
    const canary = await revision(rv.revision);
    t.same([canary.stage, canary.targets], ['canary', [h.machineId]], 'always a canary first, targeted at that machine only');
    t.same(canary.snapshot.edges, [{ dst_cidr: MGMT.cidr, proto: 'tcp', port: 22 }], 'egress: the management edge only');
    t.same(canary.snapshot.allow_cidrs, [{ cidr: MGMT.cidr, proto: 'tcp', port: 22 }], 'ingress: the management edge only');
    t.equal((await s.req('POST', `/api/v1/decisions/${d.id}/approve`, { force: true })).status, 400, 'unknown body fields are refused');

    await ack(h, rv.revision);
    await s.app.decisions.advance();
    t.equal((await s.req('GET', `/api/v1/decisions/${d.id}`)).body.state, 'canary', 'acked, but the window is not over');
    await wouldDrop(h, rv.revision, '10.9.0.7', 443); // not a management edge: the intent
    pastWindow();
    await s.app.decisions.advance();
    const promoted = (await s.req('GET', `/api/v1/decisions/${d.id}`)).body;
    t.equal(promoted.state, 'promoted', promoted.reason);
    t.equal((await revision(rv.revision)).stage, 'enforce', 'the same revision, now enforced');

    const rj = await s.req('POST', `/api/v1/decisions/${d.id}/reject`, { reason: 'false positive' });
    t.equal(rj.status, 200, JSON.stringify(rj.body));
    t.same([rj.body.state, rj.body.reason], ['rolled_back', 'false positive']);
    const restored = await revision(rj.body.revisions[0].restored_by);
    t.same([restored.restores_revision, restored.targets, restored.stage], [before, [h.machineId], 'enforce'], 'what the machine ran before, as a new revision for it only');
    t.equal((await s.req('POST', `/api/v1/decisions/${d.id}/reject`, {})).status, 409, 'rolled back once');
    t.equal((await s.req('POST', `/api/v1/decisions/${d.id}/approve`, {})).status, 409, 'a closed decision is not approved');
    t.same(await audits(d.id), ['decision.proposed', 'decision.approved', 'decision.canary', 'decision.promoted', 'decision.rolled_back'], 'every transition audited');
    const hooks = (await db.selectFrom('webhook_deliveries').select('event_type').execute()).map((r: any) => r.event_type);
    for (const e of ['decision.proposed', 'decision.promoted', 'decision.rolled_back']) t.ok(hooks.includes(e), `webhook ${e} queued`);
  });

  t.test('propose: reject of a proposed decision closes it; nothing is submitted', async (t) => {
    await addRule(rule('q-reject', 'ADV-REJECT', { type: 'quarantine', allow: [] }), t);
    await finding(A[2]!, 'ADV-REJECT');
    await s.app.correlator.evaluate();
    const [d] = await decisions('?rule=q-reject');
    const rj = await s.req('POST', `/api/v1/decisions/${d.id}/reject`);
    t.same([rj.status, rj.body.state, rj.body.revisions], [200, 'rejected', []]);
    t.equal(rj.body.decided_by, 'api_key:test-admin');
    t.equal((await decisions(`?rule=q-reject&state=rejected`)).length, 1, 'listed by state');
  });

  t.test('auto: the fleet share holds the second machine; no ack in the window rolls back; the held one then starts', async (t) => {
    await addRule(rule('q-auto', 'ADV-AUTO', { type: 'quarantine', allow: [MGMT] }, 'auto'), t);
    await finding(A[3]!, 'ADV-AUTO');
    await finding(A[4]!, 'ADV-AUTO');
    await s.app.correlator.evaluate();
    const ds = await decisions('?rule=q-auto');
    t.equal(ds.length, 2);
    const running = ds.find((d) => d.state === 'canary');
    const held = ds.find((d) => d.state === 'proposed');
    t.ok(running && held, 'one canary, one held (ten machines, share 0.1: one at once)');
    t.match(held.reason, /AEGIS_DECISION_MAX_FLEET_SHARE/, 'the held one says why');
    t.equal(running.decided_by, 'guard-rails');
    await s.app.decisions.advance();
    t.equal((await s.req('GET', `/api/v1/decisions/${held.id}`)).body.state, 'proposed', 'still held while the other acts');
    pastWindow();
    await s.app.decisions.advance();
    const rolled = (await s.req('GET', `/api/v1/decisions/${running.id}`)).body;
    t.equal(rolled.state, 'rolled_back', 'no ack within the window: rolled back');
    t.match(rolled.reason, /no ack within/);
    t.ok(rolled.revisions[0].restored_by > rolled.revisions[0].revision, 'restored by a newer revision');
    t.ok((await audits(running.id)).includes('decision.rolled_back'));
    t.ok((await audits(held.id)).includes('decision.held'), 'holding is audited');
    await s.app.decisions.advance();
    t.equal((await s.req('GET', `/api/v1/decisions/${held.id}`)).body.state, 'canary', 'the share is free again: the held decision starts');
    const again = (await s.req('GET', `/api/v1/decisions/${held.id}`)).body;
    await ack(A[4]!, again.revisions[0].revision, false, 'bpf map update failed: E2BIG');
    await s.app.decisions.advance();
    const err = (await s.req('GET', `/api/v1/decisions/${held.id}`)).body;
    t.equal(err.state, 'rolled_back', 'an error ack rolls back at once, window or not');
    t.match(err.reason, /E2BIG/);
  });

  t.test('auto: a would-drop on a management edge is outside the quarantine\'s intent → failed, rolled back', async (t) => {
    await addRule(rule('q-intent', 'ADV-INTENT', { type: 'quarantine', allow: [{ ...MGMT, direction: 'egress' }] }, 'auto'), t);
    await finding(A[5]!, 'ADV-INTENT');
    await s.app.correlator.evaluate();
    const [d] = await decisions('?rule=q-intent');
    t.equal(d.state, 'canary');
    const rev = d.revisions[0].revision;
    await ack(A[5]!, rev);
    await wouldDrop(A[5]!, rev, '10.77.0.9', 22); // the management edge, yet it would have dropped
    pastWindow();
    await s.app.decisions.advance();
    const f = (await s.req('GET', `/api/v1/decisions/${d.id}`)).body;
    t.equal(f.state, 'failed');
    t.match(f.reason, /outside the action's intent.*10\.77\.0\.9/);
    t.ok(f.revisions[0].restored_by, 'rolled back');
    t.equal((await revision(rev)).stage, 'canary', 'never promoted');
  });

  t.test('tighten: the proposal from observed flows; a would-drop of a flow seen in the window fails it', async (t) => {
    const h = A[6]!;
    const flow = async (dst: string, verdict: string, rev: number | null) => {
      const err = await s.app.agents.record('flows', h.machineId, { host: 'x', service_id: SERVICE, revision: rev, flows: [{ dst, proto: 'tcp', port: 5432, count: 2, verdict, direction: 'egress' }], sent_at: iso() });
      if (err !== null) throw new Error(err);
    };
    await flow('10.5.0.10', 'allowed', null);
    await addRule(rule('t-auto', 'ADV-TIGHTEN', { type: 'tighten', service_id: SERVICE }, 'auto'), t);
    await finding(h, 'ADV-TIGHTEN');
    await s.app.correlator.evaluate();
    const [d] = await decisions('?rule=t-auto');
    t.equal(d.state, 'canary', d.reason ?? '');
    const snap = (await revision(d.revisions[0].revision)).snapshot;
    t.same(snap.edges, [{ dst_cidr: '10.5.0.10/32', proto: 'tcp', port: 5432 }], 'the segmenter\'s proposal: what the machine was seen doing');
    await ack(h, d.revisions[0].revision);
    await flow('10.5.0.99', 'allowed', null); // seen in the window...
    await wouldDrop(h, d.revisions[0].revision, '10.5.0.99', 5432); // ...and the canary would drop it
    pastWindow();
    await s.app.decisions.advance();
    const f = (await s.req('GET', `/api/v1/decisions/${d.id}`)).body;
    t.equal(f.state, 'failed');
    t.match(f.reason, /10\.5\.0\.99/);
  });

  t.test('propose: approving a canary promotes it at once; not when a target reported an error', async (t) => {
    await addRule(rule('q-now', 'ADV-NOW', { type: 'quarantine', allow: [MGMT] }), t);
    await finding(A[8]!, 'ADV-NOW');
    await finding(A[9]!, 'ADV-NOW');
    await s.app.correlator.evaluate();
    const [d1, d2] = await decisions('?rule=q-now');
    for (const d of [d1, d2]) t.equal((await s.req('POST', `/api/v1/decisions/${d.id}/approve`)).body.state, 'canary', 'operator approvals are not held by the fleet share');
    const now = await s.req('POST', `/api/v1/decisions/${d1.id}/approve`, {});
    t.same([now.status, now.body.state], [200, 'promoted'], 'a second approval promotes the canary now');
    t.match(now.body.reason, /before every target acked/);
    const c2 = (await s.req('GET', `/api/v1/decisions/${d2.id}`)).body;
    const h2 = [A[8]!, A[9]!].find((h) => h.machineId === c2.machine_id)!;
    await ack(h2, c2.revisions[0].revision, false, 'verifier rejected the program');
    const refused = await s.req('POST', `/api/v1/decisions/${d2.id}/approve`, {});
    t.equal(refused.status, 409, 'an error ack: not promoted by hand either');
    t.match(refused.body.error.message, /verifier rejected/);
    for (const d of [d1, d2]) t.equal((await s.req('POST', `/api/v1/decisions/${d.id}/reject`, {})).body.state, 'rolled_back', 'reject rolls back promoted and canary alike');
  });

  t.test('auto: a newer snapshot for the machine during the canary: not promoted, and not overwritten by the rollback', async (t) => {
    await addRule(rule('q-super', 'ADV-SUPER', { type: 'quarantine', allow: [MGMT] }, 'auto'), t);
    const h = A[2]!;
    await finding(h, 'ADV-SUPER');
    await s.app.correlator.evaluate();
    const [d] = await decisions('?rule=q-super');
    t.equal(d.state, 'canary', d.reason ?? '');
    await ack(h, d.revisions[0].revision);
    const op = await s.req('POST', `/seg/maps?target_machine=${h.machineId}&stage=enforce`, { version: 1, service_id: SERVICE, edges: [{ dst_cidr: '10.8.0.0/16', proto: 'tcp', port: 443 }], ttl_seconds: 900 });
    t.equal(op.status, 200);
    pastWindow();
    await s.app.decisions.advance();
    const f = (await s.req('GET', `/api/v1/decisions/${d.id}`)).body;
    t.equal(f.state, 'failed');
    t.match(f.reason, /no longer what/);
    t.match(f.reason, new RegExp(`left at revision ${op.body.revision}`));
    t.equal(f.revisions[0].restored_by, null, 'nothing restored over the operator\'s revision');
    t.equal(await s.app.orchestrator.currentFor(SERVICE, h.machineId), op.body.revision, 'the machine keeps the operator\'s snapshot');
  });

  t.test('a bad AEGIS_DECISION_MAX_FLEET_SHARE or canary window stops the start, naming it', async (t) => {
    for (const [name, value] of [['AEGIS_DECISION_MAX_FLEET_SHARE', '1.5'], ['AEGIS_DECISION_MAX_FLEET_SHARE', '0'], ['AEGIS_DECISION_MAX_FLEET_SHARE', 'lots'], ['AEGIS_DECISION_CANARY_SECONDS', '0']] as const) {
      await t.rejects(startTestServer({ databaseUrl: await newDatabase(), env: { [name]: value } }), new RegExp(name), `${name}=${value}`);
    }
  });

  t.test('notify: a decision in state notified, nothing submitted', async (t) => {
    await addRule(rule('n-only', 'ADV-NOTIFY', { type: 'notify' }), t);
    await finding(A[7]!, 'ADV-NOTIFY');
    await s.app.correlator.evaluate();
    const [d] = await decisions('?rule=n-only');
    t.same([d.state, d.revisions], ['notified', []]);
    t.equal((await s.req('POST', `/api/v1/decisions/${d.id}/approve`)).status, 409, 'nothing to approve');
    t.same(await audits(d.id), ['decision.notified']);
  });

  t.test('tenancy: another customer\'s decision is a 404; a read-only key cannot approve', async (t) => {
    await addRule(rule('q-b', 'ADV-B', { type: 'quarantine', allow: [] }), t);
    await finding(B1, 'ADV-B');
    await s.app.correlator.evaluate();
    const [d] = await decisions('?rule=q-b');
    t.equal(d.customer_id, B1.customerId);
    for (const [m, path] of [['GET', `/api/v1/decisions/${d.id}`], ['POST', `/api/v1/decisions/${d.id}/approve`], ['POST', `/api/v1/decisions/${d.id}/reject`]] as const) {
      const r = await s.req(m, path, undefined, { key: keyA });
      t.equal(r.status, 404, `${m} ${path} with customer A's key: 404`);
    }
    t.equal((await s.req('GET', '/api/v1/decisions/999999', undefined, { key: keyA })).status, 404, 'an unknown id looks the same');
    const mine = await decisions('', keyA);
    t.ok(mine.length > 0 && mine.every((x) => x.customer_id === A[0]!.customerId), 'A lists its own only');
    t.equal((await s.req('GET', `/api/v1/decisions?machine=${B1.machineId}`, undefined, { key: keyA })).status, 404, 'another customer\'s machine: 404');
    const ro = await s.req('POST', `/api/v1/decisions/${d.id}/approve`, {}, { key: readOnly });
    t.equal(ro.status, 403, 'decisions:read cannot approve');
    t.equal((await s.req('GET', `/api/v1/decisions/${d.id}`, undefined, { key: readOnly })).status, 200, 'but can read');
    t.equal((await s.req('GET', `/api/v1/decisions/${d.id}`)).body.state, 'proposed', 'untouched by the refused calls');
  });

  t.test('paging and hostile query parameters', async (t) => {
    const all = await decisions('?limit=500');
    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const r: any = await s.req('GET', `/api/v1/decisions?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...r.body.items.map((x: any) => x.id));
      cursor = r.body.next_cursor;
    } while (cursor);
    t.same(seen, all.map((x) => x.id), 'pages cover the list exactly once, newest first');
    for (const q of ['?colour=red', '?state=exploded', '?machine=../etc', '?cursor=AAAA', "?rule=x'%20or%201=1", '?limit=0', '?state=proposed&state=canary']) {
      t.equal((await s.req('GET', `/api/v1/decisions${q}`)).status, 400, `${q}: 400`);
    }
    t.equal((await s.req('GET', '/api/v1/decisions/abc')).status, 400, 'a non-numeric id: 400');
  });

  t.test('attacks: hostile rule actions are refused, naming the path; nothing stored', async (t) => {
    const before = ((await s.req('GET', '/api/v1/rules')).body.items as any[]).length;
    const good = rule('x-act', 'ADV-X', { type: 'quarantine', allow: [MGMT] });
    const cases: [string, unknown, string][] = [
      ['unknown action type', { ...good, action: { type: 'nuke' } }, 'action'],
      ['bad CIDR', { ...good, action: { type: 'quarantine', allow: [{ ...MGMT, cidr: '10.0.0.300/24' }] } }, 'cidr'],
      ['CIDR with host bits', { ...good, action: { type: 'quarantine', allow: [{ ...MGMT, cidr: '10.77.0.5/24' }] } }, 'host bits'],
      ['a hostname as CIDR', { ...good, action: { type: 'quarantine', allow: [{ ...MGMT, cidr: 'bastion.example.com' }] } }, 'cidr'],
      ['unknown action field', { ...good, action: { type: 'quarantine', allow: [], also: 'everything' } }, 'also'],
      ['unknown edge field', { ...good, action: { type: 'quarantine', allow: [{ ...MGMT, via: 'eth0' }] } }, 'via'],
      ['quarantine without allow', { ...good, action: { type: 'quarantine' } }, 'allow'],
      ['tighten without a service', { ...good, action: { type: 'tighten' } }, 'service_id'],
      ['tighten with allow', { ...good, action: { type: 'tighten', service_id: 1, allow: [] } }, 'allow'],
      ['port out of range', { ...good, action: { type: 'quarantine', allow: [{ ...MGMT, port: 70000 }] } }, 'port'],
      ['unknown proto', { ...good, action: { type: 'quarantine', allow: [{ ...MGMT, proto: 'gre' }] } }, 'proto'],
      ['edge listed twice', { ...good, action: { type: 'quarantine', allow: [MGMT, MGMT] } }, 'twice'],
      ['too many edges', { ...good, action: { type: 'quarantine', allow: Array.from({ length: 65 }, (_, i) => ({ ...MGMT, port: i + 1 })) } }, 'allow'],
      ['unknown mode', { ...good, mode: 'yolo' }, 'mode'],
      ['mode without an action', { ...good, action: undefined, mode: 'auto' }, 'mode'],
    ];
    for (const [name, body, names] of cases) {
      const r = await s.req('POST', '/api/v1/rules', JSON.parse(JSON.stringify(body)));
      t.equal(r.status, 400, `${name}: 400`);
      t.match(JSON.stringify(r.body.error), names, `${name}: the error names ${names}`);
    }
    t.equal(((await s.req('GET', '/api/v1/rules')).body.items as any[]).length, before, 'nothing stored');
    const ok = await s.req('POST', '/api/v1/rules', good);
    t.equal(ok.status, 201);
    t.same([ok.body.rule.action, ok.body.rule.mode], [{ type: 'quarantine', allow: [{ ...MGMT, direction: 'both' }] }, 'propose'], 'mode defaults to propose; direction to both');
  });
}
