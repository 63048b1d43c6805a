/**
 * Advisories, machine inventories and findings in the database. An import is one
 * transaction: the feed is read whole first (a refused feed never reaches the database),
 * then every advisory is upserted by id (a stored one is replaced unless both carry a
 * `modified` and the stored one is as new), and every machine's findings are recomputed
 * in the same transaction, so readers see the old set or the new one, never a mix.
 * An inventory report likewise replaces a machine's packages and findings at once.
 */
import type { Kysely, Transaction } from 'kysely';
import {
  AegisError,
  MAX_INVENTORY_PACKAGES,
  packageKey,
  parseDebianVersion,
  type InventoryAccepted,
  type InventoryPackage,
  type InventoryReport,
  type ListeningSocket,
} from '../../../protocol/src/index.js';
import { iso, type Clock } from '../clock.js';
import type { Database } from '../db/schema.js';
import { eventOf, releaseCodename, type Advisory, type AffectedEntry, type RangeEvent } from './advisory.js';
import { AdvisoryIndex } from './matcher.js';
import { levelsAtLeast, severityLevel, type SEVERITY_LEVELS } from './severity.js';

type Db = Kysely<Database> | Transaction<Database>;

/** Rows per multi-row statement: far below SQLite's and PostgreSQL's bound-parameter limits. */
const CHUNK = 400;

function chunks<T>(xs: readonly T[], n = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

interface StoredEntry {
  release: string;
  package: string;
  ranges: Array<Array<{ kind: RangeEvent['kind']; text: string }>>;
  versions: string[];
  severity: string | null;
}

function storedEntries(a: Advisory): StoredEntry[] {
  return a.affected.map((e) => ({
    release: e.release,
    package: e.package,
    ranges: e.ranges.map((r) => r.map((ev) => ({ kind: ev.kind, text: ev.text }))),
    versions: e.versions.map((v) => v.text),
    severity: e.severity,
  }));
}

function entryOf(s: StoredEntry): AffectedEntry {
  return {
    release: s.release,
    package: s.package,
    // Stored in the order the feed reader sorted them.
    ranges: s.ranges.map((r) => r.map((ev) => eventOf(ev.kind, ev.text))),
    versions: s.versions.map((text) => ({ text, version: parseDebianVersion(text) })),
    severity: s.severity,
  };
}

export interface ImportSummary {
  source: string;
  read: number;
  inserted: number;
  updated: number;
  unchanged: number;
  withdrawn: number;
  machines_rematched: number;
  findings: number;
}

export interface FindingView {
  machine_id: string;
  advisory: string;
  aliases: string[];
  package: string;
  architecture: string;
  version: string;
  source: string;
  source_version: string;
  fixed_version: string | null;
  severity: string | null;
  severity_level: string;
  exposed: boolean;
  sockets: ListeningSocket[];
  first_seen_at: string;
}

export interface FindingQuery {
  machines: Set<string> | null;
  machine?: string;
  severity?: (typeof SEVERITY_LEVELS)[number];
  package?: string;
  advisory?: string;
  limit: number;
  offset: number;
}

export interface MachinePackagesView {
  machine_id: string;
  release: string | null;
  seq: number | null;
  updated_at: string | null;
  packages: InventoryPackage[];
  sockets: ListeningSocket[];
}

const newer = (incoming: string | null, stored: string | null): boolean => {
  if (incoming === null || stored === null) return true;
  const a = Date.parse(incoming);
  const b = Date.parse(stored);
  if (Number.isNaN(a) || Number.isNaN(b)) return incoming !== stored;
  return a > b;
};

export class IntelStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  /** Upserts advisories and recomputes every machine's findings, all in one transaction. */
  async importAdvisories(advisories: readonly Advisory[], source: string): Promise<ImportSummary> {
    // The same id twice in one feed: the newer record (else the later one) counts.
    const byId = new Map<string, Advisory>();
    for (const a of advisories) {
      const prev = byId.get(a.id);
      if (!prev || newer(a.modified, prev.modified) || a.modified === prev.modified) byId.set(a.id, a);
    }
    const list = [...byId.values()];
    const now = iso(this.clock.now());
    return this.db.transaction().execute(async (trx) => {
      const summary: ImportSummary = { source, read: advisories.length, inserted: 0, updated: 0, unchanged: 0, withdrawn: 0, machines_rematched: 0, findings: 0 };
      const stored = new Map<string, string | null>();
      for (const ids of chunks(list.map((a) => a.id))) {
        for (const r of await trx.selectFrom('advisories').select(['id', 'modified']).where('id', 'in', ids).execute()) stored.set(r.id, r.modified);
      }
      const write: Advisory[] = [];
      for (const a of list) {
        if (!stored.has(a.id)) summary.inserted++;
        else if (newer(a.modified, stored.get(a.id)!)) summary.updated++;
        else {
          summary.unchanged++;
          continue;
        }
        if (a.withdrawn !== null) summary.withdrawn++;
        write.push(a);
      }
      for (const part of chunks(write)) {
        const ids = part.map((a) => a.id);
        await trx.deleteFrom('advisory_packages').where('advisory_id', 'in', ids).execute();
        await trx.deleteFrom('advisories').where('id', 'in', ids).execute();
        await trx
          .insertInto('advisories')
          .values(
            part.map((a) => ({
              id: a.id,
              feed: a.feed,
              aliases: JSON.stringify(a.aliases),
              severity: a.severity,
              modified: a.modified,
              withdrawn: a.withdrawn,
              affected: JSON.stringify(storedEntries(a)),
              source,
              imported_at: now,
            })),
          )
          .execute();
        const rows = new Map<string, { advisory_id: string; ecosystem: string; release: string; package: string; fixed: Set<string> }>();
        for (const a of part) {
          for (const e of a.affected) {
            const k = `${a.id}\u0000${e.release}\u0000${e.package}`;
            let row = rows.get(k);
            if (!row) rows.set(k, (row = { advisory_id: a.id, ecosystem: 'Debian', release: e.release, package: e.package, fixed: new Set() }));
            for (const r of e.ranges) for (const ev of r) if (ev.kind === 'fixed') row.fixed.add(ev.text);
          }
        }
        for (const rp of chunks([...rows.values()])) {
          await trx
            .insertInto('advisory_packages')
            .values(rp.map((r) => ({ advisory_id: r.advisory_id, ecosystem: r.ecosystem, release: r.release, package: r.package, fixed_versions: JSON.stringify([...r.fixed]) })))
            .execute();
        }
      }
      if (write.length > 0) {
        const machines = await trx.selectFrom('machine_inventories').select('machine_id').execute();
        for (const m of machines) summary.findings += await this.rematch(trx, m.machine_id);
        summary.machines_rematched = machines.length;
      } else {
        summary.findings = Number((await trx.selectFrom('findings').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
      }
      return summary;
    });
  }

  /** Applies a machine's inventory report (full, or a diff on the sequence the server holds) and rematches it. */
  async applyInventory(machineId: string, report: InventoryReport): Promise<InventoryAccepted> {
    const now = iso(this.clock.now());
    return this.db.transaction().execute(async (trx) => {
      const current = await trx.selectFrom('machine_inventories').selectAll().where('machine_id', '=', machineId).executeTakeFirst();
      const dupes = (list: ReadonlyArray<{ package: string; architecture: string }>, path: string) => {
        const seen = new Set<string>();
        for (const p of list) {
          const k = packageKey(p);
          if (seen.has(k)) throw new AegisError('VALIDATION_FAILED', `${path}: ${k} appears twice`, { details: [{ path, message: `${k} appears twice` }] });
          seen.add(k);
        }
      };
      if (report.kind === 'full') {
        if (report.packages === undefined || report.upserted !== undefined || report.removed !== undefined || report.base_seq !== undefined) {
          throw new AegisError('VALIDATION_FAILED', 'a full inventory has packages and no base_seq, upserted or removed', { details: [{ path: '/packages', message: 'required for kind full' }] });
        }
        dupes(report.packages, '/packages');
        await trx.deleteFrom('machine_packages').where('machine_id', '=', machineId).execute();
        for (const part of chunks(report.packages)) await trx.insertInto('machine_packages').values(part.map((p) => ({ machine_id: machineId, ...pick(p) }))).execute();
      } else {
        if (report.base_seq === undefined || report.packages !== undefined) {
          throw new AegisError('VALIDATION_FAILED', 'a diff has base_seq and no packages', { details: [{ path: '/base_seq', message: 'required for kind diff' }] });
        }
        if (!current || current.seq !== report.base_seq || report.seq !== report.base_seq + 1) {
          throw new AegisError('CONFLICT', `this diff applies to inventory ${report.base_seq}, the server holds ${current ? current.seq : 'none'}: send a full inventory`, {
            details: { held_seq: current?.seq ?? null },
          });
        }
        const removed = report.removed ?? [];
        const upserted = report.upserted ?? [];
        dupes([...removed, ...upserted], '/upserted');
        for (const r of removed) {
          await trx.deleteFrom('machine_packages').where('machine_id', '=', machineId).where('package', '=', r.package).where('architecture', '=', r.architecture).execute();
        }
        for (const p of upserted) {
          await trx.deleteFrom('machine_packages').where('machine_id', '=', machineId).where('package', '=', p.package).where('architecture', '=', p.architecture).execute();
        }
        for (const part of chunks(upserted)) await trx.insertInto('machine_packages').values(part.map((p) => ({ machine_id: machineId, ...pick(p) }))).execute();
      }
      const count = Number((await trx.selectFrom('machine_packages').select((eb) => eb.fn.countAll().as('n')).where('machine_id', '=', machineId).executeTakeFirstOrThrow()).n);
      if (count > MAX_INVENTORY_PACKAGES) throw new AegisError('PAYLOAD_TOO_LARGE', `an inventory holds at most ${MAX_INVENTORY_PACKAGES} packages`, { details: { limit: MAX_INVENTORY_PACKAGES } });
      const row = { release: report.release, seq: report.seq, sockets: JSON.stringify(report.sockets), updated_at: now };
      if (current) await trx.updateTable('machine_inventories').set(row).where('machine_id', '=', machineId).execute();
      else await trx.insertInto('machine_inventories').values({ machine_id: machineId, ...row }).execute();
      const findings = await this.rematch(trx, machineId);
      return { machine_id: machineId, seq: report.seq, packages: count, findings };
    });
  }

  /** Replaces machine `machineId`'s findings by a fresh match of its inventory; returns how many. */
  private async rematch(trx: Db, machineId: string): Promise<number> {
    const inv = await trx.selectFrom('machine_inventories').selectAll().where('machine_id', '=', machineId).executeTakeFirst();
    const previous = new Map<string, string>();
    for (const f of await trx.selectFrom('findings').select(['advisory_id', 'package', 'architecture', 'first_seen_at']).where('machine_id', '=', machineId).execute()) {
      previous.set(`${f.advisory_id}\u0000${f.package}\u0000${f.architecture}`, f.first_seen_at);
    }
    await trx.deleteFrom('findings').where('machine_id', '=', machineId).execute();
    if (!inv) return 0;
    const release = releaseCodename(inv.release);
    const packages = await trx.selectFrom('machine_packages').select(['package', 'architecture', 'version', 'source', 'source_version']).where('machine_id', '=', machineId).execute();
    const sources = [...new Set(packages.map((p) => p.source))];
    const ids = new Set<string>();
    for (const part of chunks(sources)) {
      for (const r of await trx.selectFrom('advisory_packages').select('advisory_id').where('release', '=', release).where('package', 'in', part).execute()) ids.add(r.advisory_id);
    }
    const advisories: Advisory[] = [];
    for (const part of chunks([...ids])) {
      for (const r of await trx.selectFrom('advisories').selectAll().where('id', 'in', part).where('withdrawn', 'is', null).execute()) {
        advisories.push({
          id: r.id,
          feed: r.feed as Advisory['feed'],
          aliases: JSON.parse(r.aliases) as string[],
          severity: r.severity,
          modified: r.modified,
          withdrawn: r.withdrawn,
          affected: (JSON.parse(r.affected) as StoredEntry[]).map(entryOf),
        });
      }
    }
    if (advisories.length === 0) return 0;
    const index = new AdvisoryIndex(advisories);
    const sockets = JSON.parse(inv.sockets) as ListeningSocket[];
    const now = iso(this.clock.now());
    const rows: Database['findings'][] = [];
    const seen = new Set<string>();
    for (const p of packages) {
      const own = sockets.filter((s) => s.package === p.package);
      for (const f of index.match(release, [p])) {
        const k = `${f.advisory}\u0000${p.package}\u0000${p.architecture}`;
        // One advisory may list a package twice (two affected entries): one finding.
        if (seen.has(k)) continue;
        seen.add(k);
        rows.push({
          machine_id: machineId,
          advisory_id: f.advisory,
          package: p.package,
          architecture: p.architecture,
          version: p.version,
          source: p.source,
          source_version: p.source_version,
          fixed_version: f.fixed_version,
          severity: f.severity,
          severity_level: severityLevel(f.severity),
          exposed: own.length > 0 ? 1 : 0,
          sockets: JSON.stringify(own),
          first_seen_at: previous.get(k) ?? now,
        });
      }
    }
    for (const part of chunks(rows, 200)) await trx.insertInto('findings').values(part).execute();
    return rows.length;
  }

  async findings(q: FindingQuery): Promise<{ items: FindingView[]; total: number }> {
    if (q.machines !== null && q.machines.size === 0) return { items: [], total: 0 };
    let base = this.db.selectFrom('findings').innerJoin('advisories', 'advisories.id', 'findings.advisory_id');
    if (q.machines !== null) base = base.where('findings.machine_id', 'in', [...q.machines]);
    if (q.machine !== undefined) base = base.where('findings.machine_id', '=', q.machine);
    if (q.package !== undefined) base = base.where((eb) => eb.or([eb('findings.package', '=', q.package!), eb('findings.source', '=', q.package!)]));
    if (q.advisory !== undefined) base = base.where('findings.advisory_id', '=', q.advisory);
    if (q.severity !== undefined) base = base.where('findings.severity_level', 'in', levelsAtLeast(q.severity));
    const total = Number((await base.select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
    const rows = await base
      .select([
        'findings.machine_id',
        'findings.advisory_id',
        'advisories.aliases',
        'findings.package',
        'findings.architecture',
        'findings.version',
        'findings.source',
        'findings.source_version',
        'findings.fixed_version',
        'findings.severity',
        'findings.severity_level',
        'findings.exposed',
        'findings.sockets',
        'findings.first_seen_at',
      ])
      .orderBy('findings.machine_id')
      .orderBy('findings.advisory_id')
      .orderBy('findings.package')
      .orderBy('findings.architecture')
      .limit(q.limit)
      .offset(q.offset)
      .execute();
    return {
      total,
      items: rows.map((r) => ({
        machine_id: r.machine_id,
        advisory: r.advisory_id,
        aliases: JSON.parse(r.aliases) as string[],
        package: r.package,
        architecture: r.architecture,
        version: r.version,
        source: r.source,
        source_version: r.source_version,
        fixed_version: r.fixed_version,
        severity: r.severity,
        severity_level: r.severity_level,
        exposed: Number(r.exposed) === 1,
        sockets: JSON.parse(r.sockets) as ListeningSocket[],
        first_seen_at: r.first_seen_at,
      })),
    };
  }

  async machineExists(id: string): Promise<boolean> {
    return (await this.db.selectFrom('machines').select('id').where('id', '=', id).executeTakeFirst()) !== undefined;
  }

  async machinePackages(machineId: string): Promise<MachinePackagesView> {
    const inv = await this.db.selectFrom('machine_inventories').selectAll().where('machine_id', '=', machineId).executeTakeFirst();
    const packages = await this.db
      .selectFrom('machine_packages')
      .select(['package', 'version', 'architecture', 'source', 'source_version'])
      .where('machine_id', '=', machineId)
      .orderBy('package')
      .orderBy('architecture')
      .execute();
    return {
      machine_id: machineId,
      release: inv?.release ?? null,
      seq: inv ? Number(inv.seq) : null,
      updated_at: inv?.updated_at ?? null,
      packages,
      sockets: inv ? (JSON.parse(inv.sockets) as ListeningSocket[]) : [],
    };
  }

  /** Validators of a feed URL from its last successful fetch. */
  async feedState(url: string): Promise<{ etag: string | null; lastModified: string | null } | null> {
    const r = await this.db.selectFrom('intel_feed_state').selectAll().where('url', '=', url).executeTakeFirst();
    return r ? { etag: r.etag, lastModified: r.last_modified } : null;
  }

  async recordFeedState(url: string, s: { etag?: string | null; lastModified?: string | null; error: string | null }): Promise<void> {
    const now = iso(this.clock.now());
    const prev = await this.feedState(url);
    const row = { etag: s.etag === undefined ? (prev?.etag ?? null) : s.etag, last_modified: s.lastModified === undefined ? (prev?.lastModified ?? null) : s.lastModified, checked_at: now, last_error: s.error };
    if (prev) await this.db.updateTable('intel_feed_state').set(row).where('url', '=', url).execute();
    else await this.db.insertInto('intel_feed_state').values({ url, ...row }).execute();
  }
}

function pick(p: InventoryPackage): InventoryPackage {
  return { package: p.package, version: p.version, architecture: p.architecture, source: p.source, source_version: p.source_version };
}
