import t from 'tap';
import { intelFindingsSuite } from './intel_findings_suite.js';

// undefined: the suite gives its server its own SQLite file.
intelFindingsSuite(t, async () => undefined);
