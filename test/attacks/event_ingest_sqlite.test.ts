import t from 'tap';
import { eventIngestSuite } from './event_ingest_suite.js';

// undefined: the harness gives each server its own SQLite file.
eventIngestSuite(t, async () => undefined);
