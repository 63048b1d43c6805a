import t from 'tap';
import { licenseCompatSuite } from './license_compat_suite.js';

// undefined: the harness gives each server its own SQLite file.
licenseCompatSuite(t, async () => undefined);
