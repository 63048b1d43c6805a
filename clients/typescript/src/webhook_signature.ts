/**
 * Aegis webhook signatures. The server signs every delivery with its Ed25519 signing key
 * (a key of its `/.well-known/jwks.json`) over `<t>.<body>`, where `t` is the Unix time of
 * the attempt and `body` the exact bytes of the request body, and sends
 *
 *   Aegis-Signature: t=<unix>,v1=<base64url signature>
 *   Aegis-Key-Id:    <kid>
 *   Aegis-Event-Id:  <event id>
 *
 * A receiver verifies with `verifyWebhook`: the signature under the named key of the
 * JWKS it holds, and `t` within a tolerance of its clock, so a captured delivery cannot be
 * replayed later (within the tolerance the event id is the receiver's dedup key).
 *
 * The signed text begins with decimal digits and a dot followed by a JSON object, and a
 * JWS signing input is two base64url segments (which never contain `{`): no webhook
 * signature is ever a valid signature of a token, nor the other way round.
 */
import { sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { keysOf, type JwksDocument } from './jws.js';

export const WEBHOOK_SIGNATURE_HEADER = 'aegis-signature';
export const WEBHOOK_KEY_ID_HEADER = 'aegis-key-id';
export const WEBHOOK_EVENT_ID_HEADER = 'aegis-event-id';
export const WEBHOOK_EVENT_TYPE_HEADER = 'aegis-event-type';
/** Default accepted distance between `t` and the receiver's clock. */
export const DEFAULT_WEBHOOK_TOLERANCE_SECONDS = 300;
/** A header longer than this is refused unread. */
const MAX_HEADER_LENGTH = 1024;

export type WebhookRefusalCode =
  /** The header is missing or not `t=<unix>,v1=<base64url>`. */
  | 'WEBHOOK_MALFORMED'
  /** No key of the JWKS has the delivery's kid (or no kid was given and none verifies). */
  | 'WEBHOOK_UNKNOWN_KEY'
  /** The signature does not verify over `<t>.<body>`: body, time or signature changed. */
  | 'WEBHOOK_SIGNATURE_INVALID'
  /** `t` is further from now than the tolerance: a replay, or a clock far off. */
  | 'WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE';

export type WebhookVerdict =
  | { ok: true; event: { id: string; type: string; created_at: string; data: Record<string, unknown> }; timestamp: number; kid: string }
  | { ok: false; code: WebhookRefusalCode; message: string };

export interface VerifyWebhookOptions {
  /** Accepted |now - t| in seconds (default 300). */
  toleranceSeconds?: number;
  /** The kid the delivery named (`Aegis-Key-Id`); without it every key of the set is tried. */
  kid?: string;
  /** The receiver's clock (tests). */
  now?: Date;
}

/** The text a webhook signature covers. */
export function webhookSigningInput(timestamp: number, body: string | Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(`${timestamp}.`, 'utf8'), typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body)]);
}

/**
 * The `Aegis-Signature` header value for `body` at `timestamp` (the server's side): with
 * an Ed25519 private key, or a function that signs (a key held in an HSM).
 */
export function signWebhook(key: KeyObject | ((data: Uint8Array) => Uint8Array), timestamp: number, body: string): string {
  const input = webhookSigningInput(timestamp, body);
  const sig = Buffer.from(typeof key === 'function' ? key(input) : cryptoSign(null, input, key));
  return `t=${timestamp},v1=${sig.toString('base64url')}`;
}

function parseHeader(header: string): { t: number; v1: Buffer[] } | null {
  if (header.length > MAX_HEADER_LENGTH) return null;
  let t: number | null = null;
  const v1: Buffer[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) return null;
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === 't') {
      if (t !== null || !/^[0-9]{1,12}$/.test(v)) return null;
      t = Number(v);
    } else if (k === 'v1') {
      if (!/^[A-Za-z0-9_-]{86}$/.test(v)) return null;
      v1.push(Buffer.from(v, 'base64url'));
    }
  }
  return t === null || v1.length === 0 ? null : { t, v1 };
}

/**
 * Verifies a webhook delivery: `body` exactly as received (the raw bytes, before any JSON
 * parsing), `header` the `Aegis-Signature` value, `jwks` the server's key set. Refuses a
 * bad or missing signature, a kid the set does not hold, and a timestamp outside the
 * tolerance; on success answers the parsed event.
 */
export function verifyWebhook(body: string | Uint8Array, header: string | null | undefined, jwks: JwksDocument, opts: VerifyWebhookOptions = {}): WebhookVerdict {
  if (typeof header !== 'string') return { ok: false, code: 'WEBHOOK_MALFORMED', message: 'no Aegis-Signature header' };
  const parsed = parseHeader(header);
  if (!parsed) return { ok: false, code: 'WEBHOOK_MALFORMED', message: 'Aegis-Signature must be t=<unix seconds>,v1=<base64url Ed25519 signature>' };
  const keys = keysOf(jwks);
  let candidates: Array<[string, KeyObject]>;
  if (opts.kid !== undefined) {
    const k = keys.get(opts.kid);
    if (!k) return { ok: false, code: 'WEBHOOK_UNKNOWN_KEY', message: `no Ed25519 key with kid ${JSON.stringify(opts.kid)} in the key set` };
    candidates = [[opts.kid, k]];
  } else {
    candidates = [...keys];
    if (candidates.length === 0) return { ok: false, code: 'WEBHOOK_UNKNOWN_KEY', message: 'the key set holds no Ed25519 key' };
  }
  const input = webhookSigningInput(parsed.t, body);
  const kid = candidates.find(([, key]) => parsed.v1.some((sig) => cryptoVerify(null, input, key, sig)))?.[0];
  if (kid === undefined) {
    return opts.kid === undefined
      ? { ok: false, code: 'WEBHOOK_UNKNOWN_KEY', message: 'no key of the key set verifies this delivery' }
      : { ok: false, code: 'WEBHOOK_SIGNATURE_INVALID', message: 'the signature does not verify over the timestamp and body' };
  }
  // The time is checked after the signature, so a refusal for it names a genuine delivery.
  const tolerance = opts.toleranceSeconds ?? DEFAULT_WEBHOOK_TOLERANCE_SECONDS;
  const now = Math.floor((opts.now ?? new Date()).getTime() / 1000);
  if (Math.abs(now - parsed.t) > tolerance) {
    return { ok: false, code: 'WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE', message: `signed at ${parsed.t}, ${now - parsed.t} s from now; at most ${tolerance} s accepted (a replay, or a clock off)` };
  }
  let event: unknown;
  try {
    event = JSON.parse(typeof body === 'string' ? body : Buffer.from(body).toString('utf8'));
  } catch {
    return { ok: false, code: 'WEBHOOK_MALFORMED', message: 'the signed body is not JSON' };
  }
  const e = event as Record<string, unknown>;
  if (e === null || typeof e !== 'object' || typeof e.id !== 'string' || typeof e.type !== 'string' || typeof e.created_at !== 'string' || e.data === null || typeof e.data !== 'object') {
    return { ok: false, code: 'WEBHOOK_MALFORMED', message: 'the signed body is not an Aegis event {id, type, created_at, data}' };
  }
  return { ok: true, event: e as { id: string; type: string; created_at: string; data: Record<string, unknown> }, timestamp: parsed.t, kid };
}
