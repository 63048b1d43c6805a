/**
 * Reading an Aegis JSON answer: a 2xx body, or the error envelope
 * `{"error":{"code","message","details"}}` turned into an ApiError. Shared by the server
 * and agent clients so both report failures the same way.
 */
import { ApiError, ProtocolError, type PeerKind } from './errors.js';
import type { HttpResponse } from './http_transport.js';

/** Adds the hint for an error envelope; each client knows what to suggest for its peer. */
export type HintFor = (code: string, status: number, details: unknown, message: string) => string | undefined;

interface Envelope {
  error: { code: string; message: string; details?: unknown };
}

function isEnvelope(v: unknown): v is Envelope {
  if (typeof v !== 'object' || v === null) return false;
  const e = (v as { error?: unknown }).error;
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string';
}

/** Problems named in `details` (a validation failure) that the message does not already say. */
function detailText(message: string, details: unknown): string {
  if (!Array.isArray(details)) return '';
  const parts: string[] = [];
  for (const d of details) {
    if (typeof d !== 'object' || d === null) continue;
    const { path, message: m } = d as { path?: unknown; message?: unknown };
    if (typeof m !== 'string') continue;
    const text = typeof path === 'string' && path ? `${path.replace(/^\//, '')}: ${m}` : m;
    if (!message.includes(m)) parts.push(text);
  }
  return parts.length > 0 ? ` (${parts.join('; ')})` : '';
}

export function readJson<T>(peer: PeerKind, peerName: string, res: HttpResponse, hintFor: HintFor): T | null {
  let body: unknown = null;
  if (res.text.length > 0) {
    try {
      body = JSON.parse(res.text);
    } catch (cause) {
      throw new ProtocolError(`unexpected answer from ${peerName} (HTTP ${res.status}, not JSON)`, {
        hint: `is ${peerName} really ${peer === 'server' ? 'an aegis-server' : 'aegis-agent'}?`,
        cause,
      });
    }
  }
  if (res.status >= 200 && res.status < 300) return body as T | null;
  if (isEnvelope(body)) {
    const { code, message, details } = body.error;
    const text = (typeof message === 'string' && message ? message : code) + detailText(String(message ?? ''), details);
    throw new ApiError(peer, res.status, code, text, details ?? null, hintFor(code, res.status, details ?? null, String(message ?? '')));
  }
  throw new ApiError(peer, res.status, `HTTP_${res.status}`, `${peerName} answered HTTP ${res.status} without an error description`, null, hintFor(`HTTP_${res.status}`, res.status, null, ''));
}
