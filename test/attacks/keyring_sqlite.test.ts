import t from 'tap';
import { keyringSuite } from './keyring_suite.js';

// undefined: each case gets its own SQLite file.
keyringSuite(t, async () => undefined);
