/**
 * Builds L3 packets (IPv4/IPv6 + TCP/UDP headers) for BPF_PROG_TEST_RUN: the verdict
 * tests and the benchmark feed these to Datapath.testVerdict(). Checksums are left zero;
 * the programs never look at them.
 */
import { isIPv4 } from 'node:net';
import { parseCidr } from '../../../protocol/src/index.js';
import { IPPROTO_TCP, IPPROTO_UDP } from './abi.js';
import { InvalidArgumentError } from './errors.js';

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

export interface PacketSpec {
  src: string;
  dst: string;
  proto: 'tcp' | 'udp' | number;
  sport: number;
  dport: number;
  /** TCP flags; default SYN (a new connection, the packet the policy evaluates). */
  tcpFlags?: number;
  payloadBytes?: number;
  /** ICMP / ICMPv6 (proto 1 in IPv4, 58 in IPv6): type, and identifier (echo). */
  icmpType?: number;
  icmpId?: number;
  /** Bytes after the transport header (an ICMP error's quoted packet); replaces payloadBytes. */
  payload?: Buffer;
}

function addrBytes(text: string): Uint8Array {
  const c = parseCidr(text);
  if (c.prefixLen !== (c.family === 4 ? 32 : 128)) throw new InvalidArgumentError(`not a host address: ${text}`);
  return c.addr;
}

export function buildPacket(p: PacketSpec): Buffer {
  const v4 = isIPv4(p.src);
  if (v4 !== isIPv4(p.dst)) throw new InvalidArgumentError('src and dst must be of the same family');
  const proto = p.proto === 'tcp' ? IPPROTO_TCP : p.proto === 'udp' ? IPPROTO_UDP : p.proto;
  const l4len = proto === IPPROTO_TCP ? 20 : 8;
  const payload = p.payload?.length ?? p.payloadBytes ?? 0;
  const l3len = v4 ? 20 : 40;
  const b = Buffer.alloc(l3len + l4len + payload);
  if (v4) {
    b[0] = 0x45;
    b.writeUInt16BE(b.length, 2);
    b[8] = 64;
    b[9] = proto;
    b.set(addrBytes(p.src), 12);
    b.set(addrBytes(p.dst), 16);
  } else {
    b[0] = 0x60;
    b.writeUInt16BE(l4len + payload, 4);
    b[6] = proto;
    b[7] = 64;
    b.set(addrBytes(p.src), 8);
    b.set(addrBytes(p.dst), 24);
  }
  const o = l3len;
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
    b.writeUInt16BE(p.sport, o);
    b.writeUInt16BE(p.dport, o + 2);
  }
  if (proto === IPPROTO_TCP) {
    b[o + 12] = 5 << 4;
    b[o + 13] = p.tcpFlags ?? TCP_SYN;
    b.writeUInt16BE(65535, o + 14);
  } else if (proto === IPPROTO_UDP) {
    b.writeUInt16BE(l4len + payload, o + 4);
  } else if ((v4 && proto === 1) || (!v4 && proto === 58)) {
    b[o] = p.icmpType ?? 0;
    b.writeUInt16BE(p.icmpId ?? 0, o + 4);
  }
  if (p.payload) b.set(p.payload, o + l4len);
  return b;
}
