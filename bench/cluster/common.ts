/** bench/cluster's shared pieces: options, percentiles, an HTTP load loop, the Ed25519 baseline. */
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { Agent, request } from 'node:http';

const argv = process.argv.slice(2);

/** `--name value` as a number, else `dflt`. */
export function opt(name: string, dflt: number): number {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
}

/** `--name value` as a string, else `dflt`. */
export function optString(name: string, dflt: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? String(argv[i + 1]) : dflt;
}

/** Nearest-rank percentile (does not sort its input in place). */
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** One figure line: what, value, unit; the same layout in every phase. */
export function line(kind: 'baseline' | 'measured' | 'ratio' | 'note', what: string, value: string): string {
  return `  ${kind.padEnd(9)} ${what.padEnd(56)} ${value}`;
}

/** Raw single-core Ed25519 verifications per second (a license token's signature check). */
export function ed25519VerifyRate(seconds: number): number {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const msg = Buffer.alloc(400, 7);
  const sig = sign(null, msg, privateKey);
  let n = 0;
  const started = performance.now();
  const end = started + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 200; i++) verify(null, msg, publicKey, sig);
    n += 200;
  }
  return n / ((performance.now() - started) / 1000);
}

export interface Reply {
  status: number;
  body: string;
}

/** POSTs JSON through a keep-alive pool. */
export function post(agent: Agent, url: string, path: string, body: unknown, key?: string): Promise<Reply> {
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

export interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  count: number;
  /** The first unexpected answer, to say what went wrong. */
  firstError: string | null;
}

/**
 * Runs `next(worker)` from `concurrency` workers for `seconds` (a worker stops early when
 * it returns null); requests per second over the wall time, latency percentiles.
 */
export async function load(concurrency: number, seconds: number, next: (worker: number) => Promise<Reply> | null, okStatus: number[]): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  const started = performance.now();
  const end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const p = next(w);
        if (p === null) return;
        const r = await p;
        latencies.push(performance.now() - t0);
        if (!okStatus.includes(r.status)) {
          errors++;
          firstError ??= `${r.status} ${r.body.slice(0, 200)}`;
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  return { rps: latencies.length / elapsed, p50: pct(latencies, 50), p99: pct(latencies, 99), errors, count: latencies.length, firstError };
}

export function loadLine(r: LoadResult): string {
  return `${r.rps.toFixed(0).padStart(7)} req/s   p50 ${r.p50.toFixed(2).padStart(7)} ms   p99 ${r.p99.toFixed(2).padStart(7)} ms   errors ${r.errors}/${r.count}`;
}

export const ratio = (a: number, b: number): string => (b > 0 && Number.isFinite(a) && Number.isFinite(b) ? `${(a / b).toFixed(3)}x` : 'n/a');
