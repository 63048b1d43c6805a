/**
 * Every NATS subject Aegis uses, built here and nowhere else: the buses publish and
 * subscribe on these, and the permissions nats-server enforces (nats_permissions.ts) are
 * made of the same strings, so what a client does and what it is allowed to do cannot
 * drift apart.
 *
 * aegis.seg.maps.<machine|_all>.<service_id>  signed snapshots (JetStream, last value per subject)
 * aegis.license.<fleet>                       sealed fleet license envelopes
 * aegis.agent.<machine>.status|ack|flows      agent reports
 * aegis.agent.<machine>.license               an agent's request for its fleet's envelope
 * _INBOX.<machine>.>                          an agent's reply subjects
 *
 * <machine> is the id of the host's machine (machines.id, bound to its host key at
 * activation), never its hostname: hostnames are labels any host may choose, so subjects
 * and the NATS permissions built from them name the machine.
 */
import { ValidationError } from './errors.js';
import { ALL_HOSTS, isSubjectToken } from './identifiers.js';

/** Checks one token before it goes into a subject; a "." or wildcard would change the subject. */
function token(name: string, value: string | number): string {
  const s = String(value);
  if (!isSubjectToken(s)) {
    throw new ValidationError([{ path: name, message: 'must be 1-128 of A-Z a-z 0-9 _ -' }], `invalid NATS subject token for ${name}: ${JSON.stringify(s)} (1-128 of A-Z a-z 0-9 _ -)`);
  }
  return s;
}

/** The JetStream stream that keeps the last snapshot message of every snapshot subject. */
export const SEG_MAPS_STREAM = 'AEGIS_SEG_MAPS';
/** Every snapshot subject: what SEG_MAPS_STREAM stores and only aegis-server may publish. */
export const SEG_MAPS_WILDCARD = 'aegis.seg.maps.>';

/** The kinds of report an agent publishes on aegis.agent.<machine>.<kind>. */
export type AgentReportKind = 'status' | 'ack' | 'flows';
export const AGENT_REPORT_KINDS: readonly AgentReportKind[] = Object.freeze(['status', 'ack', 'flows'] as const);

const SEG_MAPS_PREFIX = 'aegis.seg.maps.';
const AGENT_PREFIX = 'aegis.agent.';
const JS_DIRECT_GET = '$JS.API.DIRECT.GET.';

/** Subjects of one machine, fleet or service; each token is checked (ValidationError when unfit). */
export const subjects = {
  /** aegis.license.<fleet>: the fleet's sealed license envelopes. */
  license: (fleet: string) => `aegis.license.${token('fleet', fleet)}`,
  /** aegis.seg.maps.<machine>.<service_id>: a snapshot for one machine. */
  segMap: (machine: string, serviceId: number) => `${SEG_MAPS_PREFIX}${token('machine', machine)}.${token('service_id', serviceId)}`,
  /** aegis.seg.maps._all.<service_id>: a snapshot for every host. */
  segMapAll: (serviceId: number) => `${SEG_MAPS_PREFIX}${ALL_HOSTS}.${token('service_id', serviceId)}`,
  /** aegis.seg.maps.<machine>.>: every snapshot addressed to `machine` (ALL_HOSTS for the fleet-wide ones). */
  segMapsOf: (machine: string) => `${SEG_MAPS_PREFIX}${token('machine', machine)}.>`,
  /**
   * $JS.API.DIRECT.GET.AEGIS_SEG_MAPS.<subject>: the last stored value of a snapshot
   * subject (or, as a permission, of a snapshot wildcard). The subject-in-subject form of
   * Direct Get, so nats-server's permissions can name the subjects a client may read.
   */
  segMapDirectGet: (segMapSubject: string) => {
    if (!segMapSubject.startsWith(SEG_MAPS_PREFIX)) {
      throw new ValidationError([{ path: 'subject', message: `must start with ${SEG_MAPS_PREFIX}` }], `not a snapshot subject: ${JSON.stringify(segMapSubject)}`);
    }
    return `${JS_DIRECT_GET}${SEG_MAPS_STREAM}.${segMapSubject}`;
  },
  /** aegis.agent.<machine>.status */
  agentStatus: (machine: string) => `${AGENT_PREFIX}${token('machine', machine)}.status`,
  /** aegis.agent.<machine>.ack */
  agentAck: (machine: string) => `${AGENT_PREFIX}${token('machine', machine)}.ack`,
  /** aegis.agent.<machine>.flows */
  agentFlows: (machine: string) => `${AGENT_PREFIX}${token('machine', machine)}.flows`,
  /** aegis.agent.<machine>.license: an agent asks aegis-server for its fleet's current envelope. */
  agentLicenseRequest: (machine: string) => `${AGENT_PREFIX}${token('machine', machine)}.license`,
  /** aegis.agent.<machine>.>: everything an agent publishes about itself. */
  agentAll: (machine: string) => `${AGENT_PREFIX}${token('machine', machine)}.>`,
  /** _INBOX.<machine>: the inbox prefix of an agent's connection (its request replies). */
  inboxPrefix: (machine: string) => `_INBOX.${token('machine', machine)}`,
  /** _INBOX.<machine>.>: every reply subject of an agent's connection. */
  inboxOf: (machine: string) => `_INBOX.${token('machine', machine)}.>`,
  /** $SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE: pushes a new account JWT to nats-server. */
  accountClaimsUpdate: (accountPublicKey: string) => `$SYS.REQ.ACCOUNT.${token('account', accountPublicKey)}.CLAIMS.UPDATE`,
} as const;

/** Subjects with wildcards that span machines or fleets: aegis-server's subscriptions and permissions. */
export const subjectWildcards = {
  /** aegis.agent.*.<kind>: one kind of report from every machine. */
  agentReports: (kind: AgentReportKind) => {
    if (!AGENT_REPORT_KINDS.includes(kind)) throw new ValidationError([{ path: 'kind', message: `must be one of ${AGENT_REPORT_KINDS.join(', ')}` }]);
    return `${AGENT_PREFIX}*.${kind}`;
  },
  /** aegis.agent.*.license: every machine's license requests. */
  agentLicenseRequests: `${AGENT_PREFIX}*.license`,
  /** aegis.agent.>: everything agents publish. */
  agents: `${AGENT_PREFIX}>`,
  /** aegis.license.>: every fleet's license envelopes. */
  licenses: 'aegis.license.>',
  /** aegis.seg.maps.>: every snapshot subject (SEG_MAPS_WILDCARD). */
  segMaps: SEG_MAPS_WILDCARD,
  /** $JS.API.>: the whole JetStream API (stream management, acked publishes, Direct Get). */
  jetStreamApi: '$JS.API.>',
  /** _INBOX.>: every reply subject (the default inbox prefix of a NATS client). */
  inboxes: '_INBOX.>',
  /** $SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE: account JWT pushes for any account. */
  accountClaimsUpdates: '$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE',
} as const;

/**
 * The machine token of an agent subject (aegis.agent.<machine>.<kind>), unchecked: null
 * when `subject` is not of that form. The caller decides whether it names an active machine.
 */
export function agentSubjectMachine(subject: string): string | null {
  const parts = subject.split('.');
  if (parts.length !== 4 || `${parts[0]}.${parts[1]}.` !== AGENT_PREFIX) return null;
  return parts[2] ?? null;
}
