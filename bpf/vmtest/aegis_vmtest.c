// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * aegis-vmtest: loads the Aegis BPF object (the same aegis.bpf.o the addon embeds) into the
 * running kernel, binds a fresh cgroup v2 to a service exactly as native/src/datapath_core.cc
 * does (cgroup map entry, zeroed per-CPU counters, cgroup links for the packet programs and
 * the connect/sendmsg hooks, a fresh LPM trie holding the config entry and the rules swapped
 * into the outer hash-of-maps), then drives real traffic over loopback from a child placed
 * in that cgroup, first under an enforce policy and then under an observe one.
 *
 * Built statically (bpf/vmtest/build.sh) so it runs in a busybox initramfs as well as on
 * the host, and the two kernels can be compared verdict by verdict. It works in a private
 * network namespace (loopback only, its own ping_group_range), a private pin root and
 * cgroup, and holds its links by fd, so nothing outlives it and nothing it does touches
 * the host's traffic.
 *
 * Output, one line each: "AEGIS-VM: <case> ok|FAIL <detail>" for every case,
 * "AEGIS-VM-COUNTERS: <phase> allowed=N ..." for the service counters,
 * "AEGIS-VM-INFO: key=value" for facts about the kernel, "AEGIS-VM-LOG: ..." for the tail
 * of a libbpf/verifier log when a load fails. Exit status 0 when every case is ok.
 *
 *   aegis-vmtest --obj aegis.bpf.o [--pin-parent /sys/fs/bpf] [--cgroup-parent DIR]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "aegis.h"

#define SVC 4242
#define PORT_TCP_OK 7001
#define PORT_TCP_DENY 7002
#define PORT_UDP_OK 7003
#define PORT_UDP_DENY 7004
#define WAIT_MS 1500

static int failures;

static void result(const char *name, int ok, const char *fmt, ...)
{
	char detail[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	printf("AEGIS-VM: %s %s %s\n", name, ok ? "ok" : "FAIL", detail);
	fflush(stdout);
	if (!ok)
		failures++;
}

static void info(const char *fmt, ...)
{
	va_list ap;

	printf("AEGIS-VM-INFO: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* libbpf's messages (warnings, and the verifier log of a refused program) are kept so a
 * failed load can show its tail. */
static char *logbuf;
static size_t loglen, logcap;

static int print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	char tmp[4096];
	int n;

	if (level == LIBBPF_DEBUG && !getenv("AEGIS_LIBBPF_DEBUG"))
		return 0;
	n = vsnprintf(tmp, sizeof(tmp), fmt, args);
	if (n <= 0)
		return n;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	if (loglen + n + 1 > logcap) {
		size_t cap = (loglen + n + 1) * 2;
		char *p = realloc(logbuf, cap);

		if (!p)
			return n;
		logbuf = p;
		logcap = cap;
	}
	memcpy(logbuf + loglen, tmp, n);
	loglen += n;
	logbuf[loglen] = 0;
	return n;
}

/* The last `lines` lines of the captured log, prefixed, then the log is reset. */
static void dump_log(int lines)
{
	const char *start;
	int seen = 0;

	if (!logbuf || !loglen)
		return;
	start = logbuf + loglen;
	while (start > logbuf && seen <= lines) {
		start--;
		if (*start == '\n')
			seen++;
	}
	if (*start == '\n')
		start++;
	for (const char *p = start; *p;) {
		const char *e = strchr(p, '\n');
		int len = e ? (int)(e - p) : (int)strlen(p);

		printf("AEGIS-VM-LOG: %.*s\n", len, p);
		p += len + (e ? 1 : 0);
	}
	fflush(stdout);
	loglen = 0;
	logbuf[0] = 0;
}

/* An errno name, or libbpf's text for its own codes (LIBBPF_ERRNO__*). */
static const char *err_name(int e)
{
	static char buf[128];
	const char *n = strerrorname_np(e);

	if (n)
		return n;
	libbpf_strerror(e, buf, sizeof(buf));
	return buf;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* The cgroup v2 mount point from /proc/self/mounts. */
static int cgroup2_mount(char *out, size_t len)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char dev[256], dir[512], type[64];

	if (!f)
		return -1;
	while (fscanf(f, "%255s %511s %63s %*[^\n]", dev, dir, type) == 3) {
		if (!strcmp(type, "cgroup2")) {
			snprintf(out, len, "%s", dir);
			fclose(f);
			return 0;
		}
	}
	fclose(f);
	return -1;
}

/* The cgroup id the kernel reports for a cgroup v2 directory (what bpf_skb_cgroup_id and
 * bpf_get_current_cgroup_id return), read the way the addon reads it. */
static int cgroup_id(const char *path, uint64_t *id)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = {};
	int mount_id;

	h.fh.handle_bytes = sizeof(uint64_t);
	if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mount_id, 0))
		return -1;
	memcpy(id, h.fh.f_handle, sizeof(*id));
	return 0;
}

static int loopback_up(void)
{
	struct ifreq ifr = {};
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc;

	if (s < 0)
		return -1;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	rc = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (!rc) {
		ifr.ifr_flags |= IFF_UP;
		rc = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
	return rc;
}

/* --- the policy, written as datapath_core.cc's Apply writes it ----------------------- */

struct rule {
	uint8_t dir, proto;
	uint16_t port;      /* host order */
	uint8_t prefixlen;  /* over the 16-byte (v4-mapped) address */
	uint8_t addr[16];
};

static void v4_mapped(uint8_t *dst, const char *a)
{
	memset(dst, 0, 16);
	dst[10] = dst[11] = 0xff;
	inet_pton(AF_INET, a, dst + 12);
}

/* A fresh trie with the config entry and the rules, swapped in with one outer update.
 * Returns how the rules went in ("batch" or "per-rule") or NULL with errno set. */
static const char *apply_policy(int outer_fd, int cnt_fd, const struct rule *rules, size_t n,
				uint64_t generation, uint32_t mode)
{
	LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_NO_PREALLOC);
	struct aegis_lpm_key keys[16] = {}, k = {};
	struct aegis_lpm_value vals[16] = {}, v = {};
	const char *how = "batch";
	uint32_t count = n;
	int inner, e;
	size_t i;

	if (n > 16) {
		errno = E2BIG;
		return NULL;
	}
	inner = bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, AEGIS_PIN_PREFIX "rules", sizeof(struct aegis_lpm_key),
			       sizeof(struct aegis_lpm_value), AEGIS_MAX_RULES + 1, &mo);
	if (inner < 0)
		return NULL;
	k.prefixlen = AEGIS_KEY_MAX_PREFIX;
	k.dir = AEGIS_DIR_CONFIG;
	v.generation = generation;
	v.mode = mode;
	v.rule_count = n;
	if (bpf_map_update_elem(inner, &k, &v, BPF_ANY))
		goto fail;
	for (i = 0; i < n; i++) {
		keys[i].prefixlen = AEGIS_KEY_EXACT_BITS + rules[i].prefixlen;
		keys[i].dir = rules[i].dir;
		keys[i].proto = rules[i].proto;
		keys[i].port = htons(rules[i].port);
		memcpy(keys[i].addr, rules[i].addr, 16);
		vals[i].rule_id = i;
	}
	{
		LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = BPF_ANY);

		if (bpf_map_update_batch(inner, keys, vals, &count, &bo)) {
			/* The addon's fallback for kernels without batch ops on LPM tries. */
			if (errno != EINVAL && errno != ENOTSUP && errno != EOPNOTSUPP && errno != 524)
				goto fail;
			how = "per-rule";
			for (i = count; i < n; i++)
				if (bpf_map_update_elem(inner, &keys[i], &vals[i], BPF_ANY))
					goto fail;
		}
	}
	{
		int ncpu = libbpf_num_possible_cpus();
		size_t sz = sizeof(struct aegis_counters) * (ncpu > 0 ? ncpu : 1);
		void *zero = calloc(1, sz);
		uint32_t svc = SVC;

		if (!zero)
			goto fail;
		if (bpf_map_update_elem(cnt_fd, &svc, zero, BPF_NOEXIST) && errno != EEXIST) {
			free(zero);
			goto fail;
		}
		free(zero);
	}
	{
		uint32_t svc = SVC;

		if (bpf_map_update_elem(outer_fd, &svc, &inner, BPF_ANY))
			goto fail;
	}
	close(inner);
	return how;
fail:
	e = errno;
	close(inner);
	errno = e;
	return NULL;
}

static int read_counters(int cnt_fd, struct aegis_counters *sum)
{
	int ncpu = libbpf_num_possible_cpus();
	struct aegis_counters *per;
	uint32_t svc = SVC;

	if (ncpu <= 0)
		ncpu = 1;
	per = calloc(ncpu, sizeof(*per));
	if (!per)
		return -1;
	memset(sum, 0, sizeof(*sum));
	if (bpf_map_lookup_elem(cnt_fd, &svc, per)) {
		free(per);
		return -1;
	}
	for (int i = 0; i < ncpu; i++) {
		sum->allowed += per[i].allowed;
		sum->dropped += per[i].dropped;
		sum->would_drop += per[i].would_drop;
		sum->bypassed += per[i].bypassed;
		sum->replies += per[i].replies;
		sum->expired += per[i].expired;
		sum->events_lost += per[i].events_lost;
		sum->events += per[i].events;
		sum->cut += per[i].cut;
		sum->unparsed += per[i].unparsed;
	}
	free(per);
	return 0;
}

static void print_counters(const char *phase, const struct aegis_counters *c)
{
	printf("AEGIS-VM-COUNTERS: %s allowed=%llu dropped=%llu would_drop=%llu bypassed=%llu replies=%llu "
	       "expired=%llu events=%llu events_lost=%llu cut=%llu unparsed=%llu\n",
	       phase, (unsigned long long)c->allowed, (unsigned long long)c->dropped,
	       (unsigned long long)c->would_drop, (unsigned long long)c->bypassed,
	       (unsigned long long)c->replies, (unsigned long long)c->expired,
	       (unsigned long long)c->events, (unsigned long long)c->events_lost,
	       (unsigned long long)c->cut, (unsigned long long)c->unparsed);
	fflush(stdout);
}

/* --- the echo server (outside the bound cgroup) -------------------------------------- */

static int bound_socket(int family, int type, int port)
{
	int one = 1;
	int s = socket(family, type | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

		inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
		if (bind(s, (struct sockaddr *)&a, sizeof(a)))
			goto fail;
	} else {
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		a.sin6_addr = in6addr_loopback;
		if (bind(s, (struct sockaddr *)&a, sizeof(a)))
			goto fail;
	}
	if (type == SOCK_STREAM && listen(s, 16))
		goto fail;
	return s;
fail:
	close(s);
	return -1;
}

/* Answers every TCP connection and UDP datagram with "pong:" + what it got. Runs until
 * killed. */
static void serve(int *fds, int *tcp, int n)
{
	struct pollfd pf[16];
	struct timeval tv = { .tv_sec = 2 };

	for (int i = 0; i < n; i++)
		pf[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
	for (;;) {
		if (poll(pf, n, -1) < 0)
			continue;
		for (int i = 0; i < n; i++) {
			char buf[256], out[300];
			ssize_t got;

			if (!(pf[i].revents & POLLIN))
				continue;
			if (tcp[i]) {
				int c = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC);

				if (c < 0)
					continue;
				setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
				got = recv(c, buf, sizeof(buf), 0);
				if (got > 0) {
					int len = snprintf(out, sizeof(out), "pong:%.*s", (int)got, buf);

					send(c, out, len, MSG_NOSIGNAL);
				}
				close(c);
			} else {
				struct sockaddr_storage from;
				socklen_t fl = sizeof(from);

				got = recvfrom(fds[i], buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
				if (got > 0) {
					int len = snprintf(out, sizeof(out), "pong:%.*s", (int)got, buf);

					sendto(fds[i], out, len, 0, (struct sockaddr *)&from, fl);
				}
			}
		}
	}
}

/* --- the client cases (inside the bound cgroup) -------------------------------------- */

static socklen_t make_addr(struct sockaddr_storage *ss, int family, int port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		inet_pton(AF_INET, "127.0.0.1", &a->sin_addr);
		return sizeof(*a);
	}
	struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

	a->sin6_family = AF_INET6;
	a->sin6_port = htons(port);
	a->sin6_addr = in6addr_loopback;
	return sizeof(*a);
}

/* Verdict strings shared by the host and VM runs (the test compares them):
 * "echo" = data went both ways, "EPERM"/"E..." = the syscall failed, "timeout" = no
 * answer within WAIT_MS. */
static void tcp_try(int family, int port, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = make_addr(&ss, family, port);
	struct timeval tv = { .tv_sec = WAIT_MS / 1000, .tv_usec = (WAIT_MS % 1000) * 1000 };
	struct pollfd pf;
	char buf[64];
	int s, err = 0;
	socklen_t el = sizeof(err);
	ssize_t got;

	s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0) {
		snprintf(out, len, "socket:%s", strerrorname_np(errno));
		return;
	}
	if (connect(s, (struct sockaddr *)&ss, sl) && errno != EINPROGRESS) {
		snprintf(out, len, "%s", strerrorname_np(errno));
		close(s);
		return;
	}
	pf = (struct pollfd){ .fd = s, .events = POLLOUT };
	if (poll(&pf, 1, WAIT_MS) != 1) {
		snprintf(out, len, "timeout");
		close(s);
		return;
	}
	getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
	if (err) {
		snprintf(out, len, "%s", strerrorname_np(err));
		close(s);
		return;
	}
	fcntl(s, F_SETFL, 0);
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (send(s, "ping", 4, MSG_NOSIGNAL) != 4) {
		snprintf(out, len, "send:%s", strerrorname_np(errno));
		close(s);
		return;
	}
	got = recv(s, buf, sizeof(buf) - 1, 0);
	if (got < 0)
		snprintf(out, len, errno == EAGAIN ? "no-reply" : "recv:%s", strerrorname_np(errno));
	else if (got == 9 && !memcmp(buf, "pong:ping", 9))
		snprintf(out, len, "echo");
	else
		snprintf(out, len, "bad-reply:%zd", got);
	close(s);
}

static void udp_try(int family, int port, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = make_addr(&ss, family, port);
	struct timeval tv = { .tv_sec = WAIT_MS / 1000, .tv_usec = (WAIT_MS % 1000) * 1000 };
	char buf[64];
	ssize_t got;
	int s = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0) {
		snprintf(out, len, "socket:%s", strerrorname_np(errno));
		return;
	}
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (sendto(s, "ping", 4, 0, (struct sockaddr *)&ss, sl) != 4) {
		snprintf(out, len, "%s", strerrorname_np(errno));
		close(s);
		return;
	}
	got = recv(s, buf, sizeof(buf) - 1, 0);
	if (got < 0)
		snprintf(out, len, errno == EAGAIN ? "timeout" : "recv:%s", strerrorname_np(errno));
	else if (got == 9 && !memcmp(buf, "pong:ping", 9))
		snprintf(out, len, "echo");
	else
		snprintf(out, len, "bad-reply:%zd", got);
	close(s);
}

/* An ICMP echo request over a ping socket (the kernel answers it). */
static void ping_try(int family, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = make_addr(&ss, family, 0);
	struct timeval tv = { .tv_sec = WAIT_MS / 1000, .tv_usec = (WAIT_MS % 1000) * 1000 };
	uint8_t pkt[16] = {}, buf[128];
	ssize_t got;
	int s = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6);

	if (s < 0) {
		snprintf(out, len, "socket:%s", strerrorname_np(errno));
		return;
	}
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	pkt[0] = family == AF_INET ? 8 : 128; /* echo request; the kernel sets id and checksum */
	pkt[7] = 1;
	memcpy(pkt + 8, "aegis-vm", 8);
	if (sendto(s, pkt, sizeof(pkt), 0, (struct sockaddr *)&ss, sl) != sizeof(pkt)) {
		/* A dropped egress packet fails the send; still "no reply". */
		snprintf(out, len, "no-reply(send:%s)", strerrorname_np(errno));
		close(s);
		return;
	}
	got = recv(s, buf, sizeof(buf), 0);
	if (got < 0)
		snprintf(out, len, errno == EAGAIN ? "no-reply(timeout)" : "recv:%s", strerrorname_np(errno));
	else if (got >= 1 && buf[0] == (family == AF_INET ? 0 : 129))
		snprintf(out, len, "echo");
	else
		snprintf(out, len, "bad-reply:%zd", got);
	close(s);
}

struct expect {
	const char *name;
	char kind;   /* 't' tcp, 'u' udp, 'p' ping */
	int family;
	int port;
	const char *want_prefix;
};

static void run_cases(const char *phase, const struct expect *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char got[128], name[96];

		if (cases[i].kind == 't')
			tcp_try(cases[i].family, cases[i].port, got, sizeof(got));
		else if (cases[i].kind == 'u')
			udp_try(cases[i].family, cases[i].port, got, sizeof(got));
		else
			ping_try(cases[i].family, got, sizeof(got));
		snprintf(name, sizeof(name), "%s-%s", phase, cases[i].name);
		result(name, !strncmp(got, cases[i].want_prefix, strlen(cases[i].want_prefix)),
		       "verdict=%s want=%s", got, cases[i].want_prefix);
	}
}

/* Forks a child that joins `cgroup` and runs the cases; waits for it. */
static int in_cgroup(const char *cgroup, const char *phase, const struct expect *cases, size_t n)
{
	char procs[600];
	int status;
	pid_t pid;

	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup);
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* Sockets belong to the cgroup of the task that creates them: join first. */
		if (write_file(procs, "0")) {
			result("join-cgroup", 0, "%s: %s", procs, strerror(errno));
			_exit(1);
		}
		failures = 0;
		run_cases(phase, cases, n);
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static const struct {
	const char *name;
	enum bpf_attach_type type;
	int connect_hook;
} hooks[] = {
	{ "aegis_egress", BPF_CGROUP_INET_EGRESS, 0 },
	{ "aegis_ingress", BPF_CGROUP_INET_INGRESS, 0 },
	{ "aegis_connect4", BPF_CGROUP_INET4_CONNECT, 1 },
	{ "aegis_connect6", BPF_CGROUP_INET6_CONNECT, 1 },
	{ "aegis_sendmsg4", BPF_CGROUP_UDP4_SENDMSG, 1 },
	{ "aegis_sendmsg6", BPF_CGROUP_UDP6_SENDMSG, 1 },
};
#define NHOOKS (sizeof(hooks) / sizeof(hooks[0]))

/* Opens and loads the object; with_hooks = 0 loads only the packet programs, as the addon
 * does when the kernel refuses the connect hooks. */
static struct bpf_object *load(const char *obj_path, const char *pin_root, int with_hooks, int *err)
{
	LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = pin_root);
	struct bpf_object *obj = bpf_object__open_file(obj_path, &oo);

	if (!obj) {
		*err = errno;
		return NULL;
	}
	for (size_t i = 0; i < NHOOKS; i++)
		if (hooks[i].connect_hook)
			bpf_program__set_autoload(bpf_object__find_program_by_name(obj, hooks[i].name), with_hooks);
	*err = bpf_object__load(obj);
	if (*err) {
		*err = errno ? errno : -*err;
		bpf_object__close(obj);
		return NULL;
	}
	return obj;
}

/* Removes what the object pinned (its maps, by name) and the pin root. */
static void unpin(const char *pin_root)
{
	static const char *maps[] = { "pol", "cgrp", "cnt", "flow", "evt", "rate" };
	char p[600];

	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		snprintf(p, sizeof(p), "%s/" AEGIS_PIN_PREFIX "%s", pin_root, maps[i]);
		unlink(p);
	}
	rmdir(pin_root);
}

int main(int argc, char **argv)
{
	const char *obj_path = NULL, *pin_parent = "/sys/fs/bpf";
	char cg_parent[512] = "", cgroup[700], pin_root[600];
	struct bpf_object *obj;
	struct aegis_counters c0, c1, c2;
	struct utsname u;
	int err, with_hooks = 1, links[NHOOKS], cg_fd, outer_fd, cnt_fd, cgrp_fd;
	int srv_fds[8], srv_tcp[8], nsrv = 0;
	uint64_t cgid;
	uint32_t svc = SVC;
	const char *how;
	pid_t server = -1;

	for (size_t i = 0; i < NHOOKS; i++)
		links[i] = -1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--obj") && i + 1 < argc)
			obj_path = argv[++i];
		else if (!strcmp(argv[i], "--pin-parent") && i + 1 < argc)
			pin_parent = argv[++i];
		else if (!strcmp(argv[i], "--cgroup-parent") && i + 1 < argc)
			snprintf(cg_parent, sizeof(cg_parent), "%s", argv[++i]);
		else {
			fprintf(stderr, "usage: %s --obj aegis.bpf.o [--pin-parent DIR] [--cgroup-parent DIR]\n", argv[0]);
			return 2;
		}
	}
	if (!obj_path) {
		fprintf(stderr, "aegis-vmtest: --obj is required\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(print_fn);
	uname(&u);
	info("kernel=%s", u.release);
	info("btf_vmlinux=%s", access("/sys/kernel/btf/vmlinux", R_OK) == 0 ? "yes" : "no");
	info("possible_cpus=%d", libbpf_num_possible_cpus());

	/* A private network namespace: loopback only, its own ping_group_range. */
	if (unshare(CLONE_NEWNET)) {
		result("netns", 0, "unshare(CLONE_NEWNET): %s", strerror(errno));
		return 1;
	}
	if (loopback_up()) {
		result("netns", 0, "bringing lo up: %s", strerror(errno));
		return 1;
	}
	/* Ping sockets for every group (root included), in this namespace only. */
	if (write_file("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")) {
		result("netns", 0, "ping_group_range: %s", strerror(errno));
		return 1;
	}
	result("netns", 1, "private network namespace, lo up");

	if (!cg_parent[0] && cgroup2_mount(cg_parent, sizeof(cg_parent))) {
		result("cgroup", 0, "no cgroup v2 mount in /proc/self/mounts");
		return 1;
	}
	snprintf(cgroup, sizeof(cgroup), "%s/aegis-vmtest-%d", cg_parent, (int)getpid());
	snprintf(pin_root, sizeof(pin_root), "%s/aegis-vmtest-%d", pin_parent, (int)getpid());
	if (mkdir(pin_root, 0700) && errno != EEXIST) {
		result("pin-root", 0, "mkdir %s: %s", pin_root, strerror(errno));
		return 1;
	}

	obj = load(obj_path, pin_root, 1, &err);
	if (!obj) {
		result("load-all", 0, "%s (verifier/libbpf log follows)", err_name(err));
		dump_log(120);
		with_hooks = 0;
		obj = load(obj_path, pin_root, 0, &err);
		if (!obj) {
			result("load-packet-programs", 0, "%s", err_name(err));
			dump_log(120);
			unpin(pin_root);
			return 1;
		}
		result("load-packet-programs", 1, "skb-only, as the addon degrades");
	} else {
		result("load-all", 1, "2 cgroup_skb + 4 cgroup_sock_addr programs, %s", obj_path);
	}
	dump_log(20); /* warnings of a successful load, if any */
	/* How much verifier work each program took in this kernel (the limit is 1M). */
	for (size_t i = 0; i < NHOOKS; i++) {
		struct bpf_program *p = bpf_object__find_program_by_name(obj, hooks[i].name);
		struct bpf_prog_info pi = {};
		__u32 pl = sizeof(pi);

		if (bpf_program__fd(p) >= 0 && !bpf_obj_get_info_by_fd(bpf_program__fd(p), &pi, &pl))
			info("prog_%s=verified_insns:%u,xlated_bytes:%u,jited_bytes:%u", hooks[i].name + 6,
			     pi.verified_insns, pi.xlated_prog_len, pi.jited_prog_len);
	}

	outer_fd = bpf_object__find_map_fd_by_name(obj, AEGIS_PIN_PREFIX "pol");
	cgrp_fd = bpf_object__find_map_fd_by_name(obj, AEGIS_PIN_PREFIX "cgrp");
	cnt_fd = bpf_object__find_map_fd_by_name(obj, AEGIS_PIN_PREFIX "cnt");

	if (mkdir(cgroup, 0755) && errno != EEXIST) {
		result("cgroup", 0, "mkdir %s: %s", cgroup, strerror(errno));
		goto out;
	}
	cg_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0 || cgroup_id(cgroup, &cgid)) {
		result("cgroup", 0, "%s: %s", cgroup, strerror(errno));
		goto out;
	}
	/* Bind as the addon does: cgroup entry first, counters, then the links. */
	if (bpf_map_update_elem(cgrp_fd, &cgid, &svc, BPF_ANY)) {
		result("bind", 0, "cgroup map: %s", strerror(errno));
		goto out;
	}
	{
		int attached = 0;
		char which[256] = "";

		for (size_t i = 0; i < NHOOKS; i++) {
			if (hooks[i].connect_hook && !with_hooks)
				continue;
			links[i] = bpf_link_create(bpf_program__fd(bpf_object__find_program_by_name(obj, hooks[i].name)),
						   cg_fd, hooks[i].type, NULL);
			if (links[i] < 0) {
				result("bind", 0, "bpf_link_create %s: %s", hooks[i].name, strerror(errno));
				goto out;
			}
			attached++;
			strncat(which, hooks[i].name + 6, sizeof(which) - strlen(which) - 2);
			strcat(which, ",");
		}
		result("bind", 1, "cgroup id %llu, %d links: %s", (unsigned long long)cgid, attached, which);
	}

	/* The echo server stays in this (unbound) cgroup. */
	{
		static const struct { int family, type, port; } ls[] = {
			{ AF_INET, SOCK_STREAM, PORT_TCP_OK }, { AF_INET, SOCK_STREAM, PORT_TCP_DENY },
			{ AF_INET6, SOCK_STREAM, PORT_TCP_OK }, { AF_INET6, SOCK_STREAM, PORT_TCP_DENY },
			{ AF_INET, SOCK_DGRAM, PORT_UDP_OK }, { AF_INET, SOCK_DGRAM, PORT_UDP_DENY },
			{ AF_INET6, SOCK_DGRAM, PORT_UDP_DENY },
		};

		for (size_t i = 0; i < sizeof(ls) / sizeof(ls[0]); i++) {
			srv_fds[nsrv] = bound_socket(ls[i].family, ls[i].type, ls[i].port);
			if (srv_fds[nsrv] < 0) {
				result("listeners", 0, "port %d: %s", ls[i].port, strerror(errno));
				goto out;
			}
			srv_tcp[nsrv++] = ls[i].type == SOCK_STREAM;
		}
		fflush(stdout);
		server = fork();
		if (server == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			serve(srv_fds, srv_tcp, nsrv);
			_exit(0);
		}
		for (int i = 0; i < nsrv; i++)
			close(srv_fds[i]);
		result("listeners", server > 0, "tcp 127.0.0.1 and [::1] :%d :%d, udp :%d :%d", PORT_TCP_OK,
		       PORT_TCP_DENY, PORT_UDP_OK, PORT_UDP_DENY);
		if (server < 0)
			goto out;
	}

	{
		struct rule rules[3] = {
			{ .dir = AEGIS_DIR_EGRESS, .proto = IPPROTO_TCP, .port = PORT_TCP_OK, .prefixlen = 128 },
			{ .dir = AEGIS_DIR_EGRESS, .proto = IPPROTO_UDP, .port = PORT_UDP_OK, .prefixlen = 128 },
			{ .dir = AEGIS_DIR_EGRESS, .proto = IPPROTO_TCP, .port = PORT_TCP_OK, .prefixlen = 128 },
		};
		/* Egress to the allowed ports on 127.0.0.1 and ::1; no ICMP rule, no ingress rule
		 * (replies of allowed flows pass as tracked flows). */
		static const struct expect enforce[] = {
			{ "tcp4-allowed", 't', AF_INET, PORT_TCP_OK, "echo" },
			{ "tcp4-denied", 't', AF_INET, PORT_TCP_DENY, "EPERM" },
			{ "udp4-allowed", 'u', AF_INET, PORT_UDP_OK, "echo" },
			{ "udp4-denied", 'u', AF_INET, PORT_UDP_DENY, "EPERM" },
			{ "tcp6-allowed", 't', AF_INET6, PORT_TCP_OK, "echo" },
			{ "tcp6-denied", 't', AF_INET6, PORT_TCP_DENY, "EPERM" },
			{ "udp6-denied", 'u', AF_INET6, PORT_UDP_DENY, "EPERM" },
			{ "icmp4-echo-denied", 'p', AF_INET, 0, "no-reply" },
			{ "icmp6-echo-denied", 'p', AF_INET6, 0, "no-reply" },
		};
		static const struct expect observe[] = {
			{ "tcp4-denied", 't', AF_INET, PORT_TCP_DENY, "echo" },
			{ "udp4-denied", 'u', AF_INET, PORT_UDP_DENY, "echo" },
			{ "tcp6-denied", 't', AF_INET6, PORT_TCP_DENY, "echo" },
			{ "udp6-denied", 'u', AF_INET6, PORT_UDP_DENY, "echo" },
			{ "icmp4-echo", 'p', AF_INET, 0, "echo" },
			{ "icmp6-echo", 'p', AF_INET6, 0, "echo" },
		};
		const uint64_t denied = 6; /* tcp4, udp4, tcp6, udp6, icmp4, icmp6 */

		v4_mapped(rules[0].addr, "127.0.0.1");
		v4_mapped(rules[1].addr, "127.0.0.1");
		inet_pton(AF_INET6, "::1", rules[2].addr);

		how = apply_policy(outer_fd, cnt_fd, rules, 3, 1, AEGIS_MODE_ENFORCE);
		result("apply-enforce", how != NULL, "generation 1, 3 rules, %s", how ? how : strerror(errno));
		if (!how)
			goto kill;
		read_counters(cnt_fd, &c0);
		failures += in_cgroup(cgroup, "enforce", enforce, sizeof(enforce) / sizeof(enforce[0])) != 0;
		read_counters(cnt_fd, &c1);
		print_counters("enforce", &c1);
		result("enforce-counters",
		       c1.allowed - c0.allowed == 3 && c1.dropped - c0.dropped == denied && c1.would_drop == c0.would_drop,
		       "allowed=%llu (want 3) dropped=%llu (want %llu) would_drop=%llu (want 0)",
		       (unsigned long long)(c1.allowed - c0.allowed), (unsigned long long)(c1.dropped - c0.dropped),
		       (unsigned long long)denied, (unsigned long long)(c1.would_drop - c0.would_drop));

		/* The same rules in observe mode: a new trie of generation 2, swapped in. */
		how = apply_policy(outer_fd, cnt_fd, rules, 3, 2, AEGIS_MODE_OBSERVE);
		result("apply-observe", how != NULL, "generation 2, 3 rules, %s", how ? how : strerror(errno));
		if (!how)
			goto kill;
		failures += in_cgroup(cgroup, "observe", observe, sizeof(observe) / sizeof(observe[0])) != 0;
		read_counters(cnt_fd, &c2);
		print_counters("observe", &c2);
		result("observe-counters", c2.would_drop - c1.would_drop == denied && c2.dropped == c1.dropped,
		       "would_drop=%llu (want %llu) dropped=%llu (want 0)",
		       (unsigned long long)(c2.would_drop - c1.would_drop), (unsigned long long)denied,
		       (unsigned long long)(c2.dropped - c1.dropped));
	}
kill:
	kill(server, SIGKILL);
	waitpid(server, NULL, 0);
out:
	for (size_t i = 0; i < NHOOKS; i++)
		if (links[i] >= 0)
			close(links[i]); /* unpinned links detach when their last fd closes */
	bpf_object__close(obj);
	unpin(pin_root);
	rmdir(cgroup);
	info("done failures=%d", failures);
	return failures ? 1 : 0;
}
