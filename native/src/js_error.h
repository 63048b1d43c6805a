// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Status -> JS Error with errno, code, op (and the libbpf log when there is one).
#ifndef AEGIS_NATIVE_JS_ERROR_H
#define AEGIS_NATIVE_JS_ERROR_H

#include <napi.h>

#include <functional>
#include <memory>

#include "status.h"

namespace aegis {

Napi::Error ToJsError(Napi::Env env, const Status& s);

// Runs `exec` on the libuv thread pool and settles a promise: `exec` must not touch N-API
// (it fills a baton captured by both lambdas); `ok` builds the JS result on the main
// thread. `keep` holds a JS object (the owner of the native state) alive until then.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Exec = std::function<Status()>;
  using Ok = std::function<Napi::Value(Napi::Env)>;

  static Napi::Promise Start(Napi::Env env, Exec exec, Ok ok, Napi::Object keep = Napi::Object());

 private:
  PromiseWorker(Napi::Env env, Exec exec, Ok ok, Napi::Object keep);
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

  Napi::Promise::Deferred deferred_;
  Exec exec_;
  Ok ok_;
  Napi::ObjectReference keep_;
  Status status_;
};

}  // namespace aegis

#endif
