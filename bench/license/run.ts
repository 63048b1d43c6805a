/**
 * bench/license: validate and activation requests/second against a real aegis-server
 * (SQLite, separate process), next to the raw Ed25519 verify rate of this machine
 * measured in the same run, with p50/p99 latency.
 *
 *   npm run bench:license [-- --seconds 5 --concurrency 32]
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { Agent, request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { AUD_ACTIVATION_PROOF, computeFingerprint, publicJwkOf, signHostProof } from '../../protocol/src/index.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SECONDS = opt('seconds', 5);
const CONCURRENCY = opt('concurrency', 32);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
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

function post(url: string, path: string, body: unknown, key?: string): Promise<{ status: number; body: string }> {
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...(key ? { 'x-api-key': key } : {}) } },
      (res) => {
        let out = '';
        res.on('data', (c) => (out += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: out }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

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

async function main(): Promise<void> {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./server_process.js', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
  const { url, adminKey } = JSON.parse(line) as { url: string; adminKey: string };
  try {
    const cust = JSON.parse((await post(url, '/api/v1/customers', { name: 'Bench' }, adminKey)).body);
    const lic = JSON.parse(
      (await post(url, '/api/v1/licenses', { customer_id: cust.id, tier: 'server', license_type: 'perpetual', max_machines: 100000 }, adminKey)).body,
    );
    // One activation gives a real license token to validate.
    const mkHost = (i: number) => {
      const { privateKey } = generateKeyPairSync('ed25519');
      const hwid = computeFingerprint({ machine_id: `bench-${i}-${Math.random()}` }).hardware_id;
      return {
        license_key: lic.license_key,
        hardware_id: hwid,
        host_public_key: publicJwkOf(privateKey),
        hostname: `bench-${i}`,
        agent_version: '1.0.0',
        proof: signHostProof(privateKey, { aud: AUD_ACTIVATION_PROOF, hwid }),
      };
    };
    const first = JSON.parse((await post(url, '/api/v1/activations', mkHost(0))).body);
    const token = first.license_token as string;

    process.stdout.write(`aegis bench/license: ${SECONDS}s per phase, concurrency ${CONCURRENCY}, SQLite, node ${process.version}\n`);
    const verifyRate = ed25519VerifyRate(2);
    await load(1, () => post(url, '/api/v1/licenses/validate', { token }), [200]); // warm-up
    const validate = await load(SECONDS, () => post(url, '/api/v1/licenses/validate', { token }), [200]);

    // Activations: hosts and proofs made before the clock starts (host key generation is
    // the agent's cost, not the server's). Every one is a new machine: a real insert.
    const budget = Math.ceil(validate.rps * SECONDS) + 1000;
    const hosts = Array.from({ length: Math.min(budget, 20000) }, (_, i) => mkHost(i + 1));
    let i = 0;
    const activate = await load(SECONDS, () => (i < hosts.length ? post(url, '/api/v1/activations', hosts[i++]) : null), [201]);

    const row = (name: string, r: LoadResult) =>
      `${name.padEnd(22)} ${r.rps.toFixed(0).padStart(8)} req/s   p50 ${r.p50.toFixed(2).padStart(7)} ms   p99 ${r.p99.toFixed(2).padStart(7)} ms   errors ${r.errors}/${r.count}`;
    process.stdout.write(`${'raw Ed25519 verify'.padEnd(22)} ${verifyRate.toFixed(0).padStart(8)} op/s    (one core, baseline)\n`);
    process.stdout.write(row('POST validate', validate) + '\n');
    process.stdout.write(row('POST activations', activate) + '\n');
    process.stdout.write(`ratio validate / raw verify:    ${(validate.rps / verifyRate).toFixed(3)}\n`);
    process.stdout.write(`ratio activation / raw verify:  ${(activate.rps / verifyRate).toFixed(3)}\n`);
  } finally {
    child.kill('SIGTERM');
    agent.destroy();
  }
}

await main();
