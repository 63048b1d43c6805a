/**
 * Test helper for restart continuity: a separate agent-like process that opens the
 * datapath, binds a service, applies a policy and exits without closing anything, the way
 * an agent that crashes or restarts would. Prints one JSON line with what it did.
 *
 *   node restart_child.js '{"pinRoot":"...","serviceId":1,"cgroup":"...","policy":{...},"generation":1}'
 */
import { open } from './index.js';
import type { PolicyRules } from './index.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as {
  pinRoot: string;
  serviceId: number;
  cgroup: string;
  policy: PolicyRules;
  generation: number;
};

const dp = await open({ pinRoot: spec.pinRoot });
const bound = await dp.bindService(spec.serviceId, spec.cgroup);
const applied = await dp.apply(spec.serviceId, spec.policy, {
  mode: 'enforce',
  expiresAt: Date.now() + 3_600_000,
  generation: spec.generation,
});
process.stdout.write(JSON.stringify({ pid: process.pid, cgroupId: bound.cgroupId.toString(), rules: applied.rules }) + '\n');
// No close(): the process just ends, as a crashed or restarted agent would.
process.exit(0);
