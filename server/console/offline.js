// Offline (air-gapped) activation: the operator uploads the request file `aegisctl
// activate --offline` wrote on the host and downloads the signed, machine-bound license
// file for `aegisctl install-license`; a release file (`aegisctl deactivate --offline`)
// frees the seat. Both through the session (licenses:write, CSRF token on the write).
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError } from './api.js';
import { short, ErrorNote, PageHead } from './ui.js';

const MAX_FILE_BYTES = 256 * 1024;

/** The chosen file as JSON, or an error the page shows (nothing is sent). */
async function readJsonFile(input) {
  const file = input.files && input.files[0];
  if (!file) throw new ApiError(0, 'NO_FILE', 'Choose a file first.', null);
  if (file.size > MAX_FILE_BYTES) throw new ApiError(0, 'FILE_TOO_LARGE', `The file is ${file.size} bytes; a request or release file is a few kilobytes.`, null);
  try {
    return JSON.parse(await file.text());
  } catch {
    throw new ApiError(0, 'NOT_JSON', 'The file is not JSON: choose the file aegisctl wrote, unchanged.', null);
  }
}

export function Offline() {
  const [issued, setIssued] = useState(null);
  const [released, setReleased] = useState(null);
  const [actError, setActError] = useState(null);
  const [relError, setRelError] = useState(null);
  const [busy, setBusy] = useState(false);
  // The download link's object URL is released when it is replaced or the page closes.
  useEffect(() => () => issued && URL.revokeObjectURL(issued.url), [issued]);

  async function activate(e) {
    e.preventDefault();
    const form = e.currentTarget;
    setActError(null);
    setIssued(null);
    setBusy(true);
    try {
      const body = await readJsonFile(form.elements.request_file);
      const file = await api('POST', '/api/v1/machines/offline-activations', body);
      const text = JSON.stringify(file, null, 2) + '\n';
      const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
      setIssued({ file, url, name: `aegis-license-${(file.hostname || file.machine_id).replace(/[^A-Za-z0-9._-]/g, '_')}.json` });
      form.reset();
    } catch (err) {
      setActError(err);
    } finally {
      setBusy(false);
    }
  }

  async function release(e) {
    e.preventDefault();
    const form = e.currentTarget;
    setRelError(null);
    setReleased(null);
    setBusy(true);
    try {
      const body = await readJsonFile(form.elements.release_file);
      setReleased(await api('POST', '/api/v1/machines/offline-deactivations', body));
      form.reset();
    } catch (err) {
      setRelError(err);
    } finally {
      setBusy(false);
    }
  }

  return html`<${PageHead} title="Offline activation" />
    <section class="card" aria-labelledby="offline-activate">
      <h2 id="offline-activate">Activate a host with no network</h2>
      <p>On the host, <code>aegisctl activate --offline LICENSE-KEY --out request.json</code> writes a request signed by the host's key. Upload it here; the license file you download goes back to the host for <code>aegisctl install-license</code>. A request is good once, for 7 days.</p>
      <form class="inline-form" onSubmit=${activate}>
        <label>Activation request file <input name="request_file" type="file" accept=".json,application/json" required /></label>
        <button type="submit" disabled=${busy}>Issue license file</button>
      </form>
      <${ErrorNote} error=${actError} />
      ${issued &&
      html`<div class="notice" role="status" data-testid="offline-issued">
        <p>License file issued for <strong>${issued.file.hostname}</strong>, machine <code title=${issued.file.machine_id}>${short(issued.file.machine_id)}</code>, license <code title=${issued.file.license_id}>${short(issued.file.license_id)}</code>.</p>
        <a class="button" href=${issued.url} download=${issued.name}>Download ${issued.name}</a>
      </div>`}
    </section>
    <section class="card" aria-labelledby="offline-release">
      <h2 id="offline-release">Free a seat with a release file</h2>
      <p>On the host, <code>aegisctl deactivate --offline --out release.json</code> drops the license and writes a release signed by the same key. Upload it to free the seat.</p>
      <form class="inline-form" onSubmit=${release}>
        <label>Release file <input name="release_file" type="file" accept=".json,application/json" required /></label>
        <button type="submit" disabled=${busy}>Free the seat</button>
      </form>
      <${ErrorNote} error=${relError} />
      ${released &&
      html`<p class="notice" role="status" data-testid="offline-released">Seat freed: ${released.hostname || 'machine'} <code title=${released.id}>${short(released.id)}</code> is ${released.status}.</p>`}
    </section>`;
}
