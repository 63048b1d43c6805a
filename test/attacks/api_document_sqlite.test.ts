import t from 'tap';
import { apiDocumentSuite } from './api_document_suite.js';

// undefined: the harness gives each server its own SQLite file.
apiDocumentSuite(t, async () => undefined);
