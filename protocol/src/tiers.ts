/**
 * Tiers and features. Every feature has a fixed bit in `fmask`, the integer
 * the kernel module reads so it never has to parse feature names to test one.
 * Bits are part of the kernel token contract: append, never renumber.
 */
export const TIERS = ['community', 'basic', 'gamer', 'ai_developer', 'server'] as const;
export type Tier = (typeof TIERS)[number];

/** Tiers that can be sold; `community` is what a host runs without a license. */
export const LICENSED_TIERS = ['basic', 'gamer', 'ai_developer', 'server'] as const;
export type LicensedTier = (typeof LICENSED_TIERS)[number];

export const FEATURE_BITS = {
  basic_features: 0,
  priority_updates: 1,
  gaming_optimizations: 2,
  frame_optimization: 3,
  p2p_tuning: 4,
  container_optimization: 5,
  gpu_management: 6,
  docker_integration: 7,
  rebootless_patching: 8,
  multi_tenant_isolation: 9,
  high_performance_networking: 10,
  ai_server_acceleration: 11,
  segmentation_enforce: 12,
} as const;
export type Feature = keyof typeof FEATURE_BITS;
export const FEATURES = Object.keys(FEATURE_BITS) as Feature[];

export const TIER_FEATURES: Readonly<Record<Tier, readonly Feature[]>> = {
  community: ['basic_features'],
  basic: ['basic_features', 'priority_updates'],
  gamer: ['basic_features', 'priority_updates', 'gaming_optimizations', 'frame_optimization', 'p2p_tuning'],
  ai_developer: ['basic_features', 'priority_updates', 'container_optimization', 'gpu_management', 'docker_integration'],
  server: [
    'basic_features',
    'priority_updates',
    'rebootless_patching',
    'multi_tenant_isolation',
    'high_performance_networking',
    'ai_server_acceleration',
    'segmentation_enforce',
  ],
};

export function isTier(value: unknown): value is Tier {
  return typeof value === 'string' && (TIERS as readonly string[]).includes(value);
}

export function isLicensedTier(value: unknown): value is LicensedTier {
  return typeof value === 'string' && (LICENSED_TIERS as readonly string[]).includes(value);
}

export function isFeature(value: unknown): value is Feature {
  return typeof value === 'string' && Object.hasOwn(FEATURE_BITS, value);
}

/** The feature bitmask carried as `fmask` in the kernel token. */
export function featureMask(features: readonly Feature[]): number {
  let mask = 0;
  for (const f of features) mask |= 1 << FEATURE_BITS[f];
  return mask >>> 0;
}

/** A tier's features plus any extras granted on the license, deduplicated, in bit order. */
export function effectiveFeatures(tier: Tier, extra: readonly Feature[] = []): Feature[] {
  const set = new Set<Feature>([...TIER_FEATURES[tier], ...extra]);
  return FEATURES.filter((f) => set.has(f));
}
