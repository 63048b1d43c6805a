// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "token_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <memory>

#include "js_error.h"

namespace aegis {
namespace {

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string BaseOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Status WriteFileAtomic(const std::string& path, const std::vector<uint8_t>& data, mode_t mode) {
  const std::string dir = DirOf(path);
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  // Same directory, so rename() is atomic (one filesystem); a dot name, so directory
  // scanners ignore it; pid + time, so concurrent writers never share a temp file.
  const std::string tmp = dir + "/." + BaseOf(path) + ".tmp." + std::to_string(getpid()) + "." +
                          std::to_string(ts.tv_nsec) + std::to_string(rand());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Status::Errno(errno, "open", "cannot create " + tmp);
  auto fail = [&](const char* op, const std::string& what) {
    int e = errno;
    close(fd);
    unlink(tmp.c_str());
    return Status::Errno(e, op, what);
  };
  // open() applied the umask; the caller asked for exactly `mode`.
  if (fchmod(fd, mode) != 0) return fail("fchmod", "cannot set the mode of " + tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write", "cannot write " + tmp);
    }
    off += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("fsync", "cannot flush " + tmp);
  if (close(fd) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return Status::Errno(e, "close", "cannot close " + tmp);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return Status::Errno(e, "rename", "cannot replace " + path);
  }
  // The rename is durable only once the directory entry is.
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::Errno(errno, "open", "cannot open directory " + dir);
  if (fsync(dfd) != 0) {
    int e = errno;
    close(dfd);
    return Status::Errno(e, "fsync", "cannot flush directory " + dir);
  }
  close(dfd);
  return Status::Ok();
}

Napi::Value WriteFileAtomicJs(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  auto data = std::make_shared<std::vector<uint8_t>>(buf.Data(), buf.Data() + buf.Length());
  mode_t mode = static_cast<mode_t>(info[2].As<Napi::Number>().Uint32Value());
  return PromiseWorker::Start(
      info.Env(), [path, data, mode] { return WriteFileAtomic(path, *data, mode); },
      [](Napi::Env env) { return env.Undefined(); });
}

}  // namespace aegis
