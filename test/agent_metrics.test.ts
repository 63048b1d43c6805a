/**
 * aegis-agent's Prometheus metrics, scraped from a real agent process:
 * - licensed by a real server, enforcing a real service with the eBPF datapath: after real
 *   TCP traffic (one allowed port, one denied) the per-service verdict counters, the
 *   per-rule flow counts, flow events and the flow log move, and move again after more;
 *   revision, mode, TTL, last apply duration, license state and the kernel token's expiry
 *   are what the agent's own API says;
 * - the same text on the control socket (a read: socket_group may, others cannot connect)
 *   and on the TCP listener (metrics_listen; /metrics only), accepted by
 *   `promtool check metrics`, and every aegis_agent_* family documented in
 *   docs/observability.md exported with exactly its documented type and labels (and none
 *   exported undocumented);
 * - without a datapath (no BPF here), the scrape still answers, saying so;
 * - a non-loopback metrics_listen is refused unless metrics_allow_remote is set.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../agent/src/config.js';
import { ConfigError } from '../agent/src/errors.js';
import { purgePins } from '../agent/src/datapath/index.js';
import { agentDir, cleanupDir, startAgent, type TestAgent } from './harness/agent.js';
import { missingCommand, requireCapability } from './harness/capabilities.js';
import { helperScript, makeCgroup, missingDatapath, removeCgroup, runNodeInCgroup, testPinRoot } from './harness/datapath.js';
import { parseExposition, promtoolCheckMetrics, type Exposition } from './harness/prometheus_text.js';
import { startNats } from './harness/nats.js';
import { startTestServer } from './harness/server.js';

const DOC = fileURLToPath(new URL('../../docs/observability.md', import.meta.url));

/** The agent families docs/observability.md lists: name → type and label names. */
function documentedAgentFamilies(): Map<string, { type: string; labels: string[] }> {
  const doc = readFileSync(DOC, 'utf8');
  const start = doc.indexOf('## Agent metrics');
  const end = doc.indexOf('\n## ', start + 1);
  const out = new Map<string, { type: string; labels: string[] }>();
  for (const line of doc.slice(start, end === -1 ? undefined : end).split('\n')) {
    const m = /^\| `(aegis_agent_[a-z0-9_]+)` \| (counter|gauge|histogram) \|([^|]*)\|/.exec(line);
    if (!m) continue;
    const labels = [...m[3]!.matchAll(/`([a-z_]+)`/g)].map((x) => x[1]!).sort();
    out.set(m[1]!, { type: m[2]!, labels });
  }
  return out;
}

function socketGet(socket: string, path: string, method = 'GET'): Promise<{ status: number; type: string; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, method }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), text }));
    });
    req.on('error', reject);
    req.end();
  });
}

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

/** The URL the agent logged for its metrics listener (port 0 resolved). */
async function metricsUrl(a: TestAgent): Promise<string> {
  let url = '';
  await a.waitFor(
    () => {
      const line = a.logs.find((l) => l.includes('"message":"metrics listener"'));
      if (line) url = (JSON.parse(line) as { url: string }).url;
      return url !== '';
    },
    10_000,
    'metrics listener log line',
  );
  return url;
}

/** promtool finds nothing to say about the agent's own families (prom-client's defaults are not ours to lint). */
function promtoolClean(t: Test, text: string, where: string): void {
  const problems = promtoolCheckMetrics(text).filter((l) => l.includes('aegis_agent_'));
  t.same(problems, [], `promtool check metrics accepts the ${where} scrape`);
}

t.test('metrics_listen: loopback only unless metrics_allow_remote', async (t) => {
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const file = join(dir, 'agent.json');
  writeFileSync(file, '{}');
  const load = (env: Record<string, string>) => loadConfig({ env: { ...env }, configPath: file });
  t.equal(load({ AEGIS_METRICS_LISTEN: '127.0.0.1:9465' }).config.metrics_listen, '127.0.0.1:9465');
  t.equal(load({ AEGIS_METRICS_LISTEN: '[::1]:0' }).config.metrics_listen, '[::1]:0', 'IPv6 loopback, port 0');
  const refused = (() => {
    try {
      load({ AEGIS_METRICS_LISTEN: '0.0.0.0:9465' });
      return null;
    } catch (e) {
      return e;
    }
  })();
  t.ok(refused instanceof ConfigError, 'a wildcard address is refused');
  t.match((refused as Error).message, /not a loopback address.*metrics_allow_remote/);
  t.equal(load({ AEGIS_METRICS_LISTEN: '0.0.0.0:9465', AEGIS_METRICS_ALLOW_REMOTE: 'true' }).config.metrics_allow_remote, true, 'allowed when asked for');
  for (const bad of ['9465', 'localhost:99999', 'a b:1']) {
    t.throws(() => load({ AEGIS_METRICS_LISTEN: bad }), ConfigError, `${JSON.stringify(bad)} refused`);
  }
});

t.test('without a datapath: the scrape answers and says so', async (t) => {
  const dir = agentDir();
  const a = await startAgent({ serverUrl: 'http://127.0.0.1:9', dir, services: { '7': '/nonexistent-cgroup' }, extraConfig: { metrics_listen: '127.0.0.1:0' } });
  t.teardown(async () => {
    await a.stop();
    cleanupDir(dir);
  });
  await a.waitReady();
  const r = await socketGet(a.socket, '/metrics');
  t.equal(r.status, 200);
  t.match(r.type, /^text\/plain; version=0\.0\.4/);
  const e = parseExposition(r.text);
  t.equal(e.value('aegis_agent_datapath_available'), 0);
  t.equal(e.value('aegis_agent_license_state', { state: 'community' }), 1);
  t.equal(e.value('aegis_agent_licensed'), 0);
  t.ok(Number.isNaN(e.value('aegis_agent_kernel_token_expiry_seconds')), 'no kernel token: NaN, so the expiry alert cannot fire on nothing');
  t.equal(e.value('aegis_agent_service_bound', { service: '7' }), 0, 'the configured service, unbound');
  t.same(e.all('aegis_agent_service_packets_total'), [], 'no counters without a datapath');
  t.equal(e.value('aegis_agent_nats_configured'), 0);
  t.equal(e.value('aegis_agent_last_report_timestamp_seconds'), 0, 'never reported');
  promtoolClean(t, r.text, 'control socket');
  const url = await metricsUrl(a);
  const tcp = await fetch(`${url}/metrics`);
  t.equal(tcp.status, 200);
  t.equal(parseExposition(await tcp.text()).value('aegis_agent_datapath_available'), 0, 'the TCP listener serves the same');
});

if (requireCapability(t, missingCommand('promtool', 'nats-server'))) {
  t.test('an enforced service: counters move with real traffic; both endpoints; documented names and labels', { timeout: 120_000 }, async (t) => {
    if (!requireCapability(t, await missingDatapath())) return;
    const nats = await startNats();
    t.teardown(() => nats.stop());
    const s = await startTestServer({ natsUrl: nats.url });
    t.teardown(() => s.close());
    const cust = await s.req('POST', '/api/v1/customers', { name: 'Metrics' });
    const lic = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual', max_machines: 1 });
    t.equal(lic.status, 201, JSON.stringify(lic.body));
    const allowed = await listen();
    const denied = await listen();
    t.teardown(() => {
      allowed.srv.close();
      denied.srv.close();
    });
    const cgroup = makeCgroup('agent-metrics');
    const pinRoot = testPinRoot('agent-metrics');
    const dir = agentDir();
    // nogroup: nobody's primary group, so user nobody may read the socket and user daemon may not.
    const a = await startAgent({
      serverUrl: s.url,
      dir,
      pinRoot,
      services: { '411': cgroup },
      hardwareFacts: { machine_id: `metrics-host-${process.pid}` },
      extraConfig: { metrics_listen: '127.0.0.1:0', socket_group: 'nogroup', nats_url: nats.url, status_interval_seconds: 1 },
    });
    t.teardown(async () => {
      await a.stop();
      removeCgroup(cgroup);
      await purgePins(pinRoot).catch(() => undefined);
      cleanupDir(dir);
    });
    await a.waitReady();
    const act = await a.api('POST', '/v1/activate', { license_key: lic.body.license_key });
    t.equal(act.status, 200, JSON.stringify(act.body));
    const put = await a.api('PUT', '/v1/snapshots/411', {
      version: 1,
      service_id: 411,
      edges: [
        { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: allowed.port },
        { dst_cidr: '127.0.0.1/32', proto: 'tcp', port: allowed.port },
      ],
      ttl_seconds: 3600,
    });
    t.equal(put.status, 200, JSON.stringify(put.body));
    t.equal(put.body.mode, 'enforce', 'licensed with segmentation_enforce: enforced');
    const revision = put.body.revision as number;

    const scrape = async (): Promise<{ text: string; e: Exposition }> => {
      const r = await socketGet(a.socket, '/metrics');
      t.equal(r.status, 200, 'GET /metrics on the control socket');
      return { text: r.text, e: parseExposition(r.text) };
    };
    const packets = (e: Exposition, verdict: string) => e.value('aegis_agent_service_packets_total', { service: '411', verdict }) ?? -1;
    const rule1 = (e: Exposition) => e.value('aegis_agent_rule_flows_total', { service: '411', direction: 'egress', rule: '1' }) ?? 0;

    const before = (await scrape()).e;
    t.same(await probe(cgroup, [allowed.port, denied.port]), [true, false], 'real traffic: the allowed port connects, the other is refused');
    // Flow events reach the agent asynchronously (ring buffer → addon → JS).
    let after = before;
    for (let i = 0; i < 100; i++) {
      after = (await scrape()).e;
      if ((after.value('aegis_agent_flow_log_entries_total') ?? 0) >= 2) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    t.ok(packets(after, 'allow') >= packets(before, 'allow') + 1, `allow moved (${packets(before, 'allow')} → ${packets(after, 'allow')})`);
    t.ok(packets(after, 'deny') >= packets(before, 'deny') + 1, `deny moved (${packets(before, 'deny')} → ${packets(after, 'deny')})`);
    t.equal(packets(after, 'would_deny'), 0, 'enforce mode: nothing merely would be denied');
    t.ok(rule1(after) >= 1, 'the deciding rule (edges[1], the /32) counted the new flow');
    t.equal(after.value('aegis_agent_rule_flows_total', { service: '411', direction: 'egress', rule: '0' }), undefined, 'edges[0] decided nothing: no series');
    t.ok((after.value('aegis_agent_rule_unmatched_flows_total', { service: '411' }) ?? 0) >= 1, 'the denied flow matched no rule');
    t.ok((after.value('aegis_agent_flow_events_total', { service: '411' }) ?? 0) >= 2, 'the datapath emitted flow events');
    t.equal(after.value('aegis_agent_flow_events_lost_total', { service: '411' }), 0, 'none lost at this rate');
    t.ok((after.value('aegis_agent_flow_log_entries_total') ?? 0) >= 2, 'the agent received them into its flow log');
    t.equal(after.value('aegis_agent_snapshot_revision', { service: '411' }), revision, 'the applied revision');
    t.equal(after.value('aegis_agent_snapshot_mode', { service: '411', mode: 'enforce' }), 1);
    t.equal(after.value('aegis_agent_snapshot_mode', { service: '411', mode: 'observe' }), 0);
    const ttl = after.value('aegis_agent_snapshot_ttl_seconds', { service: '411' }) ?? 0;
    t.ok(ttl > 3500 && ttl <= 3600, `TTL left ${ttl}`);
    const apply = after.value('aegis_agent_last_apply_duration_seconds', { service: '411' }) ?? 0;
    t.ok(apply > 0 && apply < 10, `last apply took ${apply} s`);
    t.equal(after.value('aegis_agent_service_bound', { service: '411' }), 1);
    t.equal(after.value('aegis_agent_datapath_available'), 1);
    t.equal(after.value('aegis_agent_license_state', { state: 'licensed' }), 1);
    t.equal(after.value('aegis_agent_license_state', { state: 'community' }), 0);
    t.equal(after.value('aegis_agent_licensed'), 1);
    // NATS: the agent reconnected as its machine at activation and reports every second.
    let withNats = after;
    for (let i = 0; i < 150; i++) {
      withNats = (await scrape()).e;
      if (withNats.value('aegis_agent_nats_connected') === 1 && (withNats.value('aegis_agent_last_report_timestamp_seconds') ?? 0) > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.equal(withNats.value('aegis_agent_nats_configured'), 1);
    t.equal(withNats.value('aegis_agent_nats_connected'), 1, 'connected to nats-server');
    const reported = withNats.value('aegis_agent_last_report_timestamp_seconds') ?? 0;
    t.ok(reported > Date.now() / 1000 - 30 && reported <= Date.now() / 1000 + 1, `a status report went out (${reported})`);
    const token = (await a.api('GET', '/v1/token')).body;
    t.equal(after.value('aegis_agent_kernel_token_expiry_seconds'), Date.parse(token.expires_at) / 1000, 'the kernel token\'s exp, as GET /v1/token says');

    // More traffic: the counters move again (collected at each scrape, not cached).
    t.same(await probe(cgroup, [allowed.port, allowed.port, denied.port]), [true, true, false]);
    let again = after;
    for (let i = 0; i < 100; i++) {
      again = (await scrape()).e;
      if (rule1(again) >= rule1(after) + 2) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    t.ok(rule1(again) >= rule1(after) + 2, `per-rule count moved again (${rule1(after)} → ${rule1(again)})`);
    t.ok(packets(again, 'allow') >= packets(after, 'allow') + 2, 'allow moved again');
    t.ok(packets(again, 'deny') > packets(after, 'deny'), 'deny moved again');

    const { text } = await scrape();
    promtoolClean(t, text, 'control socket');
    const url = await metricsUrl(a);
    t.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const tcp = await fetch(`${url}/metrics`);
    t.equal(tcp.status, 200, 'GET /metrics on metrics_listen');
    const tcpText = await tcp.text();
    promtoolClean(t, tcpText, 'TCP listener');
    t.ok((parseExposition(tcpText).value('aegis_agent_rule_flows_total', { service: '411', direction: 'egress', rule: '1' }) ?? 0) >= rule1(again), 'the TCP listener serves the same counters');
    t.equal((await fetch(`${url}/v1/status`)).status, 404, 'the TCP listener serves nothing but /metrics');
    t.equal((await fetch(`${url}/metrics`, { method: 'POST' })).status, 405);

    // The control socket's rules: a read, so socket_group (nogroup) may; a user outside it cannot connect.
    // The test's directory is 0700: let others reach the socket, so its own mode decides.
    chmodSync(dir, 0o711);
    const asUser = (user: string) =>
      spawnSync('runuser', ['-u', user, '--', process.execPath, '-e', `require('http').get({socketPath:${JSON.stringify(a.socket)},path:'/metrics'},r=>{console.log(r.statusCode);process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(1)})`], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH },
      });
    t.equal(asUser('nobody').stdout.trim(), '200', 'a member of socket_group reads /metrics');
    t.equal(asUser('daemon').stdout.trim(), 'EACCES', 'a user outside socket_group cannot connect');

    // The contract: every documented family exported with exactly its type and labels.
    const doc = documentedAgentFamilies();
    t.ok(doc.size >= 20, `docs/observability.md lists the agent families (${doc.size})`);
    const e = parseExposition(text);
    for (const [name, want] of doc) {
      t.equal(e.types.get(name), want.type, `${name} is exported as a ${want.type}`);
      const samples = e.all(name);
      t.ok(samples.length > 0, `${name} has samples`);
      for (const sm of samples) t.same(Object.keys(sm.labels).sort(), want.labels, `${name} labels are ${want.labels.join(', ') || 'none'}`);
    }
    for (const name of e.types.keys()) if (name.startsWith('aegis_agent_')) t.ok(doc.has(name), `${name} is documented`);
  });
}

