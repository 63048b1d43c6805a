import t from 'tap';
import { requireCapability } from '../harness/capabilities.js';
import { missingPython, pythonClientSuite } from './python_client_suite.js';

// undefined: the harness gives the server its own SQLite file.
if (requireCapability(t, missingPython())) pythonClientSuite(t, async () => undefined);
