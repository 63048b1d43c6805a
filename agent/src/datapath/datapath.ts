/**
 * The typed wrapper over the native datapath: the only way the agent reaches the eBPF
 * segmentation programs. Validates every argument before it reaches C++, serialises
 * operations (so applies land in call order), and maps native failures to DatapathErrors.
 */
import { statSync, statfsSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { formatAddr, inspectPolicyRules, MAX_RULES_PER_SERVICE } from '../../../protocol/src/index.js';
import type { CheckedRules, DatapathMode, FlowReason } from '../../../protocol/src/index.js';
import {
  CFG_FAIL_CLOSED,
  DIR_EGRESS,
  DIR_INGRESS,
  eventReasonOf,
  eventVerdictOf,
  modeName,
  modeNumber,
  protoName,
  reasonOf,
  ruleOf,
  type FlowVerdict,
  type VerdictReason,
} from './abi.js';
import { loadAddon } from './addon.js';
import type { NativeAddon, NativeDatapath, NativeFlowEvent, NativeServiceStats } from './addon.js';
import { BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC, cgroup2Mount } from './cgroup.js';
import {
  AddonUnavailableError,
  CgroupNotFoundError,
  DatapathClosedError,
  DatapathError,
  InvalidArgumentError,
  InvalidPolicyError,
  SnapshotTooLargeError,
  fromNative,
} from './errors.js';
import { checkServiceId, encodeCheckedRules } from './rules.js';
import type { PolicyRules } from './rules.js';

export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/aegis';

export type Direction = 'egress' | 'ingress';
export type ExpiryBehaviour = 'fail-open' | 'fail-closed';

export interface OpenOptions {
  /** bpffs directory for pins; default /sys/fs/bpf/aegis. Tests use their own. */
  pinRoot?: string;
  /** Flow events per second per CPU before the kernel starts counting them as lost. */
  flowEventsPerSecond?: number;
  /** Token bucket size for flow events (per CPU). */
  flowEventBurst?: number;
  /** Events for allowed new flows per second per CPU: a budget of their own, so allowed
   * traffic never suppresses denial events. 0 turns allowed events off. */
  allowedFlowEventsPerSecond?: number;
  /** Token bucket size for allowed-flow events (per CPU). */
  allowedFlowEventBurst?: number;
  /** How long an allowed UDP flow keeps its return path open after its last packet. */
  udpFlowTimeoutSeconds?: number;
  /** Attach the connect4/6 and sendmsg4/6 programs that fail a denied connect or sendto
   * with EPERM at once (default true; used when the kernel has them). false: skb-only. */
  connectHooks?: boolean;
}

export interface ApplyOptions {
  mode: DatapathMode;
  /** When the policy stops being valid (Date, or ms since the epoch); null: never. */
  expiresAt: Date | number | null;
  /** Monotonic revision of this policy, reported back by stats() and flow events. */
  generation: number;
  /** What an expired policy does until it is renewed or withdrawn. Default fail-open
   * (the agent withdraws expired snapshots; the kernel check is the backstop). */
  onExpiry?: ExpiryBehaviour;
}

export interface ApplyResult {
  rules: number;
  /** Time to build the new trie beside the old one. */
  buildMs: number;
  /** Time of the single outer-map update that swapped it in. */
  swapUs: number;
}

export interface ServiceCounters {
  allowed: number;
  dropped: number;
  wouldDrop: number;
  bypassed: number;
  replies: number;
  expired: number;
  events: number;
  eventsLost: number;
  /** Tracked flows a policy of another generation no longer allowed (enforce: dropped). */
  cut: number;
  /** Packets whose headers could not be walked (also counted in dropped / wouldDrop). */
  unparsed: number;
  /** New flows the full per-rule counter map could not count. */
  ruleCountsLost: number;
}

/** New flows of a service per deciding rule, under the policy generation in force. */
export interface RuleCounters {
  serviceId: number;
  /** Generation of the policy in force; null (and no counts) without one. */
  generation: number | null;
  /** Per rule entry: direction and index in the snapshot's edges / allow_cidrs. */
  rules: Array<{ direction: Direction; index: number; count: number }>;
  /** New flows no rule allowed (denied, or would-drop in observe). */
  noRule: number;
}

export interface ServicePolicyState {
  mode: DatapathMode;
  onExpiry: ExpiryBehaviour;
  /** CLOCK_MONOTONIC ns of expiry, or null for never. */
  expiresMonotonicNs: bigint | null;
  expired: boolean;
  generation: number;
  rules: number;
}

export interface ServiceStats {
  serviceId: number;
  cgroupIds: bigint[];
  policy: ServicePolicyState | null;
  counters: ServiceCounters | null;
}

export interface FlowEvent {
  serviceId: number;
  direction: Direction;
  verdict: FlowVerdict;
  /** Index of the deciding entry in the snapshot's edges (egress) or allow_cidrs (ingress); null: no rule. */
  rule: number | null;
  reason: FlowReason;
  proto: 'tcp' | 'udp' | number;
  family: 4 | 6;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  generation: number;
  monotonicNs: bigint;
}

export interface TestVerdict {
  verdict: 'pass' | 'drop';
  reason: VerdictReason;
  /** Average program run time per packet reported by BPF_PROG_TEST_RUN. */
  nsPerPacket: number;
}

export interface ProbeResult {
  ok: boolean;
  /** Why BPF enforcement is not usable here (empty when ok). */
  reasons: string[];
  kernel: string;
  cgroup2Mount: string | null;
  bpffs: boolean;
  features: { cgroupSkb: boolean; lpmTrie: boolean; hashOfMaps: boolean; ringbuf: boolean; sockAddr: boolean } | null;
  /** What works in a reduced form (enforcement still holds): e.g. no connect-time hooks,
   * so a denied connect is dropped at the packet level and waits for its timeout. */
  degraded: string[];
}

/** Why the datapath runs without connect-time hooks on a kernel lacking cgroup sock_addr programs. */
export const NO_CONNECT_HOOKS_REASON =
  'kernel lacks cgroup sock_addr programs (connect4/6, sendmsg4/6): enforcement is skb-only, ' +
  'a denied connect is dropped at the packet level and waits for its timeout instead of failing with EPERM';

/**
 * Checks the rule lists of a policy with protocol's MapSnapshot checker (the one the
 * server and the control API use) and returns them typed, or throws: InvalidPolicyError
 * listing every problem (JSON Pointer paths such as `/edges/0/dst_cidr`), or
 * SnapshotTooLargeError when the entries are fine but need more than `capacity` rules.
 */
export function checkPolicyRules(snapshot: unknown, capacity: number = MAX_RULES_PER_SERVICE, entries?: CheckedRules): PolicyRules {
  const r = inspectPolicyRules(snapshot, capacity, entries);
  if (r.overCapacity && r.problems.length === 1) throw new SnapshotTooLargeError(r.rules, r.capacity);
  if (r.problems.length > 0) throw new InvalidPolicyError(r.problems);
  return snapshot as PolicyRules;
}

function isOnFs(path: string, magic: number): boolean {
  try {
    return statfsSync(path).type === magic;
  } catch {
    return false;
  }
}

/** Nearest existing ancestor of `path` (the pin root may not exist yet). */
function existingAncestor(path: string): string {
  let p = resolve(path);
  for (;;) {
    try {
      statSync(p);
      return p;
    } catch {
      const up = dirname(p);
      if (up === p) return p;
      p = up;
    }
  }
}

/** Is BPF enforcement usable on this host, and if not, why. Never throws. */
export async function probe(opts: { pinRoot?: string } = {}): Promise<ProbeResult> {
  const reasons: string[] = [];
  const mount = cgroup2Mount();
  if (mount === null) reasons.push('no cgroup v2 hierarchy is mounted (cgroup_skb programs attach to cgroup v2)');
  const pinParent = existingAncestor(opts.pinRoot ?? DEFAULT_PIN_ROOT);
  const bpffs = isOnFs(pinParent, BPF_FS_MAGIC);
  if (!bpffs) reasons.push(`${pinParent} is not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)`);
  const degraded: string[] = [];
  let features: ProbeResult['features'] = null;
  let addon: NativeAddon | undefined;
  try {
    addon = loadAddon();
  } catch (e) {
    reasons.push((e as Error).message);
  }
  if (addon) {
    const f = await addon.probe();
    features = {
      cgroupSkb: f.progCgroupSkb,
      lpmTrie: f.mapLpmTrie,
      hashOfMaps: f.mapHashOfMaps,
      ringbuf: f.mapRingbuf,
      sockAddr: f.progCgroupSockAddr,
    };
    if (f.errno === 1 || f.errno === 13) {
      features = null;
      reasons.push('not allowed to use bpf(): run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)');
    } else if (f.errno !== 0) {
      features = null;
      reasons.push(`bpf() failed with errno ${f.errno}: is BPF enabled in this kernel (${release()})?`);
    } else {
      // sockAddr is optional: without it the packet programs alone enforce.
      const missing = Object.entries(features)
        .filter(([k, v]) => !v && k !== 'sockAddr')
        .map(([k]) => k);
      if (missing.length > 0) reasons.push(`kernel ${release()} lacks BPF features: ${missing.join(', ')}`);
      if (!features.sockAddr) degraded.push(`${NO_CONNECT_HOOKS_REASON} (kernel ${release()})`);
    }
  }
  return { ok: reasons.length === 0, reasons, kernel: release(), cgroup2Mount: mount, bpffs, features, degraded };
}

function toMonotonicNs(addon: NativeAddon, expiresAt: Date | number | null): bigint {
  if (expiresAt === null) return 0n;
  const ms = expiresAt instanceof Date ? expiresAt.getTime() : expiresAt;
  const ns = addon.monotonicNs() + BigInt(Math.round((ms - Date.now()) * 1e6));
  // 0 means "never"; an instant before boot is simply "already expired".
  return ns > 0n ? ns : 1n;
}

function checkApplyOptions(o: ApplyOptions): void {
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError('apply options are required');
  if (o.mode !== 'observe' && o.mode !== 'enforce') {
    throw new InvalidArgumentError(`mode must be "observe" or "enforce", got ${JSON.stringify(o.mode)}`);
  }
  if (o.onExpiry !== undefined && o.onExpiry !== 'fail-open' && o.onExpiry !== 'fail-closed') {
    throw new InvalidArgumentError(`onExpiry must be "fail-open" or "fail-closed", got ${JSON.stringify(o.onExpiry)}`);
  }
  if (!Number.isSafeInteger(o.generation) || o.generation < 0) {
    throw new InvalidArgumentError(`generation must be a non-negative integer, got ${JSON.stringify(o.generation)}`);
  }
  const e = o.expiresAt;
  const okExpiry =
    e === null || (e instanceof Date && !Number.isNaN(e.getTime())) || (typeof e === 'number' && Number.isFinite(e));
  if (!okExpiry) throw new InvalidArgumentError('expiresAt must be a Date, milliseconds since the epoch, or null');
}

function checkPositive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 1e9) {
    throw new InvalidArgumentError(`${name} must be an integer from 0 to 1e9, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Validates a cgroup directory: exists, is cgroup v2, is not the hierarchy's root. */
function checkCgroupPath(path: unknown): string {
  if (typeof path !== 'string' || path.length === 0 || !isAbsolute(path)) {
    throw new InvalidArgumentError(`cgroup path must be an absolute path, got ${JSON.stringify(path)}`);
  }
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new CgroupNotFoundError(path, 'does not exist (create the service cgroup first)', { cause: e });
  }
  if (!st.isDirectory()) throw new CgroupNotFoundError(path, 'is not a directory');
  if (!isOnFs(path, CGROUP2_SUPER_MAGIC)) {
    throw new CgroupNotFoundError(path, `is not in the cgroup v2 hierarchy (mounted at ${cgroup2Mount() ?? 'nowhere'})`);
  }
  const root = cgroup2Mount();
  if (root !== null && resolve(path) === resolve(root)) {
    throw new InvalidArgumentError(`refusing to bind the cgroup v2 root ${path}: it holds every process on the host`);
  }
  return path;
}

function ipText(family: number, addr: Buffer): string {
  return family === 4 ? formatAddr(4, addr.subarray(12, 16)) : formatAddr(6, addr);
}

/** An open datapath: one per pin root. Obtain with open(). */
export class Datapath {
  readonly pinRoot: string;
  /** Whether bound cgroups get the connect/sendmsg hooks (denied connects fail with EPERM). */
  readonly connectHooks: boolean;
  /** Why they are off; empty when connectHooks is true. */
  readonly connectHooksReason: string;
  /**
   * Layout of an older build whose pins were found under the root (null: none). Its
   * programs keep enforcing beside this layout's until retireOlderLayout().
   */
  get olderLayout(): number | null {
    return this.#olderLayout;
  }
  #olderLayout: number | null;
  #addon: NativeAddon;
  #native: NativeDatapath | null;
  #queue: Promise<unknown> = Promise.resolve();
  #listeners = new Set<(e: FlowEvent) => void>();

  /** @internal use open() */
  constructor(addon: NativeAddon, native: NativeDatapath, pinRoot: string, hooks: { connectHooks: boolean; connectHooksReason: string; olderLayout: number }) {
    this.#olderLayout = hooks.olderLayout > 0 ? hooks.olderLayout : null;
    this.#addon = addon;
    this.#native = native;
    this.pinRoot = pinRoot;
    this.connectHooks = hooks.connectHooks;
    this.connectHooksReason = hooks.connectHooksReason;
  }

  /** Runs `fn` after every earlier operation, so calls take effect in call order. */
  #serial<T>(what: string, fn: (n: NativeDatapath) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      const n = this.#native;
      if (n === null) throw new DatapathClosedError();
      try {
        return await fn(n);
      } catch (e) {
        throw fromNative(e, what);
      }
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  /**
   * Binds a service to its cgroup: the egress and ingress programs (and, with
   * connectHooks, the connect4/6 and sendmsg4/6 programs) are attached to the cgroup
   * through pinned links. Idempotent; binding a service to a new cgroup moves it.
   */
  async bindService(serviceId: number, cgroupPath: string): Promise<{ cgroupId: bigint }> {
    const id = checkServiceId(serviceId);
    const path = checkCgroupPath(cgroupPath);
    return this.#serial(`bind service ${id} to ${path}`, async (n) => {
      try {
        const r = await n.bind(id, path);
        return { cgroupId: r.cgroupId };
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOENT') {
          throw new CgroupNotFoundError(path, 'disappeared while binding', { cause: e });
        }
        throw e;
      }
    });
  }

  /**
   * Replaces the policy of a service: a new rule trie is built beside the one in force and
   * swapped in with one map update. On any error the policy in force is unchanged.
   */
  async apply(serviceId: number, snapshot: PolicyRules, opts: ApplyOptions): Promise<ApplyResult> {
    const id = checkServiceId(serviceId);
    checkApplyOptions(opts);
    if (snapshot !== null && typeof snapshot === 'object' && snapshot.service_id !== undefined && snapshot.service_id !== id) {
      throw new InvalidArgumentError(`snapshot is for service ${String(snapshot.service_id)}, not ${id}`);
    }
    // One pass of the checker; the encoder reuses what it parsed.
    const entries: CheckedRules = { edges: [], allow_cidrs: [] };
    checkPolicyRules(snapshot, Math.min(MAX_RULES_PER_SERVICE, this.#addon.maxRules), entries);
    const enc = encodeCheckedRules(entries);
    const mode = modeNumber(opts.mode);
    const flags = opts.onExpiry === 'fail-closed' ? CFG_FAIL_CLOSED : 0;
    return this.#serial(`apply policy of service ${id}`, async (n) => {
      const expires = toMonotonicNs(this.#addon, opts.expiresAt);
      const r = await n.apply(id, enc.buffer, mode, flags, expires, BigInt(opts.generation));
      return { rules: r.rules, buildMs: Number(r.buildNs) / 1e6, swapUs: Number(r.swapNs) / 1e3 };
    });
  }

  /** Removes a service's policy: its traffic passes untouched. Returns false if it had none. */
  async withdraw(serviceId: number): Promise<boolean> {
    const id = checkServiceId(serviceId);
    return this.#serial(`withdraw policy of service ${id}`, (n) => n.withdraw(id));
  }

  /** Bindings, policy state and counters of every known service. */
  async stats(): Promise<ServiceStats[]> {
    return this.#serial('read datapath stats', async (n) => {
      const raw = await n.stats();
      const now = this.#addon.monotonicNs();
      return raw.map((s) => this.#convertStats(s, now)).sort((a, b) => a.serviceId - b.serviceId);
    });
  }

  #convertStats(s: NativeServiceStats, now: bigint): ServiceStats {
    const p = s.policy;
    const c = s.counters;
    return {
      serviceId: s.serviceId,
      cgroupIds: s.cgroupIds,
      policy:
        p === null
          ? null
          : {
              mode: modeName(p.mode),
              onExpiry: (p.flags & CFG_FAIL_CLOSED) !== 0 ? 'fail-closed' : 'fail-open',
              expiresMonotonicNs: p.expiresNs === 0n ? null : p.expiresNs,
              expired: p.expiresNs !== 0n && now >= p.expiresNs,
              generation: Number(p.generation),
              rules: p.rules,
            },
      counters:
        c === null
          ? null
          : {
              allowed: Number(c.allowed),
              dropped: Number(c.dropped),
              wouldDrop: Number(c.wouldDrop),
              bypassed: Number(c.bypassed),
              replies: Number(c.replies),
              expired: Number(c.expired),
              events: Number(c.events),
              eventsLost: Number(c.eventsLost),
              cut: Number(c.cut),
              unparsed: Number(c.unparsed),
              ruleCountsLost: Number(c.ruleCountsLost),
            },
    };
  }

  /**
   * New flows of a service per deciding rule since its policy generation was applied
   * (counts of an earlier generation are never shown: they index another rule list).
   */
  async ruleCounters(serviceId: number): Promise<RuleCounters> {
    const id = checkServiceId(serviceId);
    return this.#serial(`read rule counters of service ${id}`, async (n) => {
      const policy = (await n.stats()).find((s) => s.serviceId === id)?.policy ?? null;
      const out: RuleCounters = { serviceId: id, generation: policy ? Number(policy.generation) : null, rules: [], noRule: 0 };
      if (policy === null) return out;
      for (const r of await n.ruleCounters(id)) {
        if (r.generation !== policy.generation) continue;
        const rule = ruleOf(r.ruleId);
        if (rule === null) out.noRule += Number(r.count);
        else out.rules.push({ direction: rule.direction, index: rule.index, count: Number(r.count) });
      }
      out.rules.sort((a, b) => (a.direction === b.direction ? a.index - b.index : a.direction === 'egress' ? -1 : 1));
      return out;
    });
  }

  /**
   * Subscribes to flow verdicts: allowed new flows (with their rule), denials, would-drops,
   * cuts and unparsed drops (rate-capped in the kernel, allowed ones on a budget of their
   * own; what the caps suppress shows in counters.eventsLost). Returns the unsubscribe function.
   */
  onFlow(callback: (e: FlowEvent) => void): () => void {
    if (typeof callback !== 'function') throw new InvalidArgumentError('onFlow needs a callback');
    const n = this.#native;
    if (n === null) throw new DatapathClosedError();
    if (this.#listeners.size === 0) {
      try {
        n.startEvents((e) => this.#dispatch(e));
      } catch (e) {
        throw fromNative(e, 'subscribe to flow events');
      }
    }
    this.#listeners.add(callback);
    return () => {
      this.#listeners.delete(callback);
      if (this.#listeners.size === 0 && this.#native !== null) this.#native.stopEvents();
    };
  }

  #dispatch(raw: NativeFlowEvent): void {
    const e: FlowEvent = {
      serviceId: raw.serviceId,
      direction: raw.direction === DIR_INGRESS ? 'ingress' : 'egress',
      verdict: eventVerdictOf(raw.verdict),
      rule: ruleOf(raw.ruleId)?.index ?? null,
      reason: eventReasonOf(raw.reason),
      proto: protoName(raw.proto),
      family: raw.family === 4 ? 4 : 6,
      src: ipText(raw.family, raw.saddr),
      dst: ipText(raw.family, raw.daddr),
      sport: raw.sport,
      dport: raw.dport,
      generation: Number(raw.generation),
      monotonicNs: raw.tsNs,
    };
    for (const l of [...this.#listeners]) {
      try {
        l(e);
      } catch (err) {
        // A listener's bug must not stop delivery to the others; surface it once.
        process.emitWarning(`flow listener threw: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Runs one packet (an L3 IPv4/IPv6 packet, see buildPacket) through the egress or ingress
   * program with BPF_PROG_TEST_RUN, as if it belonged to `serviceId` (or, without it, to this
   * process's own cgroup). Uses a never-attached copy of the programs that shares the maps.
   */
  async testVerdict(
    direction: Direction,
    packet: Buffer,
    opts: { serviceId?: number; repeat?: number } = {},
  ): Promise<TestVerdict> {
    if (direction !== 'egress' && direction !== 'ingress') {
      throw new InvalidArgumentError(`direction must be "egress" or "ingress", got ${JSON.stringify(direction)}`);
    }
    if (!Buffer.isBuffer(packet) || packet.length < 20 || packet.length > 65535) {
      throw new InvalidArgumentError('packet must be a Buffer holding an IPv4 or IPv6 packet');
    }
    const svc = opts.serviceId === undefined ? -1 : checkServiceId(opts.serviceId);
    const repeat = opts.repeat ?? 1;
    if (!Number.isInteger(repeat) || repeat < 1 || repeat > 100_000_000) {
      throw new InvalidArgumentError('repeat must be an integer from 1 to 1e8');
    }
    const dir = direction === 'egress' ? DIR_EGRESS : DIR_INGRESS;
    return this.#serial('run a test packet', async (n) => {
      const r = await n.testRun(dir, svc, packet, repeat);
      return { verdict: r.retval === 1 ? 'pass' : 'drop', reason: reasonOf(r.reason), nsPerPacket: r.durationNs };
    });
  }

  /** Releases this process's handles. Pins stay: enforcement continues without us. */
  async close(): Promise<void> {
    const n = this.#native;
    if (n === null) return;
    this.#listeners.clear();
    await this.#serial('close the datapath', (x) => x.close());
    this.#native = null;
  }

  /** Detaches every link and removes every pin of this pin root: enforcement stops. */
  /**
   * Ends an upgrade from an older layout: detaches its programs and removes its pins.
   * Call once this layout has every configured service bound and its policy applied;
   * until then both layouts judge each packet, so the upgrade never leaves a gap.
   * Resolves to the number of old links detached (0 when there was no older layout).
   */
  async retireOlderLayout(): Promise<number> {
    if (this.#olderLayout === null) return 0;
    const n = await this.#serial('retire the older datapath layout', (x) => x.retireOlderLayout());
    this.#olderLayout = null;
    return n;
  }

  async purge(): Promise<void> {
    const n = this.#native;
    if (n === null) {
      await purgePins(this.pinRoot);
      return;
    }
    this.#listeners.clear();
    await this.#serial('purge the datapath pins', (x) => x.purge());
    this.#native = null;
  }
}

/**
 * Opens (or creates) the datapath pinned under `pinRoot`: loads the programs, reuses the
 * pinned maps of an earlier run, and checks the layout marker. Enforcement set up by an
 * earlier process keeps running throughout.
 */
export async function open(opts: OpenOptions = {}): Promise<Datapath> {
  const pinRoot = opts.pinRoot ?? DEFAULT_PIN_ROOT;
  if (typeof pinRoot !== 'string' || !isAbsolute(pinRoot)) {
    throw new InvalidArgumentError(`pinRoot must be an absolute path, got ${JSON.stringify(pinRoot)}`);
  }
  const rate = checkPositive('flowEventsPerSecond', opts.flowEventsPerSecond, 200);
  const burst = checkPositive('flowEventBurst', opts.flowEventBurst, Math.max(rate * 2, 1));
  const udpTimeout = checkPositive('udpFlowTimeoutSeconds', opts.udpFlowTimeoutSeconds, 120);
  const allowedRate = checkPositive('allowedFlowEventsPerSecond', opts.allowedFlowEventsPerSecond, 200);
  const allowedBurst = checkPositive('allowedFlowEventBurst', opts.allowedFlowEventBurst, Math.max(allowedRate * 2, 1));
  let addon: NativeAddon;
  try {
    addon = loadAddon();
  } catch (e) {
    if (e instanceof AddonUnavailableError) throw e;
    throw new AddonUnavailableError((e as Error).message, { cause: e });
  }
  if (opts.connectHooks !== undefined && typeof opts.connectHooks !== 'boolean') {
    throw new InvalidArgumentError(`connectHooks must be a boolean, got ${JSON.stringify(opts.connectHooks)}`);
  }
  const native = new addon.Datapath();
  let hooks: { connectHooks: boolean; connectHooksReason: string; olderLayout: number };
  try {
    hooks = await native.open(pinRoot, BigInt(rate), BigInt(burst), BigInt(udpTimeout) * 1_000_000_000n, opts.connectHooks ?? true, BigInt(allowedRate), BigInt(allowedBurst));
  } catch (e) {
    throw fromNative(e, `open datapath at ${pinRoot}`);
  }
  return new Datapath(addon, native, pinRoot, hooks);
}

/** Removes the pins of this layout under `pinRoot` without opening it (operator clean-up). */
export async function purgePins(pinRoot: string = DEFAULT_PIN_ROOT): Promise<void> {
  if (typeof pinRoot !== 'string' || !isAbsolute(pinRoot)) {
    throw new InvalidArgumentError(`pinRoot must be an absolute path, got ${JSON.stringify(pinRoot)}`);
  }
  try {
    await loadAddon().purgePins(pinRoot);
  } catch (e) {
    if (e instanceof DatapathError) throw e;
    throw fromNative(e, `purge pins under ${pinRoot}`);
  }
}
