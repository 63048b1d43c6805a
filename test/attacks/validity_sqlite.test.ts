import t from 'tap';
import { validitySuite } from './validity_suite.js';

// undefined: the harness gives each server its own SQLite file.
validitySuite(t, async () => undefined);
