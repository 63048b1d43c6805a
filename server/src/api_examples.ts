/**
 * Examples the OpenAPI document shows: made-up values only (example.com, ids of zeros,
 * a license key with an invalid check character that no server ever issued), each checked
 * against its schema by the API document test.
 */
import type { Customer, IssuedLicense, ValidateResult } from '../../protocol/src/index.js';

const at = '2026-01-01T00:00:00.000Z';

export const CUSTOMER_EXAMPLE: Customer = {
  id: '00000000-0000-4000-8000-000000000001',
  external_id: 'CUST-001',
  name: 'Example Ltd',
  email: 'ops@example.com',
  company: 'Example Ltd',
  is_active: true,
  created_at: at,
  updated_at: at,
};

export const ISSUED_LICENSE_EXAMPLE: IssuedLicense = {
  id: '00000000-0000-4000-8000-000000000002',
  customer_id: CUSTOMER_EXAMPLE.id,
  tier: 'server',
  license_type: 'subscription',
  status: 'active',
  module_name: null,
  key_suffix: '00000',
  max_machines: 5,
  allowed_major_versions: [],
  features: ['segmentation_enforce'],
  extra_features: [],
  fleet: null,
  entitlements: ['reports.export'],
  fingerprint_match: 'majority',
  clone_policy: 'refuse',
  allow_containers: true,
  heartbeat_interval_seconds: null,
  heartbeat_cull: 'deactivate',
  floating: false,
  lease_ttl_seconds: null,
  grace_period_seconds: null,
  expires_at: '2027-01-01T00:00:00.000Z',
  revoked_at: null,
  revoke_reason: null,
  created_at: at,
  updated_at: at,
  token: null,
  license_key: 'AEGIS-EXAMP-LE000-00000-00000',
};

export const VALIDATE_REFUSED_EXAMPLE: ValidateResult = { valid: false, code: 'SIGNATURE_INVALID', message: 'the token signature does not verify' };
