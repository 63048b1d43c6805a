import t from 'tap';
import { flowLogSuite } from './flow_log_suite.js';

// undefined: the harness gives each server its own SQLite file.
flowLogSuite(t, async () => undefined);
