import t from 'tap';
import { agentTrustSuite } from './agent_trust_suite.js';

// undefined: the harness gives each server its own SQLite file.
agentTrustSuite(t, async () => undefined);
