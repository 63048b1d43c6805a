import t from 'tap';
import { machineIdentitySuite } from './machine_identity_suite.js';

// undefined: the harness gives each server its own SQLite file.
machineIdentitySuite(t, async () => undefined);
