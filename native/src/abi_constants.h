// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The datapath's shared constants as this build compiled them, exported to JavaScript so
// a test can prove TypeScript's generated copy (protocol/src/bpf_abi.generated.ts) agrees.
#ifndef AEGIS_NATIVE_ABI_CONSTANTS_H
#define AEGIS_NATIVE_ABI_CONSTANTS_H

#include <napi.h>

namespace aegis {

// { defines: {AEGIS_*: value}, ruleRecord: {bytes, fields: {name: {offset, size}}},
//   ipproto: {tcp, udp} }, every value taken from the C definitions (sizeof/offsetof for
// the record layout).
Napi::Object AbiConstants(Napi::Env env);

}  // namespace aegis

#endif
