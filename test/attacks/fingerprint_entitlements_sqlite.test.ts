import t from 'tap';
import { fingerprintEntitlementsSuite } from './fingerprint_entitlements_suite.js';

// undefined: the harness gives the server its own SQLite file.
fingerprintEntitlementsSuite(t, async () => undefined);
