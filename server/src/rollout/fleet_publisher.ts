/**
 * Fleet license distribution: for every fleet, the server signs the fleet's license
 * (its newest license that names the fleet) and publishes it sealed with that fleet's own
 * key (FleetKeys: derived from the master key, at the fleet's current generation) on
 * aegis.license.<fleet>, every 5 minutes and at once when a license changes. Each
 * envelope carries the next value of a persisted per-fleet sequence, so agents can
 * refuse anything not newer than what they hold (a replay or rollback). A license request
 * is answered only for the requesting machine's own fleet (requestedEnvelope), and a fleet
 * no license names gets no envelope and no sequence row.
 */
import { sql, type Kysely } from 'kysely';
import {
  AUD_FLEET_LICENSE,
  TOKEN_ISSUER,
  effectiveFeatures,
  sealEnvelope,
  type Feature,
  type FleetLicenseClaims,
  type Tier,
} from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { epochSeconds, type Clock } from '../clock.js';
import { statusOf } from '../licenses.js';
import type { TokenService } from '../tokens.js';
import { FleetLicenseRefusal, fleetExists, requesterFleet, type FleetKeys } from './fleet_keys.js';

export const FLEET_PUBLISH_INTERVAL_MS = 5 * 60_000;

export type LicensePublish = (fleet: string, sealed: string) => Promise<void>;

export class FleetLicensePublisher {
  private timer: NodeJS.Timeout | null = null;
  /** Whether this replica runs the periodic publication (the singleton lease); changes are published by whichever replica saw them. */
  leader: () => boolean = () => true;
  /** The period of publishAll (AEGIS_FLEET_PUBLISH_SECONDS). */
  intervalMs = FLEET_PUBLISH_INTERVAL_MS;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly tokens: TokenService,
    private readonly keys: FleetKeys,
    private readonly publish: LicensePublish,
    private readonly onError: (message: string, meta: object) => void,
  ) {}

  /**
   * The next sequence number of a fleet's envelopes. Publishers run concurrently (the
   * periodic one, one triggered by a license change, another replica): the row is changed
   * by a single UPDATE that locks it until the transaction ends, and created with ON
   * CONFLICT DO NOTHING, so two of them never read the same number or both insert it.
   */
  private async nextSeq(fleet: string): Promise<number> {
    return this.db.transaction().execute(async (tx) => {
      // Time-based floor: a database restored from an old backup still moves forward.
      const floor = Date.now();
      const bump = async (): Promise<number | null> => {
        const r = await tx
          .updateTable('fleet_sequence')
          .set({ seq: sql<number>`case when seq + 1 > ${floor} then seq + 1 else ${floor} end` })
          .where('fleet', '=', fleet)
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) === 0) return null;
        const row = await tx.selectFrom('fleet_sequence').select('seq').where('fleet', '=', fleet).executeTakeFirstOrThrow();
        return Number(row.seq);
      };
      const bumped = await bump();
      if (bumped !== null) return bumped;
      const ins = await tx.insertInto('fleet_sequence').values({ fleet, seq: floor }).onConflict((oc) => oc.column('fleet').doNothing()).executeTakeFirst();
      if (Number(ins.numInsertedOrUpdatedRows ?? 0n) === 1) return floor;
      // Another publisher created the row meanwhile: move on from its number.
      const after = await bump();
      if (after === null) throw new Error(`fleet_sequence row of ${fleet} vanished while publishing`);
      return after;
    });
  }

  /** The signed claims for a fleet right now. */
  async claimsFor(fleet: string, seq: number): Promise<FleetLicenseClaims> {
    const now = this.clock.now();
    const rows = await this.db.selectFrom('licenses').selectAll().where('fleet', '=', fleet).orderBy('created_at', 'desc').execute();
    const active = rows.find((r) => statusOf(r, now) === 'active');
    const base = { aud: AUD_FLEET_LICENSE, iss: TOKEN_ISSUER, iat: epochSeconds(now), fleet, seq } as const;
    if (active) {
      const tier = active.tier as Tier;
      return {
        ...base,
        ...(active.expires_at ? { exp: epochSeconds(new Date(active.expires_at)) } : {}),
        status: 'active',
        license_id: active.id,
        tier,
        features: effectiveFeatures(tier, JSON.parse(active.features) as Feature[]),
      };
    }
    const last = rows[0];
    return { ...base, status: last ? 'revoked' : 'none', license_id: last?.id ?? null, tier: null, features: [] };
  }

  /**
   * A fresh sealed envelope for a fleet (next sequence number), under the fleet's current
   * key. Refused (FLEET_UNKNOWN) before any write when no license names the fleet.
   */
  async envelope(fleet: string): Promise<string> {
    if (!(await fleetExists(this.db, fleet))) throw new FleetLicenseRefusal('FLEET_UNKNOWN', `no license names fleet ${fleet}`);
    const { key, generation } = await this.keys.current(fleet);
    const seq = await this.nextSeq(fleet);
    const claims = await this.claimsFor(fleet, seq);
    return sealEnvelope(key, fleet, generation, seq, await this.tokens.signMessage({ ...claims }));
  }

  /**
   * The answer to a license request on aegis.agent.<token>.license asking for `fleet`: an
   * envelope only when the token names an active machine whose license names that fleet;
   * otherwise FleetLicenseRefusal, with nothing written.
   */
  async requestedEnvelope(token: string, fleet: string): Promise<string> {
    const own = await requesterFleet(this.db, token);
    if (own !== fleet) throw new FleetLicenseRefusal('FLEET_MISMATCH', `machine ${token} belongs to fleet ${own}, not ${fleet}`);
    return this.envelope(fleet);
  }

  async publishFleet(fleet: string): Promise<void> {
    await this.publish(fleet, await this.envelope(fleet));
  }

  async publishAll(): Promise<void> {
    const fleets = await this.db.selectFrom('licenses').select('fleet').distinct().where('fleet', 'is not', null).execute();
    for (const { fleet } of fleets) {
      try {
        await this.publishFleet(fleet!);
      } catch (e) {
        this.onError('publishing a fleet license failed', { fleet, error: (e as Error).message });
      }
    }
  }

  /** A license changed (issued, revoked, renewed): republish its fleet now. */
  async licenseChanged(licenseId: string): Promise<void> {
    const row = await this.db.selectFrom('licenses').select('fleet').where('id', '=', licenseId).executeTakeFirst();
    if (row?.fleet) {
      try {
        await this.publishFleet(row.fleet);
      } catch (e) {
        this.onError('publishing a fleet license failed', { fleet: row.fleet, error: (e as Error).message });
      }
    }
  }

  start(intervalMs = this.intervalMs): void {
    this.timer = setInterval(() => {
      if (this.leader()) void this.publishAll();
    }, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
