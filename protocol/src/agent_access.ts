/**
 * Agent access tokens: short-lived EdDSA JWTs with scopes, a jti
 * and a nonce, used once each, bound to the agent's client certificate (RFC 8705
 * `cnf.x5t#S256`) when the agent listener runs mTLS. Shared by agent and server.
 */

/** `aud` of an agent access token. */
export const AUD_AGENT_API = 'aegis-agent-api';
/** `aud` of the host-key proof that obtains a token without mTLS. */
export const AUD_AGENT_TOKEN_PROOF = 'aegis-agent-token';
export const AGENT_TOKEN_TTL_SECONDS = 15 * 60;

/** Scopes of the agent endpoints: the telemetry family first, then licensing, snapshots, status and the package inventory. */
export const AGENT_SCOPES = ['file_analysis', 'threat_reporting', 'telemetry', 'license:refresh', 'snapshots:read', 'status:write', 'inventory'] as const;
export type AgentScope = (typeof AGENT_SCOPES)[number];

export function isAgentScope(s: unknown): s is AgentScope {
  return typeof s === 'string' && (AGENT_SCOPES as readonly string[]).includes(s);
}

/** Agent endpoints on the agent listener. */
export const AGENT_API = {
  token: '/api/v1/agent/token',
  refresh: '/api/v1/agent/refresh',
  snapshots: '/api/v1/agent/snapshots',
  status: '/api/v1/agent/status',
  telemetry: '/api/v1/agent/telemetry',
  inventory: '/api/v1/agent/inventory',
  threats: '/api/v1/agent/threats',
  files: '/api/v1/agent/files',
} as const;

export interface AgentTokenClaims {
  iss: string;
  aud: typeof AUD_AGENT_API;
  sub: string;
  scope: string;
  jti: string;
  nonce: string;
  iat: number;
  exp: number;
  cnf?: { 'x5t#S256': string };
}
