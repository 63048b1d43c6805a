import t from 'tap';
import { keyringSuite } from './keyring_suite.js';
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
  keyringSuite(t, async () => pg!.newDatabase());
}
