import t from 'tap';
import { fleetLicenseSuite } from './fleet_license_suite.js';
import { requireCapability, missingCommand } from '../harness/capabilities.js';

// undefined: the suite gives its server its own SQLite file.
if (requireCapability(t, missingCommand('nats-server'))) fleetLicenseSuite(t, async () => undefined);
