/**
 * bench/cluster, throughput: POST /api/v1/licenses/validate and POST /api/v1/activations
 * against ONE aegis-server replica process, then TWO replica processes on the same
 * PostgreSQL (started by the test harness on a free port), driven by concurrent HTTP
 * clients in this process spread round-robin over the replicas. Next to them, in the
 * same run, the raw Ed25519 verify rate of one core (a validation checks one signature).
 *
 * The figure two/one is bounded by the machine: replicas, PostgreSQL and this load
 * generator share its cores, so the CPU count and how busy the machine was are printed
 * with every figure.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { Agent } from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AUD_ACTIVATION_PROOF, computeFingerprint, publicJwkOf, signHostProof } from '../../protocol/src/index.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { startPostgres } from '../../test/harness/postgres.js';
import { startReplica, type Replica } from '../../test/harness/replica.js';
import { ed25519VerifyRate, line, load, loadLine, opt, post, ratio, type LoadResult } from './common.js';

// Rate limits are lifted the way an operator would: AEGIS_RATE_LIMITS=off on every replica.
const LIFT = { env: { AEGIS_RATE_LIMITS: 'off' } as Record<string, string>, limits: '' };
const LICENSES = 8;

/** Busy and total jiffies of all cores (/proc/stat), to say how loaded the machine was. */
function cpuTimes(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** CPU seconds (user + system) process `pid` has used, from /proc/<pid>/stat (clock ticks of 1/100 s). */
function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

interface CpuShare {
  /** How busy the machine's cores were (0..1), whoever used them. */
  busy: number;
  /** CPU seconds the replica processes used. */
  replicaCpu: number;
  /** CPU seconds this load generator used. */
  generatorCpu: number;
  /** The 1-minute load average at the end (other work on the machine shows here). */
  loadavg: number;
}

/** Runs `fn` and says who used the CPU meanwhile. */
async function withCpu<T>(pids: number[], fn: () => Promise<T>): Promise<{ out: T; cpu: CpuShare }> {
  const a = cpuTimes();
  const ra = pids.reduce((n, p) => n + procCpuSeconds(p), 0);
  const ga = process.cpuUsage();
  const out = await fn();
  const g = process.cpuUsage(ga);
  const rb = pids.reduce((n, p) => n + procCpuSeconds(p), 0);
  const b = cpuTimes();
  return { out, cpu: { busy: (b.busy - a.busy) / Math.max(1, b.total - a.total), replicaCpu: rb - ra, generatorCpu: (g.user + g.system) / 1e6, loadavg: loadavg()[0] ?? 0 } };
}

interface Host {
  license_key: string;
  hardware_id: string;
  host_public_key: unknown;
  hostname: string;
  agent_version: string;
  proof: string;
}

function mkHost(licenseKey: string, i: number): Host {
  const { privateKey } = generateKeyPairSync('ed25519');
  const hwid = computeFingerprint({ machine_id: `bench-cluster-${i}-${Math.random()}` }).hardware_id;
  return {
    license_key: licenseKey,
    hardware_id: hwid,
    host_public_key: publicJwkOf(privateKey),
    hostname: `bench-${i}`,
    agent_version: '1.0.0',
    proof: signHostProof(privateKey, { aud: AUD_ACTIVATION_PROOF, hwid }),
  };
}

export async function throughputPhase(): Promise<void> {
  const SECONDS = opt('seconds', 5);
  const CONCURRENCY = opt('concurrency', 32);
  const pgc = await startPostgres();
  const work = mkdtempSync(join(tmpdir(), 'aegis-bench-cluster-'));
  const keysDir = join(work, 'keys');
  KeyStore.open(keysDir).generate();
  const dbUrl = await pgc.newDatabase();
  const env = { DATABASE_URL: dbUrl, AEGIS_KEYS_DIR: keysDir, LOG_LEVEL: 'error', ...LIFT.env };
  const replicas: Replica[] = [];
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  try {
    replicas.push(await startReplica(env, LIFT.limits)); // the first migrates the fresh database
    const [r1] = replicas as [Replica];
    const cust = JSON.parse((await post(agent, r1.url, '/api/v1/customers', { name: 'Bench cluster' }, r1.adminKey)).body) as { id: string };
    const keys: string[] = [];
    for (let i = 0; i < LICENSES; i++) {
      const l = await post(agent, r1.url, '/api/v1/licenses', { customer_id: cust.id, tier: 'server', license_type: 'perpetual', max_machines: 100_000 }, r1.adminKey);
      if (l.status !== 201) throw new Error(`license: ${l.status} ${l.body}`);
      keys.push((JSON.parse(l.body) as { license_key: string }).license_key);
    }
    let hostNo = 0;
    const tokens: string[] = [];
    for (const k of keys) {
      const a = await post(agent, r1.url, '/api/v1/activations', mkHost(k, hostNo++));
      if (a.status !== 201) throw new Error(`activation: ${a.status} ${a.body}`);
      tokens.push((JSON.parse(a.body) as { license_token: string }).license_token);
    }

    const verifyRate = ed25519VerifyRate(2);
    const run = async (n: number): Promise<{ validate: LoadResult; vCpu: CpuShare; activate: LoadResult; aCpu: CpuShare }> => {
      const urls = replicas.slice(0, n).map((r) => r.url);
      const pids = replicas.slice(0, n).map((r) => r.process.pid!);
      const validateOnce = (w: number) => post(agent, urls[w % urls.length]!, '/api/v1/licenses/validate', { token: tokens[w % tokens.length] });
      await load(CONCURRENCY, 1, validateOnce, [200]); // warm-up
      const v = await withCpu(pids, () => load(CONCURRENCY, SECONDS, validateOnce, [200]));
      // Hosts and proofs made before the clock starts (host key generation is the agent's
      // cost, not the server's); every activation is a new machine, a real insert, spread
      // over LICENSES licenses so one license's seat lock does not serialise them all.
      const budget = Math.min(Math.ceil(v.out.rps * SECONDS * 0.5) + 500, 30_000);
      const hosts = Array.from({ length: budget }, (_, i) => mkHost(keys[i % keys.length]!, hostNo++));
      let i = 0;
      const a = await withCpu(pids, () => load(CONCURRENCY, SECONDS, (w) => (i < hosts.length ? post(agent, urls[w % urls.length]!, '/api/v1/activations', hosts[i++]) : null), [201]));
      if (i >= hosts.length) process.stdout.write(`  note: the ${hosts.length} prepared activations ran out before ${SECONDS} s\n`);
      return { validate: v.out, vCpu: v.cpu, activate: a.out, aCpu: a.cpu };
    };
    const one = await run(1);
    replicas.push(await startReplica(env, LIFT.limits));
    const two = await run(2);

    const cpu = (c: CpuShare) => `cores ${(c.busy * 100).toFixed(0)}% busy, replicas ${c.replicaCpu.toFixed(1)} CPU-s, generator ${c.generatorCpu.toFixed(1)} CPU-s, load ${c.loadavg.toFixed(1)}`;
    const perCpu = (r: LoadResult, c: CpuShare) => (r.count / Math.max(0.001, c.replicaCpu));
    const pc = (r: LoadResult, c: CpuShare) => `${perCpu(r, c).toFixed(0).padStart(7)} req per replica CPU-second`;
    const out = [
      `bench/cluster throughput: ${SECONDS} s per figure, ${CONCURRENCY} concurrent HTTP clients (keep-alive) spread over the replicas, one PostgreSQL, ${LICENSES} licenses, node ${process.version}`,
      `  This machine has ${cpus().length} CPU cores, shared by the replicas, PostgreSQL and this load generator: the two/one ratio is bounded by CPU, not by the server's design.`,
      `  When the cores are busy with other work (load average above ${cpus().length}), req/s falls with it; req per replica CPU-second is the figure that stays comparable.`,
      `  Rate limits: off (AEGIS_RATE_LIMITS=off on every replica).`,
      line('baseline', 'raw Ed25519 verify (one core)', `${verifyRate.toFixed(0).padStart(7)} op/s   load ${(loadavg()[0] ?? 0).toFixed(1)}`),
      line('measured', 'POST /api/v1/licenses/validate, 1 replica', loadLine(one.validate)),
      line('note', '', cpu(one.vCpu)),
      line('measured', 'POST /api/v1/licenses/validate, 2 replicas', loadLine(two.validate)),
      line('note', '', cpu(two.vCpu)),
      line('ratio', 'validate 2 replicas / 1 replica (req/s)', ratio(two.validate.rps, one.validate.rps)),
      line('ratio', 'validate 1 replica / raw verify', ratio(one.validate.rps, verifyRate)),
      line('ratio', 'validate 2 replicas / raw verify', ratio(two.validate.rps, verifyRate)),
      line('measured', 'validate, 1 replica, per CPU', pc(one.validate, one.vCpu)),
      line('measured', 'validate, 2 replicas, per CPU', pc(two.validate, two.vCpu)),
      line('ratio', 'validate per replica CPU-second, 2 / 1', ratio(perCpu(two.validate, two.vCpu), perCpu(one.validate, one.vCpu))),
      line('measured', 'POST /api/v1/activations, 1 replica', loadLine(one.activate)),
      line('note', '', cpu(one.aCpu)),
      line('measured', 'POST /api/v1/activations, 2 replicas', loadLine(two.activate)),
      line('note', '', cpu(two.aCpu)),
      line('ratio', 'activation 2 replicas / 1 replica (req/s)', ratio(two.activate.rps, one.activate.rps)),
      line('ratio', 'activation 1 replica / raw verify', ratio(one.activate.rps, verifyRate)),
      line('ratio', 'activation 2 replicas / raw verify', ratio(two.activate.rps, verifyRate)),
      line('measured', 'activation, 1 replica, per CPU', pc(one.activate, one.aCpu)),
      line('measured', 'activation, 2 replicas, per CPU', pc(two.activate, two.aCpu)),
      line('ratio', 'activation per replica CPU-second, 2 / 1', ratio(perCpu(two.activate, two.aCpu), perCpu(one.activate, one.aCpu))),
    ];
    for (const [name, r] of [['validate 1', one.validate], ['validate 2', two.validate], ['activation 1', one.activate], ['activation 2', two.activate]] as const) {
      if (r.firstError) out.push(line('note', `${name}: first unexpected answer`, r.firstError));
    }
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    agent.destroy();
    for (const r of replicas) await r.stop().catch(() => undefined);
    await pgc.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
