/**
 * A throwaway nats-server for tests: a config file in a temp dir (client port and
 * monitoring port picked free, JetStream stored in that dir, plus the caller's extra
 * config), started and polled until /healthz answers, deleted on stop(). kill() and
 * restart() keep port and store so "nats-server died mid-run" can be tested against the
 * same URL and the same JetStream data.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commandPath } from './capabilities.js';
import { freePort } from './postgres.js';

export interface StartNatsOptions {
  /** Extra nats-server config text appended to the generated file (e.g. an authorization block). */
  config?: string;
  /** Operator-mode fragment (NatsAuthority.renderServerConfig()), included from its own file. */
  operatorConfig?: string;
  /** More files written into the config's directory first (name → text), e.g. an included fragment. */
  files?: Record<string, string>;
  /** TLS on the client port: PEM files; `verify` also demands client certificates. */
  tls?: { certFile: string; keyFile: string; caFile?: string; verify?: boolean };
  /** JetStream on (the default) or off. */
  jetstream?: boolean;
  /** Client port (default: a free one); a cluster starter picks them all first. */
  port?: number;
  /** Monitoring port (default: a free one). */
  monitorPort?: number;
  /**
   * The whole config file instead of the generated one (e.g. what scripts/nats-config
   * rendered); it must listen on `port` and serve monitoring on `monitorPort`.
   */
  rawConfig?: string;
}

export interface TestNats {
  /** nats://127.0.0.1:<port> */
  url: string;
  port: number;
  /** The server_name (the name JetStream's cluster info uses for this node). */
  name: string;
  /** Whether the process is running now (false between kill() and restart()). */
  running(): boolean;
  /** The directory of the config file (includes are resolved here). */
  dir: string;
  storeDir: string;
  /** nats-server's log so far (for assertion messages). */
  log(): string;
  /** Path of the included operator-mode fragment (present when operatorConfig was given). */
  operatorConfigPath: string;
  /** Rewrites the operator-mode fragment when given, then has nats-server reload its config (SIGHUP). */
  reload(operatorConfig?: string): Promise<void>;
  /** Graceful stop (SIGTERM), then deletes the temp dir. */
  stop(): Promise<void>;
  /** SIGKILL, keeping port and store for restart(). */
  kill(): Promise<void>;
  /** Starts again on the same port with the same store (stopping first if still running). */
  restart(): Promise<void>;
}

const READY_TIMEOUT_MS = 15_000;
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test that throws before stop() must not leave a server holding the port.
  process.on('exit', () => {
    for (const p of live) p.kill('SIGKILL');
  });
}

function waitExit(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => p.once('exit', () => resolve()));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startNats(opts: StartNatsOptions = {}): Promise<TestNats> {
  const bin = commandPath('nats-server');
  if (!bin) throw new Error('nats-server is not installed (apt-get install nats-server)');
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'aegis-nats-'));
  const storeDir = join(dir, 'jetstream');
  const logPath = join(dir, 'nats.log');
  const confPath = join(dir, 'nats.conf');
  const operatorConfigPath = join(dir, 'operator.conf');
  const port = opts.port ?? (await freePort());
  const monitorPort = opts.monitorPort ?? (await freePort());
  const jetstream = opts.jetstream ?? true;
  const conf = [
    `listen: "127.0.0.1:${port}"`,
    `http: "127.0.0.1:${monitorPort}"`,
    `server_name: "aegis-test-${port}"`,
    jetstream ? `jetstream { store_dir: "${storeDir}" }` : '',
    opts.tls
      ? [
          'tls {',
          `  cert_file: ${JSON.stringify(opts.tls.certFile)}`,
          `  key_file: ${JSON.stringify(opts.tls.keyFile)}`,
          opts.tls.caFile ? `  ca_file: ${JSON.stringify(opts.tls.caFile)}` : '',
          opts.tls.verify ? '  verify: true' : '',
          '  timeout: 2',
          '}',
        ].join('\n')
      : '',
    opts.operatorConfig !== undefined ? `include "operator.conf"` : '',
    opts.config ?? '',
    '',
  ].join('\n');
  writeFileSync(confPath, opts.rawConfig ?? conf, { mode: 0o600 });
  if (opts.operatorConfig !== undefined) writeFileSync(operatorConfigPath, opts.operatorConfig, { mode: 0o600 });
  for (const [name, text] of Object.entries(opts.files ?? {})) writeFileSync(join(dir, name), text, { mode: 0o600 });

  let proc: ChildProcess | null = null;

  async function launch(): Promise<void> {
    const fd = openSync(logPath, 'a');
    const p = spawn(bin as string, ['-c', confPath], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    live.add(p);
    p.once('exit', () => live.delete(p));
    proc = p;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (p.exitCode !== null || p.signalCode !== null) {
        throw new Error(`nats-server exited during start (${p.exitCode ?? p.signalCode}):\n${readLog()}`);
      }
      try {
        // /healthz is ok only once the client listener and (if on) JetStream are up.
        const r = await fetch(`http://127.0.0.1:${monitorPort}/healthz`);
        if (r.ok) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) {
        p.kill('SIGKILL');
        throw new Error(`nats-server not ready after ${READY_TIMEOUT_MS} ms:\n${readLog()}`);
      }
      await sleep(25);
    }
  }

  function readLog(): string {
    try {
      return readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  }

  async function halt(signal: NodeJS.Signals): Promise<void> {
    const p = proc;
    proc = null;
    if (!p) return;
    p.kill(signal);
    await waitExit(p);
  }

  try {
    await launch();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    name: /server_name:\s*"([^"]+)"/.exec(opts.rawConfig ?? conf)?.[1] ?? '',
    running: () => proc !== null,
    dir,
    storeDir,
    operatorConfigPath,
    log: readLog,
    async reload(operatorConfig?: string) {
      if (operatorConfig !== undefined) writeFileSync(operatorConfigPath, operatorConfig, { mode: 0o600 });
      const p = proc as ChildProcess | null;
      if (!p) throw new Error('nats-server is not running');
      const before = (readLog().match(/Reloaded server configuration/g) ?? []).length;
      p.kill('SIGHUP');
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while ((readLog().match(/Reloaded server configuration/g) ?? []).length === before) {
        if (Date.now() > deadline) throw new Error(`nats-server did not reload:\n${readLog()}`);
        await sleep(25);
      }
    },
    async stop() {
      try {
        await halt('SIGTERM');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    async kill() {
      await halt('SIGKILL');
    },
    async restart() {
      await halt('SIGTERM');
      await launch();
    },
  };
}

export interface TestNatsCluster {
  nodes: TestNats[];
  /** Every node's client URL, for a client's server list. */
  urls: string[];
  /** The node whose server_name is `name`. */
  node(name: string): TestNats;
  stop(): Promise<void>;
}

export interface StartNatsClusterOptions {
  /** Nodes (default 3). */
  size?: number;
  /** Cluster name (default aegis-test). */
  name?: string;
  /** Extra config for every node (an authorization block, an operator include). */
  config?: string;
  operatorConfig?: string;
  /**
   * Renders each node's whole config (e.g. through scripts/nats-config) from its ports
   * instead of the harness's own; `routes` are every node's cluster port.
   */
  render?: (node: { index: number; port: number; monitorPort: number; clusterPort: number; clusterPorts: number[] }) => string;
}

/**
 * A JetStream cluster of `size` nats-servers on loopback (free client, cluster and
 * monitoring ports, one store each), started together (a clustered JetStream is ready
 * only once a quorum has met). Each node can be killed and restarted like startNats's.
 */
export async function startNatsCluster(opts: StartNatsClusterOptions = {}): Promise<TestNatsCluster> {
  const size = opts.size ?? 3;
  const name = opts.name ?? 'aegis-test';
  const ports: Array<{ port: number; monitorPort: number; clusterPort: number }> = [];
  const taken = new Set<number>();
  const pick = async (): Promise<number> => {
    for (;;) {
      const p = await freePort();
      if (!taken.has(p)) {
        taken.add(p);
        return p;
      }
    }
  };
  for (let i = 0; i < size; i++) ports.push({ port: await pick(), monitorPort: await pick(), clusterPort: await pick() });
  const clusterPorts = ports.map((p) => p.clusterPort);
  const started = await Promise.allSettled(
    ports.map((p, index) => {
      const routes = clusterPorts.filter((c) => c !== p.clusterPort).map((c) => `nats-route://127.0.0.1:${c}`);
      const cluster = [`cluster {`, `  name: ${JSON.stringify(name)}`, `  listen: "127.0.0.1:${p.clusterPort}"`, `  routes: ${JSON.stringify(routes)}`, `}`].join('\n');
      const raw = opts.render?.({ index, port: p.port, monitorPort: p.monitorPort, clusterPort: p.clusterPort, clusterPorts });
      return startNats({
        port: p.port,
        monitorPort: p.monitorPort,
        ...(raw !== undefined ? { rawConfig: raw } : { config: `${cluster}\n${opts.config ?? ''}` }),
        ...(opts.operatorConfig !== undefined ? { operatorConfig: opts.operatorConfig } : {}),
      });
    }),
  );
  const nodes = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw failed.reason;
  }
  return {
    nodes,
    urls: nodes.map((n) => n.url),
    node(serverName: string) {
      const n = nodes.find((x) => x.name === serverName);
      if (!n) throw new Error(`no node named ${serverName} (nodes: ${nodes.map((x) => x.name).join(', ')})`);
      return n;
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}

/** Polls `cond` until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export interface LogLine {
  level: 'info' | 'warn' | 'error';
  msg: string;
  meta: object | undefined;
}

/** A logger for the buses that keeps its lines for assertions. */
export function memoryLog(): { lines: LogLine[]; info(msg: string, meta?: object): void; warn(msg: string, meta?: object): void; error(msg: string, meta?: object): void } {
  const lines: LogLine[] = [];
  return {
    lines,
    info: (msg, meta) => void lines.push({ level: 'info', msg, meta }),
    warn: (msg, meta) => void lines.push({ level: 'warn', msg, meta }),
    error: (msg, meta) => void lines.push({ level: 'error', msg, meta }),
  };
}
