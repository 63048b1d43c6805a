import t from 'tap';
import { fleetLicenseSuite } from './fleet_license_suite.js';
import { requireCapability, missingCommand } from '../harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../harness/postgres.js';

if (requireCapability(t, missingCommand('nats-server')) && requireCapability(t, missingPostgres())) {
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  fleetLicenseSuite(t, async () => pg!.newDatabase());
}
