import t from 'tap';
import { decisionsSuite } from './decisions_suite.js';

// undefined: each server gets its own SQLite file.
decisionsSuite(t, async () => undefined);
