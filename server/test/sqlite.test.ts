import t from 'tap';
import { licenseAuthoritySuite } from './license_authority_suite.js';

// undefined: the harness gives each server its own SQLite file.
licenseAuthoritySuite(t, async () => undefined);
