/**
 * Attack: flood a service with allowed new flows so the flow-event budget is spent, then
 * send denied packets: every denial still produces its event, because allowed events draw
 * on their own token bucket. The process is pinned to one CPU so the flood and the
 * denials meet the same per-CPU buckets (otherwise they might never share one). What the
 * allowed bucket suppresses is counted in eventsLost. Real kernel, BPF_PROG_TEST_RUN.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { requireCapability } from '../harness/capabilities.js';
import { missingDatapath, testPinRoot } from '../harness/datapath.js';
import { buildPacket, open, TCP_SYN, type FlowEvent } from '../../agent/src/datapath/index.js';

t.test('a flood of allowed flows does not suppress denial events', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  // Every thread of this process (the addon's workers run the test packets) on CPU 0.
  execFileSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });
  const dp = await open({ pinRoot: testPinRoot('flood'), flowEventsPerSecond: 5, flowEventBurst: 20, allowedFlowEventsPerSecond: 5, allowedFlowEventBurst: 20 });
  t.teardown(() => dp.purge());
  const svc = 77;
  await dp.apply(svc, { edges: [{ dst_cidr: '10.1.0.0/16', proto: 'tcp', port: 443 }] }, { mode: 'enforce', expiresAt: Date.now() + 3_600_000, generation: 1 });
  const events: FlowEvent[] = [];
  const off = dp.onFlow((e) => {
    if (e.serviceId === svc) events.push(e);
  });
  t.teardown(off);

  const flood = 20_000;
  const allowed = await dp.testVerdict('egress', buildPacket({ src: '10.9.0.2', dst: '10.1.2.3', proto: 'tcp', sport: 40000, dport: 443, tcpFlags: TCP_SYN }), { serviceId: svc, repeat: flood });
  t.same([allowed.verdict, allowed.reason], ['pass', 'allowed'], 'the flood is allowed');
  const denials = 15;
  for (let i = 0; i < denials; i++) {
    const r = await dp.testVerdict('egress', buildPacket({ src: '10.9.0.2', dst: '10.2.0.9', proto: 'tcp', sport: 41000 + i, dport: 22, tcpFlags: TCP_SYN }), { serviceId: svc });
    t.equal(r.verdict, 'drop');
  }
  for (let i = 0; i < 100 && events.filter((e) => e.verdict === 'dropped').length < denials; i++) await new Promise((r) => setTimeout(r, 20));
  const dropped = events.filter((e) => e.verdict === 'dropped');
  const allowedEvents = events.filter((e) => e.verdict === 'allowed');
  t.equal(dropped.length, denials, `every denial produced its event (${dropped.length} of ${denials}) after ${flood} allowed flows`);
  t.ok(dropped.every((e) => e.rule === null && e.dport === 22 && e.reason === 'policy'), 'denial events name no rule');
  t.ok(allowedEvents.length >= 1 && allowedEvents.length <= 25, `allowed events were capped by their own bucket (${allowedEvents.length})`);
  t.ok(allowedEvents.every((e) => e.rule === 0), 'allowed events name edges[0]');
  const c = (await dp.stats()).find((s) => s.serviceId === svc)!.counters!;
  t.ok(c.eventsLost >= flood - 25, `the suppressed allowed events are counted in eventsLost (${c.eventsLost})`);
  const rc = await dp.ruleCounters(svc);
  t.same(rc.rules, [{ direction: 'egress', index: 0, count: flood }], 'the per-rule counter saw every allowed flow');
  t.equal(rc.noRule, denials, 'and every denial under no rule');
});
