/**
 * Keeps the server's copy of this host's package inventory current: a full report once
 * activated (and after every restart or machine change), then only what changed. The dpkg
 * status file is watched (its directory, since dpkg replaces the file by a rename) and its
 * identity polled on an interval as well, which also rescans the listening sockets. A diff
 * the server cannot apply (CONFLICT: it holds another base) is answered with a full report.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { AUD_AGENT_TOKEN_PROOF, packageKey, signHostProof, type InventoryPackage, type InventoryReport, type ListeningSocket } from '../../../protocol/src/index.js';
import type { LicenseManager } from '../licensing.js';
import type { Logger } from '../logger.js';
import type { ServerLink } from '../server_link.js';
import { ServerError } from '../server_error.js';
import { collectInventory, statusStamp, type InventoryPaths } from './host_inventory.js';

export interface InventoryReporterDeps {
  paths: InventoryPaths;
  link: ServerLink;
  license: LicenseManager;
  log: Logger;
  intervalMs: number;
}

export interface InventoryStatus {
  enabled: boolean;
  dpkg_status_path: string;
  last_sent_at: string | null;
  last_kind: 'full' | 'diff' | null;
  seq: number | null;
  packages: number | null;
  sockets: number | null;
  findings: number | null;
  problems: number;
  last_error: string | null;
}

export class InventoryReporter {
  private sent: { machineId: string; seq: number; packages: Map<string, InventoryPackage>; sockets: string; release: string; stamp: string | null } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private watcher: FSWatcher | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  readonly status: InventoryStatus;

  constructor(private readonly d: InventoryReporterDeps) {
    this.status = { enabled: true, dpkg_status_path: d.paths.dpkgStatus, last_sent_at: null, last_kind: null, seq: null, packages: null, sockets: null, findings: null, problems: 0, last_error: null };
  }

  start(): void {
    try {
      this.watcher = watch(dirname(this.d.paths.dpkgStatus), { persistent: false }, (_event, name) => {
        if (name === null || name === basename(this.d.paths.dpkgStatus)) this.soon();
      });
      this.watcher.on('error', () => this.watcher?.close());
    } catch (e) {
      this.d.log.warn('cannot watch the dpkg status file; its changes are seen at the next poll', { path: this.d.paths.dpkgStatus, error: (e as Error).message });
    }
    this.timer = setInterval(() => this.trigger(), this.d.intervalMs);
    this.timer.unref();
    this.trigger();
  }

  /** A burst of writes (dpkg writes several files) is read once. */
  private soon(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.trigger(), 200);
  }

  /** Runs a check now, or right after the one running. */
  trigger(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.check().catch((e: unknown) => this.failed(e));
      } while (this.again && !this.stopped);
    })().finally(() => (this.running = null));
    return this.running;
  }

  private failed(e: unknown): void {
    const message = (e as Error).message;
    if (this.status.last_error !== message) this.d.log.warn('inventory report failed; retried at the next check', { error: message, code: (e as ServerError).code });
    this.status.last_error = message;
  }

  private async check(): Promise<void> {
    const machineId = this.d.license.machineId;
    const proofMaterial = this.d.license.proofMaterial();
    if (machineId === null || proofMaterial === null) return;
    const stamp = statusStamp(this.d.paths.dpkgStatus);
    const inv = collectInventory(this.d.paths);
    if (inv.problems.length !== this.status.problems) {
      for (const p of inv.problems.slice(0, 20)) this.d.log.warn('dpkg status paragraph skipped', { path: this.d.paths.dpkgStatus, paragraph: p.paragraph, line: p.line, code: p.code, message: p.message });
    }
    this.status.problems = inv.problems.length;
    const sockets = JSON.stringify(inv.sockets);
    const proof = () => signHostProof(proofMaterial.privateKey, { aud: AUD_AGENT_TOKEN_PROOF, hwid: proofMaterial.hardwareId });
    const current = new Map(inv.packages.map((p) => [packageKey(p), p]));
    const prev = this.sent?.machineId === machineId ? this.sent : null;
    let report: InventoryReport;
    if (prev) {
      const upserted = inv.packages.filter((p) => {
        const was = prev.packages.get(packageKey(p));
        return !was || was.version !== p.version || was.source !== p.source || was.source_version !== p.source_version;
      });
      const removed = [...prev.packages.values()].filter((p) => !current.has(packageKey(p))).map((p) => ({ package: p.package, architecture: p.architecture }));
      if (upserted.length === 0 && removed.length === 0 && sockets === prev.sockets && inv.release === prev.release) {
        prev.stamp = stamp;
        return;
      }
      report = { kind: 'diff', seq: prev.seq + 1, base_seq: prev.seq, release: inv.release, upserted, removed, sockets: inv.sockets };
    } else {
      report = this.full(inv.release, inv.packages, inv.sockets);
    }
    let accepted;
    try {
      accepted = await this.d.link.inventory(machineId, proof, report);
    } catch (e) {
      if (!(e instanceof ServerError) || e.code !== 'CONFLICT' || report.kind === 'full') throw e;
      this.d.log.info('the server holds another inventory base; sending the full inventory', { seq: report.seq });
      report = this.full(inv.release, inv.packages, inv.sockets, report.seq);
      accepted = await this.d.link.inventory(machineId, proof, report);
    }
    this.sent = { machineId, seq: report.seq, packages: current, sockets, release: inv.release, stamp };
    Object.assign(this.status, {
      last_sent_at: new Date().toISOString(),
      last_kind: report.kind,
      seq: report.seq,
      packages: accepted.packages,
      sockets: inv.sockets.length,
      findings: accepted.findings,
      last_error: null,
    });
    this.d.log.info('inventory reported', { kind: report.kind, seq: report.seq, packages: accepted.packages, findings: accepted.findings, sockets: inv.sockets.length, skipped: inv.skipped });
  }

  private full(release: string, packages: InventoryPackage[], sockets: ListeningSocket[], after = 0): InventoryReport {
    // A fresh sequence per full report: any base the server held is replaced.
    return { kind: 'full', seq: Math.max(after, this.sent?.seq ?? 0) + 1, release, packages, sockets };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    this.watcher?.close();
    await this.running;
  }
}
