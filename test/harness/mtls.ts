/**
 * An aegis-server with its PKI initialised and the mTLS agent listener on port 0, and a
 * real TLS client for the agent listener (node:https, client certificate optional).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApp, type App } from '../../server/src/app.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { loadConfig } from '../../server/src/config.js';
import { createLogger } from '../../server/src/logger.js';
import { initPki } from '../../server/src/pki/authority.js';
import { readFileSync } from 'node:fs';
import { TestClock } from './server.js';

export interface MtlsTestServer {
  url: string;
  agentUrl: string;
  caPem: string;
  pkiDir: string;
  dir: string;
  app: App;
  clock: TestClock;
  adminKey: string;
  req(method: string, path: string, body?: unknown, opts?: { key?: string | null }): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

/**
 * `keysDir`: another server's (its `dir`/keys), for a second replica on the same
 * `databaseUrl` with the same signing keys and CA; unset: new keys and a new CA.
 */
export async function startMtlsServer(opts: { databaseUrl?: string; certTtlSeconds?: number; trustDomain?: string; mtls?: boolean; env?: Record<string, string>; keysDir?: string } = {}): Promise<MtlsTestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-mtls-'));
  const keysDir = opts.keysDir ?? join(dir, 'keys');
  const pkiDir = join(keysDir, 'pki');
  if (!opts.keysDir) {
    KeyStore.open(keysDir).generate();
    await initPki(pkiDir, { trustDomain: opts.trustDomain ?? 'aegis.test' });
  }
  const clock = new TestClock();
  const config = loadConfig(
    { listen: '127.0.0.1:0', database: opts.databaseUrl ?? `sqlite:${join(dir, 'aegis.db')}`, keysDir, natsUrl: '', agentListen: '127.0.0.1:0' },
    {
      LOG_LEVEL: 'error',
      ...(opts.mtls === false ? {} : { ENABLE_MTLS: 'true' }),
      AEGIS_CLIENT_CERT_TTL: String(opts.certTtlSeconds ?? 86400),
      AEGIS_RATE_LIMITS: 'off',
      ...opts.env,
    },
  );
  const app = await startApp(config, { clock, logger: createLogger({ silent: true }) });
  const admin = await app.apiKeys.create('test-admin', [...SCOPES]);
  const url = app.http.url;
  return {
    url,
    agentUrl: app.agentHttp?.url ?? '',
    caPem: readFileSync(join(pkiDir, 'ca.crt'), 'utf8'),
    pkiDir,
    dir,
    app,
    clock,
    adminKey: admin.key,
    async req(method, path, body, o = {}) {
      const headers: Record<string, string> = {};
      const key = o.key === undefined ? admin.key : o.key;
      if (key !== null) headers['x-api-key'] = key;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    async close() {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TlsReply {
  status: number;
  body: any;
  /** Set when the TLS handshake (or the connection) failed. */
  error?: string;
}

/** One request over a fresh TLS connection, optionally with a client certificate. */
export function tlsRequest(
  baseUrl: string,
  method: string,
  path: string,
  o: { ca: string; cert?: string; key?: string | Buffer; body?: unknown; token?: string } ,
): Promise<TlsReply> {
  return new Promise((resolve) => {
    const u = new URL(path, baseUrl);
    const data = o.body === undefined ? undefined : JSON.stringify(o.body);
    const headers: Record<string, string> = {};
    if (data) headers['content-type'] = 'application/json';
    if (o.token) headers.authorization = `Bearer ${o.token}`;
    const req = httpsRequest(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, ca: o.ca, cert: o.cert, key: o.key, agent: false, servername: 'localhost' },
      (res) => {
        let out = '';
        res.on('data', (c) => (out += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: out ? JSON.parse(out) : null }));
        res.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, body: null, error: e.code ?? e.message }));
      },
    );
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, body: null, error: e.code ?? e.message }));
    req.end(data);
  });
}
