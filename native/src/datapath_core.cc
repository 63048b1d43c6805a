// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "datapath_core.h"

#include <algorithm>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "aegis.skel.h"

#ifndef ENOTSUPP
#define ENOTSUPP 524  // kernel-internal "operation not supported"
#endif

namespace aegis {
namespace {

// libbpf reports through one global print callback. Each worker thread points
// t_capture at its own buffer while it works, so concurrent operations never mix logs
// and a failed load can hand its verifier log to JS.
thread_local std::string* t_capture = nullptr;

int PrintFn(enum libbpf_print_level level, const char* fmt, va_list args) {
  static const bool debug = getenv("AEGIS_LIBBPF_DEBUG") != nullptr;
  if (level == LIBBPF_DEBUG && !debug) return 0;
  char buf[1024];
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(buf, sizeof(buf), fmt, copy);
  va_end(copy);
  std::string text;
  if (n >= static_cast<int>(sizeof(buf))) {
    text.resize(static_cast<size_t>(n) + 1);
    vsnprintf(&text[0], text.size(), fmt, args);
    text.resize(static_cast<size_t>(n));
  } else if (n > 0) {
    text.assign(buf, static_cast<size_t>(n));
  }
  if (t_capture != nullptr) t_capture->append(text);
  if (debug) fputs(text.c_str(), stderr);
  return n;
}

struct Capture {
  std::string log;
  Capture() {
    static std::once_flag once;
    std::call_once(once, [] { libbpf_set_print(PrintFn); });
    t_capture = &log;
  }
  ~Capture() { t_capture = nullptr; }
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// Every program a bound service's cgroup gets, with the tag of its pinned link
// (aegis_v2_link_<tag><svc>). The first two are the packet programs; the rest are the
// connect-time hooks, attached only when the kernel has them.
struct Hook {
  const char* tag;
  bpf_attach_type type;
  const char* what;
  bool connect_hook;
};
const Hook kHooks[] = {
    {"eg_", BPF_CGROUP_INET_EGRESS, "egress", false},
    {"in_", BPF_CGROUP_INET_INGRESS, "ingress", false},
    {"c4_", BPF_CGROUP_INET4_CONNECT, "connect4", true},
    {"c6_", BPF_CGROUP_INET6_CONNECT, "connect6", true},
    {"s4_", BPF_CGROUP_UDP4_SENDMSG, "sendmsg4", true},
    {"s6_", BPF_CGROUP_UDP6_SENDMSG, "sendmsg6", true},
};
constexpr size_t kHookCount = sizeof(kHooks) / sizeof(kHooks[0]);

bpf_program* HookProgram(aegis_bpf* skel, size_t hook) {
  switch (hook) {
    case 0: return skel->progs.aegis_egress;
    case 1: return skel->progs.aegis_ingress;
    case 2: return skel->progs.aegis_connect4;
    case 3: return skel->progs.aegis_connect6;
    case 4: return skel->progs.aegis_sendmsg4;
    default: return skel->progs.aegis_sendmsg6;
  }
}

std::string LinkPin(const std::string& root, uint32_t svc, size_t hook) {
  return root + "/" AEGIS_PIN_PREFIX "link_" + kHooks[hook].tag + std::to_string(svc);
}

Status MkdirP(const std::string& path) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::Errno(errno, "mkdir", "cannot create pin directory " + cur);
    }
  }
  return Status::Ok();
}

Status CgroupId(const std::string& path, uint64_t* id) {
  struct {
    struct file_handle fh;
    uint64_t id;
  } h{};
  int mount_id = 0;
  h.fh.handle_bytes = sizeof(uint64_t);
  if (name_to_handle_at(AT_FDCWD, path.c_str(), &h.fh, &mount_id, 0) != 0) {
    return Status::Errno(errno, "name_to_handle_at", "cannot read the cgroup id of " + path);
  }
  memcpy(id, h.fh.f_handle, sizeof(uint64_t));
  return Status::Ok();
}

int PossibleCpus() {
  int n = libbpf_num_possible_cpus();
  return n > 0 ? n : 1;
}

// Reads the layout marker at root; *present is false when there is none.
Status ReadMarker(const std::string& root, bool* present, aegis_layout_marker* m) {
  std::string path = root + "/" AEGIS_LAYOUT_PIN;
  Fd fd(bpf_obj_get(path.c_str()));
  *present = false;
  if (fd.get() < 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Errno(errno, "bpf_obj_get", "cannot open the layout marker " + path);
  }
  uint32_t zero = 0;
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0 || info.type != BPF_MAP_TYPE_ARRAY ||
      info.value_size != sizeof(*m) || bpf_map_lookup_elem(fd.get(), &zero, m) != 0) {
    return Status::Coded("EINCOMPATIBLE_PIN", EINVAL, "layout",
                         "the layout marker " + path + " is not one Aegis understands; " +
                             "remove the pins under " + root + " (aegis purge) and restart");
  }
  *present = true;
  return Status::Ok();
}

// The layout number of a versioned pin name ("aegis_v<N>_..."), or 0 when it is not one.
uint32_t PinLayout(const std::string& name) {
  if (name.rfind("aegis_v", 0) != 0) return 0;
  size_t i = 7;
  uint32_t n = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && n < 100000) n = n * 10 + (name[i++] - '0');
  return i > 7 && i < name.size() && name[i] == '_' ? n : 0;
}

// Detaches and unpins the versioned pins of layouts 1..max_layout under root (links first:
// detaching them stops those programs before their maps disappear) and counts the links.
Status RemoveLayoutPins(const std::string& root, uint32_t max_layout, uint32_t* links_detached) {
  *links_detached = 0;
  DIR* d = opendir(root.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Errno(errno, "opendir", "cannot list pin root " + root);
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    uint32_t v = PinLayout(e->d_name);
    if (v != 0 && v <= max_layout) names.emplace_back(e->d_name);
  }
  closedir(d);
  auto is_link = [](const std::string& n) { return n.find("_link_") != std::string::npos; };
  for (const auto& n : names) {
    if (!is_link(n)) continue;
    std::string p = root + "/" + n;
    Fd fd(bpf_obj_get(p.c_str()));
    if (fd.get() >= 0) {
      if (bpf_link_detach(fd.get()) != 0 && errno != EINVAL && errno != ENOLINK) {
        return Status::Errno(errno, "bpf_link_detach", "cannot detach " + p);
      }
      (*links_detached)++;
    }
    if (unlink(p.c_str()) != 0 && errno != ENOENT) return Status::Errno(errno, "unlink", "cannot remove " + p);
  }
  for (const auto& n : names) {
    if (is_link(n)) continue;
    std::string p = root + "/" + n;
    if (unlink(p.c_str()) != 0 && errno != ENOENT) return Status::Errno(errno, "unlink", "cannot remove " + p);
  }
  return Status::Ok();
}

// Accepts pins of this layout, and pins of an older layout as an upgrade in progress
// (*older = that layout; the caller loads this layout beside it and retires the old one
// once this one enforces). A newer layout, or a marker Aegis cannot read, is refused: a
// downgrade must not guess at maps it does not know.
Status CheckLayout(const std::string& root, bool* marker_present, uint32_t* older) {
  *older = 0;
  aegis_layout_marker m{};
  Status s = ReadMarker(root, marker_present, &m);
  if (!s.ok()) return s;
  if (*marker_present) {
    if (m.magic != AEGIS_LAYOUT_MAGIC || m.version == 0 || m.version > AEGIS_LAYOUT_VERSION) {
      return Status::Coded(
          "EINCOMPATIBLE_PIN", EINVAL, "layout",
          "pins under " + root + " were made by datapath layout " + std::to_string(m.version) +
              " but this build uses layout " + std::to_string(AEGIS_LAYOUT_VERSION) +
              "; a newer layout is not downgraded: stop the other version, remove its pins (or "
              "use another pin root) and retry");
    }
    if (m.version < AEGIS_LAYOUT_VERSION) *older = m.version;
  }
  // Versioned pins of another layout without a marker naming it: an older layout is an
  // upgrade as above, a newer one is refused.
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return Status::Errno(errno, "opendir", "cannot list pin root " + root);
  std::string newer;
  while (dirent* e = readdir(d)) {
    uint32_t v = PinLayout(e->d_name);
    if (v == 0 || v == AEGIS_LAYOUT_VERSION) continue;
    if (v > AEGIS_LAYOUT_VERSION) {
      newer = e->d_name;
      break;
    }
    if (*older == 0 || v < *older) *older = v;
  }
  closedir(d);
  if (!newer.empty()) {
    return Status::Coded("EINCOMPATIBLE_PIN", EINVAL, "layout",
                         "pin " + root + "/" + newer +
                             " belongs to a newer datapath layout; remove it (or use another "
                             "pin root) and retry");
  }
  return Status::Ok();
}

Status WriteMarker(const std::string& root) {
  LIBBPF_OPTS(bpf_map_create_opts, mo);
  Fd fd(bpf_map_create(BPF_MAP_TYPE_ARRAY, AEGIS_LAYOUT_PIN, sizeof(uint32_t),
                       sizeof(aegis_layout_marker), 1, &mo));
  if (fd.get() < 0) return Status::Errno(errno, "bpf_map_create", "cannot create the layout marker");
  aegis_layout_marker m{AEGIS_LAYOUT_MAGIC, AEGIS_LAYOUT_VERSION, MonotonicNs()};
  uint32_t zero = 0;
  if (bpf_map_update_elem(fd.get(), &zero, &m, BPF_ANY) != 0) {
    return Status::Errno(errno, "bpf_map_update_elem", "cannot write the layout marker");
  }
  std::string path = root + "/" AEGIS_LAYOUT_PIN;
  if (bpf_obj_pin(fd.get(), path.c_str()) != 0 && errno != EEXIST) {
    return Status::Errno(errno, "bpf_obj_pin", "cannot pin the layout marker at " + path);
  }
  return Status::Ok();
}

Status LoadSkeleton(const OpenOptions& o, bool test_mode, bool connect_hooks, aegis_bpf** out) {
  Capture cap;
  LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = o.pin_root.c_str());
  aegis_bpf* skel = aegis_bpf__open_opts(&oo);
  if (skel == nullptr) {
    Status s = Status::Errno(errno, "aegis_bpf__open", "cannot open the embedded BPF object");
    s.log = cap.log;
    return s;
  }
  skel->rodata->test_mode = test_mode ? 1 : 0;
  skel->rodata->event_rate = o.event_rate;
  skel->rodata->allowed_event_rate = o.allowed_event_rate;
  skel->rodata->allowed_event_burst = o.allowed_event_burst;
  skel->rodata->event_burst = o.event_burst;
  skel->rodata->udp_flow_timeout_ns = o.udp_flow_timeout_ns;
  for (size_t h = 0; h < kHookCount; h++) {
    if (kHooks[h].connect_hook) bpf_program__set_autoload(HookProgram(skel, h), connect_hooks);
  }
  int err = aegis_bpf__load(skel);
  if (err != 0) {
    int e = errno != 0 ? errno : -err;
    aegis_bpf__destroy(skel);
    Status s;
    const std::string marker = "reuse pinned map at '";
    size_t at = cap.log.find(marker);
    if (at != std::string::npos) {
      // libbpf: "couldn't reuse pinned map at 'PATH': parameter mismatch": name the pin.
      std::string which = "a map";
      size_t q = cap.log.find('\'', at + marker.size());
      if (q != std::string::npos) which = cap.log.substr(at + marker.size(), q - at - marker.size());
      s = Status::Coded("EINCOMPATIBLE_PIN", e, "bpf_object__load",
                        "the pinned map " + which +
                            " does not match this build's layout; remove the pins under " +
                            o.pin_root + " (purge) or use another pin root");
    } else if ((e == EPERM || e == EACCES) &&
               cap.log.find("BEGIN PROG LOAD LOG") == std::string::npos) {
      s = Status::Errno(e, "bpf_object__load",
                        "loading the BPF programs was refused (needs root or CAP_BPF + "
                        "CAP_NET_ADMIN)");
    } else {
      s = Status::Errno(e, "bpf_object__load", "the kernel refused the Aegis BPF programs");
      s.code = "EBPF_LOAD";
    }
    s.log = cap.log;
    return s;
  }
  *out = skel;
  return Status::Ok();
}

}  // namespace

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

Status Probe(ProbeResult* out) {
  Capture cap;
  // libbpf's feature probes report "unsupported" for a refused bpf() too; a plain map
  // creation tells a missing privilege (EPERM) apart from a missing feature.
  LIBBPF_OPTS(bpf_map_create_opts, mo);
  Fd perm(bpf_map_create(BPF_MAP_TYPE_ARRAY, "aegis_probe", 4, 4, 1, &mo));
  if (perm.get() < 0) {
    out->bpf_errno = errno;
    return Status::Ok();
  }
  int r = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SKB, nullptr);
  if (r < 0) out->bpf_errno = -r;
  out->prog_cgroup_skb = r == 1;
  r = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_LPM_TRIE, nullptr);
  if (r < 0 && out->bpf_errno == 0) out->bpf_errno = -r;
  out->map_lpm_trie = r == 1;
  r = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_HASH_OF_MAPS, nullptr);
  if (r < 0 && out->bpf_errno == 0) out->bpf_errno = -r;
  out->map_hash_of_maps = r == 1;
  r = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr);
  if (r < 0 && out->bpf_errno == 0) out->bpf_errno = -r;
  out->map_ringbuf = r == 1;
  r = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, nullptr);
  out->prog_cgroup_sock_addr = r == 1;
  return Status::Ok();
}

Status PurgePins(const std::string& root) {
  bool present = false;
  aegis_layout_marker m{};
  Status s = ReadMarker(root, &present, &m);
  if (!s.ok()) {
    if (s.err == ENOENT) return Status::Ok();
    return s;
  }
  // Older layouts are this project's too and are removed with it; a newer one is not.
  if (present && (m.magic != AEGIS_LAYOUT_MAGIC || m.version > AEGIS_LAYOUT_VERSION)) {
    return Status::Coded("EINCOMPATIBLE_PIN", EINVAL, "purge",
                         "pins under " + root + " belong to datapath layout " +
                             std::to_string(m.version) + "; this build removes layouts up to " +
                             std::to_string(AEGIS_LAYOUT_VERSION));
  }
  uint32_t links = 0;
  s = RemoveLayoutPins(root, AEGIS_LAYOUT_VERSION, &links);
  if (!s.ok()) return s;
  std::string mp = root + "/" AEGIS_LAYOUT_PIN;
  if (unlink(mp.c_str()) != 0 && errno != ENOENT) return Status::Errno(errno, "unlink", "cannot remove " + mp);
  rmdir(root.c_str());  // only succeeds when nothing else lives there; that is fine
  return Status::Ok();
}

DatapathCore::~DatapathCore() {
  std::lock_guard<std::mutex> lock(mu_);
  CloseLocked();
}

void DatapathCore::CloseLocked() {
  // Closing fds never detaches anything: links and maps stay pinned.
  if (test_skel_ != nullptr) aegis_bpf__destroy(test_skel_);
  if (skel_ != nullptr) aegis_bpf__destroy(skel_);
  test_skel_ = nullptr;
  skel_ = nullptr;
}

Status DatapathCore::RequireOpen(const char* op) {
  if (skel_ != nullptr) return Status::Ok();
  return Status::Coded("ECLOSED", EBADF, op, "the datapath is not open");
}

Status DatapathCore::Open(const OpenOptions& opts, OpenResult* res) {
  std::lock_guard<std::mutex> lock(mu_);
  if (skel_ != nullptr) return Status::Coded("EALREADY", EALREADY, "open", "the datapath is already open");
  Status s = MkdirP(opts.pin_root);
  if (!s.ok()) return s;
  struct statfs sfs {};
  if (statfs(opts.pin_root.c_str(), &sfs) != 0) {
    return Status::Errno(errno, "statfs", "cannot inspect pin root " + opts.pin_root);
  }
  if (static_cast<unsigned long>(sfs.f_type) != BPF_FS_MAGIC) {
    return Status::Coded("ENOTBPFFS", ENOTSUP, "statfs",
                         "pin root " + opts.pin_root +
                             " is not on a BPF filesystem; mount one (mount -t bpf bpf /sys/fs/bpf)");
  }
  bool marker = false;
  uint32_t older = 0;
  s = CheckLayout(opts.pin_root, &marker, &older);
  if (!s.ok()) return s;
  // The connect/sendmsg hooks are an addition: without them (old kernel, or a verifier
  // that refuses them) the packet programs still enforce, only a denied connect waits for
  // its timeout instead of failing at once. Open says which it got and why.
  bool hooks = opts.connect_hooks;
  if (!hooks) {
    res->connect_hooks_reason = "connect-time hooks disabled by the connectHooks option";
  } else if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, nullptr) != 1) {
    hooks = false;
    res->connect_hooks_reason =
        "the kernel lacks cgroup sock_addr programs (connect4/6, sendmsg4/6): denied "
        "connects are dropped at the packet level and wait for the caller's timeout";
  }
  aegis_bpf* skel = nullptr;
  s = LoadSkeleton(opts, false, hooks, &skel);
  if (!s.ok() && hooks && s.code == "EBPF_LOAD") {
    Status retry = LoadSkeleton(opts, false, false, &skel);
    if (retry.ok()) {
      hooks = false;
      res->connect_hooks_reason = "the kernel refused the connect/sendmsg programs (" + s.message +
                                  "): denied connects are dropped at the packet level";
      s = retry;
    }
  }
  if (!s.ok()) return s;
  // With an older layout's pins present the marker keeps naming it until RetireOlderLayout:
  // a crash in between finds the same state and upgrades again.
  if (!marker && older == 0) {
    s = WriteMarker(opts.pin_root);
    if (!s.ok()) {
      aegis_bpf__destroy(skel);
      return s;
    }
  }
  skel_ = skel;
  opts_ = opts;
  connect_hooks_ = hooks;
  older_layout_ = older;
  res->connect_hooks = hooks;
  res->older_layout = older;
  return Status::Ok();
}

Status DatapathCore::RetireOlderLayout(uint32_t* links_detached) {
  std::lock_guard<std::mutex> lock(mu_);
  *links_detached = 0;
  Status s = RequireOpen("retire the older layout");
  if (!s.ok()) return s;
  if (older_layout_ == 0) return Status::Ok();
  const std::string& root = opts_.pin_root;
  // The caller has this layout enforcing what it is configured to; the old programs go.
  s = RemoveLayoutPins(root, AEGIS_LAYOUT_VERSION - 1, links_detached);
  if (!s.ok()) return s;
  std::string mp = root + "/" AEGIS_LAYOUT_PIN;
  if (unlink(mp.c_str()) != 0 && errno != ENOENT) return Status::Errno(errno, "unlink", "cannot remove " + mp);
  s = WriteMarker(root);
  if (!s.ok()) return s;
  older_layout_ = 0;
  return Status::Ok();
}

Status DatapathCore::EnsureCounters(uint32_t svc) {
  std::vector<uint8_t> zero(sizeof(aegis_counters) * PossibleCpus(), 0);
  int fd = bpf_map__fd(skel_->maps.aegis_v2_cnt);
  if (bpf_map_update_elem(fd, &svc, zero.data(), BPF_NOEXIST) != 0 && errno != EEXIST) {
    return Status::Errno(errno, "bpf_map_update_elem", "cannot create counters of service " +
                                                           std::to_string(svc));
  }
  return Status::Ok();
}

Status DatapathCore::LinkOne(uint32_t svc, int cgroup_fd, uint64_t cgroup_id, size_t hook,
                             BindResult* out, uint64_t* old_cgroup_id) {
  std::string pin = LinkPin(opts_.pin_root, svc, hook);
  int prog_fd = bpf_program__fd(HookProgram(skel_, hook));
  Fd old(bpf_obj_get(pin.c_str()));
  if (old.get() >= 0) {
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(old.get(), &info, &len) != 0) {
      return Status::Errno(errno, "bpf_obj_get_info_by_fd", "cannot inspect pinned link " + pin);
    }
    if (info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cgroup_id) {
      // Same cgroup: move the link to this process's program (an upgrade keeps
      // enforcing without a gap; the old program is freed when nothing uses it).
      if (bpf_link_update(old.get(), prog_fd, nullptr) != 0) {
        return Status::Errno(errno, "bpf_link_update", "cannot update pinned link " + pin);
      }
      out->relinked = true;
      return Status::Ok();
    }
    if (info.type == BPF_LINK_TYPE_CGROUP) *old_cgroup_id = info.cgroup.cgroup_id;
  } else if (errno != ENOENT) {
    return Status::Errno(errno, "bpf_obj_get", "cannot open pinned link " + pin);
  }
  Fd link(bpf_link_create(prog_fd, cgroup_fd, kHooks[hook].type, nullptr));
  if (link.get() < 0) {
    return Status::Errno(errno, "bpf_link_create",
                         std::string("cannot attach the ") + kHooks[hook].what +
                             " program to the cgroup of service " + std::to_string(svc));
  }
  // Pin under a temporary name and rename over the old pin, so the pin path always names
  // a live link; until the old link is detached below both run, which is harmless.
  std::string tmp = pin + "_new";  // bpffs refuses names with dots
  unlink(tmp.c_str());
  if (bpf_obj_pin(link.get(), tmp.c_str()) != 0) {
    return Status::Errno(errno, "bpf_obj_pin", "cannot pin link at " + tmp);
  }
  if (rename(tmp.c_str(), pin.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return Status::Errno(e, "rename", "cannot pin link at " + pin);
  }
  if (old.get() >= 0) {
    bpf_link_detach(old.get());
    out->rebound = true;
  }
  return Status::Ok();
}

// Detaches and unpins one link of a service (a connect hook left by an earlier run that
// had them, when this one runs skb-only).
Status DatapathCore::UnlinkOne(uint32_t svc, size_t hook) {
  std::string pin = LinkPin(opts_.pin_root, svc, hook);
  Fd old(bpf_obj_get(pin.c_str()));
  if (old.get() < 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Errno(errno, "bpf_obj_get", "cannot open pinned link " + pin);
  }
  if (bpf_link_detach(old.get()) != 0 && errno != EINVAL && errno != ENOLINK) {
    return Status::Errno(errno, "bpf_link_detach", "cannot detach " + pin);
  }
  unlink(pin.c_str());
  return Status::Ok();
}

Status DatapathCore::Bind(uint32_t svc, const std::string& path, BindResult* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = RequireOpen("bind");
  if (!s.ok()) return s;
  Fd cg(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cg.get() < 0) return Status::Errno(errno, "open", "cannot open cgroup " + path);
  struct statfs sfs {};
  if (fstatfs(cg.get(), &sfs) != 0) return Status::Errno(errno, "fstatfs", "cannot inspect " + path);
  if (static_cast<unsigned long>(sfs.f_type) != CGROUP2_SUPER_MAGIC) {
    return Status::Coded("ENOTCGROUP2", EINVAL, "fstatfs", path + " is not a cgroup v2 directory");
  }
  uint64_t cgid = 0;
  s = CgroupId(path, &cgid);
  if (!s.ok()) return s;
  out->cgroup_id = cgid;

  int cgrp_fd = bpf_map__fd(skel_->maps.aegis_v2_cgrp);
  uint32_t bound = 0;
  bool fresh = true;
  if (bpf_map_lookup_elem(cgrp_fd, &cgid, &bound) == 0) {
    if (bound != svc) {
      return Status::Coded("ECGROUP_BOUND", EEXIST, "bind",
                           path + " is already bound to service " + std::to_string(bound));
    }
    fresh = false;
  }
  // The map entry goes in before the links so the first packet already has a service.
  if (bpf_map_update_elem(cgrp_fd, &cgid, &svc, BPF_ANY) != 0) {
    return Status::Errno(errno, "bpf_map_update_elem", "cannot record the cgroup of service " +
                                                           std::to_string(svc));
  }
  s = EnsureCounters(svc);
  if (!s.ok()) return s;
  // Packet programs first, then the connect hooks, all on the same cgroup.
  uint64_t old_cg[kHookCount] = {};
  for (size_t h = 0; h < kHookCount && s.ok(); h++) {
    if (!kHooks[h].connect_hook || connect_hooks_) {
      s = LinkOne(svc, cg.get(), cgid, h, out, &old_cg[h]);
    } else {
      s = UnlinkOne(svc, h);
    }
  }
  if (!s.ok()) {
    if (fresh) bpf_map_delete_elem(cgrp_fd, &cgid);
    return s;
  }
  for (uint64_t old : old_cg) {
    if (old == 0 || old == cgid) continue;
    uint32_t was = 0;
    if (bpf_map_lookup_elem(cgrp_fd, &old, &was) == 0 && was == svc) bpf_map_delete_elem(cgrp_fd, &old);
  }
  return Status::Ok();
}

Status DatapathCore::Apply(uint32_t svc, const std::vector<uint8_t>& rules, const ServiceConfig& cfg,
                           ApplyResult* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = RequireOpen("apply");
  if (!s.ok()) return s;
  size_t n = rules.size() / sizeof(RuleRecord);
  if (n > AEGIS_MAX_RULES || rules.size() % sizeof(RuleRecord) != 0) {
    return Status::Coded("E2BIG", E2BIG, "apply", "snapshot exceeds the per-service capacity");
  }
  uint64_t t0 = MonotonicNs();
  // A fresh trie per snapshot: the one in force is never written to.
  LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_NO_PREALLOC);
  Fd inner(bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, AEGIS_PIN_PREFIX "rules", sizeof(aegis_lpm_key),
                          sizeof(aegis_lpm_value), AEGIS_MAX_RULES + 1, &mo));
  if (inner.get() < 0) return Status::Errno(errno, "bpf_map_create", "cannot create a rule trie");

  aegis_lpm_key k{};
  aegis_lpm_value v{};
  k.prefixlen = AEGIS_KEY_MAX_PREFIX;
  k.dir = AEGIS_DIR_CONFIG;
  v.expires_ns = cfg.expires_ns;
  v.generation = cfg.generation;
  v.mode = cfg.mode;
  v.flags = cfg.flags;
  v.rule_count = static_cast<uint32_t>(n);
  if (bpf_map_update_elem(inner.get(), &k, &v, BPF_ANY) != 0) {
    return Status::Errno(errno, "bpf_map_update_elem", "cannot write the service config");
  }
  std::vector<aegis_lpm_key> keys(n);
  std::vector<aegis_lpm_value> vals(n);
  for (size_t i = 0; i < n; i++) {
    RuleRecord r;
    memcpy(&r, rules.data() + i * sizeof(RuleRecord), sizeof(r));
    aegis_lpm_key& key = keys[i];
    key.prefixlen = AEGIS_KEY_EXACT_BITS + r.prefixlen;
    key.dir = r.dir;
    key.proto = r.proto;
    key.port = htons(r.port);
    memcpy(key.addr, r.addr, sizeof(key.addr));
    vals[i].rule_id = r.rule_id;
  }
  // Batches cut one syscall per rule to one per 4096 (the kernel still inserts one by one);
  // kernels without batch support for LPM tries get the per-rule loop.
  size_t done = 0;
  bool batch = true;
  while (done < n) {
    uint32_t count = static_cast<uint32_t>(std::min<size_t>(4096, n - done));
    if (batch) {
      LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = BPF_ANY);
      if (bpf_map_update_batch(inner.get(), &keys[done], &vals[done], &count, &bo) == 0) {
        done += count;
        continue;
      }
      if (errno != EINVAL && errno != ENOTSUP && errno != EOPNOTSUPP && errno != ENOTSUPP) {
        return Status::Errno(errno, "bpf_map_update_batch", "cannot write rules into the new trie");
      }
      batch = false;
      done += count;  // `count` reports how many went in before the failure
      continue;
    }
    if (bpf_map_update_elem(inner.get(), &keys[done], &vals[done], BPF_ANY) != 0) {
      return Status::Errno(errno, "bpf_map_update_elem",
                           "cannot write rule " + std::to_string(vals[done].rule_id) + " into the new trie");
    }
    done++;
  }
  s = EnsureCounters(svc);
  if (!s.ok()) return s;
  uint64_t t1 = MonotonicNs();
  int outer = bpf_map__fd(skel_->maps.aegis_v2_pol);
  int ifd = inner.get();
  // The swap: one update; packets see the old trie or the new one, never a mix.
  if (bpf_map_update_elem(outer, &svc, &ifd, BPF_ANY) != 0) {
    return Status::Errno(errno, "bpf_map_update_elem",
                         "cannot swap in the policy of service " + std::to_string(svc));
  }
  uint64_t t2 = MonotonicNs();
  // The update returned after an RCU grace period, so no program still judges by the old
  // trie: counts of other generations are final and go (they index another rule list).
  ClearRuleCounters(svc, true, cfg.generation);
  out->rules = static_cast<uint32_t>(n);
  out->build_ns = t1 - t0;
  out->swap_ns = t2 - t1;
  return Status::Ok();
}

Status DatapathCore::Withdraw(uint32_t svc, bool* existed) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = RequireOpen("withdraw");
  if (!s.ok()) return s;
  int outer = bpf_map__fd(skel_->maps.aegis_v2_pol);
  *existed = true;
  if (bpf_map_delete_elem(outer, &svc) != 0) {
    if (errno != ENOENT) {
      return Status::Errno(errno, "bpf_map_delete_elem", "cannot withdraw service " + std::to_string(svc));
    }
    *existed = false;
  }
  ClearRuleCounters(svc, false, 0);
  return Status::Ok();
}

void DatapathCore::ClearRuleCounters(uint32_t svc, bool keep, uint64_t keep_generation) {
  int fd = bpf_map__fd(skel_->maps.aegis_v2_rcnt);
  std::vector<aegis_rule_key> doomed;
  aegis_rule_key key{}, next{};
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (next.service_id == svc && !(keep && next.generation == keep_generation)) doomed.push_back(next);
    key = next;
    prev = &key;
  }
  for (const auto& k : doomed) bpf_map_delete_elem(fd, &k);
}

Status DatapathCore::RuleCounters(uint32_t svc, std::vector<RuleCount>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = RequireOpen("rule_counters");
  if (!s.ok()) return s;
  int fd = bpf_map__fd(skel_->maps.aegis_v2_rcnt);
  std::vector<uint64_t> per(static_cast<size_t>(PossibleCpus()));
  std::vector<RuleCount> res;
  aegis_rule_key key{}, next{};
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (next.service_id == svc && bpf_map_lookup_elem(fd, &next, per.data()) == 0) {
      RuleCount rc;
      rc.rule_id = next.rule_id;
      rc.generation = next.generation;
      for (uint64_t v : per) rc.count += v;
      res.push_back(rc);
    }
    key = next;
    prev = &key;
  }
  *out = std::move(res);
  return Status::Ok();
}

Status DatapathCore::Stats(std::vector<ServiceStats>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = RequireOpen("stats");
  if (!s.ok()) return s;
  std::vector<ServiceStats> res;
  auto find = [&res](uint32_t svc) -> ServiceStats& {
    for (auto& r : res)
      if (r.service_id == svc) return r;
    res.emplace_back();
    res.back().service_id = svc;
    return res.back();
  };
  int cgrp = bpf_map__fd(skel_->maps.aegis_v2_cgrp);
  uint64_t cg = 0, next_cg = 0;
  void* prev = nullptr;
  while (bpf_map_get_next_key(cgrp, prev, &next_cg) == 0) {
    uint32_t svc = 0;
    if (bpf_map_lookup_elem(cgrp, &next_cg, &svc) == 0) find(svc).cgroup_ids.push_back(next_cg);
    cg = next_cg;
    prev = &cg;
  }
  int outer = bpf_map__fd(skel_->maps.aegis_v2_pol);
  uint32_t key = 0, next = 0;
  prev = nullptr;
  while (bpf_map_get_next_key(outer, prev, &next) == 0) {
    uint32_t inner_id = 0;
    if (bpf_map_lookup_elem(outer, &next, &inner_id) == 0) {
      Fd inner(bpf_map_get_fd_by_id(inner_id));
      aegis_lpm_key k{};
      k.prefixlen = AEGIS_KEY_MAX_PREFIX;
      k.dir = AEGIS_DIR_CONFIG;
      aegis_lpm_value v{};
      if (inner.get() >= 0 && bpf_map_lookup_elem(inner.get(), &k, &v) == 0) {
        ServiceStats& st = find(next);
        st.has_policy = true;
        st.config = v;
      }
    }
    key = next;
    prev = &key;
  }
  int cnt = bpf_map__fd(skel_->maps.aegis_v2_cnt);
  int ncpu = PossibleCpus();
  std::vector<aegis_counters> per(static_cast<size_t>(ncpu));
  prev = nullptr;
  while (bpf_map_get_next_key(cnt, prev, &next) == 0) {
    if (bpf_map_lookup_elem(cnt, &next, per.data()) == 0) {
      ServiceStats& st = find(next);
      st.has_counters = true;
      aegis_counters sum{};
      for (const auto& c : per) {
        sum.allowed += c.allowed;
        sum.dropped += c.dropped;
        sum.would_drop += c.would_drop;
        sum.bypassed += c.bypassed;
        sum.replies += c.replies;
        sum.cut += c.cut;
        sum.unparsed += c.unparsed;
        sum.expired += c.expired;
        sum.events_lost += c.events_lost;
        sum.events += c.events;
        sum.rule_counts_lost += c.rule_counts_lost;
      }
      st.counters = sum;
    }
    key = next;
    prev = &key;
  }
  *out = std::move(res);
  return Status::Ok();
}

Status DatapathCore::LoadTestInstance() {
  if (test_skel_ != nullptr) return Status::Ok();
  // BPF_PROG_TEST_RUN only drives the packet programs; the hooks stay unloaded here.
  return LoadSkeleton(opts_, true, false, &test_skel_);
}

Status DatapathCore::TestRun(uint8_t dir, int64_t svc, const std::vector<uint8_t>& packet,
                             uint32_t repeat, TestRunResult* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = RequireOpen("test_run");
  if (!s.ok()) return s;
  s = LoadTestInstance();
  if (!s.ok()) return s;
  // BPF_PROG_TEST_RUN wants an Ethernet frame; cgroup_skb then sees the L3 packet.
  std::vector<uint8_t> frame(14 + packet.size(), 0);
  uint16_t ethertype = (!packet.empty() && (packet[0] >> 4) == 6) ? 0x86DD : 0x0800;
  frame[12] = static_cast<uint8_t>(ethertype >> 8);
  frame[13] = static_cast<uint8_t>(ethertype & 0xff);
  memcpy(frame.data() + 14, packet.data(), packet.size());
  __sk_buff ctx{};
  __sk_buff ctx_out{};
  if (svc >= 0) {
    ctx.cb[0] = static_cast<uint32_t>(svc);
    ctx.cb[1] = AEGIS_TEST_MAGIC;
  }
  LIBBPF_OPTS(bpf_test_run_opts, t, .data_in = frame.data(),
              .data_size_in = static_cast<uint32_t>(frame.size()), .ctx_in = &ctx,
              .ctx_out = &ctx_out, .ctx_size_in = sizeof(ctx), .ctx_size_out = sizeof(ctx_out),
              .repeat = static_cast<int>(repeat));
  int prog = bpf_program__fd(dir == AEGIS_DIR_EGRESS ? test_skel_->progs.aegis_egress
                                                     : test_skel_->progs.aegis_ingress);
  if (bpf_prog_test_run_opts(prog, &t) != 0) {
    return Status::Errno(errno, "bpf_prog_test_run_opts", "BPF_PROG_TEST_RUN failed");
  }
  out->retval = t.retval;
  out->reason = ctx_out.cb[2];
  out->duration_ns = t.duration;
  return Status::Ok();
}

Status DatapathCore::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  CloseLocked();
  return Status::Ok();
}

Status DatapathCore::Purge() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string root = opts_.pin_root;
  CloseLocked();
  if (root.empty()) return Status::Coded("ECLOSED", EBADF, "purge", "the datapath was never opened");
  return PurgePins(root);
}

int DatapathCore::EventsFd() {
  std::lock_guard<std::mutex> lock(mu_);
  if (skel_ == nullptr) return -1;
  return bpf_map__fd(skel_->maps.aegis_v2_evt);
}

}  // namespace aegis
