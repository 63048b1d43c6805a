/**
 * The /proc/net tables and dpkg file lists as the kernel and dpkg write them, in a fake
 * root: addresses decoded (IPv4 little-endian words, IPv6 in canonical form), only
 * listening TCP and unconnected UDP kept, hostile lines skipped; and the package owning an
 * executable found under its merged-/usr alias. The live /proc is read once as well.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listeningSockets, owningPackages, readListeningSockets, readRelease } from './host_inventory.js';

const root = mkdtempSync(join(tmpdir(), 'aegis-proc-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';

t.test('/proc/net lines: listening TCP, bound UDP, decoded addresses; the rest skipped', async (t) => {
  mkdirSync(join(root, 'net'), { recursive: true });
  writeFileSync(
    join(root, 'net', 'tcp'),
    HEADER +
      '   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0\n' +
      '   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 100 0 0 10 0\n' +
      '   2: 0100007F:A000 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 1003 1 0000000000000000 20 4 0 10 -1\n' +
      '   3: ZZZZZZZZ:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1004\n' +
      '   4: garbage\n\u0000\xff\n',
  );
  writeFileSync(
    join(root, 'net', 'tcp6'),
    HEADER +
      '   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1\n' +
      '   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1\n' +
      '   2: 0000000000000000FFFF00000100007F:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1\n',
  );
  writeFileSync(
    join(root, 'net', 'udp'),
    HEADER +
      '  10: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3001 2 0000000000000000 0\n' +
      '  11: 0100007F:D431 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 3002 2 0000000000000000 0\n',
  );
  const got = readListeningSockets(root).map((s) => `${s.proto} ${s.address} ${s.port} ${s.inode}`);
  t.same(got, ['tcp 0.0.0.0 22 1001', 'tcp 127.0.0.1 8080 1002', 'tcp6 :: 80 2001', 'tcp6 ::1 631 2002', 'tcp6 ::ffff:7f00:1 53 2003', 'udp 0.0.0.0 68 3001']);
  // No /proc/<pid>: the sockets are reported without a process.
  t.same(listeningSockets(join(root, 'info'), root)[0], { proto: 'tcp', address: '0.0.0.0', port: 22, pid: null, exe: null, package: null });
});

t.test('the package owning an executable, under its merged-/usr alias too', async (t) => {
  const info = join(root, 'info');
  mkdirSync(info, { recursive: true });
  writeFileSync(join(info, 'openssh-server.list'), '/.\n/usr\n/usr/sbin\n/usr/sbin/sshd\n');
  writeFileSync(join(info, 'nginx-core:amd64.list'), '/.\n/usr/sbin/nginx\n');
  writeFileSync(join(info, 'busybox.list'), '/.\n/bin/busybox\n');
  writeFileSync(join(info, 'Bad Name.list'), '/usr/bin/evil\n');
  writeFileSync(join(info, 'notes.txt'), '/usr/bin/evil\n');
  const got = owningPackages(new Set(['/usr/sbin/sshd', '/usr/sbin/nginx', '/usr/bin/busybox', '/usr/bin/evil', '/opt/x']), info);
  t.same(Object.fromEntries([...got].sort()), { '/usr/bin/busybox': 'busybox', '/usr/sbin/nginx': 'nginx-core', '/usr/sbin/sshd': 'openssh-server' });
});

t.test('os-release: VERSION_CODENAME, else unknown', async (t) => {
  writeFileSync(join(root, 'os-release'), 'NAME="Debian GNU/Linux"\nVERSION_CODENAME="trixie"\n');
  t.equal(readRelease(join(root, 'os-release')), 'trixie');
  writeFileSync(join(root, 'os-release2'), 'VERSION_CODENAME=$(rm -rf /)\n');
  t.equal(readRelease(join(root, 'os-release2')), 'unknown');
  t.equal(readRelease(join(root, 'missing')), 'unknown');
});

t.test('the live /proc: a socket this process listens on is found with its pid and executable', async (t) => {
  const srv = createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  t.teardown(() => srv.close());
  const port = (srv.address() as { port: number }).port;
  const mine = listeningSockets(join(root, 'info')).find((s) => s.port === port && s.proto === 'tcp');
  t.match(mine, { address: '127.0.0.1', pid: process.pid, exe: /node/ });
});
