/**
 * Offline (air-gapped) activation and deactivation: an operator on a connected machine
 * submits the file a host without a network route wrote (protocol/src/offline_files.ts).
 *
 * POST /api/v1/machines/offline-activations   request file → machine-bound license file
 * POST /api/v1/machines/offline-deactivations release file → the seat is freed
 *
 * The request's signature is checked with the host key it names, its age and nonce here
 * and in the lifecycle; the seat itself is bound by MachineLifecycle's one activation path
 * (seat limit, fingerprint strategy, clone and container policies, entitlements), so an
 * offline seat is an online seat that came by file.
 */
import {
  AegisError,
  HARDWARE_ID_PATTERN,
  OFFLINE_FILE_MAX_AGE_SECONDS,
  OFFLINE_FILE_MAX_BYTES,
  OFFLINE_LICENSE_FORMAT,
  OFFLINE_NONCE_PATTERN,
  OFFLINE_RELEASE_FORMAT,
  OFFLINE_RELEASE_TYP,
  OFFLINE_REQUEST_FORMAT,
  OFFLINE_REQUEST_TYP,
  PROOF_MAX_SKEW_SECONDS,
  MACHINE_SCHEMA,
  TOKEN_BUNDLE_SCHEMA,
  ValidationError,
  decodeOfflineJws,
  isEd25519PublicJwk,
  offlineAgeRefusal,
  verifyOfflineJws,
  type Machine,
  type OfflineActivationClaims,
  type OfflineLicenseFile,
  type OfflineReleaseClaims,
  type OfflineSignedFile,
} from '../../protocol/src/index.js';
import type { ApiKeys } from './api_keys.js';
import type { AuditLog } from './audit.js';
import { iso, type Clock } from './clock.js';
import { publicKeyFromJwk } from './host_proof.js';
import { actorOf, authorize } from './http/auth.js';
import type { Router } from './http/router.js';
import { auditRefusal, type MachineLifecycle, type OfflineGrant, type SeatRequest } from './machine_lifecycle.js';
import { activationBody } from './routes.js';
import type { Tenancy } from './tenancy.js';
import { validator } from './validation.js';

export interface OfflineRouteDeps {
  apiKeys: ApiKeys;
  audit: AuditLog;
  lifecycle: MachineLifecycle;
  tenancy: Tenancy;
  clock: Clock;
}

const fileSchema = (format: string) => ({
  type: 'object',
  additionalProperties: false,
  required: ['format', 'jws'],
  properties: { format: { const: format }, jws: { type: 'string', minLength: 1, maxLength: 32768, pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$' } },
});
const requestFile = validator<OfflineSignedFile>(fileSchema(OFFLINE_REQUEST_FORMAT));
const releaseFile = validator<OfflineSignedFile>(fileSchema(OFFLINE_RELEASE_FORMAT));

const nonce = { type: 'string', pattern: OFFLINE_NONCE_PATTERN.source };
const iat = { type: 'integer', minimum: 0 };
const { proof: _proof, csr: _csr, ...seatProperties } = (activationBody.schema as { properties: Record<string, unknown> }).properties;
/** The signed payload of a request: the online activation body without proof and CSR, plus nonce and iat. */
const requestClaims = validator<OfflineActivationClaims>({
  type: 'object',
  additionalProperties: false,
  required: ['license_key', 'hardware_id', 'host_public_key', 'hostname', 'agent_version', 'nonce', 'iat'],
  properties: { ...seatProperties, nonce, iat },
});
const releaseClaims = validator<OfflineReleaseClaims>({
  type: 'object',
  additionalProperties: false,
  required: ['machine_id', 'hardware_id', 'host_key_thumbprint', 'nonce', 'iat'],
  properties: {
    machine_id: { type: 'string', maxLength: 64 },
    hardware_id: { type: 'string', pattern: HARDWARE_ID_PATTERN.source },
    host_key_thumbprint: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' },
    nonce,
    iat,
  },
});

const OFFLINE_LICENSE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['format', 'machine_id', 'license_id', 'hostname', 'hardware_id', 'request_nonce', 'issued_at', 'bundle'],
  properties: {
    format: { const: OFFLINE_LICENSE_FORMAT },
    machine_id: { type: 'string' },
    license_id: { type: 'string' },
    hostname: { type: 'string' },
    hardware_id: { type: 'string' },
    request_nonce: { type: 'string' },
    issued_at: { type: 'string', format: 'date-time' },
    bundle: TOKEN_BUNDLE_SCHEMA,
  },
};

const invalid = (message: string) => new AegisError('PROOF_INVALID', `offline file rejected: ${message}`);

/** A grant for a verified file: its nonce is kept past the age window (after it, the iat alone refuses). */
const grantOf = (c: { nonce: string; iat: number }): OfflineGrant => ({
  nonce: c.nonce,
  expiresAt: iso(new Date((c.iat + OFFLINE_MAX_AGE_WITH_SKEW) * 1000)),
});
const OFFLINE_MAX_AGE_WITH_SKEW = OFFLINE_FILE_MAX_AGE_SECONDS + 2 * PROOF_MAX_SKEW_SECONDS;

/**
 * Opens a request file: the envelope, the signature by the key its payload names (so a
 * request signed by any other key, or with any byte changed, is PROOF_INVALID), the
 * payload's shape (the online activation body's schema) and its age.
 */
export function openActivationRequest(body: unknown, clock: Clock): { request: SeatRequest; grant: OfflineGrant; claims: OfflineActivationClaims } {
  const file = requestFile(body);
  const decoded = decodeOfflineJws(file.jws);
  if (typeof decoded === 'string') throw invalid(decoded);
  const named = decoded.payload.host_public_key;
  if (!isEd25519PublicJwk(named)) throw invalid('host_public_key must be an Ed25519 public JWK without private members');
  const payload = verifyOfflineJws(file.jws, OFFLINE_REQUEST_TYP, publicKeyFromJwk(named));
  if (typeof payload === 'string') throw invalid(payload);
  let claims: OfflineActivationClaims;
  try {
    claims = requestClaims(payload);
  } catch (e) {
    if (e instanceof ValidationError) throw invalid(`payload: ${e.problems.map((p) => `${p.path} ${p.message}`).join('; ')}`);
    throw e;
  }
  const age = offlineAgeRefusal(claims.iat, Math.floor(clock.now().getTime() / 1000), PROOF_MAX_SKEW_SECONDS);
  if (age) throw invalid(age);
  const { nonce: _n, iat: _i, ...request } = claims;
  return { request, grant: grantOf(claims), claims };
}

/** The claims of a release file, unverified: they name the machine whose key verifies them. */
function releaseOf(body: unknown): { jws: string; claims: OfflineReleaseClaims } {
  const file = releaseFile(body);
  const decoded = decodeOfflineJws(file.jws);
  if (typeof decoded === 'string') throw invalid(decoded);
  try {
    return { jws: file.jws, claims: releaseClaims(decoded.payload) };
  } catch (e) {
    if (e instanceof ValidationError) throw invalid(`payload: ${e.problems.map((p) => `${p.path} ${p.message}`).join('; ')}`);
    throw e;
  }
}

export function addOfflineRoutes(r: Router, d: OfflineRouteDeps): void {
  const refused = (err: unknown, e: Parameters<typeof auditRefusal>[2]): Promise<never> => auditRefusal(d.audit, err, e);

  r.add(
    'POST',
    '/api/v1/machines/offline-activations',
    async (req) => {
      const p = await authorize(d.apiKeys, req, 'licenses:write');
      const actor = actorOf(p);
      const base = { event_type: 'machine.activate', actor, client_ip: req.clientIp };
      let opened: ReturnType<typeof openActivationRequest>;
      let result;
      try {
        opened = openActivationRequest(req.body, d.clock);
        // A key limited to a customer activates on its own licenses only (404 otherwise).
        result = await d.lifecycle.activateOffline(opened.request, opened.grant, (licenseId) => d.tenancy.assertLicense(p, licenseId));
      } catch (e) {
        return refused(e, { ...base, data: { offline: true } });
      }
      const { request, claims } = opened;
      await d.audit.record({
        ...base,
        event_type: result.created ? 'machine.activated' : 'machine.reactivated',
        license_id: result.license_id,
        customer_id: result.customer_id,
        machine_id: result.machine_id,
        data: {
          offline: true,
          request_nonce: claims.nonce,
          hostname: request.hostname,
          hardware_id: request.hardware_id,
          agent_version: request.agent_version,
          environment: request.environment ?? null,
          ...(result.clone_of ? { clone_of: result.clone_of } : {}),
          ...(result.fingerprint ? { fingerprint_changed: result.fingerprint.changed } : {}),
        },
      });
      const file: OfflineLicenseFile = {
        format: OFFLINE_LICENSE_FORMAT,
        machine_id: result.machine_id,
        license_id: result.license_id,
        hostname: request.hostname,
        hardware_id: request.hardware_id,
        request_nonce: claims.nonce,
        issued_at: iso(d.clock.now()),
        bundle: result.bundle,
      };
      return { status: result.created ? 201 : 200, body: file };
    },
    {
      maxBody: OFFLINE_FILE_MAX_BYTES,
      doc: {
        summary: 'Activate an air-gapped host from its offline request file',
        description:
          `The body is the file \`aegisctl activate --offline\` wrote on the host: \`{format: "${OFFLINE_REQUEST_FORMAT}", jws}\`, a compact JWS (typ \`${OFFLINE_REQUEST_TYP}\`) signed by the host key its payload names, the payload the online activation body without proof and CSR plus \`nonce\` and \`iat\`. A changed byte or another key is 401 \`PROOF_INVALID\`, so is a file older than 7 days; a second use is 401 \`PROOF_REPLAYED\` and takes no seat. The seat is bound exactly as online (seat limit, fingerprint strategy, clone and container policies). The answer is the license file for \`aegisctl install-license\`: the token bundle online activation answers, machine-bound (hwid and host key thumbprint), with expiry. A key limited to a customer gets 404 for another customer's license.`,
        tag: 'machines',
        auth: { kind: 'api_key', scope: 'licenses:write' },
        request: { schema: requestFile.schema },
        responses: {
          200: { description: 'The same machine, activated again: its license file.', schema: OFFLINE_LICENSE_SCHEMA },
          201: { description: 'A new seat: its license file.', schema: OFFLINE_LICENSE_SCHEMA },
        },
        errors: ['NOT_FOUND', 'SEAT_LIMIT', 'HOST_KEY_MISMATCH', 'MACHINE_CLONE_DETECTED', 'CONTAINER_NOT_ALLOWED', 'PROOF_INVALID', 'PROOF_REPLAYED', 'LICENSE_REVOKED', 'LICENSE_EXPIRED', 'VERSION_MISMATCH', 'PRODUCT_MISMATCH', 'SIGNING_KEY_UNAVAILABLE'],
      },
    },
  );

  r.add(
    'POST',
    '/api/v1/machines/offline-deactivations',
    async (req) => {
      const p = await authorize(d.apiKeys, req, 'licenses:write');
      const actor = actorOf(p);
      let machineId: string | undefined;
      try {
        const { jws, claims } = releaseOf(req.body);
        machineId = claims.machine_id;
        const res = await d.lifecycle.deactivate(claims.machine_id, {
          authorize: (id) => d.tenancy.assertMachine(p, id),
          release: (hostKey, m) => {
            const payload = verifyOfflineJws(jws, OFFLINE_RELEASE_TYP, hostKey);
            if (typeof payload === 'string') throw invalid(payload);
            if (claims.host_key_thumbprint !== m.host_key_thumbprint) throw invalid('host_key_thumbprint is not the key this machine is bound to');
            const age = offlineAgeRefusal(claims.iat, Math.floor(d.clock.now().getTime() / 1000), PROOF_MAX_SKEW_SECONDS);
            if (age) throw invalid(age);
            return grantOf(claims);
          },
        });
        await d.audit.record({
          event_type: 'machine.deactivated',
          actor,
          machine_id: res.machine.id,
          license_id: res.license_id,
          customer_id: res.customer_id,
          client_ip: req.clientIp,
          data: { offline: true, release_nonce: claims.nonce, certificates_revoked: res.certificates_revoked, nats_users_revoked: res.nats_users_revoked },
        });
        return { status: 200, body: res.machine satisfies Machine };
      } catch (e) {
        return refused(e, { event_type: 'machine.deactivate', actor, client_ip: req.clientIp, ...(machineId ? { data: { offline: true, machine_id: machineId } } : { data: { offline: true } }) });
      }
    },
    {
      maxBody: OFFLINE_FILE_MAX_BYTES,
      doc: {
        summary: 'Free the seat of an air-gapped host from its offline release file',
        description: `The body is the file \`aegisctl deactivate --offline\` wrote: \`{format: "${OFFLINE_RELEASE_FORMAT}", jws}\`, a JWS (typ \`${OFFLINE_RELEASE_TYP}\`) signed by the key the machine is bound to, naming its machine_id, with \`nonce\` and \`iat\`. Another key or a changed byte is 401 \`PROOF_INVALID\`; a second use 401 \`PROOF_REPLAYED\`. A key limited to a customer gets 404 for another customer's machine.`,
        tag: 'machines',
        auth: { kind: 'api_key', scope: 'licenses:write' },
        request: { schema: releaseFile.schema },
        responses: { 200: { description: 'The deactivated machine.', schema: MACHINE_SCHEMA } },
        errors: ['NOT_FOUND', 'PROOF_INVALID', 'PROOF_REPLAYED', 'MACHINE_DEACTIVATED'],
      },
    },
  );
}
