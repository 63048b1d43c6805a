/**
 * The agent's mTLS listener URLs as a list (agent_server_url as a comma list, or
 * agent_server_urls): two real aegis-server replicas with the agent listener on one
 * PostgreSQL, sharing signing keys and CA. The real agent skips a listener whose
 * certificate does not chain to the pinned CA (a third server with its own CA), uses the
 * first replica's listener, and when that replica goes away continues over mTLS through
 * the second one, not through the host-proof fallback. Only https:// URLs are accepted.
 */
import t from 'tap';
import { rmSync } from 'node:fs';
import { loadConfig, agentServerUrlsOf } from '../agent/src/config.js';
import { startMtlsServer, type MtlsTestServer } from './harness/mtls.js';
import { startAgent, agentDir, cleanupDir } from './harness/agent.js';
import { missingPostgres, startPostgres } from './harness/postgres.js';
import { requireCapability } from './harness/capabilities.js';

t.test('config: agent_server_url as a comma list, or agent_server_urls; https:// only', async (t) => {
  const env = {} as NodeJS.ProcessEnv;
  const list = loadConfig({ env: { AEGIS_AGENT_SERVER_URL: 'https://a.example:8443,https://b.example:8443' } });
  t.same(agentServerUrlsOf(list.config), ['https://a.example:8443', 'https://b.example:8443']);
  const arr = loadConfig({ env, flags: { agent_server_url: 'https://x.example', agent_server_urls: ['https://c.example', 'https://d.example'] } });
  t.same(agentServerUrlsOf(arr.config), ['https://c.example', 'https://d.example'], 'agent_server_urls wins');
  t.same(agentServerUrlsOf(loadConfig({ env }).config), [], 'none: no mTLS');
  t.throws(() => loadConfig({ env: { AEGIS_AGENT_SERVER_URL: 'https://a.example,http://b.example' } }), /agent_server_url/, 'a plain http:// second listener is refused');
  t.throws(() => loadConfig({ env, flags: { agent_server_urls: ['https://a.example', 'http://127.0.0.1:8443'] } }), /agent_server_urls/, 'http:// is refused in the array, even to loopback');
  t.throws(() => loadConfig({ env, flags: { agent_server_urls: ['https://a.example', 'https://a.example'] } }), /agent_server_urls/, 'a URL twice is refused');
});

t.test('two replicas: the agent continues over mTLS through the second when the first goes away', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  const pgc = await startPostgres();
  t.teardown(() => pgc.stop());
  const db = await pgc.newDatabase();
  const a: MtlsTestServer = await startMtlsServer({ databaseUrl: db });
  let aClosed = false;
  // A's directory holds the keys B shares: removed only after both are done.
  t.teardown(() => (aClosed ? rmSync(a.dir, { recursive: true, force: true }) : a.close()));
  const b = await startMtlsServer({ databaseUrl: db, keysDir: `${a.dir}/keys` });
  t.teardown(() => b.close());
  // A real agent listener, but with a CA of its own: its certificate is not the pinned CA's.
  const stranger = await startMtlsServer();
  t.teardown(() => stranger.close());

  const c = await a.req('POST', '/api/v1/customers', { name: 'mTLS failover' });
  const l = await a.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
  t.equal(l.status, 201, JSON.stringify(l.body));

  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const listeners = [stranger.agentUrl, a.agentUrl, b.agentUrl];
  const agent = await startAgent({
    serverUrl: `${a.url},${b.url}`,
    dir,
    hardwareFacts: { machine_id: `mtls-failover-${process.pid}-${Math.random()}`, macs: ['52:54:00:aa:bb:02'] },
    extraConfig: { agent_server_urls: listeners, fallback_interval_seconds: 1, hostname: 'mtls-failover' },
  });
  t.teardown(() => agent.stop());
  await agent.waitReady();
  const act = await agent.api('POST', '/v1/activate', { license_key: l.body.license_key });
  t.equal(act.status, 200, JSON.stringify(act.body));
  await agent.waitFor(() => agent.logs.some((x) => x.includes('client certificate installed')), 10_000, 'certificate');

  const mtls = async () => (await agent.api('GET', '/v1/status')).body.mtls as { url: string; urls: string[]; last_ok_at: string | null };
  const waitMtls = async (cond: (m: Awaited<ReturnType<typeof mtls>>) => boolean, what: string) => {
    const end = Date.now() + 15_000;
    for (;;) {
      const m = await mtls();
      if (cond(m)) return m;
      if (Date.now() > end) throw new Error(`timed out: ${what} (${JSON.stringify(m)}); agent log tail:\n${agent.logs.slice(-30).join('\n')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const onA = await waitMtls((m) => m.url === a.agentUrl && m.last_ok_at !== null, 'mTLS through A');
  t.same(onA.urls, listeners, 'status lists every listener in order');
  t.ok(
    agent.logs.some((x) => x.includes(`${stranger.agentUrl} is not trusted: its certificate does not verify against the pinned CA`)),
    'the listener with a foreign certificate is named untrusted and skipped',
  );

  // A goes away: the next calls go to B's listener, still over mTLS.
  const mark = agent.logs.length;
  await a.app.close();
  aClosed = true;
  const killedAt = Date.now();
  const onB = await waitMtls((m) => m.url === b.agentUrl && m.last_ok_at !== null && Date.parse(m.last_ok_at) > killedAt, 'mTLS through B');
  t.equal(onB.url, b.agentUrl, 'B is the listener in use');
  const after = agent.logs.slice(mark);
  t.ok(after.some((x) => x.includes('trying the next agent listener URL')), 'the failover is logged');
  t.notOk(after.some((x) => x.includes('over mTLS failed; using the host-proof route')), 'no call fell back to the host-proof route');
  // Stays on B (sticky) and keeps succeeding.
  const later = await waitMtls((m) => m.last_ok_at !== null && Date.parse(m.last_ok_at) > Date.parse(onB.last_ok_at!) + 1500, 'more mTLS calls through B');
  t.equal(later.url, b.agentUrl, 'still B');
  t.equal((await agent.api('GET', '/v1/status')).body.edition, 'licensed', 'still licensed');
});
