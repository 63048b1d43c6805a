// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// N-API face of the datapath: the Datapath class (one per pin root) and probe(). Every
// method that touches the kernel copies its arguments into a baton, runs DatapathCore on
// the thread pool and settles a promise. Flow events arrive on the JS thread through a
// uv_poll on the ring buffer's epoll fd.
#ifndef AEGIS_NATIVE_DATAPATH_H
#define AEGIS_NATIVE_DATAPATH_H

#include <napi.h>
#include <uv.h>

#include <memory>

#include "datapath_core.h"

struct ring_buffer;

namespace aegis {

class Datapath : public Napi::ObjectWrap<Datapath> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Datapath(const Napi::CallbackInfo& info);
  ~Datapath() override;

 private:
  Napi::Value Open(const Napi::CallbackInfo& info);
  Napi::Value Bind(const Napi::CallbackInfo& info);
  Napi::Value Apply(const Napi::CallbackInfo& info);
  Napi::Value Withdraw(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value RuleCounters(const Napi::CallbackInfo& info);
  Napi::Value TestRun(const Napi::CallbackInfo& info);
  Napi::Value StartEvents(const Napi::CallbackInfo& info);
  Napi::Value StopEvents(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Purge(const Napi::CallbackInfo& info);
  Napi::Value RetireOlderLayout(const Napi::CallbackInfo& info);

  void StopEventsNow();
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static int OnRingEvent(void* ctx, void* data, size_t size);

  std::shared_ptr<DatapathCore> core_;
  // Flow events: the ring buffer consumer and the JS callback it feeds.
  ring_buffer* rb_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> async_ctx_;
  bool consuming_ = false;
  bool stop_pending_ = false;
};

// probe(): Promise<{ progCgroupSkb, mapLpmTrie, mapHashOfMaps, mapRingbuf, progCgroupSockAddr, errno }>
Napi::Value ProbeJs(const Napi::CallbackInfo& info);
// monotonicNs(): bigint, CLOCK_MONOTONIC (the clock of bpf_ktime_get_ns).
Napi::Value MonotonicNsJs(const Napi::CallbackInfo& info);
// purgePins(root): Promise<void>, without an open datapath.
Napi::Value PurgePinsJs(const Napi::CallbackInfo& info);

}  // namespace aegis

#endif
