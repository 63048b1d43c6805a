import t from 'tap';
import { budgetsSuite } from './budgets_suite.js';

// undefined: the harness gives each server its own SQLite file.
budgetsSuite(t, async () => undefined);
