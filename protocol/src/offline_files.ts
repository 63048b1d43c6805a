/**
 * Offline (air-gapped) activation and deactivation: the three files that travel between a
 * host without a network route to aegis-server and an operator on a connected machine.
 *
 *   request  (host → operator)   {format, jws}: a compact JWS signed by the HOST key, its
 *                                payload the activation request (license key, hardware id,
 *                                components, environment, hostname, agent version, host
 *                                public key) plus a nonce and iat. Any changed byte breaks
 *                                the signature; the key that signs is the key it names.
 *   license  (operator → host)   {format, machine_id, license_id, …, bundle}: the token
 *                                bundle an online activation answers. Its tokens are
 *                                signed by the SERVER and bound to the host (hwid and
 *                                cnf.jkt), so the wrapper needs no signature of its own.
 *   release  (host → operator)   {format, jws}: a JWS signed by the host key naming the
 *                                machine it releases, with a nonce and iat.
 *
 * Each request and release is accepted once (its nonce is recorded server-side) and only
 * within OFFLINE_FILE_MAX_AGE_SECONDS of its iat.
 */
import { randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { TOKEN_ALG } from './claims.js';
import type { Ed25519PublicJwk } from './jose_keys.js';
import type { FingerprintComponents, HostEnvironment } from './fingerprint_components.js';
import type { TokenBundle } from './wire.js';

export const OFFLINE_REQUEST_FORMAT = 'aegis-offline-activation-request/1';
export const OFFLINE_LICENSE_FORMAT = 'aegis-offline-license/1';
export const OFFLINE_RELEASE_FORMAT = 'aegis-offline-release/1';
/** The JWS `typ` of each signed file: a request is never accepted as a release, nor a host proof as either. */
export const OFFLINE_REQUEST_TYP = 'aegis-offline-activation+jwt';
export const OFFLINE_RELEASE_TYP = 'aegis-offline-release+jwt';
/** How long a request or release file may travel before it is refused (7 days). */
export const OFFLINE_FILE_MAX_AGE_SECONDS = 7 * 86_400;
/** The largest offline file read or accepted (a real one is a few KiB). */
export const OFFLINE_FILE_MAX_BYTES = 64 * 1024;
export const OFFLINE_NONCE_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;

/** What a host signs into an offline activation request. */
export interface OfflineActivationClaims {
  license_key: string;
  hardware_id: string;
  host_public_key: Ed25519PublicJwk;
  hostname: string;
  agent_version: string;
  components?: FingerprintComponents;
  environment?: HostEnvironment;
  nonce: string;
  iat: number;
}

/** What a host signs into an offline release. */
export interface OfflineReleaseClaims {
  machine_id: string;
  hardware_id: string;
  /** RFC 7638 thumbprint of the host key that signs. */
  host_key_thumbprint: string;
  nonce: string;
  iat: number;
}

/** A signed offline file (request or release). */
export interface OfflineSignedFile {
  format: typeof OFFLINE_REQUEST_FORMAT | typeof OFFLINE_RELEASE_FORMAT;
  jws: string;
}

/** The machine-bound license file the operator hands back to the host. */
export interface OfflineLicenseFile {
  format: typeof OFFLINE_LICENSE_FORMAT;
  machine_id: string;
  license_id: string;
  hostname: string;
  hardware_id: string;
  /** The nonce of the request this answers. */
  request_nonce: string;
  issued_at: string;
  bundle: TokenBundle;
}

export const newOfflineNonce = (): string => randomBytes(18).toString('base64url');

/** Signs `claims` as a compact JWS (EdDSA) of type `typ` with the host key. */
export function signOfflineJws(privateKey: KeyObject, typ: string, claims: object): string {
  const header = Buffer.from(JSON.stringify({ alg: TOKEN_ALG, typ })).toString('base64url');
  const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const signature = sign(null, Buffer.from(`${header}.${payload}`), privateKey).toString('base64url');
  return `${header}.${payload}.${signature}`;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

/** The header and payload of a compact JWS, unverified; a string saying why not. */
export function decodeOfflineJws(jws: unknown): { header: Record<string, unknown>; payload: Record<string, unknown> } | string {
  if (typeof jws !== 'string') return 'not a string';
  const parts = jws.split('.');
  if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) return 'not a compact JWS';
  try {
    const header: unknown = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8'));
    const payload: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
    if (!isObj(header) || !isObj(payload)) return 'header and payload must be JSON objects';
    return { header, payload };
  } catch {
    return 'header or payload is not base64url JSON';
  }
}

/**
 * Verifies a compact JWS of type `typ` with `key`; the payload, or a string saying why not.
 * Only EdDSA with a 64-byte signature over exactly the signed bytes passes.
 */
export function verifyOfflineJws(jws: unknown, typ: string, key: KeyObject): Record<string, unknown> | string {
  const decoded = decodeOfflineJws(jws);
  if (typeof decoded === 'string') return decoded;
  if (decoded.header.alg !== TOKEN_ALG) return `algorithm must be ${TOKEN_ALG}`;
  if (decoded.header.typ !== typ) return `typ must be ${typ}`;
  const [h, p, s] = (jws as string).split('.') as [string, string, string];
  const signature = Buffer.from(s, 'base64url');
  if (signature.length !== 64) return 'signature does not verify with the host key';
  try {
    if (!verify(null, Buffer.from(`${h}.${p}`), key, signature)) return 'signature does not verify with the host key';
  } catch {
    return 'signature does not verify with the host key';
  }
  return decoded.payload;
}

/**
 * Why `iat` is unacceptable at `nowSeconds` (older than the max age, or ahead of the
 * clock by more than `skewSeconds`), or null.
 */
export function offlineAgeRefusal(iat: unknown, nowSeconds: number, skewSeconds: number, maxAgeSeconds = OFFLINE_FILE_MAX_AGE_SECONDS): string | null {
  if (typeof iat !== 'number' || !Number.isInteger(iat)) return 'iat must be an integer (seconds since the epoch)';
  if (iat > nowSeconds + skewSeconds) return `iat is in the future (server time ${nowSeconds})`;
  if (nowSeconds - iat > maxAgeSeconds) return `the file is older than ${maxAgeSeconds} s (created ${new Date(iat * 1000).toISOString()}); make a new one on the host`;
  return null;
}
