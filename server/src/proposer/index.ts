/** Segmenter: proposes segmentation edges from observed flows and plans MapSnapshots. Pure, no I/O. */
export { propose, DEFAULT_MAX_UNSEEN_RATIO, DEFAULT_MIN_COUNT, MAX_FLOWS } from './propose.js';
export type { ObservedFlow, ProposeInput, ProposedEdge, Proposal, ProposeOptions } from './propose.js';
export { plan, DEFAULT_TTL_SECONDS, MIN_TTL_SECONDS, DEFAULT_SNAPSHOT_VERSION } from './plan.js';
export type { PlanInput } from './plan.js';
export { collapsePrefixes, unseenRatio } from './prefix_collapse.js';
export type { CollapsedPrefix, Family } from './prefix_collapse.js';
