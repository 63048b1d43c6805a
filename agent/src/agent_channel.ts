/**
 * The agent's mTLS channel to the server's agent listener: HTTPS with this host's client
 * certificate, trusting only the pinned Aegis CA, and a fresh single-use scoped access
 * token for every call, so a stolen token is worth one request and only with the
 * certificate it is bound to. Renewed certificates replace the connection pool, so new
 * connections present the new certificate while calls in flight finish on the old.
 * Only ServerLink uses it: it decides when this channel is tried and what happens next.
 */
import { Agent as HttpsAgent, request } from 'node:https';
import type { KeyObject } from 'node:crypto';
import { AGENT_API, type AgentScope, type AgentTokenRequest, type IssuedAgentToken } from '../../protocol/src/index.js';
import { answerError, parseBody, ServerError, unreachableError } from './server_error.js';

export interface ChannelCredentials {
  certificate: string;
  ca: string;
  privateKey: KeyObject;
}

const OLD_POOL_GRACE_MS = 30_000;

/** HTTPS to the agent listener with the host's client certificate; failures are ServerErrors. */
export class AgentChannel {
  private pool: HttpsAgent | null = null;
  private serialOfPool: string | null = null;
  lastOkAt: string | null = null;
  lastError: string | null = null;

  constructor(
    readonly baseUrl: string,
    private readonly timeoutMs = 15_000,
  ) {}

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

  private send<T>(method: string, path: string, body: unknown, token: string | null): Promise<T> {
    const pool = this.pool;
    if (!pool) return Promise.reject(new ServerError('NO_CLIENT_CERTIFICATE', 'no client certificate yet', { status: 503, final: false }));
    const u = new URL(path, this.baseUrl);
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
      req.on('error', (cause: NodeJS.ErrnoException) => reject(unreachableError(`cannot reach ${this.baseUrl} over mTLS: ${cause.code ?? cause.message}`, cause)));
      req.end(data);
    });
  }

  /** One call: a single-use token for `scope`, then the request bound to the same certificate. */
  async call<T>(scope: AgentScope, method: string, path: string, body?: unknown): Promise<T> {
    try {
      const ask: AgentTokenRequest = { scope: [scope] };
      const t = await this.send<IssuedAgentToken>('POST', AGENT_API.token, ask, null);
      const out = await this.send<T>(method, path, body, t.access_token);
      this.lastOkAt = new Date().toISOString();
      this.lastError = null;
      return out;
    } catch (e) {
      this.lastError = (e as Error).message;
      throw e;
    }
  }
}
