/** Named errors of the agent. Low-level causes are kept in `cause`. */
export type AgentErrorCode =
  | 'CONFIG_INVALID'
  | 'SERVER_UNREACHABLE'
  | 'SERVER_REFUSED'
  | 'NOT_ACTIVATED'
  | 'ALREADY_ACTIVATING'
  | 'STATE_CORRUPT'
  | 'BAD_REQUEST';

export class AgentError extends Error {
  readonly code: AgentErrorCode | string;
  readonly status: number;
  readonly details: unknown;

  constructor(code: AgentErrorCode | string, message: string, opts: { status?: number; details?: unknown; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AgentError';
    this.code = code;
    this.status = opts.status ?? 500;
    this.details = opts.details ?? null;
  }
}

export class ConfigError extends AgentError {
  readonly problems: string[];
  constructor(problems: string[]) {
    super('CONFIG_INVALID', `invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`, { status: 400, details: problems });
    this.name = 'ConfigError';
    this.problems = problems;
  }
}
