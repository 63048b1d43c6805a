/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Kernel-side glue shared by main.c, token.c and sysfs.c. The verifier itself lives in
 * core/ and knows nothing of the kernel.
 */
#ifndef AEGIS_H
#define AEGIS_H

#include <linux/kobject.h>
#include <linux/mutex.h>
#include <linux/types.h>
#include <linux/workqueue.h>

#include "verify.h"

/* Module parameters (main.c); read-only after load, so read without locking. */
extern char *aegis_param_token_path;
extern char *aegis_param_hwid;
extern unsigned int aegis_param_recheck_secs;

/*
 * Everything the module knows about the current token. One instance, allocated at load
 * (it holds ~25 KiB of fixed buffers, too much for the stack and not worth a slab).
 */
struct aegis_state {
	/*
	 * Serialises reloads, the expiry re-check and every sysfs read against each other.
	 * Protects all fields below except @keys, which is written once before anything
	 * else can run and only read afterwards.
	 */
	struct mutex lock;

	struct aegis_keyring keys;

	u8 file[AEGIS_TOKEN_MAX + 1];		/* one byte over the cap detects "too large" */
	struct aegis_verify_scratch scratch;
	struct aegis_token_info info;		/* what the last reload learned */
	enum aegis_verdict verdict;		/* verdict of the last reload, at its time */
	enum aegis_verdict reported;		/* last verdict logged / notified */
	u64 verify_ns;				/* duration of the last verification */
	time64_t checked_at;
};

extern struct aegis_state *aegis_state;

int aegis_state_init(const char *pubkeys);
void aegis_state_uninit(void);
void aegis_reload(void);
enum aegis_verdict aegis_current_verdict_locked(void);

int aegis_recheck_init(void);
void aegis_recheck_uninit(void);
void aegis_recheck_kick(void);

int aegis_sysfs_init(void);
void aegis_sysfs_uninit(void);
void aegis_sysfs_notify_status(void);

#endif /* AEGIS_H */
