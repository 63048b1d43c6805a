/**
 * Event ingest into the correlator, against a real aegis-server on SQLite in its own process
 * (ingest_server.ts): agents' telemetry batches and threat reports through
 * POST /api/v1/agent/telemetry and /threats, each with its own single-use access token
 * (POST /api/v1/agent/token with a host-key proof, as the agent does without mTLS), with the
 * correlator idle and then running its rules back to back over the events. Baselines from
 * the same run and the same database: a bare insert of the same rows (same batch per
 * transaction), and a correlator pass over an empty window. Rule latency: each host sends
 * one probe threat that completes a temporal_ordered rule; the time from its arrival (its
 * received_at) to the alert being raised, and from the agent sending it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { AGENT_API, AUD_ACTIVATION_PROOF, AUD_AGENT_TOKEN_PROOF, computeFingerprint, publicJwkOf, signHostProof } from '../../protocol/src/index.js';
import { percentile, ratio } from './stats.js';

export interface IngestOptions {
  seconds: number;
  hosts: number;
  batch: number;
  concurrency: number;
  /** Milliseconds between correlation passes (the server's least AEGIS_RULES_INTERVAL_SECONDS is 1000); 0: back to back. */
  rulesIntervalMs: number;
  /** false: only the ingest phases with the correlator idle (to profile the ingest path). */
  correlate: boolean;
  /** Write a V8 CPU profile of the server process into this directory. */
  cpuProfDir?: string;
}

const wall = () => performance.timeOrigin + performance.now();

interface Host {
  key: KeyObject;
  hwid: string;
  machineId: string;
}

interface ServerMsg {
  type: string;
  [k: string]: any;
}

class BenchServer {
  url = '';
  adminKey = '';
  readonly alerts: Array<{ rule_id: string; machine_id: string; t: number; arrived: number | null }> = [];
  private waiting = new Map<string, (m: ServerMsg) => void>();

  constructor(private readonly child: ChildProcess) {
    child.on('message', (m: ServerMsg) => {
      if (m.type === 'alert') this.alerts.push(m as any);
      const w = this.waiting.get(m.type);
      if (w) {
        this.waiting.delete(m.type);
        w(m);
      }
    });
  }

  static async start(cpuProfDir?: string): Promise<BenchServer> {
    const child = fork(fileURLToPath(new URL('./ingest_server.js', import.meta.url)), [], {
      execArgv: cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const s = new BenchServer(child);
    const ready = await s.next('ready');
    s.url = ready.url;
    s.adminKey = ready.adminKey;
    return s;
  }

  next(type: string): Promise<ServerMsg> {
    return new Promise((resolve, reject) => {
      const exited = (code: number | null) => reject(new Error(`bench server exited (${code}) before '${type}'`));
      this.child.once('exit', exited);
      this.waiting.set(type, (m) => {
        this.child.off('exit', exited);
        resolve(m);
      });
    });
  }

  send(m: unknown): void {
    this.child.send(m as any);
  }

  async stop(): Promise<void> {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.send({ cmd: 'stop' });
    await exited;
  }
}

const agent = new Agent({ keepAlive: true, maxSockets: 256 });

function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(data)), ...headers } }, (res) => {
      let out = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (out += c));
      res.on('end', () => {
        let parsed: unknown = out;
        try {
          parsed = JSON.parse(out);
        } catch {
          /* not JSON: keep the text */
        }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function must(p: Promise<{ status: number; body: any }>, what: string): Promise<any> {
  const r = await p;
  if (r.status >= 300) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

interface StepResult {
  ok: boolean;
  events: number;
  error?: string;
}

interface LoadResult {
  events: number;
  requests: number;
  seconds: number;
  p50: number;
  p99: number;
  errors: number;
  firstError: string | null;
}

/** `concurrency` workers call `step` until `seconds` have passed; each step is one ingest request. */
async function load(seconds: number, concurrency: number, step: () => Promise<StepResult>): Promise<LoadResult> {
  const latencies: number[] = [];
  let events = 0;
  let errors = 0;
  let firstError: string | null = null;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const s = performance.now();
        const r = await step().catch((e: unknown): StepResult => ({ ok: false, events: 0, error: (e as Error).message }));
        latencies.push(performance.now() - s);
        if (r.ok) events += r.events;
        else {
          errors++;
          firstError ??= r.error ?? 'error';
        }
      }
    }),
  );
  return { events, requests: latencies.length, seconds: (performance.now() - t0) / 1000, p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors, firstError };
}

export async function runIngest(o: IngestOptions): Promise<string[]> {
  const s = await BenchServer.start(o.cpuProfDir);
  try {
    const admin = { 'x-api-key': s.adminKey };
    const cust = await must(post(`${s.url}/api/v1/customers`, { name: 'Bench' }, admin), 'customer');
    const lic = await must(post(`${s.url}/api/v1/licenses`, { customer_id: cust.id, tier: 'server', license_type: 'perpetual', max_machines: o.hosts }, admin), 'license');
    const hosts: Host[] = [];
    for (let i = 0; i < o.hosts; i++) {
      const { privateKey } = generateKeyPairSync('ed25519');
      const hwid = computeFingerprint({ machine_id: `bench-intel-${i}-${Math.random()}` }).hardware_id;
      const act = await must(
        post(`${s.url}/api/v1/activations`, { license_key: lic.license_key, hardware_id: hwid, host_public_key: publicJwkOf(privateKey), hostname: `bench-${i}`, agent_version: '1.0.0', proof: signHostProof(privateKey, { aud: AUD_ACTIVATION_PROOF, hwid }) }),
        `activation ${i}`,
      );
      hosts.push({ key: privateKey, hwid, machineId: act.machine_id });
    }
    // Two rules over the telemetry: one that reads every event of its window and never
    // fires (the volume the correlator must get through), and the probe rule.
    await must(post(`${s.url}/api/v1/rules`, { id: 'bench-volume', title: 'Telemetry volume', type: 'event_count', rules: [{ source: 'telemetry', kind: 'bench.noise' }], 'group-by': ['machine_id'], timespan: '1m', condition: { gt: 1_000_000 }, level: 'low' }, admin), 'rule');
    await must(
      post(`${s.url}/api/v1/rules`, { id: 'bench-probe', title: 'Telemetry, then a probe threat', type: 'temporal_ordered', rules: [{ source: 'telemetry', kind: 'bench.noise' }, { source: 'threat', kind: 'bench.probe' }], 'group-by': ['machine_id'], timespan: '1m', level: 'high' }, admin),
      'rule',
    );

    // Baseline of rule latency: passes over an empty window (both rules, no events).
    s.send({ cmd: 'emptyPasses', n: 200 });
    const empty = (await s.next('passes')).ms as number[];

    let k = 0;
    const nextHost = () => hosts[k++ % hosts.length]!;
    const token = async (h: Host, scope: string): Promise<string | { error: string }> => {
      const r = await post(`${s.url}${AGENT_API.token}`, { machine_id: h.machineId, proof: signHostProof(h.key, { aud: AUD_AGENT_TOKEN_PROOF, hwid: h.hwid }), scope: [scope] });
      return r.status === 200 ? (r.body.access_token as string) : { error: `token ${r.status} ${JSON.stringify(r.body)}` };
    };
    let seq = 0;
    const telemetry = (): Promise<StepResult> => telemetryOf(nextHost(), o.batch);
    const telemetryOf = async (h: Host, n: number): Promise<StepResult> => {
      const tok = await token(h, 'telemetry');
      if (typeof tok !== 'string') return { ok: false, events: 0, ...tok };
      const at = new Date().toISOString();
      const events = Array.from({ length: n }, () => ({ kind: 'bench.noise', at, fields: { seq: seq++, dst: '10.0.0.1', port: 443 } }));
      const r = await post(`${s.url}${AGENT_API.telemetry}`, { events }, { authorization: `Bearer ${tok}` });
      return r.status === 202 ? { ok: true, events: n } : { ok: false, events: 0, error: `telemetry ${r.status} ${JSON.stringify(r.body)}` };
    };
    const threat = async (h: Host, kind: string): Promise<StepResult> => {
      const tok = await token(h, 'threat_reporting');
      if (typeof tok !== 'string') return { ok: false, events: 0, ...tok };
      const r = await post(`${s.url}${AGENT_API.threats}`, { kind, severity: 'high', observed_at: new Date().toISOString(), process: { pid: seq++ } }, { authorization: `Bearer ${tok}` });
      return r.status === 201 ? { ok: true, events: 1 } : { ok: false, events: 0, error: `threat ${r.status} ${JSON.stringify(r.body)}` };
    };

    await load(Math.min(1, o.seconds), o.concurrency, telemetry); // warm-up
    const telIdle = await load(o.seconds, o.concurrency, telemetry);

    const thrIdle = await load(o.seconds, o.concurrency, () => threat(nextHost(), 'bench.noise'));

    // With the correlator running back to back, and each host's probe spread over the middle of the phase.
    let telOn: LoadResult | null = null;
    let thrOn: LoadResult | null = null;
    let loaded: number[] = [];
    let thrPasses: number[] = [];
    let latencies: number[] = [];
    let fromSent: number[] = [];
    if (o.correlate) {
      // Every host's telemetry in the window first, so each host's probe completes its rule.
      const seeds = [...hosts];
      await Promise.all(
        Array.from({ length: o.concurrency }, async () => {
          for (let h = seeds.pop(); h; h = seeds.pop()) {
            const r = await telemetryOf(h, 1);
            if (!r.ok) throw new Error(r.error);
          }
        }),
      );
      s.send({ cmd: 'correlate', on: true, intervalMs: o.rulesIntervalMs });
      const probeSent = new Map<string, number>();
      const probes = hosts.map(
        (h, i) =>
          new Promise<void>((resolve) =>
            setTimeout(() => {
              probeSent.set(h.machineId, wall());
              void threat(h, 'bench.probe').then((r) => {
                if (!r.ok) process.stderr.write(`probe: ${r.error}\n`);
                resolve();
              });
            }, (0.2 + (0.6 * i) / hosts.length) * o.seconds * 1000),
          ),
      );
      telOn = await load(o.seconds, o.concurrency, telemetry);
      await Promise.all(probes);
      const deadline = performance.now() + 60_000;
      const probeAlerts = () => s.alerts.filter((a) => a.rule_id === 'bench-probe');
      while (probeAlerts().length < hosts.length && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      s.send({ cmd: 'correlate', on: false });
      loaded = (await s.next('passes')).ms as number[];
      latencies = probeAlerts()
        .map((a) => (a.arrived === null ? NaN : a.t - a.arrived))
        .filter(Number.isFinite);
      fromSent = probeAlerts()
        .map((a) => a.t - (probeSent.get(a.machine_id) ?? NaN))
        .filter(Number.isFinite);

      s.send({ cmd: 'correlate', on: true, intervalMs: o.rulesIntervalMs });
      thrOn = await load(o.seconds, o.concurrency, () => threat(nextHost(), 'bench.noise'));
      s.send({ cmd: 'correlate', on: false });
      thrPasses = (await s.next('passes')).ms as number[];
    }

    // Baselines: the same rows, same batches, same database, no server path.
    const m0 = hosts[0]!.machineId;
    s.send({ cmd: 'bareInsert', machineId: m0, rows: Math.max(o.batch, Math.min(telIdle.events, 200_000)), batch: o.batch, kind: 'bench.bare', source: 'telemetry' });
    const bareBatch = await s.next('inserted');
    s.send({ cmd: 'bareInsert', machineId: m0, rows: Math.max(1, Math.min(thrIdle.events, 20_000)), batch: 1, kind: 'bench.bare', source: 'threat' });
    const bareOne = await s.next('inserted');

    const bareBatchRate = bareBatch.rows / (bareBatch.ms / 1000);
    const bareOneRate = bareOne.rows / (bareOne.ms / 1000);
    const rate = (r: LoadResult) => r.events / r.seconds;
    const f0 = (x: number) => x.toFixed(0).padStart(8);
    const f2 = (x: number) => x.toFixed(2);
    const reqs = (r: LoadResult) => `requests p50 ${f2(r.p50)} ms p99 ${f2(r.p99)} ms, errors ${r.errors}/${r.requests}${r.firstError ? ` (${r.firstError.slice(0, 160)})` : ''}`;
    const passes = (ms: number[]) => `${ms.length} passes, p50 ${f2(percentile(ms, 50))} ms p99 ${f2(percentile(ms, 99))} ms`;
    const emptyP99 = percentile(empty, 99);
    const lines = [
      `ingest: real server on SQLite (own process), ${o.hosts} hosts, concurrency ${o.concurrency}, ${o.seconds}s per phase, a correlation pass every ${o.rulesIntervalMs} ms when running; every request takes its own single-use access token (2 HTTP requests)`,
      `bare insert, ${o.batch} rows/txn       ${f0(bareBatchRate)} rows/s  (baseline)`,
      `bare insert, 1 row/txn          ${f0(bareOneRate)} rows/s  (baseline)`,
      `telemetry (${o.batch}/batch), idle     ${f0(rate(telIdle))} events/s = ${ratio(rate(telIdle), bareBatchRate)} bare; ${reqs(telIdle)}`,
      `threats (1/request), idle       ${f0(rate(thrIdle))} events/s = ${ratio(rate(thrIdle), bareOneRate)} bare; ${reqs(thrIdle)}`,
      `correlator pass, empty window   ${passes(empty)}  (baseline)`,
    ];
    if (telOn && thrOn) {
      const p99 = percentile(latencies, 99);
      lines.push(
        `telemetry, correlator running   ${f0(rate(telOn))} events/s = ${ratio(rate(telOn), bareBatchRate)} bare, ${ratio(rate(telOn), rate(telIdle))} idle; ${reqs(telOn)}`,
        `threats, correlator running     ${f0(rate(thrOn))} events/s = ${ratio(rate(thrOn), bareOneRate)} bare, ${ratio(rate(thrOn), rate(thrIdle))} idle; ${reqs(thrOn)}`,
        `correlator pass, under telemetry ${passes(loaded)} = ${ratio(percentile(loaded, 99), emptyP99)} empty (p99)`,
        `correlator pass, under threats  ${passes(thrPasses)} = ${ratio(percentile(thrPasses, 99), emptyP99)} empty (p99)`,
        `rule latency (arrival → alert)  ${latencies.length}/${o.hosts} alerts, p50 ${f2(percentile(latencies, 50))} ms p99 ${f2(p99)} ms = ${ratio(p99, emptyP99)} empty pass (p99), ${ratio(p99, percentile(loaded, 99))} loaded pass (p99)`,
        `  (from the agent sending it: p50 ${f2(percentile(fromSent, 50))} ms p99 ${f2(percentile(fromSent, 99))} ms, queueing in the saturated server included)`,
      );
    }
    return [...lines, ''];
  } finally {
    await s.stop();
    agent.destroy();
  }
}
