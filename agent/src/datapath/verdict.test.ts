/**
 * Verdict tables through BPF_PROG_TEST_RUN on the real kernel: IPv4 and IPv6, tcp/udp/any,
 * port 0, every prefix length, egress and ingress, observe vs enforce, expired policies
 * (fail-open and fail-closed), unbound cgroups, established TCP and UDP replies.
 */
import t from 'tap';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { buildPacket, open, TCP_ACK, TCP_SYN } from './index.js';
import type { Datapath, PacketSpec, TestVerdict } from './index.js';
import { parseCidr, formatAddr } from '../../../protocol/src/index.js';
import { missingDatapath, testPinRoot } from '../../../test/harness/datapath.js';

const LOCAL4 = '10.99.0.2';
const LOCAL6 = 'fd00:99::2';

function egress(dst: string, proto: PacketSpec['proto'], dport: number, extra: Partial<PacketSpec> = {}): PacketSpec {
  const v6 = dst.includes(':');
  return { src: v6 ? LOCAL6 : LOCAL4, dst, proto, sport: 40000, dport, ...extra };
}

function ingress(src: string, proto: PacketSpec['proto'], dport: number, extra: Partial<PacketSpec> = {}): PacketSpec {
  const v6 = src.includes(':');
  return { src, dst: v6 ? LOCAL6 : LOCAL4, proto, sport: 50000, dport, ...extra };
}

/** `addr` with bit `bit` (0 = most significant) flipped. */
function flipBit(addr: string, bit: number): string {
  const c = parseCidr(addr);
  const b = Uint8Array.from(c.addr);
  b[bit >> 3]! ^= 0x80 >> (bit & 7);
  return formatAddr(c.family, b);
}

function masked(addr: string, len: number): string {
  const c = parseCidr(`${addr}/${len}`);
  return c.canonical;
}

t.test('datapath verdicts (BPF_PROG_TEST_RUN)', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const pinRoot = testPinRoot('verdict');
  const dp: Datapath = await open({ pinRoot });
  t.teardown(async () => {
    await dp.purge();
  });
  const future = Date.now() + 3_600_000;
  const verdict = (dir: 'egress' | 'ingress', spec: PacketSpec, serviceId?: number): Promise<TestVerdict> =>
    dp.testVerdict(dir, buildPacket(spec), serviceId === undefined ? {} : { serviceId });

  t.test('protocols, ports and families (enforce)', async (t) => {
    const svc = 101;
    await dp.apply(
      svc,
      {
        edges: [
          { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 },
          { dst_cidr: '192.168.1.5/32', proto: 'udp', port: 53 },
          { dst_cidr: '198.51.100.0/24', proto: 'any', port: 7000 },
          { dst_cidr: '203.0.113.9/32', proto: 'tcp', port: 0 },
          { dst_cidr: '2001:db8::/32', proto: 'any', port: 8080 },
          { dst_cidr: '2001:db8:1::5/128', proto: 'udp', port: 0 },
        ],
        allow_cidrs: [
          { cidr: '172.16.0.0/12', proto: 'tcp', port: 5432 },
          { cidr: '0.0.0.0/0', proto: 'tcp', port: 22 },
          { cidr: 'fd00:aa::/64', proto: 'any', port: 0 },
        ],
      },
      { mode: 'enforce', expiresAt: future, generation: 1 },
    );
    const cases: Array<[string, 'egress' | 'ingress', PacketSpec, 'pass' | 'drop', string]> = [
      ['v4 tcp in /8, right port', 'egress', egress('10.200.3.4', 'tcp', 443), 'pass', 'allowed'],
      ['v4 tcp in /8, wrong port', 'egress', egress('10.200.3.4', 'tcp', 444), 'drop', 'dropped'],
      ['v4 udp to tcp-only edge', 'egress', egress('10.200.3.4', 'udp', 443), 'drop', 'dropped'],
      ['v4 outside /8', 'egress', egress('11.0.0.1', 'tcp', 443), 'drop', 'dropped'],
      ['v4 udp /32 right port', 'egress', egress('192.168.1.5', 'udp', 53), 'pass', 'allowed'],
      ['v4 udp /32 neighbour', 'egress', egress('192.168.1.6', 'udp', 53), 'drop', 'dropped'],
      ['v4 tcp to udp-only edge', 'egress', egress('192.168.1.5', 'tcp', 53), 'drop', 'dropped'],
      ['any = tcp', 'egress', egress('198.51.100.77', 'tcp', 7000), 'pass', 'allowed'],
      ['any = udp', 'egress', egress('198.51.100.77', 'udp', 7000), 'pass', 'allowed'],
      ['any, wrong port', 'egress', egress('198.51.100.77', 'udp', 7001), 'drop', 'dropped'],
      ['port 0 = every tcp port (1)', 'egress', egress('203.0.113.9', 'tcp', 1), 'pass', 'allowed'],
      ['port 0 = every tcp port (65535)', 'egress', egress('203.0.113.9', 'tcp', 65535), 'pass', 'allowed'],
      ['port 0 tcp-only: udp dropped', 'egress', egress('203.0.113.9', 'udp', 80), 'drop', 'dropped'],
      ['v6 any tcp', 'egress', egress('2001:db8:ffff::1', 'tcp', 8080), 'pass', 'allowed'],
      ['v6 any udp', 'egress', egress('2001:db8:ffff::1', 'udp', 8080), 'pass', 'allowed'],
      ['v6 outside /32', 'egress', egress('2001:db9::1', 'tcp', 8080), 'drop', 'dropped'],
      ['v6 udp /128 port 0', 'egress', egress('2001:db8:1::5', 'udp', 9999), 'pass', 'allowed'],
      ['v6 /128 neighbour', 'egress', egress('2001:db8:1::6', 'udp', 9999), 'drop', 'dropped'],
      // IPv4 is keyed v4-mapped, so a v4-mapped IPv6 address is its IPv4 address.
      ['v4-mapped v6 address = its IPv4', 'egress', egress('::ffff:10.0.0.1', 'tcp', 443), 'pass', 'allowed'],
      ['ingress v4 /12 to local 5432', 'ingress', ingress('172.20.1.1', 'tcp', 5432), 'pass', 'allowed'],
      ['ingress v4 /12 to local 5433', 'ingress', ingress('172.20.1.1', 'tcp', 5433), 'drop', 'dropped'],
      ['ingress outside /12', 'ingress', ingress('172.32.0.1', 'tcp', 5432), 'drop', 'dropped'],
      ['ingress 0.0.0.0/0 tcp 22', 'ingress', ingress('8.8.8.8', 'tcp', 22), 'pass', 'allowed'],
      ['ingress 0.0.0.0/0 does not cover v6', 'ingress', ingress('2001:4860::1', 'tcp', 22), 'drop', 'dropped'],
      ['ingress v6 /64 any port udp', 'ingress', ingress('fd00:aa::9', 'udp', 12345), 'pass', 'allowed'],
      ['ingress v6 /64 any port tcp', 'ingress', ingress('fd00:aa::9', 'tcp', 1), 'pass', 'allowed'],
      ['ingress v6 outside /64', 'ingress', ingress('fd00:ab::9', 'tcp', 1), 'drop', 'dropped'],
      // edges are egress-only and allow_cidrs ingress-only.
      ['egress rule does not admit ingress', 'ingress', ingress('10.1.1.1', 'tcp', 443), 'drop', 'dropped'],
      ['ingress rule does not admit egress', 'egress', egress('172.20.1.1', 'tcp', 5432), 'drop', 'dropped'],
      // A TCP segment of no tracked flow is judged whatever its flags, and so is every
      // other protocol: nothing here allows them.
      ['tcp ACK of no tracked flow egress', 'egress', egress('11.0.0.1', 'tcp', 443, { tcpFlags: TCP_ACK }), 'drop', 'dropped'],
      ['tcp SYN-ACK of no tracked flow ingress', 'ingress', ingress('11.0.0.1', 'tcp', 40000, { tcpFlags: TCP_SYN | TCP_ACK }), 'drop', 'dropped'],
      ['tcp ACK of no tracked flow, allowed destination', 'egress', egress('10.1.2.3', 'tcp', 443, { tcpFlags: TCP_ACK }), 'pass', 'allowed'],
      ['icmp not allowed', 'egress', egress('11.0.0.1', 1, 0), 'drop', 'dropped'],
    ];
    for (const [name, dir, spec, want, reason] of cases) {
      const v = await verdict(dir, spec, svc);
      t.same({ verdict: v.verdict, reason: v.reason }, { verdict: want, reason }, name);
    }
  });

  t.test('every prefix length /0../32 and /0../128', async (t) => {
    const svc = 102;
    const v4 = '203.0.113.77';
    const v6 = '2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff';
    const edges = [];
    for (let len = 0; len <= 32; len++) edges.push({ dst_cidr: masked(v4, len), proto: 'tcp' as const, port: 10000 + len });
    for (let len = 0; len <= 128; len++) edges.push({ dst_cidr: masked(v6, len), proto: 'tcp' as const, port: 20000 + len });
    const r = await dp.apply(svc, { edges }, { mode: 'enforce', expiresAt: future, generation: 7 });
    t.equal(r.rules, 33 + 129, 'all prefix rules written');
    let ok = 0;
    for (let len = 0; len <= 32; len++) {
      const inside = await verdict('egress', egress(v4, 'tcp', 10000 + len), svc);
      if (inside.verdict === 'pass') ok++;
      else t.fail(`v4 /${len}: address inside the prefix dropped`);
      if (len > 0) {
        const outside = await verdict('egress', egress(flipBit(v4, len - 1), 'tcp', 10000 + len), svc);
        if (outside.verdict === 'drop') ok++;
        else t.fail(`v4 /${len}: address outside the prefix passed`);
      }
    }
    for (let len = 0; len <= 128; len++) {
      const inside = await verdict('egress', egress(v6, 'tcp', 20000 + len), svc);
      if (inside.verdict === 'pass') ok++;
      else t.fail(`v6 /${len}: address inside the prefix dropped`);
      if (len > 0) {
        const outside = await verdict('egress', egress(flipBit(v6, len - 1), 'tcp', 20000 + len), svc);
        if (outside.verdict === 'drop') ok++;
        else t.fail(`v6 /${len}: address outside the prefix passed`);
      }
    }
    t.equal(ok, 33 + 32 + 129 + 128, 'inside passes and just-outside drops at every prefix length');
  });

  t.test('observe mode counts would-drops and passes', async (t) => {
    const svc = 103;
    await dp.apply(svc, { edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 }] }, { mode: 'observe', expiresAt: future, generation: 3 });
    const allowed = await verdict('egress', egress('10.1.1.1', 'tcp', 443), svc);
    const denied = await verdict('egress', egress('11.1.1.1', 'tcp', 443), svc);
    const denied6 = await verdict('ingress', ingress('2001:db8::1', 'udp', 53), svc);
    t.same([allowed.verdict, allowed.reason], ['pass', 'allowed']);
    t.same([denied.verdict, denied.reason], ['pass', 'would-drop']);
    t.same([denied6.verdict, denied6.reason], ['pass', 'would-drop']);
    const s = (await dp.stats()).find((x) => x.serviceId === svc)!;
    t.equal(s.policy?.mode, 'observe');
    t.equal(s.policy?.generation, 3);
    t.match(s.counters, { allowed: 1, wouldDrop: 2, dropped: 0 }, 'counters: 1 allowed, 2 would-drop');
    // The same policy in enforce mode drops.
    await dp.apply(svc, { edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 }] }, { mode: 'enforce', expiresAt: future, generation: 4 });
    const now = await verdict('egress', egress('11.1.1.1', 'tcp', 443), svc);
    t.same([now.verdict, now.reason], ['drop', 'dropped']);
  });

  t.test('expired policy: fail-open and fail-closed', async (t) => {
    const rules = { edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp' as const, port: 443 }] };
    const past = Date.now() - 1000;
    await dp.apply(104, rules, { mode: 'enforce', expiresAt: past, generation: 1, onExpiry: 'fail-open' });
    await dp.apply(105, rules, { mode: 'enforce', expiresAt: past, generation: 1, onExpiry: 'fail-closed' });
    await dp.apply(106, rules, { mode: 'observe', expiresAt: past, generation: 1, onExpiry: 'fail-closed' });
    await dp.apply(107, rules, { mode: 'enforce', expiresAt: Date.now() + 1500, generation: 1, onExpiry: 'fail-closed' });
    for (const dst of ['10.1.1.1', '11.1.1.1']) {
      const open = await verdict('egress', egress(dst, 'tcp', 443), 104);
      t.same([open.verdict, open.reason], ['pass', 'expired-open'], `fail-open passes ${dst}`);
      const closed = await verdict('egress', egress(dst, 'tcp', 443), 105);
      t.same([closed.verdict, closed.reason], ['drop', 'expired-closed'], `fail-closed drops ${dst}`);
      const observed = await verdict('egress', egress(dst, 'tcp', 443), 106);
      t.same([observed.verdict, observed.reason], ['pass', 'expired-closed'], `fail-closed in observe passes ${dst}`);
    }
    // Fail-closed also stops established flows: the policy is no longer trusted.
    const est = await verdict('egress', egress('10.1.1.1', 'tcp', 443, { tcpFlags: TCP_ACK }), 105);
    t.equal(est.verdict, 'drop', 'fail-closed drops established packets too');
    const before = await verdict('egress', egress('10.1.1.1', 'tcp', 443), 107);
    t.same([before.verdict, before.reason], ['pass', 'allowed'], 'not yet expired');
    await new Promise((r) => setTimeout(r, 1700));
    const after = await verdict('egress', egress('10.1.1.1', 'tcp', 443), 107);
    t.same([after.verdict, after.reason], ['drop', 'expired-closed'], 'expiry is checked in the packet path');
    const st = (await dp.stats()).find((s) => s.serviceId === 105)!;
    t.equal(st.policy?.expired, true, 'stats report the policy as expired');
    t.equal(st.policy?.onExpiry, 'fail-closed');
  });

  t.test('unbound cgroups and services without policy pass untouched', async (t) => {
    const before = await dp.stats();
    // No service override: the packet belongs to this process's cgroup, which no service binds.
    const v = await verdict('egress', egress('11.1.1.1', 'tcp', 443));
    t.same([v.verdict, v.reason], ['pass', 'unbound']);
    const v6 = await verdict('ingress', ingress('2001:db8::1', 'udp', 53));
    t.same([v6.verdict, v6.reason], ['pass', 'unbound']);
    const np = await verdict('egress', egress('11.1.1.1', 'tcp', 443), 999);
    t.same([np.verdict, np.reason], ['pass', 'no-policy']);
    t.same(await dp.stats(), before, 'no counter moved');
    // A withdrawn policy behaves the same.
    await dp.apply(108, { edges: [] }, { mode: 'enforce', expiresAt: future, generation: 1 });
    t.equal((await verdict('egress', egress('11.1.1.1', 'tcp', 443), 108)).verdict, 'drop', 'empty policy denies all');
    t.equal(await dp.withdraw(108), true);
    t.equal(await dp.withdraw(108), false, 'second withdraw: nothing to remove');
    const gone = await verdict('egress', egress('11.1.1.1', 'tcp', 443), 108);
    t.same([gone.verdict, gone.reason], ['pass', 'no-policy'], 'withdrawn: traffic passes');
  });

  t.test('UDP return path of allowed flows', async (t) => {
    const svc = 109;
    await dp.apply(
      svc,
      {
        edges: [{ dst_cidr: '192.0.2.53/32', proto: 'udp', port: 53 }],
        allow_cidrs: [{ cidr: '198.51.100.0/24', proto: 'udp', port: 5353 }],
      },
      { mode: 'enforce', expiresAt: future, generation: 1 },
    );
    // Before any request, a "reply" is just an unsolicited datagram.
    const early = await verdict('ingress', { src: '192.0.2.53', dst: LOCAL4, proto: 'udp', sport: 53, dport: 41000 }, svc);
    t.equal(early.verdict, 'drop', 'unsolicited datagram dropped');
    const q = await verdict('egress', { src: LOCAL4, dst: '192.0.2.53', proto: 'udp', sport: 41000, dport: 53 }, svc);
    t.equal(q.reason, 'allowed', 'query allowed by edge');
    const reply = await verdict('ingress', { src: '192.0.2.53', dst: LOCAL4, proto: 'udp', sport: 53, dport: 41000 }, svc);
    t.same([reply.verdict, reply.reason], ['pass', 'reply'], 'reply passes');
    const other = await verdict('ingress', { src: '192.0.2.53', dst: LOCAL4, proto: 'udp', sport: 53, dport: 41001 }, svc);
    t.equal(other.verdict, 'drop', 'a datagram to another local port is not a reply');
    // An allowed inbound datagram opens the way for our answer.
    const inq = await verdict('ingress', { src: '198.51.100.7', dst: LOCAL4, proto: 'udp', sport: 6000, dport: 5353 }, svc);
    t.equal(inq.reason, 'allowed');
    const ans = await verdict('egress', { src: LOCAL4, dst: '198.51.100.7', proto: 'udp', sport: 5353, dport: 6000 }, svc);
    t.same([ans.verdict, ans.reason], ['pass', 'reply']);
    // Later packets of a tracked flow are not evaluated again...
    const again = await verdict('egress', { src: LOCAL4, dst: '192.0.2.53', proto: 'udp', sport: 41000, dport: 53 }, svc);
    t.same([again.verdict, again.reason], ['pass', 'bypass'], 'second datagram of the flow: established');
    // ...until a new generation of the policy is swapped in: then the flow is re-evaluated.
    await dp.apply(svc, { edges: [] }, { mode: 'enforce', expiresAt: future, generation: 2 });
    const cut = await verdict('egress', { src: LOCAL4, dst: '192.0.2.53', proto: 'udp', sport: 41000, dport: 53 }, svc);
    t.same([cut.verdict, cut.reason], ['drop', 'cut'], 'new generation without the edge cuts the flow');
    const cutReply = await verdict('ingress', { src: '192.0.2.53', dst: LOCAL4, proto: 'udp', sport: 53, dport: 41000 }, svc);
    t.equal(cutReply.verdict, 'drop', 'and its replies');
  });

  t.test('flow events for denied and would-drop packets', async (t) => {
    const events: Array<{ verdict: string; dst: string; dport: number; serviceId: number }> = [];
    // The ring already holds events of the tables above (nobody consumed them yet).
    const off = dp.onFlow((e) => {
      if (e.serviceId === 110) events.push(e);
    });
    await dp.apply(110, { edges: [] }, { mode: 'enforce', expiresAt: future, generation: 42 });
    await verdict('egress', egress('10.9.9.9', 'tcp', 8443), 110);
    await verdict('egress', egress('2001:db8::99', 'udp', 5000), 110);
    for (let i = 0; i < 50 && events.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    off();
    t.match(events[0], { serviceId: 110, verdict: 'dropped', dst: '10.9.9.9', dport: 8443, direction: 'egress', proto: 'tcp', generation: 42 });
    t.match(events[1], { serviceId: 110, verdict: 'dropped', dst: '2001:db8::99', dport: 5000, proto: 'udp', family: 6 });
  });

  t.test('flow events are rate-capped', async (t) => {
    const capped = await open({ pinRoot: testPinRoot('verdict-cap'), flowEventsPerSecond: 5, flowEventBurst: 5 });
    t.teardown(() => capped.purge());
    await capped.apply(1, { edges: [] }, { mode: 'observe', expiresAt: future, generation: 1 });
    // repeat runs the program 200 times on one CPU within a few microseconds.
    await capped.testVerdict('egress', buildPacket(egress('10.0.0.1', 'tcp', 1)), { serviceId: 1, repeat: 200 });
    const c = (await capped.stats())[0]!.counters!;
    t.equal(c.wouldDrop, 200, '200 would-drops counted');
    t.ok(c.events <= 6, `events capped by the token bucket (${c.events} emitted)`);
    t.equal(c.events + c.eventsLost, 200, 'every suppressed event is counted as lost');
  });
});
