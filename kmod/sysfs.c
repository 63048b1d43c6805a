// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * /sys/kernel/aegis/: the verdict and the entitlements of the current token.
 *
 * tier, features and fmask show the token's values only while the status is "valid",
 * so a consumer that reads them alone can never pick up entitlements from an expired,
 * foreign or forged token. expires_at and kid are shown for any token whose signature
 * verified, which is what an operator needs to tell why a token stopped being valid.
 */
#include <linux/kobject.h>
#include <linux/sysfs.h>

#include "aegis.h"

static struct kobject *aegis_kobj;

static ssize_t status_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	ssize_t n;

	mutex_lock(&aegis_state->lock);
	n = sysfs_emit(buf, "%s\n", aegis_verdict_str(aegis_current_verdict_locked()));
	mutex_unlock(&aegis_state->lock);
	return n;
}

static ssize_t tier_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	ssize_t n = 0;

	mutex_lock(&aegis_state->lock);
	if (aegis_current_verdict_locked() == AEGIS_VERDICT_VALID)
		n = sysfs_emit(buf, "%s\n", aegis_state->info.claims.tier);
	mutex_unlock(&aegis_state->lock);
	return n;
}

static ssize_t features_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	const struct aegis_claims *c = &aegis_state->info.claims;
	ssize_t n = 0;
	u32 i;

	mutex_lock(&aegis_state->lock);
	/* At most 32 names of at most 48 bytes: always fits in one page. */
	if (aegis_current_verdict_locked() == AEGIS_VERDICT_VALID)
		for (i = 0; i < c->nfeatures; i++)
			n += sysfs_emit_at(buf, n, "%s\n", c->features[i]);
	mutex_unlock(&aegis_state->lock);
	return n;
}

static ssize_t fmask_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	s64 fmask = 0;

	mutex_lock(&aegis_state->lock);
	if (aegis_current_verdict_locked() == AEGIS_VERDICT_VALID)
		fmask = aegis_state->info.claims.fmask;
	mutex_unlock(&aegis_state->lock);
	return sysfs_emit(buf, "%lld\n", fmask);
}

static ssize_t expires_at_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	ssize_t n = 0;

	mutex_lock(&aegis_state->lock);
	if (aegis_state->info.signature_ok)
		n = sysfs_emit(buf, "%lld\n", aegis_state->info.claims.exp);
	mutex_unlock(&aegis_state->lock);
	return n;
}

static ssize_t kid_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	ssize_t n = 0;

	mutex_lock(&aegis_state->lock);
	if (aegis_state->info.signature_ok)
		n = sysfs_emit(buf, "%s\n", aegis_state->info.header.kid);
	mutex_unlock(&aegis_state->lock);
	return n;
}

static ssize_t verify_ns_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	u64 ns;

	mutex_lock(&aegis_state->lock);
	ns = aegis_state->verify_ns;
	mutex_unlock(&aegis_state->lock);
	return sysfs_emit(buf, "%llu\n", ns);
}

/* Any write re-reads the token file; the agent does this after writing a new token. */
static ssize_t reload_store(struct kobject *kobj, struct kobj_attribute *attr, const char *buf,
			    size_t count)
{
	aegis_reload();
	aegis_recheck_kick();
	return count;
}

static struct kobj_attribute aegis_attr_status = __ATTR_RO(status);
static struct kobj_attribute aegis_attr_tier = __ATTR_RO(tier);
static struct kobj_attribute aegis_attr_features = __ATTR_RO(features);
static struct kobj_attribute aegis_attr_fmask = __ATTR_RO(fmask);
static struct kobj_attribute aegis_attr_expires_at = __ATTR_RO(expires_at);
static struct kobj_attribute aegis_attr_kid = __ATTR_RO(kid);
static struct kobj_attribute aegis_attr_verify_ns = __ATTR_RO(verify_ns);
static struct kobj_attribute aegis_attr_reload = __ATTR_WO(reload);

static struct attribute *aegis_attrs[] = {
	&aegis_attr_status.attr,
	&aegis_attr_tier.attr,
	&aegis_attr_features.attr,
	&aegis_attr_fmask.attr,
	&aegis_attr_expires_at.attr,
	&aegis_attr_kid.attr,
	&aegis_attr_verify_ns.attr,
	&aegis_attr_reload.attr,
	NULL,
};

static const struct attribute_group aegis_attr_group = {
	.attrs = aegis_attrs,
};

int aegis_sysfs_init(void)
{
	int ret;

	aegis_kobj = kobject_create_and_add("aegis", kernel_kobj);
	if (!aegis_kobj)
		return -ENOMEM;
	ret = sysfs_create_group(aegis_kobj, &aegis_attr_group);
	if (ret)
		goto err_put_kobj;
	return 0;

err_put_kobj:
	kobject_put(aegis_kobj);
	aegis_kobj = NULL;
	return ret;
}

void aegis_sysfs_uninit(void)
{
	/* Removing the files waits for readers and writers still inside them. */
	sysfs_remove_group(aegis_kobj, &aegis_attr_group);
	kobject_put(aegis_kobj);
	aegis_kobj = NULL;
}

/* Wakes poll()ers of status; a no-op before sysfs is up or after it is gone. */
void aegis_sysfs_notify_status(void)
{
	struct kobject *kobj = READ_ONCE(aegis_kobj);

	if (kobj)
		sysfs_notify(kobj, NULL, "status");
}
