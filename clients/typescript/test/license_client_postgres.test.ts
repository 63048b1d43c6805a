import t from 'tap';
import { licenseClientSuite } from './license_client_suite.js';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../../../test/harness/postgres.js';

if (requireCapability(t, missingPostgres())) {
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  licenseClientSuite(t, async () => pg!.newDatabase());
}
