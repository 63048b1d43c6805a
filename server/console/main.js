// The operator console: sign-in, navigation (hash routes, so the server serves one page)
// and the pages. Bundled by scripts/build-console.mjs into dist/console/app.js.
import { html, render } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, setSession, startLive, stopLive } from './api.js';
import { ErrorNote } from './ui.js';
import { Overview, Licenses, Customers, Machines, Agents, Segmentation, Flows, Audit } from './pages.js';
import { Findings } from './intel.js';
import { Offline } from './offline.js';
import { Alerts, Decisions } from './ops.js';

const PAGES = [
  { path: 'overview', title: 'Overview', page: Overview },
  { path: 'licenses', title: 'Licenses', page: Licenses },
  { path: 'customers', title: 'Customers', page: Customers },
  { path: 'machines', title: 'Machines', page: Machines },
  { path: 'agents', title: 'Agents', page: Agents },
  { path: 'segmentation', title: 'Segmentation', page: Segmentation },
  { path: 'flows', title: 'Flows', page: Flows },
  { path: 'findings', title: 'Findings', page: Findings },
  { path: 'alerts', title: 'Alerts', page: Alerts },
  { path: 'decisions', title: 'Decisions', page: Decisions },
  { path: 'offline', title: 'Offline activation', page: Offline },
  { path: 'audit', title: 'Audit log', page: Audit },
];

const routeOf = () => {
  const p = location.hash.replace(/^#\/?/, '');
  return PAGES.find((x) => x.path === p) || PAGES[0];
};

function SignIn({ onSignedIn, notice }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    const key = new FormData(e.currentTarget).get('api_key');
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await api('POST', '/console/api/session', { api_key: String(key).trim() }));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  return html`<main class="signin" id="main">
    <form class="card" onSubmit=${submit} aria-labelledby="signin-title">
      <h1 id="signin-title">Aegis console</h1>
      <p>Sign in with an admin API key. It is sent once; the server answers a session cookie with the key's scopes and customer limit, and the page keeps no copy of the key.</p>
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      <label for="api_key">Admin API key</label>
      <input id="api_key" name="api_key" type="password" autocomplete="off" required maxlength="256" placeholder="aegis_sk_…" />
      <button type="submit" disabled=${busy}>Sign in</button>
      <${ErrorNote} error=${error} />
    </form>
  </main>`;
}

function Shell({ session, onSignOut }) {
  const [route, setRoute] = useState(routeOf());
  const navigated = useRef(false);
  useEffect(() => {
    const on = () => {
      navigated.current = true;
      setRoute(routeOf());
    };
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  useEffect(() => {
    document.title = `${route.title} · Aegis console`;
    // After a navigation, move focus to the new page's heading, so keyboard and screen
    // reader users land there. Here, once the new page is rendered: a frame requested at the
    // hash change could run before it, and focus the old heading as it was replaced.
    if (navigated.current) document.getElementById('page-title')?.focus();
  }, [route]);
  const Page = route.page;
  const k = session.key;
  return html`<a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById('page-title')?.focus(); }}>Skip to content</a>
    <header class="top">
      <span class="brand">Aegis</span>
      <span class="who" data-testid="who">
        Key <strong>${k.name}</strong>
        ${k.customer_id ? html` · limited to customer <code>${k.customer_id.slice(0, 8)}</code>` : ' · every customer'}
      </span>
      <button type="button" class="secondary" onClick=${onSignOut}>Sign out</button>
    </header>
    <div class="layout">
      <nav aria-label="Console pages" class="side">
        <ul>
          ${PAGES.map((p) => html`<li><a href=${'#/' + p.path} aria-current=${p === route ? 'page' : undefined}>${p.title}</a></li>`)}
        </ul>
      </nav>
      <main id="main" class="content"><${Page} key=${route.path} /></main>
    </div>`;
}

function App() {
  const [session, setSess] = useState(undefined);
  const [notice, setNotice] = useState(null);
  const signedOut = (why) => {
    stopLive();
    setSession(null);
    setSess(null);
    if (why) setNotice(why);
  };
  const signedIn = (s) => {
    setSession(s.csrf_token, () => signedOut('Your session ended (expired, signed out elsewhere, or its key was revoked). Sign in again.'));
    setNotice(null);
    startLive();
    setSess(s);
  };
  useEffect(() => {
    api('GET', '/console/api/session').then(signedIn, () => signedOut(null));
  }, []);
  async function signOut() {
    // Close the live stream first: the server ends it on sign-out, and the page must not take that for an expiry.
    stopLive();
    try {
      await api('DELETE', '/console/api/session');
    } finally {
      signedOut('Signed out.');
    }
  }
  if (session === undefined) return html`<main id="main"><p class="loading">Loading…</p></main>`;
  if (session === null) return html`<${SignIn} onSignedIn=${signedIn} notice=${notice} />`;
  return html`<${Shell} session=${session} onSignOut=${signOut} />`;
}

render(html`<${App} />`, document.getElementById('app'));
