/**
 * The orchestrator of snapshot rollout (canary, then enforce): accepts MapSnapshots, gives each a
 * server-side revision, keeps what every target should run, and publishes signed
 * messages for the hosts. NATS is a delivery path only: the database is the truth, the
 * HTTP fallback serves the same signed messages, and everything current is republished
 * on reconnect and periodically (a republished message is the TTL renewal).
 */
import type { Kysely } from 'kysely';
import {
  AegisError,
  ALL_HOSTS,
  AUD_SEG_MAP,
  isMachineId,
  TOKEN_ISSUER,
  ValidationError,
  type MapSnapshot,
  type SegMapClaims,
  type Stage,
  checkMapSnapshot,
  segMessageExp,
  SEG_MESSAGE_MIN_LIFETIME_SECONDS,
} from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { epochSeconds, iso, type Clock } from '../clock.js';
import type { TokenService } from '../tokens.js';


/** Where signed snapshot messages go; the NATS bus implements it. */
export interface SegPublisher {
  isConnected(): boolean;
  publishSegMap(target: string, serviceId: number, jws: string): Promise<unknown>;
}

export interface Revision {
  service_id: number;
  revision: number;
  stage: Stage;
  /** Machine ids, or [ALL_HOSTS]; resolved from hostnames when the snapshot was posted. */
  targets: string[];
  snapshot: MapSnapshot;
  created_at: string;
  created_by: string;
  promoted_at: string | null;
  restores_revision: number | null;
}

export interface SubmitResult {
  accepted: true;
  service_id: number;
  /** The machine ids the snapshot is for ([ALL_HOSTS] for every host). */
  targets: string[];
  timestamp: number;
  revision: number;
  stage: Stage;
  published: boolean;
}

export class Orchestrator {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly tokens: TokenService,
    private publisher: SegPublisher | null,
    private readonly onError: (message: string, meta: object) => void,
    /** How long a signed message stays acceptable (segMessageExp); at least 3 republish intervals. */
    private readonly messageLifetimeSeconds = SEG_MESSAGE_MIN_LIFETIME_SECONDS,
  ) {}

  setPublisher(p: SegPublisher | null): void {
    this.publisher = p;
  }

  private toRevision(r: Database['seg_revisions']): Revision {
    return {
      service_id: Number(r.service_id),
      revision: Number(r.revision),
      stage: r.stage as Stage,
      targets: JSON.parse(r.targets) as string[],
      snapshot: JSON.parse(r.snapshot) as MapSnapshot,
      created_at: r.created_at,
      created_by: r.created_by,
      promoted_at: r.promoted_at,
      restores_revision: r.restores_revision === null ? null : Number(r.restores_revision),
    };
  }

  private async insertRevision(rev: Omit<Revision, 'revision' | 'promoted_at'>): Promise<Revision> {
    return this.db.transaction().execute(async (tx) => {
      const { max } = await tx
        .selectFrom('seg_revisions')
        .select((eb) => eb.fn.max<number>('revision').as('max'))
        .where('service_id', '=', rev.service_id)
        .executeTakeFirstOrThrow();
      const revision = Number(max ?? 0) + 1;
      await tx
        .insertInto('seg_revisions')
        .values({
          service_id: rev.service_id,
          revision,
          snapshot: JSON.stringify(rev.snapshot),
          stage: rev.stage,
          targets: JSON.stringify(rev.targets),
          created_at: rev.created_at,
          created_by: rev.created_by,
          promoted_at: null,
          restores_revision: rev.restores_revision,
        })
        .execute();
      await this.setCurrent(tx, rev.service_id, rev.targets, revision);
      return { ...rev, revision, promoted_at: null };
    });
  }

  private async setCurrent(db: Kysely<Database>, serviceId: number, targets: string[], revision: number): Promise<void> {
    const now = iso(this.clock.now());
    for (const target of targets) {
      await db.deleteFrom('seg_current').where('service_id', '=', serviceId).where('target', '=', target).execute();
      await db.insertInto('seg_current').values({ service_id: serviceId, target, revision, updated_at: now, published_at: null }).execute();
    }
  }

  /** POST /seg/maps. */
  async submit(body: unknown, opts: { targets: string[]; stage?: Stage; actor: string }): Promise<SubmitResult> {
    // `stage` may ride in the body (it is not part of the MapSnapshot schema; stripped here).
    let stage: Stage = opts.stage ?? 'canary';
    let content = body;
    if (body !== null && typeof body === 'object' && !Array.isArray(body) && 'stage' in body) {
      const { stage: s, ...rest } = body as Record<string, unknown>;
      if (s !== 'canary' && s !== 'enforce') throw new ValidationError([{ path: '/stage', message: 'must be canary or enforce' }]);
      stage = s;
      content = rest;
    }
    const snapshot = checkMapSnapshot(content);
    const now = this.clock.now();
    const rev = await this.insertRevision({
      service_id: snapshot.service_id,
      stage,
      targets: opts.targets,
      snapshot,
      created_at: iso(now),
      created_by: opts.actor,
      restores_revision: null,
    });
    const published = await this.publishRevision(rev);
    return {
      accepted: true,
      service_id: rev.service_id,
      targets: rev.targets,
      timestamp: epochSeconds(now),
      revision: rev.revision,
      stage: rev.stage,
      published,
    };
  }

  async get(serviceId: number, revision?: number): Promise<Revision> {
    let q = this.db.selectFrom('seg_revisions').selectAll().where('service_id', '=', serviceId);
    q = revision === undefined ? q.orderBy('revision', 'desc').limit(1) : q.where('revision', '=', revision);
    const row = await q.executeTakeFirst();
    if (!row) throw new AegisError('NOT_FOUND', revision === undefined ? `no snapshot for service ${serviceId}` : `service ${serviceId} has no revision ${revision}`);
    return this.toRevision(row);
  }

  /** Moves a revision (default: the newest) from canary to enforce on its targets. */
  async promote(serviceId: number, revision: number | undefined): Promise<Revision> {
    const rev = await this.get(serviceId, revision);
    const newest = await this.get(serviceId);
    if (rev.revision !== newest.revision) {
      throw new AegisError('CONFLICT', `revision ${rev.revision} is not the newest (${newest.revision}); promote the newest or roll back first`);
    }
    return this.enforce(rev);
  }

  /**
   * Promotes a revision targeted at machines while it is still what each of them runs (the
   * newest of its own and every host's), whatever newer revisions other machines got since:
   * a decision's canary on one machine is not superseded by another machine's.
   */
  async promoteOnTargets(serviceId: number, revision: number): Promise<Revision> {
    const rev = await this.get(serviceId, revision);
    for (const target of rev.targets) {
      const runs = target === ALL_HOSTS ? (await this.get(serviceId)).revision : await this.currentFor(serviceId, target);
      if (runs !== rev.revision) throw new AegisError('CONFLICT', `revision ${rev.revision} of service ${serviceId} is no longer what ${target} runs (${runs ?? 'nothing'})`);
    }
    return this.enforce(rev);
  }

  private async enforce(rev: Revision): Promise<Revision> {
    const serviceId = rev.service_id;
    const now = iso(this.clock.now());
    await this.db
      .updateTable('seg_revisions')
      .set({ stage: 'enforce', promoted_at: now })
      .where('service_id', '=', serviceId)
      .where('revision', '=', rev.revision)
      .execute();
    const promoted: Revision = { ...rev, stage: 'enforce', promoted_at: now };
    await this.publishRevision(promoted);
    return promoted;
  }

  /**
   * Restores the previous revision's content on every target of the newest one, as a new
   * revision (revisions only go up, so hosts can refuse anything older as a replay).
   */
  async rollback(serviceId: number, actor: string): Promise<Revision & { rolled_back: number }> {
    const newest = await this.get(serviceId);
    const prevRow = await this.db
      .selectFrom('seg_revisions')
      .selectAll()
      .where('service_id', '=', serviceId)
      .where('revision', '<', newest.revision)
      .orderBy('revision', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (!prevRow) throw new AegisError('CONFLICT', `service ${serviceId} has no earlier revision to roll back to`);
    const prev = this.toRevision(prevRow);
    // Revisions stored before targets were machine ids name hostnames, which identify
    // nothing: a rollback reaches only the machine ids (or every host) among them.
    const targets = newest.targets.filter((t) => t === ALL_HOSTS || isMachineId(t));
    if (targets.length === 0) throw new AegisError('CONFLICT', `revision ${newest.revision} of service ${serviceId} names no machine ids; post a new snapshot with target_host or target_machine`);
    const rev = await this.insertRevision({
      service_id: serviceId,
      stage: prev.stage,
      targets,
      snapshot: prev.snapshot,
      created_at: iso(this.clock.now()),
      created_by: actor,
      restores_revision: prev.restores_revision ?? prev.revision,
    });
    await this.publishRevision(rev);
    return { ...rev, rolled_back: newest.revision };
  }

  /** The revision of a service machine `machineId` runs now (its own target or every host's, the newer), or null. */
  async currentFor(serviceId: number, machineId: string): Promise<number | null> {
    const rows = await this.db
      .selectFrom('seg_current')
      .select('revision')
      .where('service_id', '=', serviceId)
      .where((eb) => eb.or([eb('target', '=', machineId), eb('target', '=', ALL_HOSTS)]))
      .execute();
    return rows.length === 0 ? null : Math.max(...rows.map((r) => Number(r.revision)));
  }

  /**
   * Puts revision `prior`'s content (and stage) back on `targets` as a new, higher revision;
   * with no prior revision (the targets ran nothing for the service), a snapshot that allows
   * everything, enforced (a host refuses anything older, so nothing can simply be withdrawn).
   */
  async restore(serviceId: number, prior: number | null, targets: string[], actor: string, ttlSeconds = 3600): Promise<Revision> {
    const base = prior === null ? null : await this.get(serviceId, prior);
    const open: MapSnapshot = {
      version: 1,
      service_id: serviceId,
      edges: [{ dst_cidr: '0.0.0.0/0', proto: 'any', port: 0 }, { dst_cidr: '::/0', proto: 'any', port: 0 }],
      allow_cidrs: [{ cidr: '0.0.0.0/0', proto: 'any', port: 0 }, { cidr: '::/0', proto: 'any', port: 0 }],
      ttl_seconds: ttlSeconds,
      meta: { source: 'restore', restores: null },
    };
    const rev = await this.insertRevision({
      service_id: serviceId,
      stage: base ? base.stage : 'enforce',
      targets,
      snapshot: base ? base.snapshot : open,
      created_at: iso(this.clock.now()),
      created_by: actor,
      restores_revision: base ? (base.restores_revision ?? base.revision) : null,
    });
    await this.publishRevision(rev);
    return rev;
  }

  /** The targets a service currently runs on (empty when it has no snapshot). */
  async currentTargets(serviceId: number): Promise<string[]> {
    const rows = await this.db.selectFrom('seg_current').select('target').where('service_id', '=', serviceId).execute();
    return rows.map((r) => r.target);
  }

  async history(serviceId: number): Promise<Revision[]> {
    const rows = await this.db.selectFrom('seg_revisions').selectAll().where('service_id', '=', serviceId).orderBy('revision', 'desc').execute();
    if (rows.length === 0) throw new AegisError('NOT_FOUND', `no snapshot for service ${serviceId}`);
    return rows.map((r) => this.toRevision(r));
  }

  async current(): Promise<Array<{ service_id: number; target: string; revision: number; stage: Stage; updated_at: string; published_at: string | null }>> {
    const rows = await this.db
      .selectFrom('seg_current')
      .innerJoin('seg_revisions', (j) =>
        j.onRef('seg_revisions.service_id', '=', 'seg_current.service_id').onRef('seg_revisions.revision', '=', 'seg_current.revision'),
      )
      .select(['seg_current.service_id', 'seg_current.target', 'seg_current.revision', 'seg_revisions.stage', 'seg_current.updated_at', 'seg_current.published_at'])
      .orderBy('seg_current.service_id')
      .orderBy('seg_current.target')
      .execute();
    return rows.map((r) => ({ ...r, service_id: Number(r.service_id), revision: Number(r.revision), stage: r.stage as Stage }));
  }

  /**
   * The signed message hosts act on. Signed afresh on every publication and fallback answer,
   * so its exp (iat + the message lifetime, at most ttl_seconds) moves forward with each renewal.
   */
  async sign(rev: Revision, target: string): Promise<string> {
    const iat = epochSeconds(this.clock.now());
    const claims: SegMapClaims = {
      aud: AUD_SEG_MAP,
      iss: TOKEN_ISSUER,
      iat,
      exp: segMessageExp(iat, rev.snapshot, this.messageLifetimeSeconds),
      target,
      service_id: rev.service_id,
      revision: rev.revision,
      stage: rev.stage,
      snapshot: rev.snapshot,
    };
    return this.tokens.signMessage({ ...claims });
  }

  /** Publishes a revision to its targets; false when NATS is not there (HTTP fallback still serves it). */
  private async publishRevision(rev: Revision): Promise<boolean> {
    const pub = this.publisher;
    if (!pub || !pub.isConnected()) return false;
    let ok = true;
    for (const target of rev.targets) {
      try {
        await pub.publishSegMap(target, rev.service_id, await this.sign(rev, target));
        await this.db
          .updateTable('seg_current')
          .set({ published_at: iso(this.clock.now()) })
          .where('service_id', '=', rev.service_id)
          .where('target', '=', target)
          .where('revision', '=', rev.revision)
          .execute();
      } catch (e) {
        ok = false;
        this.onError('publishing a snapshot failed; it stays current and is republished later', {
          service_id: rev.service_id,
          revision: rev.revision,
          target,
          error: (e as Error).message,
        });
      }
    }
    return ok;
  }

  /**
   * Republishes everything current (on NATS reconnect, and as the periodic TTL renewal).
   * A republication read before a newer revision was committed can be stored after that
   * one's publication (another replica published it meanwhile): it is followed at once by
   * the revision current now, so the subject's last value never stays behind.
   */
  async republishAll(): Promise<number> {
    let n = 0;
    for (const c of await this.current()) {
      let rev = await this.get(c.service_id, c.revision);
      for (let round = 0; round < 3; round++) {
        if (!(await this.publishRevision({ ...rev, targets: [c.target] }))) break;
        if (round === 0) n++;
        // Newer since it was read: a later revision, or the same one promoted.
        const now = await this.db.selectFrom('seg_current').select('revision').where('service_id', '=', c.service_id).where('target', '=', c.target).executeTakeFirst();
        if (!now) break;
        const fresh = await this.get(c.service_id, Number(now.revision));
        if (fresh.revision < rev.revision || (fresh.revision === rev.revision && fresh.stage === rev.stage)) break;
        rev = fresh;
      }
    }
    return n;
  }

  /** The signed messages a machine should run now: per service, its own or _all, newest revision. */
  async messagesFor(machineId: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('seg_current')
      .selectAll()
      .where((eb) => eb.or([eb('target', '=', machineId), eb('target', '=', ALL_HOSTS)]))
      .execute();
    const best = new Map<number, { target: string; revision: number }>();
    for (const r of rows) {
      const cur = best.get(Number(r.service_id));
      if (!cur || Number(r.revision) > cur.revision) best.set(Number(r.service_id), { target: r.target, revision: Number(r.revision) });
    }
    const out: string[] = [];
    for (const [serviceId, b] of [...best.entries()].sort((a, c) => a[0] - c[0])) {
      out.push(await this.sign(await this.get(serviceId, b.revision), b.target));
    }
    return out;
  }
}
