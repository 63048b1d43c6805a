/** @aegis/license-client: verify Aegis module licenses and keep a fleet license on a licensed host. */
export { RESULT_CODES, TOKEN_ALG, AUD_MODULE_LICENSE, HOST_VERSION_PATTERN, hostMajorOf } from './result_codes.js';
export type { ResultCode } from './result_codes.js';
export { LicenseClientError } from './errors.js';
export type { LicenseClientErrorCode } from './errors.js';
export { isEd25519Jwk, verifyCompactJws, MAX_TOKEN_LENGTH } from './jws.js';
export type { Jwk, JwksDocument, JwsResult } from './jws.js';
export { verifyLicenseToken, DEFAULT_CLOCK_SKEW_SECONDS } from './verify_license.js';
export type { VerifyOptions, VerifyResult, ModuleLicenseClaims, RevocationList } from './verify_license.js';
export { loadJwks, ed25519KeysOnly, JWKS_PATH } from './jwks_loader.js';
export type { LoadJwksOptions, LoadedJwks } from './jwks_loader.js';
export { validateOnline, OnlineCache, VALIDATE_PATH, DEFAULT_ONLINE_CACHE_TTL_MS } from './validate_online.js';
export type { OnlineRequest, OnlineOptions, OnlineResult } from './validate_online.js';
export { ENVELOPE_VERSION, FLEET_KEY_BYTES, MAX_ENVELOPE_BYTES, EnvelopeError, parseFleetKey, deriveFleetKey, sealEnvelope, openEnvelope } from './fleet_envelope.js';
export type { SealedEnvelope } from './fleet_envelope.js';
export { AUD_FLEET_LICENSE, FLEET_ENVELOPE_MAX_AGE_SECONDS, FLEET_ENVELOPE_LEEWAY_SECONDS, checkFleetEnvelope, fleetLicenseActive } from './fleet_license.js';
export type { FleetLicense, FleetEnvelopeInput, FleetEnvelopeCheck } from './fleet_license.js';
export { LicenseClient, licenseKeyPath, fleetLicenseSubject, FLEET_NAME_PATTERN, FIRST_MESSAGE_TIMEOUT_MS, LICENSE_FILE_MODE } from './license_client.js';
export type { LicenseClientOptions, LicenseState, NatsLike } from './license_client.js';
export { writeFileAtomic, writeFileAtomicAsync } from './atomic_file.js';
export {
  verifyWebhook,
  signWebhook,
  webhookSigningInput,
  WEBHOOK_SIGNATURE_HEADER,
  WEBHOOK_KEY_ID_HEADER,
  WEBHOOK_EVENT_ID_HEADER,
  WEBHOOK_EVENT_TYPE_HEADER,
  DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
} from './webhook_signature.js';
export type { WebhookVerdict, WebhookRefusalCode, VerifyWebhookOptions } from './webhook_signature.js';
