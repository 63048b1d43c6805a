/**
 * The agent's calls to aegis-server. Failures are classified once, here: a *final*
 * answer (revoked, seat limit, unknown key...) is never retried; network errors, 5xx and
 * 429 are retryable.
 */
import type { Ed25519PublicJwk } from '../../protocol/src/index.js';
import { AgentError } from './errors.js';

/** Server answers that retrying cannot change. */
const FINAL_CODES = new Set([
  'LICENSE_REVOKED',
  'LICENSE_EXPIRED',
  'LICENSE_SUSPENDED',
  'SEAT_LIMIT',
  'HOST_KEY_MISMATCH',
  'VERSION_MISMATCH',
  'NOT_FOUND',
  'MACHINE_DEACTIVATED',
  'VALIDATION_FAILED',
  'BAD_REQUEST',
]);

export class ServerError extends AgentError {
  readonly final: boolean;
  readonly retryAfterMs: number | null;
  constructor(code: string, message: string, opts: { status: number; final: boolean; retryAfterMs?: number | null; details?: unknown; cause?: unknown }) {
    super(code, message, { status: opts.status, details: opts.details, cause: opts.cause });
    this.name = 'ServerError';
    this.final = opts.final;
    this.retryAfterMs = opts.retryAfterMs ?? null;
  }
}

export interface TokenBundle {
  machine_id: string;
  license_token: string;
  kernel_token: string;
  kernel_token_expires_at: string;
  license_expires_at: string | null;
  jwks: { keys: Array<Record<string, unknown>> };
  /** Issue 7: present when the server runs a CA (the CA to pin), and the certificate issued for a CSR. */
  ca_certificate?: string;
  trust_domain?: string;
  client_certificate?: string;
  client_certificate_serial?: string;
  client_certificate_expires_at?: string;
  spiffe_id?: string;
  /** Per-host NATS credentials, when the server runs NATS in operator mode. */
  nats?: { creds: string; user_public_key: string; expires_at: string | null };
}

export interface ActivationRequest {
  license_key: string;
  hardware_id: string;
  host_public_key: Ed25519PublicJwk;
  hostname: string;
  agent_version: string;
  proof: string;
  /** PKCS#10 request for the host key: the server answers with a client certificate. */
  csr?: string;
}

export class ServerClient {
  constructor(
    readonly baseUrl: string,
    private readonly timeoutMs = 15_000,
  ) {}

  private async call<T>(method: string, path: string, body: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(new URL(path, this.baseUrl), {
        method,
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (cause) {
      const reason = cause instanceof Error ? ((cause.cause as Error | undefined)?.message ?? cause.message) : String(cause);
      throw new ServerError('SERVER_UNREACHABLE', `cannot reach ${this.baseUrl}: ${reason}`, { status: 503, final: false, cause });
    }
    const text = await res.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      /* a non-JSON answer is handled below */
    }
    if (res.ok) return parsed as T;
    const err = (parsed as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
    const code = err?.code ?? `HTTP_${res.status}`;
    const retryAfter = Number(res.headers.get('retry-after'));
    const final = FINAL_CODES.has(code) || (res.status >= 400 && res.status < 500 && res.status !== 429 && res.status !== 408);
    throw new ServerError(code, err?.message ?? `server answered ${res.status}`, {
      status: res.status,
      final,
      retryAfterMs: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : null,
      details: err?.details,
    });
  }

  activate(req: ActivationRequest): Promise<TokenBundle> {
    return this.call('POST', '/api/v1/activations', req);
  }

  refresh(machineId: string, proof: string, csr?: string): Promise<TokenBundle> {
    return this.call('POST', `/api/v1/machines/${encodeURIComponent(machineId)}/refresh`, csr ? { proof, csr } : { proof });
  }

  deactivate(machineId: string, proof: string): Promise<unknown> {
    return this.call('DELETE', `/api/v1/machines/${encodeURIComponent(machineId)}`, { proof });
  }
}
