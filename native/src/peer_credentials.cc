// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "peer_credentials.h"

#include <errno.h>
#include <sys/socket.h>

#include "js_error.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

namespace aegis {

Status ReadPeerCredentials(int fd, PeerCredentials* out) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return Status::Errno(errno, "getsockopt", "cannot read the peer credentials (SO_PEERCRED) of the socket");
  }
  if (len != sizeof(cred)) {
    return Status::Coded("EPEERCRED", EINVAL, "getsockopt", "SO_PEERCRED returned a short answer");
  }
  out->pid = cred.pid;
  out->uid = cred.uid;
  out->gid = cred.gid;
  // ERANGE tells how much room the group list needs; it cannot grow past NGROUPS_MAX.
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; attempt++) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      out->groups = std::move(groups);
      out->has_groups = true;
      return Status::Ok();
    }
    if (errno == ERANGE && glen / sizeof(gid_t) > groups.size()) {
      groups.resize(glen / sizeof(gid_t));
      continue;
    }
    if (errno == ENOPROTOOPT) return Status::Ok();  // old kernel: the caller reads /proc
    return Status::Errno(errno, "getsockopt", "cannot read the peer groups (SO_PEERGROUPS) of the socket");
  }
  return Status::Coded("EPEERGROUPS", ERANGE, "getsockopt", "the peer group list kept growing");
}

Napi::Value PeerCredentialsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  PeerCredentials c;
  Status s = ReadPeerCredentials(fd, &c);
  if (!s.ok()) throw ToJsError(env, s);
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, c.pid));
  o.Set("uid", Napi::Number::New(env, c.uid));
  o.Set("gid", Napi::Number::New(env, c.gid));
  if (c.has_groups) {
    Napi::Array groups = Napi::Array::New(env, c.groups.size());
    for (size_t i = 0; i < c.groups.size(); i++) groups.Set(static_cast<uint32_t>(i), Napi::Number::New(env, c.groups[i]));
    o.Set("groups", groups);
  } else {
    o.Set("groups", env.Null());
  }
  return o;
}

}  // namespace aegis
