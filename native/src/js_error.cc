// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "js_error.h"

namespace aegis {

Napi::Error ToJsError(Napi::Env env, const Status& s) {
  Napi::Error e = Napi::Error::New(env, s.message.empty() ? s.code : s.message);
  Napi::Object o = e.Value();
  o.Set("errno", Napi::Number::New(env, s.err));
  o.Set("code", Napi::String::New(env, s.code));
  o.Set("op", Napi::String::New(env, s.op));
  if (!s.log.empty()) o.Set("verifierLog", Napi::String::New(env, s.log));
  return e;
}

Napi::Promise PromiseWorker::Start(Napi::Env env, Exec exec, Ok ok, Napi::Object keep) {
  auto* w = new PromiseWorker(env, std::move(exec), std::move(ok), keep);
  Napi::Promise p = w->deferred_.Promise();
  w->Napi::AsyncWorker::Queue();
  return p;
}

PromiseWorker::PromiseWorker(Napi::Env env, Exec exec, Ok ok, Napi::Object keep)
    : Napi::AsyncWorker(env, "aegis:native"),
      deferred_(Napi::Promise::Deferred::New(env)),
      exec_(std::move(exec)),
      ok_(std::move(ok)) {
  if (!keep.IsEmpty()) keep_ = Napi::Persistent(keep);
}

void PromiseWorker::Execute() {
  try {
    status_ = exec_();
  } catch (const std::exception& e) {
    status_ = Status::Coded("EINTERNAL", 0, "native", e.what());
  }
}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (!status_.ok()) {
    deferred_.Reject(ToJsError(env, status_).Value());
    return;
  }
  try {
    deferred_.Resolve(ok_(env));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  }
}

void PromiseWorker::OnError(const Napi::Error& e) { deferred_.Reject(e.Value()); }

}  // namespace aegis
