/**
 * The Python client's codes.json is what scripts/gen_python_codes.ts writes from
 * protocol/src: a validation code added to (or renamed in) the server fails this test until
 * the file is generated again, so the client can never answer a code the server does not.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PYTHON_CODES_PATH, renderPythonCodes } from '../../scripts/gen_python_codes.js';
import { VALIDATION_CODES } from '../../protocol/src/index.js';

const file = fileURLToPath(new URL(`../../../${PYTHON_CODES_PATH}`, import.meta.url));

t.test('codes.json is current', async (t) => {
  t.equal(readFileSync(file, 'utf8'), renderPythonCodes(), `${PYTHON_CODES_PATH} is stale: run node dist/scripts/gen_python_codes.js`);
  t.same(JSON.parse(readFileSync(file, 'utf8')).validation_codes, [...VALIDATION_CODES], 'every server validation code, in order');
});
