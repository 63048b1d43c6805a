/** Orchestrator HTTP API, run on each storage backend. */
import type { Test } from 'tap';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { AUD_SEG_MAP, AUD_SNAPSHOTS_PROOF } from '../../protocol/src/index.js';
import { activateTestHost, startTestServer, TestHost, type TestServer } from '../../test/harness/server.js';

const snap = (service_id: number, edges: Array<[string, string, number]>, extra: Record<string, unknown> = {}) => ({
  version: 1,
  service_id,
  edges: edges.map(([dst_cidr, proto, port]) => ({ dst_cidr, proto, port })),
  allow_cidrs: [{ cidr: '0.0.0.0/0', proto: 'tcp', port: 22 }],
  ttl_seconds: 1800,
  meta: { note: 'test' },
  ...extra,
});

export function segSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let s: TestServer;
  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
  });
  t.teardown(() => s?.close());

  t.test('POST /seg/maps: accepted with a revision, canary by default; hostnames resolve to machines', async (t) => {
    const web1 = await activateTestHost(s, 'web-1');
    const web2 = await activateTestHost(s, 'web-2', { licenseKey: web1.licenseKey });
    const ids = [web1.machineId, web2.machineId].sort();
    const r = await s.req('POST', '/seg/maps?target_host=web-1,web-2', snap(101, [['10.10.20.0/24', 'tcp', 5432]]));
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.match(r.body, { accepted: true, service_id: 101, revision: 1, stage: 'canary' });
    t.same(r.body.target_machines, ids, 'stored and published by machine id');
    t.same(r.body.target_hosts, ids.map((id) => (id === web1.machineId ? 'web-1' : 'web-2')), 'hostnames shown as labels');
    t.type(r.body.timestamp, 'number');
    const r2 = await s.req('POST', '/api/v1/seg/maps', { ...snap(101, [['10.10.30.15/32', 'tcp', 443]]), stage: 'enforce' });
    t.match(r2.body, { revision: 2, stage: 'enforce', target_hosts: ['_all'], target_machines: ['_all'] });
    const list = await s.req('GET', '/seg/maps');
    const current = list.body.current.filter((c: any) => c.service_id === 101).map((c: any) => `${c.target} ${c.host} ${c.revision} ${c.stage}`).sort();
    t.same(current, [`_all _all 2 enforce`, `${web1.machineId} web-1 1 canary`, `${web2.machineId} web-2 1 canary`].sort());
    const byId = await s.req('POST', `/seg/maps?target_machine=${web2.machineId}`, snap(104, []));
    t.equal(byId.status, 200, JSON.stringify(byId.body));
    t.same(byId.body.target_machines, [web2.machineId], 'target_machine takes ids');
    const both = await s.req('POST', `/seg/maps?target_host=web-1&target_machine=${web2.machineId}`, snap(105, []));
    t.same(both.body.target_machines, ids, 'names and ids together');
  });

  t.test('targets: unknown names and ids are 404, ambiguous names 409 listing the machines', async (t) => {
    const unknown = await s.req('POST', '/seg/maps?target_host=no-such-host', snap(110, []));
    t.equal(unknown.status, 404, JSON.stringify(unknown.body));
    t.match(unknown.body.error.message, /no active machine named no-such-host/);
    const unknownId = await s.req('POST', '/seg/maps?target_machine=00000000-0000-4000-8000-000000000000', snap(110, []));
    t.equal(unknownId.status, 404);
    t.equal((await s.req('POST', '/seg/maps?target_machine=web-1', snap(110, []))).status, 400, 'target_machine takes only machine ids');
    const a = await activateTestHost(s, 'twin');
    const b = await activateTestHost(s, 'twin');
    const amb = await s.req('POST', '/seg/maps?target_host=twin', snap(111, []));
    t.equal(amb.status, 409, JSON.stringify(amb.body));
    t.match(amb.body.error.message, /twin names 2 active machines/);
    t.same(amb.body.error.details.ambiguous.twin.map((c: any) => c.machine_id).sort(), [a.machineId, b.machineId].sort(), 'the candidates are listed');
    t.equal((await s.req('GET', '/seg/maps/111')).status, 404, 'nothing stored for a refused target');
    const one = await s.req('POST', `/seg/maps?target_machine=${a.machineId}`, snap(111, []));
    t.equal(one.status, 200, 'the ambiguity is resolved by id');
  });

  t.test('validation names each failing path', async (t) => {
    const bad = await s.req('POST', '/seg/maps', { version: 0, service_id: -1, edges: [{ dst_cidr: 'x', proto: 'sctp', port: 70000 }], ttl_seconds: 10 });
    t.equal(bad.status, 400);
    const paths = bad.body.error.details.map((d: any) => d.path).sort();
    for (const p of ['/version', '/service_id', '/edges/0/proto', '/edges/0/port', '/ttl_seconds']) t.ok(paths.includes(p), `${p} named: ${paths}`);
    const cidr = await s.req('POST', '/seg/maps', snap(5, [['10.0.0.1/24', 'tcp', 80], ['not-an-ip/8', 'udp', 53], ['10.0.0.0/24', 'tcp', 80], ['10.0.0.0/24', 'tcp', 80]]));
    t.equal(cidr.status, 400);
    const msgs = cidr.body.error.details.map((d: any) => `${d.path} ${d.message}`);
    t.ok(msgs.some((m: string) => m.startsWith('/edges/0/dst_cidr') && m.includes('host bits') && m.includes('10.0.0.0/24')), msgs.join(' | '));
    t.ok(msgs.some((m: string) => m.startsWith('/edges/1/dst_cidr')));
    t.ok(msgs.some((m: string) => m.startsWith('/edges/3 duplicate of /edges/2')));
    const many = Array.from({ length: 70000 }, (_, i) => [`10.${(i >> 8) & 255}.${i & 255}.0/24`, 'any', 80 + (i >> 16)] as [string, string, number]);
    const cap = await s.req('POST', '/seg/maps', snap(6, many));
    t.equal(cap.status, 400);
    t.match(JSON.stringify(cap.body.error.details), /per-service capacity/);
    t.equal((await s.req('POST', '/seg/maps?target_host=a.b', snap(7, []))).status, 400, 'bad host name');
    t.equal((await s.req('POST', '/seg/maps', { ...snap(7, []), stage: 'yolo' })).status, 400);
    t.equal((await s.req('GET', '/seg/maps/5')).status, 404, 'nothing stored for a refused snapshot');
  });

  t.test('scopes: seg:read and seg:write', async (t) => {
    const reader = await s.app.apiKeys.create('seg-reader', ['seg:read']);
    t.equal((await s.req('GET', '/seg/maps', undefined, { key: reader.key })).status, 200);
    t.equal((await s.req('POST', '/seg/maps', snap(8, []), { key: reader.key })).status, 403);
    t.equal((await s.req('POST', '/seg/maps', snap(8, []), { key: null })).status, 401);
    const lic = await s.app.apiKeys.create('lic-only', ['licenses:read']);
    t.equal((await s.req('GET', '/api/v1/agents', undefined, { key: lic.key })).status, 403);
  });

  t.test('promote, rollback and history', async (t) => {
    await s.req('POST', '/seg/maps', snap(202, [['10.1.0.0/16', 'tcp', 80]]));
    await s.req('POST', '/seg/maps', snap(202, [['10.2.0.0/16', 'tcp', 80]]));
    const stale = await s.req('POST', '/seg/maps/promote', { service_id: 202, revision: 1 });
    t.equal(stale.status, 409, 'only the newest revision is promoted');
    const p = await s.req('POST', '/seg/maps/promote', { service_id: 202 });
    t.match(p.body, { promoted: true, revision: 2, stage: 'enforce' });
    const rb = await s.req('POST', '/seg/maps/rollback', { service_id: 202 });
    t.match(rb.body, { rolled_back: 2, restores_revision: 1, revision: 3, stage: 'canary' });
    const h = await s.req('GET', '/seg/maps/202');
    t.same(h.body.revisions.map((r: any) => [r.revision, r.stage, r.snapshot.edges[0].dst_cidr]), [
      [3, 'canary', '10.1.0.0/16'],
      [2, 'enforce', '10.2.0.0/16'],
      [1, 'canary', '10.1.0.0/16'],
    ]);
    t.equal((await s.req('POST', '/seg/maps/rollback', { service_id: 999 })).status, 404);
    await s.req('POST', '/seg/maps', snap(203, []));
    t.equal((await s.req('POST', '/seg/maps/rollback', { service_id: 203 })).status, 409, 'nothing earlier');
    const audit = await s.req('GET', '/api/v1/admin/audit-logs?event_type=seg.map.rolled_back');
    t.ok(audit.body.items.length >= 1, 'rollback audited');
  });

  t.test('HTTP fallback serves signed messages to a machine that proves itself', async (t) => {
    const { host, machineId } = await activateTestHost(s, 'db-7');
    const other = await activateTestHost(s, 'other');
    await s.req('POST', '/seg/maps?target_host=db-7', snap(301, [['10.9.0.0/16', 'udp', 53]]));
    await s.req('POST', '/seg/maps', snap(302, [['10.8.0.0/16', 'tcp', 443]]));
    await s.req('POST', `/seg/maps?target_machine=${other.machineId}`, snap(303, [['10.7.0.0/16', 'tcp', 443]]));
    const proof = host.proof(AUD_SNAPSHOTS_PROOF);
    const path = `/api/v1/machines/${machineId}/snapshots`;
    const r = await s.req('GET', path, undefined, { key: null, headers: { 'x-aegis-proof': proof } });
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.equal(r.body.machine_id, machineId);
    const jwks = createLocalJWKSet((await s.req('GET', '/.well-known/jwks.json', undefined, { key: null })).body);
    const claims = [];
    for (const m of r.body.messages) claims.push((await jwtVerify(m, jwks, { audience: AUD_SEG_MAP, algorithms: ['EdDSA'] })).payload);
    const ids = claims.map((c: any) => c.service_id);
    t.ok(ids.includes(301) && ids.includes(302), `own and _all services: ${ids}`);
    t.notOk(ids.includes(303), "another machine's snapshot is not served");
    t.equal(claims.find((c: any) => c.service_id === 301)!.target, machineId, 'addressed to the machine id');
    const replay = await s.req('GET', path, undefined, { key: null, headers: { 'x-aegis-proof': proof } });
    t.equal(replay.status, 401, 'a proof is good once');
    const intruder = new TestHost('intruder');
    const forged = await s.req('GET', path, undefined, {
      key: null,
      headers: { 'x-aegis-proof': intruder.proof(AUD_SNAPSHOTS_PROOF, { hwid: host.hardwareId }) },
    });
    t.equal(forged.status, 401, 'a proof by another key is refused');
    t.equal((await s.req('GET', path, undefined, { key: null })).status, 401);
    t.equal((await s.req('GET', '/api/v1/machines/db-7/snapshots', undefined, { key: null, headers: { 'x-aegis-proof': host.proof(AUD_SNAPSHOTS_PROOF) } })).status, 404, 'a hostname names no machine');
    t.equal((await s.req('GET', '/api/v1/agents/db-7/snapshots', undefined, { key: null, headers: { 'x-aegis-proof': host.proof(AUD_SNAPSHOTS_PROOF) } })).status, 404, 'the hostname route is gone');
  });

  t.test('segmenter: propose from flows or agent reports, plan into a postable MapSnapshot', async (t) => {
    const flows = [0, 1, 2, 3].map((i) => ({ dst: `10.20.0.${i}`, proto: 'tcp', port: 5432, count: 2 })).concat([{ dst: '10.30.0.9', proto: 'udp', port: 53, count: 1 }]);
    const p = await s.req('POST', '/segment/propose', { service_id: 401, flows, max_unseen_ratio: 0 });
    t.equal(p.status, 200, JSON.stringify(p.body));
    t.same(p.body.edges.map((e: any) => `${e.dst_cidr} ${e.proto} ${e.port}`).sort(), ['10.20.0.0/30 tcp 5432', '10.30.0.9/32 udp 53']);
    const bad = await s.req('POST', '/segment/propose', { service_id: 401, flows: [{ dst: 'nope', proto: 'tcp', port: 1, count: 1 }] });
    t.equal(bad.status, 400);
    t.equal(bad.body.error.details[0].path, '/flows/0/dst');
    const planned = await s.req('POST', '/segment/plan', { proposal: p.body, ttl_seconds: 900 });
    t.equal(planned.status, 200);
    t.equal(planned.body.service_id, 401);
    const posted = await s.req('POST', '/seg/maps', planned.body);
    t.equal(posted.status, 200, 'a plan is ready to POST');
    const web9 = await activateTestHost(s, 'web-9');
    t.equal(await s.app.agents.record('flows', web9.machineId, { service_id: 402, flows: [{ dst: '192.168.1.7', proto: 'tcp', port: 443, count: 4 }] }), 'service not targeted at this machine');
    t.equal((await s.req('POST', `/seg/maps?target_machine=${web9.machineId}`, snap(402, []))).status, 200);
    t.equal(await s.app.agents.record('flows', web9.machineId, { service_id: 402, flows: [{ dst: '192.168.1.7', proto: 'tcp', port: 443, count: 4 }] }), null);
    const fromAgents = await s.req('POST', '/segment/propose', { service_id: 402, from_agents: true });
    t.equal(fromAgents.status, 200);
    t.equal(fromAgents.body.source, 'agents');
    t.same(fromAgents.body.edges.map((e: any) => e.dst_cidr), ['192.168.1.7/32']);
  });

  t.test('agents: reports recorded under the machine, visible, and flows feed the segmenter input', async (t) => {
    const reg = s.app.agents;
    const { machineId } = await activateTestHost(s, 'web-5');
    t.equal((await s.req('POST', `/seg/maps?target_machine=${machineId}`, snap(501, []))).status, 200);
    t.equal(await reg.record('status', 'web-5', { edition: 'licensed', services: [] }), 'malformed', 'a hostname is no machine id');
    t.equal(await reg.record('status', '00000000-0000-4000-8000-000000000000', { edition: 'licensed', services: [] }), 'unknown machine');
    t.equal(await reg.record('status', machineId, 'garbage'), 'malformed');
    t.equal(
      await reg.record('status', machineId, { host: 'liar', machine_id: 'another', edition: 'licensed', tier: 'server', services: [{ service_id: 501, revision: 1 }], datapath: { available: true, reason: null } }),
      null,
    );
    t.equal(await reg.record('ack', machineId, { host: 'web-5', service_id: 501, revision: 1, stage: 'canary', mode: 'observe', ok: true, error: null }), null);
    t.equal(await reg.record('ack', machineId, { host: 'web-5', service_id: 999, revision: 1, stage: 'canary', mode: 'observe', ok: true, error: null }), 'service not targeted at this machine');
    // One bad line used to be skipped and the rest kept; now it refuses the whole report.
    t.match(
      await reg.record('flows', machineId, { service_id: 501, flows: [{ dst: '10.0.0.5', proto: 'tcp', port: 443, count: 3 }, { dst: 'x'.repeat(100), proto: 'tcp', port: 1, count: 1 }] }),
      /^malformed: \/flows\/1\/dst: /,
      'a report with one bad line is refused whole, naming the line',
    );
    t.equal(await reg.record('flows', machineId, { service_id: 501, flows: [{ dst: '10.0.0.5', proto: 'tcp', port: 443, count: 3 }] }), null);
    t.equal(await reg.record('flows', machineId, { service_id: 501, flows: [{ dst: '10.0.0.5', proto: 'tcp', port: 443, count: 2 }] }), null);
    const list = await s.req('GET', '/api/v1/agents');
    const item = list.body.items.find((i: any) => i.machine_id === machineId);
    t.equal(item.host, 'web-5', 'the label is the hostname the machine activated with');
    t.equal(item.status.host, 'web-5', "the payload's host names nothing");
    t.equal(item.status.machine_id, machineId, "the payload's machine_id names nothing");
    const one = await s.req('GET', `/api/v1/agents/${machineId}`);
    t.equal(one.body.status.edition, 'licensed');
    t.equal(one.body.applied['501'].revision, 1);
    t.notOk(one.body.applied['999'], 'an ack for a service not targeted here is not kept');
    t.same(await s.app.flowLog.deniedEgress(501, null), [{ dst: '10.0.0.5', proto: 'tcp', port: 443, count: 5 }], 'flows summed, nothing of the refused report');
    const per = await s.req('GET', '/api/v1/seg/flows/501');
    t.same(per.body.items.map((f: any) => [f.machine_id, f.dst, f.count]), [[machineId, '10.0.0.5', 5]], 'which machine reported what');
    t.equal((await s.req('GET', '/api/v1/agents/web-5')).status, 404);
    const maps = await s.req('GET', '/seg/maps');
    t.equal(maps.body.hosts.find((h: any) => h.machine_id === machineId).applied['501'].revision, 1, 'applied revision per machine');
  });
}
