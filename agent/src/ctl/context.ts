/**
 * What every command gets from the global options: where the server and the agent are,
 * the API key, the output mode. Built once per command run from commander's options.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { AdminClient } from './admin_client.js';
import { AgentClient } from './agent_client.js';
import { CtlError, UsageError } from './errors.js';
import { ExitCode } from './exit_codes.js';
import { Output, type Stream } from './output.js';

/** The process pieces aegisctl touches, so tests and main.ts can supply them. */
export interface CtlIo {
  stdout: Stream;
  stderr: Stream;
  readStdin: () => Promise<string>;
  now: () => Date;
}

export interface GlobalOptions {
  server: string;
  apiKey?: string;
  socket: string;
  json?: boolean;
  quiet?: boolean;
  timeout: number;
}

export interface Ctx {
  out: Output;
  io: CtlIo;
  now: Date;
  /** The admin API client; refuses (exit 4) before any request when an API key is needed and missing. */
  server(opts?: { anonymous?: boolean }): AdminClient;
  agent(): AgentClient;
  socketPath: string;
}

let warnedAboutApiKeyFlag = false;

export function contextOf(cmd: Command, io: CtlIo): Ctx {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  const out = new Output({ json: g.json === true, quiet: g.quiet === true, stdout: io.stdout, stderr: io.stderr });
  const timeoutMs = g.timeout * 1000;
  return {
    out,
    io,
    now: io.now(),
    socketPath: g.socket,
    server({ anonymous = false } = {}) {
      let url: URL;
      try {
        url = new URL(g.server);
      } catch {
        throw new UsageError(`--server ${JSON.stringify(g.server)} is not a URL`, { hint: 'e.g. --server http://127.0.0.1:8000' });
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new UsageError(`--server must be an http:// or https:// URL, got ${url.protocol}`);
      }
      if (sourceOf(cmd, 'apiKey') === 'cli' && !warnedAboutApiKeyFlag) {
        warnedAboutApiKeyFlag = true;
        out.warn('--api-key is visible to other users in the process list; prefer the AEGIS_API_KEY environment variable');
      }
      if (!anonymous && !g.apiKey) {
        throw new CtlError(ExitCode.UNAUTHORIZED, 'no API key given', { hint: 'set AEGIS_API_KEY to an admin API key of aegis-server (aegis-server admin create-key)' });
      }
      return new AdminClient({ url, apiKey: g.apiKey, timeoutMs });
    },
    agent() {
      return new AgentClient(g.socket, timeoutMs);
    },
  };
}

/** Where a global option's value came from ('cli', 'env', 'default'), looking up the command chain. */
function sourceOf(cmd: Command, key: string): string | undefined {
  for (let c: Command | null = cmd; c; c = c.parent) {
    const s = c.getOptionValueSource(key);
    if (s !== undefined && c.getOptionValue(key) !== undefined) return s;
  }
  return undefined;
}

// --- option value parsers (commander turns InvalidArgumentError into a usage error) ----

export function parseIntRange(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d{1,10}$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return Number(value);
  };
}

export function parseSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 3600) throw new InvalidArgumentError('must be a number of seconds from 0.1 to 3600');
  return n;
}

/** An ISO-8601 date or date-time, normalised to UTC. */
export function parseIsoDate(value: string): string {
  if (!/^\d{4}-\d{2}-\d{2}/.test(value)) throw new InvalidArgumentError('must be an ISO-8601 date or date-time, e.g. 2027-01-31 or 2027-01-31T12:00:00Z');
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new InvalidArgumentError('is not a valid date');
  return d.toISOString();
}

/** A comma-separated list; each item checked by `check` (which returns a problem or null). */
export function parseList(check: (item: string) => string | null) {
  return (value: string): string[] => {
    const items = value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
    if (items.length === 0) throw new InvalidArgumentError('must be a comma-separated list');
    for (const item of items) {
      const problem = check(item);
      if (problem) throw new InvalidArgumentError(problem);
    }
    return [...new Set(items)];
  };
}

/** A non-empty value without surrounding blanks (names, reasons). */
export function parseText(max: number) {
  return (value: string): string => {
    const v = value.trim();
    if (v.length === 0) throw new InvalidArgumentError('must not be empty');
    if (v.length > max) throw new InvalidArgumentError(`must be at most ${max} characters`);
    return v;
  };
}
