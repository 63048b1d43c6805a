/**
 * Wires the orchestrator and the fleet license publisher to NATS (ServerBus): connects
 * in the background (the HTTP API does not wait for NATS), makes sure the stream exists,
 * republishes everything current on connect and every `republishMs` (which is also the
 * TTL renewal hosts see), publishes fleet licenses on schedule and on change, answers
 * agents' license requests, and records agents' reports.
 */
import type { Logger } from 'winston';
import { backoffDelay } from '../../../protocol/src/index.js';
import { ServerBus } from '../nats/server_bus.js';
import type { AgentRegistry } from './agents.js';
import type { FleetLicensePublisher } from './fleet_publisher.js';
import type { Orchestrator } from './orchestrator.js';
import type { ServerContext } from '../context.js';

/** NATS connection attempts: at most 30 s apart, so a returning nats-server is found soon. */
const NATS_CONNECT_BACKOFF = { baseMs: 1000, capMs: 30_000 };

export interface DistributionOptions {
  natsUrl: string;
  user?: string;
  pass?: string;
  /** Issued credentials (.creds text); wins over user/pass. */
  creds?: string;
  caFile?: string;
  republishMs: number;
  /** Whether this replica does the periodic republication (the singleton lease); default always. */
  leader?: () => boolean;
  /** Replicas of the snapshot stream (AEGIS_NATS_STREAM_REPLICAS). */
  streamReplicas?: number;
}

export interface Distribution {
  bus(): ServerBus | null;
  close(): Promise<void>;
}

export function startDistribution(
  o: DistributionOptions,
  d: { ctx: ServerContext; orchestrator: Orchestrator; agents: AgentRegistry; fleet: FleetLicensePublisher | null; log: Logger },
): Distribution {
  let bus: ServerBus | null = null;
  let closed = false;
  let timer: NodeJS.Timeout | null = null;
  const onLicenseChanged = (licenseId: string) => void d.fleet?.licenseChanged(licenseId);

  async function republish(): Promise<void> {
    if (!bus?.isConnected()) return;
    await d.orchestrator.republishAll().catch((e: unknown) => d.log.warn('republish failed', { error: (e as Error).message }));
  }

  async function run(): Promise<void> {
    for (let attempt = 0; !closed; attempt++) {
      try {
        bus = await ServerBus.connect({
          url: o.natsUrl.split(','),
          ...(o.creds ? { creds: o.creds } : o.user ? { user: o.user, pass: o.pass ?? '' } : {}),
          ...(o.caFile ? { tls: { caFile: o.caFile } } : {}),
          ...(o.streamReplicas !== undefined ? { streamReplicas: o.streamReplicas } : {}),
          log: d.log,
        });
        break;
      } catch (e) {
        const wait = backoffDelay(attempt, NATS_CONNECT_BACKOFF);
        d.log.warn('NATS not reachable; snapshots stay available over HTTP', { url: o.natsUrl, error: (e as Error).message, retry_in_ms: wait });
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    if (closed || !bus) {
      await bus?.close();
      return;
    }
    const b = bus;
    try {
      await b.ensureStream();
    } catch (e) {
      d.log.error('cannot set up the snapshot stream', { error: (e as Error).message });
    }
    b.onAgentReport(async (kind, machine, data) => {
      const refused = await d.agents.record(kind, machine, data);
      if (refused) d.log.warn(`ignored an agent ${kind} report: ${refused}`, { kind, machine_id: machine });
    });
    if (d.fleet) {
      const fleet = d.fleet;
      b.serveLicense((name, token) => fleet.requestedEnvelope(token, name));
      d.ctx.events.on('license.changed', onLicenseChanged);
      fleet.start();
      await fleet.publishAll();
    }
    d.orchestrator.setPublisher(b);
    await republish();
    timer = setInterval(() => {
      if (o.leader?.() ?? true) void republish();
    }, o.republishMs);
    timer.unref();
  }

  void run();
  return {
    bus: () => bus,
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      d.ctx.events.off('license.changed', onLicenseChanged);
      d.fleet?.stop();
      d.orchestrator.setPublisher(null);
      await bus?.close().catch(() => undefined);
    },
  };
}
