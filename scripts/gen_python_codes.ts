/**
 * Writes clients/python/src/aegis_license/codes.json from protocol/src: the validation
 * codes `/api/v1/licenses/validate` answers, the code of a refused request, the module
 * license token's audience, and the patterns `/validate` checks `module_name` and
 * `odoo_version` against. The Python client reads only this file, so its codes and its
 * input checks are the server's, never a second hand-kept list. The output is committed;
 * test/clients/python_codes.test.ts fails while it is stale.
 *   node dist/scripts/gen_python_codes.js           rewrite the file
 *   node dist/scripts/gen_python_codes.js --check   exit 1 if it is not what this would write
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AUD_MODULE_LICENSE, HOST_VERSION_PATTERN, MODULE_NAME_PATTERN, VALIDATION_CODES, type ErrorCode } from '../protocol/src/index.js';

/** The generated file, relative to the repository root. */
export const PYTHON_CODES_PATH = 'clients/python/src/aegis_license/codes.json';

/** A request `/validate` refuses before looking at the token (HTTP 400). */
const REQUEST_REFUSED: ErrorCode = 'VALIDATION_FAILED';

/** The file's exact text. */
export function renderPythonCodes(): string {
  const doc = {
    _generated: 'by scripts/gen_python_codes.ts from protocol/src; do not edit',
    validation_codes: [...VALIDATION_CODES],
    request_refused_code: REQUEST_REFUSED,
    module_license_audience: AUD_MODULE_LICENSE,
    module_name_pattern: MODULE_NAME_PATTERN.source,
    host_version_pattern: HOST_VERSION_PATTERN.source,
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

function main(): void {
  const out = fileURLToPath(new URL(`../../${PYTHON_CODES_PATH}`, import.meta.url));
  const text = renderPythonCodes();
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(out, 'utf8');
    } catch {
      /* a missing file is stale */
    }
    if (current !== text) {
      process.stderr.write(`${PYTHON_CODES_PATH} is stale: run node dist/scripts/gen_python_codes.js\n`);
      process.exit(1);
    }
    return;
  }
  writeFileSync(out, text);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
