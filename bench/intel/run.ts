/**
 * bench/intel: advisory matching (match.ts) and event ingest into the correlator with rule
 * latency (ingest.ts), each next to a baseline measured in the same run. Timings are
 * printed, never asserted.
 *
 *   npm run bench:intel [-- [advisories] [hosts] [--only match|ingest] [--seconds 4]
 *                          [--ingest-hosts 50] [--batch 100] [--concurrency 16] [--cpu-prof DIR] [--no-correlator]
 *                          [--rules-interval-ms 1000 (0: passes back to back)]]
 */
import { runIngest } from './ingest.js';
import { runMatching } from './match.js';
import { option } from './stats.js';

const args = process.argv.slice(2);
const flagged = new Set<number>();
args.forEach((a, i) => {
  if (a === '--no-correlator') flagged.add(i);
  else if (a.startsWith('--')) flagged.add(i).add(i + 1);
});
const positional = args.filter((_, i) => !flagged.has(i));
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
if (only !== undefined && only !== 'match' && only !== 'ingest') throw new Error('--only is match or ingest');
const cpuProfDir = args.includes('--cpu-prof') ? args[args.indexOf('--cpu-prof') + 1] : undefined;

process.stdout.write(`aegis bench/intel, node ${process.version}\n`);
if (only !== 'ingest') process.stdout.write(runMatching(Number(positional[0] ?? 100_000), Number(positional[1] ?? 1_000)).join('\n'));
if (only !== 'match') {
  const lines = await runIngest({
    seconds: option(args, 'seconds', 4),
    hosts: option(args, 'ingest-hosts', 50),
    batch: option(args, 'batch', 100),
    concurrency: option(args, 'concurrency', 16),
    correlate: !args.includes('--no-correlator'),
    rulesIntervalMs: args.includes('--rules-interval-ms') ? Number(args[args.indexOf('--rules-interval-ms') + 1]) : 1000,
    ...(cpuProfDir ? { cpuProfDir } : {}),
  });
  process.stdout.write(lines.join('\n'));
}
