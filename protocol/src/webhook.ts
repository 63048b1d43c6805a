/**
 * Webhooks: the event types a webhook endpoint may subscribe to, and the signature
 * format, whose one definition is the license client library's
 * (clients/typescript/src/webhook_signature.ts): the server signs with it and receivers
 * verify with it, so the two cannot drift apart.
 */
export {
  verifyWebhook,
  signWebhook,
  webhookSigningInput,
  WEBHOOK_SIGNATURE_HEADER,
  WEBHOOK_KEY_ID_HEADER,
  WEBHOOK_EVENT_ID_HEADER,
  WEBHOOK_EVENT_TYPE_HEADER,
  DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
} from '../../clients/typescript/src/webhook_signature.js';
export type { WebhookVerdict, WebhookRefusalCode, VerifyWebhookOptions } from '../../clients/typescript/src/webhook_signature.js';

/** Events a webhook endpoint can subscribe to. */
export const WEBHOOK_EVENT_TYPES = [
  'license.created',
  'license.revoked',
  'license.expired',
  'machine.activated',
  'machine.deactivated',
  'machine.clock_tampered',
  /** A correlation rule fired (server/src/correlation). */
  'alert.raised',
  /** A rule's action proposed a decision (or, for notify, notified). */
  'decision.proposed',
  /** A decision's canary was promoted to enforce. */
  'decision.promoted',
  /** A decision was rolled back (by an operator, or by the guard rails: no ack, errors, drops outside its intent). */
  'decision.rolled_back',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** The body of every delivery. */
export interface WebhookEvent {
  id: string;
  type: WebhookEventType;
  created_at: string;
  data: Record<string, unknown>;
}
