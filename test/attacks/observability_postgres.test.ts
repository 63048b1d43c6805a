import t from 'tap';
import { observabilitySuite } from './observability_suite.js';
import { missingCommand, requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../harness/postgres.js';

if (requireCapability(t, missingPostgres()) && requireCapability(t, missingCommand('promtool'))) {
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  observabilitySuite(t, async () => pg!.newDatabase(), { halt: () => pg!.halt(), resume: () => pg!.resume() });
}
