/**
 * The aegisctl command tree and its one error boundary: every failure ends as one line on
 * stderr and an exit code from exit_codes.ts; usage mistakes found by commander included.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { DEFAULT_SOCKET } from './agent_client.js';
import { adminCommands } from './commands_admin.js';
import { localCommands } from './commands_local.js';
import { trustCommand } from './commands_trust.js';
import { parseSeconds, type CtlIo } from './context.js';
import { CtlError, formatError } from './errors.js';
import { EXIT_CODE_HELP, ExitCode } from './exit_codes.js';

export const DEFAULT_SERVER = 'http://127.0.0.1:8000';

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

const EPILOGUE = [
  '',
  'Local commands (status, hwid, license, activate, deactivate, refresh, snapshots, reload,',
  'token) talk to aegis-agent on this host; trust edits its pinned server keys in the state dir;',
  'customers, licenses and keys talk to aegis-server.',
  '',
  'Environment:',
  `  AEGIS_SERVER   aegis-server URL (default ${DEFAULT_SERVER})`,
  '  AEGIS_API_KEY  admin API key for customers and licenses (safer than --api-key)',
  `  AEGIS_SOCKET   aegis-agent control socket (default ${DEFAULT_SOCKET})`,
  '',
  'Exit codes:',
  ...EXIT_CODE_HELP.map(([code, text]) => `  ${code}  ${text}`),
].join('\n');

/** Makes commander report through our error boundary, in every (sub)command. */
function configureTree(cmd: Command, io: CtlIo): void {
  cmd.exitOverride();
  cmd.showHelpAfterError(false);
  cmd.configureOutput({
    writeOut: (s) => io.stdout.write(s),
    writeErr: (s) => io.stderr.write(s),
    // commander's own messages ("error: unknown option '--x'") become ours.
    outputError: (s, write) => write(`aegisctl: ${s.trim().replace(/\.$/, '')}; see "${commandPath(cmd)} --help"\n`),
  });
  for (const sub of cmd.commands) configureTree(sub, io);
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

export function buildProgram(io: CtlIo): Command {
  const program = new Command('aegisctl')
    .description('Operate Aegis: this host\'s aegis-agent, and customers and licenses on aegis-server')
    .version(version(), '-V, --version')
    .addOption(new Option('--server <url>', 'aegis-server URL').env('AEGIS_SERVER').default(DEFAULT_SERVER))
    .addOption(new Option('--api-key <key>', 'admin API key (visible in ps: prefer AEGIS_API_KEY)').env('AEGIS_API_KEY'))
    .addOption(new Option('--socket <path>', 'aegis-agent control socket').env('AEGIS_SOCKET').default(DEFAULT_SOCKET))
    .option('--json', 'machine-readable output: the raw JSON answer on stdout, nothing else')
    .option('-q, --quiet', 'no progress line on stderr')
    .addOption(new Option('--timeout <seconds>', 'give up waiting for an answer after this long').argParser(parseSeconds).default(30))
    .addHelpText('after', EPILOGUE);
  for (const c of [...localCommands(io), trustCommand(io), ...adminCommands(io)]) program.addCommand(c);
  configureTree(program, io);
  return program;
}

/** Runs aegisctl with `argv` (without node and script) and returns the exit code. */
export async function run(argv: string[], io: CtlIo): Promise<number> {
  const program = buildProgram(io);
  try {
    if (argv.length === 0) {
      program.outputHelp({ error: true });
      return ExitCode.USAGE;
    }
    await program.parseAsync(argv, { from: 'user' });
    return ExitCode.OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version asked for are success; anything else commander stops on is usage.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return ExitCode.OK;
      return ExitCode.USAGE;
    }
    io.stderr.write(formatError(err) + '\n');
    if (!(err instanceof CtlError) && process.env.AEGIS_DEBUG) io.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    return err instanceof CtlError ? err.exitCode : ExitCode.FAILURE;
  }
}
