/**
 * bench/agent: aegis-agent's resident memory when idle and its start-to-READY time with
 * cached state (licensed, server unreachable), next to a bare `node -e` process measured
 * in the same run (its time to first output, its idle RSS). Runs alternate agent and bare
 * node, so drift on a shared machine hits both; the ratios are of medians.
 *
 *   npm run bench:agent [-- --runs 5]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { agentDir, cleanupDir, startAgent } from '../../test/harness/agent.js';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 5;
const IDLE_MS = 3000;

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function bareNode(): Promise<{ startMs: number; rss: number }> {
  const t0 = performance.now();
  const p = spawn(process.execPath, ['-e', 'console.log("ready"); setInterval(() => {}, 1000)'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((r) => createInterface({ input: p.stdout! }).once('line', () => r()));
  const startMs = performance.now() - t0;
  await sleep(IDLE_MS);
  const rss = rssKiB(p.pid!);
  p.kill('SIGKILL');
  return { startMs, rss };
}

async function main(): Promise<void> {
  // A server in its own process for the one activation that fills the cache.
  const srv = spawn(process.execPath, [fileURLToPath(new URL('../license/server_process.js', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] });
  const { url, adminKey } = JSON.parse(await new Promise<string>((r) => createInterface({ input: srv.stdout! }).once('line', r))) as { url: string; adminKey: string };
  const post = async (path: string, body: unknown) =>
    (await fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': adminKey }, body: JSON.stringify(body) })).json() as Promise<any>;
  const cust = await post('/api/v1/customers', { name: 'bench' });
  const lic = await post('/api/v1/licenses', { customer_id: cust.id, tier: 'server', license_type: 'perpetual' });
  const dir = agentDir();
  try {
    const first = await startAgent({ serverUrl: url, dir, hardwareFacts: { machine_id: `bench-agent-${process.pid}` } });
    await first.waitReady();
    const act = await first.api('POST', '/v1/activate', { license_key: lic.license_key });
    if (act.status !== 200) throw new Error(`activation failed: ${JSON.stringify(act.body)}`);
    await first.stop();
    srv.kill('SIGTERM'); // cached state only from here on: the server is gone

    const agent = { start: [] as number[], rss: [] as number[] };
    const bare = { start: [] as number[], rss: [] as number[] };
    for (let i = 0; i < runs; i++) {
      const a = await startAgent({ serverUrl: url, dir, hardwareFacts: { machine_id: `bench-agent-${process.pid}` } });
      await a.waitReady();
      // From the agent's spawn (the harness's notify listener is up before it) to READY=1.
      agent.start.push(a.readyAt! - a.spawnedAt);
      const st = await a.api('GET', '/v1/status');
      if (st.body.edition !== 'licensed') throw new Error('agent did not restore its license from cache');
      await sleep(IDLE_MS);
      agent.rss.push(rssKiB(a.proc.pid!));
      await a.stop();
      const b = await bareNode();
      bare.start.push(b.startMs);
      bare.rss.push(b.rss);
    }
    const line = (name: string, start: number, rss: number) =>
      `${name.padEnd(34)} start ${start.toFixed(0).padStart(6)} ms   idle RSS ${(rss / 1024).toFixed(1).padStart(6)} MiB`;
    process.stdout.write(`aegis bench/agent: ${runs} runs, medians, node ${process.version}\n`);
    process.stdout.write(line('bare node -e (baseline)', median(bare.start), median(bare.rss)) + '\n');
    process.stdout.write(line('aegis-agent, cached state → READY', median(agent.start), median(agent.rss)) + '\n');
    process.stdout.write(`ratio start-to-READY / bare node start: ${(median(agent.start) / median(bare.start)).toFixed(2)}\n`);
    process.stdout.write(`ratio idle RSS / bare node RSS:          ${(median(agent.rss) / median(bare.rss)).toFixed(2)}\n`);
  } finally {
    srv.kill('SIGTERM');
    cleanupDir(dir);
  }
}

await main();
