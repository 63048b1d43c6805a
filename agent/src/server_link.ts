/**
 * The agent's one link to aegis-server. Every HTTP request the agent makes to the server
 * goes through here, so the choice of listener and the reading of failures exist once:
 *
 *   - the mTLS agent listener (agent_server_url) with a scoped single-use access token,
 *     when this host holds a current client certificate; any failure there falls back to
 *   - the host-proof route on server_url, which gives the authoritative answer (and is
 *     the only way to renew a lapsed certificate or to activate at all).
 *
 * Failures are ServerErrors classified by server_error.ts: `final` (retrying cannot
 * change the answer) or retryable, with Retry-After when the server sent one.
 *
 * server_url may name several replicas (a comma list, or server_urls). A request goes to
 * the one that answered last; only when it cannot be reached or answers 5xx is the next
 * one tried, and the one that answers is kept. A 4xx answer is an answer (never retried
 * elsewhere), and a 2xx is handed to the caller, which verifies its signatures whichever
 * replica sent it: a hostile listener on one URL can make the agent move on only by not
 * answering, never past a verification. agent_server_url may name several listeners in
 * the same way (agent_channel.ts): the channel fails over among them before this link
 * falls back to the host-proof route.
 */
import {
  AGENT_API,
  type ActivationRequest,
  type AgentScope,
  type AgentSnapshotsResponse,
  type InventoryAccepted,
  type InventoryReport,
  type IssuedAgentToken,
  type JwksDocument,
  type SignedJwksDocument,
  type RefreshRequest,
  type TokenBundle,
} from '../../protocol/src/index.js';
import { AgentChannel, type ChannelCredentials } from './agent_channel.js';
import type { Logger } from './logger.js';
import { answerError, parseBody, ServerError, unreachableError } from './server_error.js';

/** The server's routes on server_url that the agent calls (the agent listener's are AGENT_API). */
const ROUTES = {
  activations: '/api/v1/activations',
  machine: (machineId: string) => `/api/v1/machines/${encodeURIComponent(machineId)}`,
  refresh: (machineId: string) => `/api/v1/machines/${encodeURIComponent(machineId)}/refresh`,
  snapshots: (machineId: string) => `/api/v1/machines/${encodeURIComponent(machineId)}/snapshots`,
  jwks: '/.well-known/jwks.json',
  signedJwks: '/.well-known/jwks.signed',
} as const;

/** Licensing calls may wait on the database; snapshot and key reads are quick or skipped. */
const LICENSING_TIMEOUT_MS = 15_000;
const READ_TIMEOUT_MS = 10_000;

export interface ServerLinkOptions {
  /** One URL, a comma list, or several: aegis-server replicas sharing one database. */
  serverUrl: string | string[];
  /** The mTLS agent listener: one URL, a comma list, or several (replicas); empty or null: host-proof routes only. */
  agentServerUrl?: string | readonly string[] | null;
  log: Logger;
}

interface Request {
  method: string;
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
  timeoutMs: number;
}

/** The agent's calls to aegis-server: licensing, snapshots and keys, over mTLS or host proof. */
export class ServerLink {
  readonly serverUrls: readonly string[];
  /** Index of the replica that answered last (requests start there). */
  private current = 0;
  private readonly channel: AgentChannel | null;
  private readonly log: Logger;
  /** The last mTLS failure logged per operation, so a lasting one is logged once, not per poll. */
  private readonly channelFailures = new Map<string, string>();

  constructor(o: ServerLinkOptions) {
    this.serverUrls = (Array.isArray(o.serverUrl) ? o.serverUrl : o.serverUrl.split(',')).map((u) => u.trim()).filter((u) => u !== '');
    if (this.serverUrls.length === 0) throw new Error('no server URL');
    const listeners = (typeof o.agentServerUrl === 'string' ? o.agentServerUrl.split(',') : (o.agentServerUrl ?? [])).map((u) => u.trim()).filter((u) => u !== '');
    this.channel = listeners.length > 0 ? new AgentChannel(listeners, LICENSING_TIMEOUT_MS, o.log) : null;
    this.log = o.log;
  }

  /** The replica in use now (the one that answered last). */
  get serverUrl(): string {
    return this.serverUrls[this.current] as string;
  }

  /** True when an agent listener is configured (client certificates are worth asking for). */
  get mtls(): boolean {
    return this.channel !== null;
  }

  /** The agent listener as status shows it (`url`: the one in use), or null when none is configured. */
  mtlsStatus(): { url: string; urls: string[]; last_ok_at: string | null; last_error: string | null } | null {
    const ch = this.channel;
    return ch ? { url: ch.baseUrl, urls: [...ch.baseUrls], last_ok_at: ch.lastOkAt, last_error: ch.lastError } : null;
  }

  /** From now on the agent listener is called with this certificate; `id` tells a renewal from the same one. */
  useCertificate(c: ChannelCredentials, id: string): void {
    this.channel?.setCredentials(c, id);
  }

  /** No (current) certificate: only the host-proof routes until a new one is installed. */
  dropCertificate(): void {
    this.channel?.clear();
  }

  /** `POST /api/v1/activations`: only on server_url, the host has no certificate yet. */
  activate(req: ActivationRequest): Promise<TokenBundle> {
    return this.request<TokenBundle>({ method: 'POST', path: ROUTES.activations, body: req, timeoutMs: LICENSING_TIMEOUT_MS });
  }

  /**
   * New tokens (and a certificate for `csr`): over mTLS when possible, else with a
   * host-key proof. `proof` is called only when the host-proof route is used.
   */
  async refresh(machineId: string, proof: () => string, csr?: string, fingerprint: Pick<RefreshRequest, 'hardware_id' | 'components' | 'environment'> = {}): Promise<TokenBundle> {
    const viaChannel = await this.overChannel<TokenBundle>('refresh', 'license:refresh', 'POST', AGENT_API.refresh, { ...(csr ? { csr } : {}), ...fingerprint });
    if (viaChannel !== undefined) return viaChannel;
    const body: RefreshRequest = { proof: proof(), ...(csr ? { csr } : {}), ...fingerprint };
    return this.request<TokenBundle>({ method: 'POST', path: ROUTES.refresh(machineId), body, timeoutMs: LICENSING_TIMEOUT_MS });
  }

  /** A heartbeat (host-key proof, `aud: aegis-heartbeat`, with a growing `seq`); renews a floating lease. */
  heartbeat(machineId: string, proof: string): Promise<unknown> {
    return this.request<unknown>({ method: 'POST', path: `/api/v1/machines/${encodeURIComponent(machineId)}/heartbeat`, body: { proof }, timeoutMs: LICENSING_TIMEOUT_MS });
  }

  /** Frees this host's seat (host-key proof, `aud: aegis-deactivation`). */
  deactivate(machineId: string, proof: string): Promise<unknown> {
    return this.request<unknown>({ method: 'DELETE', path: ROUTES.machine(machineId), body: { proof }, timeoutMs: LICENSING_TIMEOUT_MS });
  }

  /** The signed snapshot messages aimed at machine `machineId`: over mTLS when possible, else with a host-key proof. */
  async snapshots(machineId: string, proof: () => string): Promise<AgentSnapshotsResponse> {
    const check = (body: AgentSnapshotsResponse | null): AgentSnapshotsResponse => {
      if (!Array.isArray(body?.messages)) throw new ServerError('BAD_ANSWER', 'answer without messages', { status: 502, final: false });
      return body;
    };
    const viaChannel = await this.overChannel('snapshots', 'snapshots:read', 'GET', AGENT_API.snapshots, undefined, check);
    if (viaChannel !== undefined) return viaChannel;
    return check(await this.request<AgentSnapshotsResponse | null>({ method: 'GET', path: ROUTES.snapshots(machineId), headers: { 'x-aegis-proof': proof() }, timeoutMs: READ_TIMEOUT_MS }));
  }

  /**
   * Reports the package inventory (scope `inventory`): over the agent listener when this
   * host has a certificate, else with an access token got by a host-key proof (aud
   * aegis-agent-token) from server_url, whose agent routes then serve it. Failures are
   * thrown, not retried on the other route: a CONFLICT from either is the same answer.
   */
  async inventory(machineId: string, proof: () => string, report: InventoryReport): Promise<InventoryAccepted> {
    const ch = this.channel;
    if (ch?.ready) return ch.call<InventoryAccepted>('inventory', 'POST', AGENT_API.inventory, report);
    const token = await this.request<IssuedAgentToken>({ method: 'POST', path: AGENT_API.token, body: { scope: ['inventory'], machine_id: machineId, proof: proof() }, timeoutMs: LICENSING_TIMEOUT_MS });
    return this.request<InventoryAccepted>({ method: 'POST', path: AGENT_API.inventory, body: report, headers: { authorization: `Bearer ${token.access_token}` }, timeoutMs: LICENSING_TIMEOUT_MS });
  }

  /** The key set signed by every key in it (`/.well-known/jwks.signed`): how rotations reach pinned agents. */
  async signedJwks(): Promise<SignedJwksDocument> {
    const body = await this.request<SignedJwksDocument | null>({ method: 'GET', path: ROUTES.signedJwks, timeoutMs: READ_TIMEOUT_MS });
    if (!Array.isArray(body?.jwks?.keys) || !Array.isArray(body.signatures)) {
      throw new ServerError('BAD_ANSWER', 'answer is not a signed JWKS', { status: 502, final: false });
    }
    return body;
  }

  /** The server's published signing keys (`/.well-known/jwks.json`, no credentials). */
  async jwks(): Promise<JwksDocument> {
    const body = await this.request<JwksDocument | null>({ method: 'GET', path: ROUTES.jwks, timeoutMs: READ_TIMEOUT_MS });
    if (!Array.isArray(body?.keys) || body.keys.length === 0) throw new ServerError('BAD_ANSWER', 'answer is not a JWKS', { status: 502, final: false });
    return body;
  }

  /**
   * One call on the agent listener, or undefined when there is no usable certificate or
   * the call failed: the caller then asks the host-proof route, whose answer counts.
   */
  private async overChannel<T>(
    op: 'refresh' | 'snapshots',
    scope: AgentScope,
    method: string,
    path: string,
    body?: unknown,
    check: (v: T) => T = (v) => v,
  ): Promise<T | undefined> {
    const ch = this.channel;
    if (!ch?.ready) return undefined;
    try {
      const out = check(await ch.call<T>(scope, method, path, body));
      this.channelFailures.delete(op);
      return out;
    } catch (e) {
      const err = e as ServerError;
      if (this.channelFailures.get(op) !== err.message) {
        this.log.warn(`${op} over mTLS failed; using the host-proof route`, { code: err.code, error: err.message });
      }
      this.channelFailures.set(op, err.message);
      return undefined;
    }
  }

  /**
   * One request, to the replica in use and, while replicas cannot be reached or answer
   * 5xx, to the next ones in turn; the first that answers otherwise is kept for the next
   * requests. A non-2xx answer or no answer from any becomes a classified ServerError.
   */
  private async request<T>(r: Request): Promise<T> {
    let last: ServerError | null = null;
    for (let i = 0; i < this.serverUrls.length; i++) {
      const at = (this.current + i) % this.serverUrls.length;
      const base = this.serverUrls[at] as string;
      try {
        const out = await this.requestOne<T>(base, r);
        this.settle(at);
        return out;
      } catch (e) {
        const err = e as ServerError;
        const failover = err.code === 'SERVER_UNREACHABLE' || (typeof err.status === 'number' && err.status >= 500 && err.status <= 599 && !err.final);
        if (!failover) {
          this.settle(at);
          throw err;
        }
        last = err;
        if (this.serverUrls.length > 1) this.log.warn(`${base} failed; trying the next server URL`, { code: err.code, status: err.status, error: err.message });
      }
    }
    throw last as ServerError;
  }

  private settle(at: number): void {
    if (at === this.current) return;
    this.log.info(`using server URL ${this.serverUrls[at]} (was ${this.serverUrl})`);
    this.current = at;
  }

  private async requestOne<T>(serverUrl: string, r: Request): Promise<T> {
    let res: Response;
    try {
      res = await fetch(new URL(r.path, serverUrl), {
        method: r.method,
        headers: { 'content-type': 'application/json', accept: 'application/json', ...r.headers },
        body: r.body === undefined ? undefined : JSON.stringify(r.body),
        signal: AbortSignal.timeout(r.timeoutMs),
      });
    } catch (cause) {
      const reason = cause instanceof Error ? ((cause.cause as Error | undefined)?.message ?? cause.message) : String(cause);
      throw unreachableError(`cannot reach ${serverUrl}: ${reason}`, cause);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (cause) {
      throw unreachableError(`${serverUrl} broke off its answer: ${(cause as Error).message}`, cause);
    }
    const parsed = parseBody(text);
    if (res.ok) return parsed as T;
    throw answerError(res.status, parsed, { retryAfter: res.headers.get('retry-after'), date: res.headers.get('date') }, `server answered ${res.status}`);
  }
}
