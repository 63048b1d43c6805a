/**
 * Admin API key authentication for routes: 401 without a known key, 403 without the scope.
 * A request with no key may carry an operator console session cookie instead: the same
 * principal as the key it signed in with (same scopes, same customer limit), and a write
 * must pass the session's CSRF and Origin checks (console/sessions.ts).
 */
import { AegisError } from '../../../protocol/src/index.js';
import type { ApiKeys, ApiPrincipal, Scope } from '../api_keys.js';
import type { Request } from './router.js';

export async function authorize(apiKeys: ApiKeys, req: Request, scope: Scope): Promise<ApiPrincipal> {
  const header = req.headers['x-api-key'];
  let key = typeof header === 'string' ? header : undefined;
  const authz = req.headers.authorization;
  if (!key && typeof authz === 'string' && /^Bearer\s+/i.test(authz)) key = authz.replace(/^Bearer\s+/i, '').trim();
  let principal: ApiPrincipal | null;
  if (!key && apiKeys.sessions?.presented(req)) {
    principal = (await apiKeys.sessions.authenticate(req)).principal;
  } else {
    if (!key) throw new AegisError('UNAUTHORIZED', 'an API key is required (X-API-Key or Authorization: Bearer)');
    principal = await apiKeys.authenticate(key);
  }
  if (!principal) throw new AegisError('UNAUTHORIZED', 'unknown or revoked API key');
  if (!principal.scopes.includes(scope)) {
    throw new AegisError('FORBIDDEN', `this API key lacks the ${scope} scope`, { details: { required_scope: scope } });
  }
  return principal;
}

export const actorOf = (p: ApiPrincipal): string => `api_key:${p.name}`;
