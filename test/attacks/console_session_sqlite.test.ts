import t from 'tap';
import { consoleSessionSuite } from './console_session_suite.js';

// undefined: the suite gives each server its own SQLite file.
consoleSessionSuite(t, async () => undefined);
