/**
 * bench/cluster: the scale-out figures, each next to a baseline measured in the same run.
 *
 *   throughput  validate and activation req/s with one and with two aegis-server replica
 *               processes on one PostgreSQL; baseline: raw Ed25519 verify/s (throughput.ts)
 *   lease       time for a replica to take the singleton lease over after the holder is
 *               killed with -9; baseline: the lease length (lease.ts)
 *   fanout      a rollout to 1,000 agents through a 3-node JetStream cluster; baseline: a
 *               bare fan-out of the same message through the same cluster (fanout.ts)
 *
 *   npm run bench:cluster [-- --phases throughput,lease,fanout]
 *     throughput: --seconds 5 --concurrency 32    lease: --lease-seconds 2 --takeovers 5
 *     fanout: --rounds 20 --agents 1000
 */
import { cpus } from 'node:os';
import { optString } from './common.js';
import { fanoutPhase } from './fanout.js';
import { leasePhase } from './lease.js';
import { throughputPhase } from './throughput.js';

const PHASES: Record<string, () => Promise<void>> = { throughput: throughputPhase, lease: leasePhase, fanout: fanoutPhase };

async function main(): Promise<void> {
  const chosen = optString('phases', Object.keys(PHASES).join(',')).split(',').map((p) => p.trim()).filter(Boolean);
  const unknown = chosen.filter((p) => !(p in PHASES));
  if (unknown.length > 0) throw new Error(`unknown phase ${unknown.join(', ')} (phases: ${Object.keys(PHASES).join(', ')})`);
  process.stdout.write(`bench/cluster: phases ${chosen.join(', ')}; ${cpus().length} CPU cores (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}\n`);
  for (const p of chosen) {
    process.stdout.write('\n');
    await PHASES[p]!();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
