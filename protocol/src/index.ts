/** protocol/: what agent and server share. No I/O lives here. */
export { AegisError, ValidationError } from './errors.js';
export type { ErrorCode, FieldProblem } from './errors.js';
export {
  TIERS,
  LICENSED_TIERS,
  FEATURE_BITS,
  FEATURES,
  TIER_FEATURES,
  isTier,
  isLicensedTier,
  isFeature,
  featureMask,
  effectiveFeatures,
} from './tiers.js';
export type { Tier, LicensedTier, Feature } from './tiers.js';
export {
  TOKEN_ALG,
  TOKEN_ISSUER,
  AUD_LICENSE,
  AUD_KERNEL,
  AUD_ACTIVATION_PROOF,
  AUD_REFRESH_PROOF,
  AUD_DEACTIVATION_PROOF,
  AUD_SNAPSHOTS_PROOF,
  AUD_HEARTBEAT_PROOF,
  HEARTBEAT_CULL_STRATEGIES,
  PROOF_MAX_SKEW_SECONDS,
  LICENSE_TYPES,
  DEFAULT_KERNEL_TOKEN_TTL_SECONDS,
  DEFAULT_LICENSE_TOKEN_TTL_SECONDS,
  VALIDATION_CODES,
  PRODUCT_NAME,
} from './claims.js';
export type { LicenseClaims, KernelClaims, HostProofClaims, LicenseType, ValidationCode, HeartbeatCull } from './claims.js';
export {
  FINGERPRINT_VERSION,
  HARDWARE_ID_PATTERN,
  canonicalizeFacts,
  canonicalString,
  computeFingerprint,
} from './fingerprint.js';
export type { HardwareFacts, CanonicalFacts, Fingerprint } from './fingerprint.js';
export {
  FINGERPRINT_COMPONENTS_VERSION,
  FINGERPRINT_COMPONENT_NAMES,
  COMPONENT_DIGEST_PATTERN,
  FINGERPRINT_MATCH_STRATEGIES,
  DEFAULT_FINGERPRINT_MATCH,
  CLONE_POLICIES,
  DEFAULT_CLONE_POLICY,
  HOST_ENVIRONMENTS,
  CLONE_IDENTITY_COMPONENTS,
  fingerprintSalt,
  fingerprintComponents,
  matchFingerprint,
  sameCloneIdentity,
} from './fingerprint_components.js';
export type {
  FingerprintComponentName,
  FingerprintComponents,
  FingerprintMatch,
  ClonePolicy,
  HostEnvironment,
  FingerprintMatchResult,
} from './fingerprint_components.js';
export {
  ENTITLEMENT_PATTERN,
  MAX_ENTITLEMENTS,
  KERNEL_ENTITLEMENT_BITS,
  FIRST_ENTITLEMENT_BIT,
  LAST_ENTITLEMENT_BIT,
  isEntitlementCode,
  entitlementMask,
  canonicalEntitlements,
} from './entitlements.js';
export {
  LICENSE_KEY_ALPHABET,
  LICENSE_KEY_PATTERN,
  SHELL_SAFE_LICENSE_KEY_PATTERN,
  generateLicenseKey,
  normalizeLicenseKey,
  licenseKeySuffix,
} from './license_key.js';
export { subjects, SEG_MAPS_STREAM, SEG_MAPS_WILDCARD } from './subjects.js';
export { PROTOS, MAX_RULES_PER_SERVICE, MAP_SNAPSHOT_SCHEMA, rulesForEntry } from './snapshot.js';
export type { Proto, Edge, AllowCidr, MapSnapshot, Stage, DatapathMode } from './snapshot.js';
export { parseCidr, formatAddr, CidrError } from './cidr.js';
export type { ParsedCidr } from './cidr.js';
export { jwkThumbprint, publicJwkOf, isEd25519PublicJwk } from './jose_keys.js';
export type { Ed25519PublicJwk } from './jose_keys.js';
export { signHostProof } from './host_proof.js';
export {
  OFFLINE_REQUEST_FORMAT,
  OFFLINE_LICENSE_FORMAT,
  OFFLINE_RELEASE_FORMAT,
  OFFLINE_REQUEST_TYP,
  OFFLINE_RELEASE_TYP,
  OFFLINE_FILE_MAX_AGE_SECONDS,
  OFFLINE_FILE_MAX_BYTES,
  OFFLINE_NONCE_PATTERN,
  newOfflineNonce,
  signOfflineJws,
  decodeOfflineJws,
  verifyOfflineJws,
  offlineAgeRefusal,
} from './offline_files.js';
export type { OfflineActivationClaims, OfflineReleaseClaims, OfflineSignedFile, OfflineLicenseFile } from './offline_files.js';
export { ENVELOPE_VERSION, FLEET_KEY_BYTES, MAX_ENVELOPE_BYTES, EnvelopeError, parseFleetKey, deriveFleetKey, sealEnvelope, openEnvelope } from './envelope.js';
export type { SealedEnvelope } from './envelope.js';
export { AUD_SEG_MAP, AUD_FLEET_LICENSE } from './seg_messages.js';
export { SEG_MESSAGE_MIN_LIFETIME_SECONDS, SEG_EXP_LEEWAY_SECONDS, FLEET_ENVELOPE_MAX_AGE_SECONDS, segMessageExp } from './seg_messages.js';
export { LICENSE_REQUEST_REFUSALS, licenseRequestRefusalOf } from './seg_messages.js';
export type { LicenseRequestRefusal, LicenseRequestRefusalCode } from './seg_messages.js';
export type { SegMapClaims, FleetLicenseClaims, AgentStatusReport, AgentAck, AgentFlowsReport, AgentFlowLine, FlowLogVerdict, FlowReason, FlowProto } from './seg_messages.js';
export { FLOW_LOG_VERDICTS, FLOW_REASONS } from './seg_messages.js';
export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export type { BackoffPolicy } from './backoff.js';
export { LICENSE_STATUSES } from './wire.js';
export type {
  ErrorEnvelope,
  Paged,
  Customer,
  CustomerInput,
  LicenseStatus,
  License,
  IssueLicenseRequest,
  IssuedLicense,
  EntitlementsRequest,
  Machine,
  Jwk,
  JwksDocument,
  ValidateRequest,
  ValidateResult,
  ActivationRequest,
  RefreshRequest,
  CertificateFields,
  CaCertificateClaims,
  NatsCredentialsField,
  IssuedTokens,
  TokenBundle,
  AgentTokenRequest,
  IssuedAgentToken,
  AgentSnapshotsResponse,
  AcceptedResponse,
  HeartbeatRequest,
  HeartbeatResponse,
} from './wire.js';
export { AUD_AGENT_API, AUD_AGENT_TOKEN_PROOF, AGENT_TOKEN_TTL_SECONDS, AGENT_SCOPES, AGENT_API, isAgentScope } from './agent_access.js';
export type { AgentScope, AgentTokenClaims } from './agent_access.js';
// MapSnapshot checking (one checker for server, control API and datapath), ajv problem
// conversion, and the datapath constants generated from the C headers.
export { checkMapSnapshot, inspectMapSnapshot, inspectPolicyRules, SKIP_TCP, SKIP_UDP } from './snapshot_check.js';
export type { CheckedEntry, CheckedRules } from './snapshot_check.js';
export type { SnapshotCheck } from './snapshot_check.js';
export { problemsOf } from './schema_problems.js';
export { BPF_ABI, RULE_RECORD_LAYOUT } from './bpf_abi.generated.js';
// Identifiers, NATS subjects and NATS permissions: one definition for agent, server and scripts.
export {
  IDENTIFIER_CHARS,
  SUBJECT_TOKEN_MAX_LENGTH,
  SUBJECT_TOKEN_PATTERN,
  isSubjectToken,
  HOST_ID_PATTERN,
  isHostId,
  ALL_HOSTS,
  isAgentHostId,
  isMachineId,
  MACHINE_ID_PATTERN,
  FLEET_NAME_MAX_LENGTH,
  FLEET_NAME_PATTERN,
  isFleetName,
} from './identifiers.js';
export { subjectWildcards, agentSubjectMachine, AGENT_REPORT_KINDS } from './subjects.js';
export type { AgentReportKind } from './subjects.js';
export { agentNatsPermissions, serverNatsPermissions, accountPushNatsPermissions } from './nats_permissions.js';
export type { NatsPermissions } from './nats_permissions.js';
export {
  JWKS_SIGNATURE_TYP,
  CA_SIGNATURE_TYP,
  AUD_CA_CERTIFICATE,
  canonicalJson,
  signedJwksPayload,
  parseSignedJwksPayload,
  certificateThumbprint,
} from './jwks_signature.js';
export type { SignedJwksDocument, SignedJwksPayload } from './jwks_signature.js';
export {
  AUD_MODULE_LICENSE,
  DEFAULT_MODULE_LICENSE_TIER,
  MODULE_NAME_PATTERN,
  HOST_VERSION_PATTERN,
  hostMajorOf,
  EXTERNAL_ID_PATTERN,
  isExternalId,
} from './module_license.js';
export type { ModuleLicenseClaims } from './module_license.js';
// JSON Schemas of the HTTP answers in wire.ts: the server's OpenAPI document publishes them.
export {
  ERROR_ENVELOPE_SCHEMA,
  pagedSchema,
  CUSTOMER_SCHEMA,
  LICENSE_SCHEMA,
  ISSUED_LICENSE_SCHEMA,
  MACHINE_SCHEMA,
  HEARTBEAT_RESPONSE_SCHEMA,
  JWK_SCHEMA,
  JWKS_SCHEMA,
  SIGNED_JWKS_SCHEMA,
  VALIDATE_RESULT_SCHEMA,
  TOKEN_BUNDLE_SCHEMA,
  ISSUED_AGENT_TOKEN_SCHEMA,
  AGENT_SNAPSHOTS_SCHEMA,
  ACCEPTED_SCHEMA,
} from './wire_schemas.js';
export type { JsonSchema } from './wire_schemas.js';
export {
  verifyWebhook,
  signWebhook,
  webhookSigningInput,
  WEBHOOK_SIGNATURE_HEADER,
  WEBHOOK_KEY_ID_HEADER,
  WEBHOOK_EVENT_ID_HEADER,
  WEBHOOK_EVENT_TYPE_HEADER,
  DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
  WEBHOOK_EVENT_TYPES,
} from './webhook.js';
export type { WebhookVerdict, WebhookRefusalCode, VerifyWebhookOptions, WebhookEventType, WebhookEvent } from './webhook.js';
// Debian versions and the dpkg status inventory: what a vulnerability match compares.
export {
  DebianVersionError,
  parseDebianVersion,
  compareVersionPart,
  compareParsedDebianVersions,
  compareDebianVersions,
} from './debian_version.js';
export type { DebianVersion } from './debian_version.js';
export { parseDpkgStatus, DEFAULT_DPKG_STATUS_LIMITS, DEBIAN_PACKAGE_NAME } from './dpkg_status.js';
export type { InstalledPackage, DpkgInventory, DpkgStatusProblem, DpkgStatusProblemCode, DpkgStatusLimits } from './dpkg_status.js';
export {
  MAX_INVENTORY_PACKAGES,
  MAX_INVENTORY_SOCKETS,
  MAX_INVENTORY_BODY_BYTES,
  INVENTORY_PACKAGE_SCHEMA,
  LISTENING_SOCKET_SCHEMA,
  INVENTORY_REPORT_SCHEMA,
  INVENTORY_ACCEPTED_SCHEMA,
  packageKey,
} from './inventory.js';
export type { InventoryPackage, ListeningSocket, InventoryReport, InventoryAccepted } from './inventory.js';
