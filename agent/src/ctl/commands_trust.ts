/**
 * `aegisctl trust add|list|remove`: the server signing keys this host's agent trusts,
 * pinned out of band in <state dir>/trust.json (written atomically, read by the agent on
 * every key decision, so no restart is needed). Pins in the agent config (trusted_keys,
 * trusted_jwks_path) are not touched here: edit the config for those.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, Option } from 'commander';
import {
  LEARNED_FILE,
  THUMBPRINT_PATTERN,
  TRUST_FILE,
  readLearned,
  readTrustFile,
  thumbprintsOfJwks,
  writeLearned,
  writeTrustFile,
  type TrustEntry,
} from '../trust_anchors.js';
import { action } from './commands_admin.js';
import type { CtlIo } from './context.js';
import { CtlError, UsageError } from './errors.js';
import { ExitCode } from './exit_codes.js';

const DEFAULT_STATE_DIR = '/var/lib/aegis';

const stateDirOption = () =>
  new Option('--state-dir <dir>', "the agent's state directory (where trust.json lives)").env('AEGIS_STATE_DIR').default(DEFAULT_STATE_DIR);

/** Reads trust.json, turning a damaged one into a clear failure. */
function entriesIn(path: string): TrustEntry[] {
  try {
    return readTrustFile(path);
  } catch (e) {
    throw new CtlError(ExitCode.FAILURE, (e as Error).message, { hint: `fix or remove ${path}` });
  }
}

function save(path: string, entries: TrustEntry[]): void {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 }); // pinned before the agent's first start
    writeTrustFile(path, entries);
  } catch (e) {
    throw new CtlError(ExitCode.FAILURE, `cannot write ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: 'run as root, or pass --state-dir' });
  }
}

/** A thumbprint as given, or the thumbprints of the keys in a JWKS/JWK file. */
function keysOf(arg: string): Array<{ thumbprint: string; kid: string | null }> {
  if (THUMBPRINT_PATTERN.test(arg)) return [{ thumbprint: arg, kid: null }];
  let text: string;
  try {
    text = readFileSync(arg, 'utf8');
  } catch (e) {
    throw new UsageError(`${arg} is neither a key thumbprint (43 base64url characters) nor a readable JWKS file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return thumbprintsOfJwks(JSON.parse(text));
  } catch (e) {
    throw new UsageError(`${arg}: ${(e as Error).message}`);
  }
}

export function trustCommand(io: CtlIo): Command {
  const trust = new Command('trust').description("the aegis-server signing keys this host's agent trusts (pinned in <state dir>/trust.json)");

  trust
    .command('add')
    .argument('<thumbprint|jwks-file>', 'an RFC 7638 key thumbprint, or a JWKS (or JWK) file whose keys to pin')
    .description('pin server signing keys: from then on the agent adopts no other key unless a pinned key signed it')
    .addOption(stateDirOption())
    .action(
      action(io, async (ctx, args, opts) => {
        const path = join(String(opts.stateDir), TRUST_FILE);
        const entries = entriesIn(path);
        const added: TrustEntry[] = [];
        for (const k of keysOf(args[0]!)) {
          if (entries.some((e) => e.thumbprint === k.thumbprint)) continue;
          const e = { thumbprint: k.thumbprint, kid: k.kid, added_at: ctx.now.toISOString() };
          entries.push(e);
          added.push(e);
        }
        if (added.length > 0) save(path, entries);
        ctx.out.result({ added, keys: entries }, () =>
          ctx.out.line(added.length > 0 ? `pinned ${added.map((e) => e.thumbprint).join(', ')} in ${path}` : `already pinned in ${path}`),
        );
      }),
    );

  trust
    .command('list')
    .description('the pinned server signing keys')
    .addOption(stateDirOption())
    .action(
      action(io, async (ctx, _args, opts) => {
        const path = join(String(opts.stateDir), TRUST_FILE);
        const entries = entriesIn(path);
        ctx.out.result({ keys: entries }, () =>
          ctx.out.table(
            [
              { header: 'THUMBPRINT', value: (e: TrustEntry) => e.thumbprint },
              { header: 'KID', value: (e) => e.kid ?? '-' },
              { header: 'ADDED', value: (e) => e.added_at },
            ],
            entries,
            `no keys pinned in ${path} (the agent config may still pin some: trusted_keys, trusted_jwks_path)`,
          ),
        );
      }),
    );

  trust
    .command('remove')
    .argument('<thumbprint>', 'the thumbprint to unpin')
    .description('unpin a server signing key (and forget keys the agent learned through signed key sets)')
    .addOption(stateDirOption())
    .action(
      action(io, async (ctx, args, opts) => {
        const tp = args[0]!;
        if (!THUMBPRINT_PATTERN.test(tp)) throw new UsageError(`${JSON.stringify(tp)} is not a key thumbprint (43 base64url characters)`);
        const dir = String(opts.stateDir);
        const path = join(dir, TRUST_FILE);
        const entries = entriesIn(path);
        const kept = entries.filter((e) => e.thumbprint !== tp);
        if (kept.length === entries.length) throw new CtlError(ExitCode.NOT_FOUND, `${tp} is not pinned in ${path}`, { hint: 'see aegisctl trust list' });
        save(path, kept);
        // Keys learned under the old pins were vouched for by them: they go too, and
        // are learned again only from a set signed by a key still pinned.
        const learned = join(dir, LEARNED_FILE);
        if (readLearned(learned).length > 0) writeLearned(learned, []);
        ctx.out.result({ removed: tp, keys: kept }, () => ctx.out.line(`unpinned ${tp} in ${path}`));
      }),
    );

  return trust;
}
