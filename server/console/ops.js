// Alerts, decisions, a diff between two revisions of a service, and the rollout chart.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api, usePoll } from './api.js';
import { ago, short, Badge, ErrorNote, PageHead, Table } from './ui.js';

const LEVEL_KIND = { critical: 'bad', high: 'bad', medium: 'warn', low: 'info', informational: 'neutral' };
export const Level = ({ value }) => html`<${Badge} kind=${LEVEL_KIND[value] || 'neutral'}>${value}<//>`;

const hostsOf = () => api('GET', '/api/v1/agents').then((r) => new Map(r.items.map((a) => [a.machine_id, a.host])), () => new Map());

// --- alerts ----------------------------------------------------------------------
export function Alerts() {
  const [filter, setFilter] = useState({ rule: '', machine: '', level: '', since: '' });
  const poll = usePoll(async () => {
    const q = new URLSearchParams({ limit: '500' });
    if (filter.rule) q.set('rule', filter.rule);
    if (filter.machine) q.set('machine', filter.machine);
    if (filter.since) q.set('since', new Date(filter.since).toISOString());
    const [alerts, hosts] = await Promise.all([api('GET', `/api/v1/alerts?${q}`), hostsOf()]);
    return { items: alerts.items, hosts };
  }, [filter.rule, filter.machine, filter.since], ['alerts']);
  function apply(e) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const v = (k) => String(f.get(k) || '').trim();
    setFilter({ rule: v('rule'), machine: v('machine'), level: v('level'), since: v('since') });
  }
  const items = (poll.data?.items || []).filter((a) => !filter.level || a.level === filter.level);
  const hosts = poll.data?.hosts || new Map();
  return html`<${PageHead} title="Alerts" poll=${poll} />
    <${ErrorNote} error=${poll.error} />
    <section class="card" aria-labelledby="alert-filters">
      <h2 id="alert-filters">Filters</h2>
      <form class="inline-form" onSubmit=${apply}>
        <label>Rule <input name="rule" maxlength="64" placeholder="rule id" defaultValue=${filter.rule} /></label>
        <label>Machine <input name="machine" maxlength="64" placeholder="machine id" defaultValue=${filter.machine} /></label>
        <label>Level
          <select name="level" defaultValue=${filter.level}>
            <option value="">any</option>${['critical', 'high', 'medium', 'low', 'informational'].map((l) => html`<option>${l}</option>`)}
          </select>
        </label>
        <label>Since <input name="since" type="datetime-local" defaultValue=${filter.since} /></label>
        <button type="submit">Apply alert filters</button>
      </form>
    </section>
    ${poll.data &&
    html`<${Table}
      caption=${`Alerts, newest first (${items.length})`}
      rowKey=${(a) => a.id}
      rows=${items}
      empty="No alerts."
      cols=${[
        { label: 'Raised', cell: (a) => html`<time datetime=${a.created_at} title=${a.created_at}>${ago(a.created_at)}</time>` },
        { label: 'Level', cell: (a) => html`<${Level} value=${a.level} />` },
        { label: 'Rule', cell: (a) => html`${a.rule_title} <code>${a.rule_id}</code>` },
        { label: 'Host', cell: (a) => hosts.get(a.machine_id) || html`<code title=${a.machine_id}>${short(a.machine_id)}</code>` },
        { label: 'Events', cell: (a) => `${a.evidence.counts.reduce((x, y) => x + y, 0)} (${ago(a.first_event_at)} – ${ago(a.last_event_at)})` },
        { label: 'Evidence', cell: (a) => html`<span class="muted">${a.evidence.refs.slice(0, 3).join(', ')}${a.evidence.refs.length > 3 ? ` +${a.evidence.refs.length - 3}` : ''}</span>` },
      ]}
    />`}`;
}

// --- decisions (GET /api/v1/decisions; a server without it answers 404) ------------
const DECISION_STATES = ['proposed', 'approved', 'canary', 'promoted', 'rolled_back', 'failed', 'rejected', 'notified'];
const DECISION_BADGE = { promoted: 'ok', notified: 'ok', rolled_back: 'bad', failed: 'bad', rejected: 'bad' };
// A proposed decision is approved or rejected; a running one (approved, canary, promoted) is rolled back by a reject.
const REJECTABLE = new Set(['proposed', 'approved', 'canary', 'promoted']);
export function Decisions() {
  const [filter, setFilter] = useState({ state: '', machine: '', rule: '' });
  const [error, setError] = useState(null);
  const [done, setDone] = useState(null);
  const poll = usePoll(async () => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    try {
      const [r, hosts] = await Promise.all([api('GET', `/api/v1/decisions${q.size ? '?' + q : ''}`), hostsOf()]);
      return { available: true, items: r.items || [], next: r.next_cursor || null, hosts };
    } catch (e) {
      // The route is not on this server (yet): say so instead of an error.
      if (e.status === 404 && !filter.machine) return { available: false, items: [], hosts: new Map() };
      throw e;
    }
  }, [filter.state, filter.machine, filter.rule], ['decisions', 'alerts']);
  function apply(e) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const v = (k) => String(f.get(k) || '').trim();
    setFilter({ state: v('state'), machine: v('machine'), rule: v('rule') });
  }
  async function decide(d, verdict, reason) {
    setError(null);
    setDone(null);
    try {
      // Approve takes no body fields; a reject may say why.
      await api('POST', `/api/v1/decisions/${encodeURIComponent(d.id)}/${verdict}`, verdict === 'reject' && reason ? { reason } : {});
      setDone(`Decision ${short(d.id)} ${verdict === 'approve' ? 'approved' : d.state === 'proposed' ? 'rejected' : 'rolled back'}.`);
      poll.reload();
    } catch (err) {
      setError(err);
    }
  }
  const d = poll.data;
  return html`<${PageHead} title="Decisions" poll=${poll} />
    <${ErrorNote} error=${poll.error || error} />
    ${done && html`<p class="notice" role="status">${done}</p>`}
    ${d && !d.available && html`<p class="notice" role="status" data-testid="decisions-unavailable">Decisions are not available on this server (it has no /api/v1/decisions route).</p>`}
    ${d &&
    d.available &&
    html`<section class="card" aria-labelledby="decision-filters">
        <h2 id="decision-filters">Filters</h2>
        <form class="inline-form" onSubmit=${apply}>
          <label>State
            <select name="state" defaultValue=${filter.state}>
              <option value="">any</option>${DECISION_STATES.map((s) => html`<option>${s}</option>`)}
            </select>
          </label>
          <label>Machine <input name="machine" maxlength="64" placeholder="machine id" defaultValue=${filter.machine} /></label>
          <label>Rule <input name="rule" maxlength="64" placeholder="rule id" defaultValue=${filter.rule} /></label>
          <button type="submit">Apply decision filters</button>
        </form>
      </section>
      <${Table}
        caption="Decisions"
        rowKey=${(x) => x.id}
        rows=${d.items}
        empty="No decisions."
        cols=${[
          { label: 'Created', cell: (x) => ago(x.created_at) },
          { label: 'Rule', cell: (x) => html`<code>${x.rule_id}</code>` },
          { label: 'Host', cell: (x) => d.hosts.get(x.machine_id) || short(x.machine_id) },
          { label: 'Action', cell: (x) => html`<code>${x.action?.type}</code>` },
          { label: 'Mode', cell: (x) => x.mode },
          { label: 'State', cell: (x) => html`<${Badge} kind=${DECISION_BADGE[x.state] || 'info'}>${x.state}<//>` },
          { label: 'Revisions', cell: (x) => (x.revisions || []).map((r) => `service ${r.service_id} r${r.revision}`).join(', ') || '—' },
          { label: 'Decided', cell: (x) => (x.decided_at ? `${x.decided_by || ''} ${ago(x.decided_at)}${x.reason ? ': ' + x.reason : ''}` : '—') },
          {
            label: 'Actions',
            cell: (x) =>
              !REJECTABLE.has(x.state)
                ? null
                : html`<form class="row-form" onSubmit=${(e) => e.preventDefault()}>
                    <label>Reason <input name="reason" maxlength="500" id=${'reason-' + x.id} /></label>
                    ${x.state === 'proposed' && html`<button type="button" aria-label=${`Approve decision ${short(x.id)}`} onClick=${() => decide(x, 'approve')}>Approve</button>`}
                    <button type="button" class="danger" aria-label=${`${x.state === 'proposed' ? 'Reject' : 'Roll back'} decision ${short(x.id)}`} onClick=${() => decide(x, 'reject', document.getElementById('reason-' + x.id)?.value)}>${x.state === 'proposed' ? 'Reject' : 'Roll back'}</button>
                  </form>`,
          },
        ]}
      />`}`;
}

// --- a diff between two revisions of a service --------------------------------------
const ruleKey = (r) => `${r.kind} ${r.cidr} ${r.proto}/${r.port}`;
const rulesOf = (snap) => [
  ...(snap?.edges || []).map((e) => ({ kind: 'egress', cidr: e.dst_cidr, proto: e.proto, port: e.port })),
  ...(snap?.allow_cidrs || []).map((a) => ({ kind: 'ingress', cidr: a.cidr, proto: a.proto, port: a.port })),
];
export const ruleText = (r) => `${r.kind} ${r.proto}/${r.port} ${r.kind === 'egress' ? '→' : '←'} ${r.cidr}`;

/**
 * What changed from snapshot `a` to `b`: rules added, removed, and changed (the same
 * direction and CIDR with another protocol or port: one rule removed and one added,
 * paired), and the TTL.
 */
export function diffSnapshots(a, b) {
  const ra = new Map(rulesOf(a).map((r) => [ruleKey(r), r]));
  const rb = new Map(rulesOf(b).map((r) => [ruleKey(r), r]));
  let removed = [...ra.values()].filter((r) => !rb.has(ruleKey(r)));
  let added = [...rb.values()].filter((r) => !ra.has(ruleKey(r)));
  const changed = [];
  for (const r of [...removed]) {
    const to = added.find((x) => x.kind === r.kind && x.cidr === r.cidr);
    if (to) {
      changed.push({ from: r, to });
      removed = removed.filter((x) => x !== r);
      added = added.filter((x) => x !== to);
    }
  }
  const same = [...ra.values()].filter((r) => rb.has(ruleKey(r)));
  return { added, removed, changed, same, ttl: a?.ttl_seconds !== b?.ttl_seconds ? { from: a?.ttl_seconds, to: b?.ttl_seconds } : null };
}

export function RevisionDiff({ service, revisions }) {
  const sorted = [...revisions].sort((x, y) => x.revision - y.revision);
  const [from, setFrom] = useState(sorted.length > 1 ? sorted[sorted.length - 2].revision : sorted[0]?.revision);
  const [to, setTo] = useState(sorted[sorted.length - 1]?.revision);
  if (sorted.length < 2) return null;
  const a = sorted.find((r) => r.revision === Number(from));
  const b = sorted.find((r) => r.revision === Number(to));
  const d = diffSnapshots(a?.snapshot, b?.snapshot);
  const idp = `diff-${service}`;
  const none = d.added.length + d.removed.length + d.changed.length === 0 && !d.ttl;
  return html`<div class="diff" aria-labelledby=${idp + '-title'} data-testid=${'diff-' + service}>
    <h3 id=${idp + '-title'}>Compare revisions</h3>
    <form class="inline-form" onSubmit=${(e) => e.preventDefault()}>
      <label>From revision
        <select value=${from} onChange=${(e) => setFrom(Number(e.currentTarget.value))}>${sorted.map((r) => html`<option value=${r.revision}>r${r.revision} (${r.stage})</option>`)}</select>
      </label>
      <label>To revision
        <select value=${to} onChange=${(e) => setTo(Number(e.currentTarget.value))}>${sorted.map((r) => html`<option value=${r.revision}>r${r.revision} (${r.stage})</option>`)}</select>
      </label>
    </form>
    ${none
      ? html`<p class="muted" data-diff="none">r${from} and r${to} have the same rules.</p>`
      : html`<ul class="diff-list" aria-label=${`Changes from r${from} to r${to}`}>
          ${d.added.map((r) => html`<li class="diff-add" data-diff="added"><span class="diff-sign" aria-hidden="true">+</span> <span class="sr-only">added: </span>${ruleText(r)}</li>`)}
          ${d.removed.map((r) => html`<li class="diff-del" data-diff="removed"><span class="diff-sign" aria-hidden="true">−</span> <span class="sr-only">removed: </span>${ruleText(r)}</li>`)}
          ${d.changed.map((c) => html`<li class="diff-chg" data-diff="changed"><span class="diff-sign" aria-hidden="true">~</span> <span class="sr-only">changed: </span>${ruleText(c.from)} ⇒ ${c.to.proto}/${c.to.port}</li>`)}
          ${d.ttl && html`<li class="diff-chg" data-diff="ttl"><span class="diff-sign" aria-hidden="true">~</span> TTL ${d.ttl.from}s ⇒ ${d.ttl.to}s</li>`}
        </ul>`}
    <p class="muted">${d.same.length} rule${d.same.length === 1 ? '' : 's'} unchanged.</p>
  </div>`;
}

// --- rollout progress: per service, hosts whose ack matches their current revision ----
export function RolloutChart({ services, current, hosts, id = 'rollout' }) {
  const byMachine = new Map(hosts.map((h) => [h.machine_id, h]));
  const rows = services.map((svc) => {
    const cur = current.filter((c) => c.service_id === svc.id);
    let applied = 0;
    let failed = 0;
    for (const c of cur) {
      const ack = byMachine.get(c.target)?.applied?.[String(svc.id)];
      if (ack && ack.revision === c.revision && (!ack.stage || ack.stage === c.stage)) ack.ok ? applied++ : failed++;
    }
    return { id: svc.id, total: cur.length, applied, failed, pending: cur.length - applied - failed };
  });
  const rowH = 28;
  const labelW = 110;
  const w = 560;
  const barW = w - labelW - 150;
  const h = rows.length * rowH + 8;
  const title = 'Rollout progress: hosts that acknowledged their current revision, per service';
  return html`<figure class="chart" data-testid="rollout-chart">
    <svg viewBox=${`0 0 ${w} ${h}`} width="100%" role="img" aria-labelledby=${`${id}-title ${id}-desc`}>
      <title id=${id + '-title'}>${title}</title>
      <desc id=${id + '-desc'}>${rows.map((r) => `service ${r.id}: ${r.applied} of ${r.total} applied, ${r.failed} failed, ${r.pending} pending`).join('; ')}</desc>
      ${rows.map((r, i) => {
        const y = i * rowH + 4;
        const part = (n) => (r.total > 0 ? (n / r.total) * barW : 0);
        return html`<g>
          <text x="0" y=${y + 16} class="chart-label">service ${r.id}</text>
          <rect x=${labelW} y=${y + 3} width=${barW} height="16" class="bar-track" rx="3" />
          <rect x=${labelW} y=${y + 3} width=${part(r.applied)} height="16" class="bar-ok"><title>${r.applied} applied</title></rect>
          <rect x=${labelW + part(r.applied)} y=${y + 3} width=${part(r.failed)} height="16" class="bar-full"><title>${r.failed} failed</title></rect>
          <text x=${labelW + barW + 8} y=${y + 16} class="chart-value">${r.applied}/${r.total} applied${r.failed ? `, ${r.failed} failed` : ''}</text>
        </g>`;
      })}
    </svg>
    <figcaption>${title}</figcaption>
  </figure>`;
}
