/**
 * Test helper run as a child process inside a test cgroup (see runNodeInCgroup): makes
 * real TCP connections and UDP exchanges so the cgroup_skb programs see real sockets.
 * Prints one JSON line with the results.
 *
 *   node traffic_client.js '{"op":"probe","targets":[...]}'
 *   node traffic_client.js '{"op":"loop","targets":[...],"stopFile":"...","readyFile":"..."}'
 *   node traffic_client.js '{"op":"serve","ports":[...],"host":"127.0.0.1","stopFile":"...","readyFile":"...","echo":false}'
 */
import { createSocket } from 'node:dgram';
import { existsSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { roundRobin } from './round_robin.js';

interface Target {
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  timeoutMs?: number;
  /** UDP only: connect() the socket first, then send without an address. */
  connected?: boolean;
}

interface Outcome {
  ok: boolean;
  error?: string;
  /** Time from the call to its outcome (connected, error, reply), in milliseconds. */
  ms?: number;
}

function tcp(t: Target): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = connect({ host: t.host, port: t.port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ ok: false, error: 'timeout' });
    }, t.timeoutMs ?? 400);
    s.once('connect', () => {
      clearTimeout(timer);
      s.end();
      s.destroy();
      resolve({ ok: true });
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      s.destroy();
      resolve({ ok: false, error: e.code ?? e.message });
    });
  });
}

function udp(t: Target): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = createSocket(t.host.includes(':') ? 'udp6' : 'udp4');
    let finished = false;
    const done = (o: Outcome): void => {
      // A refused send can surface both as an 'error' and in the send callback.
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      s.close();
      resolve(o);
    };
    const timer = setTimeout(() => done({ ok: false, error: 'timeout' }), t.timeoutMs ?? 400);
    s.once('message', () => done({ ok: true }));
    s.once('error', (e: NodeJS.ErrnoException) => done({ ok: false, error: e.code ?? e.message }));
    const sent = (e: Error | null): void => {
      if (e) done({ ok: false, error: (e as NodeJS.ErrnoException).code ?? e.message });
    };
    // A refused connect() reaches this callback with the error (and no connection).
    if (t.connected) s.connect(t.port, t.host, (e?: Error) => (e ? sent(e) : s.send(Buffer.from('ping'), sent)));
    else s.send(Buffer.from('ping'), t.port, t.host, sent);
  });
}

/** A send error (sendto refused) is reported before any reply wait: udp() resolves then. */
async function attempt(t: Target): Promise<Outcome> {
  const start = process.hrtime.bigint();
  const o = await (t.proto === 'tcp' ? tcp(t) : udp(t));
  return { ...o, ms: Number(process.hrtime.bigint() - start) / 1e6 };
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as {
    op: 'probe' | 'loop' | 'serve';
    targets?: Target[];
    stopFile?: string;
    readyFile?: string;
    ports?: number[];
    host?: string;
    maxMs?: number;
    /** serve: keep each connection open and echo what arrives (a live flow), instead of closing it. */
    echo?: boolean;
  };
  const deadline = Date.now() + (spec.maxMs ?? 120_000);
  if (spec.op === 'probe') {
    const results: Outcome[] = [];
    for (const t of spec.targets ?? []) results.push(await attempt(t));
    process.stdout.write(JSON.stringify({ results }) + '\n');
    return;
  }
  if (spec.op === 'loop') {
    // Round-robin over the targets until the stop file appears; per target: ok / failed.
    const out = await roundRobin(spec.targets ?? [], attempt, { stopFile: spec.stopFile, readyFile: spec.readyFile, deadline });
    process.stdout.write(JSON.stringify(out) + '\n');
    return;
  }
  if (spec.op === 'serve') {
    let accepted = 0;
    const servers = await Promise.all(
      (spec.ports ?? []).map(
        (port) =>
          new Promise<ReturnType<typeof createServer>>((resolve) => {
            const srv = createServer((c) => {
              accepted++;
              if (spec.echo) {
                c.on('error', () => undefined);
                c.pipe(c);
              } else c.end();
            });
            srv.listen(port, spec.host ?? '127.0.0.1', () => resolve(srv));
          }),
      ),
    );
    if (spec.readyFile) writeFileSync(spec.readyFile, 'ready');
    while (!existsSync(spec.stopFile!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of servers) s.close();
    process.stdout.write(JSON.stringify({ accepted }) + '\n');
    return;
  }
  throw new Error(`unknown op ${String(spec.op)}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
