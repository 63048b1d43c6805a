/**
 * Local commands: the running aegis-agent on this host, over its Unix socket.
 */
import { Command } from 'commander';
import { LICENSE_KEY_ALPHABET, normalizeLicenseKey } from '../../../protocol/src/index.js';
import { FLOW_LOG_VERDICTS } from '../../../protocol/src/index.js';
import type { AgentFlowEntry, AgentKmodHwid, AgentSnapshots, AgentStatus, FlowsQuery } from './agent_client.js';
import type { Column } from './output.js';
import { action } from './commands_admin.js';
import type { Ctx, CtlIo } from './context.js';
import { UsageError } from './errors.js';
import { readOfflineFile, writeOfflineFile } from './offline_files.js';
import { formatDuration, formatEpoch, formatWhen } from './time_format.js';

const orDash = (v: unknown) => (v === null || v === undefined || v === '' ? '-' : String(v));
const list = (xs: readonly unknown[] | null | undefined) => (!xs || xs.length === 0 ? '-' : xs.map(String).join(', '));

/**
 * The canonical key, or a UsageError saying what is wrong with it. Checked here so a typo
 * never reaches the agent (or burns a rate-limit slot on the server). The key itself is
 * not echoed: it is a secret.
 */
export function checkLicenseKey(input: string): string {
  const key = normalizeLicenseKey(input);
  if (key !== null) return key;
  const compact = input.toUpperCase().replace(/[\s-]/g, '').replace(/^AEGIS/, '');
  const expected = 'expected AEGIS-XXXXX-XXXXX-XXXXX-XXXXX';
  if (compact.length !== 20) {
    throw new UsageError(`malformed license key: ${expected} (20 characters after AEGIS-), got ${compact.length}`, { hint: 'copy the key again' });
  }
  const body = compact.slice(0, 19).replace(/O/g, '0').replace(/[IL]/g, '1');
  const bad = [...new Set([...body].filter((c) => !LICENSE_KEY_ALPHABET.includes(c)))];
  if (bad.length > 0) {
    throw new UsageError(`malformed license key: it contains ${bad.map((c) => JSON.stringify(c)).join(', ')}, which no license key has`, { hint: 'copy the key again' });
  }
  throw new UsageError('license key has a typo: its check character does not match', { hint: 'compare it character by character with the key you were given' });
}

async function readKeyFromStdin(io: CtlIo): Promise<string> {
  const text = await io.readStdin();
  const first = text.split(/\r?\n/).find((l) => l.trim().length > 0);
  if (!first) throw new UsageError('no license key on standard input');
  return first.trim();
}

/**
 * The kernel module line: its verdict, and a WARNING when it was not loaded with this
 * machine's hwid (it then accepts tokens copied from other machines, or refuses ours).
 */
export function kmodLine(status: string | null, hwid: AgentKmodHwid | undefined): string {
  if (!hwid) return orDash(status);
  if (hwid.state === 'not_loaded') return status ? status : 'not loaded';
  if (hwid.state === 'bound') return `${orDash(status)} (hwid bound to this machine)`;
  return `${orDash(status)} (WARNING: ${hwid.warning ?? hwid.state})`;
}

function showStatus(ctx: Ctx, s: AgentStatus): void {
  // The agent's reason may already say "datapath unavailable: …".
  const datapath = s.datapath.available ? 'available' : `unavailable: ${orDash(s.datapath.reason).replace(/^datapath unavailable:\s*/i, '')}`;
  ctx.out.fields([
    ['Edition', `${s.edition} (${s.edition_reason})`],
    ['License state', s.license_state === 'grace' ? `grace (until ${orDash(s.grace_ends_at)})` : orDash(s.license_state)],
    ['Tier', orDash(s.tier)],
    ['Features', list(s.features)],
    ['Machine', orDash(s.machine_id)],
    ['Hostname', s.hostname],
    ['Agent version', s.version],
    ['Datapath', datapath],
    ['Kernel token', s.token_fallback ? `${s.token_path} (fallback: the configured path is not writable)` : s.token_path],
    ['Kernel module', s.kmod ? kmodLine(s.kmod.status, s.kmod) : '-'],
    ['Uptime', formatDuration(s.uptime_s)],
  ]);
  ctx.out.line();
  ctx.out.table(
    [
      { header: 'SERVICE', value: (v: AgentStatus['services'][number]) => String(v.service_id) },
      { header: 'CGROUP', value: (v) => orDash(v.cgroup) },
      { header: 'BOUND', value: (v) => (v.bound ? 'yes' : 'no') },
      { header: 'ERROR', value: (v) => orDash(v.error) },
    ],
    s.services,
    'no services configured',
  );
}

type SnapshotRow = AgentSnapshots['services'][number];

/** The columns of `aegisctl flows`: one verdict per row. */
const FLOW_COLUMNS: ReadonlyArray<Column<AgentFlowEntry>> = [
  { header: 'TIME', value: (e) => e.time.replace('T', ' ').replace(/Z$/, '') },
  { header: 'SERVICE', value: (e) => String(e.service_id), right: true },
  { header: 'DIR', value: (e) => (e.direction === 'ingress' ? 'in' : 'out') },
  { header: 'VERDICT', value: (e) => e.verdict },
  { header: 'PROTO', value: (e) => String(e.proto) },
  { header: 'REMOTE', value: (e) => (e.remote.includes(':') ? `[${e.remote}]:${e.port}` : `${e.remote}:${e.port}`) },
  { header: 'RULE', value: (e) => (e.rule === null ? '-' : String(e.rule)), right: true },
  { header: 'REV', value: (e) => orDash(e.revision), right: true },
  { header: 'REASON', value: (e) => e.reason },
];

/** The flags of `aegisctl flows`, checked before anything is asked of the agent. */
export function flowsQuery(opts: { service?: string; verdict?: string; limit?: string }): FlowsQuery {
  const q: FlowsQuery = {};
  if (opts.service !== undefined) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(opts.service) || Number(opts.service) > 0xffffffff) throw new UsageError(`--service must be a service id (an integer), got ${JSON.stringify(opts.service)}`);
    q.service = Number(opts.service);
  }
  if (opts.verdict !== undefined) {
    if (!(FLOW_LOG_VERDICTS as readonly string[]).includes(opts.verdict)) throw new UsageError(`--verdict must be one of ${FLOW_LOG_VERDICTS.join(', ')}, got ${JSON.stringify(opts.verdict)}`);
    q.verdict = opts.verdict;
  }
  if (opts.limit !== undefined) {
    if (!/^[1-9][0-9]{0,6}$/.test(opts.limit)) throw new UsageError(`--limit must be a positive integer, got ${JSON.stringify(opts.limit)}`);
    q.limit = Number(opts.limit);
  }
  return q;
}

export function localCommands(io: CtlIo): Command[] {
  const status = new Command('status').description("this host's agent: edition, license tier, datapath, services").action(
    action(io, async (ctx) => {
      const agent = ctx.agent();
      const s = await ctx.out.waiting('asking aegis-agent', () => agent.status());
      ctx.out.result(s, () => showStatus(ctx, s));
    }),
  );

  const hwid = new Command('hwid').description("this host's hardware fingerprint and the facts it came from").action(
    action(io, async (ctx) => {
      const agent = ctx.agent();
      const h = await ctx.out.waiting('asking aegis-agent', () => agent.hwid());
      ctx.out.result(h, () => {
        const c = h.components ?? {};
        ctx.out.fields([
          ['Hardware id', h.hardware_id],
          ['Version', orDash(h.version)],
          ['Machine id', orDash(c.machine_id)],
          ['System UUID', orDash(c.system_uuid)],
          ['Board serial', orDash(c.board_serial)],
          ['CPU model', orDash(c.cpu_model)],
          ['MACs', list(c.macs)],
          ['Disk serials', list(c.disk_serials)],
          ['Ignored interfaces', list(h.ignored_interfaces)],
        ]);
      });
    }),
  );

  const license = new Command('license').description("this host's license as the agent holds it: state, expiry, refreshes").action(
    action(io, async (ctx) => {
      const agent = ctx.agent();
      const l = await ctx.out.waiting('asking aegis-agent', () => agent.license());
      ctx.out.result(l, () => {
        const c = l.license ?? {};
        const customer = c.customer as { name?: unknown } | undefined;
        const fields: Array<[string, string]> = [
          ['State', l.state + (l.retrying ? ' (retrying)' : '') + (l.reason ? `: ${l.reason}` : '')],
          ['Machine', orDash(l.machine_id)],
        ];
        if (l.license) {
          fields.push(
            ['License', orDash(c.license_id)],
            ['Customer', orDash(customer?.name)],
            ['Tier', orDash(c.tier)],
            ['Type', orDash(c.license_type)],
            ['Features', list(Array.isArray(c.features) ? c.features : null)],
          );
        }
        fields.push(
          ['License expires', formatWhen(l.license_expires_at, ctx.now, l.license ? 'never' : '-')],
          ['Kernel token expires', formatWhen(l.kernel_token_expires_at, ctx.now)],
          ['Last refresh', formatWhen(l.last_refresh_at, ctx.now, 'never')],
          ['Next refresh', formatWhen(l.next_refresh_at, ctx.now)],
          ['Last error', l.last_error ? `${l.last_error.code}: ${l.last_error.message}` : '-'],
        );
        ctx.out.fields(fields);
      });
    }),
  );

  const activate = new Command('activate')
    .description('activate this host with a license key (use "-" to read the key from standard input, keeping it out of ps); --offline writes a signed request file for an operator instead')
    .argument('[key]', 'license key, AEGIS-XXXXX-XXXXX-XXXXX-XXXXX, or -')
    .option('--license-key <key>', 'the license key (instead of the argument)')
    .option('--offline', 'air-gapped host: write a signed activation request (aegisctl offline-activate turns it into a license file)')
    .option('--out <file>', 'with --offline: where to write the request (mode 0600)')
    .action(
      action(io, async (ctx, [arg], opts) => {
        const raw = (opts.licenseKey as string | undefined) ?? arg;
        if (raw === undefined) throw new UsageError("missing required argument 'key' (or --license-key)");
        const key = checkLicenseKey(raw === '-' ? await readKeyFromStdin(io) : raw);
        const agent = ctx.agent();
        if (opts.offline) {
          const out = opts.out as string | undefined;
          if (!out) throw new UsageError('--offline needs --out FILE (where to write the request)');
          const request = await agent.offlineRequest(key);
          await writeOfflineFile(out, request);
          ctx.out.result({ written: out, format: request.format }, () =>
            ctx.out.line(`wrote the offline activation request ${out}; on a connected machine: aegisctl offline-activate ${out} --out license-file.json, then here: aegisctl install-license license-file.json`),
          );
          return;
        }
        if (opts.out) throw new UsageError('--out is for --offline only');
        const a = await ctx.out.waiting('activating (aegis-agent is asking aegis-server)', () => agent.activate(key));
        ctx.out.result(a, () => {
          ctx.out.line(`activated: this host is machine ${a.machine_id}`);
          ctx.out.fields([
            ['Tier', a.tier],
            ['Features', list(a.features)],
            ['License expires', formatWhen(a.license_expires_at, ctx.now, 'never')],
          ]);
        });
      }),
    );

  const deactivate = new Command('deactivate')
    .description("release this host's seat; the agent falls back to the community edition; --offline writes a signed release file for an operator")
    .option('--offline', 'air-gapped host: drop the license now and write a signed release (aegisctl offline-deactivate frees the seat)')
    .option('--out <file>', 'with --offline: where to write the release (mode 0600)')
    .action(
      action(io, async (ctx, _args, opts) => {
        const agent = ctx.agent();
        if (opts.offline) {
          const out = opts.out as string | undefined;
          if (!out) throw new UsageError('--offline needs --out FILE (where to write the release)');
          const { machine_id, ...file } = await agent.offlineRelease();
          try {
            await writeOfflineFile(out, file);
          } catch (e) {
            // The license is already dropped: say where the agent kept its copy.
            throw new UsageError(`released machine ${machine_id}, but cannot write ${out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
              hint: 'the agent keeps a copy as offline-release.json in its state dir; submit that one',
            });
          }
          ctx.out.result({ deactivated: true, machine_id, written: out }, () =>
            ctx.out.line(`released machine ${machine_id} here (community edition now); wrote ${out}: submit it with aegisctl offline-deactivate ${out} to free the seat`),
          );
          return;
        }
        if (opts.out) throw new UsageError('--out is for --offline only');
        const d = await ctx.out.waiting('deactivating (aegis-agent is asking aegis-server)', () => agent.deactivate());
        ctx.out.result(d, () => ctx.out.line(`deactivated machine ${orDash(d.machine_id)}; its seat is free and this host runs the community edition`));
      }),
    );

  const snapshots = new Command('snapshots').description('segmentation policy applied per service: revision, stage, mode, counters').action(
    action(io, async (ctx) => {
      const agent = ctx.agent();
      const s = await ctx.out.waiting('asking aegis-agent', () => agent.snapshots());
      ctx.out.result(s, () => {
        const n = (r: SnapshotRow, k: 'allowed' | 'dropped' | 'would_drop') => (r.counters ? String(r.counters[k]) : '-');
        ctx.out.table<SnapshotRow>(
          [
            { header: 'SERVICE', value: (r) => String(r.service_id) },
            { header: 'CGROUP', value: (r) => orDash(r.cgroup) },
            { header: 'REV', value: (r) => orDash(r.revision), right: true },
            { header: 'STAGE', value: (r) => orDash(r.stage) },
            { header: 'MODE', value: (r) => orDash(r.mode) },
            { header: 'TTL LEFT', value: (r) => (r.ttl_left_s === null ? '-' : formatDuration(r.ttl_left_s)), right: true },
            { header: 'ALLOWED', value: (r) => n(r, 'allowed'), right: true },
            { header: 'DROPPED', value: (r) => n(r, 'dropped'), right: true },
            { header: 'WOULD DROP', value: (r) => n(r, 'would_drop'), right: true },
          ],
          s.services,
          'no services configured',
        );
      });
    }),
  );

  const refresh = new Command('refresh').description('make aegis-agent refresh its license and kernel token from aegis-server now').action(
    action(io, async (ctx) => {
      const agent = ctx.agent();
      const r = await ctx.out.waiting('refreshing (aegis-agent is asking aegis-server)', () => agent.refresh());
      ctx.out.result(r, () =>
        ctx.out.fields([
          ['State', r.state + (r.reason ? `: ${r.reason}` : '')],
          ['Kernel token expires', formatWhen(r.kernel_token_expires_at, ctx.now)],
          ['Last error', r.last_error ? `${r.last_error.code}: ${r.last_error.message}` : '-'],
        ]),
      );
    }),
  );

  const reload = new Command('reload').description('make aegis-agent reload its configuration').action(
    action(io, async (ctx) => {
      const agent = ctx.agent();
      const r = await ctx.out.waiting('asking aegis-agent to reload', () => agent.reload());
      ctx.out.result(r, () => ctx.out.line('aegis-agent reloaded its configuration'));
    }),
  );

  const token = new Command('token').description('the kernel entitlement token');
  token
    .command('show')
    .description('decoded header and claims of the kernel token, its expiry, and what the kernel module says')
    .action(
      action(io, async (ctx) => {
        const agent = ctx.agent();
        const t = await ctx.out.waiting('asking aegis-agent', () => agent.token());
        ctx.out.result(t, () => {
          if (!t.present) {
            ctx.out.fields([
              ['Path', t.path],
              ['Present', 'no (the host is not activated, or the token was not written yet)'],
              ['Kernel module', kmodLine(t.kmod_status, t.kmod_hwid)],
            ]);
            return;
          }
          const h = t.header ?? {};
          const c = t.claims ?? {};
          ctx.out.fields([
            ['Path', t.path],
            ['Algorithm', orDash(h.alg)],
            ['Key id', orDash(h.kid)],
            ['Audience', orDash(c.aud)],
            ['Subject', orDash(c.sub)],
            ['Hardware id', orDash(c.hwid)],
            ['Tier', orDash(c.tier)],
            ['Features', list(Array.isArray(c.features) ? c.features : null)],
            ['Feature mask', typeof c.fmask === 'number' ? `0x${c.fmask.toString(16)} (${c.fmask})` : '-'],
            ['Issued', formatEpoch(c.iat, ctx.now)],
            ['Expires', t.expires_at ? formatWhen(t.expires_at, ctx.now) : formatEpoch(c.exp, ctx.now)],
            ['Kernel module', kmodLine(t.kmod_status, t.kmod_hwid)],
          ]);
        });
      }),
    );

  const flows = new Command('flows')
    .description("this host's recent flow verdicts: allowed (with the rule that allowed them), dropped, would-drop, cut")
    .option('-f, --follow', 'keep printing new verdicts as they happen (Ctrl-C to stop)')
    .option('--service <id>', 'only this service')
    .option('--verdict <verdict>', `only this verdict: ${FLOW_LOG_VERDICTS.join(', ')}`)
    .option('--limit <n>', 'at most this many recent entries (default 100)')
    .action(
      action(io, async (ctx, _args, opts: { follow?: boolean; service?: string; verdict?: string; limit?: string }) => {
        const q = flowsQuery(opts);
        const agent = ctx.agent();
        if (opts.follow) {
          // One line per entry as it comes: JSON lines, or the table's columns without alignment.
          if (!ctx.out.json) ctx.out.line(FLOW_COLUMNS.map((c) => c.header).join('  '));
          await agent.followFlows(q, (e) => ctx.out.line(ctx.out.json ? JSON.stringify(e) : FLOW_COLUMNS.map((c) => c.value(e)).join('  ')));
          return;
        }
        const f = await ctx.out.waiting('asking aegis-agent', () => agent.flows(q));
        if (ctx.out.json) {
          for (const e of f.entries) ctx.out.line(JSON.stringify(e));
          return;
        }
        ctx.out.table(FLOW_COLUMNS, f.entries, f.datapath ? 'no flow verdicts yet' : 'no flow verdicts (the datapath is unavailable: aegisctl status says why)');
      }),
    );

  const installLicense = new Command('install-license')
    .description('install a license file from an offline activation (no network needed); the agent verifies it is signed by a trusted server key and bound to this host')
    .argument('<file>', 'the license file aegisctl offline-activate wrote')
    .action(
      action(io, async (ctx, [path]) => {
        const file = readOfflineFile(path!, 'license file');
        const a = await ctx.agent().installLicense(file);
        ctx.out.result(a, () => {
          ctx.out.line(`installed: this host is machine ${a.machine_id}`);
          ctx.out.fields([
            ['Tier', a.tier],
            ['Features', list(a.features)],
            ['License expires', formatWhen(a.license_expires_at, ctx.now, 'never')],
          ]);
        });
      }),
    );

  return [status, hwid, license, activate, deactivate, installLicense, refresh, snapshots, reload, token, flows];
}
