import t from 'tap';
import { hwidSquattingSuite } from './hwid_squatting_suite.js';

// undefined: the harness gives each server its own SQLite file.
hwidSquattingSuite(t, async () => undefined);
