/**
 * agent/src/datapath: the only entry to the native addon (eBPF datapath, atomic token
 * writer, sd_notify, Unix socket peer credentials). Import from here, never from the
 * addon or the files beside this one.
 */
export { DEFAULT_PIN_ROOT, Datapath, checkPolicyRules, open, probe, purgePins } from './datapath.js';
export { MAX_SERVICES, RULE_NONE } from './abi.js';
export type { FlowVerdict, VerdictReason } from './abi.js';
export type {
  ApplyOptions,
  ApplyResult,
  Direction,
  ExpiryBehaviour,
  FlowEvent,
  OpenOptions,
  ProbeResult,
  RuleCounters,
  ServiceCounters,
  ServicePolicyState,
  ServiceStats,
  TestVerdict,
} from './datapath.js';
export type { PolicyRules } from './rules.js';
export { encodeRules, MAX_SERVICE_ID } from './rules.js';
export { buildPacket, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from './packet.js';
export type { PacketSpec } from './packet.js';
export { cgroup2Mount, cgroupPathOfPid } from './cgroup.js';
export { writeFileAtomic } from './token_file.js';
export { sdNotify, formatNotifyState } from './notify.js';
export { peerCredentials } from './peer_credentials.js';
export type { PeerCredentials } from './peer_credentials.js';
export type { NotifyState } from './notify.js';
export {
  AddonUnavailableError,
  BpfLoadError,
  BpfUnavailableError,
  CgroupAlreadyBoundError,
  CgroupNotFoundError,
  DatapathClosedError,
  DatapathError,
  IncompatiblePinError,
  InvalidArgumentError,
  InvalidPolicyError,
  KernelError,
  NotifyError,
  PeerCredentialsError,
  SnapshotTooLargeError,
  TokenWriteError,
} from './errors.js';
export type { DatapathErrorCode, PolicyProblem } from './errors.js';
