// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The outcome of kernel or filesystem work done off the JS thread. Plain data, so it can
// live in a baton and be turned into a JS Error on the main thread (see js_error.h).
#ifndef AEGIS_NATIVE_STATUS_H
#define AEGIS_NATIVE_STATUS_H

#include <string>

namespace aegis {

struct Status {
  int err = 0;           // positive errno, 0 when ok
  std::string code;      // stable code: errno name ("EPERM") or an Aegis code
  std::string op;        // what was being done ("bpf_object__load", "rename", ...)
  std::string message;   // human-readable, says what to do
  std::string log;       // libbpf output captured during the operation (verifier log)

  bool ok() const { return err == 0 && code.empty(); }

  static Status Ok() { return Status(); }
  // errno-based failure; code defaults to the errno name.
  static Status Errno(int err, const std::string& op, const std::string& message);
  // failure with an Aegis code (e.g. "EINCOMPATIBLE_PIN"); err may be 0.
  static Status Coded(const std::string& code, int err, const std::string& op,
                      const std::string& message);
};

// "EPERM" for EPERM, "E123" for unknown values.
std::string ErrnoName(int err);

}  // namespace aegis

#endif
