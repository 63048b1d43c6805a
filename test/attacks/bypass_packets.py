#!/usr/bin/env python3
"""Sends or receives the packets of the datapath bypass attacks (raw sockets; root).

send <case[,case...]> <host> <port> <marker>: one packet of each case, carrying marker in its payload.
recv <seconds> <marker>: prints one line per case whose packet arrived (raw listeners on
loopback, outside any enforced cgroup), as JSON at the end.
Cases: tcp-ack (a TCP ACK with data, no connection), udplite, sctp, proto253, ping (ICMP
echo over an unprivileged ping socket; prints whether the reply came), v6-exthdr (UDP over
IPv6 behind 8 destination-options headers).
"""
import json, select, socket, struct, sys, time

def csum(data):
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def send(case, host, port, marker):
    payload = marker.encode()
    if case == 'tcp-ack':
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        hdr = struct.pack('!HHIIBBHHH', 40000, port, 1, 1, 5 << 4, 0x18, 65535, 0, 0)  # PSH|ACK
        pseudo = socket.inet_aton('127.0.0.1') + socket.inet_aton(host) + struct.pack('!BBH', 0, 6, len(hdr) + len(payload))
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
    elif case == 'v6-exthdr':
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        udp_len = 8 + len(payload)
        udp = struct.pack('!HHHH', 40000, port, udp_len, 0) + payload
        src = dst = socket.inet_pton(socket.AF_INET6, '::1')
        pseudo = src + dst + struct.pack('!IxxxB', udp_len, 17)
        c = csum(pseudo + udp) or 0xffff
        udp = udp[:6] + struct.pack('!H', c) + udp[8:]
        n = 8
        ext = b''
        for i in range(n):
            nxt = 60 if i < n - 1 else 17
            ext += struct.pack('!BB', nxt, 0) + b'\x01\x04\0\0\0\0'  # PadN, 8 bytes
        ip6 = struct.pack('!IHBB', 6 << 28, len(ext) + len(udp), 60, 64) + src + dst
        s.sendto(ip6 + ext + udp, ('::1', 0))
    else:
        raise SystemExit('unknown case ' + case)

def recv(seconds, marker):
    socks = {}
    for name, proto in (('tcp-ack', socket.IPPROTO_TCP), ('udplite', 136), ('sctp', 132), ('proto253', 253)):
        socks[socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)] = name
    socks[socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)] = 'v6-exthdr'
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
    if sys.argv[1] == 'send':
        # Several cases, comma-separated, from one process; a refused send (EPERM) is noted
        # and the next case still goes.
        for case in sys.argv[2].split(','):
            try:
                send(case, sys.argv[3], int(sys.argv[4]), sys.argv[5])
            except PermissionError as e:
                print('%s: %s' % (case, e), file=sys.stderr)
    else:
        recv(float(sys.argv[2]), sys.argv[3])
