import t from 'tap';
import { webhooksSuite } from './webhooks_suite.js';

// undefined: the suite gives each server its own SQLite file.
webhooksSuite(t, async () => undefined);
