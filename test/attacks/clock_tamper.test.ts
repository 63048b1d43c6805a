/**
 * Setting the host clock back does not bring an expired license back. A real agent runs
 * under a test clock offset (AEGIS_TEST_CLOCK_OFFSET_SECONDS): it activates, runs offline
 * past its token's exp (the clock ten minutes on), and is then started with its clock set
 * back, to a time at which the token's exp (120 s after issue) has not passed. It stays in
 * the community edition and says clock_tampered.
 */
import t from 'tap';
import { startTestServer } from '../harness/server.js';
import { agentDir, cleanupDir, startAgent } from '../harness/agent.js';

t.test('a clock set back leaves an expired token expired and reports clock_tampered', async (t) => {
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const s = await startTestServer({ licenseTokenTtlSeconds: 120, kernelTokenTtlSeconds: 60 });
  const c = await s.req('POST', '/api/v1/customers', { name: 'Clock Co' });
  const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
  const facts = { machine_id: `clock-${process.pid}`, macs: ['52:54:00:aa:cc:01'] };
  const run = async (offsetSeconds: number) => {
    const a = await startAgent({ serverUrl: s.url, dir, hardwareFacts: facts, env: { AEGIS_TEST_CLOCK_OFFSET_SECONDS: String(offsetSeconds) } });
    await a.waitReady();
    return a;
  };

  const first = await run(0);
  const act = await first.api('POST', '/v1/activate', { license_key: l.body.license_key });
  t.equal(act.status, 200, `activated: ${JSON.stringify(act.body)}`);
  const claims = (await first.api('GET', '/v1/license')).body;
  const st1 = (await first.api('GET', '/v1/status')).body;
  t.equal(st1.edition, 'licensed');
  t.equal(st1.clock.clock_tampered, false, 'a clock in step is not tampering');
  await first.stop();
  await s.close(); // offline from here on: only the host's own records decide

  // The true time runs past the token's exp (120 s): the host sees it expire.
  const second = await run(600);
  const st2 = (await second.api('GET', '/v1/status')).body;
  t.equal(st2.edition, 'community', 'past its exp the token is expired');
  await second.stop();

  // Clock set back ten minutes: by this clock the token's exp is still ahead.
  const third = await run(0);
  const exp = Number(st1.clock.newest_signed_iat) + 120;
  t.ok(Math.floor(Date.now() / 1000) < exp, `by the set-back clock the token would still be valid (exp ${exp}) — the attack is real`);
  t.teardown(() => third.stop());
  const st3 = (await third.api('GET', '/v1/status')).body;
  t.equal(st3.edition, 'community', 'setting the clock back does not make the token valid again');
  t.equal(st3.clock.clock_tampered, true, 'status says clock_tampered');
  t.ok(st3.clock.behind_seconds > 300, `the clock is ${st3.clock.behind_seconds} s behind what the host saw`);
  t.equal(st3.clock.newest_signed_iat_source, 'license token');
  t.ok(third.logs.some((line) => line.includes('clock_tampered')), 'and logs it');
  t.ok(claims, 'license view answered');
});
