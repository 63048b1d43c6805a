/**
 * Child program for datapath tests that need data to flow both ways through a bound cgroup
 * (run it with runNodeInCgroup, or in a network namespace with runInNetns). Prints one JSON
 * line with what happened.
 *
 *   serve:    TCP echo listeners on `ports` (0: any free port) of `host`; writes the bound
 *             ports as JSON to readyFile; runs until stopFile appears; reports accepts per port.
 *   exchange: per target, connect, send `bytes` bytes, wait for all of them back, close.
 *   loop:     exchange with every target in turn until stopFile appears (readyFile after the
 *             first round); reports per target how many succeeded and failed, by error.
 *   hold:     one connection per target kept open; sends `chunk` bytes and waits for the echo
 *             again and again until stopFile appears. An exchange with no full echo within
 *             stallMs is a stall. `okAfterMark` counts exchanges whose request was sent after
 *             markFile appeared, so a test can tell what still worked after an event.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { roundRobin } from '../../agent/src/datapath/round_robin.js';

export interface EchoTarget {
  host: string;
  port: number;
  timeoutMs?: number;
  /** exchange: bytes to send and get back (default 4096). */
  bytes?: number;
}

export interface ExchangeOutcome {
  ok: boolean;
  error?: string;
  ms: number;
  received: number;
}

export interface HoldOutcome {
  ok: number;
  okAfterMark: number;
  stalls: number;
  bytes: number;
  /** Socket error or premature close, if any. */
  error?: string;
}

interface Spec {
  op: 'serve' | 'exchange' | 'loop' | 'hold';
  host?: string;
  ports?: number[];
  targets?: EchoTarget[];
  readyFile?: string;
  stopFile?: string;
  markFile?: string;
  chunk?: number;
  intervalMs?: number;
  stallMs?: number;
  maxMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function exchange(t: EchoTarget): Promise<ExchangeOutcome> {
  const start = process.hrtime.bigint();
  const ms = (): number => Number(process.hrtime.bigint() - start) / 1e6;
  const want = pattern(t.bytes ?? 4096, t.port);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let done = false;
    const s = connect({ host: t.host, port: t.port });
    const finish = (ok: boolean, error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ ok, ...(error === undefined ? {} : { error }), ms: ms(), received });
    };
    const timer = setTimeout(() => finish(false, 'timeout'), t.timeoutMs ?? 2000);
    s.once('connect', () => s.write(want));
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      received += d.length;
      if (received >= want.length) {
        const same = Buffer.concat(chunks).subarray(0, want.length).equals(want);
        finish(same, same ? undefined : 'corrupted');
      }
    });
    s.once('error', (e: NodeJS.ErrnoException) => finish(false, e.code ?? e.message));
    s.once('close', () => finish(false, 'closed'));
  });
}

async function hold(spec: Spec, t: EchoTarget, deadline: number, opened: () => void): Promise<HoldOutcome> {
  const out: HoldOutcome = { ok: 0, okAfterMark: 0, stalls: 0, bytes: 0 };
  const s: Socket = connect({ host: t.host, port: t.port });
  s.setNoDelay(true);
  let received = 0;
  let wake: (() => void) | null = null;
  s.on('data', (d: Buffer) => {
    received += d.length;
    wake?.();
  });
  let ended = false;
  let stopping = false; // our own destroy() at the end is no error
  s.once('error', (e: NodeJS.ErrnoException) => {
    out.error = e.code ?? e.message;
    ended = true;
    wake?.();
  });
  s.once('close', () => {
    if (!stopping) out.error ??= 'closed';
    ended = true;
    wake?.();
  });
  await new Promise<void>((r, j) => {
    s.once('connect', () => r());
    s.once('error', j);
  });
  opened();
  const chunk = pattern(spec.chunk ?? 64, t.port);
  const stallMs = spec.stallMs ?? 500;
  let expected = 0;
  while (!ended && !existsSync(spec.stopFile!) && Date.now() < deadline) {
    const marked = spec.markFile !== undefined && existsSync(spec.markFile);
    expected += chunk.length;
    s.write(chunk);
    const until = Date.now() + stallMs;
    while (!ended && received < expected && Date.now() < until) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, Math.max(1, until - Date.now()));
      });
      wake = null;
    }
    if (ended) break;
    if (received >= expected) {
      out.ok++;
      out.bytes += chunk.length;
      if (marked) out.okAfterMark++;
    } else {
      out.stalls++;
    }
    if ((spec.intervalMs ?? 0) > 0) await sleep(spec.intervalMs!);
  }
  stopping = true;
  s.destroy();
  return out;
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
  const deadline = Date.now() + (spec.maxMs ?? 120_000);
  if (spec.op === 'serve') {
    const accepted: Record<number, number> = {};
    const servers: Server[] = [];
    for (const want of spec.ports ?? [0]) {
      const srv = createServer((c) => {
        const port = (srv.address() as AddressInfo).port;
        accepted[port] = (accepted[port] ?? 0) + 1;
        c.on('error', () => c.destroy());
        c.pipe(c);
      });
      await new Promise<void>((r) => srv.listen({ port: want, host: spec.host ?? '127.0.0.1', ipv6Only: false }, () => r()));
      servers.push(srv);
    }
    const ports = servers.map((s) => (s.address() as AddressInfo).port);
    if (spec.readyFile) writeFileSync(spec.readyFile, JSON.stringify(ports));
    while (!existsSync(spec.stopFile!) && Date.now() < deadline) await sleep(20);
    for (const s of servers) s.close();
    process.stdout.write(JSON.stringify({ ports, accepted }) + '\n');
    process.exit(0);
  }
  if (spec.op === 'exchange') {
    const results: ExchangeOutcome[] = [];
    for (const t of spec.targets ?? []) results.push(await exchange(t));
    process.stdout.write(JSON.stringify({ results }) + '\n');
    return;
  }
  if (spec.op === 'loop') {
    const out = await roundRobin(spec.targets ?? [], exchange, { stopFile: spec.stopFile, readyFile: spec.readyFile, deadline });
    process.stdout.write(JSON.stringify(out) + '\n');
    return;
  }
  if (spec.op === 'hold') {
    const targets = spec.targets ?? [];
    let open = 0;
    const results = await Promise.all(
      targets.map((t) =>
        hold(spec, t, deadline, () => {
          if (++open === targets.length && spec.readyFile) writeFileSync(spec.readyFile, 'ready');
        }),
      ),
    );
    process.stdout.write(JSON.stringify({ results }) + '\n');
    return;
  }
  throw new Error(`unknown op ${String(spec.op)}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
