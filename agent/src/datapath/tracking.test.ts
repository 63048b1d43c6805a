/**
 * Flow tracking and protocol coverage through BPF_PROG_TEST_RUN on the real kernel: TCP
 * flows opened by an allowed packet (replies pass, FIN/RST close, a new generation cuts
 * what it no longer allows), ICMP rules by type, `any` on port 0, ICMP errors matched to
 * their flow, IPv6 neighbour discovery, and headers that cannot be walked (fail closed).
 */
import t from 'tap';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { buildPacket, open, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from './index.js';
import type { Datapath, PacketSpec, TestVerdict } from './index.js';
import { missingDatapath, testPinRoot } from '../../../test/harness/datapath.js';

const L4 = '10.99.0.2';
const L6 = 'fd00:99::2';

/** An IPv6 packet carrying `chain` destination-options headers (8 bytes each), then `last` with `tail`. */
function v6WithExtensions(chain: number, last: number, tail: Buffer): Buffer {
  const b = Buffer.alloc(40 + chain * 8 + tail.length);
  b[0] = 0x60;
  b.writeUInt16BE(chain * 8 + tail.length, 4);
  b[6] = chain > 0 ? 60 : last;
  b[7] = 64;
  b.set(buildPacket({ src: L6, dst: '2001:db8::7', proto: 'udp', sport: 0, dport: 0 }).subarray(8, 40), 8);
  for (let i = 0; i < chain; i++) {
    const o = 40 + i * 8;
    b[o] = i === chain - 1 ? last : 60;
    b[o + 2] = 1; // PadN over the remaining 4 bytes
    b[o + 3] = 4;
  }
  b.set(tail, 40 + chain * 8);
  return b;
}

t.test('flow tracking and protocol coverage (BPF_PROG_TEST_RUN)', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const dp: Datapath = await open({ pinRoot: testPinRoot('tracking') });
  t.teardown(() => dp.purge());
  const future = Date.now() + 3_600_000;
  const v = async (dir: 'egress' | 'ingress', spec: PacketSpec | Buffer, svc: number): Promise<[string, string]> => {
    const r: TestVerdict = await dp.testVerdict(dir, Buffer.isBuffer(spec) ? spec : buildPacket(spec), { serviceId: svc });
    return [r.verdict, r.reason];
  };
  const counters = async (svc: number) => (await dp.stats()).find((s) => s.serviceId === svc)!.counters!;

  t.test('TCP: an allowed SYN opens a flow; replies pass; FIN/RST close; a new generation cuts', async (t) => {
    const svc = 201;
    const policy = { edges: [{ dst_cidr: '10.1.0.0/16', proto: 'tcp' as const, port: 443 }] };
    await dp.apply(svc, policy, { mode: 'enforce', expiresAt: future, generation: 1 });
    const out = (flags: number, sport = 40001): PacketSpec => ({ src: L4, dst: '10.1.2.3', proto: 'tcp', sport, dport: 443, tcpFlags: flags });
    const back = (flags: number, dport = 40001): PacketSpec => ({ src: '10.1.2.3', dst: L4, proto: 'tcp', sport: 443, dport, tcpFlags: flags });
    t.same(await v('ingress', back(TCP_SYN | TCP_ACK), svc), ['drop', 'dropped'], 'a SYN-ACK before any SYN belongs to no flow');
    t.same(await v('egress', out(TCP_SYN), svc), ['pass', 'allowed'], 'SYN allowed');
    t.same(await v('ingress', back(TCP_SYN | TCP_ACK), svc), ['pass', 'reply'], 'SYN-ACK is a reply');
    t.same(await v('egress', out(TCP_ACK), svc), ['pass', 'bypass'], 'ACK of the flow');
    t.same(await v('ingress', back(TCP_ACK), svc), ['pass', 'reply'], 'data back');
    t.same(await v('ingress', back(TCP_ACK, 40002), svc), ['drop', 'dropped'], 'the same remote to another local port is no reply');
    // A swap that keeps the edge keeps the flow.
    await dp.apply(svc, policy, { mode: 'enforce', expiresAt: future, generation: 2 });
    t.same(await v('ingress', back(TCP_ACK), svc), ['pass', 'reply'], 'judged again as opened (egress to 443): still allowed');
    // A swap that removes it cuts it, whichever side speaks first.
    const before = await counters(svc);
    await dp.apply(svc, { edges: [] }, { mode: 'enforce', expiresAt: future, generation: 3 });
    t.same(await v('ingress', back(TCP_ACK), svc), ['drop', 'cut'], 'cut by the new generation');
    t.same(await v('egress', out(TCP_ACK), svc), ['drop', 'dropped'], 'and stays cut');
    const after = await counters(svc);
    t.equal(after.cut - before.cut, 1, 'one flow cut');
    // FIN and RST shorten a flow's life but let the closing packets through.
    await dp.apply(svc, policy, { mode: 'enforce', expiresAt: future, generation: 4 });
    t.same(await v('egress', out(TCP_SYN, 40005), svc), ['pass', 'allowed']);
    t.same(await v('egress', out(TCP_FIN | TCP_ACK, 40005), svc), ['pass', 'bypass'], 'FIN passes');
    t.same(await v('ingress', back(TCP_FIN | TCP_ACK, 40005), svc), ['pass', 'reply'], 'FIN back passes');
    t.same(await v('ingress', back(TCP_RST, 40005), svc), ['pass', 'reply'], 'RST of the flow passes');
  });

  t.test('observe counts a cut as would-drop once and keeps the flow', async (t) => {
    const svc = 202;
    await dp.apply(svc, { edges: [{ dst_cidr: '10.2.0.0/16', proto: 'tcp', port: 80 }] }, { mode: 'observe', expiresAt: future, generation: 1 });
    const seg: PacketSpec = { src: L4, dst: '10.2.0.1', proto: 'tcp', sport: 40100, dport: 80, tcpFlags: TCP_SYN };
    t.same(await v('egress', seg, svc), ['pass', 'allowed']);
    await dp.apply(svc, { edges: [] }, { mode: 'observe', expiresAt: future, generation: 2 });
    t.same(await v('egress', { ...seg, tcpFlags: TCP_ACK }, svc), ['pass', 'would-drop'], 'would have been cut');
    t.same(await v('egress', { ...seg, tcpFlags: TCP_ACK }, svc), ['pass', 'bypass'], 'counted once');
    t.same(await v('egress', { ...seg, dst: '10.2.0.9', tcpFlags: TCP_ACK }, svc), ['pass', 'would-drop'], 'an untracked ACK would be dropped');
  });

  t.test('ICMP by type, any on port 0, other protocols', async (t) => {
    const svc = 203;
    await dp.apply(
      svc,
      {
        edges: [
          { dst_cidr: '10.3.0.0/16', proto: 'icmp', port: 8 },
          { dst_cidr: '2001:db8:3::/48', proto: 'icmp', port: 128 },
          { dst_cidr: '10.4.0.0/16', proto: 'any', port: 0 },
          { dst_cidr: '10.5.0.0/16', proto: 'any', port: 53 },
        ],
      },
      { mode: 'enforce', expiresAt: future, generation: 1 },
    );
    const echo = (dst: string, type: number, id = 77): PacketSpec => ({ src: dst.includes(':') ? L6 : L4, dst, proto: dst.includes(':') ? 58 : 1, sport: 0, dport: 0, icmpType: type, icmpId: id });
    const reply = (src: string, type: number, id = 77): PacketSpec => ({ ...echo(src, type, id), src, dst: src.includes(':') ? L6 : L4 });
    t.same(await v('ingress', reply('10.3.0.1', 0), svc), ['drop', 'dropped'], 'an echo reply nobody asked for');
    t.same(await v('egress', echo('10.3.0.1', 8), svc), ['pass', 'allowed'], 'echo request allowed by type 8');
    t.same(await v('ingress', reply('10.3.0.1', 0), svc), ['pass', 'reply'], 'its reply (same identifier)');
    t.same(await v('ingress', reply('10.3.0.1', 0, 78), svc), ['drop', 'dropped'], 'a reply to another identifier');
    t.same(await v('egress', echo('10.3.0.1', 13), svc), ['drop', 'dropped'], 'another ICMP type (timestamp)');
    t.same(await v('egress', echo('10.9.0.1', 8), svc), ['drop', 'dropped'], 'echo elsewhere');
    t.same(await v('egress', echo('2001:db8:3::1', 128), svc), ['pass', 'allowed'], 'ICMPv6 echo request by type 128');
    t.same(await v('ingress', reply('2001:db8:3::1', 129), svc), ['pass', 'reply'], 'ICMPv6 echo reply');
    for (const proto of [132, 136, 253, 47]) {
      t.same(await v('egress', { src: L4, dst: '10.4.1.1', proto, sport: 1, dport: 2 }, svc), ['pass', 'allowed'], `any/0 allows proto ${proto}`);
      t.same(await v('egress', { src: L4, dst: '10.5.1.1', proto, sport: 1, dport: 53 }, svc), ['drop', 'dropped'], `any/53 does not allow proto ${proto}`);
      t.same(await v('egress', { src: L4, dst: '10.9.1.1', proto, sport: 1, dport: 2 }, svc), ['drop', 'dropped'], `proto ${proto} without a rule`);
    }
    t.same(await v('ingress', { src: '10.4.1.1', dst: L4, proto: 132, sport: 2, dport: 1 }, svc), ['pass', 'reply'], 'a reply of a tracked portless flow');
    t.same(await v('egress', { src: L4, dst: '10.4.1.1', proto: 'tcp', sport: 1, dport: 9999 }, svc), ['pass', 'allowed'], 'any/0 covers tcp on every port');
    t.same(await v('egress', echo('10.4.1.1', 8), svc), ['pass', 'allowed'], 'and icmp');
    t.same(await v('egress', { src: L4, dst: '10.5.1.1', proto: 'udp', sport: 1, dport: 53 }, svc), ['pass', 'allowed'], 'any/53 is still udp 53');
  });

  t.test('ICMP errors of tracked flows pass; neighbour discovery passes', async (t) => {
    const svc = 204;
    await dp.apply(svc, { edges: [{ dst_cidr: '2001:db8:4::/48', proto: 'tcp', port: 443 }, { dst_cidr: '10.6.0.0/16', proto: 'udp', port: 53 }] }, { mode: 'enforce', expiresAt: future, generation: 1 });
    const syn6: PacketSpec = { src: L6, dst: '2001:db8:4::1', proto: 'tcp', sport: 40200, dport: 443, tcpFlags: TCP_SYN };
    const ptb = (quoted: PacketSpec): PacketSpec => ({ src: '2001:db8:ffff::1', dst: L6, proto: 58, sport: 0, dport: 0, icmpType: 2, payload: buildPacket(quoted) });
    t.same(await v('ingress', ptb(syn6), svc), ['drop', 'dropped'], 'packet too big about no flow');
    t.same(await v('egress', syn6, svc), ['pass', 'allowed']);
    t.same(await v('ingress', ptb(syn6), svc), ['pass', 'reply'], 'packet too big about the flow (PMTU)');
    t.same(await v('ingress', ptb({ ...syn6, sport: 40201 }), svc), ['drop', 'dropped'], 'quoting another flow');
    const q: PacketSpec = { src: L4, dst: '10.6.0.1', proto: 'udp', sport: 40300, dport: 53 };
    t.same(await v('egress', q, svc), ['pass', 'allowed']);
    const unreach: PacketSpec = { src: '10.6.0.1', dst: L4, proto: 1, sport: 0, dport: 0, icmpType: 3, payload: buildPacket(q) };
    t.same(await v('ingress', unreach, svc), ['pass', 'reply'], 'port unreachable about the UDP flow');
    for (const type of [133, 134, 135, 136, 137]) {
      t.same(await v('ingress', { src: 'fe80::1', dst: L6, proto: 58, sport: 0, dport: 0, icmpType: type }, svc), ['pass', 'bypass'], `ND type ${type}`);
    }
    t.same(await v('ingress', { src: 'fe80::1', dst: L6, proto: 58, sport: 0, dport: 0, icmpType: 130 }, svc), ['drop', 'dropped'], 'MLD query (not ND) is judged');
  });

  t.test('headers that cannot be walked fail closed', async (t) => {
    const svc = 205;
    await dp.apply(svc, { edges: [{ dst_cidr: '::/0', proto: 'any', port: 0 }, { dst_cidr: '0.0.0.0/0', proto: 'any', port: 0 }] }, { mode: 'enforce', expiresAt: future, generation: 1 });
    const tcpTail = buildPacket({ src: L6, dst: '2001:db8::7', proto: 'tcp', sport: 1, dport: 2 }).subarray(40);
    t.same(await v('egress', v6WithExtensions(5, 6, tcpTail), svc), ['pass', 'allowed'], '5 extension headers are walked');
    t.same(await v('egress', v6WithExtensions(8, 6, tcpTail), svc), ['drop', 'unparsed'], '8 extension headers: dropped even where everything is allowed');
    const frag = buildPacket({ src: L4, dst: '10.7.0.1', proto: 'udp', sport: 1, dport: 2 });
    frag.writeUInt16BE(0x0010, 6); // fragment offset 16 (x8 bytes)
    t.same(await v('egress', frag, svc), ['drop', 'unparsed'], 'non-first IPv4 fragment');
    const truncated = buildPacket({ src: L4, dst: '10.7.0.1', proto: 'tcp', sport: 1, dport: 2 }).subarray(0, 24);
    t.same(await v('egress', truncated, svc), ['drop', 'unparsed'], 'truncated TCP header');
    const c = await counters(svc);
    t.equal(c.unparsed, 3, 'counted as unparsed');
    await dp.apply(svc, { edges: [] }, { mode: 'observe', expiresAt: future, generation: 2 });
    t.same(await v('egress', frag, svc), ['pass', 'would-drop'], 'observe: passed, counted would-drop');
    t.equal((await counters(svc)).unparsed, 4);
  });
});
