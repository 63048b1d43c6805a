/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct and constant that crosses the kernel/userspace boundary of the Aegis
 * datapath. Included by aegis.bpf.c (clang -target bpf) and by native/ (C++), so both
 * sides always agree on the layout. Changing any layout here means bumping
 * AEGIS_LAYOUT_VERSION and the map name prefix in aegis.bpf.c, so a new build never
 * reuses a pin made with the old layout. TypeScript reads every #define here from
 * protocol/src/bpf_abi.generated.ts (scripts/gen-bpf-abi.mjs): run `npm run gen:bpf-abi`
 * after changing one.
 */
#ifndef AEGIS_H
#define AEGIS_H

#ifdef __bpf__
#include <linux/types.h>
#else
#include <linux/types.h>
#endif

#define AEGIS_LAYOUT_VERSION 2
#define AEGIS_LAYOUT_MAGIC 0x53474541u /* "AEGS" little-endian */
/* Prefix of every versioned pin; the layout marker itself is unversioned. */
#define AEGIS_PIN_PREFIX "aegis_v2_"
#define AEGIS_LAYOUT_PIN "aegis_layout"

#define AEGIS_MAX_SERVICES 4096
/* Per-service rule capacity (after `any` is expanded); protocol's MAX_RULES_PER_SERVICE
 * is generated from it. One more slot holds the service's config entry. */
#define AEGIS_MAX_RULES 131072
#define AEGIS_MAX_CGROUPS 4096
#define AEGIS_MAX_FLOWS 65536
#define AEGIS_RINGBUF_BYTES (1 << 20)
/* Entries of the per-rule counter map (all services together). */
#define AEGIS_MAX_RULE_COUNTERS 65536

/* Direction byte of a trie key. The config entry lives in the same trie as the rules so
 * that mode, expiry and generation are swapped together with the rules. */
#define AEGIS_DIR_EGRESS 0
#define AEGIS_DIR_INGRESS 1
#define AEGIS_DIR_CONFIG 2

/* Bits of the LPM key before the address: dir, proto, port. */
#define AEGIS_KEY_EXACT_BITS 32
#define AEGIS_KEY_MAX_PREFIX (AEGIS_KEY_EXACT_BITS + 128)
/* IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d), so an IPv4 /n is /96+n. */
#define AEGIS_V4_MAPPED_BITS 96

/*
 * LPM trie key: exact fields first (direction, protocol, port), then the address, so one
 * longest-prefix lookup answers "is (proto, port, addr) allowed". Port 0 means any port;
 * the packet path looks up the exact port first and then port 0.
 */
struct aegis_lpm_key {
	__u32 prefixlen;
	__u8 dir;
	__u8 proto;   /* IP protocol (TCP, UDP, ICMP, ICMPV6), AEGIS_PROTO_ALL, 0 in the config key */
	__be16 port;  /* network order; 0 = any; the ICMP type for ICMP and ICMPv6 */
	__u8 addr[16];
};

/* Protocol byte of a rule that covers every IP protocol (`any` with port 0). The packet
 * path looks it up last, after (proto, port) and (proto, 0). */
#define AEGIS_PROTO_ALL 0

#define AEGIS_MODE_OBSERVE 0
#define AEGIS_MODE_ENFORCE 1

#define AEGIS_CFG_FAIL_CLOSED (1u << 0)

/*
 * Value of every trie entry. For rules only `rule_id` is meaningful (index of the rule
 * in the snapshot, reported with flow events); the config entry fills the rest.
 */
struct aegis_lpm_value {
	__u64 expires_ns;   /* CLOCK_MONOTONIC; 0 = never */
	__u64 generation;
	__u32 mode;         /* AEGIS_MODE_* */
	__u32 flags;        /* AEGIS_CFG_* */
	__u32 rule_id;
	__u32 rule_count;   /* config entry: number of rules in this trie */
};

/* Per-service counters (per-CPU map; userspace sums the CPUs). */
struct aegis_counters {
	__u64 allowed;      /* new flows that matched a rule */
	__u64 dropped;      /* packets dropped (enforce, or expired fail-closed) */
	__u64 would_drop;   /* packets observe mode let through that enforce would drop */
	__u64 bypassed;     /* packets of tracked flows (same direction), IPv6 neighbour discovery */
	__u64 replies;      /* packets passed as replies (opposite direction, or an ICMP error) of a tracked flow */
	__u64 expired;      /* packets seen while the policy was past its expiry */
	__u64 events_lost;  /* flow events suppressed by the rate cap or a full ring */
	__u64 events;       /* flow events emitted */
	__u64 cut;          /* tracked flows a policy of another generation no longer allows */
	__u64 unparsed;     /* packets whose headers could not be walked (also in dropped/would_drop) */
	__u64 rule_counts_lost; /* new flows the full per-rule counter map could not count */
};

/* Flow tracking (TCP, UDP, ICMP echo, other protocols by address): one key for both
 * directions of a flow. Ports are the ICMP echo identifier for ICMP echo, 0 for protocols
 * without ports. */
struct aegis_flow_key {
	__u32 service_id;
	__u8 proto;
	__u8 pad[3];
	__be16 lport;
	__be16 rport;
	__u8 raddr[16];
};

/* A tracked flow: evaluated against the policy of `generation` when it opened (in
 * direction `dir`); a policy swap to another generation re-evaluates it in that direction. */
struct aegis_flow_value {
	__u64 last_ns;      /* last packet, CLOCK_MONOTONIC */
	__u64 generation;
	__u8 dir;           /* direction of the packet that opened the flow */
	__u8 closing;       /* TCP: a FIN or RST was seen; the entry lives the short timeout */
	__u8 pad[6];
};

/* Flow event verdicts. */
#define AEGIS_EV_ALLOWED 1
#define AEGIS_EV_DROPPED 2
#define AEGIS_EV_WOULD_DROP 3

/* Why: the policy (a rule, or none: the allow list has no entry), a policy past its expiry
 * (fail-closed), headers that could not be walked, a tracked flow cut by a new generation. */
#define AEGIS_EVR_POLICY 0
#define AEGIS_EVR_EXPIRED 1
#define AEGIS_EVR_UNPARSED 2
#define AEGIS_EVR_CUT 3

/* rule_id of a verdict no rule decided (a denial, an expired policy, unparsed headers, a cut).
 * Real rule ids are (dir << 31) | index, and no snapshot has 2^31 - 1 entries. */
#define AEGIS_RULE_NONE 0xffffffffu

/*
 * One verdict: allowed new flows (the packet that opened the flow), denials, would-drops,
 * cuts and unparsed drops. Emitted under a per-CPU token bucket per class (allowed events
 * have their own, so a flood of allowed flows never uses up the budget of denials).
 */
struct aegis_flow_event {
	__u64 ts_ns;
	__u64 generation;   /* of the policy that decided */
	__u32 service_id;
	__u32 rule_id;      /* deciding rule, AEGIS_RULE_NONE for none */
	__u8 direction;
	__u8 verdict;       /* AEGIS_EV_* */
	__u8 proto;
	__u8 family;        /* 4 or 6 */
	__u16 sport;        /* host order; ICMP: the echo identifier (0 for other types) */
	__u16 dport;        /* host order; ICMP: the type */
	__u8 saddr[16];     /* IPv4 as v4-mapped */
	__u8 daddr[16];
	__u8 reason;        /* AEGIS_EVR_* */
	__u8 pad[7];
};

/* Slots of the token bucket map: denials (drop, would-drop, cut, unparsed, expired) and
 * allowed new flows. */
#define AEGIS_BUCKET_DENIED 0
#define AEGIS_BUCKET_ALLOWED 1
#define AEGIS_BUCKETS 2

/* Per-rule counter key: new flows of a service decided by one rule of one generation
 * (denials by no rule under AEGIS_RULE_NONE). The generation keeps a count from ever being
 * attributed to the rule of the same index in another policy; userspace removes a
 * service's entries of other generations after each swap and all of them on withdraw. */
struct aegis_rule_key {
	__u32 service_id;
	__u32 rule_id;
	__u64 generation;
};

/* Token bucket for flow events (per-CPU array, one slot per AEGIS_BUCKET_*). */
struct aegis_rate_state {
	__u64 last_ns;
	__u64 tokens;
};

/* Decision codes written to skb->cb[2] in test mode (BPF_PROG_TEST_RUN only). */
#define AEGIS_R_UNBOUND 1      /* cgroup not bound to a service */
#define AEGIS_R_NO_POLICY 2    /* bound, but no policy applied */
#define AEGIS_R_ALLOWED 3      /* matched a rule */
#define AEGIS_R_DROPPED 4      /* no rule matched, enforce */
#define AEGIS_R_WOULD_DROP 5   /* no rule matched, observe */
#define AEGIS_R_BYPASS 6       /* tracked flow (same direction), IPv6 ND, not IP */
#define AEGIS_R_EXPIRED_OPEN 7
#define AEGIS_R_EXPIRED_CLOSED 8
#define AEGIS_R_REPLY 9        /* reply (or ICMP error) of a tracked flow */
#define AEGIS_R_UNPARSED 10    /* headers not walkable: dropped in enforce */
#define AEGIS_R_CUT 11         /* tracked flow the new generation no longer allows: dropped */

/* Test mode: cb[1] == AEGIS_TEST_MAGIC makes cb[0] the service id of the packet. */
#define AEGIS_TEST_MAGIC 0xAE615AFEu

/* Value of the unversioned layout marker map (ARRAY, 1 entry). */
struct aegis_layout_marker {
	__u32 magic;
	__u32 version;
	__u64 created_ns;
};

#endif /* AEGIS_H */
