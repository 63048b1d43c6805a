import t from 'tap';
import { offlineActivationSuite } from './offline_activation_suite.js';

// undefined: the suite uses its own SQLite file.
offlineActivationSuite(t, async () => undefined);
