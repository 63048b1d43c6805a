// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "abi_constants.h"

#include <netinet/in.h>
#include <stddef.h>

#include "datapath_core.h"

namespace aegis {
namespace {

Napi::Object Field(Napi::Env env, size_t offset, size_t size) {
  Napi::Object f = Napi::Object::New(env);
  f.Set("offset", Napi::Number::New(env, static_cast<double>(offset)));
  f.Set("size", Napi::Number::New(env, static_cast<double>(size)));
  return f;
}

}  // namespace

Napi::Object AbiConstants(Napi::Env env) {
  Napi::Object defines = Napi::Object::New(env);
  // Names only: the values are whatever aegis.h defines them to in this build.
#define AEGIS_EXPORT_NUM(name) defines.Set(#name, Napi::Number::New(env, static_cast<double>(name)))
#define AEGIS_EXPORT_STR(name) defines.Set(#name, Napi::String::New(env, name))
  AEGIS_EXPORT_NUM(AEGIS_LAYOUT_VERSION);
  AEGIS_EXPORT_NUM(AEGIS_LAYOUT_MAGIC);
  AEGIS_EXPORT_STR(AEGIS_PIN_PREFIX);
  AEGIS_EXPORT_STR(AEGIS_LAYOUT_PIN);
  AEGIS_EXPORT_NUM(AEGIS_MAX_SERVICES);
  AEGIS_EXPORT_NUM(AEGIS_MAX_RULES);
  AEGIS_EXPORT_NUM(AEGIS_MAX_CGROUPS);
  AEGIS_EXPORT_NUM(AEGIS_MAX_FLOWS);
  AEGIS_EXPORT_NUM(AEGIS_RINGBUF_BYTES);
  AEGIS_EXPORT_NUM(AEGIS_DIR_EGRESS);
  AEGIS_EXPORT_NUM(AEGIS_DIR_INGRESS);
  AEGIS_EXPORT_NUM(AEGIS_DIR_CONFIG);
  AEGIS_EXPORT_NUM(AEGIS_KEY_EXACT_BITS);
  AEGIS_EXPORT_NUM(AEGIS_KEY_MAX_PREFIX);
  AEGIS_EXPORT_NUM(AEGIS_V4_MAPPED_BITS);
  AEGIS_EXPORT_NUM(AEGIS_MODE_OBSERVE);
  AEGIS_EXPORT_NUM(AEGIS_MODE_ENFORCE);
  AEGIS_EXPORT_NUM(AEGIS_CFG_FAIL_CLOSED);
  AEGIS_EXPORT_NUM(AEGIS_PROTO_ALL);
  AEGIS_EXPORT_NUM(AEGIS_MAX_RULE_COUNTERS);
  AEGIS_EXPORT_NUM(AEGIS_EV_ALLOWED);
  AEGIS_EXPORT_NUM(AEGIS_EV_DROPPED);
  AEGIS_EXPORT_NUM(AEGIS_EV_WOULD_DROP);
  AEGIS_EXPORT_NUM(AEGIS_EVR_POLICY);
  AEGIS_EXPORT_NUM(AEGIS_EVR_EXPIRED);
  AEGIS_EXPORT_NUM(AEGIS_EVR_UNPARSED);
  AEGIS_EXPORT_NUM(AEGIS_EVR_CUT);
  AEGIS_EXPORT_NUM(AEGIS_RULE_NONE);
  AEGIS_EXPORT_NUM(AEGIS_BUCKET_DENIED);
  AEGIS_EXPORT_NUM(AEGIS_BUCKET_ALLOWED);
  AEGIS_EXPORT_NUM(AEGIS_BUCKETS);
  AEGIS_EXPORT_NUM(AEGIS_R_UNBOUND);
  AEGIS_EXPORT_NUM(AEGIS_R_NO_POLICY);
  AEGIS_EXPORT_NUM(AEGIS_R_ALLOWED);
  AEGIS_EXPORT_NUM(AEGIS_R_DROPPED);
  AEGIS_EXPORT_NUM(AEGIS_R_WOULD_DROP);
  AEGIS_EXPORT_NUM(AEGIS_R_BYPASS);
  AEGIS_EXPORT_NUM(AEGIS_R_EXPIRED_OPEN);
  AEGIS_EXPORT_NUM(AEGIS_R_EXPIRED_CLOSED);
  AEGIS_EXPORT_NUM(AEGIS_R_REPLY);
  AEGIS_EXPORT_NUM(AEGIS_R_UNPARSED);
  AEGIS_EXPORT_NUM(AEGIS_R_CUT);
  AEGIS_EXPORT_NUM(AEGIS_TEST_MAGIC);
#undef AEGIS_EXPORT_NUM
#undef AEGIS_EXPORT_STR

  Napi::Object fields = Napi::Object::New(env);
#define AEGIS_EXPORT_FIELD(f) fields.Set(#f, Field(env, offsetof(RuleRecord, f), sizeof(RuleRecord::f)))
  AEGIS_EXPORT_FIELD(dir);
  AEGIS_EXPORT_FIELD(proto);
  AEGIS_EXPORT_FIELD(port);
  AEGIS_EXPORT_FIELD(prefixlen);
  AEGIS_EXPORT_FIELD(pad);
  AEGIS_EXPORT_FIELD(addr);
  AEGIS_EXPORT_FIELD(rule_id);
#undef AEGIS_EXPORT_FIELD
  Napi::Object record = Napi::Object::New(env);
  record.Set("bytes", Napi::Number::New(env, static_cast<double>(sizeof(RuleRecord))));
  record.Set("fields", fields);

  Napi::Object ipproto = Napi::Object::New(env);
  ipproto.Set("tcp", Napi::Number::New(env, IPPROTO_TCP));
  ipproto.Set("udp", Napi::Number::New(env, IPPROTO_UDP));
  ipproto.Set("icmp", Napi::Number::New(env, IPPROTO_ICMP));
  ipproto.Set("icmpv6", Napi::Number::New(env, IPPROTO_ICMPV6));

  Napi::Object out = Napi::Object::New(env);
  out.Set("defines", defines);
  out.Set("ruleRecord", record);
  out.Set("ipproto", ipproto);
  return out;
}

}  // namespace aegis
