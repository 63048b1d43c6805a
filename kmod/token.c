// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Reading and verifying the token file, and the periodic re-check of its time claims.
 */
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>

#include "aegis.h"

struct aegis_state *aegis_state;
static struct delayed_work aegis_recheck_work;

int aegis_state_init(const char *pubkeys)
{
	const char *err = NULL;

	aegis_state = kvzalloc(sizeof(*aegis_state), GFP_KERNEL);
	if (!aegis_state)
		return -ENOMEM;
	mutex_init(&aegis_state->lock);
	aegis_state->verdict = AEGIS_VERDICT_MISSING;
	aegis_state->reported = AEGIS_VERDICT_COUNT;	/* nothing reported yet */

	if (aegis_keyring_parse(&aegis_state->keys, pubkeys, strlen(pubkeys), &err)) {
		pr_err("pubkeys: %s; expected kid=base64url-key[,kid=base64url-key...]\n", err);
		kvfree(aegis_state);
		aegis_state = NULL;
		return -EINVAL;
	}
	if (!aegis_state->keys.count)
		pr_warn("no pubkeys given: every token will be refused as \"unknown kid\"\n");
	return 0;
}

void aegis_state_uninit(void)
{
	mutex_destroy(&aegis_state->lock);
	kvfree(aegis_state);
	aegis_state = NULL;
}

/*
 * Reads at most @cap bytes of the regular file at @path. Reading stops at the cap, so
 * a huge (or endless) file costs no more than a legitimate one; the caller treats a
 * full buffer as "too large".
 */
static int aegis_read_file(const char *path, u8 *buf, size_t cap, size_t *len)
{
	struct file *f;
	loff_t pos = 0;
	size_t total = 0;
	ssize_t n;
	int ret = 0;

	/* O_NONBLOCK: a FIFO planted at the path must not hang the reload. */
	f = filp_open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
	if (IS_ERR(f))
		return PTR_ERR(f);
	if (!S_ISREG(file_inode(f)->i_mode)) {
		ret = -EINVAL;
		goto out;
	}
	while (total < cap) {
		n = kernel_read(f, buf + total, cap - total, &pos);
		if (n < 0) {
			ret = (int)n;
			goto out;
		}
		if (n == 0)
			break;
		total += n;
	}
	*len = total;
out:
	filp_close(f, NULL);
	return ret;
}

/* The verdict now: a verified token's time claims are re-evaluated against the clock. */
enum aegis_verdict aegis_current_verdict_locked(void)
{
	struct aegis_state *s = aegis_state;

	lockdep_assert_held(&s->lock);
	if (s->info.signature_ok &&
	    (s->verdict == AEGIS_VERDICT_VALID || s->verdict == AEGIS_VERDICT_NOT_YET_VALID ||
	     s->verdict == AEGIS_VERDICT_EXPIRED))
		return aegis_verdict_at(&s->info.claims, ktime_get_real_seconds());
	return s->verdict;
}

/* Logs a verdict change once, so a token that stays bad does not flood the log. */
static bool aegis_report_locked(enum aegis_verdict v)
{
	struct aegis_state *s = aegis_state;

	if (v == s->reported)
		return false;
	s->reported = v;
	if (v == AEGIS_VERDICT_VALID)
		pr_info("token valid: tier %s, kid %s, expires at %lld\n", s->info.claims.tier,
			s->info.header.kid, s->info.claims.exp);
	else
		pr_notice("token %s (%s)\n", aegis_verdict_str(v), aegis_param_token_path);
	return true;
}

void aegis_reload(void)
{
	struct aegis_state *s = aegis_state;
	struct aegis_verify_params params = {
		.keys = &s->keys,
		.hwid = aegis_param_hwid,
	};
	size_t len = 0;
	u64 t0;
	bool changed;
	int ret;

	mutex_lock(&s->lock);
	memset(&s->info, 0, sizeof(s->info));
	ret = aegis_read_file(aegis_param_token_path, s->file, sizeof(s->file), &len);
	if (ret == -ENOENT) {
		s->verdict = AEGIS_VERDICT_MISSING;
	} else if (ret) {
		pr_warn("cannot read %s: error %d\n", aegis_param_token_path, ret);
		s->verdict = AEGIS_VERDICT_READ_ERROR;
	} else {
		params.now = ktime_get_real_seconds();
		t0 = ktime_get_ns();
		s->verdict = aegis_verify_token(s->file, len, &params, &s->scratch, &s->info);
		s->verify_ns = ktime_get_ns() - t0;
	}
	s->checked_at = ktime_get_real_seconds();
	changed = aegis_report_locked(s->verdict);
	mutex_unlock(&s->lock);

	if (changed)
		aegis_sysfs_notify_status();
}

/*
 * Re-evaluates the time claims of the current token without touching the file, so the
 * status turns "expired" on time even when nobody reloads. Runs every recheck_secs,
 * or sooner when nbf or exp falls due before that.
 */
static void aegis_recheck_fn(struct work_struct *work)
{
	struct aegis_state *s = aegis_state;
	unsigned long delay = (unsigned long)aegis_param_recheck_secs;
	enum aegis_verdict v;
	bool changed;
	s64 now;

	mutex_lock(&s->lock);
	v = aegis_current_verdict_locked();
	changed = aegis_report_locked(v);
	now = ktime_get_real_seconds();
	if (s->info.signature_ok) {
		s64 next = (v == AEGIS_VERDICT_NOT_YET_VALID ? s->info.claims.nbf : s->info.claims.exp) - now;

		if (next >= 0 && (u64)next < delay)
			delay = (unsigned long)next + 1;
	}
	mutex_unlock(&s->lock);

	if (changed)
		aegis_sysfs_notify_status();
	queue_delayed_work(system_power_efficient_wq, &aegis_recheck_work, delay * HZ);
}

int aegis_recheck_init(void)
{
	if (!aegis_param_recheck_secs) {
		pr_err("recheck_secs must be at least 1\n");
		return -EINVAL;
	}
	INIT_DELAYED_WORK(&aegis_recheck_work, aegis_recheck_fn);
	queue_delayed_work(system_power_efficient_wq, &aegis_recheck_work, 0);
	return 0;
}

void aegis_recheck_uninit(void)
{
	/* Also stops the work re-arming itself. */
	cancel_delayed_work_sync(&aegis_recheck_work);
}

/* After a reload the next due time may have moved: re-check now and re-arm from there. */
void aegis_recheck_kick(void)
{
	mod_delayed_work(system_power_efficient_wq, &aegis_recheck_work, 0);
}
