import t from 'tap';
import { segSuite } from './seg_suite.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../../test/harness/postgres.js';
import { requireCapability } from '../../test/harness/capabilities.js';

t.test('sqlite', async (t) => segSuite(t, async () => undefined));
t.test('postgresql', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(() => pg?.stop());
  segSuite(t, async () => pg!.newDatabase());
});
