// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * aegis: verifies the Aegis kernel entitlement token (an EdDSA compact JWS written by
 * aegis-agent) and publishes the verdict and entitlements under /sys/kernel/aegis/.
 *
 * Each part has an init/uninit pair; module init calls them in order and unwinds in
 * reverse, and module exit is that unwinding in full.
 */
#include <linux/ctype.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/string.h>

#include "aegis.h"
#include "selftest.h"

/* A hardware id: SHA-256 in hex (protocol/src/fingerprint.ts). */
#define AEGIS_HWID_PARAM_LEN 64

char *aegis_param_token_path = "/etc/aegis/auth.token";
module_param_named(token_path, aegis_param_token_path, charp, 0444);
MODULE_PARM_DESC(token_path, "Token file to verify (default /etc/aegis/auth.token)");

static char *aegis_param_pubkeys = "";
module_param_named(pubkeys, aegis_param_pubkeys, charp, 0444);
MODULE_PARM_DESC(pubkeys, "Trusted keys: kid=base64url,... (32-byte Ed25519 keys, the JWK x member)");

char *aegis_param_hwid = "";
module_param_named(hwid, aegis_param_hwid, charp, 0444);
MODULE_PARM_DESC(hwid, "This machine's hardware id (64 hex digits); the token's hwid must match");

/*
 * Without hwid the module accepts a valid token issued to any machine, so one copied from
 * another host would license this one. That is never what an installation wants, and it
 * is easy to get by accident (an empty $(aegis-agent hwid), a forgotten option), so by
 * default the module refuses to load without it; require_hwid=0 is for tests and images
 * built before the machine they run on is known.
 */
static bool aegis_param_require_hwid = true;
module_param_named(require_hwid, aegis_param_require_hwid, bool, 0444);
MODULE_PARM_DESC(require_hwid, "Refuse to load without hwid (default Y); N accepts tokens issued to any machine");

unsigned int aegis_param_recheck_secs = 60;
module_param_named(recheck_secs, aegis_param_recheck_secs, uint, 0444);
MODULE_PARM_DESC(recheck_secs, "Seconds between re-checks of expiry, 1..86400 (default 60)");

static int __init aegis_selftest_init(void)
{
	const char *failed = aegis_core_selftest();

	if (failed) {
		pr_err("verifier self-test failed: %s; refusing to load\n", failed);
		return -ENOTRECOVERABLE;
	}
	return 0;
}

/* hwid is a hardware id (64 hex digits, any case), or empty only with require_hwid=0. */
static int __init aegis_hwid_param_check(void)
{
	size_t i, len = strlen(aegis_param_hwid);

	if (len == 0) {
		if (aegis_param_require_hwid) {
			pr_err("hwid is not set: load with hwid=<this machine's hardware id> (aegis-agent hwid), or require_hwid=0 to accept tokens issued to any machine; refusing to load\n");
			return -EINVAL;
		}
		pr_warn("loaded without hwid (require_hwid=0): a token issued to any machine is accepted\n");
		return 0;
	}
	if (len != AEGIS_HWID_PARAM_LEN)
		goto bad;
	for (i = 0; i < len; i++)
		if (!isxdigit(aegis_param_hwid[i]))
			goto bad;
	return 0;
bad:
	pr_err("hwid must be %d hex digits (the output of aegis-agent hwid); refusing to load\n", AEGIS_HWID_PARAM_LEN);
	return -EINVAL;
}

static int __init aegis_mod_init(void)
{
	int ret;

	if (aegis_param_recheck_secs > 86400) {
		pr_err("recheck_secs must be 1..86400\n");
		return -EINVAL;
	}
	ret = aegis_hwid_param_check();
	if (ret)
		return ret;
	ret = aegis_selftest_init();
	if (ret)
		return ret;

	ret = aegis_state_init(aegis_param_pubkeys);
	if (ret)
		return ret;
	/* The first verdict exists before anything can read it. */
	aegis_reload();

	ret = aegis_recheck_init();
	if (ret)
		goto err_state;
	/* Last: once sysfs is up, writes to reload can arrive at any time. */
	ret = aegis_sysfs_init();
	if (ret)
		goto err_recheck;

	pr_info("loaded: %zu key(s), token %s%s%s\n", aegis_state->keys.count, aegis_param_token_path,
		aegis_param_hwid[0] ? ", hwid " : "", aegis_param_hwid);
	return 0;

err_recheck:
	aegis_recheck_uninit();
err_state:
	aegis_state_uninit();
	return ret;
}

static void __exit aegis_mod_exit(void)
{
	aegis_sysfs_uninit();
	aegis_recheck_uninit();
	aegis_state_uninit();
	pr_info("unloaded\n");
}

module_init(aegis_mod_init);
module_exit(aegis_mod_exit);

MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("Aegis kernel entitlement token verifier");
MODULE_AUTHOR("Aegis");
