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
    if (res.status === 401 && e.code === 'UNAUTHORIZED' && !(method === 'POST' && path === '/console/api/session')) onSignedOut();
    throw new ApiError(res.status, e.code, e.message, e.details);
  }
  return data;
}

/**
 * Live updates: one EventSource on /console/api/events per tab. The server names what
 * changed (topics), never the data; a page subscribed to a topic re-reads its routes.
 * While the stream is up pages still re-read every SLOW_POLL_MS (a missed event heals);
 * while it is down (refused, server gone) every POLL_MS, and the stream is retried.
 */
export const POLL_MS = 4000;
export const SLOW_POLL_MS = 30000;

const live = { source: null, connected: false, subs: new Set(), stateSubs: new Set(), retry: null, wanted: false };

function setConnected(v) {
  if (live.connected === v) return;
  live.connected = v;
  for (const fn of live.stateSubs) fn(v);
}

/** Opens the stream (after sign-in); stopLive() closes it (sign-out). */
export function startLive() {
  live.wanted = true;
  if (live.source || typeof EventSource === 'undefined') return;
  const es = new EventSource('/console/api/events');
  live.source = es;
  es.addEventListener('ready', () => setConnected(true));
  es.addEventListener('change', (ev) => {
    let topics = [];
    try {
      topics = JSON.parse(ev.data).topics || [];
    } catch {
      return;
    }
    for (const sub of live.subs) if (sub.topics.some((t) => topics.includes(t))) sub.fn(topics);
  });
  es.addEventListener('end', () => {
    // The session ended on the server: ask it why (a 401 signs the page out).
    closeSource();
    if (!live.wanted) return;
    api('GET', '/console/api/session').then(() => scheduleRetry(), () => {});
  });
  es.onerror = () => {
    // EventSource reconnects by itself after a dropped stream; a refusal (401, 429) closes it.
    setConnected(false);
    if (es.readyState === 2) {
      closeSource();
      scheduleRetry();
    }
  };
}

function closeSource() {
  if (live.source) live.source.close();
  live.source = null;
  setConnected(false);
}

function scheduleRetry() {
  if (!live.wanted || live.retry) return;
  live.retry = setTimeout(() => {
    live.retry = null;
    if (live.wanted) startLive();
  }, 10000);
}

export function stopLive() {
  live.wanted = false;
  if (live.retry) clearTimeout(live.retry);
  live.retry = null;
  closeSource();
}

/** Whether the stream is up (for the page's "Live" indicator). */
export function useLiveState() {
  const [on, setOn] = useState(live.connected);
  useEffect(() => {
    live.stateSubs.add(setOn);
    setOn(live.connected);
    return () => live.stateSubs.delete(setOn);
  }, []);
  return on;
}

/**
 * Loads `load()` now, again whenever the server says one of `topics` changed, and every
 * SLOW_POLL_MS (POLL_MS while the stream is down) while the tab is visible; `reload()`
 * re-reads at once (after an action). Answers { data, error, loading, updatedAt, reload, live }.
 */
export function usePoll(load, deps = [], topics = []) {
  const [state, setState] = useState({ data: null, error: null, loading: true, updatedAt: null });
  const connected = useLiveState();
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
    const sub = { topics, fn: () => reload() };
    live.subs.add(sub);
    return () => {
      live.subs.delete(sub);
      seq.current++;
    };
  }, deps);
  useEffect(() => {
    const timer = setInterval(() => {
      if (!document.hidden) reload();
    }, connected ? SLOW_POLL_MS : POLL_MS);
    return () => clearInterval(timer);
  }, [connected]);
  return { ...state, reload, live: connected };
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
