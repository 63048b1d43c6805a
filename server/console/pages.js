// The console's pages. Each reads the /api/v1 routes with the session (usePoll re-reads
// them every few seconds) and acts through them: what the key may not see or do, the
// server refuses, and the page shows the refusal.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api, all, usePoll } from './api.js';
import { ago, duration, short, Status, Badge, ErrorNote, PageHead, Table, BarChart, TimeChart } from './ui.js';
import { Level, RevisionDiff, RolloutChart } from './ops.js';

/** An agent that has not reported for this long is stale; for ten times this, offline. */
const STALE_MS = 120_000;

export function agentState(a, now = Date.now()) {
  const age = now - new Date(a.last_seen_at).getTime();
  if (age > 10 * STALE_MS) return 'offline';
  if (age > STALE_MS) return 'stale';
  return 'online';
}

/** Licenses with their machines: what seats are in use. */
async function licensesWithSeats() {
  const licenses = await all('/api/v1/licenses');
  const machines = await Promise.all(licenses.map((l) => api('GET', `/api/v1/licenses/${l.id}/machines`).then((r) => r.items)));
  return licenses.map((l, i) => ({ ...l, machines: machines[i], seats: machines[i].filter((m) => m.status === 'active').length }));
}

const settle = (p) => p.then((v) => ({ ok: v }), (e) => ({ err: e }));

function Section({ title, id, children }) {
  return html`<section class="card" aria-labelledby=${id}>
    <h2 id=${id}>${title}</h2>
    ${children}
  </section>`;
}

// --- overview ------------------------------------------------------------------
export function Overview() {
  const poll = usePoll(async () => {
    const [ready, keys, stats, lic, agents, alerts] = await Promise.all([
      settle(api('GET', '/readyz').catch((e) => (e.status === 503 ? e : Promise.reject(e)))),
      settle(api('GET', '/api/v1/admin/signing-keys')),
      settle(api('GET', '/api/v1/admin/stats')),
      settle(licensesWithSeats()),
      settle(api('GET', '/api/v1/agents')),
      settle(api('GET', '/api/v1/alerts?limit=1000')),
    ]);
    return { ready, keys, stats, lic, agents, alerts };
  }, [], ['licenses', 'machines', 'agents', 'alerts', 'customers']);
  const d = poll.data;
  const now = Date.now();
  return html`<${PageHead} title="Overview" poll=${poll} />
    <${ErrorNote} error=${poll.error} />
    ${d &&
    html`<div class="grid">
      <${Section} title="Health" id="h-health">
        ${d.ready.err
          ? html`<${ErrorNote} error=${d.ready.err} />`
          : html`<p><${Status} value=${d.ready.ok.status === 'ready' ? 'ok' : 'refused'} /> ${d.ready.ok.status}</p>
              <ul class="checks">
                ${Object.entries(d.ready.ok.checks || {}).map(([name, c]) => html`<li><${Badge} kind=${c.ok ? 'ok' : 'bad'}>${c.ok ? 'ok' : 'failing'}<//> ${name}: ${c.detail}</li>`)}
              </ul>`}
      <//>
      <${Section} title="Signing keys" id="h-keys">
        ${d.keys.err
          ? html`<${ErrorNote} error=${d.keys.err} />`
          : html`<${Table}
              caption="Keys in the keyring"
              rowKey=${(k) => k.kid}
              rows=${d.keys.ok.items}
              cols=${[
                { label: 'Key id', cell: (k) => html`<code>${k.kid}</code>` },
                { label: 'State', cell: (k) => html`<${Badge} kind=${k.active ? 'ok' : k.retired ? 'muted' : 'info'}>${k.active ? 'active' : k.retired ? 'retired' : 'published'}<//>` },
                { label: 'Age', cell: (k) => duration(k.age_seconds) },
              ]}
            />`}
      <//>
      <${Section} title="Agents by state" id="h-agents">
        ${d.agents.err
          ? html`<${ErrorNote} error=${d.agents.err} />`
          : (() => {
              const counts = { online: 0, stale: 0, offline: 0, 'datapath unavailable': 0 };
              for (const a of d.agents.ok.items) {
                counts[agentState(a, now)]++;
                if (a.status && a.status.datapath && !a.status.datapath.available) counts['datapath unavailable']++;
              }
              return html`<dl class="counts">
                ${Object.entries(counts).map(([k, v]) => html`<div><dt>${k}</dt><dd data-count=${k}>${v}</dd></div>`)}
              </dl>`;
            })()}
      <//>
      <${Section} title="Alerts" id="h-alerts">
        ${d.alerts.err
          ? html`<${ErrorNote} error=${d.alerts.err} />`
          : (() => {
              const day = d.alerts.ok.items.filter((a) => now - new Date(a.created_at).getTime() < 86_400_000);
              const levels = ['critical', 'high', 'medium', 'low'];
              return html`<dl class="counts">
                  <div><dt>last 24 h</dt><dd data-count="alerts-24h">${day.length}</dd></div>
                  ${levels.map((l) => html`<div><dt><${Level} value=${l} /></dt><dd data-count=${'alerts-' + l}>${day.filter((a) => a.level === l).length}</dd></div>`)}
                </dl>
                <p><a href="#/alerts">All alerts</a></p>`;
            })()}
      <//>
      <${Section} title="Totals" id="h-stats">
        ${d.stats.err
          ? html`<${ErrorNote} error=${d.stats.err} />`
          : html`<dl class="counts">
              <div><dt>customers</dt><dd>${d.stats.ok.customers.total}</dd></div>
              <div><dt>active licenses</dt><dd>${d.stats.ok.licenses.by_status.active}</dd></div>
              <div><dt>active machines</dt><dd>${d.stats.ok.machines.active}</dd></div>
              <div><dt>refused (24 h)</dt><dd>${d.stats.ok.refused_last_24h}</dd></div>
            </dl>`}
      <//>
    </div>
    <${Section} title="Seats used per license" id="h-seats">
      ${d.lic.err
        ? html`<${ErrorNote} error=${d.lic.err} />`
        : d.lic.ok.length === 0
          ? html`<p>No licenses.</p>`
          : html`<${BarChart}
              title="Active machines against each license's seats"
              items=${d.lic.ok
                .filter((l) => l.status === 'active')
                .map((l) => ({ label: `…${l.key_suffix} (${l.tier || l.module_name})`, value: l.seats, max: l.max_machines ?? l.seats }))}
            />`}
    <//>`}`;
}

// --- licenses --------------------------------------------------------------------
export function Licenses() {
  const poll = usePoll(async () => {
    const [licenses, customers] = await Promise.all([licensesWithSeats(), all('/api/v1/customers')]);
    return { licenses, customers };
  }, [], ['licenses', 'machines', 'customers']);
  const [issued, setIssued] = useState(null);
  const [error, setError] = useState(null);
  const [revoking, setRevoking] = useState(null);
  const names = new Map((poll.data?.customers || []).map((c) => [c.id, c.name]));

  async function issue(e) {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const body = { customer_id: f.get('customer_id'), tier: f.get('tier'), license_type: f.get('license_type'), max_machines: Number(f.get('max_machines')) };
    if (body.license_type !== 'perpetual') body.duration_days = Number(f.get('duration_days'));
    setError(null);
    try {
      const lic = await api('POST', '/api/v1/licenses', body);
      setIssued(lic);
      form.reset();
      poll.reload();
    } catch (err) {
      setError(err);
    }
  }
  async function revoke(e, lic) {
    e.preventDefault();
    const reason = new FormData(e.currentTarget).get('reason') || 'revoked in the console';
    setError(null);
    try {
      await api('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason });
      setRevoking(null);
      poll.reload();
    } catch (err) {
      setError(err);
    }
  }

  return html`<${PageHead} title="Licenses" poll=${poll} />
    <${ErrorNote} error=${poll.error || error} />
    ${issued &&
    html`<div class="once" role="status" aria-labelledby="issued-title">
      <h2 id="issued-title">License issued</h2>
      <p>This key is shown <strong>once</strong>: copy it now. The server keeps only its hash.</p>
      <p><code class="license-key" data-testid="license-key">${issued.license_key}</code></p>
      <button type="button" onClick=${() => navigator.clipboard?.writeText(issued.license_key)}>Copy key</button>
      <button type="button" class="secondary" onClick=${() => setIssued(null)}>I have copied it, hide</button>
    </div>`}
    <section class="card" aria-labelledby="issue-title">
      <h2 id="issue-title">Issue a license</h2>
      <form class="inline-form" onSubmit=${issue}>
        <label>Customer
          <select name="customer_id" required>
            ${(poll.data?.customers || []).map((c) => html`<option value=${c.id}>${c.name}</option>`)}
          </select>
        </label>
        <label>Tier
          <select name="tier">${['server', 'ai_developer', 'gamer', 'basic'].map((t) => html`<option>${t}</option>`)}</select>
        </label>
        <label>Type
          <select name="license_type">${['subscription', 'perpetual', 'demo'].map((t) => html`<option>${t}</option>`)}</select>
        </label>
        <label>Seats <input name="max_machines" type="number" min="1" max="100000" defaultValue="5" required /></label>
        <label>Days <input name="duration_days" type="number" min="1" max="36500" defaultValue="365" /></label>
        <button type="submit">Issue license</button>
      </form>
    </section>
    ${poll.data &&
    html`<${Table}
      caption="Licenses"
      rowKey=${(l) => l.id}
      rows=${poll.data.licenses}
      cols=${[
        { label: 'Key', cell: (l) => html`<code>…${l.key_suffix}</code>` },
        { label: 'Customer', cell: (l) => names.get(l.customer_id) || short(l.customer_id) },
        { label: 'Tier', cell: (l) => l.tier || l.module_name },
        { label: 'Type', cell: (l) => l.license_type },
        { label: 'Status', cell: (l) => html`<${Status} value=${l.status} />` },
        { label: 'Seats', cell: (l) => `${l.seats}/${l.max_machines ?? '∞'}` },
        { label: 'Expires', cell: (l) => (l.expires_at ? new Date(l.expires_at).toLocaleDateString() : 'never') },
        {
          label: 'Actions',
          cell: (l) =>
            l.status === 'revoked'
              ? html`<span class="muted">${l.revoke_reason || ''}</span>`
              : revoking === l.id
                ? html`<form class="row-form" onSubmit=${(e) => revoke(e, l)}>
                    <label>Reason <input name="reason" required maxlength="500" defaultValue="contract ended" /></label>
                    <button type="submit" class="danger">Confirm revoke</button>
                    <button type="button" class="secondary" onClick=${() => setRevoking(null)}>Cancel</button>
                  </form>`
                : html`<button type="button" class="danger" aria-label=${`Revoke license …${l.key_suffix}`} onClick=${() => setRevoking(l.id)}>Revoke</button>`,
        },
      ]}
    />`}`;
}

// --- customers -------------------------------------------------------------------
export function Customers() {
  const poll = usePoll(() => all('/api/v1/customers'), [], ['customers']);
  const [error, setError] = useState(null);
  async function create(e) {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const body = { name: f.get('name') };
    if (f.get('email')) body.email = f.get('email');
    setError(null);
    try {
      await api('POST', '/api/v1/customers', body);
      form.reset();
      poll.reload();
    } catch (err) {
      setError(err);
    }
  }
  return html`<${PageHead} title="Customers" poll=${poll} />
    <${ErrorNote} error=${poll.error || error} />
    <section class="card" aria-labelledby="new-customer">
      <h2 id="new-customer">New customer</h2>
      <form class="inline-form" onSubmit=${create}>
        <label>Name <input name="name" required maxlength="200" /></label>
        <label>Email <input name="email" type="email" maxlength="320" /></label>
        <button type="submit">Create customer</button>
      </form>
    </section>
    ${poll.data &&
    html`<${Table}
      caption="Customers"
      rowKey=${(c) => c.id}
      rows=${poll.data}
      cols=${[
        { label: 'Name', cell: (c) => c.name },
        { label: 'External id', cell: (c) => c.external_id || '—' },
        { label: 'Email', cell: (c) => c.email || '—' },
        { label: 'Active', cell: (c) => html`<${Status} value=${c.is_active ? 'active' : 'deactivated'} />` },
        { label: 'Created', cell: (c) => ago(c.created_at) },
        { label: 'Id', cell: (c) => html`<code>${c.id}</code>` },
      ]}
    />`}`;
}

// --- machines --------------------------------------------------------------------
export function Machines() {
  const poll = usePoll(licensesWithSeats, [], ['licenses', 'machines']);
  const [error, setError] = useState(null);
  const [confirm, setConfirm] = useState(null);
  const rows = (poll.data || []).flatMap((l) => l.machines.map((m) => ({ ...m, license: l })));
  async function deactivate(m) {
    setError(null);
    try {
      await api('DELETE', `/api/v1/machines/${m.id}`);
      setConfirm(null);
      poll.reload();
    } catch (err) {
      setError(err);
    }
  }
  return html`<${PageHead} title="Machines" poll=${poll} />
    <${ErrorNote} error=${poll.error || error} />
    ${poll.data &&
    html`<${Table}
      caption="Machines of every license this key sees"
      rowKey=${(m) => m.id}
      rows=${rows}
      cols=${[
        { label: 'Host', cell: (m) => m.hostname || '—' },
        { label: 'Machine', cell: (m) => html`<code title=${m.id}>${short(m.id)}</code>` },
        { label: 'License', cell: (m) => html`<code>…${m.license.key_suffix}</code>` },
        { label: 'Agent', cell: (m) => m.agent_version || '—' },
        { label: 'Status', cell: (m) => html`<${Status} value=${m.status} />${m.clone_of ? html` <${Badge} kind="warn">clone<//>` : null}` },
        { label: 'Activated', cell: (m) => ago(m.activated_at) },
        { label: 'Last seen', cell: (m) => ago(m.last_seen_at) },
        {
          label: 'Actions',
          cell: (m) =>
            m.status !== 'active'
              ? null
              : confirm === m.id
                ? html`<button type="button" class="danger" onClick=${() => deactivate(m)}>Confirm deactivate</button>
                    <button type="button" class="secondary" onClick=${() => setConfirm(null)}>Cancel</button>`
                : html`<button type="button" class="danger" aria-label=${`Deactivate ${m.hostname}`} onClick=${() => setConfirm(m.id)}>Deactivate</button>`,
        },
      ]}
    />`}`;
}

// --- agents ----------------------------------------------------------------------
export function Agents() {
  const poll = usePoll(async () => {
    const [agents, lic] = await Promise.all([api('GET', '/api/v1/agents').then((r) => r.items), settle(licensesWithSeats())]);
    // What the server holds of each agent's machine: a host whose license was revoked (or
    // whose machine was deactivated) runs community from its next refresh, and the server
    // no longer files its reports, so its last report would say "licensed" for ever.
    const held = new Map();
    for (const l of lic.ok || []) for (const m of l.machines) held.set(m.id, { license: l.status, machine: m.status });
    return agents.map((a) => ({ ...a, held: held.get(a.machine_id) || null }));
  }, [], ['agents', 'acks', 'machines', 'licenses']);
  const now = Date.now();
  const mode = (a) => {
    if (a.held && a.held.license !== 'active') return html`<span data-mode="community"><${Badge} kind="warn">community<//> license ${a.held.license}</span>`;
    if (a.held && a.held.machine !== 'active') return html`<span data-mode="community"><${Badge} kind="warn">community<//> machine ${a.held.machine}</span>`;
    return a.status ? html`<span data-mode=${a.status.edition}>${a.status.edition}${a.status.tier ? ` · ${a.status.tier}` : ''}</span>` : '—';
  };
  return html`<${PageHead} title="Agents" poll=${poll} />
    <${ErrorNote} error=${poll.error} />
    ${poll.data &&
    html`<${Table}
      caption="Agents that have reported"
      rowKey=${(a) => a.machine_id}
      rows=${poll.data}
      empty="No agent has reported yet."
      cols=${[
        { label: 'Host', cell: (a) => a.host },
        { label: 'State', cell: (a) => html`<${Status} value=${agentState(a, now)} />` },
        { label: 'License mode', cell: mode },
        { label: 'Version', cell: (a) => a.status?.agent_version || '—' },
        {
          label: 'Datapath',
          cell: (a) => (!a.status ? '—' : a.status.datapath.available ? html`<${Badge} kind="ok">available<//>` : html`<${Badge} kind="bad">unavailable<//> ${a.status.datapath.reason || ''}`),
        },
        {
          label: 'Applied revisions',
          cell: (a) =>
            Object.values(a.applied || {}).length === 0
              ? '—'
              : html`<ul class="plain">
                  ${Object.values(a.applied).map((x) => html`<li>service ${x.service_id}: r${x.revision} <${Status} value=${x.stage} /> ${x.ok ? '' : html`<${Badge} kind="bad">failed<//> ${x.error}`}</li>`)}
                </ul>`,
        },
        { label: 'Clock', cell: (a) => (a.status?.clock?.clock_tampered ? html`<${Badge} kind="bad">tampered<//>` : 'ok') },
        { label: 'Last seen', cell: (a) => ago(a.last_seen_at, now) },
      ]}
    />`}`;
}

// --- segmentation ---------------------------------------------------------------
export function Segmentation() {
  const poll = usePoll(async () => {
    const view = await api('GET', '/api/v1/seg/maps');
    const services = [...new Set(view.current.map((c) => c.service_id))].sort((a, b) => a - b);
    const histories = await Promise.all(services.map((s) => api('GET', `/api/v1/seg/maps/${s}`).then((r) => r.revisions)));
    return { view, services: services.map((s, i) => ({ id: s, revisions: histories[i] })) };
  }, [], ['segmentation', 'acks', 'agents']);
  const [error, setError] = useState(null);
  const [done, setDone] = useState(null);
  async function act(path, body, what) {
    setError(null);
    setDone(null);
    try {
      const r = await api('POST', path, body);
      setDone(`${what}: service ${r.service_id} now at revision ${r.revision} (${r.stage})`);
      poll.reload();
    } catch (err) {
      setError(err);
    }
  }
  return html`<${PageHead} title="Segmentation" poll=${poll} />
    <${ErrorNote} error=${poll.error || error} />
    ${done && html`<p class="notice" role="status">${done}</p>`}
    ${poll.data && poll.data.services.length === 0 && html`<p>No service has a revision yet.</p>`}
    ${poll.data &&
    poll.data.services.map((svc) => {
      const current = poll.data.view.current.filter((c) => c.service_id === svc.id);
      const hosts = new Map(poll.data.view.hosts.map((h) => [h.machine_id, h]));
      const canary = current.find((c) => c.stage === 'canary');
      return html`<section class="card" aria-labelledby=${'svc-' + svc.id} data-service=${svc.id}>
        <h2 id=${'svc-' + svc.id}>Service ${svc.id}</h2>
        <div class="actions">
          ${canary &&
          html`<button type="button" onClick=${() => act('/api/v1/seg/maps/promote', { service_id: svc.id, revision: canary.revision }, 'Promoted')}>
            Promote revision ${canary.revision} to enforce
          </button>`}
          ${svc.revisions.length > 1 &&
          html`<button type="button" class="secondary" onClick=${() => act('/api/v1/seg/maps/rollback', { service_id: svc.id }, 'Rolled back')}>Roll back</button>`}
        </div>
        <${RolloutChart} id=${'rollout-' + svc.id} services=${[svc]} current=${current} hosts=${poll.data.view.hosts} />
        <${Table}
          caption=${`Stage per host of service ${svc.id}`}
          rowKey=${(c) => c.target}
          rows=${current}
          cols=${[
            { label: 'Host', cell: (c) => c.host || short(c.target) },
            { label: 'Revision', cell: (c) => `r${c.revision}` },
            { label: 'Stage', cell: (c) => html`<${Status} value=${c.stage} />` },
            {
              label: 'Ack',
              cell: (c) => {
                const ack = hosts.get(c.target)?.applied?.[String(svc.id)];
                if (!ack) return html`<${Badge} kind="warn">none<//>`;
                // The same revision promoted is acked again with its new stage: until then, behind.
                const current = ack.revision === c.revision && (!ack.stage || ack.stage === c.stage);
                return html`<${Badge} kind=${!ack.ok ? 'bad' : current ? 'ok' : 'warn'}>r${ack.revision}${ack.stage ? ' ' + ack.stage : ''} ${ack.ok ? (current ? 'applied' : 'behind') : 'failed'}<//> ${ago(ack.applied_at)}`;
              },
            },
          ]}
        />
        <${Table}
          caption=${`Revisions of service ${svc.id}`}
          rowKey=${(r) => r.revision}
          rows=${svc.revisions}
          cols=${[
            { label: 'Revision', cell: (r) => `r${r.revision}${r.restores_revision ? ` (restores r${r.restores_revision})` : ''}` },
            { label: 'Stage', cell: (r) => html`<${Status} value=${r.stage} />` },
            { label: 'Rules', cell: (r) => (r.snapshot?.edges || []).map((e) => `${e.proto}/${e.port} → ${e.dst_cidr}`).join(', ') || '—' },
            { label: 'Targets', cell: (r) => (r.targets || []).length || 'every host' },
            { label: 'By', cell: (r) => r.created_by },
            { label: 'Created', cell: (r) => ago(r.created_at) },
          ]}
        />
        <${RevisionDiff} service=${svc.id} revisions=${svc.revisions} />
      </section>`;
    })}`;
}

// --- flows -----------------------------------------------------------------------
export function Flows() {
  const [filter, setFilter] = useState({ verdict: '', direction: '' });
  const poll = usePoll(async () => {
    const q = new URLSearchParams({ limit: '500' });
    if (filter.verdict) q.set('verdict', filter.verdict);
    if (filter.direction) q.set('direction', filter.direction);
    const [flows, agents] = await Promise.all([api('GET', `/api/v1/flows?${q}`), api('GET', '/api/v1/agents').catch(() => ({ items: [] }))]);
    return { items: flows.items, hosts: new Map(agents.items.map((a) => [a.machine_id, a.host])) };
  }, [filter.verdict, filter.direction], ['flows']);
  const items = poll.data?.items || [];
  // Drops per minute over the last 30 minutes of what was received.
  const buckets = [];
  const end = Math.ceil(Date.now() / 60000) * 60000;
  for (let i = 29; i >= 0; i--) buckets.push({ t: new Date(end - (i + 1) * 60000), value: 0 });
  for (const f of items) {
    if (f.verdict === 'allowed') continue;
    const idx = 29 - Math.floor((end - 1 - new Date(f.received_at).getTime()) / 60000);
    if (idx >= 0 && idx < 30) buckets[idx].value += f.count;
  }
  const rule = (f) => (f.rule !== null && f.rule !== undefined ? html`rule <code>#${f.rule}</code>` : f.reason === 'policy' ? html`<span class="muted">no rule (default deny)</span>` : html`<span class="muted">${f.reason || 'unknown (older agent)'}</span>`);
  return html`<${PageHead} title="Flows" poll=${poll}>
      <form class="inline-form filters" onSubmit=${(e) => e.preventDefault()}>
        <label>Verdict
          <select value=${filter.verdict} onChange=${(e) => setFilter({ ...filter, verdict: e.currentTarget.value })}>
            <option value="">any</option><option>allowed</option><option>dropped</option><option>would-drop</option>
          </select>
        </label>
        <label>Direction
          <select value=${filter.direction} onChange=${(e) => setFilter({ ...filter, direction: e.currentTarget.value })}>
            <option value="">any</option><option>egress</option><option>ingress</option>
          </select>
        </label>
      </form>
    <//>
    <${ErrorNote} error=${poll.error} />
    <section class="card" aria-labelledby="drops-title">
      <h2 id="drops-title">Drops over time</h2>
      <${TimeChart} title="Dropped and would-drop flows per minute, last 30 minutes" buckets=${buckets} />
    </section>
    ${poll.data &&
    html`<${Table}
      caption="Flow verdicts, newest first, with the rule that decided them"
      rowKey=${(f) => f.id}
      rows=${items}
      empty="No flows reported."
      cols=${[
        { label: 'Received', cell: (f) => ago(f.received_at) },
        { label: 'Host', cell: (f) => poll.data.hosts.get(f.machine_id) || short(f.machine_id) },
        { label: 'Service', cell: (f) => `${f.service_id}${f.revision !== null ? ` r${f.revision}` : ''}` },
        { label: 'Direction', cell: (f) => f.direction },
        { label: 'Remote', cell: (f) => html`<code>${f.remote}</code>` },
        { label: 'Proto/port', cell: (f) => `${f.proto}/${f.port}` },
        { label: 'Verdict', cell: (f) => html`<${Status} value=${f.verdict} />` },
        { label: 'Decided by', cell: rule },
        { label: 'Count', cell: (f) => f.count },
      ]}
    />`}`;
}

// --- audit -----------------------------------------------------------------------
const AUDIT_PAGE = 50;
export function Audit() {
  const [filter, setFilter] = useState({ event_type: '', customer_id: '', since: '' });
  const [offset, setOffset] = useState(0);
  const poll = usePoll(() => {
    const q = new URLSearchParams({ limit: String(AUDIT_PAGE), offset: String(offset) });
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, k === 'since' ? new Date(v).toISOString() : v);
    return api('GET', `/api/v1/admin/audit-logs?${q}`);
  }, [filter.event_type, filter.customer_id, filter.since, offset], ['audit']);
  function apply(e) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setOffset(0);
    setFilter({ event_type: String(f.get('event_type') || '').trim(), customer_id: String(f.get('customer_id') || '').trim(), since: String(f.get('since') || '') });
  }
  const total = poll.data?.total ?? 0;
  return html`<${PageHead} title="Audit log" poll=${poll} />
    <${ErrorNote} error=${poll.error} />
    <section class="card" aria-labelledby="audit-filters">
      <h2 id="audit-filters">Filters</h2>
      <form class="inline-form" onSubmit=${apply}>
        <label>Event type <input name="event_type" placeholder="license.revoked" defaultValue=${filter.event_type} /></label>
        <label>Customer <input name="customer_id" placeholder="id or external id" defaultValue=${filter.customer_id} /></label>
        <label>Since <input name="since" type="datetime-local" defaultValue=${filter.since} /></label>
        <button type="submit">Apply filters</button>
      </form>
    </section>
    ${poll.data &&
    html`<${Table}
        caption=${`Audit entries ${total === 0 ? 0 : offset + 1}–${Math.min(total, offset + AUDIT_PAGE)} of ${total}`}
        rowKey=${(r) => r.id}
        rows=${poll.data.items}
        cols=${[
          { label: 'When', cell: (r) => html`<time datetime=${r.created_at} title=${r.created_at}>${ago(r.created_at)}</time>` },
          { label: 'Event', cell: (r) => html`<code>${r.event_type}</code>` },
          { label: 'Outcome', cell: (r) => html`<${Status} value=${r.outcome} />` },
          { label: 'Actor', cell: (r) => r.actor },
          { label: 'Subject', cell: (r) => [r.customer_id && `customer ${short(r.customer_id)}`, r.license_id && `license ${short(r.license_id)}`, r.machine_id && `machine ${short(r.machine_id)}`].filter(Boolean).join(', ') || '—' },
          { label: 'Reason', cell: (r) => r.reason || '—' },
        ]}
      />
      <nav class="pager" aria-label="Audit pages">
        <button type="button" class="secondary" disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - AUDIT_PAGE))}>Newer</button>
        <button type="button" class="secondary" disabled=${offset + AUDIT_PAGE >= total} onClick=${() => setOffset(offset + AUDIT_PAGE)}>Older</button>
      </nav>`}`;
}
