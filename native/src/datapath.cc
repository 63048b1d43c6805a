// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "datapath.h"

#include <bpf/libbpf.h>
#include <string.h>

#include <vector>

#include "js_error.h"

namespace aegis {
namespace {

// Arguments were validated by the TypeScript wrapper; these only convert.
uint64_t BigU64(const Napi::Value& v) {
  bool lossless = false;
  return v.As<Napi::BigInt>().Uint64Value(&lossless);
}

std::vector<uint8_t> BufferBytes(const Napi::Value& v) {
  auto b = v.As<Napi::Buffer<uint8_t>>();
  return std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
}

Napi::Value U64(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

Napi::Object CountersToJs(Napi::Env env, const aegis_counters& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("allowed", U64(env, c.allowed));
  o.Set("dropped", U64(env, c.dropped));
  o.Set("wouldDrop", U64(env, c.would_drop));
  o.Set("bypassed", U64(env, c.bypassed));
  o.Set("replies", U64(env, c.replies));
  o.Set("cut", U64(env, c.cut));
  o.Set("unparsed", U64(env, c.unparsed));
  o.Set("expired", U64(env, c.expired));
  o.Set("eventsLost", U64(env, c.events_lost));
  o.Set("events", U64(env, c.events));
  o.Set("ruleCountsLost", U64(env, c.rule_counts_lost));
  return o;
}

Napi::Object EventToJs(Napi::Env env, const aegis_flow_event& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("tsNs", U64(env, e.ts_ns));
  o.Set("generation", U64(env, e.generation));
  o.Set("serviceId", Napi::Number::New(env, e.service_id));
  o.Set("direction", Napi::Number::New(env, e.direction));
  o.Set("verdict", Napi::Number::New(env, e.verdict));
  o.Set("proto", Napi::Number::New(env, e.proto));
  o.Set("family", Napi::Number::New(env, e.family));
  o.Set("sport", Napi::Number::New(env, e.sport));
  o.Set("dport", Napi::Number::New(env, e.dport));
  o.Set("saddr", Napi::Buffer<uint8_t>::Copy(env, e.saddr, sizeof(e.saddr)));
  o.Set("daddr", Napi::Buffer<uint8_t>::Copy(env, e.daddr, sizeof(e.daddr)));
  o.Set("ruleId", Napi::Number::New(env, e.rule_id));
  o.Set("reason", Napi::Number::New(env, e.reason));
  return o;
}

}  // namespace

Napi::Function Datapath::Init(Napi::Env env) {
  return DefineClass(env, "Datapath",
                     {
                         InstanceMethod<&Datapath::Open>("open"),
                         InstanceMethod<&Datapath::Bind>("bind"),
                         InstanceMethod<&Datapath::Apply>("apply"),
                         InstanceMethod<&Datapath::Withdraw>("withdraw"),
                         InstanceMethod<&Datapath::Stats>("stats"),
                         InstanceMethod<&Datapath::RuleCounters>("ruleCounters"),
                         InstanceMethod<&Datapath::TestRun>("testRun"),
                         InstanceMethod<&Datapath::StartEvents>("startEvents"),
                         InstanceMethod<&Datapath::StopEvents>("stopEvents"),
                         InstanceMethod<&Datapath::Close>("close"),
                         InstanceMethod<&Datapath::Purge>("purge"),
                         InstanceMethod<&Datapath::RetireOlderLayout>("retireOlderLayout"),
                     });
}

Datapath::Datapath(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<Datapath>(info), core_(std::make_shared<DatapathCore>()) {}

Datapath::~Datapath() {
  // Runs from the GC finalizer: only release this process's handles. Pinned links and
  // maps stay, so enforcement is unaffected (DatapathCore's destructor closes fds).
  StopEventsNow();
}

// open(pinRoot, eventRate: bigint, eventBurst: bigint, udpFlowTimeoutNs: bigint,
//      connectHooks: boolean, allowedEventRate: bigint, allowedEventBurst: bigint)
//   -> { connectHooks, connectHooksReason }
Napi::Value Datapath::Open(const Napi::CallbackInfo& info) {
  auto opts = std::make_shared<OpenOptions>();
  opts->pin_root = info[0].As<Napi::String>().Utf8Value();
  opts->event_rate = BigU64(info[1]);
  opts->event_burst = BigU64(info[2]);
  opts->udp_flow_timeout_ns = BigU64(info[3]);
  opts->connect_hooks = info[4].As<Napi::Boolean>().Value();
  opts->allowed_event_rate = BigU64(info[5]);
  opts->allowed_event_burst = BigU64(info[6]);
  auto res = std::make_shared<OpenResult>();
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core, opts, res] { return core->Open(*opts, res.get()); },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("connectHooks", Napi::Boolean::New(env, res->connect_hooks));
        o.Set("connectHooksReason", Napi::String::New(env, res->connect_hooks_reason));
        o.Set("olderLayout", Napi::Number::New(env, res->older_layout));
        return o;
      },
      Value());
}

// bind(serviceId, cgroupPath) -> { cgroupId: bigint, relinked, rebound }
Napi::Value Datapath::Bind(const Napi::CallbackInfo& info) {
  uint32_t svc = info[0].As<Napi::Number>().Uint32Value();
  std::string path = info[1].As<Napi::String>().Utf8Value();
  auto res = std::make_shared<BindResult>();
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core, svc, path, res] { return core->Bind(svc, path, res.get()); },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("cgroupId", U64(env, res->cgroup_id));
        o.Set("relinked", Napi::Boolean::New(env, res->relinked));
        o.Set("rebound", Napi::Boolean::New(env, res->rebound));
        return o;
      },
      Value());
}

// apply(serviceId, rules: Buffer, mode, flags, expiresNs: bigint, generation: bigint)
Napi::Value Datapath::Apply(const Napi::CallbackInfo& info) {
  uint32_t svc = info[0].As<Napi::Number>().Uint32Value();
  auto rules = std::make_shared<std::vector<uint8_t>>(BufferBytes(info[1]));
  ServiceConfig cfg;
  cfg.mode = info[2].As<Napi::Number>().Uint32Value();
  cfg.flags = info[3].As<Napi::Number>().Uint32Value();
  cfg.expires_ns = BigU64(info[4]);
  cfg.generation = BigU64(info[5]);
  auto res = std::make_shared<ApplyResult>();
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core, svc, rules, cfg, res] { return core->Apply(svc, *rules, cfg, res.get()); },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("rules", Napi::Number::New(env, res->rules));
        o.Set("buildNs", U64(env, res->build_ns));
        o.Set("swapNs", U64(env, res->swap_ns));
        return o;
      },
      Value());
}

Napi::Value Datapath::Withdraw(const Napi::CallbackInfo& info) {
  uint32_t svc = info[0].As<Napi::Number>().Uint32Value();
  auto existed = std::make_shared<bool>(false);
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core, svc, existed] { return core->Withdraw(svc, existed.get()); },
      [existed](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *existed); }, Value());
}

Napi::Value Datapath::Stats(const Napi::CallbackInfo& info) {
  auto res = std::make_shared<std::vector<ServiceStats>>();
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core, res] { return core->Stats(res.get()); },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, res->size());
        for (size_t i = 0; i < res->size(); i++) {
          const ServiceStats& s = (*res)[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("serviceId", Napi::Number::New(env, s.service_id));
          Napi::Array cg = Napi::Array::New(env, s.cgroup_ids.size());
          for (size_t j = 0; j < s.cgroup_ids.size(); j++) cg.Set(j, U64(env, s.cgroup_ids[j]));
          o.Set("cgroupIds", cg);
          if (s.has_policy) {
            Napi::Object p = Napi::Object::New(env);
            p.Set("mode", Napi::Number::New(env, s.config.mode));
            p.Set("flags", Napi::Number::New(env, s.config.flags));
            p.Set("expiresNs", U64(env, s.config.expires_ns));
            p.Set("generation", U64(env, s.config.generation));
            p.Set("rules", Napi::Number::New(env, s.config.rule_count));
            o.Set("policy", p);
          } else {
            o.Set("policy", env.Null());
          }
          o.Set("counters", s.has_counters ? Napi::Value(CountersToJs(env, s.counters)) : env.Null());
          arr.Set(i, o);
        }
        return arr;
      },
      Value());
}

// ruleCounters(serviceId) -> [{ ruleId, generation: bigint, count: bigint }]
Napi::Value Datapath::RuleCounters(const Napi::CallbackInfo& info) {
  uint32_t svc = info[0].As<Napi::Number>().Uint32Value();
  auto res = std::make_shared<std::vector<RuleCount>>();
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core, svc, res] { return core->RuleCounters(svc, res.get()); },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, res->size());
        for (size_t i = 0; i < res->size(); i++) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("ruleId", Napi::Number::New(env, (*res)[i].rule_id));
          o.Set("generation", U64(env, (*res)[i].generation));
          o.Set("count", U64(env, (*res)[i].count));
          arr.Set(i, o);
        }
        return arr;
      },
      Value());
}

// testRun(dir, serviceId | -1, l3packet: Buffer, repeat) -> { retval, reason, durationNs }
Napi::Value Datapath::TestRun(const Napi::CallbackInfo& info) {
  uint8_t dir = static_cast<uint8_t>(info[0].As<Napi::Number>().Uint32Value());
  int64_t svc = info[1].As<Napi::Number>().Int64Value();
  auto pkt = std::make_shared<std::vector<uint8_t>>(BufferBytes(info[2]));
  uint32_t repeat = info[3].As<Napi::Number>().Uint32Value();
  auto res = std::make_shared<TestRunResult>();
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core, dir, svc, pkt, repeat, res] { return core->TestRun(dir, svc, *pkt, repeat, res.get()); },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("retval", Napi::Number::New(env, res->retval));
        o.Set("reason", Napi::Number::New(env, res->reason));
        o.Set("durationNs", Napi::Number::New(env, res->duration_ns));
        return o;
      },
      Value());
}

int Datapath::OnRingEvent(void* ctx, void* data, size_t size) {
  auto* self = static_cast<Datapath*>(ctx);
  if (size < sizeof(aegis_flow_event) || self->on_event_.IsEmpty() || self->stop_pending_) return 0;
  aegis_flow_event e;
  memcpy(&e, data, sizeof(e));
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  try {
    self->on_event_.MakeCallback(self->Value(), {EventToJs(env, e)}, *self->async_ctx_);
  } catch (const Napi::Error& err) {
    // No JS frame to throw into from a uv callback: report it as uncaught.
    napi_fatal_exception(env, err.Value());
  }
  return 0;
}

void Datapath::OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  auto* self = static_cast<Datapath*>(handle->data);
  if (status < 0 || self == nullptr || self->rb_ == nullptr) return;
  // Runs on the JS thread: OnRingEvent may call into JS directly. A callback that stops
  // events (or closes the datapath) must not free the ring buffer under consume().
  self->consuming_ = true;
  ring_buffer__consume(self->rb_);
  self->consuming_ = false;
  if (self->stop_pending_) {
    self->stop_pending_ = false;
    self->StopEventsNow();
  }
}

// startEvents(callback(events: object[])): consumes the ring buffer on this thread.
Napi::Value Datapath::StartEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StopEventsNow();
  int fd = core_->EventsFd();
  if (fd < 0) {
    Status s = Status::Coded("ECLOSED", EBADF, "startEvents", "the datapath is not open");
    throw ToJsError(env, s);
  }
  on_event_ = Napi::Persistent(info[0].As<Napi::Function>());
  async_ctx_ = std::make_unique<Napi::AsyncContext>(env, "aegis:flow");
  rb_ = ring_buffer__new(fd, OnRingEvent, this, nullptr);
  if (rb_ == nullptr) {
    Status s = Status::Errno(errno, "ring_buffer__new", "cannot consume flow events");
    on_event_.Reset();
    throw ToJsError(env, s);
  }
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  poll_ = new uv_poll_t;
  uv_poll_init(loop, poll_, ring_buffer__epoll_fd(rb_));
  poll_->data = this;
  uv_poll_start(poll_, UV_READABLE, OnPoll);
  // Flow events alone must not keep the process alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
  return env.Undefined();
}

void Datapath::StopEventsNow() {
  if (consuming_) {
    stop_pending_ = true;
    if (!on_event_.IsEmpty()) on_event_.Reset();
    return;
  }
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  if (rb_ != nullptr) {
    ring_buffer__free(rb_);
    rb_ = nullptr;
  }
  if (!on_event_.IsEmpty()) on_event_.Reset();
  async_ctx_.reset();
}

Napi::Value Datapath::StopEvents(const Napi::CallbackInfo& info) {
  StopEventsNow();
  return info.Env().Undefined();
}

Napi::Value Datapath::Close(const Napi::CallbackInfo& info) {
  StopEventsNow();
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core] { return core->Close(); }, [](Napi::Env env) { return env.Undefined(); },
      Value());
}

// retireOlderLayout() -> number of old links detached
Napi::Value Datapath::RetireOlderLayout(const Napi::CallbackInfo& info) {
  auto core = core_;
  auto n = std::make_shared<uint32_t>(0);
  return PromiseWorker::Start(
      info.Env(), [core, n] { return core->RetireOlderLayout(n.get()); },
      [n](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *n); }, Value());
}

Napi::Value Datapath::Purge(const Napi::CallbackInfo& info) {
  StopEventsNow();
  auto core = core_;
  return PromiseWorker::Start(
      info.Env(), [core] { return core->Purge(); }, [](Napi::Env env) { return env.Undefined(); },
      Value());
}

Napi::Value ProbeJs(const Napi::CallbackInfo& info) {
  auto res = std::make_shared<ProbeResult>();
  return PromiseWorker::Start(
      info.Env(), [res] { return Probe(res.get()); },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("progCgroupSkb", Napi::Boolean::New(env, res->prog_cgroup_skb));
        o.Set("mapLpmTrie", Napi::Boolean::New(env, res->map_lpm_trie));
        o.Set("mapHashOfMaps", Napi::Boolean::New(env, res->map_hash_of_maps));
        o.Set("mapRingbuf", Napi::Boolean::New(env, res->map_ringbuf));
        o.Set("progCgroupSockAddr", Napi::Boolean::New(env, res->prog_cgroup_sock_addr));
        o.Set("errno", Napi::Number::New(env, res->bpf_errno));
        return o;
      });
}

Napi::Value MonotonicNsJs(const Napi::CallbackInfo& info) {
  return Napi::BigInt::New(info.Env(), MonotonicNs());
}

Napi::Value PurgePinsJs(const Napi::CallbackInfo& info) {
  std::string root = info[0].As<Napi::String>().Utf8Value();
  return PromiseWorker::Start(
      info.Env(), [root] { return PurgePins(root); }, [](Napi::Env env) { return env.Undefined(); });
}

}  // namespace aegis
