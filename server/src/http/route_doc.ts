/**
 * What a route says about itself for the API document: registered with the route
 * (Router.add's `doc`), next to its handler, and turned into OpenAPI by openapi.ts. The
 * request schema is the very object the route's validator was compiled from, so the
 * document and the check cannot drift apart.
 */
import type { AgentScope, ErrorCode, JsonSchema } from '../../../protocol/src/index.js';
import type { Scope } from '../api_keys.js';

/** How a caller authenticates to a route. */
export type RouteAuth =
  /** No credential at all (health, key sets, the document itself). */
  | { kind: 'public' }
  /** An admin API key (X-API-Key or Authorization: Bearer, or the console session of one) holding `scope`. */
  | { kind: 'api_key'; scope: Scope }
  /** The operator console's session cookie (writes: its CSRF token and the console's Origin). */
  | { kind: 'console_session' }
  /** An admin API key with `scope`, or none and a host-key proof in the body instead. */
  | { kind: 'api_key_or_host_proof'; scope: Scope; audience: string }
  /** No API key: a host-key proof in the body (`proof`, signed for `audience`) or a license key. */
  | { kind: 'host_proof'; audience: string }
  /** A host-key proof in the X-Aegis-Proof header, signed for `audience`. */
  | { kind: 'host_proof_header'; audience: string }
  /** A single-use agent access token (Authorization: Bearer) with `scope`; certificate-bound under mTLS. */
  | { kind: 'agent_token'; scope: AgentScope };

export interface QueryParamDoc {
  name: string;
  description: string;
  schema: JsonSchema;
}

export interface ResponseDoc {
  description: string;
  /** The JSON body's schema; absent for a body-less answer (204). */
  schema?: JsonSchema;
  example?: unknown;
  /** Defaults to application/json. */
  contentType?: string;
}

export interface RouteDoc {
  summary: string;
  description?: string;
  /** The group the reference lists the route under. */
  tag: string;
  auth: RouteAuth;
  request?: { schema: JsonSchema; example?: unknown; required?: boolean };
  query?: readonly QueryParamDoc[];
  /** Successful answers by status. */
  responses: Readonly<Record<number, ResponseDoc>>;
  /**
   * Error codes this route raises itself. Those every route of its kind can answer
   * (authentication, body parsing, VALIDATION_FAILED, INTERNAL) are added by openapi.ts.
   */
  errors?: readonly ErrorCode[];
}
