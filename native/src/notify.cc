// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <memory>

#include "js_error.h"

namespace aegis {

Status Notify(const std::string& socket_path, const std::string& state, bool* sent) {
  *sent = false;
  if (socket_path.empty()) return Status::Ok();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path) || (socket_path[0] != '/' && socket_path[0] != '@')) {
    return Status::Coded("EINVAL", EINVAL, "notify",
                         "NOTIFY_SOCKET must be an absolute path or start with '@': " + socket_path);
  }
  memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path.size());
  // '@' names an abstract socket: the kernel wants a leading NUL and no terminator.
  if (addr.sun_path[0] == '@') {
    addr.sun_path[0] = '\0';
  } else {
    len += 1;
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Errno(errno, "socket", "cannot create the notify socket");
  ssize_t n;
  do {
    n = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  } while (n < 0 && errno == EINTR);
  int e = errno;
  close(fd);
  if (n < 0) return Status::Errno(e, "sendto", "cannot notify the service manager at " + socket_path);
  *sent = true;
  return Status::Ok();
}

Napi::Value NotifyJs(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string state = info[1].As<Napi::String>().Utf8Value();
  auto sent = std::make_shared<bool>(false);
  return PromiseWorker::Start(
      info.Env(), [path, state, sent] { return Notify(path, state, sent.get()); },
      [sent](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *sent); });
}

}  // namespace aegis
