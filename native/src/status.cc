// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "status.h"

#include <string.h>

namespace aegis {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "E" + std::to_string(err);
}

Status Status::Errno(int err, const std::string& op, const std::string& message) {
  Status s;
  s.err = err < 0 ? -err : err;
  if (s.err == 0) s.err = EIO;
  s.code = ErrnoName(s.err);
  s.op = op;
  s.message = message + ": " + strerror(s.err);
  return s;
}

Status Status::Coded(const std::string& code, int err, const std::string& op,
                     const std::string& message) {
  Status s;
  s.err = err < 0 ? -err : err;
  s.code = code;
  s.op = op;
  s.message = message;
  return s;
}

}  // namespace aegis
