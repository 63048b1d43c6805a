/**
 * Table types for Kysely. Times are ISO-8601 UTC strings in both backends (lexical order
 * is time order), ids are UUIDs, lists are JSON text: one representation on SQLite and
 * PostgreSQL, so every query is the same on both.
 */
import type { Generated } from 'kysely';

export interface CustomersTable {
  id: string;
  /** The customer's own reference (unique, set at creation), or null. */
  external_id: string | null;
  name: string;
  email: string | null;
  company: string | null;
  is_active: number; // 0/1: the same column type on both backends
  created_at: string;
  updated_at: string;
}

export interface LicensesTable {
  id: string;
  customer_id: string;
  tier: string;
  license_type: string;
  status: string; // active | revoked
  key_hash: string;
  key_suffix: string;
  max_machines: number;
  allowed_major_versions: string; // JSON array of strings
  features: string; // JSON array: extra features beyond the tier's
  /** The fleet whose hosts receive this license over NATS in sealed envelopes, if any. */
  fleet: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  revoke_reason: string | null;
  created_at: string;
  updated_at: string;
  /** The product module a module license is for; null for an aegis-agent license. */
  module_name: string | null;
  /**
   * The claims (JSON) and signing kid of a module license's token. The token itself is
   * not stored: Ed25519 is deterministic, so signing these claims with that key again
   * gives the same token, and the database holds no bearer token.
   */
  token_claims: string | null;
  token_kid: string | null;
  /** JSON array of operator-defined entitlement codes, sorted. */
  entitlements: string;
  fingerprint_match: string; // any | majority | all
  clone_policy: string; // refuse | new_machine
  allow_containers: number; // 0 | 1
  heartbeat_interval_seconds: number | null;
  heartbeat_cull: string; // deactivate | keep
  floating: number; // 0 | 1
  lease_ttl_seconds: number | null;
  grace_period_seconds: number | null;
}

export interface MachinesTable {
  id: string;
  license_id: string;
  hardware_id: string;
  host_key_thumbprint: string;
  host_public_key: string; // JSON (public JWK)
  hostname: string;
  agent_version: string;
  status: string; // active | deactivated
  activated_at: string;
  last_seen_at: string;
  deactivated_at: string | null;
  /** JSON object: fingerprint component name → salted digest; null when the agent sent none. */
  fingerprint_components: string | null;
  environment: string | null; // host | vm | container
  /** The machine this one is a clone of (activated under clone_policy new_machine). */
  clone_of: string | null;
  heartbeat_status: string | null; // alive | dead | null (no heartbeat required)
  last_heartbeat_at: string | null;
  heartbeat_seq: number | string; // bigint: PostgreSQL answers a string
  lease_expires_at: string | null;
}

export interface UsedProofsTable {
  jti: string;
  audience: string;
  expires_at: string;
}

/** A used offline activation request or release (0013_offline_activation). */
export interface OfflineNoncesTable {
  nonce: string;
  kind: 'activation' | 'release';
  machine_id: string | null;
  used_at: string;
  expires_at: string;
}

export interface ApiKeysTable {
  id: string;
  name: string;
  key_hash: string;
  key_prefix: string;
  scopes: string; // JSON array
  /** The one customer this key may see and act on; null: every customer. */
  customer_id: string | null;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

export interface AuditLogsTable {
  id: Generated<number>;
  event_type: string;
  outcome: string; // ok | refused
  actor: string;
  license_id: string | null;
  customer_id: string | null;
  machine_id: string | null;
  client_ip: string | null;
  reason: string | null;
  event_data: string; // JSON
  created_at: string;
}

/** One accepted MapSnapshot revision of a service (kept by the rollout orchestrator). */
export interface SegRevisionsTable {
  service_id: number;
  revision: number;
  snapshot: string; // JSON MapSnapshot
  stage: string; // canary | enforce
  targets: string; // JSON array of machine ids (hostnames before 0006); ["_all"] for every host
  created_at: string;
  created_by: string;
  promoted_at: string | null;
  /** For a rollback: the revision whose content this one restores. */
  restores_revision: number | null;
}

/** What each target (a machine id, or _all) should run now, per service. */
export interface SegCurrentTable {
  service_id: number;
  target: string;
  revision: number;
  updated_at: string;
  published_at: string | null;
}

/**
 * Last report of each machine's agent (status, acks), from NATS or the agent listener.
 * Keyed by the machine the report's subject or credentials name; hostname is the label
 * the machine activated with, copied for display.
 */
export interface AgentsTable {
  machine_id: string;
  hostname: string;
  status: string; // JSON AgentStatusReport
  applied: string; // JSON { [service_id]: AgentAck }
  last_seen_at: string;
}

/**
 * The flow log: one row per line of an agent's flow report, filed under the reporting
 * machine. received_at (the server's clock) orders and ages the log; the interval is the
 * agent's own account of when the flows happened.
 */
export interface FlowLogTable {
  id: Generated<number>;
  machine_id: string;
  service_id: number;
  /** The snapshot revision in force on the host (what `rule` indexes into); null: not reported. */
  revision: number | null;
  direction: string; // egress | ingress
  verdict: string; // allowed | dropped | would-drop
  proto: string; // tcp | udp | icmp | the IP protocol number in decimal
  /** Remote address (canonical text): the destination of egress, the source of ingress. */
  remote: string;
  port: number;
  /** Index of the deciding entry in the snapshot's edges (egress) or allow_cidrs (ingress); null: no rule. */
  rule: number | null;
  reason: string | null; // policy | expired | unparsed | cut; null: not reported (older agents)
  count: number;
  interval_start: string;
  interval_end: string;
  received_at: string;
}

/** Per-fleet envelope sequence: persisted so a restart never goes backwards. */
export interface FleetSequenceTable {
  fleet: string;
  seq: number;
}

/** A fleet's current key generation (fleet keys derive from the master key); no row: generation 1. */
export interface FleetKeysTable {
  fleet: string;
  generation: number;
  rotated_at: string;
}

/** Client certificates issued to machines: checked by serial on every mTLS request. */
export interface MachineCertificatesTable {
  serial: string; // upper-case hex, as TLS reports it
  machine_id: string;
  thumbprint: string; // x5t#S256 of the DER certificate
  not_before: string;
  not_after: string;
  revoked_at: string | null;
  created_at: string;
}

/** A registered webhook endpoint; customer_id set: it receives only that customer's events. */
export interface WebhookEndpointsTable {
  id: string;
  customer_id: string | null;
  url: string;
  events: string; // JSON array of event types
  description: string | null;
  created_by: string;
  created_at: string;
}

/** One event for one endpoint: the exact signed body, and how its delivery went. */
export interface WebhookDeliveriesTable {
  id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  customer_id: string | null;
  payload: string; // the JSON body, byte for byte what is signed and sent
  status: string; // pending | delivered | failed
  attempts: number;
  attempt_log: string; // JSON array of { at, status_code, error, duration_ms }
  next_attempt_at: string | null;
  last_attempt_at: string | null;
  last_status_code: number | null;
  last_error: string | null;
  created_at: string;
  delivered_at: string | null;
}

/** Named watermarks of the webhook dispatcher. */
export interface WebhookStateTable {
  name: string;
  value: string;
}

/** An imported advisory; `affected` is the JSON of its entries (events as text). */
export interface AdvisoriesTable {
  id: string;
  feed: string; // osv | debian-tracker
  aliases: string; // JSON array
  severity: string | null;
  modified: string | null;
  withdrawn: string | null;
  affected: string; // JSON array of { release, package, ranges, versions, severity }
  source: string; // the file, archive entry or URL it came from
  imported_at: string;
}

/** One (release, source package) an advisory affects: the lookup an inventory is matched by. */
export interface AdvisoryPackagesTable {
  advisory_id: string;
  ecosystem: string; // Debian
  release: string;
  package: string;
  fixed_versions: string; // JSON array
}

/** A machine's last reported inventory: its release, the report sequence and its listening sockets. */
export interface MachineInventoriesTable {
  machine_id: string;
  release: string;
  seq: number;
  sockets: string; // JSON array of ListeningSocket
  updated_at: string;
}

export interface MachinePackagesTable {
  machine_id: string;
  package: string;
  architecture: string;
  version: string;
  source: string;
  source_version: string;
}

/** An advisory matching a package installed on a machine. */
export interface FindingsTable {
  machine_id: string;
  advisory_id: string;
  package: string;
  architecture: string;
  version: string;
  source: string;
  source_version: string;
  fixed_version: string | null;
  severity: string | null;
  /** none, low, medium, high, critical or unknown: what ?severity= filters on. */
  severity_level: string;
  exposed: number; // 1: the package owns a listening socket's executable
  sockets: string; // JSON array of those sockets
  first_seen_at: string;
}

/** Conditional-request validators of each configured feed URL. */
export interface IntelFeedStateTable {
  url: string;
  etag: string | null;
  last_modified: string | null;
  checked_at: string;
  last_error: string | null;
}

/** What hosts reported, in time order (server/src/events/). */
export interface CorrelationRulesTable {
  id: string;
  title: string;
  type: string;
  /** The whole rule as JSON (server/src/correlation/rules.ts). */
  body: string;
  created_by: string;
  created_at: string;
}

export interface AlertsTable {
  id: string;
  rule_id: string;
  rule_title: string;
  level: string;
  /** The group-by field values as a JSON object. */
  group_key: string;
  machine_id: string;
  customer_id: string | null;
  first_event_at: string;
  last_event_at: string;
  /** {event_ids, flow_ids, findings, counts} as JSON. */
  evidence: string;
  created_at: string;
}

/** What alerts of rules with an action decided (server/src/decisions). */
export interface DecisionsTable {
  id: Generated<number>;
  rule_id: string;
  alert_id: string;
  customer_id: string | null;
  machine_id: string;
  action: string; // JSON RuleAction
  mode: string; // propose | auto
  state: string; // proposed | approved | canary | promoted | rolled_back | failed | rejected | notified
  evidence: string; // JSON: the alert and its events
  revisions: string; // JSON: per service, the revision it produced, the one it replaced, the one that restored it
  /** rule_id + machine_id while open (unique), null once closed. */
  open_key: string | null;
  canary_started_at: string | null;
  created_at: string;
  decided_at: string | null;
  decided_by: string | null;
  reason: string | null;
  updated_at: string;
}

export interface EventsTable {
  id: Generated<number>;
  source: string; // threat | file_verdict | telemetry | flow
  machine_id: string;
  /** The customer of the machine's license when the event was received. */
  customer_id: string | null;
  /** When it happened on the host (checked against the server's clock on ingest). */
  at: string;
  received_at: string;
  kind: string;
  severity: string | null; // info | low | medium | high | critical
  body: string; // JSON object
}

/** Operator YARA rules, compiled before they were kept. */
export interface YaraRulesTable {
  id: string;
  name: string;
  source: string;
  verdict: string; // malicious | suspicious
  description: string | null;
  created_by: string;
  created_at: string;
}

/** Operator hash lists: one digest per row. */
export interface HashListEntriesTable {
  id: string;
  list: string;
  algorithm: string; // sha256 | sha1 | md5
  hash: string; // lower-case hex
  verdict: string; // malicious | suspicious | clean
  description: string | null;
  created_by: string;
  created_at: string;
}

/** A NATS user issued to a machine (operator mode); revoked_at set once revoked (unix seconds). */
export interface NatsUsersTable {
  user_key: string;
  machine_id: string;
  host: string;
  issued_at: number;
  /** Unix seconds; 0: the user JWT does not expire. */
  expires_at: number;
  revoked_at: number | null;
}

/** A rate-limit token bucket; `ok` is whether the last take succeeded (read back by the upsert). */
export interface RateBucketsTable {
  key: string;
  tokens: number;
  updated_ms: number;
  full_at_ms: number;
  ok: number;
}

export interface ConsoleSessionsTable {
  id_hash: string;
  api_key_id: string;
  csrf: string;
  expires_ms: number;
  created_ms: number;
}

/** A singleton lease: the replica holding it, until when, and the epoch bumped on every change of holder. */
export interface LeasesTable {
  name: string;
  holder: string;
  expires_ms: number;
  epoch: number;
}

/** Database keyring (0020_keyring): sealed keys and secrets; see keys/db_keyring.ts. */
export interface KeyringKeysTable {
  kind: string;
  kid: string;
  public_pem: string | null;
  sealed: string;
  created_at: string;
  retired_at: string | null;
}

export interface KeyringStateTable {
  id: number;
  generation: number;
  active_kid: string | null;
}

export interface Database {
  nats_users: NatsUsersTable;
  rate_buckets: RateBucketsTable;
  console_sessions: ConsoleSessionsTable;
  leases: LeasesTable;
  keyring_keys: KeyringKeysTable;
  keyring_state: KeyringStateTable;
  events: EventsTable;
  yara_rules: YaraRulesTable;
  hash_list_entries: HashListEntriesTable;
  advisories: AdvisoriesTable;
  advisory_packages: AdvisoryPackagesTable;
  machine_inventories: MachineInventoriesTable;
  machine_packages: MachinePackagesTable;
  findings: FindingsTable;
  intel_feed_state: IntelFeedStateTable;
  webhook_endpoints: WebhookEndpointsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_state: WebhookStateTable;
  machine_certificates: MachineCertificatesTable;
  seg_revisions: SegRevisionsTable;
  seg_current: SegCurrentTable;
  agents: AgentsTable;
  flow_log: FlowLogTable;
  correlation_rules: CorrelationRulesTable;
  alerts: AlertsTable;
  decisions: DecisionsTable;
  fleet_sequence: FleetSequenceTable;
  fleet_keys: FleetKeysTable;
  customers: CustomersTable;
  licenses: LicensesTable;
  machines: MachinesTable;
  used_proofs: UsedProofsTable;
  offline_nonces: OfflineNoncesTable;
  api_keys: ApiKeysTable;
  audit_logs: AuditLogsTable;
}
