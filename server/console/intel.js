// Findings (advisories matching the packages machines reported, exposed when a listening
// socket runs the package) and one machine's packages: GET /api/v1/findings and
// GET /api/v1/machines/{id}/packages, scope intel:read.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api, all, usePoll } from './api.js';
import { ago, short, Badge, ErrorNote, PageHead, Table } from './ui.js';

const SEVERITIES = ['critical', 'high', 'medium', 'low'];
const SEVERITY_KIND = { critical: 'bad', high: 'bad', medium: 'warn', low: 'info' };
const PAGE = 100;

/** Every machine the key sees (through its licenses), for names and the machine choices. */
async function machinesSeen() {
  const licenses = await all('/api/v1/licenses');
  const lists = await Promise.all(licenses.map((l) => api('GET', `/api/v1/licenses/${l.id}/machines`).then((r) => r.items)));
  return lists.flat();
}

const socketText = (s) => `${s.proto} ${s.address}:${s.port}${s.exe ? ` (${s.exe})` : ''}`;

export function Findings() {
  const [filter, setFilter] = useState({ severity: '', package: '', advisory: '', machine: '' });
  const [offset, setOffset] = useState(0);
  const [packagesOf, setPackagesOf] = useState('');
  const poll = usePoll(async () => {
    const q = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    const [findings, machines] = await Promise.all([api('GET', `/api/v1/findings?${q}`), machinesSeen()]);
    return { findings, machines };
  }, [filter.severity, filter.package, filter.advisory, filter.machine, offset]);
  const names = new Map((poll.data?.machines || []).map((m) => [m.id, m.hostname]));
  const machineLabel = (id) => html`${names.get(id) || '—'} <code title=${id}>${short(id)}</code>`;
  function apply(e) {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setOffset(0);
    setFilter({ severity: String(f.get('severity') || ''), package: String(f.get('package') || '').trim(), advisory: String(f.get('advisory') || '').trim(), machine: String(f.get('machine') || '') });
  }
  const total = poll.data?.findings.total ?? 0;
  const machines = poll.data?.machines || [];
  return html`<${PageHead} title="Findings" poll=${poll} />
    <${ErrorNote} error=${poll.error} />
    <section class="card" aria-labelledby="findings-filters">
      <h2 id="findings-filters">Filters</h2>
      <form class="inline-form" onSubmit=${apply}>
        <label>Severity (at least)
          <select name="severity" aria-label="Severity (at least)" value=${filter.severity}>
            <option value="">any</option>
            ${SEVERITIES.map((s) => html`<option value=${s}>${s}</option>`)}
          </select>
        </label>
        <label>Package <input name="package" placeholder="openssh" defaultValue=${filter.package} /></label>
        <label>Advisory <input name="advisory" placeholder="DEBIAN-CVE-2024-6387" defaultValue=${filter.advisory} /></label>
        <label>Machine
          <select name="machine" aria-label="Machine" value=${filter.machine}>
            <option value="">every machine</option>
            ${machines.map((m) => html`<option value=${m.id}>${m.hostname || short(m.id)}</option>`)}
          </select>
        </label>
        <button type="submit">Apply filters</button>
      </form>
    </section>
    ${poll.data &&
    html`<${Table}
        caption=${`Findings ${total === 0 ? 0 : offset + 1}–${Math.min(total, offset + PAGE)} of ${total}`}
        rowKey=${(f) => `${f.machine_id} ${f.advisory} ${f.package} ${f.architecture}`}
        rows=${poll.data.findings.items}
        empty="No findings."
        cols=${[
          { label: 'Machine', cell: (f) => machineLabel(f.machine_id) },
          { label: 'Package', cell: (f) => html`<code>${f.package}</code>${f.source !== f.package ? html` <span class="muted">(${f.source})</span>` : null}` },
          { label: 'Version', cell: (f) => html`<code>${f.version}</code>` },
          { label: 'Advisory', cell: (f) => html`<code>${f.advisory}</code>` },
          { label: 'Aliases', cell: (f) => (f.aliases.length ? f.aliases.join(', ') : '—') },
          { label: 'Severity', cell: (f) => html`<${Badge} kind=${SEVERITY_KIND[f.severity_level] || 'neutral'}>${f.severity_level || 'unknown'}<//>` },
          { label: 'Fixed in', cell: (f) => (f.fixed_version ? html`<code>${f.fixed_version}</code>` : 'no fix yet') },
          {
            label: 'Exposed',
            cell: (f) =>
              f.exposed
                ? html`<${Badge} kind="bad">yes<//> <span data-testid="sockets">${f.sockets.map(socketText).join(', ')}</span>`
                : html`<${Badge} kind="muted">no<//>`,
          },
          { label: 'First seen', cell: (f) => ago(f.first_seen_at) },
        ]}
      />
      <nav class="pager" aria-label="Findings pages">
        <button type="button" class="secondary" disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - PAGE))}>Previous</button>
        <button type="button" class="secondary" disabled=${offset + PAGE >= total} onClick=${() => setOffset(offset + PAGE)}>Next</button>
      </nav>`}
    <section class="card" aria-labelledby="packages-title">
      <h2 id="packages-title">A machine's packages</h2>
      <label>Show the packages of
        <select aria-label="Show the packages of" value=${packagesOf} onChange=${(e) => setPackagesOf(e.currentTarget.value)}>
          <option value="">choose a machine</option>
          ${machines.map((m) => html`<option value=${m.id}>${m.hostname || short(m.id)}</option>`)}
        </select>
      </label>
      ${packagesOf && html`<${MachinePackages} id=${packagesOf} key=${packagesOf} />`}
    </section>`;
}

function MachinePackages({ id }) {
  const poll = usePoll(() => api('GET', `/api/v1/machines/${id}/packages`), [id]);
  const d = poll.data;
  return html`<${ErrorNote} error=${poll.error} />
    ${d &&
    html`<p data-testid="inventory">Release <code>${d.release || '—'}</code>, inventory #${d.seq ?? '—'}${d.updated_at ? `, reported ${ago(d.updated_at)}` : ''}.</p>
      <${Table}
        caption=${`Listening sockets (${d.sockets.length})`}
        rowKey=${(s) => `${s.proto} ${s.address} ${s.port} ${s.pid}`}
        rows=${d.sockets}
        empty="No listening sockets reported."
        cols=${[
          { label: 'Socket', cell: (s) => `${s.proto} ${s.address}:${s.port}` },
          { label: 'Executable', cell: (s) => (s.exe ? html`<code>${s.exe}</code>` : '—') },
          { label: 'Package', cell: (s) => s.package || '—' },
        ]}
      />
      <${Table}
        caption=${`Packages (${d.packages.length})`}
        rowKey=${(p) => `${p.package} ${p.architecture}`}
        rows=${d.packages}
        empty="No inventory reported yet."
        cols=${[
          { label: 'Package', cell: (p) => html`<code>${p.package}</code>` },
          { label: 'Version', cell: (p) => html`<code>${p.version}</code>` },
          { label: 'Architecture', cell: (p) => p.architecture },
          { label: 'Source', cell: (p) => (p.source === p.package && p.source_version === p.version ? '—' : html`<code>${p.source} ${p.source_version}</code>`) },
        ]}
      />`}`;
}
