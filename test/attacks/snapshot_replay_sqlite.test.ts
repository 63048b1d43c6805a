import t from 'tap';
import { snapshotReplaySuite } from './snapshot_replay_suite.js';

// undefined: the harness gives each server its own SQLite file.
snapshotReplaySuite(t, async () => undefined);
