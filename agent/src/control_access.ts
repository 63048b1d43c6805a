/**
 * Who may do what on the control socket. The socket's mode (0660, group socket_group)
 * decides who can connect; each request is then checked against the caller the kernel
 * names (SO_PEERCRED): root, the agent's own user and members of socket_group or
 * admin_group may read (GET); only root, the agent's own user and members of admin_group
 * may change anything (every other method: policy, license, reload). Reading the socket
 * to run `aegisctl status` must not be enough to replace or withdraw enforcement.
 *
 * Fail closed: a caller whose credentials cannot be read may still read (the socket mode
 * already let it in) but every write is refused; groups that cannot be read count as the
 * caller's primary group only; a configured group that does not exist grants nothing.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { peerCredentials } from './datapath/index.js';
import { AgentError } from './errors.js';
import type { Logger } from './logger.js';

/** A caller as the kernel recorded it at connect(): every group it holds, primary first. */
export interface Caller {
  pid: number;
  uid: number;
  gid: number;
  groups: number[];
  /** Where the supplementary groups came from ("none": only the primary gid is known). */
  groupsFrom: 'SO_PEERGROUPS' | '/proc' | 'none';
}

/** A caller that may not do what it asked: 403 with a stable code. */
export class ForbiddenCallerError extends AgentError {
  constructor(message: string, details: Record<string, unknown>) {
    super('FORBIDDEN_CALLER', message, { status: 403, details });
    this.name = 'ForbiddenCallerError';
  }
}

/** The caller's credentials could not be read, so nothing that changes the agent is allowed. */
export class CallerUnknownError extends AgentError {
  constructor(message: string, cause: unknown) {
    super('CALLER_UNKNOWN', message, { status: 403, cause });
    this.name = 'CallerUnknownError';
  }
}

/** The gid of group `name` from /etc/group, else from NSS (getent); null when there is none. */
export function resolveGroup(name: string, groupFile = '/etc/group'): number | null {
  if (!name) return null;
  try {
    for (const line of readFileSync(groupFile, 'utf8').split('\n')) {
      const [n, , gid] = line.split(':');
      if (n === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
    }
  } catch {
    /* no readable /etc/group: ask NSS */
  }
  const r = spawnSync('getent', ['group', name], { encoding: 'utf8' });
  const gid = r.status === 0 ? r.stdout.split(':')[2] : undefined;
  return gid !== undefined && /^\d+$/.test(gid) ? Number(gid) : null;
}

/**
 * The supplementary groups of process `pid` from /proc/<pid>/status, or null when they
 * cannot be trusted to be the caller's: the file is unreadable, or the process there no
 * longer runs with effective uid `uid` (the caller exited and its pid was reused).
 */
export function procGroups(pid: number, uid: number, procRoot = '/proc'): number[] | null {
  if (!Number.isInteger(pid) || pid <= 0) return null;
  let text: string;
  try {
    text = readFileSync(`${procRoot}/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1]?.trim().split(/\s+/).filter(Boolean);
  const uids = field('Uid');
  const groups = field('Groups');
  if (!uids || Number(uids[1]) !== uid || groups === undefined) return null;
  if (!groups.every((g) => /^\d+$/.test(g))) return null;
  return groups.map(Number);
}

/**
 * The caller on `socket`: SO_PEERCRED, groups from SO_PEERGROUPS or /proc (primary gid
 * only when neither answers). Throws when the credentials themselves cannot be read.
 */
export function callerOf(socket: Socket): Caller {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  const c = peerCredentials(typeof fd === 'number' ? fd : -1);
  let supplementary = c.groups;
  let groupsFrom: Caller['groupsFrom'] = 'SO_PEERGROUPS';
  if (supplementary === null) {
    supplementary = procGroups(c.pid, c.uid);
    groupsFrom = supplementary === null ? 'none' : '/proc';
  }
  return { pid: c.pid, uid: c.uid, gid: c.gid, groups: [...new Set([c.gid, ...(supplementary ?? [])])], groupsFrom };
}

/** The configured group names; admin_group is re-read on reload. */
export interface AccessGroups {
  socket_group: string;
  admin_group: string;
}

export class ControlAccess {
  private adminGroup = '';
  /** The group the socket file was given at listen: whoever holds it could connect. */
  private socketGid: number | null = null;
  private socketGroup = '';
  private readonly callers = new WeakMap<Socket, Caller | CallerUnknownError>();

  constructor(private readonly log: Logger) {}

  configure(groups: Partial<AccessGroups>): void {
    if (groups.admin_group !== undefined) this.adminGroup = groups.admin_group;
  }

  /** Records the group that owns the socket file (socket_group, or the agent's own). */
  socketOwnedBy(name: string, gid: number): void {
    this.socketGroup = name;
    this.socketGid = gid;
  }

  /** The caller on `socket`, read once per connection (the kernel's answer does not change). */
  private lookup(socket: Socket): Caller | CallerUnknownError {
    let c = this.callers.get(socket);
    if (c === undefined) {
      try {
        c = callerOf(socket);
      } catch (e) {
        c = new CallerUnknownError(
          `aegis-agent cannot tell who is calling (${(e as Error).message}); without the caller's credentials only reads are allowed. Build the native addon (npm run build:addon)`,
          e,
        );
        this.log.warn('control socket caller unknown; writes refused', { error: (e as Error).message });
      }
      this.callers.set(socket, c);
    }
    return c;
  }

  /** Throws ForbiddenCallerError / CallerUnknownError when the caller on `socket` may not `method path`. */
  check(socket: Socket, method: string, path: string): Caller | null {
    const write = method !== 'GET';
    const c = this.lookup(socket);
    if (c instanceof CallerUnknownError) {
      if (!write) return null;
      this.log.warn('control socket caller refused', { method, path, code: c.code, reason: 'no peer credentials' });
      throw c;
    }
    const self = process.geteuid?.() ?? 0;
    const privileged = c.uid === 0 || c.uid === self;
    const adminGid = resolveGroup(this.adminGroup);
    const admin = adminGid !== null && c.groups.includes(adminGid);
    const readGid = this.socketGid ?? process.getegid?.() ?? 0;
    const allowed = privileged || admin || (!write && c.groups.includes(readGid));
    const who = { pid: c.pid, uid: c.uid, gid: c.gid, groups: c.groups, groups_from: c.groupsFrom, method, path };
    if (allowed) {
      if (write) this.log.info('control socket write', { ...who, as: privileged ? 'root' : 'admin_group' });
      return c;
    }
    let needs: string;
    if (!write) needs = `root or membership of socket_group ${JSON.stringify(this.socketGroup || String(readGid))}`;
    else if (!this.adminGroup) needs = 'root (no admin_group is configured; set admin_group to let a group change the agent)';
    else if (adminGid === null) needs = `root or membership of admin_group ${JSON.stringify(this.adminGroup)}, which does not exist on this host`;
    else needs = `root or membership of admin_group ${JSON.stringify(this.adminGroup)} (gid ${adminGid})`;
    const message = `uid ${c.uid} (gid ${c.gid}, pid ${c.pid}) may not ${method} ${path}: ${write ? 'changing' : 'reading'} the agent needs ${needs}`;
    this.log.warn('control socket caller refused', { ...who, code: 'FORBIDDEN_CALLER', needs });
    throw new ForbiddenCallerError(message, { uid: c.uid, gid: c.gid, pid: c.pid, needs: write ? 'admin_group' : 'socket_group' });
  }
}
