import t from 'tap';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../harness/postgres.js';
import { missingPython, pythonClientSuite } from './python_client_suite.js';

if (requireCapability(t, missingPython()) && requireCapability(t, missingPostgres())) {
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  pythonClientSuite(t, async () => pg!.newDatabase());
}
