/**
 * Every NATS subject Aegis uses, built here and nowhere else: the buses publish and
 * subscribe on these, and the permissions nats-server enforces (nats_permissions.ts) are
 * made of the same strings, so what a client does and what it is allowed to do cannot
 * drift apart.
 *
 * aegis.seg.maps.<host|_all>.<service_id>  signed snapshots (JetStream, last value per subject)
 * aegis.license.<fleet>                    sealed fleet license envelopes
 * aegis.agent.<host>.status|ack|flows      agent reports
 * aegis.agent.<host>.license               an agent's request for its fleet's envelope
 * _INBOX.<host>.>                          an agent's reply subjects
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

/** The kinds of report an agent publishes on aegis.agent.<host>.<kind>. */
export type AgentReportKind = 'status' | 'ack' | 'flows';
export const AGENT_REPORT_KINDS: readonly AgentReportKind[] = Object.freeze(['status', 'ack', 'flows'] as const);

const SEG_MAPS_PREFIX = 'aegis.seg.maps.';
const AGENT_PREFIX = 'aegis.agent.';
const JS_DIRECT_GET = '$JS.API.DIRECT.GET.';

/** Subjects of one host, fleet or service; each token is checked (ValidationError when unfit). */
export const subjects = {
  /** aegis.license.<fleet>: the fleet's sealed license envelopes. */
  license: (fleet: string) => `aegis.license.${token('fleet', fleet)}`,
  /** aegis.seg.maps.<host>.<service_id>: a snapshot for one host. */
  segMap: (host: string, serviceId: number) => `${SEG_MAPS_PREFIX}${token('host', host)}.${token('service_id', serviceId)}`,
  /** aegis.seg.maps._all.<service_id>: a snapshot for every host. */
  segMapAll: (serviceId: number) => `${SEG_MAPS_PREFIX}${ALL_HOSTS}.${token('service_id', serviceId)}`,
  /** aegis.seg.maps.<host>.>: every snapshot addressed to `host` (ALL_HOSTS for the fleet-wide ones). */
  segMapsOf: (host: string) => `${SEG_MAPS_PREFIX}${token('host', host)}.>`,
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
  /** aegis.agent.<host>.status */
  agentStatus: (host: string) => `${AGENT_PREFIX}${token('host', host)}.status`,
  /** aegis.agent.<host>.ack */
  agentAck: (host: string) => `${AGENT_PREFIX}${token('host', host)}.ack`,
  /** aegis.agent.<host>.flows */
  agentFlows: (host: string) => `${AGENT_PREFIX}${token('host', host)}.flows`,
  /** aegis.agent.<host>.license: an agent asks aegis-server for its fleet's current envelope. */
  agentLicenseRequest: (host: string) => `${AGENT_PREFIX}${token('host', host)}.license`,
  /** aegis.agent.<host>.>: everything an agent publishes about itself. */
  agentAll: (host: string) => `${AGENT_PREFIX}${token('host', host)}.>`,
  /** _INBOX.<host>: the inbox prefix of an agent's connection (its request replies). */
  inboxPrefix: (host: string) => `_INBOX.${token('host', host)}`,
  /** _INBOX.<host>.>: every reply subject of an agent's connection. */
  inboxOf: (host: string) => `_INBOX.${token('host', host)}.>`,
  /** $SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE: pushes a new account JWT to nats-server. */
  accountClaimsUpdate: (accountPublicKey: string) => `$SYS.REQ.ACCOUNT.${token('account', accountPublicKey)}.CLAIMS.UPDATE`,
} as const;

/** Subjects with wildcards that span hosts or fleets: aegis-server's subscriptions and permissions. */
export const subjectWildcards = {
  /** aegis.agent.*.<kind>: one kind of report from every host. */
  agentReports: (kind: AgentReportKind) => {
    if (!AGENT_REPORT_KINDS.includes(kind)) throw new ValidationError([{ path: 'kind', message: `must be one of ${AGENT_REPORT_KINDS.join(', ')}` }]);
    return `${AGENT_PREFIX}*.${kind}`;
  },
  /** aegis.agent.*.license: every host's license requests. */
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
 * The host token of an agent subject (aegis.agent.<host>.<kind>), unchecked: null when
 * `subject` is not of that form. The caller decides whether the token is an acceptable host.
 */
export function agentSubjectHost(subject: string): string | null {
  const parts = subject.split('.');
  if (parts.length !== 4 || `${parts[0]}.${parts[1]}.` !== AGENT_PREFIX) return null;
  return parts[2] ?? null;
}
