// The console's one way to the server: the /api/v1 routes with the session cookie (sent by
// the browser, never readable here: HttpOnly), and the session's CSRF token on every write.
import { useEffect, useRef, useState, useCallback } from 'preact/hooks';

let csrfToken = null;
let onSignedOut = () => {};

export function setSession(token, signedOut) {
  csrfToken = token;
  if (signedOut) onSignedOut = signedOut;
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['x-csrf-token'] = csrfToken;
  const res = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = data && data.error ? data.error : { code: 'HTTP_' + res.status, message: res.statusText, details: null };
    // Only the session's own refusal ends it: a 401 that judges the request's content
    // (PROOF_INVALID, PROOF_REPLAYED of an offline file) leaves the operator signed in.
    if (res.status === 401 && e.code === 'UNAUTHORIZED' && path !== '/console/api/session') onSignedOut();
    throw new ApiError(res.status, e.code, e.message, e.details);
  }
  return data;
}

/** How often pages re-read what they show (live updates without reload). */
export const POLL_MS = 4000;

/**
 * Loads `load()` now and every POLL_MS while the tab is visible; `reload()` re-reads at
 * once (after an action). Answers { data, error, loading, updatedAt, reload }.
 */
export function usePoll(load, deps = []) {
  const [state, setState] = useState({ data: null, error: null, loading: true, updatedAt: null });
  const loadRef = useRef(load);
  loadRef.current = load;
  const seq = useRef(0);
  const reload = useCallback(async () => {
    const mine = ++seq.current;
    try {
      const data = await loadRef.current();
      if (mine === seq.current) setState({ data, error: null, loading: false, updatedAt: new Date() });
    } catch (error) {
      if (mine === seq.current) setState((s) => ({ ...s, error, loading: false }));
    }
  }, []);
  useEffect(() => {
    setState({ data: null, error: null, loading: true, updatedAt: null });
    reload();
    const timer = setInterval(() => {
      if (!document.hidden) reload();
    }, POLL_MS);
    return () => {
      clearInterval(timer);
      seq.current++;
    };
  }, deps);
  return { ...state, reload };
}

/** Every page of a list route that pages by limit/offset (at most `max` items). */
export async function all(path, max = 500) {
  const items = [];
  const sep = path.includes('?') ? '&' : '?';
  for (let offset = 0; offset < max; ) {
    const page = await api('GET', `${path}${sep}limit=100&offset=${offset}`);
    items.push(...page.items);
    offset += page.items.length;
    if (page.items.length === 0 || offset >= page.total) break;
  }
  return items;
}
