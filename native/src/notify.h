// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or '@' for an
// abstract socket) carrying "READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=..." lines.
#ifndef AEGIS_NATIVE_NOTIFY_H
#define AEGIS_NATIVE_NOTIFY_H

#include <napi.h>

#include <string>

#include "status.h"

namespace aegis {

// Sends `state` to `socket_path`. An empty path means "not under systemd": *sent = false.
Status Notify(const std::string& socket_path, const std::string& state, bool* sent);

// notify(socketPath: string, state: string): Promise<boolean>
Napi::Value NotifyJs(const Napi::CallbackInfo& info);

}  // namespace aegis

#endif
