import t from 'tap';
import { keyringHsmSuite } from './keyring_hsm_suite.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../harness/postgres.js';
import { missingSoftHsm } from '../harness/softhsm.js';

if (requireCapability(t, missingSoftHsm()) && requireCapability(t, missingPostgres())) {
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  keyringHsmSuite(t, async () => pg!.newDatabase());
}
