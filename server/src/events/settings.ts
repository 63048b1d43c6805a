/**
 * Settings of event ingest, read from the environment: retention of the events table by
 * age and row count, the largest file the server takes bytes of, the largest telemetry
 * batch, and how YARA is run.
 */
export const DEFAULT_EVENT_RETENTION_DAYS = 30;
export const DEFAULT_EVENT_MAX_ROWS = 10_000_000;
/** Decoded bytes of one file sent for analysis (AEGIS_FILE_MAX_BYTES). */
export const DEFAULT_FILE_MAX_BYTES = 8 * 1024 * 1024;
/** Events in one telemetry batch (AEGIS_TELEMETRY_MAX_EVENTS). */
export const DEFAULT_TELEMETRY_MAX_EVENTS = 500;
export const DEFAULT_YARA_TIMEOUT_SECONDS = 10;

export interface EventSettings {
  /** Events are kept this many days by `at` (AEGIS_EVENT_RETENTION_DAYS) ... */
  retentionDays: number;
  /** ... and at most this many rows, the oldest dropped first (AEGIS_EVENT_MAX_ROWS). */
  maxRows: number;
  fileMaxBytes: number;
  telemetryMaxEvents: number;
  /** The yara and yarac commands (AEGIS_YARA, AEGIS_YARAC; looked up on PATH). */
  yara: string;
  yarac: string;
  /** A scan or a rule's compilation is stopped after this long (AEGIS_YARA_TIMEOUT_SECONDS). */
  yaraTimeoutSeconds: number;
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const text = env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return n;
}

function command(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const text = env[name];
  if (text === undefined || text.trim() === '') return fallback;
  // Run without a shell: a path or a bare name, never arguments.
  if (!/^[A-Za-z0-9_./+-]{1,4096}$/.test(text)) throw new Error(`${name} must be a command name or path, got ${JSON.stringify(text)}`);
  return text;
}

export function eventSettingsFrom(env: NodeJS.ProcessEnv): EventSettings {
  return {
    retentionDays: int(env, 'AEGIS_EVENT_RETENTION_DAYS', DEFAULT_EVENT_RETENTION_DAYS, 1, 3650),
    maxRows: int(env, 'AEGIS_EVENT_MAX_ROWS', DEFAULT_EVENT_MAX_ROWS, 1, 1_000_000_000),
    fileMaxBytes: int(env, 'AEGIS_FILE_MAX_BYTES', DEFAULT_FILE_MAX_BYTES, 1, 64 * 1024 * 1024),
    telemetryMaxEvents: int(env, 'AEGIS_TELEMETRY_MAX_EVENTS', DEFAULT_TELEMETRY_MAX_EVENTS, 1, 10_000),
    yara: command(env, 'AEGIS_YARA', 'yara'),
    yarac: command(env, 'AEGIS_YARAC', 'yarac'),
    yaraTimeoutSeconds: int(env, 'AEGIS_YARA_TIMEOUT_SECONDS', DEFAULT_YARA_TIMEOUT_SECONDS, 1, 600),
  };
}
