import t from 'tap';
import { mtlsSuite } from './mtls_suite.js';
import { requireCapability } from '../../test/harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../../test/harness/postgres.js';

if (requireCapability(t, missingPostgres())) {
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  mtlsSuite(t, async () => pg!.newDatabase());
}
