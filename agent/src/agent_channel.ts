/**
 * The agent's mTLS channel to the server's agent listener: HTTPS with this host's client
 * certificate, trusting only the pinned Aegis CA, and a fresh single-use scoped access
 * token for every call, so a stolen token is worth one request and only with the
 * certificate it is bound to. Renewed certificates replace the connection pool, so new
 * connections present the new certificate while calls in flight finish on the old.
 * Only ServerLink uses it: it decides when this channel is tried and what happens next.
 *
 * Several replicas' listeners may be given. A call goes to the one that answered last;
 * only when it cannot be reached (refused, timed out, or a TLS handshake that fails,
 * including a server certificate that does not chain to the pinned CA: nothing is sent
 * to such a listener, not even the token request) or answers 5xx is the next one tried,
 * token and request both on it, and the one that answers is kept. A 4xx is an answer
 * (never retried elsewhere). Every URL is https:// (the configuration refuses others),
 * so a failover never leaves TLS or the pinned CA.
 */
import { Agent as HttpsAgent, request } from 'node:https';
import type { KeyObject } from 'node:crypto';
import { AGENT_API, type AgentScope, type AgentTokenRequest, type IssuedAgentToken } from '../../protocol/src/index.js';
import type { Logger } from './logger.js';
import { answerError, parseBody, ServerError, unreachableError } from './server_error.js';

export interface ChannelCredentials {
  certificate: string;
  ca: string;
  privateKey: KeyObject;
}

const OLD_POOL_GRACE_MS = 30_000;

/** Handshake failures that mean the listener's certificate is not one the pinned CA vouches for. */
const BAD_SERVER_CERTIFICATE = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** HTTPS to the agent listener with the host's client certificate; failures are ServerErrors. */
export class AgentChannel {
  private pool: HttpsAgent | null = null;
  private serialOfPool: string | null = null;
  lastOkAt: string | null = null;
  lastError: string | null = null;

  readonly baseUrls: readonly string[];
  /** Index of the listener that answered last (calls start there). */
  private current = 0;

  constructor(
    baseUrl: string | readonly string[],
    private readonly timeoutMs = 15_000,
    private readonly log?: Logger,
  ) {
    this.baseUrls = (typeof baseUrl === 'string' ? baseUrl.split(',') : baseUrl).map((u) => u.trim()).filter((u) => u !== '');
    if (this.baseUrls.length === 0) throw new Error('no agent listener URL');
  }

  /** The listener in use now (the one that answered last). */
  get baseUrl(): string {
    return this.baseUrls[this.current] as string;
  }

  get ready(): boolean {
    return this.pool !== null;
  }

  /** Uses a (new) certificate from now on; `id` tells a renewal from the same one. */
  setCredentials(c: ChannelCredentials, id: string): void {
    if (this.pool && this.serialOfPool === id) return;
    const old = this.pool;
    this.pool = new HttpsAgent({ keepAlive: true, maxSockets: 4, cert: c.certificate, key: c.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, ca: c.ca, minVersion: 'TLSv1.3' });
    this.serialOfPool = id;
    if (old) setTimeout(() => old.destroy(), OLD_POOL_GRACE_MS).unref();
  }

  clear(): void {
    this.pool?.destroy();
    this.pool = null;
    this.serialOfPool = null;
  }

  private send<T>(baseUrl: string, method: string, path: string, body: unknown, token: string | null): Promise<T> {
    const pool = this.pool;
    if (!pool) return Promise.reject(new ServerError('NO_CLIENT_CERTIFICATE', 'no client certificate yet', { status: 503, final: false }));
    const u = new URL(path, baseUrl);
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (data !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    return new Promise<T>((resolve, reject) => {
      const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent: pool, timeout: this.timeoutMs }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const parsed = parseBody(text);
          if (status >= 200 && status < 300) resolve(parsed as T);
          else reject(answerError(status, parsed, { retryAfter: res.headers['retry-after'], date: res.headers.date }, `agent listener answered ${status}`));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (cause: NodeJS.ErrnoException) => {
        const code = cause.code ?? cause.message;
        if (BAD_SERVER_CERTIFICATE.has(code)) reject(unreachableError(`${baseUrl} is not trusted: its certificate does not verify against the pinned CA (${code})`, cause));
        else reject(unreachableError(`cannot reach ${baseUrl} over mTLS: ${code}`, cause));
      });
      req.end(data);
    });
  }

  /**
   * One call: a single-use token for `scope`, then the request bound to the same
   * certificate, both on one listener; the next listener only when this one cannot be
   * reached or answers 5xx.
   */
  async call<T>(scope: AgentScope, method: string, path: string, body?: unknown): Promise<T> {
    let last: ServerError | null = null;
    for (let i = 0; i < this.baseUrls.length; i++) {
      const at = (this.current + i) % this.baseUrls.length;
      const base = this.baseUrls[at] as string;
      try {
        const ask: AgentTokenRequest = { scope: [scope] };
        const t = await this.send<IssuedAgentToken>(base, 'POST', AGENT_API.token, ask, null);
        const out = await this.send<T>(base, method, path, body, t.access_token);
        this.settle(at);
        this.lastOkAt = new Date().toISOString();
        this.lastError = null;
        return out;
      } catch (e) {
        const err = e as ServerError;
        this.lastError = err.message;
        const failover = err.code === 'SERVER_UNREACHABLE' || (typeof err.status === 'number' && err.status >= 500 && err.status <= 599 && !err.final);
        if (!failover || err.code === 'NO_CLIENT_CERTIFICATE') {
          this.settle(at);
          throw err;
        }
        last = err;
        if (this.baseUrls.length > 1) this.log?.warn(`${base} failed over mTLS; trying the next agent listener URL`, { code: err.code, status: err.status, error: err.message });
      }
    }
    throw last as ServerError;
  }

  private settle(at: number): void {
    if (at === this.current) return;
    this.log?.info(`using agent listener URL ${this.baseUrls[at]} (was ${this.baseUrl})`);
    this.current = at;
  }
}
