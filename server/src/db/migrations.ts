/**
 * Schema migrations, run at start and by `aegis-server migrate`. Kysely's Migrator keeps
 * its own bookkeeping table and a lock, so two servers starting at once migrate once.
 */
import { Migrator, sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import type { Dialect } from './database.js';
import type { Database } from './schema.js';

function migrations(dialect: Dialect): Record<string, Migration> {
  // The one place the backends differ: an auto-increment key for the audit log's order.
  const serial = dialect === 'postgres' ? 'serial' : 'integer';
  return {
    '0001_initial': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('customers')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('email', 'text')
          .addColumn('company', 'text')
          .addColumn('is_active', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('customers_email').on('customers').column('email').execute();

        await db.schema
          .createTable('licenses')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('customer_id', 'text', (c) => c.notNull().references('customers.id'))
          .addColumn('tier', 'text', (c) => c.notNull())
          .addColumn('license_type', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('key_hash', 'text', (c) => c.notNull().unique())
          .addColumn('key_suffix', 'text', (c) => c.notNull())
          .addColumn('max_machines', 'integer', (c) => c.notNull())
          .addColumn('allowed_major_versions', 'text', (c) => c.notNull())
          .addColumn('features', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'text')
          .addColumn('revoked_at', 'text')
          .addColumn('revoke_reason', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('licenses_customer').on('licenses').column('customer_id').execute();

        await db.schema
          .createTable('machines')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('license_id', 'text', (c) => c.notNull().references('licenses.id'))
          .addColumn('hardware_id', 'text', (c) => c.notNull())
          .addColumn('host_key_thumbprint', 'text', (c) => c.notNull())
          .addColumn('host_public_key', 'text', (c) => c.notNull())
          .addColumn('hostname', 'text', (c) => c.notNull())
          .addColumn('agent_version', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('activated_at', 'text', (c) => c.notNull())
          .addColumn('last_seen_at', 'text', (c) => c.notNull())
          .addColumn('deactivated_at', 'text')
          .execute();
        await db.schema.createIndex('machines_license').on('machines').columns(['license_id', 'status']).execute();
        await db.schema.createIndex('machines_hwid').on('machines').columns(['hardware_id', 'status']).execute();

        await db.schema
          .createTable('used_proofs')
          .addColumn('jti', 'text', (c) => c.primaryKey())
          .addColumn('audience', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('api_keys')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('key_hash', 'text', (c) => c.notNull().unique())
          .addColumn('key_prefix', 'text', (c) => c.notNull())
          .addColumn('scopes', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('last_used_at', 'text')
          .addColumn('revoked_at', 'text')
          .execute();

        await db.schema
          .createTable('audit_logs')
          .addColumn('id', sql.raw(serial) as any, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('event_type', 'text', (c) => c.notNull())
          .addColumn('outcome', 'text', (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('license_id', 'text')
          .addColumn('customer_id', 'text')
          .addColumn('machine_id', 'text')
          .addColumn('client_ip', 'text')
          .addColumn('reason', 'text')
          .addColumn('event_data', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('audit_event_type').on('audit_logs').columns(['event_type', 'id']).execute();
        await db.schema.createIndex('audit_license').on('audit_logs').columns(['license_id', 'id']).execute();
      },
      async down(db: Kysely<any>) {
        for (const t of ['audit_logs', 'api_keys', 'used_proofs', 'machines', 'licenses', 'customers']) {
          await db.schema.dropTable(t).execute();
        }
      },
    },
    '0002_segmentation': {
      async up(db: Kysely<any>) {
        await db.schema.alterTable('licenses').addColumn('fleet', 'text').execute();
        await db.schema
          .createTable('seg_revisions')
          .addColumn('service_id', 'integer', (c) => c.notNull())
          .addColumn('revision', 'integer', (c) => c.notNull())
          .addColumn('snapshot', 'text', (c) => c.notNull())
          .addColumn('stage', 'text', (c) => c.notNull())
          .addColumn('targets', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('promoted_at', 'text')
          .addColumn('restores_revision', 'integer')
          .addPrimaryKeyConstraint('seg_revisions_pk', ['service_id', 'revision'])
          .execute();
        await db.schema
          .createTable('seg_current')
          .addColumn('service_id', 'integer', (c) => c.notNull())
          .addColumn('target', 'text', (c) => c.notNull())
          .addColumn('revision', 'integer', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .addColumn('published_at', 'text')
          .addPrimaryKeyConstraint('seg_current_pk', ['service_id', 'target'])
          .execute();
        await db.schema
          .createTable('agents')
          .addColumn('host', 'text', (c) => c.primaryKey())
          .addColumn('machine_id', 'text')
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('applied', 'text', (c) => c.notNull())
          .addColumn('last_seen_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('agent_flows')
          .addColumn('host', 'text', (c) => c.notNull())
          .addColumn('service_id', 'integer', (c) => c.notNull())
          .addColumn('dst', 'text', (c) => c.notNull())
          .addColumn('proto', 'text', (c) => c.notNull())
          .addColumn('port', 'integer', (c) => c.notNull())
          .addColumn('count', 'integer', (c) => c.notNull())
          .addColumn('last_seen_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('agent_flows_pk', ['host', 'service_id', 'dst', 'proto', 'port'])
          .execute();
        await db.schema
          .createTable('fleet_sequence')
          .addColumn('fleet', 'text', (c) => c.primaryKey())
          .addColumn('seq', 'integer', (c) => c.notNull())
          .execute();
      },
      async down(db: Kysely<any>) {
        for (const t of ['fleet_sequence', 'agent_flows', 'agents', 'seg_current', 'seg_revisions']) await db.schema.dropTable(t).execute();
        await db.schema.alterTable('licenses').dropColumn('fleet').execute();
      },
    },
    '0003_agent_pki': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('machine_certificates')
          .addColumn('serial', 'text', (c) => c.primaryKey())
          .addColumn('machine_id', 'text', (c) => c.notNull())
          .addColumn('thumbprint', 'text', (c) => c.notNull())
          .addColumn('not_before', 'text', (c) => c.notNull())
          .addColumn('not_after', 'text', (c) => c.notNull())
          .addColumn('revoked_at', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('machine_certificates_machine').on('machine_certificates').column('machine_id').execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('machine_certificates').execute();
      },
    },
    '0004_api_key_tenancy': {
      // No foreign key: a key whose customer was deleted keeps its restriction and so
      // sees nothing, rather than blocking the deletion or widening to every customer.
      async up(db: Kysely<any>) {
        await db.schema.alterTable('api_keys').addColumn('customer_id', 'text').execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.alterTable('api_keys').dropColumn('customer_id').execute();
      },
    },
    '0005_fleet_keys': {
      // A fleet's current key generation; a fleet without a row is at generation 1. Rows
      // are written only by `fleet-key rotate`, never by a license request.
      async up(db: Kysely<any>) {
        // Envelope sequence numbers are floored at Date.now() (milliseconds), beyond
        // PostgreSQL's 32-bit integer; SQLite's integer is already 64-bit.
        if (dialect === 'postgres') await db.schema.alterTable('fleet_sequence').alterColumn('seq', (c) => c.setDataType('bigint')).execute();
        await db.schema
          .createTable('fleet_keys')
          .addColumn('fleet', 'text', (c) => c.primaryKey())
          .addColumn('generation', 'integer', (c) => c.notNull())
          .addColumn('rotated_at', 'text', (c) => c.notNull())
          .execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('fleet_keys').execute();
        if (dialect === 'postgres') await db.schema.alterTable('fleet_sequence').alterColumn('seq', (c) => c.setDataType('integer')).execute();
      },
    },
    '0006_machine_identity': {
      // Agent reports and flows were filed under the hostname a report named, which is no
      // identity (any host may call itself anything), so they cannot be attributed to a
      // machine safely: they are dropped, and agents report again within their status
      // interval. Current snapshot targets that were hostnames become the machine ids of
      // the one active machine of that name; a name with none or several is dropped from
      // the current targets (its revisions stay in the history).
      async up(db: Kysely<any>) {
        await db.schema.dropTable('agent_flows').execute();
        await db.schema.dropTable('agents').execute();
        await db.schema
          .createTable('agents')
          .addColumn('machine_id', 'text', (c) => c.primaryKey())
          .addColumn('hostname', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('applied', 'text', (c) => c.notNull())
          .addColumn('last_seen_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('agent_flows')
          .addColumn('machine_id', 'text', (c) => c.notNull())
          .addColumn('service_id', 'integer', (c) => c.notNull())
          .addColumn('dst', 'text', (c) => c.notNull())
          .addColumn('proto', 'text', (c) => c.notNull())
          .addColumn('port', 'integer', (c) => c.notNull())
          .addColumn('count', 'integer', (c) => c.notNull())
          .addColumn('last_seen_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('agent_flows_pk', ['machine_id', 'service_id', 'dst', 'proto', 'port'])
          .execute();
        await db.schema.createIndex('agent_flows_service').on('agent_flows').column('service_id').execute();
        const active = await db.selectFrom('machines').select(['id', 'hostname']).where('status', '=', 'active').execute();
        const byName = new Map<string, string[]>();
        for (const m of active as Array<{ id: string; hostname: string }>) byName.set(m.hostname, [...(byName.get(m.hostname) ?? []), m.id]);
        const current = (await db.selectFrom('seg_current').selectAll().execute()) as Array<{ service_id: number; target: string }>;
        for (const c of current) {
          if (c.target === '_all') continue;
          const ids = byName.get(c.target) ?? [];
          await db.deleteFrom('seg_current').where('service_id', '=', c.service_id).where('target', '=', c.target).execute();
          if (ids.length === 1) {
            await db.deleteFrom('seg_current').where('service_id', '=', c.service_id).where('target', '=', ids[0]).execute();
            await db.insertInto('seg_current').values({ ...c, target: ids[0] }).execute();
          }
        }
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('agent_flows').execute();
        await db.schema.dropTable('agents').execute();
        await db.schema
          .createTable('agents')
          .addColumn('host', 'text', (c) => c.primaryKey())
          .addColumn('machine_id', 'text')
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('applied', 'text', (c) => c.notNull())
          .addColumn('last_seen_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('agent_flows')
          .addColumn('host', 'text', (c) => c.notNull())
          .addColumn('service_id', 'integer', (c) => c.notNull())
          .addColumn('dst', 'text', (c) => c.notNull())
          .addColumn('proto', 'text', (c) => c.notNull())
          .addColumn('port', 'integer', (c) => c.notNull())
          .addColumn('count', 'integer', (c) => c.notNull())
          .addColumn('last_seen_at', 'text', (c) => c.notNull())
          .execute();
      },
    },
    '0007_flow_log': {
      // One home for flows: every line of every flow report, in time order, replaces the
      // running totals of agent_flows (denied egress per machine and destination). Those
      // totals become one dropped egress row each, received at their last_seen_at, so the
      // segmenter keeps its input; retention then ages them out like any other row.
      async up(db: Kysely<any>) {
        const key = dialect === 'postgres' ? 'bigserial' : 'integer';
        await db.schema
          .createTable('flow_log')
          .addColumn('id', sql.raw(key) as any, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('machine_id', 'text', (c) => c.notNull())
          .addColumn('service_id', 'integer', (c) => c.notNull())
          .addColumn('revision', 'integer')
          .addColumn('direction', 'text', (c) => c.notNull())
          .addColumn('verdict', 'text', (c) => c.notNull())
          .addColumn('proto', 'text', (c) => c.notNull())
          .addColumn('remote', 'text', (c) => c.notNull())
          .addColumn('port', 'integer', (c) => c.notNull())
          .addColumn('rule', 'integer')
          .addColumn('reason', 'text')
          .addColumn('count', 'integer', (c) => c.notNull())
          .addColumn('interval_start', 'text', (c) => c.notNull())
          .addColumn('interval_end', 'text', (c) => c.notNull())
          .addColumn('received_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('flow_log_time').on('flow_log').columns(['received_at', 'id']).execute();
        await db.schema.createIndex('flow_log_service_time').on('flow_log').columns(['service_id', 'received_at', 'id']).execute();
        await db.schema.createIndex('flow_log_machine_time').on('flow_log').columns(['machine_id', 'received_at', 'id']).execute();
        await sql`insert into flow_log (machine_id, service_id, revision, direction, verdict, proto, remote, port, rule, reason, count, interval_start, interval_end, received_at)
          select machine_id, service_id, null, 'egress', 'dropped', proto, dst, port, null, null, count, last_seen_at, last_seen_at, last_seen_at
          from agent_flows order by last_seen_at`.execute(db);
        await db.schema.dropTable('agent_flows').execute();
      },
      async down(db: Kysely<any>) {
        await db.schema
          .createTable('agent_flows')
          .addColumn('machine_id', 'text', (c) => c.notNull())
          .addColumn('service_id', 'integer', (c) => c.notNull())
          .addColumn('dst', 'text', (c) => c.notNull())
          .addColumn('proto', 'text', (c) => c.notNull())
          .addColumn('port', 'integer', (c) => c.notNull())
          .addColumn('count', 'integer', (c) => c.notNull())
          .addColumn('last_seen_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('agent_flows_pk', ['machine_id', 'service_id', 'dst', 'proto', 'port'])
          .execute();
        await db.schema.createIndex('agent_flows_service').on('agent_flows').column('service_id').execute();
        await sql`insert into agent_flows (machine_id, service_id, dst, proto, port, count, last_seen_at)
          select machine_id, service_id, remote, proto, port, sum(count), max(received_at) from flow_log
          where direction = 'egress' and verdict in ('dropped', 'would-drop') and proto in ('tcp', 'udp')
          group by machine_id, service_id, remote, proto, port`.execute(db);
        await db.schema.dropTable('flow_log').execute();
      },
    },
    '0008_license_compat': {
      // Module licenses (a product module and its allowed host major versions, with a
      // license token signed at issue) and customers' external references.
      async up(db: Kysely<any>) {
        await db.schema.alterTable('customers').addColumn('external_id', 'text').execute();
        await db.schema.createIndex('customers_external_id').unique().on('customers').column('external_id').execute();
        await db.schema.alterTable('licenses').addColumn('module_name', 'text').execute();
        await db.schema.alterTable('licenses').addColumn('token_claims', 'text').execute();
        await db.schema.alterTable('licenses').addColumn('token_kid', 'text').execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.alterTable('licenses').dropColumn('token_kid').execute();
        await db.schema.alterTable('licenses').dropColumn('token_claims').execute();
        await db.schema.alterTable('licenses').dropColumn('module_name').execute();
        await db.schema.dropIndex('customers_external_id').execute();
        await db.schema.alterTable('customers').dropColumn('external_id').execute();
      },
    },
    '0010_webhooks': {
      // Signed webhooks: the endpoints operators register, and the outbox of deliveries
      // (written in the same statement sequence as the audit row of the event, sent by the
      // dispatcher, kept for the delivery log). webhook_state holds the dispatcher's
      // watermarks (how far license expiries have been announced).
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('webhook_endpoints')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('customer_id', 'text')
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('events', 'text', (c) => c.notNull())
          .addColumn('description', 'text')
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('webhook_endpoints_customer').on('webhook_endpoints').column('customer_id').execute();
        await db.schema
          .createTable('webhook_deliveries')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('endpoint_id', 'text', (c) => c.notNull())
          .addColumn('event_id', 'text', (c) => c.notNull())
          .addColumn('event_type', 'text', (c) => c.notNull())
          .addColumn('customer_id', 'text')
          .addColumn('payload', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull())
          .addColumn('attempt_log', 'text', (c) => c.notNull())
          .addColumn('next_attempt_at', 'text')
          .addColumn('last_attempt_at', 'text')
          .addColumn('last_status_code', 'integer')
          .addColumn('last_error', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('delivered_at', 'text')
          .addUniqueConstraint('webhook_deliveries_event', ['endpoint_id', 'event_id'])
          .execute();
        await db.schema.createIndex('webhook_deliveries_due').on('webhook_deliveries').columns(['status', 'next_attempt_at']).execute();
        await db.schema.createIndex('webhook_deliveries_endpoint').on('webhook_deliveries').columns(['endpoint_id', 'created_at']).execute();
        await db.schema
          .createTable('webhook_state')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('webhook_state').execute();
        await db.schema.dropTable('webhook_deliveries').execute();
        await db.schema.dropTable('webhook_endpoints').execute();
        },
      },
    '0012_fingerprints_entitlements': {
      // Named fingerprint components per machine (salted digests), the per-license matching
      // strategy, clone and container policies, and operator-defined entitlements.
      async up(db: Kysely<any>) {
        await db.schema.alterTable('licenses').addColumn('entitlements', 'text', (c) => c.notNull().defaultTo('[]')).execute();
        await db.schema.alterTable('licenses').addColumn('fingerprint_match', 'text', (c) => c.notNull().defaultTo('majority')).execute();
        await db.schema.alterTable('licenses').addColumn('clone_policy', 'text', (c) => c.notNull().defaultTo('refuse')).execute();
        await db.schema.alterTable('licenses').addColumn('allow_containers', 'integer', (c) => c.notNull().defaultTo(1)).execute();
        await db.schema.alterTable('machines').addColumn('fingerprint_components', 'text').execute();
        await db.schema.alterTable('machines').addColumn('environment', 'text').execute();
        await db.schema.alterTable('machines').addColumn('clone_of', 'text').execute();
      },
      async down(db: Kysely<any>) {
        for (const col of ['clone_of', 'environment', 'fingerprint_components']) await db.schema.alterTable('machines').dropColumn(col).execute();
        for (const col of ['allow_containers', 'clone_policy', 'fingerprint_match', 'entitlements']) await db.schema.alterTable('licenses').dropColumn(col).execute();
      },
    },
    '0013_offline_activation': {
      // Nonces of offline activation requests and releases already used: each file is
      // accepted once. Rows outlive the file's max age (after that its iat refuses it).
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('offline_nonces')
          .addColumn('nonce', 'text', (c) => c.primaryKey())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('machine_id', 'text')
          .addColumn('used_at', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'text', (c) => c.notNull())
          .execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('offline_nonces').execute();
      },
    },
    '0014_heartbeats_floating': {
      async up(db: Kysely<any>) {
        // License policy: heartbeats, floating leases and grace. Defaults keep the old behaviour.
        await db.schema.alterTable('licenses').addColumn('heartbeat_interval_seconds', 'integer').execute();
        await db.schema.alterTable('licenses').addColumn('heartbeat_cull', 'text', (c) => c.notNull().defaultTo('deactivate')).execute();
        await db.schema.alterTable('licenses').addColumn('floating', 'integer', (c) => c.notNull().defaultTo(0)).execute();
        await db.schema.alterTable('licenses').addColumn('lease_ttl_seconds', 'integer').execute();
        await db.schema.alterTable('licenses').addColumn('grace_period_seconds', 'integer').execute();
        // A machine's heartbeat state: alive | dead (null: its license wants none), the
        // last accepted heartbeat's time and seq (replays and reorders are refused), its lease.
        await db.schema.alterTable('machines').addColumn('heartbeat_status', 'text').execute();
        await db.schema.alterTable('machines').addColumn('last_heartbeat_at', 'text').execute();
        await db.schema.alterTable('machines').addColumn('heartbeat_seq', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
        await db.schema.alterTable('machines').addColumn('lease_expires_at', 'text').execute();
      },
      async down(db: Kysely<any>) {
        for (const col of ['lease_expires_at', 'heartbeat_seq', 'last_heartbeat_at', 'heartbeat_status']) await db.schema.alterTable('machines').dropColumn(col).execute();
        for (const col of ['grace_period_seconds', 'lease_ttl_seconds', 'floating', 'heartbeat_cull', 'heartbeat_interval_seconds']) await db.schema.alterTable('licenses').dropColumn(col).execute();
      },
    },
    '0015_advisories_findings': {
      // Imported advisories (one row each, the affected entries as JSON, and an index row
      // per release and source package), each machine's reported package inventory and
      // listening sockets, the findings matched from both, and the feed URLs' validators.
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('advisories')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('feed', 'text', (c) => c.notNull())
          .addColumn('aliases', 'text', (c) => c.notNull())
          .addColumn('severity', 'text')
          .addColumn('modified', 'text')
          .addColumn('withdrawn', 'text')
          .addColumn('affected', 'text', (c) => c.notNull())
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('imported_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('advisory_packages')
          .addColumn('advisory_id', 'text', (c) => c.notNull().references('advisories.id').onDelete('cascade'))
          .addColumn('ecosystem', 'text', (c) => c.notNull())
          .addColumn('release', 'text', (c) => c.notNull())
          .addColumn('package', 'text', (c) => c.notNull())
          .addColumn('fixed_versions', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('advisory_packages_pk', ['advisory_id', 'ecosystem', 'release', 'package'])
          .execute();
        await db.schema.createIndex('advisory_packages_lookup').on('advisory_packages').columns(['release', 'package']).execute();
        await db.schema
          .createTable('machine_inventories')
          .addColumn('machine_id', 'text', (c) => c.primaryKey().references('machines.id').onDelete('cascade'))
          .addColumn('release', 'text', (c) => c.notNull())
          .addColumn('seq', 'integer', (c) => c.notNull())
          .addColumn('sockets', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('machine_packages')
          .addColumn('machine_id', 'text', (c) => c.notNull().references('machines.id').onDelete('cascade'))
          .addColumn('package', 'text', (c) => c.notNull())
          .addColumn('architecture', 'text', (c) => c.notNull())
          .addColumn('version', 'text', (c) => c.notNull())
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('source_version', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('machine_packages_pk', ['machine_id', 'package', 'architecture'])
          .execute();
        await db.schema
          .createTable('findings')
          .addColumn('machine_id', 'text', (c) => c.notNull().references('machines.id').onDelete('cascade'))
          .addColumn('advisory_id', 'text', (c) => c.notNull())
          .addColumn('package', 'text', (c) => c.notNull())
          .addColumn('architecture', 'text', (c) => c.notNull())
          .addColumn('version', 'text', (c) => c.notNull())
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('source_version', 'text', (c) => c.notNull())
          .addColumn('fixed_version', 'text')
          .addColumn('severity', 'text')
          .addColumn('severity_level', 'text', (c) => c.notNull())
          .addColumn('exposed', 'integer', (c) => c.notNull())
          .addColumn('sockets', 'text', (c) => c.notNull())
          .addColumn('first_seen_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('findings_pk', ['machine_id', 'advisory_id', 'package', 'architecture'])
          .execute();
        await db.schema.createIndex('findings_advisory').on('findings').columns(['advisory_id']).execute();
        await db.schema
          .createTable('intel_feed_state')
          .addColumn('url', 'text', (c) => c.primaryKey())
          .addColumn('etag', 'text')
          .addColumn('last_modified', 'text')
          .addColumn('checked_at', 'text', (c) => c.notNull())
          .addColumn('last_error', 'text')
          .execute();
      },
      async down(db: Kysely<any>) {
        for (const t of ['intel_feed_state', 'findings', 'machine_packages', 'machine_inventories', 'advisory_packages', 'advisories']) await db.schema.dropTable(t).execute();
      },
    },
    '0016_events': {
      // One time-ordered table of what hosts report (threats, file verdicts, telemetry, and
      // later flows) for the correlator's windows, and the operator's intel the file
      // verdicts are judged by: YARA rules (compiled before they are kept) and hash lists.
      async up(db: Kysely<any>) {
        const key = dialect === 'postgres' ? 'bigserial' : 'integer';
        await db.schema
          .createTable('events')
          .addColumn('id', sql.raw(key) as any, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('machine_id', 'text', (c) => c.notNull())
          .addColumn('customer_id', 'text')
          .addColumn('at', 'text', (c) => c.notNull())
          .addColumn('received_at', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('severity', 'text')
          .addColumn('body', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('events_machine_at').on('events').columns(['machine_id', 'at', 'id']).execute();
        await db.schema.createIndex('events_source_at').on('events').columns(['source', 'at', 'id']).execute();
        await db.schema.createIndex('events_at').on('events').columns(['at', 'id']).execute();
        await db.schema.createIndex('events_customer_at').on('events').columns(['customer_id', 'at', 'id']).execute();
        await db.schema
          .createTable('yara_rules')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull().unique())
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('verdict', 'text', (c) => c.notNull())
          .addColumn('description', 'text')
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('hash_list_entries')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('list', 'text', (c) => c.notNull())
          .addColumn('algorithm', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .addColumn('verdict', 'text', (c) => c.notNull())
          .addColumn('description', 'text')
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('hash_list_entries_unique', ['list', 'algorithm', 'hash'])
          .execute();
        await db.schema.createIndex('hash_list_entries_hash').on('hash_list_entries').columns(['algorithm', 'hash']).execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('hash_list_entries').execute();
        await db.schema.dropTable('yara_rules').execute();
        await db.schema.dropTable('events').execute();
      },
    },
    '0017_rules_alerts': {
      // Correlation rules added through the API (rules from AEGIS_RULES_DIR live in memory)
      // and the alerts they raise, one per rule, group and window.
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('correlation_rules')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('title', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('body', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('alerts')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('rule_id', 'text', (c) => c.notNull())
          .addColumn('rule_title', 'text', (c) => c.notNull())
          .addColumn('level', 'text', (c) => c.notNull())
          .addColumn('group_key', 'text', (c) => c.notNull())
          .addColumn('machine_id', 'text', (c) => c.notNull())
          .addColumn('customer_id', 'text')
          .addColumn('first_event_at', 'text', (c) => c.notNull())
          .addColumn('last_event_at', 'text', (c) => c.notNull())
          .addColumn('evidence', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('alerts_rule_group').on('alerts').columns(['rule_id', 'group_key', 'created_at']).execute();
        await db.schema.createIndex('alerts_machine_created').on('alerts').columns(['machine_id', 'created_at']).execute();
        await db.schema.createIndex('alerts_customer_created').on('alerts').columns(['customer_id', 'created_at']).execute();
        await db.schema.createIndex('alerts_created').on('alerts').columns(['created_at', 'id']).execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('alerts').execute();
        await db.schema.dropTable('correlation_rules').execute();
      },
    },
    '0018_decisions': {
      // What an alert of a rule with an action decided, and what that did: one row per
      // decision; `open_key` (rule and machine) is set while it is open, so a second open
      // decision for the same rule and machine cannot be inserted.
      async up(db: Kysely<any>) {
        const key = dialect === 'postgres' ? 'bigserial' : 'integer';
        await db.schema
          .createTable('decisions')
          .addColumn('id', sql.raw(key) as any, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('rule_id', 'text', (c) => c.notNull())
          .addColumn('alert_id', 'text', (c) => c.notNull())
          .addColumn('customer_id', 'text')
          .addColumn('machine_id', 'text', (c) => c.notNull())
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('mode', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('evidence', 'text', (c) => c.notNull())
          .addColumn('revisions', 'text', (c) => c.notNull())
          .addColumn('open_key', 'text', (c) => c.unique())
          .addColumn('canary_started_at', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('decided_at', 'text')
          .addColumn('decided_by', 'text')
          .addColumn('reason', 'text')
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('decisions_created').on('decisions').columns(['created_at', 'id']).execute();
        await db.schema.createIndex('decisions_state').on('decisions').columns(['state', 'created_at']).execute();
        await db.schema.createIndex('decisions_customer_created').on('decisions').columns(['customer_id', 'created_at', 'id']).execute();
        await db.schema.createIndex('decisions_machine_created').on('decisions').columns(['machine_id', 'created_at', 'id']).execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('decisions').execute();
      },
    },
    // Scale-out: what one replica knew alone, in the database every replica shares.
    '0019_shared_state': {
      async up(db: Kysely<any>) {
        // NATS users issued to machines and their revocations (was <keys>/nats/state.json).
        await db.schema
          .createTable('nats_users')
          .addColumn('user_key', 'text', (c) => c.primaryKey())
          .addColumn('machine_id', 'text', (c) => c.notNull())
          .addColumn('host', 'text', (c) => c.notNull())
          .addColumn('issued_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .addColumn('revoked_at', 'bigint')
          .execute();
        await db.schema.createIndex('nats_users_machine').on('nats_users').column('machine_id').execute();
        // Token buckets of the rate limits (one row a key, changed by one atomic upsert).
        await db.schema
          .createTable('rate_buckets')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('tokens', 'double precision', (c) => c.notNull())
          .addColumn('updated_ms', 'bigint', (c) => c.notNull())
          .addColumn('full_at_ms', 'bigint', (c) => c.notNull())
          .addColumn('ok', 'integer', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('rate_buckets_full').on('rate_buckets').column('full_at_ms').execute();
        // Console sessions (SHA-256 of the cookie, never the cookie) and their CSRF tokens.
        await db.schema
          .createTable('console_sessions')
          .addColumn('id_hash', 'text', (c) => c.primaryKey())
          .addColumn('api_key_id', 'text', (c) => c.notNull())
          .addColumn('csrf', 'text', (c) => c.notNull())
          .addColumn('expires_ms', 'bigint', (c) => c.notNull())
          .addColumn('created_ms', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('console_sessions_expires').on('console_sessions').column('expires_ms').execute();
        // Singleton work: who holds it, until when, and a fencing epoch bumped on every takeover.
        await db.schema
          .createTable('leases')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('holder', 'text', (c) => c.notNull())
          .addColumn('expires_ms', 'bigint', (c) => c.notNull())
          .addColumn('epoch', 'bigint', (c) => c.notNull())
          .execute();
      },
      async down(db: Kysely<any>) {
        for (const t of ['leases', 'console_sessions', 'rate_buckets', 'nats_users']) await db.schema.dropTable(t).execute();
      },
    },
    '0020_keyring': {
      // The database keyring (AEGIS_KEK_FILE, server/src/keys/db_keyring.ts): sealed keys
      // and secrets, and one state row (active kid, generation). Additive: a replica of the
      // previous version ignores both tables.
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('keyring_keys')
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('kid', 'text', (c) => c.notNull())
          .addColumn('public_pem', 'text')
          .addColumn('sealed', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('retired_at', 'text')
          .addPrimaryKeyConstraint('keyring_keys_pk', ['kind', 'kid'])
          .execute();
        await db.schema
          .createTable('keyring_state')
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .addColumn('generation', 'integer', (c) => c.notNull())
          .addColumn('active_kid', 'text')
          .execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('keyring_state').execute();
        await db.schema.dropTable('keyring_keys').execute();
      },
    },
    '0021_validation_indexes': {
      // Activation looks up the license's machines with the presented host key instead of
      // reading every active machine of the license (a site license holds thousands):
      // (license_id, host_key_thumbprint) finds them without scanning the license's seats.
      // EXPLAIN on 1M licenses and machines (bench/license) showed the culler scanning
      // every machine: it now starts from the licenses with heartbeats or floating seats.
      async up(db: Kysely<any>) {
        await db.schema.createIndex('machines_license_hostkey').on('machines').columns(['license_id', 'host_key_thumbprint']).execute();
        // The culler starts from the licenses with heartbeats or floating seats.
        await db.schema.createIndex('licenses_heartbeat').on('licenses').column('heartbeat_interval_seconds').execute();
        await db.schema.createIndex('licenses_floating').on('licenses').column('floating').execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropIndex('licenses_floating').execute();
        await db.schema.dropIndex('licenses_heartbeat').execute();
        await db.schema.dropIndex('machines_license_hostkey').execute();
      },
    },
  };
}

/** Every migration this server knows, in order. */
export function migrationNames(dialect: Dialect): string[] {
  return Object.keys(migrations(dialect)).sort();
}

class StaticProvider implements MigrationProvider {
  constructor(private readonly dialect: Dialect) {}
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations(this.dialect);
  }
}

export interface MigrationOutcome {
  applied: string[];
}

/** The migrator over this server's migrations (written against an untyped schema: they create the types' tables). */
export function migratorFor(db: Kysely<Database>, dialect: Dialect): Migrator {
  return new Migrator({ db: db as Kysely<any>, provider: new StaticProvider(dialect) });
}

export async function migrateToLatest(db: Kysely<Database>, dialect: Dialect): Promise<MigrationOutcome> {
  // Rolling upgrade: a replica of version N restarting after one of N+1 migrated meets
  // migrations it does not know. They are additive, so N runs on that schema, provided it
  // has every migration of its own (kysely's migrator would refuse the unknown ones).
  const known = new Set(migrationNames(dialect));
  const executed = (await db.introspection.getTables({ withInternalKyselyTables: true })).some((t) => t.name === 'kysely_migration')
    ? (await sql<{ name: string }>`select name from kysely_migration`.execute(db)).rows.map((r) => r.name)
    : [];
  const newer = executed.filter((n) => !known.has(n));
  if (newer.length > 0) {
    const missing = [...known].filter((n) => !executed.includes(n));
    if (missing.length > 0) throw new Error(`the database ran migrations of a newer server (${newer.join(', ')}) but not ${missing.join(', ')}; upgrade this server`);
    return { applied: [] };
  }
  const { error, results } = await migratorFor(db, dialect).migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return { applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName) };
}

/** Migrations this server knows that the database has not run (empty: the schema is current). */
export async function pendingMigrations(db: Kysely<Database>, dialect: Dialect): Promise<string[]> {
  const migrator = new Migrator({ db: db as Kysely<any>, provider: new StaticProvider(dialect) });
  return (await migrator.getMigrations()).filter((m) => m.executedAt === undefined).map((m) => m.name);
}
