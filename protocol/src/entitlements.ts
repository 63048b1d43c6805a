/**
 * Entitlements: operator-defined capability codes granted to one license beyond its tier
 * (`["sso", "reports.export"]`). They ride in the machine and module license tokens
 * (`entitlements` claim), are checkable at /validate (ENTITLEMENT_MISSING), and those named
 * in KERNEL_ENTITLEMENT_BITS also set a bit of the kernel token's `fmask`.
 */

/** A code: lowercase letters, digits, `_`, `.`, `-`; 1 to 64 characters. */
export const ENTITLEMENT_PATTERN = /^[a-z0-9_.-]{1,64}$/;
/** At most this many entitlements on one license (and in one request). */
export const MAX_ENTITLEMENTS = 64;

/**
 * Kernel feature bits an entitlement sets in `fmask`. Bits 0..23 belong to tier features
 * (tiers.ts, append-only); bits 24..30 are reserved for entitlements, so the two never
 * collide and `fmask` stays a positive 31-bit integer for every reader. Append, never
 * renumber: these bits are part of the kernel token contract.
 */
export const KERNEL_ENTITLEMENT_BITS: Readonly<Record<string, number>> = {
  'kernel.integrity_monitor': 24,
  'kernel.usb_guard': 25,
  'kernel.exec_allowlist': 26,
};
export const FIRST_ENTITLEMENT_BIT = 24;
export const LAST_ENTITLEMENT_BIT = 30;

export function isEntitlementCode(value: unknown): value is string {
  return typeof value === 'string' && ENTITLEMENT_PATTERN.test(value);
}

/** The `fmask` bits of the entitlements that map to kernel features (others set none). */
export function entitlementMask(entitlements: readonly string[]): number {
  let mask = 0;
  for (const e of entitlements) {
    const bit = Object.hasOwn(KERNEL_ENTITLEMENT_BITS, e) ? KERNEL_ENTITLEMENT_BITS[e] : undefined;
    if (bit !== undefined) mask |= 1 << bit;
  }
  return mask >>> 0;
}

/** A set of codes in one canonical order (sorted, deduplicated). */
export function canonicalEntitlements(codes: readonly string[]): string[] {
  return [...new Set(codes)].sort();
}
