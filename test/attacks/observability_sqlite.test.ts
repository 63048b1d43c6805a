import t from 'tap';
import { requireCapability, missingCommand } from '../harness/capabilities.js';
import { observabilitySuite } from './observability_suite.js';

// undefined: the harness gives each server its own SQLite file.
if (requireCapability(t, missingCommand('promtool'))) observabilitySuite(t, async () => undefined);
