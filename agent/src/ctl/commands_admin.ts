/**
 * Admin commands: aegis-server's customers, licenses and published signing keys, over its
 * HTTP API with an admin API key.
 */
import { Command, Option } from 'commander';
import {
  FEATURES,
  LICENSED_TIERS,
  LICENSE_STATUSES,
  LICENSE_TYPES,
  type Customer,
  type CustomerInput,
  type Feature,
  type IssueLicenseRequest,
  type Jwk,
  type License,
  type LicensedTier,
  type LicenseStatus,
  type LicenseType,
  type Machine,
  type Paged,
} from '../../../protocol/src/index.js';
import { contextOf, parseIntRange, parseIsoDate, parseList, parseText, type Ctx, type CtlIo } from './context.js';
import { UsageError, ProtocolError } from './errors.js';
import { readOfflineFile, writeOfflineFile } from './offline_files.js';
import type { Column } from './output.js';
import { formatWhen } from './time_format.js';

type Action = (ctx: Ctx, args: string[], opts: Record<string, unknown>) => Promise<void>;

/** Wraps a command body: builds the context from the global options, passes operands and options. */
export function action(io: CtlIo, fn: Action) {
  return async (...params: unknown[]): Promise<void> => {
    const cmd = params[params.length - 1] as Command;
    const opts = params[params.length - 2] as Record<string, unknown>;
    const args = params.slice(0, -2) as string[];
    await fn(contextOf(cmd, io), args, opts);
  };
}

const yesNo = (b: boolean) => (b ? 'yes' : 'no');
const orDash = (s: string | null | undefined) => (s === null || s === undefined || s === '' ? '-' : s);
const list = (xs: readonly string[]) => (xs.length === 0 ? '-' : xs.join(', '));

function pageSummary(p: Paged<unknown>, noun: string): string {
  if (p.items.length === 0) return p.total > 0 ? `no ${noun} at offset ${p.offset} (${p.total} in total)` : '';
  const from = p.offset + 1;
  const to = p.offset + p.items.length;
  const more = to < p.total ? `; next page: --offset ${to}` : '';
  return `${from}-${to} of ${p.total} ${noun}${more}`;
}

// --- customers --------------------------------------------------------------------

function customerColumns(now: Date): Array<Column<Customer>> {
  return [
    { header: 'ID', value: (c) => c.id },
    { header: 'NAME', value: (c) => c.name },
    { header: 'EMAIL', value: (c) => orDash(c.email) },
    { header: 'COMPANY', value: (c) => orDash(c.company) },
    { header: 'ACTIVE', value: (c) => yesNo(c.is_active) },
    { header: 'CREATED', value: (c) => formatWhen(c.created_at, now).split(' (')[0]! },
  ];
}

function showCustomer(ctx: Ctx, c: Customer): void {
  ctx.out.fields([
    ['ID', c.id],
    ['Name', c.name],
    ['Email', orDash(c.email)],
    ['Company', orDash(c.company)],
    ['Active', yesNo(c.is_active)],
    ['Created', formatWhen(c.created_at, ctx.now)],
    ['Updated', formatWhen(c.updated_at, ctx.now)],
  ]);
}

/** --active/--inactive as the API's is_active, refusing both at once. */
function activeFlag(opts: Record<string, unknown>): boolean | undefined {
  if (opts.active && opts.inactive) throw new UsageError('give --active or --inactive, not both');
  if (opts.active) return true;
  if (opts.inactive) return false;
  return undefined;
}

/** --email X / --no-email (clear) as the API's value. */
function nullable(v: unknown): string | null | undefined {
  if (v === false) return null;
  return typeof v === 'string' ? v : undefined;
}

function customersCommand(io: CtlIo): Command {
  const customers = new Command('customers').description('customers of aegis-server (scopes customers:read, customers:write)');

  customers
    .command('list')
    .description('list customers')
    .option('--q <text>', 'search name, company and email')
    .option('--email <email>', 'exact email')
    .option('--active', 'only active customers')
    .option('--inactive', 'only inactive customers')
    .option('--limit <n>', 'page size (1-500)', parseIntRange(1, 500))
    .option('--offset <n>', 'skip this many', parseIntRange(0, 999_999_999))
    .action(
      action(io, async (ctx, _args, o) => {
        const server = ctx.server();
        const filters = { q: o.q as string | undefined, email: o.email as string | undefined, is_active: activeFlag(o), limit: o.limit as number | undefined, offset: o.offset as number | undefined };
        const page = await ctx.out.waiting(`listing customers on ${server.origin}`, () => server.listCustomers(filters));
        ctx.out.result(page, () => {
          ctx.out.table(customerColumns(ctx.now), page.items, 'no customers found');
          const s = pageSummary(page, 'customers');
          if (s) ctx.out.line(s);
        });
      }),
    );

  customers
    .command('create')
    .description('create a customer')
    .requiredOption('--name <name>', 'name', parseText(200))
    .option('--email <email>', 'contact email', parseText(320))
    .option('--company <company>', 'company', parseText(200))
    .option('--inactive', 'create it inactive (no licenses can be issued)')
    .action(
      action(io, async (ctx, _args, o) => {
        const server = ctx.server();
        const input: CustomerInput = { name: o.name as string };
        if (o.email !== undefined) input.email = o.email as string;
        if (o.company !== undefined) input.company = o.company as string;
        if (o.inactive) input.is_active = false;
        const c = await ctx.out.waiting(`creating customer on ${server.origin}`, () => server.createCustomer(input));
        ctx.out.result(c, () => {
          ctx.out.line(`created customer ${c.id}`);
          showCustomer(ctx, c);
        });
      }),
    );

  customers
    .command('show')
    .description('show one customer')
    .argument('<id>', 'customer id')
    .action(
      action(io, async (ctx, [id]) => {
        const server = ctx.server();
        const c = await ctx.out.waiting(`fetching customer from ${server.origin}`, () => server.getCustomer(id!));
        ctx.out.result(c, () => showCustomer(ctx, c));
      }),
    );

  customers
    .command('update')
    .description('change a customer')
    .argument('<id>', 'customer id')
    .option('--name <name>', 'new name', parseText(200))
    .option('--email <email>', 'new email', parseText(320))
    .option('--no-email', 'remove the email')
    .option('--company <company>', 'new company', parseText(200))
    .option('--no-company', 'remove the company')
    .option('--active', 'mark active')
    .option('--inactive', 'mark inactive')
    .action(
      action(io, async (ctx, [id], o) => {
        const patch: Partial<CustomerInput> = {};
        if (o.name !== undefined) patch.name = o.name as string;
        const email = nullable(o.email);
        if (email !== undefined) patch.email = email;
        const company = nullable(o.company);
        if (company !== undefined) patch.company = company;
        const active = activeFlag(o);
        if (active !== undefined) patch.is_active = active;
        if (Object.keys(patch).length === 0) {
          throw new UsageError('nothing to update', { hint: 'give at least one of --name, --email, --no-email, --company, --no-company, --active, --inactive' });
        }
        const server = ctx.server();
        const c = await ctx.out.waiting(`updating customer on ${server.origin}`, () => server.updateCustomer(id!, patch));
        ctx.out.result(c, () => {
          ctx.out.line(`updated customer ${c.id}`);
          showCustomer(ctx, c);
        });
      }),
    );

  customers
    .command('delete')
    .description('delete a customer (refused while it has active licenses, unless --force)')
    .argument('<id>', 'customer id')
    .option('--force', 'also delete its licenses, even active ones')
    .action(
      action(io, async (ctx, [id], o) => {
        const server = ctx.server();
        await ctx.out.waiting(`deleting customer on ${server.origin}`, () => server.deleteCustomer(id!, o.force === true));
        ctx.out.result({ deleted: true, id }, () => ctx.out.line(`deleted customer ${id}${o.force ? ' and its licenses' : ''}`));
      }),
    );
  return customers;
}

// --- licenses ---------------------------------------------------------------------

function seats(l: License): string {
  return String(l.max_machines);
}

function licenseColumns(now: Date): Array<Column<License>> {
  return [
    { header: 'ID', value: (l) => l.id },
    { header: 'CUSTOMER', value: (l) => l.customer_id },
    { header: 'TIER', value: (l) => l.tier },
    { header: 'TYPE', value: (l) => l.license_type },
    { header: 'STATUS', value: (l) => l.status },
    { header: 'KEY', value: (l) => `…${l.key_suffix}` },
    { header: 'SEATS', value: seats, right: true },
    { header: 'EXPIRES', value: (l) => (l.expires_at ? formatWhen(l.expires_at, now).split(' (')[0]! : 'never') },
  ];
}

function licenseFields(ctx: Ctx, l: License): Array<[string, string]> {
  const fields: Array<[string, string]> = [
    ['ID', l.id],
    ['Customer', l.customer_id],
    ['Status', l.status],
    ['Tier', l.tier],
    ['Type', l.license_type],
    ['Key', `…${l.key_suffix} (the last five characters; the server keeps no more)`],
    ['Max machines', seats(l)],
    ['Agent versions', l.allowed_major_versions.length === 0 ? 'any' : l.allowed_major_versions.join(', ')],
    ['Features', list(l.features)],
    ['Expires', formatWhen(l.expires_at, ctx.now, 'never (perpetual)')],
  ];
  if (l.extra_features.length > 0) fields.splice(9, 0, ['Extra features', list(l.extra_features)]);
  if (l.revoked_at) {
    fields.push(['Revoked', formatWhen(l.revoked_at, ctx.now)]);
    fields.push(['Revoke reason', orDash(l.revoke_reason)]);
  }
  fields.push(['Created', formatWhen(l.created_at, ctx.now)]);
  return fields;
}

function machineColumns(now: Date): Array<Column<Machine>> {
  const ago = (s: string) => formatWhen(s, now).split(' (')[0]!;
  return [
    { header: 'MACHINE', value: (m) => m.id },
    { header: 'HOSTNAME', value: (m) => m.hostname },
    { header: 'STATUS', value: (m) => m.status },
    { header: 'HWID', value: (m) => (m.hardware_id.length > 19 ? m.hardware_id.slice(0, 19) + '…' : m.hardware_id) },
    { header: 'AGENT', value: (m) => m.agent_version },
    { header: 'ACTIVATED', value: (m) => ago(m.activated_at) },
    { header: 'LAST SEEN', value: (m) => ago(m.last_seen_at) },
  ];
}

const VERSION_PATTERN = /^[0-9]{1,6}$/;

function licensesCommand(io: CtlIo): Command {
  const licenses = new Command('licenses').description('licenses of aegis-server (scopes licenses:read, licenses:write)');

  licenses
    .command('issue')
    .description('issue a license; prints its key once')
    .requiredOption('--customer <id>', 'customer id')
    .addOption(new Option('--tier <tier>', 'tier').choices([...LICENSED_TIERS]).makeOptionMandatory())
    .addOption(new Option('--type <type>', 'license type').choices([...LICENSE_TYPES]).makeOptionMandatory())
    .addOption(new Option('--days <n>', 'valid for N days (subscription, demo)').argParser(parseIntRange(1, 36500)).conflicts('expires'))
    .addOption(new Option('--expires <iso>', 'expires at this date/time (subscription, demo)').argParser(parseIsoDate))
    .option('--machines <n>', 'seats: machines that may activate (default 1)', parseIntRange(1, 100000))
    .option(
      '--versions <list>',
      'allowed major versions of aegis-agent, e.g. 1,2 (default: any)',
      parseList((v) => (VERSION_PATTERN.test(v) ? null : `"${v}" is not a major version number`)),
    )
    .option(
      '--features <list>',
      `extra features beyond the tier's, comma-separated (${FEATURES.join(', ')})`,
      parseList((f) => ((FEATURES as readonly string[]).includes(f) ? null : `unknown feature "${f}"; known: ${FEATURES.join(', ')}`)),
    )
    .action(
      action(io, async (ctx, _args, o) => {
        if (o.type === 'perpetual' && (o.days !== undefined || o.expires !== undefined)) {
          throw new UsageError('a perpetual license has no expiry', { hint: 'drop --days/--expires, or use --type subscription' });
        }
        if (o.type === 'subscription' && o.days === undefined && o.expires === undefined) {
          throw new UsageError('a subscription needs an expiry', { hint: 'give --days N or --expires ISO-DATE' });
        }
        // commander's choices() already limited --tier and --type to these values.
        const input: IssueLicenseRequest = { customer_id: o.customer as string, tier: o.tier as LicensedTier, license_type: o.type as LicenseType };
        if (o.days !== undefined) input.duration_days = o.days as number;
        if (o.expires !== undefined) input.expires_at = o.expires as string;
        if (o.machines !== undefined) input.max_machines = o.machines as number;
        if (o.versions !== undefined) input.allowed_major_versions = o.versions as string[];
        if (o.features !== undefined) input.features = o.features as Feature[];
        const server = ctx.server();
        const l = await ctx.out.waiting(`issuing license on ${server.origin}`, () => server.issueLicense(input));
        ctx.out.result(l, () => {
          ctx.out.line(`issued license ${l.id}`);
          ctx.out.line();
          ctx.out.line(`    ${l.license_key}`);
          ctx.out.line();
          ctx.out.line('  This key is shown only this once: the server keeps only a hash. Give it to the');
          ctx.out.line(`  customer; a host activates with: aegisctl activate ${l.license_key}`);
          ctx.out.line();
          const { license_key: _key, ...license } = l;
          ctx.out.fields(licenseFields(ctx, license));
        });
      }),
    );

  licenses
    .command('list')
    .description('list licenses')
    .option('--customer <id>', 'only this customer')
    .addOption(new Option('--status <status>', 'only this status').choices([...LICENSE_STATUSES]))
    .addOption(new Option('--tier <tier>', 'only this tier').choices([...LICENSED_TIERS]))
    .addOption(new Option('--type <type>', 'only this license type').choices([...LICENSE_TYPES]))
    .option('--limit <n>', 'page size (1-500)', parseIntRange(1, 500))
    .option('--offset <n>', 'skip this many', parseIntRange(0, 999_999_999))
    .action(
      action(io, async (ctx, _args, o) => {
        const server = ctx.server();
        const page = await ctx.out.waiting(`listing licenses on ${server.origin}`, () =>
          server.listLicenses({
            customer_id: o.customer as string | undefined,
            status: o.status as LicenseStatus | undefined,
            tier: o.tier as LicensedTier | undefined,
            license_type: o.type as LicenseType | undefined,
            limit: o.limit as number | undefined,
            offset: o.offset as number | undefined,
          }),
        );
        ctx.out.result(page, () => {
          ctx.out.table(licenseColumns(ctx.now), page.items, 'no licenses found');
          const s = pageSummary(page, 'licenses');
          if (s) ctx.out.line(s);
        });
      }),
    );

  licenses
    .command('show')
    .description('show one license and the machines bound to it')
    .argument('<id>', 'license id')
    .action(
      action(io, async (ctx, [id]) => {
        const server = ctx.server();
        const [l, machines] = await ctx.out.waiting(`fetching license from ${server.origin}`, async () => {
          const license = await server.getLicense(id!);
          return [license, await server.licenseMachines(id!)] as const;
        });
        ctx.out.result({ ...l, machines }, () => {
          ctx.out.fields(licenseFields(ctx, l));
          const active = machines.filter((m) => m.status === 'active').length;
          ctx.out.line();
          ctx.out.line(`Machines (${active} of ${l.max_machines} seats in use):`);
          ctx.out.table(machineColumns(ctx.now), machines, '  none activated yet');
        });
      }),
    );

  licenses
    .command('revoke')
    .description('revoke a license; its machines fall back to the community edition at their next refresh')
    .argument('<id>', 'license id')
    .requiredOption('--reason <text>', 'why (kept in the audit log)', parseText(500))
    .action(
      action(io, async (ctx, [id], o) => {
        const server = ctx.server();
        const l = await ctx.out.waiting(`revoking license on ${server.origin}`, () => server.revokeLicense(id!, o.reason as string));
        ctx.out.result(l, () => {
          ctx.out.line(`revoked license ${l.id} ${formatWhen(l.revoked_at, ctx.now)}: ${orDash(l.revoke_reason)}`);
        });
      }),
    );
  return licenses;
}

// --- keys -------------------------------------------------------------------------

function keysCommand(io: CtlIo): Command {
  return new Command('keys')
    .description("aegis-server's published signing keys (/.well-known/jwks.json; no API key needed)")
    .action(
      action(io, async (ctx) => {
        const server = ctx.server({ anonymous: true });
        const jwks = await ctx.out.waiting(`fetching signing keys from ${server.origin}`, () => server.jwks());
        if (typeof jwks !== 'object' || jwks === null || !Array.isArray(jwks.keys)) {
          throw new ProtocolError(`aegis-server at ${server.origin} published no key set`, { hint: 'is --server an aegis-server?' });
        }
        ctx.out.result(jwks, () => {
          ctx.out.table<Jwk>(
            [
              { header: 'KID', value: (k) => String(k.kid ?? '-') },
              { header: 'ALG', value: (k) => String(k.alg ?? '-') },
              { header: 'CRV', value: (k) => String(k.crv ?? '-') },
              { header: 'X', value: (k) => String(k.x ?? '-') },
            ],
            jwks.keys,
            'no signing keys published',
          );
        });
      }),
    );
}

// --- offline activation ------------------------------------------------------------

/** The operator's side of offline activation: request file → license file, release file → seat freed. */
function offlineCommands(io: CtlIo): Command[] {
  const activate = new Command('offline-activate')
    .description('turn an offline activation request (aegisctl activate --offline on the host) into a machine-bound license file')
    .argument('<request>', 'the request file')
    .requiredOption('--out <file>', 'where to write the license file (mode 0600)')
    .action(
      action(io, async (ctx, [path], opts) => {
        const request = readOfflineFile(path!, 'activation request');
        const file = await ctx.server().offlineActivate(request);
        const out = opts.out as string;
        await writeOfflineFile(out, file);
        ctx.out.result({ written: out, machine_id: file.machine_id, license_id: file.license_id, hostname: file.hostname, license_expires_at: file.bundle.license_expires_at }, () => {
          ctx.out.line(`wrote the license file ${out} for machine ${file.machine_id}; on the host: aegisctl install-license ${out}`);
          ctx.out.fields([
            ['Host', file.hostname],
            ['License', file.license_id],
            ['License expires', formatWhen(file.bundle.license_expires_at, ctx.now, 'never')],
            ['Kernel token expires', formatWhen(file.bundle.kernel_token_expires_at, ctx.now)],
          ]);
        });
      }),
    );
  const deactivate = new Command('offline-deactivate')
    .description('free the seat of a host that released it offline (aegisctl deactivate --offline on the host)')
    .argument('<release>', 'the release file')
    .action(
      action(io, async (ctx, [path]) => {
        const release = readOfflineFile(path!, 'release file');
        const m = await ctx.server().offlineDeactivate(release);
        ctx.out.result(m, () => ctx.out.line(`deactivated machine ${m.id} (${m.hostname}); its seat is free`));
      }),
    );
  return [activate, deactivate];
}

export function adminCommands(io: CtlIo): Command[] {
  return [customersCommand(io), licensesCommand(io), keysCommand(io), ...offlineCommands(io)];
}
