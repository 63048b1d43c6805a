import t from 'tap';
import { licenseClientSuite } from './license_client_suite.js';

// undefined: the harness gives each server its own SQLite file.
licenseClientSuite(t, async () => undefined);
