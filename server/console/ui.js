// Small shared pieces: tables, status badges, relative times, errors, SVG charts.
import { html } from 'htm/preact';

export function ago(iso, now = Date.now()) {
  if (!iso) return '—';
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  return duration(s) + ' ago';
}

export function duration(s) {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export const short = (id) => (id ? String(id).slice(0, 8) : '—');

export function Badge({ kind, children }) {
  return html`<span class=${'badge badge-' + (kind || 'neutral')}>${children}</span>`;
}

const STATUS_KIND = { active: 'ok', ok: 'ok', online: 'ok', enforce: 'ok', allowed: 'ok', revoked: 'bad', deactivated: 'muted', expired: 'warn', stale: 'warn', canary: 'info', dropped: 'bad', 'would-drop': 'warn', offline: 'bad', refused: 'bad' };
export const Status = ({ value }) => html`<${Badge} kind=${STATUS_KIND[value] || 'neutral'}>${value}<//>`;

export function ErrorNote({ error }) {
  if (!error) return null;
  const hint = error.status === 403 && error.details && error.details.required_scope ? ` (this key lacks ${error.details.required_scope})` : '';
  return html`<p class="error" role="alert">${error.code}: ${error.message}${hint}</p>`;
}

export function Live({ updatedAt, live }) {
  return html`<p class=${'live' + (live ? ' live-on' : ' live-off')} aria-live="off" data-live=${live ? 'events' : 'polling'}>
    <span class="dot" aria-hidden="true"></span> ${live ? 'Live' : 'Polling'}${updatedAt ? ` · updated ${updatedAt.toLocaleTimeString()}` : ''}
  </p>`;
}

export function PageHead({ title, poll, children }) {
  return html`<header class="page-head">
    <h1 id="page-title" tabindex="-1">${title}</h1>
    <div class="page-tools">${children}${poll ? html`<${Live} updatedAt=${poll.updatedAt} live=${poll.live} />` : null}</div>
  </header>`;
}

/** A table: `cols` = [{ label, cell(row) }]; an empty list says so. */
export function Table({ caption, cols, rows, rowKey, empty = 'Nothing yet.' }) {
  return html`<div class="table-wrap">
    <table>
      <caption>${caption}</caption>
      <thead>
        <tr>${cols.map((c) => html`<th scope="col">${c.label}</th>`)}</tr>
      </thead>
      <tbody>
        ${rows.length === 0
          ? html`<tr><td colspan=${cols.length} class="empty">${empty}</td></tr>`
          : rows.map((r) => html`<tr key=${rowKey(r)}>${cols.map((c) => html`<td>${c.cell(r)}</td>`)}</tr>`)}
      </tbody>
    </table>
  </div>`;
}

/** Horizontal bars: [{ label, value, max }] (seat use per license). */
export function BarChart({ title, items, unit = '' }) {
  const rowH = 26;
  const labelW = 170;
  const w = 560;
  const h = Math.max(1, items.length) * rowH + 8;
  const barW = w - labelW - 80;
  return html`<figure class="chart">
    <svg viewBox=${`0 0 ${w} ${h}`} width="100%" role="img" aria-label=${title}>
      <title>${title}</title>
      ${items.map((it, i) => {
        const frac = it.max > 0 ? Math.min(1, it.value / it.max) : 0;
        const y = i * rowH + 4;
        const kind = frac >= 1 ? 'bar-full' : frac >= 0.8 ? 'bar-high' : 'bar';
        return html`<g>
          <text x="0" y=${y + 16} class="chart-label">${it.label}</text>
          <rect x=${labelW} y=${y + 3} width=${barW} height="16" class="bar-track" rx="3" />
          <rect x=${labelW} y=${y + 3} width=${Math.max(frac > 0 ? 2 : 0, frac * barW)} height="16" class=${kind} rx="3" />
          <text x=${labelW + barW + 8} y=${y + 16} class="chart-value">${it.value}/${it.max}${unit}</text>
        </g>`;
      })}
    </svg>
    <figcaption>${title}</figcaption>
  </figure>`;
}

/** Vertical bars over time: buckets [{ t: Date, value }] (drops per minute). */
export function TimeChart({ title, buckets }) {
  const w = 620;
  const h = 160;
  const pad = { l: 36, b: 22, t: 8, r: 8 };
  const max = Math.max(1, ...buckets.map((b) => b.value));
  const bw = (w - pad.l - pad.r) / Math.max(1, buckets.length);
  const ih = h - pad.t - pad.b;
  return html`<figure class="chart">
    <svg viewBox=${`0 0 ${w} ${h}`} width="100%" role="img" aria-label=${title}>
      <title>${title}</title>
      <line x1=${pad.l} y1=${h - pad.b} x2=${w - pad.r} y2=${h - pad.b} class="axis" />
      <text x=${pad.l - 6} y=${pad.t + 10} class="chart-value" text-anchor="end">${max}</text>
      <text x=${pad.l - 6} y=${h - pad.b} class="chart-value" text-anchor="end">0</text>
      ${buckets.map((b, i) => {
        const bh = (b.value / max) * ih;
        return html`<rect x=${pad.l + i * bw + 1} y=${h - pad.b - bh} width=${Math.max(1, bw - 2)} height=${bh} class="bar-drop"><title>${b.t.toLocaleTimeString()}: ${b.value}</title></rect>`;
      })}
      ${buckets.length > 0
        ? html`<text x=${pad.l} y=${h - 6} class="chart-value">${buckets[0].t.toLocaleTimeString()}</text>
            <text x=${w - pad.r} y=${h - 6} class="chart-value" text-anchor="end">${buckets[buckets.length - 1].t.toLocaleTimeString()}</text>`
        : null}
    </svg>
    <figcaption>${title}</figcaption>
  </figure>`;
}
