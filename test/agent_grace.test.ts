/**
 * A real agent process and its license's heartbeat and grace policy:
 *
 *   - on a license that wants heartbeats, the agent sends them (signed with its host key,
 *     its seq growing) and the server's machine shows them; once it stops, the culler
 *     frees its seat after the window
 *   - a license token past its exp within the license's grace period keeps the host
 *     licensed: `license_state: grace` in the agent's status and in aegisctl status,
 *     the licensed features still on; after the grace it falls to the community edition
 *
 * The agent runs under a test clock offset (AEGIS_TEST_CLOCK_OFFSET_SECONDS) to be later
 * than its token's exp, offline, as a host that lost contact with the server would be.
 */
import t from 'tap';
import { startTestServer } from './harness/server.js';
import { agentDir, cleanupDir, startAgent } from './harness/agent.js';
import { execFile } from 'node:child_process';
import { CTL } from './harness/ctl.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** aegisctl against an agent's socket (asynchronous: the server under test shares this event loop). */
const ctl = (socket: string, ...args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [CTL, '--socket', socket, '-q', ...args], { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });

t.test('the agent heartbeats when its license requires it; a silent host is culled', async (t) => {
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const s = await startTestServer();
  t.teardown(() => s.close());
  const c = await s.req('POST', '/api/v1/customers', { name: 'Heartbeat Agent Co' });
  const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', heartbeat_interval_seconds: 4 });
  const a = await startAgent({ serverUrl: s.url, dir, hardwareFacts: { machine_id: `hb-agent-${process.pid}`, macs: ['52:54:00:aa:dd:01'] } });
  await a.waitReady();
  const act = await a.api('POST', '/v1/activate', { license_key: l.body.license_key });
  t.equal(act.status, 200, `activated: ${act.status}`);
  const machineId = (await a.api('GET', '/v1/status')).body.machine_id as string;
  let m: any = null;
  for (let i = 0; i < 40; i++) {
    m = (await s.req('GET', `/api/v1/machines/${machineId}`)).body;
    if (m.last_heartbeat_at && Date.parse(m.last_heartbeat_at) > Date.parse(m.activated_at) + 1500) break;
    await sleep(250);
  }
  t.equal(m.heartbeat_status, 'alive', 'the machine is alive');
  t.ok(Date.parse(m.last_heartbeat_at) > Date.parse(m.activated_at) + 1500, `heartbeats keep arriving (last ${m.last_heartbeat_at}, activated ${m.activated_at})`);
  t.ok((await a.api('GET', '/v1/status')).body.last_heartbeat_at, 'the agent shows its last heartbeat');
  await a.stop();
  s.clock.offsetMs += 10_000; // past the 4 s window: the host is silent
  const culled = await s.app.lifecycle.cull();
  t.ok(culled.deactivated.includes(machineId), 'the silent host is culled');
  t.equal((await s.req('GET', `/api/v1/machines/${machineId}`)).body.status, 'deactivated', 'its seat is freed');
});

t.test('past its exp within grace the agent reports license_state grace and keeps its features, then falls to community', async (t) => {
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const s = await startTestServer({ licenseTokenTtlSeconds: 120, kernelTokenTtlSeconds: 60 });
  const c = await s.req('POST', '/api/v1/customers', { name: 'Grace Agent Co' });
  const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', grace_period_seconds: 3600 });
  const facts = { machine_id: `grace-${process.pid}`, macs: ['52:54:00:aa:ee:01'] };
  const run = async (offsetSeconds: number) => {
    const a = await startAgent({ serverUrl: s.url, dir, hardwareFacts: facts, env: { AEGIS_TEST_CLOCK_OFFSET_SECONDS: String(offsetSeconds) } });
    await a.waitReady();
    return a;
  };

  const first = await run(0);
  const act = await first.api('POST', '/v1/activate', { license_key: l.body.license_key });
  t.equal(act.status, 200, `activated: ${act.status}`);
  const st1 = (await first.api('GET', '/v1/status')).body;
  t.match(st1, { edition: 'licensed', license_state: 'licensed', grace_ends_at: null });
  const claims = (await first.api('GET', '/v1/license')).body.license;
  t.equal(claims.grace_seconds, 3600, 'the token carries the grace claim');
  await first.stop();
  await s.close(); // out of contact from here on

  // 10 minutes on: the token (exp 120 s after issue) is expired, the grace (3600 s) runs.
  const second = await run(600);
  const st2 = (await second.api('GET', '/v1/status')).body;
  t.equal(st2.license_state, 'grace', 'status says grace');
  t.equal(st2.edition, 'licensed', 'still the licensed edition');
  t.same(st2.features, st1.features, 'licensed features stay enforced');
  t.equal(st2.grace_ends_at, new Date((claims.exp + 3600) * 1000).toISOString(), 'grace ends at exp + grace_seconds');
  const human = await ctl(second.socket, 'status');
  t.equal(human.code, 0, human.stderr);
  t.match(human.stdout, /License state:\s+grace \(until /, 'aegisctl status shows the grace state');
  const ctlJson = JSON.parse((await ctl(second.socket, 'status', '--json')).stdout);
  t.equal(ctlJson.license_state, 'grace', 'and in --json');
  await second.stop();

  // Past the grace: community.
  const third = await run(4000);
  t.teardown(() => third.stop());
  const st3 = (await third.api('GET', '/v1/status')).body;
  t.equal(st3.edition, 'community', 'after the grace the host is community');
  t.not(st3.license_state, 'grace');
  t.same(st3.features, [], 'no licensed features');
});
