/**
 * Atomic file replacement (temp file, fsync, rename, fsync of the directory; exact mode).
 * Its one definition is the license client library's (clients/typescript/src/atomic_file.ts),
 * which keeps a licensed service's license file the same way the agent keeps its state.
 */
export { writeFileAtomic, writeFileAtomicAsync } from '../../clients/typescript/src/atomic_file.js';
