/**
 * bench/license: validate and activation requests/second against a real aegis-server
 * (SQLite, separate process), next to the raw Ed25519 verify rate of this machine
 * measured in the same run, with p50/p99 latency.
 *
 * Then validate latency on a small and a big database (1k vs 1M licenses, 10M audit
 * rows), with the ratio big/small.
 *
 *   npm run bench:license [-- --seconds 5 --concurrency 32 --quick --only validate|activate|throughput|dbsize --profile DIR]
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { Agent } from 'node:http';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { AUD_ACTIVATION_PROOF, computeFingerprint, publicJwkOf, signHostProof } from '../../protocol/src/index.js';
import { post as postThrough } from '../cluster/common.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SECONDS = opt('seconds', 5);
/** `--quick`: skip the big database (1M licenses, 10M audit rows) of the database size phase. */
const QUICK = args.includes('--quick');
/** `--only validate|activate|throughput|dbsize`: run that phase alone (throughput: validate and activate; e.g. to profile it). */
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
/** `--profile DIR`: the server process writes a V8 CPU profile there (node --cpu-prof) when it stops. */
const PROFILE_DIR = args.includes('--profile') ? args[args.indexOf('--profile') + 1] : undefined;
const CONCURRENCY = opt('concurrency', 32);

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Raw single-core Ed25519 verifications per second, for the baseline. */
function ed25519VerifyRate(seconds: number): number {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const msg = Buffer.alloc(400, 7);
  const sig = sign(null, msg, privateKey);
  let n = 0;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    for (let i = 0; i < 200; i++) verify(null, msg, publicKey, sig);
    n += 200;
  }
  return n / seconds;
}

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });

/** POSTs JSON through this bench's keep-alive pool. */
const post = (url: string, path: string, body: unknown, key?: string) => postThrough(agent, url, path, body, key);

interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  count: number;
}

/** Runs `next()` from CONCURRENCY workers for `seconds` (or until it returns null). */
async function load(seconds: number, next: () => Promise<{ status: number }> | null, okStatus: number[]): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const p = next();
        if (p === null) return;
        const r = await p;
        latencies.push(performance.now() - t0);
        if (!okStatus.includes(r.status)) errors++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return { rps: latencies.length / elapsed, p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors, count: latencies.length };
}

interface Server {
  url: string;
  adminKey: string;
  stop(): Promise<void>;
}

/** The server process (server_process.ts); `dir` keeps its database and keys between runs. */
async function startServer(dir?: string, profile?: string): Promise<Server> {
  const child = spawn(process.execPath, [...(profile ? ['--cpu-prof', '--cpu-prof-dir', profile] : []), fileURLToPath(new URL('./server_process.js', import.meta.url))], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...(dir ? { AEGIS_BENCH_DIR: dir } : {}) },
  });
  const line = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
  const { url, adminKey } = JSON.parse(line) as { url: string; adminKey: string };
  return {
    url,
    adminKey,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    },
  };
}

/** An activation request of a new host (key and proof made here: the agent's cost, not the server's). */
function mkHost(licenseKey: string, i: number) {
  const { privateKey } = generateKeyPairSync('ed25519');
  const hwid = computeFingerprint({ machine_id: `bench-${i}-${Math.random()}` }).hardware_id;
  return {
    license_key: licenseKey,
    hardware_id: hwid,
    host_public_key: publicJwkOf(privateKey),
    hostname: `bench-${i}`,
    agent_version: '1.0.0',
    proof: signHostProof(privateKey, { aud: AUD_ACTIVATION_PROOF, hwid }),
  };
}

async function newLicense(s: Server): Promise<{ id: string; license_key: string; customer_id: string }> {
  const cust = JSON.parse((await post(s.url, '/api/v1/customers', { name: 'Bench' }, s.adminKey)).body);
  return JSON.parse((await post(s.url, '/api/v1/licenses', { customer_id: cust.id, tier: 'server', license_type: 'perpetual', max_machines: 100000 }, s.adminKey)).body);
}

async function activate(s: Server, licenseKey: string): Promise<{ license_token: string; machine_id: string }> {
  const r = await post(s.url, '/api/v1/activations', mkHost(licenseKey, 0));
  if (r.status !== 201) throw new Error(`activation: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
}

const row = (name: string, r: LoadResult) =>
  `${name.padEnd(26)} ${r.rps.toFixed(0).padStart(8)} req/s   p50 ${r.p50.toFixed(2).padStart(7)} ms   p99 ${r.p99.toFixed(2).padStart(7)} ms   errors ${r.errors}/${r.count}`;

async function throughput(verifyRate: number): Promise<void> {
  const s = await startServer(undefined, PROFILE_DIR);
  try {
    const lic = await newLicense(s);
    // One activation gives a real license token to validate.
    const token = (await activate(s, lic.license_key)).license_token;
    const validatePost = () => post(s.url, '/api/v1/licenses/validate', { token });
    await load(1, validatePost, [200]); // warm-up
    const validate = await load(ONLY === 'activate' ? 0.5 : SECONDS, validatePost, [200]);

    // Activations: hosts and proofs made before the clock starts. Every one is a new
    // machine: a real insert.
    const budget = Math.ceil(validate.rps * SECONDS) + 1000;
    const hosts = Array.from({ length: ONLY === 'validate' ? 0 : Math.min(budget, 20000) }, (_, i) => mkHost(lic.license_key, i + 1));
    let i = 0;
    const activations = await load(ONLY === 'validate' ? 0 : SECONDS, () => (i < hosts.length ? post(s.url, '/api/v1/activations', hosts[i++]) : null), [201]);

    process.stdout.write(row('POST validate', validate) + '\n');
    process.stdout.write(row('POST activations', activations) + '\n');
    process.stdout.write(`ratio validate / raw verify:    ${(validate.rps / verifyRate).toFixed(3)}\n`);
    process.stdout.write(`ratio activation / raw verify:  ${(activations.rps / verifyRate).toFixed(3)}\n`);
  } finally {
    await s.stop();
  }
}

async function main(): Promise<void> {
  process.stdout.write(`aegis bench/license: ${SECONDS}s per phase, concurrency ${CONCURRENCY}, SQLite, node ${process.version}\n`);
  const verifyRate = ed25519VerifyRate(2);
  process.stdout.write(`${'raw Ed25519 verify'.padEnd(26)} ${verifyRate.toFixed(0).padStart(8)} op/s    (one core, baseline)\n`);
  try {
    if (ONLY !== 'dbsize') await throughput(verifyRate);
    if (ONLY === undefined || ONLY === 'dbsize') await databaseSize(QUICK);
  } finally {
    agent.destroy();
  }
}

/**
 * Validate latency against the size of the database: a small one (1k licenses and
 * machines, 10k audit rows) and a big one (1M licenses and machines, 10M audit rows),
 * each generated once (batched INSERT .. SELECT in one transaction) and kept under the
 * temp directory keyed by its size, so a rerun starts at once. `--quick` skips the big one.
 */
async function databaseSize(quick: boolean): Promise<void> {
  const sizes = [{ licenses: 1_000, audit: 10_000 }, ...(quick ? [] : [{ licenses: 1_000_000, audit: 10_000_000 }])];
  const results: { licenses: number; audit: number; r: LoadResult }[] = [];
  for (const size of sizes) {
    const dir = join(tmpdir(), 'aegis-bench-license-db', `${size.licenses}-licenses-${size.audit}-audit`);
    let meta: { license_key: string };
    try {
      meta = JSON.parse(readFileSync(join(dir, 'ready.json'), 'utf8'));
    } catch {
      const t0 = performance.now();
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      const s = await startServer(dir); // migrates the schema, makes the keys
      let lic;
      try {
        lic = await newLicense(s);
        await activate(s, lic.license_key); // a template machine row
      } finally {
        await s.stop();
      }
      generateRows(join(dir, 'aegis.db'), lic.id, size.licenses, size.audit);
      meta = { license_key: lic.license_key };
      writeFileSync(join(dir, 'ready.json'), JSON.stringify(meta));
      process.stdout.write(`generated ${dir} in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
    }
    const s = await startServer(dir);
    try {
      const token = (await activate(s, meta.license_key)).license_token;
      const validatePost = () => post(s.url, '/api/v1/licenses/validate', { token });
      await load(1, validatePost, [200]); // warm-up (and the page cache)
      results.push({ ...size, r: await load(SECONDS, validatePost, [200]) });
    } finally {
      await s.stop();
    }
  }
  for (const x of results) process.stdout.write(row(`validate, ${x.licenses >= 1e6 ? `${x.licenses / 1e6}M` : `${x.licenses / 1e3}k`} lic ${x.audit >= 1e6 ? `${x.audit / 1e6}M` : `${x.audit / 1e3}k`} audit`, x.r) + '\n');
  const [small, big] = results;
  if (small && big) {
    process.stdout.write(`ratio big / small database: p50 ${(big.r.p50 / small.r.p50).toFixed(2)}   p99 ${(big.r.p99 / small.r.p99).toFixed(2)}   req/s ${(big.r.rps / small.r.rps).toFixed(2)}\n`);
  } else {
    process.stdout.write('ratio big / small database: skipped (--quick)\n');
  }
}

/**
 * Copies the template license (and its machine) to `licenses` rows in all, and writes
 * `audit` audit rows spread over them: INSERT .. SELECT over a recursive counter, in one
 * transaction, so SQLite does the work without a round trip per row.
 */
function generateRows(file: string, templateId: string, licenses: number, audit: number): void {
  const db = new SqliteDatabase(file);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = OFF');
    const cols = (table: string) => (db.prepare(`select name from pragma_table_info('${table}')`).all() as { name: string }[]).map((c) => c.name);
    const counter = (n: number) => `with recursive c(x) as (select 1 union all select x + 1 from c where x < ${n})`;
    const lcols = cols('licenses');
    const lsel = lcols.map((c) => (c === 'id' ? `printf('bench-lic-%08d', x)` : c === 'key_hash' ? `printf('bench-hash-%08d', x)` : c));
    const mcols = cols('machines');
    const msel = mcols.map((c) => (c === 'id' ? `printf('bench-mac-%08d', x)` : c === 'license_id' ? `printf('bench-lic-%08d', x)` : c === 'hardware_id' ? `printf('%064x', x)` : c === 'host_key_thumbprint' ? `printf('bench-thumb-%08d', x)` : c));
    const extra = licenses - 1;
    db.transaction(() => {
      db.prepare(`insert into licenses (${lcols.join(', ')}) ${counter(extra)} select ${lsel.join(', ')} from licenses, c where licenses.id = ?`).run(templateId);
      db.prepare(`insert into machines (${mcols.join(', ')}) ${counter(extra)} select ${msel.join(', ')} from machines, c where machines.license_id = ?`).run(templateId);
      db.prepare(
        `insert into audit_logs (event_type, outcome, actor, license_id, customer_id, machine_id, client_ip, reason, event_data, created_at) ${counter(audit)} ` +
          `select case x % 4 when 0 then 'machine.activated' when 1 then 'license.validate' when 2 then 'machine.heartbeat' else 'license.created' end, ` +
          `case x % 4 when 1 then 'refused' else 'ok' end, 'bench', printf('bench-lic-%08d', x % ${Math.max(1, extra)}), null, printf('bench-mac-%08d', x % ${Math.max(1, extra)}), '10.0.0.1', null, '{}', ` +
          `strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', ${audit} - x)) from c`,
      ).run();
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
}

await main();
