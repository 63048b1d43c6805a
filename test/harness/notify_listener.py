#!/usr/bin/env python3
# Stands in for systemd's notify socket in tests: binds a Unix datagram socket (argv[1])
# and prints every message it receives on one line ("READY=1|STATUS=..."), flushed.
import os, socket, sys
path = sys.argv[1]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
print("LISTENING", flush=True)
while True:
    data = s.recv(65536)
    print(data.decode("utf-8", "replace").strip().replace("\n", "|"), flush=True)
