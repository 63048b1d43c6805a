// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The libbpf side of the datapath, free of N-API so it runs on worker threads: load the
// skeleton against pinned maps, bind services to cgroups through pinned bpf_links, swap
// rule tries, read counters, run BPF_PROG_TEST_RUN. Callers serialise through the mutex
// inside; every method returns a Status instead of throwing.
#ifndef AEGIS_NATIVE_DATAPATH_CORE_H
#define AEGIS_NATIVE_DATAPATH_CORE_H

#include <stdint.h>

#include <mutex>
#include <string>
#include <vector>

#include "../../bpf/aegis.h"
#include "status.h"

struct aegis_bpf;

namespace aegis {

// One rule as the TypeScript wrapper encodes it (little-endian, 28 bytes). The wrapper
// has already validated it and mapped IPv4 into ::ffff:0:0/96 (prefixlen includes the 96).
// Its encoder takes this layout from protocol/src/bpf_abi.generated.ts, which
// scripts/gen-bpf-abi.mjs derives from the fields below: keep them fixed-width integers
// (and arrays of them) inside the pack(1) block, and regenerate after changing them.
#pragma pack(push, 1)
struct RuleRecord {
  uint8_t dir;        // AEGIS_DIR_EGRESS / AEGIS_DIR_INGRESS
  uint8_t proto;      // 6 or 17
  uint16_t port;      // host order, 0 = any
  uint8_t prefixlen;  // 0..128 over the 16-byte address
  uint8_t pad[3];
  uint8_t addr[16];
  uint32_t rule_id;
};
#pragma pack(pop)
static_assert(sizeof(RuleRecord) == 28, "RuleRecord is a wire format");

struct OpenOptions {
  std::string pin_root;
  uint64_t event_rate = 200;
  uint64_t event_burst = 400;
  // Separate budget for allowed new flows (a flood of them never starves denial events).
  uint64_t allowed_event_rate = 200;
  uint64_t allowed_event_burst = 400;
  uint64_t udp_flow_timeout_ns = 120ULL * 1000000000ULL;
  // Load and attach the connect/sendmsg programs when the kernel has them; false keeps
  // the datapath skb-only (and detaches such links left by an earlier run at bind).
  bool connect_hooks = true;
};

// What Open settled on for the connect/sendmsg programs.
struct OpenResult {
  bool connect_hooks = false;
  std::string connect_hooks_reason;  // why they are off (empty when on)
  // Layout of an older build's pins found under the root (0: none). Both layouts enforce
  // until RetireOlderLayout removes the old one.
  uint32_t older_layout = 0;
};

struct ServiceConfig {
  uint32_t mode = AEGIS_MODE_ENFORCE;
  uint32_t flags = 0;
  uint64_t expires_ns = 0;
  uint64_t generation = 0;
};

struct BindResult {
  uint64_t cgroup_id = 0;
  bool relinked = false;   // an existing pinned link was moved to the new program
  bool rebound = false;    // the service moved from another cgroup
};

struct ApplyResult {
  uint32_t rules = 0;
  uint64_t build_ns = 0;   // creating and filling the new trie
  uint64_t swap_ns = 0;    // the one outer-map update
};

struct ServiceStats {
  uint32_t service_id = 0;
  std::vector<uint64_t> cgroup_ids;
  bool has_policy = false;
  aegis_lpm_value config{};
  bool has_counters = false;
  aegis_counters counters{};
};

// New flows of one service decided by one rule (AEGIS_RULE_NONE: denied by no rule) under
// one generation, summed over the CPUs.
struct RuleCount {
  uint32_t rule_id = 0;
  uint64_t generation = 0;
  uint64_t count = 0;
};

struct TestRunResult {
  uint32_t retval = 0;
  uint32_t reason = 0;
  uint32_t duration_ns = 0;
};

struct ProbeResult {
  bool prog_cgroup_skb = false;
  bool map_lpm_trie = false;
  bool map_hash_of_maps = false;
  bool map_ringbuf = false;
  bool prog_cgroup_sock_addr = false;  // connect/sendmsg hooks (optional: skb-only without)
  int bpf_errno = 0;   // errno of a failed probe (EPERM: not privileged)
};

Status Probe(ProbeResult* out);
uint64_t MonotonicNs();

// Removes the pins of this layout (detaching links first) from pin_root, then the layout
// marker if it is ours, then the directory if it is empty. Needs no open datapath.
Status PurgePins(const std::string& pin_root);

class DatapathCore {
 public:
  DatapathCore() = default;
  ~DatapathCore();
  DatapathCore(const DatapathCore&) = delete;
  DatapathCore& operator=(const DatapathCore&) = delete;

  Status Open(const OpenOptions& opts, OpenResult* out);
  Status Bind(uint32_t service_id, const std::string& cgroup_path, BindResult* out);
  Status Apply(uint32_t service_id, const std::vector<uint8_t>& rules, const ServiceConfig& cfg,
               ApplyResult* out);
  Status Withdraw(uint32_t service_id, bool* existed);
  Status Stats(std::vector<ServiceStats>* out);
  Status RuleCounters(uint32_t service_id, std::vector<RuleCount>* out);
  // svc < 0: no override (the packet's cgroup is the runner's own).
  Status TestRun(uint8_t dir, int64_t svc, const std::vector<uint8_t>& packet, uint32_t repeat,
                 TestRunResult* out);
  Status Close();
  Status Purge();
  // Detaches and unpins what an older layout left under the pin root and marks the root
  // as this layout's. Call once this layout enforces every service the old one did.
  Status RetireOlderLayout(uint32_t* links_detached);
  // The ring buffer map fd, or -1 when not open. Owned by the core.
  int EventsFd();

 private:
  Status RequireOpen(const char* op);
  Status EnsureCounters(uint32_t service_id);
  // Removes the per-rule counts of a service, except those of `keep_generation` when
  // `keep` (after a swap: the new policy's own counts stay).
  void ClearRuleCounters(uint32_t service_id, bool keep, uint64_t keep_generation);
  Status LoadTestInstance();
  Status LinkOne(uint32_t service_id, int cgroup_fd, uint64_t cgroup_id, size_t hook,
                 BindResult* out, uint64_t* old_cgroup_id);
  Status UnlinkOne(uint32_t service_id, size_t hook);
  void CloseLocked();

  std::mutex mu_;
  OpenOptions opts_;
  aegis_bpf* skel_ = nullptr;
  aegis_bpf* test_skel_ = nullptr;
  bool connect_hooks_ = false;  // the production instance loaded the connect/sendmsg programs
  uint32_t older_layout_ = 0;   // an older layout's pins still live under the root
};

}  // namespace aegis

#endif
