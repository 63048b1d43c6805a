// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Atomic file replacement for the kernel entitlement token: readers see the old file or
// the new one, never a partial write, and the new content survives a crash once the
// promise resolves.
#ifndef AEGIS_NATIVE_TOKEN_FILE_H
#define AEGIS_NATIVE_TOKEN_FILE_H

#include <napi.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "status.h"

namespace aegis {

// Temp file in the same directory (O_EXCL, `mode`), write, fsync, rename over `path`,
// fsync the directory. On failure the temp file is removed and `path` is untouched.
Status WriteFileAtomic(const std::string& path, const std::vector<uint8_t>& data, mode_t mode);

// writeFileAtomic(path: string, data: Buffer, mode: number): Promise<void>
Napi::Value WriteFileAtomicJs(const Napi::CallbackInfo& info);

}  // namespace aegis

#endif
