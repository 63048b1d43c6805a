import t from 'tap';
import { heartbeatsSuite } from './heartbeats_suite.js';

// undefined: the harness gives each server its own SQLite file.
heartbeatsSuite(t, async () => undefined);
