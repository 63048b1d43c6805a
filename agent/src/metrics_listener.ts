/**
 * The agent's optional TCP metrics listener (config metrics_listen): GET /metrics and
 * nothing else, without authentication, which is why config refuses a non-loopback
 * address unless metrics_allow_remote is set. The same slow-client limits as the control
 * socket, so a stuck scraper cannot hold the agent's connections.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DEFAULT_CONTROL_API_LIMITS, type ControlApiLimits } from './control_api.js';
import { AgentError } from './errors.js';
import type { Logger } from './logger.js';

export interface MetricsSource {
  contentType: string;
  scrape(): Promise<string>;
}

export class MetricsListener {
  private constructor(
    private readonly server: Server,
    /** http://host:port as bound (port 0 resolved). */
    readonly url: string,
  ) {}

  static async start(where: { host: string; port: number }, metrics: MetricsSource, log: Logger, limits: ControlApiLimits = DEFAULT_CONTROL_API_LIMITS): Promise<MetricsListener> {
    const server = createServer(
      {
        headersTimeout: limits.headersTimeoutMs,
        requestTimeout: limits.requestTimeoutMs,
        keepAliveTimeout: Math.min(5_000, limits.headersTimeoutMs),
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
      },
      (req, res) => {
        const path = (req.url ?? '/').split('?')[0];
        const reply = (status: number, code: string, message: string, headers: Record<string, string> = {}): void => {
          res.writeHead(status, { 'content-type': 'application/json', ...headers });
          res.end(JSON.stringify({ error: { code, message, details: null } }));
        };
        req.resume();
        if (path !== '/metrics') return reply(404, 'NOT_FOUND', `no ${req.method} ${path} (this listener serves GET /metrics only)`);
        if (req.method !== 'GET') return reply(405, 'BAD_REQUEST', `method ${req.method} not allowed`, { allow: 'GET' });
        metrics.scrape().then(
          (text) => {
            if (res.destroyed) return;
            res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
            res.end(text);
          },
          (e: unknown) => {
            log.error('metrics scrape failed', { error: (e as Error).message });
            if (!res.destroyed) reply(500, 'INTERNAL', 'metrics could not be collected');
          },
        );
      },
    );
    server.maxConnections = limits.maxConnections;
    server.maxHeadersCount = 100;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(where.port, where.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new AgentError('CONFIG_INVALID', `metrics_listen: cannot listen on ${where.host}:${where.port} (${code})`, { status: 400, cause: e });
    }
    const a = server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return new MetricsListener(server, `http://${host}:${a.port}`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
