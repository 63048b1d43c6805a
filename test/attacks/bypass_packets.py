#!/usr/bin/env python3
"""Sends or receives the packets of the datapath bypass attacks (raw sockets; root).

send <case[,case...]> <host> <port> <marker> [host6]: one packet of each case to host (IPv4)
  or host6 (IPv6, default ::1), carrying marker in its payload; the source address is the
  one the kernel routes from.
send-netns <netns> <case[,case...]> <host> <port> <marker> [host6]: the same, sent from
  inside network namespace netns (ip netns exec), i.e. arriving over its interface.
recv <seconds> <marker> [case,...]: prints one line per case whose packet arrived (raw
  listeners; run it in the cgroup whose ingress is judged, or outside any), as JSON at the end.
Cases: tcp-ack (a TCP ACK with data, no connection), udplite, sctp, proto253, ping (ICMP
echo over an unprivileged ping socket; prints whether the reply came), icmp-echo (ICMP echo
request over a raw socket, no reply awaited), v6-exthdr (UDP over IPv6 behind 8
destination-options headers), frag (UDP split into two IPv4 fragments, the marker only in
the non-first one). recv listens for every case but ping by default.
"""
import json, os, random, select, socket, struct, sys, time

RECV_DEFAULT = ['tcp-ack', 'udplite', 'sctp', 'proto253', 'v6-exthdr']

def csum(data):
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def route_src(family, host):
    """The source address the kernel picks for host (a UDP connect sends nothing). Loopback
    answers itself: from an enforced cgroup the connect hooks would refuse the connect."""
    if host == '::1' or host.startswith('127.'):
        return host
    u = socket.socket(family, socket.SOCK_DGRAM)
    u.connect((host, 9))
    src = u.getsockname()[0]
    u.close()
    return src

def send(case, host, port, marker, host6):
    payload = marker.encode()
    if case == 'tcp-ack':
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        hdr = struct.pack('!HHIIBBHHH', 40000, port, 1, 1, 5 << 4, 0x18, 65535, 0, 0)  # PSH|ACK
        src = route_src(socket.AF_INET, host)
        pseudo = socket.inet_aton(src) + socket.inet_aton(host) + struct.pack('!BBH', 0, 6, len(hdr) + len(payload))
        c = csum(pseudo + hdr + payload)
        hdr = hdr[:16] + struct.pack('!H', c) + hdr[18:]
        s.sendto(hdr + payload, (host, 0))
    elif case in ('udplite', 'sctp', 'proto253'):
        proto = {'udplite': 136, 'sctp': 132, 'proto253': 253}[case]
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        s.sendto(struct.pack('!HH', 40000, port) + b'\0' * 8 + payload, (host, 0))
    elif case == 'ping':
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        s.settimeout(1.0)
        body = struct.pack('!BBHHH', 8, 0, 0, 0, 1) + payload
        s.sendto(body, (host, 0))
        try:
            s.recvfrom(2048)
            print('reply')
        except socket.timeout:
            print('no reply')
    elif case == 'icmp-echo':
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        body = struct.pack('!BBHHH', 8, 0, 0, 0x4145, 1) + payload
        body = body[:2] + struct.pack('!H', csum(body)) + body[4:]
        s.sendto(body, (host, 0))
    elif case == 'v6-exthdr':
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        udp_len = 8 + len(payload)
        udp = struct.pack('!HHHH', 40000, port, udp_len, 0) + payload
        src = socket.inet_pton(socket.AF_INET6, route_src(socket.AF_INET6, host6))
        dst = socket.inet_pton(socket.AF_INET6, host6)
        pseudo = src + dst + struct.pack('!IxxxB', udp_len, 17)
        c = csum(pseudo + udp) or 0xffff
        udp = udp[:6] + struct.pack('!H', c) + udp[8:]
        n = 8
        ext = b''
        for i in range(n):
            nxt = 60 if i < n - 1 else 17
            ext += struct.pack('!BB', nxt, 0) + b'\x01\x04\0\0\0\0'  # PadN, 8 bytes
        ip6 = struct.pack('!IHBB', 6 << 28, len(ext) + len(udp), 60, 64) + src + dst
        s.sendto(ip6 + ext + udp, (host6, 0))
    elif case == 'frag':
        # IP_HDRINCL (IPPROTO_RAW): the kernel fills length and checksum, keeps the offsets.
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        src = socket.inet_aton(route_src(socket.AF_INET, host))
        dst = socket.inet_aton(host)
        ident = random.randint(1, 65535)
        first = struct.pack('!HHHH', 40000, port, 16 + len(payload), 0) + b'\0' * 8  # checksum 0: none
        for off, more, data in ((0, 1, first), (2, 0, payload)):
            frag = (more << 13) | off
            ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(data), ident, frag, 64, 17, 0, src, dst)
            s.sendto(ip + data, (host, 0))
    else:
        raise SystemExit('unknown case ' + case)

def recv(seconds, marker, cases):
    listeners = {
        'tcp-ack': (socket.AF_INET, socket.IPPROTO_TCP),
        'udplite': (socket.AF_INET, 136),
        'sctp': (socket.AF_INET, 132),
        'proto253': (socket.AF_INET, 253),
        'v6-exthdr': (socket.AF_INET6, socket.IPPROTO_UDP),
        'icmp-echo': (socket.AF_INET, socket.IPPROTO_ICMP),
        'frag': (socket.AF_INET, socket.IPPROTO_UDP),
    }
    socks = {}
    for name in cases:
        family, proto = listeners[name]
        socks[socket.socket(family, socket.SOCK_RAW, proto)] = name
    seen = set()
    end = time.time() + seconds
    print('ready', flush=True)
    while time.time() < end:
        r, _, _ = select.select(list(socks), [], [], max(0, end - time.time()))
        for s in r:
            data = s.recv(65535)
            if marker.encode() in data:
                seen.add(socks[s])
    print(json.dumps(sorted(seen)), flush=True)

if __name__ == '__main__':
    if sys.argv[1] == 'send-netns':
        os.execvp('ip', ['ip', 'netns', 'exec', sys.argv[2], sys.executable, os.path.abspath(__file__), 'send'] + sys.argv[3:])
    elif sys.argv[1] == 'send':
        # Several cases, comma-separated, from one process; a refused send (EPERM) is noted
        # and the next case still goes.
        host6 = sys.argv[6] if len(sys.argv) > 6 else '::1'
        for case in sys.argv[2].split(','):
            try:
                send(case, sys.argv[3], int(sys.argv[4]), sys.argv[5], host6)
            except PermissionError as e:
                print('%s: %s' % (case, e), file=sys.stderr)
    else:
        cases = sys.argv[4].split(',') if len(sys.argv) > 4 else RECV_DEFAULT
        recv(float(sys.argv[2]), sys.argv[3], cases)
