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
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AUD_ACTIVATION_PROOF, computeFingerprint, publicJwkOf, signHostProof } from '../../protocol/src/index.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { startPostgres } from '../../test/harness/postgres.js';
import { startReplica, type Replica } from '../../test/harness/replica.js';
import { ed25519VerifyRate, line, load, loadLine, opt, post, ratio, type LoadResult } from './common.js';

const UNLIMITED = { burst: 1e12, perMinute: 1e12 };
const ALL_LIMITS = { activationPerIp: UNLIMITED, activationPerLicense: UNLIMITED, refreshPerIp: UNLIMITED, refreshPerMachine: UNLIMITED, validatePerIp: UNLIMITED, validatePerLicense: UNLIMITED };
// Rate limits lifted through the replica harness's test knob (AEGIS_TEST_LIMITS) and budgets kept in process memory (AEGIS_RATE_LIMIT_STORE); no operator setting turns them off yet.
const LIFT = { env: { AEGIS_RATE_LIMIT_STORE: 'memory' } as Record<string, string>, limits: ALL_LIMITS }; // SWITCH to { env: { AEGIS_RATE_LIMITS: 'off' }, limits: {} } once the AEGIS_RATE_LIMITS setting exists
const LICENSES = 8;

/** Busy and total jiffies of all cores (/proc/stat), to say how loaded the machine was. */
function cpuTimes(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Runs `fn` and says how busy the machine's cores were meanwhile (0..1). */
async function withCpu<T>(fn: () => Promise<T>): Promise<{ out: T; busy: number }> {
  const a = cpuTimes();
  const out = await fn();
  const b = cpuTimes();
  return { out, busy: (b.busy - a.busy) / Math.max(1, b.total - a.total) };
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
    const run = async (n: number): Promise<{ validate: LoadResult; vBusy: number; activate: LoadResult; aBusy: number }> => {
      const urls = replicas.slice(0, n).map((r) => r.url);
      const validateOnce = (w: number) => post(agent, urls[w % urls.length]!, '/api/v1/licenses/validate', { token: tokens[w % tokens.length] });
      await load(CONCURRENCY, 1, validateOnce, [200]); // warm-up
      const v = await withCpu(() => load(CONCURRENCY, SECONDS, validateOnce, [200]));
      // Hosts and proofs made before the clock starts (host key generation is the agent's
      // cost, not the server's); every activation is a new machine, a real insert, spread
      // over LICENSES licenses so one license's seat lock does not serialise them all.
      const budget = Math.min(Math.ceil(v.out.rps * SECONDS * 0.5) + 500, 30_000);
      const hosts = Array.from({ length: budget }, (_, i) => mkHost(keys[i % keys.length]!, hostNo++));
      let i = 0;
      const a = await withCpu(() => load(CONCURRENCY, SECONDS, (w) => (i < hosts.length ? post(agent, urls[w % urls.length]!, '/api/v1/activations', hosts[i++]) : null), [201]));
      if (i >= hosts.length) process.stdout.write(`  note: the ${hosts.length} prepared activations ran out before ${SECONDS} s\n`);
      return { validate: v.out, vBusy: v.busy, activate: a.out, aBusy: a.busy };
    };
    const one = await run(1);
    replicas.push(await startReplica(env, LIFT.limits));
    const two = await run(2);

    const busy = (b: number) => `machine CPU ${(b * 100).toFixed(0)}% busy`;
    const out = [
      `bench/cluster throughput: ${SECONDS} s per figure, ${CONCURRENCY} concurrent HTTP clients (keep-alive) spread over the replicas, one PostgreSQL, ${LICENSES} licenses, node ${process.version}`,
      `  This machine has ${cpus().length} CPU cores, shared by the replicas, PostgreSQL and this load generator: the two/one ratio is bounded by CPU, not by the server's design.`,
      `  Rate limits: lifted through the replica harness's AEGIS_TEST_LIMITS, budgets in memory (AEGIS_RATE_LIMIT_STORE=memory).`,
      line('baseline', 'raw Ed25519 verify (one core)', `${verifyRate.toFixed(0).padStart(7)} op/s`),
      line('measured', 'POST /api/v1/licenses/validate, 1 replica', `${loadLine(one.validate)}   ${busy(one.vBusy)}`),
      line('measured', 'POST /api/v1/licenses/validate, 2 replicas', `${loadLine(two.validate)}   ${busy(two.vBusy)}`),
      line('ratio', 'validate 2 replicas / 1 replica', ratio(two.validate.rps, one.validate.rps)),
      line('ratio', 'validate 1 replica / raw verify', ratio(one.validate.rps, verifyRate)),
      line('ratio', 'validate 2 replicas / raw verify', ratio(two.validate.rps, verifyRate)),
      line('measured', 'POST /api/v1/activations, 1 replica', `${loadLine(one.activate)}   ${busy(one.aBusy)}`),
      line('measured', 'POST /api/v1/activations, 2 replicas', `${loadLine(two.activate)}   ${busy(two.aBusy)}`),
      line('ratio', 'activation 2 replicas / 1 replica', ratio(two.activate.rps, one.activate.rps)),
      line('ratio', 'activation 1 replica / raw verify', ratio(one.activate.rps, verifyRate)),
      line('ratio', 'activation 2 replicas / raw verify', ratio(two.activate.rps, verifyRate)),
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
