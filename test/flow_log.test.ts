/**
 * The operator flow log and the flow reports, end to end with real packets:
 * - a real aegis-agent (community edition: observe) with a bound service: GET /v1/flows
 *   returns allowed entries naming their edge and the snapshot revision, would-drops naming
 *   none, filtered by service and verdict; follow=1 streams a new verdict as it happens;
 *   `aegisctl flows` prints them (table and JSON lines); hostile query parameters get a 400
 *   BAD_QUERY naming the parameter.
 * - the agent's flow aggregation (SegClient over a real PolicyManager and datapath): one
 *   report per service and revision with allowed and denied lines, their rules, the
 *   interval, and the per-report line cap counted.
 */
import t from 'tap';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { requireCapability } from './harness/capabilities.js';
import { aegisctl } from './harness/ctl.js';
import { helperScript, makeCgroup, missingDatapath, removeCgroup, runNodeInCgroup, testPinRoot } from './harness/datapath.js';
import { agentDir, cleanupDir, startAgent } from './harness/agent.js';
import { purgePins } from '../agent/src/datapath/index.js';
import { defaults } from '../agent/src/config.js';
import { createAgentLogger } from '../agent/src/logger.js';
import { PolicyManager } from '../agent/src/policy.js';
import { SegClient, type SegClientDeps } from '../agent/src/seg_client.js';
import { StateStore } from '../agent/src/state_store.js';

async function listen(): Promise<{ srv: Server; port: number }> {
  const srv = createServer((c) => c.end());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return { srv, port: (srv.address() as AddressInfo).port };
}

async function probe(cgroup: string, ports: number[]): Promise<boolean[]> {
  const r = await runNodeInCgroup(cgroup, helperScript('traffic_client.js'), [
    JSON.stringify({ op: 'probe', targets: ports.map((port) => ({ proto: 'tcp', host: '127.0.0.1', port, timeoutMs: 1000 })) }),
  ]);
  return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { results: Array<{ ok: boolean }> }).results.map((x) => x.ok);
}

/** GET on the control socket whose answer is JSON lines: resolves after `want` lines (then hangs up). */
function follow(socket: string, path: string, want: number, onOpen: () => void): Promise<{ status: number; lines: any[] }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, method: 'GET' }, (res) => {
      const lines: any[] = [];
      let buf = '';
      onOpen();
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          lines.push(JSON.parse(buf.slice(0, nl)));
          buf = buf.slice(nl + 1);
        }
        if (lines.length >= want) {
          resolve({ status: res.statusCode ?? 0, lines });
          req.destroy();
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, lines }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('GET /v1/flows, follow, aegisctl flows and hostile queries against a real agent', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const a1 = await listen();
  const a2 = await listen();
  const denied = await listen();
  t.teardown(() => {
    for (const l of [a1, a2, denied]) l.srv.close();
  });
  const cgroup = makeCgroup('flowlog-agent');
  const pinRoot = testPinRoot('flowlog-agent');
  const dir = agentDir();
  const agent = await startAgent({ serverUrl: 'http://127.0.0.1:9', dir, pinRoot, services: { '321': cgroup } });
  t.teardown(async () => {
    await agent.stop();
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
    cleanupDir(dir);
  });
  await agent.waitReady();
  const put = await agent.api('PUT', '/v1/snapshots/321', {
    version: 1,
    service_id: 321,
    edges: [
      { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: a1.port },
      { dst_cidr: '127.0.0.1/32', proto: 'tcp', port: a1.port },
      { dst_cidr: '127.0.0.0/8', proto: 'tcp', port: a2.port },
    ],
    ttl_seconds: 3600,
  });
  t.equal(put.status, 200, JSON.stringify(put.body));
  t.equal(put.body.mode, 'observe', 'community edition: observe');
  const revision = put.body.revision as number;
  t.same(await probe(cgroup, [a1.port, a2.port, denied.port]), [true, true, true], 'observe lets everything through');

  let flows: any[] = [];
  for (let i = 0; i < 100; i++) {
    flows = (await agent.api('GET', '/v1/flows?service=321')).body.entries;
    if (flows.length >= 3) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const egress = flows.filter((e) => e.direction === 'egress' && e.proto === 'tcp');
  const by = (port: number) => egress.find((e) => e.port === port);
  t.match(by(a1.port), { verdict: 'allowed', rule: 1, revision, reason: 'policy', remote: '127.0.0.1', service_id: 321 }, 'allowed by edges[1] (the /32), under the applied revision');
  t.match(by(a2.port), { verdict: 'allowed', rule: 2, revision }, 'allowed by edges[2]');
  t.match(by(denied.port), { verdict: 'would-drop', rule: null, revision, reason: 'policy' }, 'the would-drop names no rule');

  const onlyWd = (await agent.api('GET', '/v1/flows?verdict=would-drop&limit=5')).body.entries as any[];
  t.ok(onlyWd.length >= 1 && onlyWd.every((e) => e.verdict === 'would-drop'), 'filtered by verdict');
  t.same((await agent.api('GET', '/v1/flows?service=999')).body.entries, [], 'another service: nothing');
  const one = (await agent.api('GET', '/v1/flows?service=321&limit=1')).body.entries as any[];
  t.equal(one.length, 1, 'limit');
  t.same(one[0], flows[flows.length - 1], 'newest last');

  // Follow: the stream is open before the new flow exists, and the new flow arrives on it.
  const streamed = follow(agent.socket, '/v1/flows?service=321&verdict=allowed&limit=1&follow=1', 2, () => void probe(cgroup, [a2.port]));
  const s = await streamed;
  t.equal(s.status, 200);
  t.equal(s.lines.length, 2, 'the most recent entry, then the new one');
  t.match(s.lines[1], { verdict: 'allowed', rule: 2, port: a2.port, revision }, 'the new verdict is streamed as it happens');
  t.not(s.lines[1].sport, s.lines[0].sport, 'a new connection, not the replayed one');

  const env = { AEGIS_SOCKET: agent.socket };
  const table = await aegisctl(env, ['flows', '--service', '321']);
  t.equal(table.code, 0, table.stderr);
  t.match(table.stdout, /TIME\s+SERVICE\s+DIR\s+VERDICT\s+PROTO\s+REMOTE\s+RULE\s+REV\s+REASON/, 'table header');
  t.match(table.stdout, new RegExp(`321\\s+out\\s+allowed\\s+tcp\\s+127\\.0\\.0\\.1:${a2.port}\\s+2\\s+${revision}\\s+policy`), 'an allowed row with its rule and revision');
  t.match(table.stdout, new RegExp(`321\\s+out\\s+would-drop\\s+tcp\\s+127\\.0\\.0\\.1:${denied.port}\\s+-\\s+${revision}\\s+policy`), 'a would-drop row without a rule');
  const json = await aegisctl(env, ['--json', 'flows', '--verdict', 'would-drop']);
  t.equal(json.code, 0, json.stderr);
  const parsed = json.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.ok(parsed.length >= 1 && parsed.every((e) => e.verdict === 'would-drop' && e.rule === null), 'JSON lines, filtered');
  const badFlag = await aegisctl(env, ['flows', '--verdict', 'maybe']);
  t.not(badFlag.code, 0, 'an unknown --verdict is refused before asking the agent');
  t.match(badFlag.stderr, /--verdict must be one of allowed, dropped, would-drop/);

  for (const [query, param] of [
    ['service=abc', 'service'],
    ['service=-1', 'service'],
    ['service=1.5', 'service'],
    ['service=99999999999', 'service'],
    ['verdict=maybe', 'verdict'],
    ['limit=0', 'limit'],
    ['limit=10000000', 'limit'],
    ['limit=1e3', 'limit'],
    ['follow=yes', 'follow'],
    ['service=1&service=2', 'service'],
    ['x=1', 'x'],
  ] as const) {
    const r = await agent.api('GET', `/v1/flows?${query}`);
    t.equal(r.status, 400, `${query}: 400`);
    t.equal(r.body.error.code, 'BAD_QUERY', `${query}: BAD_QUERY`);
    t.same(r.body.error.details, { param }, `${query}: names ${param}`);
  }
  const st = (await agent.api('GET', '/v1/status')).body;
  t.equal(st.flow_reports.lines_dropped, 0);
});

t.test('flow reports: allowed and denied lines per revision, with rules, interval and a counted cap', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const a1 = await listen();
  const denied = await listen();
  t.teardown(() => {
    a1.srv.close();
    denied.srv.close();
  });
  const cgroup = makeCgroup('flowlog-report');
  const pinRoot = testPinRoot('flowlog-report');
  const dir = agentDir();
  const log = createAgentLogger('error', 'json');
  const store = new StateStore(join(dir, 'state'), log);
  const policy = new PolicyManager({ ...defaults(), pin_root: pinRoot, state_dir: store.dir, services: { '322': cgroup } }, store, log);
  await policy.open();
  t.teardown(async () => {
    await policy.close();
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
    cleanupDir(dir);
  });
  await policy.setFeatures(['segmentation_enforce']);
  const deps = { host: 'flowlog-host', policy, store, log } as unknown as SegClientDeps;
  const seg = new SegClient(deps);
  const capped = new SegClient({ ...deps, maxFlowLines: 1 });
  const offs = [policy.onFlow((e) => seg.onFlow(e)), policy.onFlow((e) => capped.onFlow(e))];
  t.teardown(() => offs.forEach((f) => f()));

  const edges7 = [
    { dst_cidr: '192.168.0.0/16', proto: 'tcp' as const, port: a1.port },
    { dst_cidr: '127.0.0.0/8', proto: 'tcp' as const, port: a1.port },
  ];
  await policy.accept({ version: 1, service_id: 322, edges: edges7, allow_cidrs: [], ttl_seconds: 3600 } as never, { revision: 7, stage: 'enforce', source: 'test' });
  t.same(await probe(cgroup, [a1.port, denied.port]), [true, false], 'revision 7 enforced');
  const g7 = (await policy.ruleCounters(322))!.generation;
  await policy.renew(322);
  t.equal((await policy.ruleCounters(322))!.generation, g7, 'a renewal keeps the generation (and the counts)');
  t.same((await policy.ruleCounters(322))!.rules, [{ direction: 'egress', index: 1, count: 1 }], 'the count of revision 7 survived the renewal');
  await policy.setFeatures([]);
  const gObserve = (await policy.ruleCounters(322))!.generation;
  t.not(gObserve, g7, 'enforce -> observe is a new generation');
  await policy.setFeatures(['segmentation_enforce']);
  t.not((await policy.ruleCounters(322))!.generation, gObserve, 'observe -> enforce is a new generation: flows tracked in observe are judged again');
  await policy.accept({ version: 1, service_id: 322, edges: edges7, allow_cidrs: [], ttl_seconds: 3600 } as never, { revision: 7, stage: 'enforce', source: 'local' });
  const gSame = (await policy.ruleCounters(322))!.generation;
  t.ok(gSame !== null && gSame > g7!, 'the same revision number from another source is a new generation');
  t.same(await probe(cgroup, [a1.port, denied.port]), [true, false], 'revision 7 again');
  await policy.accept({ version: 1, service_id: 322, edges: [edges7[1]!], allow_cidrs: [], ttl_seconds: 3600 } as never, { revision: 8, stage: 'enforce', source: 'test' });
  t.same(await probe(cgroup, [a1.port, denied.port]), [true, false], 'revision 8 enforced');
  const rc = await policy.ruleCounters(322);
  t.same(rc?.rules, [{ direction: 'egress', index: 0, count: 1 }], 'rule counters of revision 8: edges[0]');
  t.equal(rc?.noRule, 1);
  await new Promise((r) => setTimeout(r, 200));

  const reports = seg.takeFlowReports();
  const of = (rev: number) => reports.find((r) => r.service_id === 322 && r.revision === rev);
  const line = (rev: number, port: number) => of(rev)?.flows.find((f) => f.direction === 'egress' && f.port === port);
  t.match(line(7, a1.port), { dst: '127.0.0.1', proto: 'tcp', verdict: 'allowed', rule: 1, reason: 'policy', count: 2 }, 'revision 7 (applied twice): allowed by edges[1]');
  t.match(line(7, denied.port), { verdict: 'dropped', rule: null, reason: 'policy', count: 2 }, 'revision 7: dropped, no rule');
  t.match(line(8, a1.port), { verdict: 'allowed', rule: 0, count: 1 }, 'revision 8: the same destination is edges[0] now');
  t.match(line(8, denied.port), { verdict: 'dropped', rule: null }, 'revision 8: dropped');
  t.ok(reports.every((r) => Date.parse(r.interval.start) <= Date.parse(r.interval.end)), 'each report names its interval');
  t.same(seg.takeFlowReports(), [], 'the interval was reset');
  const small = capped.takeFlowReports();
  t.ok(small.every((r) => r.flows.length <= 1), 'capped reports carry at most the cap');
  t.ok(capped.flowLinesDropped >= 2, `what the cap left out is counted (${capped.flowLinesDropped})`);
  t.equal(seg.flowLinesDropped, 0);
});
