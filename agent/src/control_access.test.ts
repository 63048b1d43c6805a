/**
 * The control socket's caller check in the cases a live socket cannot easily show: groups
 * from /proc when the kernel has no SO_PEERGROUPS (and a reused pid), group names from
 * /etc/group, and a caller whose credentials cannot be read (reads only).
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { ControlAccess, procGroups, resolveGroup } from './control_access.js';
import { AgentError } from './errors.js';

const dir = mkdtempSync(join(tmpdir(), 'aegis-access-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('groups from /proc/<pid>/status, only while the pid still runs as the caller', async (t) => {
  mkdirSync(join(dir, '42'));
  writeFileSync(join(dir, '42', 'status'), 'Name:\tnode\nUid:\t0\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\t100 2001 2002 \n');
  t.same(procGroups(42, 1000, dir), [100, 2001, 2002], 'Groups: of the process');
  t.equal(procGroups(42, 1001, dir), null, 'another effective uid there: the pid was reused, trust nothing');
  t.equal(procGroups(43, 1000, dir), null, 'unreadable: unknown (the caller keeps its primary gid only)');
  mkdirSync(join(dir, '44'));
  writeFileSync(join(dir, '44', 'status'), 'Uid:\t5\t5\t5\t5\nGroups:\t\n');
  t.same(procGroups(44, 5, dir), [], 'no supplementary groups');
});

t.test('group names resolve from /etc/group', async (t) => {
  const file = join(dir, 'group');
  writeFileSync(file, 'root:x:0:\naegis:x:977:alice,bob\n');
  t.equal(resolveGroup('aegis', file), 977);
  t.equal(resolveGroup('', file), null, 'empty: no group');
  t.equal(resolveGroup(`no-such-group-${process.pid}`, file), null, 'unknown: grants nothing');
});

t.test('without peer credentials reads pass and every write is refused', async (t) => {
  const access = new ControlAccess(winston.createLogger({ silent: true }));
  access.configure({ admin_group: 'root' });
  const socket = {} as Socket; // no _handle: the kernel cannot be asked
  t.equal(access.check(socket, 'GET', '/v1/status'), null, 'GET allowed');
  for (const [method, path] of [['PUT', '/v1/snapshots/1'], ['DELETE', '/v1/snapshots/1'], ['POST', '/v1/deactivate']] as const) {
    const e = (() => {
      try {
        access.check(socket, method, path);
        return null;
      } catch (x) {
        return x;
      }
    })();
    t.ok(e instanceof AgentError, `${method} ${path} refused`);
    t.equal((e as AgentError).code, 'CALLER_UNKNOWN');
    t.equal((e as AgentError).status, 403);
    t.match((e as AgentError).message, 'only reads are allowed');
  }
});
