// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Who is on the other end of a connected Unix socket, as the kernel recorded it at
// connect() time: SO_PEERCRED (pid, effective uid and gid) and SO_PEERGROUPS (the
// supplementary groups). The agent's control socket decides who may write with it.
#ifndef AEGIS_NATIVE_PEER_CREDENTIALS_H
#define AEGIS_NATIVE_PEER_CREDENTIALS_H

#include <napi.h>
#include <sys/types.h>

#include <vector>

#include "status.h"

namespace aegis {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  // False when the kernel has no SO_PEERGROUPS (before Linux 4.13): groups is then empty.
  bool has_groups = false;
  std::vector<gid_t> groups;
};

Status ReadPeerCredentials(int fd, PeerCredentials* out);

// peerCredentials(fd: number): { pid, uid, gid, groups: number[] | null }
// Synchronous (two getsockopt calls); throws an Error with errno/code/op on failure.
Napi::Value PeerCredentialsJs(const Napi::CallbackInfo& info);

}  // namespace aegis

#endif
