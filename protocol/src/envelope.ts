/**
 * The fleet license envelope. Its one definition is the license client library's
 * (clients/typescript/src/fleet_envelope.ts): the server seals with it, the agent and
 * every licensed service open with it, so sealing and opening cannot drift apart.
 * The library is I/O-free here (node:crypto only).
 */
export {
  ENVELOPE_VERSION,
  FLEET_KEY_BYTES,
  MAX_ENVELOPE_BYTES,
  EnvelopeError,
  parseFleetKey,
  deriveFleetKey,
  sealEnvelope,
  openEnvelope,
} from '../../clients/typescript/src/fleet_envelope.js';
export type { SealedEnvelope } from '../../clients/typescript/src/fleet_envelope.js';
