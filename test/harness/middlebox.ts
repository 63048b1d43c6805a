/**
 * A man in the middle for attack tests: a node:http proxy in front of a real aegis-server,
 * which the agent reaches as its server_url. By default it forwards every request; a test
 * makes it answer on its own (a proxy's error page, a replayed or forged answer) or see and
 * rewrite what the server answered (record signed messages, inject a key).
 */
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** An answer the middlebox gives itself instead of forwarding. */
export interface OwnAnswer {
  status: number;
  contentType: string;
  body: string;
}

/** What the server answered, as the middlebox sees it before passing it on. */
export interface UpstreamAnswer {
  method: string;
  path: string;
  status: number;
  contentType: string;
  body: Buffer;
}

export interface MiddleboxHooks {
  /** Answers a request itself; null forwards it. */
  answer?(req: { method: string; path: string }): OwnAnswer | null | Promise<OwnAnswer | null>;
  /** Sees the server's answer; a returned body replaces it. */
  rewrite?(res: UpstreamAnswer): Buffer | undefined;
}

export class Middlebox {
  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(upstream: string, hooks: MiddleboxHooks = {}): Promise<Middlebox> {
    const target = new URL(upstream);
    const server = createServer((req, res) => {
      const method = req.method ?? 'GET';
      const path = req.url ?? '/';
      void (async () => {
        const own = await hooks.answer?.({ method, path });
        if (own) {
          res.writeHead(own.status, { 'content-type': own.contentType });
          res.end(own.body);
          return;
        }
        const parts: Buffer[] = [];
        for await (const c of req) parts.push(c as Buffer);
        // Uncompressed answers, so a rewrite sees the JSON.
        const headers = { ...req.headers };
        delete headers['accept-encoding'];
        const up = httpRequest({ host: target.hostname, port: target.port, method, path, headers }, (ur) => {
          const body: Buffer[] = [];
          ur.on('data', (c: Buffer) => body.push(c));
          ur.on('end', () => {
            const status = ur.statusCode ?? 502;
            const out = { ...ur.headers };
            const replaced = hooks.rewrite?.({ method, path, status, contentType: String(ur.headers['content-type'] ?? ''), body: Buffer.concat(body) });
            if (replaced) delete out['content-length'];
            res.writeHead(status, out);
            res.end(replaced ?? Buffer.concat(body));
          });
        });
        up.on('error', () => res.destroy());
        up.end(Buffer.concat(parts));
      })().catch(() => res.destroy());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return new Middlebox(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** Polls `fn` until it returns true; the agent acts on what it receives asynchronously. */
export async function eventually(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
