/**
 * Loads the native addon (build/Release/aegis.node) and describes its surface. Only this
 * directory imports it; everything else goes through the typed wrappers beside it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AddonUnavailableError } from './errors.js';

export interface NativeCounters {
  allowed: bigint;
  dropped: bigint;
  wouldDrop: bigint;
  bypassed: bigint;
  replies: bigint;
  expired: bigint;
  eventsLost: bigint;
  events: bigint;
  cut: bigint;
  unparsed: bigint;
  ruleCountsLost: bigint;
}

export interface NativeServiceStats {
  serviceId: number;
  cgroupIds: bigint[];
  policy: { mode: number; flags: number; expiresNs: bigint; generation: bigint; rules: number } | null;
  counters: NativeCounters | null;
}

export interface NativeFlowEvent {
  tsNs: bigint;
  generation: bigint;
  serviceId: number;
  direction: number;
  verdict: number;
  proto: number;
  family: number;
  sport: number;
  dport: number;
  saddr: Buffer;
  daddr: Buffer;
  ruleId: number;
  reason: number;
}

export interface NativeDatapath {
  open(
    pinRoot: string,
    eventRate: bigint,
    eventBurst: bigint,
    udpFlowTimeoutNs: bigint,
    connectHooks: boolean,
    allowedEventRate: bigint,
    allowedEventBurst: bigint,
  ): Promise<{ connectHooks: boolean; connectHooksReason: string; olderLayout: number }>;
  bind(serviceId: number, cgroupPath: string): Promise<{ cgroupId: bigint; relinked: boolean; rebound: boolean }>;
  apply(
    serviceId: number,
    rules: Buffer,
    mode: number,
    flags: number,
    expiresNs: bigint,
    generation: bigint,
  ): Promise<{ rules: number; buildNs: bigint; swapNs: bigint }>;
  withdraw(serviceId: number): Promise<boolean>;
  stats(): Promise<NativeServiceStats[]>;
  ruleCounters(serviceId: number): Promise<Array<{ ruleId: number; generation: bigint; count: bigint }>>;
  testRun(dir: number, serviceId: number, packet: Buffer, repeat: number): Promise<{ retval: number; reason: number; durationNs: number }>;
  startEvents(cb: (e: NativeFlowEvent) => void): void;
  stopEvents(): void;
  close(): Promise<void>;
  purge(): Promise<void>;
  /** Detaches and unpins an older layout's pins under the root; resolves to the links detached. */
  retireOlderLayout(): Promise<number>;
}

export interface NativeAddon {
  Datapath: new () => NativeDatapath;
  probe(): Promise<{
    progCgroupSkb: boolean;
    mapLpmTrie: boolean;
    mapHashOfMaps: boolean;
    mapRingbuf: boolean;
    progCgroupSockAddr: boolean;
    errno: number;
  }>;
  monotonicNs(): bigint;
  purgePins(pinRoot: string): Promise<void>;
  writeFileAtomic(path: string, data: Buffer, mode: number): Promise<void>;
  notify(socketPath: string, state: string): Promise<boolean>;
  /** SO_PEERCRED and SO_PEERGROUPS of a connected Unix socket; groups is null on kernels without SO_PEERGROUPS. */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number; groups: number[] | null };
  layoutVersion: number;
  maxRules: number;
  maxServices: number;
  /** The shared constants as the addon was compiled (native/src/abi_constants.h). */
  constants: NativeAbiConstants;
}

export interface NativeAbiConstants {
  /** Every `#define AEGIS_*` of bpf/aegis.h. */
  defines: Record<string, number | string>;
  /** sizeof / offsetof of RuleRecord. */
  ruleRecord: { bytes: number; fields: Record<string, { offset: number; size: number }> };
  /** IPPROTO_TCP / IPPROTO_UDP / IPPROTO_ICMP / IPPROTO_ICMPV6 of <netinet/in.h>. */
  ipproto: { tcp: number; udp: number; icmp: number; icmpv6: number };
}

let cached: NativeAddon | undefined;
let failure: AddonUnavailableError | undefined;

/** Where the addon may live: $AEGIS_ADDON_PATH, else build/Release of the package root. */
export function addonCandidates(): string[] {
  const out: string[] = [];
  if (process.env.AEGIS_ADDON_PATH) out.push(process.env.AEGIS_ADDON_PATH);
  // From dist/agent/src/datapath (or agent/src/datapath) up to the package root.
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    out.push(join(dir, 'build', 'Release', 'aegis.node'));
    dir = dirname(dir);
  }
  return out;
}

/** The addon, loaded once. Throws AddonUnavailableError saying how to build it. */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  if (failure) throw failure;
  const candidates = addonCandidates();
  const path = candidates.find((p) => existsSync(p));
  if (path === undefined) {
    failure = new AddonUnavailableError(
      'the native addon is not built (looked for build/Release/aegis.node); run `npm run build:addon`',
    );
    throw failure;
  }
  try {
    const require = createRequire(import.meta.url);
    cached = require(path) as NativeAddon;
    return cached;
  } catch (e) {
    failure = new AddonUnavailableError(`cannot load the native addon ${path}: ${(e as Error).message}`, { cause: e });
    throw failure;
  }
}
