import t from 'tap';
import { tenancySuite } from './tenancy_suite.js';

// undefined: the harness gives each server its own SQLite file.
tenancySuite(t, async () => undefined);
