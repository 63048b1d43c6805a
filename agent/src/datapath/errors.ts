/**
 * Errors of the datapath module. Every failure the wrapper raises is a DatapathError with
 * a stable `code`; failures that came from the native addon keep it as `cause` and copy
 * its errno, native code and operation (and libbpf's verifier log when a load failed).
 */

export type DatapathErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_POLICY'
  | 'SNAPSHOT_TOO_LARGE'
  | 'CGROUP_NOT_FOUND'
  | 'CGROUP_ALREADY_BOUND'
  | 'INCOMPATIBLE_PIN'
  | 'BPF_UNAVAILABLE'
  | 'BPF_LOAD_FAILED'
  | 'ADDON_UNAVAILABLE'
  | 'DATAPATH_CLOSED'
  | 'KERNEL_ERROR'
  | 'TOKEN_WRITE_FAILED'
  | 'NOTIFY_FAILED'
  | 'PEER_CREDENTIALS_FAILED';

/** What the addon attaches to the Errors it rejects with. */
export interface NativeErrorFields {
  errno?: number;
  code?: string;
  op?: string;
  verifierLog?: string;
}

export class DatapathError extends Error {
  readonly code: DatapathErrorCode;
  /** errno of the failed system call, when there was one. */
  readonly errno: number | undefined;
  /** The addon's own code (an errno name like `EPERM`, or e.g. `EINCOMPATIBLE_PIN`). */
  readonly nativeCode: string | undefined;
  /** The operation that failed (`bpf_object__load`, `bpf_link_create`, `rename`, ...). */
  readonly op: string | undefined;

  constructor(code: DatapathErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DatapathError';
    this.code = code;
    const n = nativeFields(options.cause);
    this.errno = n?.errno;
    this.nativeCode = n?.code;
    this.op = n?.op;
  }
}

/** One problem found while validating a snapshot or an argument. */
export interface PolicyProblem {
  path: string;
  message: string;
}

export class InvalidArgumentError extends DatapathError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
    this.name = 'InvalidArgumentError';
  }
}

export class InvalidPolicyError extends DatapathError {
  readonly problems: PolicyProblem[];

  constructor(problems: PolicyProblem[]) {
    const shown = problems.slice(0, 5).map((p) => `${p.path}: ${p.message}`);
    const more = problems.length > 5 ? ` (and ${problems.length - 5} more)` : '';
    super('INVALID_POLICY', `invalid policy: ${shown.join('; ')}${more}`);
    this.name = 'InvalidPolicyError';
    this.problems = problems;
  }
}

export class SnapshotTooLargeError extends DatapathError {
  readonly rules: number;
  readonly capacity: number;

  constructor(rules: number, capacity: number) {
    super(
      'SNAPSHOT_TOO_LARGE',
      `snapshot needs ${rules} rules (after expanding proto "any" into tcp and udp) but a service holds at most ${capacity}`,
    );
    this.name = 'SnapshotTooLargeError';
    this.rules = rules;
    this.capacity = capacity;
  }
}

export class CgroupNotFoundError extends DatapathError {
  readonly path: string;

  constructor(path: string, reason: string, options: { cause?: unknown } = {}) {
    super('CGROUP_NOT_FOUND', `cgroup ${path}: ${reason}`, options);
    this.name = 'CgroupNotFoundError';
    this.path = path;
  }
}

export class CgroupAlreadyBoundError extends DatapathError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('CGROUP_ALREADY_BOUND', message, options);
    this.name = 'CgroupAlreadyBoundError';
  }
}

export class IncompatiblePinError extends DatapathError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('INCOMPATIBLE_PIN', message, options);
    this.name = 'IncompatiblePinError';
  }
}

export class BpfUnavailableError extends DatapathError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('BPF_UNAVAILABLE', message, options);
    this.name = 'BpfUnavailableError';
  }
}

export class BpfLoadError extends DatapathError {
  /** libbpf's output while loading, including the kernel verifier's log. */
  readonly verifierLog: string;

  constructor(message: string, verifierLog: string, options: { cause?: unknown } = {}) {
    super('BPF_LOAD_FAILED', message, options);
    this.name = 'BpfLoadError';
    this.verifierLog = verifierLog;
  }
}

export class AddonUnavailableError extends DatapathError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('ADDON_UNAVAILABLE', message, options);
    this.name = 'AddonUnavailableError';
  }
}

export class DatapathClosedError extends DatapathError {
  constructor(options: { cause?: unknown } = {}) {
    super('DATAPATH_CLOSED', 'the datapath is closed; open it again', options);
    this.name = 'DatapathClosedError';
  }
}

export class KernelError extends DatapathError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('KERNEL_ERROR', message, options);
    this.name = 'KernelError';
  }
}

export class TokenWriteError extends DatapathError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('TOKEN_WRITE_FAILED', message, options);
    this.name = 'TokenWriteError';
  }
}

export class NotifyError extends DatapathError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('NOTIFY_FAILED', message, options);
    this.name = 'NotifyError';
  }
}

/** The kernel would not say who is on the other end of a Unix socket (SO_PEERCRED). */
export class PeerCredentialsError extends DatapathError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('PEER_CREDENTIALS_FAILED', message, options);
    this.name = 'PeerCredentialsError';
  }
}

export function nativeFields(e: unknown): NativeErrorFields | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const o = e as Record<string, unknown>;
  return {
    errno: typeof o.errno === 'number' ? o.errno : undefined,
    code: typeof o.code === 'string' ? o.code : undefined,
    op: typeof o.op === 'string' ? o.op : undefined,
    verifierLog: typeof o.verifierLog === 'string' ? o.verifierLog : undefined,
  };
}

/**
 * Maps an error rejected by the addon's datapath to the matching DatapathError, once, at
 * the boundary. `what` says what was being attempted, for the message.
 */
export function fromNative(e: unknown, what: string): DatapathError {
  if (e instanceof DatapathError) return e;
  const n = nativeFields(e);
  const msg = e instanceof Error ? e.message : String(e);
  const text = `${what}: ${msg}`;
  switch (n?.code) {
    case 'EINCOMPATIBLE_PIN':
      return new IncompatiblePinError(text, { cause: e });
    case 'EBPF_LOAD':
      return new BpfLoadError(text, n.verifierLog ?? '', { cause: e });
    case 'ENOTBPFFS':
      return new BpfUnavailableError(text, { cause: e });
    case 'EPERM':
    case 'EACCES':
      // Refused at load time means missing privileges; later EPERMs are specific failures.
      if (n.op === 'bpf_object__load' || n.op === 'bpf_map_create') {
        return new BpfUnavailableError(`${text} (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)`, {
          cause: e,
        });
      }
      return new KernelError(text, { cause: e });
    case 'ECLOSED':
      return new DatapathClosedError({ cause: e });
    case 'ECGROUP_BOUND':
      return new CgroupAlreadyBoundError(text, { cause: e });
    case 'E2BIG':
      return new KernelError(`${text} (kernel capacity reached)`, { cause: e });
    default:
      return new KernelError(text, { cause: e });
  }
}
