/**
 * The one way the server sends a request to an address an operator gave it (a webhook
 * endpoint), and what it refuses to reach. A receiver is somebody else's machine and its
 * URL a customer's input, so:
 *
 * - `https:` only, unless AEGIS_WEBHOOK_ALLOW_HTTP (local development and tests);
 * - no credentials in the URL, no redirects followed (a 3xx is a failed attempt);
 * - every address the name resolves to is checked, and the connection goes to the very
 *   address checked (the lookup is the check, so a name cannot resolve once to a public
 *   address and again, for the connection, to an internal one): link-local addresses
 *   (169.254.0.0/16 with the cloud metadata service 169.254.169.254, fe80::/10) and the
 *   metadata service's IPv6 address fd00:ec2::254 are refused unless
 *   AEGIS_WEBHOOK_ALLOW_LINK_LOCAL, loopback and unspecified addresses unless
 *   AEGIS_WEBHOOK_ALLOW_LOOPBACK, multicast and broadcast always;
 * - the whole attempt ends after a timeout, and at most a few KiB of the answer are read.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { AegisError } from '../../../protocol/src/index.js';

export interface OutboundPolicy {
  allowHttp: boolean;
  allowLoopback: boolean;
  allowLinkLocal: boolean;
  timeoutMs: number;
  /** Bytes of the answer read at most (the rest is discarded unread). */
  maxResponseBytes: number;
}

/** A URL or address the policy refuses (also the registration-time refusal). */
export class WebhookUrlRefused extends AegisError {
  constructor(message: string, details?: unknown) {
    super('WEBHOOK_URL_REFUSED', message, details === undefined ? {} : { details });
    this.name = 'WebhookUrlRefused';
  }
}

const linkLocal = new BlockList();
linkLocal.addSubnet('169.254.0.0', 16, 'ipv4');
linkLocal.addSubnet('fe80::', 10, 'ipv6');
linkLocal.addAddress('fd00:ec2::254', 'ipv6');
const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addSubnet('0.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');
loopback.addAddress('::', 'ipv6');
const never = new BlockList();
never.addSubnet('224.0.0.0', 4, 'ipv4');
never.addSubnet('240.0.0.0', 4, 'ipv4');
never.addSubnet('ff00::', 8, 'ipv6');

/** Why `address` may not be reached under `p`, or null. IPv4-mapped IPv6 is judged as IPv4. */
export function addressRefusal(address: string, p: Pick<OutboundPolicy, 'allowLoopback' | 'allowLinkLocal'>): string | null {
  let a = address.toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (mapped) a = mapped[1]!;
  const family = isIP(a) === 6 ? 'ipv6' : 'ipv4';
  if (never.check(a, family)) return `${address} is a multicast or reserved address`;
  if (!p.allowLinkLocal && linkLocal.check(a, family)) return `${address} is link-local (the cloud metadata service lives there); set AEGIS_WEBHOOK_ALLOW_LINK_LOCAL to allow it`;
  if (!p.allowLoopback && loopback.check(a, family)) return `${address} is a loopback or unspecified address; set AEGIS_WEBHOOK_ALLOW_LOOPBACK to allow it`;
  return null;
}

/** Checks a URL's form and, for an IP literal, its address (names are checked when resolved). */
export function checkWebhookUrl(text: string, p: OutboundPolicy): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new WebhookUrlRefused('url is not an absolute URL', { url: text });
  }
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && p.allowHttp)) {
    throw new WebhookUrlRefused(`url must be https:// (http:// only with AEGIS_WEBHOOK_ALLOW_HTTP)`, { url: text });
  }
  if (u.username || u.password) throw new WebhookUrlRefused('url must not carry credentials', { url: text });
  if (u.hash) throw new WebhookUrlRefused('url must not carry a fragment', { url: text });
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) {
    const why = addressRefusal(host, p);
    if (why) throw new WebhookUrlRefused(why, { url: text });
  } else if (host === 'localhost' || host.endsWith('.localhost')) {
    const why = addressRefusal('127.0.0.1', p);
    if (why) throw new WebhookUrlRefused(why, { url: text });
  }
  return u;
}

/** A lookup that answers only addresses the policy allows (every resolved one must pass). */
function checkedLookup(p: OutboundPolicy): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 4);
      const list = addresses as LookupAddress[];
      for (const a of list) {
        const why = addressRefusal(a.address, p);
        if (why) return callback(new WebhookUrlRefused(`${hostname} resolves to ${why}`), '', 4);
      }
      if (list.length === 0) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '', 4);
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
      callback(null, list[0]!.address, list[0]!.family);
    });
  };
}

export interface OutboundResult {
  /** The answer's status, or null when none came (refused, timeout, connection error). */
  statusCode: number | null;
  /** Why the attempt failed, or null for a 2xx. */
  error: string | null;
  durationMs: number;
}

/** POSTs `body` to `url` under the policy; never throws, never follows a redirect. */
export function postJson(url: string, body: string, headers: Record<string, string>, p: OutboundPolicy): Promise<OutboundResult> {
  const started = Date.now();
  const done = (statusCode: number | null, error: string | null): OutboundResult => ({ statusCode, error, durationMs: Date.now() - started });
  let u: URL;
  try {
    u = checkWebhookUrl(url, p);
  } catch (e) {
    return Promise.resolve(done(null, (e as Error).message));
  }
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: OutboundResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const send = u.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(
      u,
      {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'aegis-server-webhooks' },
        lookup: checkedLookup(p),
        agent: false,
      },
      (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        let read = 0;
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          // Enough to know the answer; a receiver streaming more is cut off.
          if (read > p.maxResponseBytes) res.destroy();
        });
        const conclude = (): void => {
          if (status >= 200 && status < 300) finish(done(status, null));
          else if (status >= 300 && status < 400) finish(done(status, `redirect (${status}) not followed${res.headers.location ? ` to ${String(res.headers.location).slice(0, 200)}` : ''}`));
          else finish(done(status, `receiver answered ${status}`));
        };
        res.on('end', conclude);
        res.on('close', conclude);
        res.on('error', conclude);
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`no answer within ${p.timeoutMs} ms`));
    }, p.timeoutMs);
    req.on('error', (e: Error) => finish(done(null, e instanceof WebhookUrlRefused ? `refused: ${e.message}` : e.message)));
    req.end(body);
  });
}
