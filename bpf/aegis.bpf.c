// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Aegis segmentation datapath: cgroup_skb egress and ingress programs, and the
 * connect/sendmsg hooks that refuse a denied destination at the syscall (end of file).
 *
 * A bound service is a cgroup; the programs are attached (through pinned bpf_links) to
 * each bound cgroup, and aegis_v2_cgrp maps the socket's cgroup id (or the nearest bound
 * ancestor) to the service id. aegis_v2_pol maps the service id to its current rule trie;
 * userspace builds a new trie beside the old one and swaps it in with one update, so a
 * packet sees either the old policy or the new one, never a mix. The trie also holds the
 * service's config entry (mode, expiry, generation) so those swap together with the rules.
 *
 * What is evaluated: every packet that belongs to no tracked flow, whatever its protocol
 * or TCP flags. An allowed packet opens a flow (per service, by protocol, ports and remote
 * address, in an LRU map); later packets of the flow pass in its direction and replies in
 * the other, until the flow ends (TCP FIN/RST then a short timeout, or an idle timeout) or a
 * policy of another generation is swapped in: then its next packet judges the flow again
 * as it was opened, and a flow the new policy does not allow is cut. ICMP errors quoting a
 * tracked flow and IPv6 neighbour discovery pass; headers that cannot be walked to the
 * transport header fail closed. See bpf/README.md.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "aegis.h"

#define NSEC_PER_SEC 1000000000ULL

/* Set before load. The production instance has test_mode = 0, so the verifier removes the
 * test branches; a separate, never-attached instance with test_mode = 1 serves
 * BPF_PROG_TEST_RUN, where the skb's cgroup is the test runner's. */
const volatile __u8 test_mode = 0;
/* Flow events per second per CPU, and the burst (token bucket size): denials, and
 * separately allowed new flows, so allowed traffic cannot use up the denials' budget. */
const volatile __u64 event_rate = 200;
const volatile __u64 event_burst = 400;
const volatile __u64 allowed_event_rate = 200;
const volatile __u64 allowed_event_burst = 400;
/* How long an allowed flow keeps its return path open after its last packet: UDP and
 * protocols without ports, TCP, TCP after a FIN or RST, ICMP echo. */
const volatile __u64 udp_flow_timeout_ns = 120 * NSEC_PER_SEC;
const volatile __u64 tcp_flow_timeout_ns = 7200 * NSEC_PER_SEC;
const volatile __u64 tcp_closing_timeout_ns = 10 * NSEC_PER_SEC;
const volatile __u64 icmp_flow_timeout_ns = 30 * NSEC_PER_SEC;

struct aegis_rules {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AEGIS_MAX_RULES + 1);
	/* Sizes, not BTF types: clang emits only a forward declaration for a struct that
	 * is reached solely through the inner-map template. */
	__uint(key_size, sizeof(struct aegis_lpm_key));
	__uint(value_size, sizeof(struct aegis_lpm_value));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, AEGIS_MAX_SERVICES);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct aegis_rules);
} aegis_v2_pol SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AEGIS_MAX_CGROUPS);
	__type(key, __u64);   /* cgroup id */
	__type(value, __u32); /* service id */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_v2_cgrp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, AEGIS_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct aegis_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_v2_cnt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AEGIS_MAX_FLOWS);
	__type(key, struct aegis_flow_key);
	__type(value, struct aegis_flow_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_v2_flow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, AEGIS_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_v2_evt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AEGIS_BUCKETS);
	__type(key, __u32);
	__type(value, struct aegis_rate_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_v2_rate SEC(".maps");

/* New flows per (service, deciding rule, generation); see struct aegis_rule_key. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, AEGIS_MAX_RULE_COUNTERS);
	__type(key, struct aegis_rule_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aegis_v2_rcnt SEC(".maps");

struct pkt {
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 echo;       /* ICMP echo request or reply: sport = dport = identifier */
	__u8 error;      /* ICMP error: the offending packet's header starts at inner_off */
	__u8 nd;         /* IPv6 neighbour discovery */
	__u8 pad;
	__be16 sport;
	__be16 dport;
	__u32 inner_off;
	__u8 saddr[16];
	__u8 daddr[16];
};

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10
#define IP_OFFSET_MASK 0x1fff
#define IP6_OFFSET_MASK 0xfff8

/* parse() results. */
#define P_OK 0
#define P_NOT_IP 1     /* neither IPv4 nor IPv6: not ours to judge */
#define P_UNPARSED 2   /* truncated, too many extension headers, a non-first fragment */

/* IPv6 extension headers whose length is (hdr[1] + 1) * 8: hop-by-hop, routing,
 * destination options, mobility, HIP, shim6. */
static __always_inline int ext_generic(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	       nh == 135 || nh == 139 || nh == 140;
}

static __always_inline void map_v4(__u8 *dst, __be32 a)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &a, 4);
}

static __always_inline int icmp_is_error(__u8 family, __u8 type)
{
	if (family == 4)
		return type == 3 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

/* Transport header at `off`: ports (TCP, UDP), flags (TCP), type and identifier (ICMP of
 * the packet's own family). Other protocols carry nothing more that a rule can name. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct pkt *p)
{
	if (p->proto == IPPROTO_TCP) {
		__u8 th[14];

		if (bpf_skb_load_bytes(skb, off, th, sizeof(th)))
			return P_UNPARSED;
		__builtin_memcpy(&p->sport, th, 2);
		__builtin_memcpy(&p->dport, th + 2, 2);
		p->tcp_flags = th[13];
	} else if (p->proto == IPPROTO_UDP) {
		__u8 uh[4];

		if (bpf_skb_load_bytes(skb, off, uh, sizeof(uh)))
			return P_UNPARSED;
		__builtin_memcpy(&p->sport, uh, 2);
		__builtin_memcpy(&p->dport, uh + 2, 2);
	} else if ((p->family == 4 && p->proto == IPPROTO_ICMP) ||
		   (p->family == 6 && p->proto == IPPROTO_ICMPV6)) {
		__u8 ih[8];
		__u8 t;

		if (bpf_skb_load_bytes(skb, off, ih, sizeof(ih)))
			return P_UNPARSED;
		t = ih[0];
		p->icmp_type = t;
		if ((p->family == 4 && (t == 8 || t == 0)) || (p->family == 6 && (t == 128 || t == 129))) {
			p->echo = 1;
			__builtin_memcpy(&p->sport, ih + 4, 2);
			__builtin_memcpy(&p->dport, ih + 4, 2);
		} else if (icmp_is_error(p->family, t)) {
			p->error = 1;
			p->inner_off = off + 8;
		} else if (p->family == 6 && t >= 133 && t <= 137) {
			p->nd = 1;
		}
	}
	return P_OK;
}

/* Fills p. Offsets are relative to the network header, which is where skb->data points
 * for cgroup_skb. Fails closed: what cannot be walked to its transport header is
 * P_UNPARSED, which enforce drops. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u32 off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr iph;

		if (bpf_skb_load_bytes(skb, 0, &iph, sizeof(iph)) || iph.version != 4 || iph.ihl < 5)
			return P_UNPARSED;
		p->family = 4;
		p->proto = iph.protocol;
		map_v4(p->saddr, iph.saddr);
		map_v4(p->daddr, iph.daddr);
		/* A non-first fragment carries no transport header. cgroup_skb sees datagrams
		 * before fragmentation (egress) and after reassembly (ingress), so only a
		 * hand-made packet (raw socket) is one. */
		if (iph.frag_off & bpf_htons(IP_OFFSET_MASK))
			return P_UNPARSED;
		off = iph.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6h;
		__u8 nh;

		if (bpf_skb_load_bytes(skb, 0, &ip6h, sizeof(ip6h)))
			return P_UNPARSED;
		p->family = 6;
		__builtin_memcpy(p->saddr, &ip6h.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6h.daddr, 16);
		nh = ip6h.nexthdr;
		off = sizeof(ip6h);
#pragma unroll
		for (int i = 0; i < 6; i++) {
			__u8 h[4];

			if (ext_generic(nh)) {
				if (bpf_skb_load_bytes(skb, off, h, 2))
					return P_UNPARSED;
				nh = h[0];
				off += (h[1] + 1) * 8;
			} else if (nh == IPPROTO_FRAGMENT) {
				if (bpf_skb_load_bytes(skb, off, h, 4))
					return P_UNPARSED;
				nh = h[0];
				if (((h[2] << 8) | h[3]) & IP6_OFFSET_MASK)
					return P_UNPARSED;
				off += 8;
			} else if (nh == IPPROTO_AH) {
				if (bpf_skb_load_bytes(skb, off, h, 2))
					return P_UNPARSED;
				nh = h[0];
				off += (h[1] + 2) * 4;
			} else {
				break;
			}
		}
		/* A chain longer than the walk: its transport header is unknown. */
		if (ext_generic(nh) || nh == IPPROTO_FRAGMENT || nh == IPPROTO_AH)
			return P_UNPARSED;
		p->proto = nh;
	} else {
		return P_NOT_IP;
	}
	return parse_l4(skb, off, p);
}

/* The offending packet quoted by an ICMP error at `off`: its IP header (no extension
 * headers, no fragments) and the first bytes of its transport header. -1 when it is not
 * something a flow can be found for. */
static __always_inline int parse_inner(struct __sk_buff *skb, __u32 off, __u8 family, struct pkt *q)
{
	__u8 l4[8];

	q->family = family;
	if (family == 4) {
		struct iphdr iph;

		if (bpf_skb_load_bytes(skb, off, &iph, sizeof(iph)) || iph.version != 4 || iph.ihl < 5)
			return -1;
		if (iph.frag_off & bpf_htons(IP_OFFSET_MASK))
			return -1;
		q->proto = iph.protocol;
		map_v4(q->saddr, iph.saddr);
		map_v4(q->daddr, iph.daddr);
		off += iph.ihl * 4;
	} else {
		struct ipv6hdr ip6h;

		if (bpf_skb_load_bytes(skb, off, &ip6h, sizeof(ip6h)))
			return -1;
		q->proto = ip6h.nexthdr;
		__builtin_memcpy(q->saddr, &ip6h.saddr, 16);
		__builtin_memcpy(q->daddr, &ip6h.daddr, 16);
		off += sizeof(ip6h);
	}
	if (bpf_skb_load_bytes(skb, off, l4, sizeof(l4)))
		return -1;
	if (q->proto == IPPROTO_TCP || q->proto == IPPROTO_UDP) {
		__builtin_memcpy(&q->sport, l4, 2);
		__builtin_memcpy(&q->dport, l4 + 2, 2);
		return 0;
	}
	if ((family == 4 && q->proto == IPPROTO_ICMP && l4[0] == 8) ||
	    (family == 6 && q->proto == IPPROTO_ICMPV6 && l4[0] == 128)) {
		q->echo = 1;
		__builtin_memcpy(&q->sport, l4 + 4, 2);
		__builtin_memcpy(&q->dport, l4 + 4, 2);
		return 0;
	}
	return -1;
}

/* The service of the packet's socket: its cgroup, or the deepest bound ancestor.
 * Returns -1 when no service is bound there. */
static __always_inline __s64 resolve_service(struct __sk_buff *skb)
{
	__s64 found = -1;
	__u64 id;
	__u32 *s;

	if (test_mode) {
		__u32 cb1 = skb->cb[1];

		if (cb1 == AEGIS_TEST_MAGIC) {
			__u32 cb0 = skb->cb[0];

			/* Keep the ctx load apart from the map-value loads below: clang would
			 * otherwise merge them through a ctx pointer the verifier rejects. */
			asm volatile("" : "+r"(cb0));
			return cb0;
		}
	}
	id = bpf_skb_cgroup_id(skb);
	s = bpf_map_lookup_elem(&aegis_v2_cgrp, &id);
	if (s)
		return *s;
	/* A process in a child cgroup of the bound one. */
	for (int lvl = 0; lvl < 16; lvl++) {
		__u64 aid = bpf_skb_ancestor_cgroup_id(skb, lvl);

		if (!aid || aid == id)
			break;
		s = bpf_map_lookup_elem(&aegis_v2_cgrp, &aid);
		if (s)
			found = *s;
	}
	return found;
}

static __always_inline int finish(struct __sk_buff *skb, int verdict, __u32 reason)
{
	if (test_mode)
		skb->cb[2] = reason;
	return verdict;
}

/* Token bucket in nano-tokens, per CPU and class: one event costs NSEC_PER_SEC. */
static __always_inline int take_token(__u64 now, __u32 bucket)
{
	struct aegis_rate_state *r;
	__u64 cap, elapsed, t, rate, burst;

	rate = bucket == AEGIS_BUCKET_ALLOWED ? allowed_event_rate : event_rate;
	burst = bucket == AEGIS_BUCKET_ALLOWED ? allowed_event_burst : event_burst;
	if (!rate)
		return 0;
	r = bpf_map_lookup_elem(&aegis_v2_rate, &bucket);
	if (!r)
		return 0;
	cap = burst * NSEC_PER_SEC;
	elapsed = now - r->last_ns;
	/* Past the time to fill the bucket it is simply full (also avoids overflow). */
	if (elapsed >= cap / rate)
		t = cap;
	else
		t = r->tokens + elapsed * rate;
	if (t > cap)
		t = cap;
	r->last_ns = now;
	if (t < NSEC_PER_SEC) {
		r->tokens = t;
		return 0;
	}
	r->tokens = t - NSEC_PER_SEC;
	return 1;
}

static __always_inline void emit(struct aegis_counters *c, const struct pkt *p, __u32 svc,
				 __u8 dir, __u8 verdict, __u8 reason, __u32 rule_id, __u64 generation,
				 __u64 now)
{
	struct aegis_flow_event *e;

	if (!take_token(now, verdict == AEGIS_EV_ALLOWED ? AEGIS_BUCKET_ALLOWED : AEGIS_BUCKET_DENIED)) {
		if (c)
			c->events_lost++;
		return;
	}
	e = bpf_ringbuf_reserve(&aegis_v2_evt, sizeof(*e), 0);
	if (!e) {
		if (c)
			c->events_lost++;
		return;
	}
	e->ts_ns = now;
	e->generation = generation;
	e->service_id = svc;
	e->rule_id = rule_id;
	e->direction = dir;
	e->verdict = verdict;
	e->reason = reason;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	e->proto = p->proto;
	e->family = p->family;
	e->sport = bpf_ntohs(p->sport);
	e->dport = bpf_ntohs(p->dport);
	/* ICMP: the type is what a rule names (its "port"). */
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)
		e->dport = p->icmp_type;
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	bpf_ringbuf_submit(e, 0);
	if (c)
		c->events++;
}

/* Counts one new flow decided by `rule_id` (AEGIS_RULE_NONE: denied by no rule) under
 * `generation`. A full map leaves it uncounted (rule_counts_lost), never misattributed. */
static __always_inline void count_rule(struct aegis_counters *c, __u32 svc, __u32 rule_id,
				       __u64 generation)
{
	struct aegis_rule_key rk = { .service_id = svc, .rule_id = rule_id, .generation = generation };
	__u64 one = 1, *n;

	n = bpf_map_lookup_elem(&aegis_v2_rcnt, &rk);
	if (n) {
		(*n)++;
		return;
	}
	if (bpf_map_update_elem(&aegis_v2_rcnt, &rk, &one, BPF_NOEXIST) == 0)
		return;
	/* Another CPU created it meanwhile: per-CPU values, so ours is still 0 here. */
	n = bpf_map_lookup_elem(&aegis_v2_rcnt, &rk);
	if (n) {
		(*n)++;
		return;
	}
	if (c)
		c->rule_counts_lost++;
}

static __always_inline void flow_key(struct aegis_flow_key *fk, const struct pkt *p, __u32 svc,
				     __u8 dir)
{
	fk->service_id = svc;
	fk->proto = p->proto;
	if (dir == AEGIS_DIR_EGRESS) {
		fk->lport = p->sport;
		fk->rport = p->dport;
		__builtin_memcpy(fk->raddr, p->daddr, 16);
	} else {
		fk->lport = p->dport;
		fk->rport = p->sport;
		__builtin_memcpy(fk->raddr, p->saddr, 16);
	}
}

/* Longest-prefix match of (dir, proto, port, addr): the exact port, then any port of the
 * protocol, then a rule for every protocol. */
static __always_inline struct aegis_lpm_value *match(void *rules, struct aegis_lpm_key *k)
{
	struct aegis_lpm_value *rule;

	rule = bpf_map_lookup_elem(rules, k);
	if (rule)
		return rule;
	k->port = 0;
	rule = bpf_map_lookup_elem(rules, k);
	if (rule)
		return rule;
	k->proto = AEGIS_PROTO_ALL;
	return bpf_map_lookup_elem(rules, k);
}

/* Whether the policy in `rules` allows the flow as it was opened: in its opening direction,
 * to (egress) or from (ingress) its remote address, on the remote (egress) or local
 * (ingress) port; an ICMP echo flow by the echo request type. */
static __always_inline int flow_allowed(void *rules, const struct aegis_flow_key *fk, __u8 dir)
{
	struct aegis_lpm_key k = {};

	k.prefixlen = AEGIS_KEY_MAX_PREFIX;
	k.dir = dir;
	k.proto = fk->proto;
	if (fk->proto == IPPROTO_TCP || fk->proto == IPPROTO_UDP)
		k.port = dir == AEGIS_DIR_EGRESS ? fk->rport : fk->lport;
	else if (fk->proto == IPPROTO_ICMP)
		k.port = bpf_htons(8);
	else if (fk->proto == IPPROTO_ICMPV6)
		k.port = bpf_htons(128);
	__builtin_memcpy(k.addr, fk->raddr, 16);
	return match(rules, &k) != 0;
}

static __always_inline __u64 flow_timeout(const struct aegis_flow_key *fk, const struct aegis_flow_value *fv)
{
	if (fk->proto == IPPROTO_TCP)
		return fv->closing ? tcp_closing_timeout_ns : tcp_flow_timeout_ns;
	if (fk->proto == IPPROTO_ICMP || fk->proto == IPPROTO_ICMPV6)
		return icmp_flow_timeout_ns;
	return udp_flow_timeout_ns;
}

/* `reason` is the test-mode decision code; the event's reason follows from it. */
static __always_inline int deny(struct __sk_buff *skb, struct aegis_counters *c, const struct pkt *p,
				__u32 svc, __u8 dir, int enforce, __u64 generation, __u64 now, __u32 reason)
{
	__u8 why = reason == AEGIS_R_CUT ? AEGIS_EVR_CUT :
		   reason == AEGIS_R_UNPARSED ? AEGIS_EVR_UNPARSED : AEGIS_EVR_POLICY;

	if (enforce) {
		if (c)
			c->dropped++;
		emit(c, p, svc, dir, AEGIS_EV_DROPPED, why, AEGIS_RULE_NONE, generation, now);
		return finish(skb, 0, reason);
	}
	if (c)
		c->would_drop++;
	emit(c, p, svc, dir, AEGIS_EV_WOULD_DROP, why, AEGIS_RULE_NONE, generation, now);
	return finish(skb, 1, AEGIS_R_WOULD_DROP);
}

static __always_inline int decide(struct __sk_buff *skb, __u8 dir)
{
	struct aegis_lpm_key k = {};
	struct aegis_lpm_value *cfg, *rule;
	struct aegis_counters *c;
	struct aegis_flow_key fk = {};
	struct aegis_flow_value *fv;
	struct pkt p = {};
	void *rules;
	__u64 now;
	__s64 found;
	__u32 svc;
	int parsed, enforce, track;

	found = resolve_service(skb);
	if (found < 0)
		return finish(skb, 1, AEGIS_R_UNBOUND);
	svc = (__u32)found;
	rules = bpf_map_lookup_elem(&aegis_v2_pol, &svc);
	if (!rules)
		return finish(skb, 1, AEGIS_R_NO_POLICY);
	k.prefixlen = AEGIS_KEY_MAX_PREFIX;
	k.dir = AEGIS_DIR_CONFIG;
	cfg = bpf_map_lookup_elem(rules, &k);
	if (!cfg)
		return finish(skb, 1, AEGIS_R_NO_POLICY);

	c = bpf_map_lookup_elem(&aegis_v2_cnt, &svc);
	parsed = parse(skb, &p);
	enforce = cfg->mode == AEGIS_MODE_ENFORCE;
	now = bpf_ktime_get_ns();

	if (cfg->expires_ns && now >= cfg->expires_ns) {
		if (c)
			c->expired++;
		if (!(cfg->flags & AEGIS_CFG_FAIL_CLOSED))
			return finish(skb, 1, AEGIS_R_EXPIRED_OPEN);
		if (parsed == P_OK)
			emit(c, &p, svc, dir, enforce ? AEGIS_EV_DROPPED : AEGIS_EV_WOULD_DROP,
			     AEGIS_EVR_EXPIRED, AEGIS_RULE_NONE, cfg->generation, now);
		if (c) {
			if (enforce)
				c->dropped++;
			else
				c->would_drop++;
		}
		return finish(skb, enforce ? 0 : 1, AEGIS_R_EXPIRED_CLOSED);
	}

	if (parsed == P_NOT_IP) {
		if (c)
			c->bypassed++;
		return finish(skb, 1, AEGIS_R_BYPASS);
	}
	if (parsed == P_UNPARSED) {
		if (c)
			c->unparsed++;
		return deny(skb, c, &p, svc, dir, enforce, cfg->generation, now, AEGIS_R_UNPARSED);
	}
	/* Neighbour discovery keeps IPv6 working; it names no flow. */
	if (p.nd) {
		if (c)
			c->bypassed++;
		return finish(skb, 1, AEGIS_R_BYPASS);
	}

	/* An ICMP error about a tracked flow (PMTU, unreachable) passes as its reply. The
	 * quoted packet went the other way: an error arriving quotes what we sent. */
	if (p.error) {
		struct pkt q = {};

		if (parse_inner(skb, p.inner_off, p.family, &q) == 0) {
			flow_key(&fk, &q, svc, dir == AEGIS_DIR_EGRESS ? AEGIS_DIR_INGRESS : AEGIS_DIR_EGRESS);
			fv = bpf_map_lookup_elem(&aegis_v2_flow, &fk);
			if (fv && now - fv->last_ns < flow_timeout(&fk, fv)) {
				if (c)
					c->replies++;
				return finish(skb, 1, AEGIS_R_REPLY);
			}
		}
	}

	/* Every flow is tracked except ICMP messages that are not echo (errors are matched
	 * above, the rest is judged packet by packet). A TCP SYN without ACK opens a new
	 * connection and is always judged. */
	track = !((p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6) && !p.echo);
	if (track) {
		flow_key(&fk, &p, svc, dir);
		fv = 0;
		if (!(p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN))
			fv = bpf_map_lookup_elem(&aegis_v2_flow, &fk);
		if (fv && now - fv->last_ns < flow_timeout(&fk, fv)) {
			if (fv->generation != cfg->generation) {
				/* A new policy: the flow is judged again as it was opened. */
				if (!flow_allowed(rules, &fk, fv->dir)) {
					if (enforce) {
						bpf_map_delete_elem(&aegis_v2_flow, &fk);
						if (c)
							c->cut++;
						return deny(skb, c, &p, svc, dir, enforce, cfg->generation, now,
							    AEGIS_R_CUT);
					}
					/* Observe: counted once, then tracked under the new policy. */
					fv->generation = cfg->generation;
					return deny(skb, c, &p, svc, dir, enforce, cfg->generation, now,
						    AEGIS_R_CUT);
				}
				fv->generation = cfg->generation;
			}
			if (p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) && !fv->closing) {
				fv->closing = 1;
				fv->last_ns = now;
			} else if (now - fv->last_ns > NSEC_PER_SEC) {
				/* Refresh at most once a second: a map write per packet costs more. */
				fv->last_ns = now;
			}
			if (fv->dir == dir) {
				if (c)
					c->bypassed++;
				return finish(skb, 1, AEGIS_R_BYPASS);
			}
			if (c)
				c->replies++;
			return finish(skb, 1, AEGIS_R_REPLY);
		}
	}

	/* No tracked flow: the packet is judged by the policy, whatever its flags. */
	k.dir = dir;
	k.proto = p.proto;
	if (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP)
		k.port = p.dport;
	else if (p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6)
		k.port = bpf_htons(p.icmp_type);
	__builtin_memcpy(k.addr, dir == AEGIS_DIR_EGRESS ? p.daddr : p.saddr, 16);
	rule = match(rules, &k);

	/* Observe mode lets a would-drop flow through, so it tracks it like an allowed one:
	 * its replies are replies, not a second would-drop. An ICMP echo reply opens none. */
	if (track && (rule || !enforce) &&
	    !(p.echo && p.icmp_type != 8 && p.icmp_type != 128)) {
		struct aegis_flow_value nv = { .last_ns = now, .generation = cfg->generation, .dir = dir };

		if (p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
			nv.closing = 1;
		bpf_map_update_elem(&aegis_v2_flow, &fk, &nv, BPF_ANY);
	}

	if (rule) {
		__u32 rid = rule->rule_id;

		if (c)
			c->allowed++;
		count_rule(c, svc, rid, cfg->generation);
		emit(c, &p, svc, dir, AEGIS_EV_ALLOWED, AEGIS_EVR_POLICY, rid, cfg->generation, now);
		return finish(skb, 1, AEGIS_R_ALLOWED);
	}
	count_rule(c, svc, AEGIS_RULE_NONE, cfg->generation);
	return deny(skb, c, &p, svc, dir, enforce, cfg->generation, now, AEGIS_R_DROPPED);
}

SEC("cgroup_skb/egress")
int aegis_egress(struct __sk_buff *skb)
{
	return decide(skb, AEGIS_DIR_EGRESS);
}

SEC("cgroup_skb/ingress")
int aegis_ingress(struct __sk_buff *skb)
{
	return decide(skb, AEGIS_DIR_INGRESS);
}

/*
 * Connect-time verdicts: cgroup/connect4, connect6 (TCP connect, connected UDP) and
 * sendmsg4, sendmsg6 (UDP sendto with an address). They judge the destination with the
 * egress rules of the same trie, before any packet exists, so a denied destination fails
 * the syscall with EPERM at once instead of a SYN that is dropped and retried until the
 * caller's timeout. The cgroup_skb programs stay the backstop and keep all the counting of
 * what they see: these hooks count (dropped, expired) and report only what they refuse,
 * since a refused connect never produces a packet. What they let through (allowed,
 * observe-mode would-drop, expired fail-open) reaches the egress program, which counts it
 * and emits its flow event exactly as without these hooks.
 */

/* The service of the calling task's cgroup, or of its deepest bound ancestor; -1 when none.
 * The task that calls connect()/sendmsg() is in the socket's cgroup in every case the
 * hooks can refuse; a socket used from another cgroup still meets the egress program. */
static __always_inline __s64 resolve_task_service(void)
{
	__s64 found = -1;
	__u64 id = bpf_get_current_cgroup_id();
	__u32 *s = bpf_map_lookup_elem(&aegis_v2_cgrp, &id);

	if (s)
		return *s;
	for (int lvl = 0; lvl < 16; lvl++) {
		__u64 aid = bpf_get_current_ancestor_cgroup_id(lvl);

		if (!aid || aid == id)
			break;
		s = bpf_map_lookup_elem(&aegis_v2_cgrp, &aid);
		if (s)
			found = *s;
	}
	return found;
}

/* 1 to let the connect/sendmsg go on, 0 to fail it with EPERM. */
static __always_inline int decide_addr(struct bpf_sock_addr *ctx, __u8 family)
{
	struct aegis_lpm_key k = {};
	struct aegis_lpm_value *cfg, *rule;
	struct aegis_counters *c;
	struct pkt p = {};
	void *rules;
	__u64 now;
	__s64 found;
	__u32 svc, proto;

	proto = ctx->protocol;
	/* Other protocols (ICMP ping sockets, ...) are the egress program's business. */
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	found = resolve_task_service();
	if (found < 0)
		return 1;
	svc = (__u32)found;
	rules = bpf_map_lookup_elem(&aegis_v2_pol, &svc);
	if (!rules)
		return 1;
	k.prefixlen = AEGIS_KEY_MAX_PREFIX;
	k.dir = AEGIS_DIR_CONFIG;
	cfg = bpf_map_lookup_elem(rules, &k);
	if (!cfg || cfg->mode != AEGIS_MODE_ENFORCE)
		return 1;

	p.family = family;
	p.proto = proto;
	p.dport = (__be16)ctx->user_port;
	if (family == 4) {
		map_v4(p.daddr, ctx->user_ip4);
	} else {
		__u32 a[4];

		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
		__builtin_memcpy(p.daddr, a, 16);
		/* A dual-stack socket connecting to ::ffff:a.b.c.d sends IPv4: report it as such. */
		if (!a[0] && !a[1] && a[2] == bpf_htonl(0xffff))
			p.family = 4;
	}

	c = bpf_map_lookup_elem(&aegis_v2_cnt, &svc);
	now = bpf_ktime_get_ns();
	if (cfg->expires_ns && now >= cfg->expires_ns) {
		/* Fail-open passes (the egress program counts the packet as expired). */
		if (!(cfg->flags & AEGIS_CFG_FAIL_CLOSED))
			return 1;
		if (c) {
			c->expired++;
			c->dropped++;
		}
		emit(c, &p, svc, AEGIS_DIR_EGRESS, AEGIS_EV_DROPPED, AEGIS_EVR_EXPIRED, AEGIS_RULE_NONE,
		     cfg->generation, now);
		return 0;
	}

	k.dir = AEGIS_DIR_EGRESS;
	k.proto = p.proto;
	k.port = p.dport;
	__builtin_memcpy(k.addr, p.daddr, 16);
	/* The egress lookup: exact port, any port of the protocol, every protocol (any/0). */
	rule = match(rules, &k);
	if (rule)
		return 1;
	if (c)
		c->dropped++;
	/* The packet never exists, so the refused connect is this new flow's verdict. */
	count_rule(c, svc, AEGIS_RULE_NONE, cfg->generation);
	emit(c, &p, svc, AEGIS_DIR_EGRESS, AEGIS_EV_DROPPED, AEGIS_EVR_POLICY, AEGIS_RULE_NONE,
	     cfg->generation, now);
	return 0;
}

SEC("cgroup/connect4")
int aegis_connect4(struct bpf_sock_addr *ctx)
{
	return decide_addr(ctx, 4);
}

SEC("cgroup/connect6")
int aegis_connect6(struct bpf_sock_addr *ctx)
{
	return decide_addr(ctx, 6);
}

SEC("cgroup/sendmsg4")
int aegis_sendmsg4(struct bpf_sock_addr *ctx)
{
	return decide_addr(ctx, 4);
}

SEC("cgroup/sendmsg6")
int aegis_sendmsg6(struct bpf_sock_addr *ctx)
{
	return decide_addr(ctx, 6);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
