import t from 'tap';
import { keyringHsmSuite } from './keyring_hsm_suite.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingSoftHsm } from '../harness/softhsm.js';

// undefined: each case gets its own SQLite file.
if (requireCapability(t, missingSoftHsm())) keyringHsmSuite(t, async () => undefined);
