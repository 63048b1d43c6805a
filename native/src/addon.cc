// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Registration only: the Aegis native addon. Reached solely through
// agent/src/datapath/ (the typed wrapper validates every argument first).
#include <napi.h>

#include "abi_constants.h"
#include "datapath.h"
#include "notify.h"
#include "peer_credentials.h"
#include "token_file.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Datapath", aegis::Datapath::Init(env));
  exports.Set("probe", Napi::Function::New(env, aegis::ProbeJs, "probe"));
  exports.Set("monotonicNs", Napi::Function::New(env, aegis::MonotonicNsJs, "monotonicNs"));
  exports.Set("purgePins", Napi::Function::New(env, aegis::PurgePinsJs, "purgePins"));
  exports.Set("writeFileAtomic", Napi::Function::New(env, aegis::WriteFileAtomicJs, "writeFileAtomic"));
  exports.Set("notify", Napi::Function::New(env, aegis::NotifyJs, "notify"));
  exports.Set("peerCredentials", Napi::Function::New(env, aegis::PeerCredentialsJs, "peerCredentials"));
  exports.Set("layoutVersion", Napi::Number::New(env, AEGIS_LAYOUT_VERSION));
  exports.Set("maxRules", Napi::Number::New(env, AEGIS_MAX_RULES));
  exports.Set("maxServices", Napi::Number::New(env, AEGIS_MAX_SERVICES));
  exports.Set("constants", aegis::AbiConstants(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(aegis, Init)
