import t from 'tap';
import { correlationSuite } from './correlation_suite.js';

// undefined: each server gets its own SQLite file.
correlationSuite(t, async () => undefined);
