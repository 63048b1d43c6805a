/**
 * Who is on the other end of a connected Unix socket, as the kernel recorded it when the
 * peer called connect(): SO_PEERCRED (pid, effective uid and gid) and, where the kernel
 * has it (Linux 4.13+), SO_PEERGROUPS (the peer's supplementary groups at that moment).
 * Node has no API for either, so the addon asks.
 */
import { loadAddon } from './addon.js';
import { InvalidArgumentError, PeerCredentialsError } from './errors.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
  /** Supplementary groups from SO_PEERGROUPS; null when the kernel cannot tell (read /proc then). */
  groups: number[] | null;
}

/**
 * The peer of the Unix socket `fd`. Throws AddonUnavailableError without the addon and
 * PeerCredentialsError when the kernel refuses (not a socket, not connected).
 */
export function peerCredentials(fd: number): PeerCredentials {
  if (!Number.isInteger(fd) || fd < 0) throw new InvalidArgumentError(`fd must be an open file descriptor, got ${JSON.stringify(fd)}`);
  const addon = loadAddon();
  try {
    const c = addon.peerCredentials(fd);
    return { pid: c.pid, uid: c.uid, gid: c.gid, groups: c.groups === null ? null : [...c.groups] };
  } catch (e) {
    throw new PeerCredentialsError(`cannot read the peer credentials of socket fd ${fd}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}
