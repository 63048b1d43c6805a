/**
 * Agent access tokens: scoped, 15-minute, single-use EdDSA JWTs. Each is
 * bound to the client certificate it was issued over (RFC 8705 `cnf.x5t#S256`) when the
 * agent listener runs mTLS, so a token lifted from one machine is useless with another
 * machine's certificate. A token's jti and nonce are recorded in the database when it is
 * used (the used_proofs table), so a replay is refused by every replica.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import {
  AegisError,
  AGENT_SCOPES,
  AGENT_TOKEN_TTL_SECONDS,
  AUD_AGENT_API,
  TOKEN_ISSUER,
  isAgentScope,
  type AgentScope,
  type AgentTokenClaims,
  type IssuedAgentToken,
} from '../../protocol/src/index.js';
import type { Database } from './db/schema.js';
import { epochSeconds, iso, type Clock } from './clock.js';
import type { TokenService } from './tokens.js';

/** What the transport established about the caller: a verified client certificate, or nothing. */
export interface PeerBinding {
  machine_id: string;
  thumbprint: string;
}

export interface AgentCaller {
  machine_id: string;
  scopes: AgentScope[];
  jti: string;
}

const REPLAY_AUDIENCE = AUD_AGENT_API;
const SKEW_SECONDS = 60;

function unauthorized(message: string): AegisError {
  return new AegisError('UNAUTHORIZED', `access token refused: ${message}`);
}

/** The scopes asked for, checked against the known ones; none asked: all of them. */
export function requestedScopes(input: unknown): AgentScope[] {
  if (input === undefined || input === null) return [...AGENT_SCOPES];
  const list = typeof input === 'string' ? input.split(/\s+/).filter(Boolean) : input;
  if (!Array.isArray(list) || list.length === 0) throw new AegisError('VALIDATION_FAILED', 'scope must be a non-empty list of scopes', { details: [{ path: '/scope', message: 'must be a non-empty list' }] });
  const unknown = list.filter((s) => !isAgentScope(s));
  if (unknown.length > 0) {
    throw new AegisError('VALIDATION_FAILED', `unknown scope(s): ${unknown.map(String).join(', ')}`, {
      details: [{ path: '/scope', message: `allowed: ${AGENT_SCOPES.join(', ')}` }],
    });
  }
  return [...new Set(list as AgentScope[])];
}

export class AgentTokens {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly tokens: TokenService,
    private readonly ttlSeconds = AGENT_TOKEN_TTL_SECONDS,
  ) {}

  async issue(machineId: string, scopes: AgentScope[], bind: string | null): Promise<IssuedAgentToken> {
    const iat = epochSeconds(this.clock.now());
    const claims: AgentTokenClaims = {
      iss: TOKEN_ISSUER,
      aud: AUD_AGENT_API,
      sub: machineId,
      scope: scopes.join(' '),
      jti: randomUUID(),
      nonce: randomBytes(16).toString('base64url'),
      iat,
      exp: iat + this.ttlSeconds,
      ...(bind ? { cnf: { 'x5t#S256': bind } } : {}),
    };
    const access_token = await this.tokens.signMessage({ ...claims });
    return { access_token, token_type: 'Bearer', expires_in: this.ttlSeconds, scope: claims.scope, jti: claims.jti };
  }

  /**
   * Authenticates the bearer token of a request and consumes it: 401 for a missing,
   * invalid, expired, replayed or wrongly bound token, 403 for one without `scope`.
   * `peer` is the verified client certificate of the connection (null without mTLS).
   */
  async authorize(authorization: unknown, scope: AgentScope, peer: PeerBinding | null): Promise<AgentCaller> {
    if (typeof authorization !== 'string' || !/^Bearer\s+\S+$/i.test(authorization)) {
      throw new AegisError('UNAUTHORIZED', `an agent access token is required (Authorization: Bearer; get one from POST /api/v1/agent/token)`);
    }
    const token = authorization.replace(/^Bearer\s+/i, '').trim();
    const v = await this.tokens.verify(token);
    if (!v.ok) throw unauthorized(v.message);
    const c = v.payload as Partial<AgentTokenClaims>;
    const now = epochSeconds(this.clock.now());
    if (c.iss !== TOKEN_ISSUER || c.aud !== AUD_AGENT_API) throw unauthorized('not an agent access token');
    if (typeof c.exp !== 'number' || c.exp <= now) throw unauthorized('expired');
    if (typeof c.iat !== 'number' || c.iat > now + SKEW_SECONDS) throw unauthorized('issued in the future');
    if (typeof c.sub !== 'string' || typeof c.jti !== 'string' || typeof c.nonce !== 'string' || typeof c.scope !== 'string') {
      throw unauthorized('incomplete claims');
    }
    const bound = c.cnf?.['x5t#S256'];
    if (peer) {
      // RFC 8705: the certificate of this connection must be the one the token names.
      if (typeof bound !== 'string') throw unauthorized('not bound to a client certificate (get one over mTLS)');
      if (bound !== peer.thumbprint || c.sub !== peer.machine_id) throw unauthorized('bound to another client certificate');
    } else if (bound !== undefined) {
      throw unauthorized('bound to a client certificate that this connection did not present');
    }
    const scopes = c.scope.split(' ').filter(isAgentScope);
    if (!scopes.includes(scope)) {
      throw new AegisError('FORBIDDEN', `this access token lacks the ${scope} scope`, { details: { required_scope: scope, granted: scopes } });
    }
    await this.consume(c.jti, c.nonce, c.exp);
    return { machine_id: c.sub, scopes, jti: c.jti };
  }

  /** Records a used jti and nonce; a second use of either is a replay. */
  private async consume(jti: string, nonce: string, exp: number): Promise<void> {
    const expires_at = iso(new Date((exp + SKEW_SECONDS) * 1000));
    const keys = [`agent-jti:${jti}`, `agent-nonce:${nonce}`];
    try {
      await this.db
        .insertInto('used_proofs')
        .values(keys.map((k) => ({ jti: k, audience: REPLAY_AUDIENCE, expires_at })))
        .execute();
    } catch (cause) {
      const seen = await this.db.selectFrom('used_proofs').select('jti').where('jti', 'in', keys).executeTakeFirst();
      if (seen) throw new AegisError('PROOF_REPLAYED', 'access token refused: already used (tokens are single-use; get a new one)', { cause });
      throw cause;
    }
  }
}
