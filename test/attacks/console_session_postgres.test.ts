import t from 'tap';
import { consoleSessionSuite } from './console_session_suite.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../harness/postgres.js';

if (requireCapability(t, missingPostgres())) {
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  consoleSessionSuite(t, async () => pg!.newDatabase());
}
