/**
 * The rule encoder (one pass of the checker, records written straight into one buffer)
 * makes byte for byte what the straightforward encoder it replaced made: every record,
 * rule id and the first-wins collapse of `any` beside tcp/udp on the same network and port,
 * for edges and allow_cidrs, IPv4 and IPv6. No kernel needed.
 */
import t from 'tap';
import { parseCidr } from '../../../protocol/src/index.js';
import type { Proto } from '../../../protocol/src/index.js';
import { DIR_EGRESS, DIR_INGRESS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PROTO_ALL, RULE_FIELDS, RULE_RECORD_BYTES, V4_MAPPED_BITS } from './abi.js';
import { checkPolicyRules, encodeRules, InvalidPolicyError } from './index.js';
import type { PolicyRules } from './index.js';

/** The encoder as it was first written: parse again, one object per record, a string-keyed set. */
function reference(rules: PolicyRules): Buffer {
  const protos = (p: Proto, port: number) =>
    p === 'tcp' ? [IPPROTO_TCP] : p === 'udp' ? [IPPROTO_UDP] : p === 'icmp' ? [IPPROTO_ICMP, IPPROTO_ICMPV6] : port === 0 ? [PROTO_ALL] : [IPPROTO_TCP, IPPROTO_UDP];
  const lists = [
    { dir: DIR_EGRESS, items: (rules.edges ?? []).map((e) => ({ cidr: e.dst_cidr, proto: e.proto, port: e.port })) },
    { dir: DIR_INGRESS, items: (rules.allow_cidrs ?? []).map((a) => ({ cidr: a.cidr, proto: a.proto, port: a.port })) },
  ];
  const seen = new Set<string>();
  const out: Buffer[] = [];
  for (const list of lists) {
    list.items.forEach((r, i) => {
      const c = parseCidr(r.cidr);
      let addr = c.addr;
      let prefixLen = c.prefixLen;
      if (c.family === 4) {
        addr = new Uint8Array(16);
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr.set(c.addr, 12);
        prefixLen += V4_MAPPED_BITS;
      }
      for (const proto of protos(r.proto, r.port)) {
        const key = `${list.dir}|${proto}|${r.port}|${c.canonical}`;
        if (seen.has(key)) continue;
        seen.add(key);
        const b = Buffer.alloc(RULE_RECORD_BYTES);
        b.writeUIntLE(list.dir, RULE_FIELDS.dir.offset, RULE_FIELDS.dir.size);
        b.writeUIntLE(proto, RULE_FIELDS.proto.offset, RULE_FIELDS.proto.size);
        b.writeUIntLE(r.port, RULE_FIELDS.port.offset, RULE_FIELDS.port.size);
        b.writeUIntLE(prefixLen, RULE_FIELDS.prefixlen.offset, RULE_FIELDS.prefixlen.size);
        b.set(addr.subarray(0, RULE_FIELDS.addr.size), RULE_FIELDS.addr.offset);
        b.writeUIntLE((((list.dir << 31) >>> 0) | i) >>> 0, RULE_FIELDS.rule_id.offset, RULE_FIELDS.rule_id.size);
        out.push(b);
      }
    });
  }
  return Buffer.concat(out);
}

t.test('encodes exactly as the reference encoder, overlaps and all', async (t) => {
  let seed = 11;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const nets = ['10.0.0.0/8', '10.1.0.0/16', '192.168.7.0/24', '0.0.0.0/0', '100.64.3.32/27', '2001:db8::/32', '2001:db8:1::/48', '::/0', '::ffff:10.0.0.0/104', '10.0.0.1/32'];
  const protos: Proto[] = ['tcp', 'udp', 'any', 'icmp'];
  const ports = [0, 22, 53, 443, 8080];
  for (let round = 0; round < 200; round++) {
    const pick = () => {
      const proto = protos[rnd(protos.length)]!;
      const port = proto === 'icmp' ? [0, 8][rnd(2)]! : ports[rnd(ports.length)]!;
      return { cidr: nets[rnd(nets.length)]!, proto, port };
    };
    const dedup = <T extends { proto: Proto; port: number }>(xs: T[], key: (x: T) => string) => {
      const s = new Set<string>();
      return xs.filter((x) => !s.has(key(x)) && (s.add(key(x)), true));
    };
    const rules: PolicyRules = {
      edges: dedup(Array.from({ length: rnd(30) }, () => pick()).map((p) => ({ dst_cidr: p.cidr, proto: p.proto, port: p.port })), (e) => `${e.dst_cidr}|${e.proto}|${e.port}`),
      allow_cidrs: dedup(Array.from({ length: rnd(30) }, () => pick()), (a) => `${a.cidr}|${a.proto}|${a.port}`),
    };
    const enc = encodeRules(checkPolicyRules(rules));
    const ref = reference(rules);
    if (!enc.buffer.equals(ref)) {
      t.fail(`round ${round}: ${JSON.stringify(rules)}`);
      return;
    }
    t.equal(enc.count * RULE_RECORD_BYTES, ref.length);
  }
  // The collapse, by hand: `any` on 443 after tcp 443 makes only the udp record (rule id 1),
  // tcp 53 after `any` 53 makes nothing.
  const e = encodeRules({
    edges: [
      { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 },
      { dst_cidr: '10.0.0.0/8', proto: 'any', port: 443 },
      { dst_cidr: '10.0.0.0/8', proto: 'any', port: 53 },
      { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 53 },
    ],
  });
  const recs = Array.from({ length: e.count }, (_, i) => ({
    proto: e.buffer[i * RULE_RECORD_BYTES + RULE_FIELDS.proto.offset],
    port: e.buffer.readUInt16LE(i * RULE_RECORD_BYTES + RULE_FIELDS.port.offset),
    id: e.buffer.readUInt32LE(i * RULE_RECORD_BYTES + RULE_FIELDS.rule_id.offset),
  }));
  t.same(recs, [
    { proto: IPPROTO_TCP, port: 443, id: 0 },
    { proto: IPPROTO_UDP, port: 443, id: 1 },
    { proto: IPPROTO_TCP, port: 53, id: 2 },
    { proto: IPPROTO_UDP, port: 53, id: 2 },
  ]);
});

t.test('encodeRules refuses what the checker refuses (it no longer trusts its caller)', async (t) => {
  t.throws(() => encodeRules({ edges: [{ dst_cidr: '10.0.0.1/8', proto: 'tcp', port: 1 }] }), InvalidPolicyError);
  t.throws(() => encodeRules({ edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 1 }, { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 1 }] }), InvalidPolicyError);
});
