/**
 * Runs a real aegis-agent process for a test: own state dir, socket, token path and pin
 * root, with a stand-in for systemd's notify socket so a test can wait for READY=1 and
 * see WATCHDOG/STOPPING exactly as systemd would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const AGENT = fileURLToPath(new URL('../../agent/src/main.js', import.meta.url));
const LISTENER = fileURLToPath(new URL('../../../test/harness/notify_listener.py', import.meta.url));

export interface AgentOptions {
  serverUrl: string;
  dir?: string;
  services?: Record<string, string>;
  pinRoot?: string;
  /** Facts that replace the collected ones: lets one machine play several hosts. */
  hardwareFacts?: Record<string, unknown>;
  tokenPath?: string;
  env?: NodeJS.ProcessEnv;
  extraConfig?: Record<string, unknown>;
}

export interface ApiResponse {
  status: number;
  body: any;
}

export class TestAgent {
  readonly logs: string[] = [];
  readonly notifications: string[] = [];
  exitCode: number | null = null;
  /** performance.now() right after the spawn, and when READY=1 reached the listener (bench/agent). */
  readonly spawnedAt = performance.now();
  readyAt: number | null = null;
  private exited: Promise<number | null>;

  constructor(
    readonly proc: ChildProcess,
    private readonly listener: ChildProcess,
    readonly dir: string,
    readonly socket: string,
    readonly tokenPath: string,
    readonly stateDir: string,
  ) {
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on('line', (l) => this.logs.push(l));
    }
    createInterface({ input: listener.stdout! }).on('line', (l) => {
      if (this.readyAt === null && l.includes('READY=1')) this.readyAt = performance.now();
      this.notifications.push(l);
    });
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve((this.exitCode = code))));
  }

  async waitFor(what: () => boolean, timeoutMs: number, label: string): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!what()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${label}; logs:\n${this.logs.slice(-30).join('\n')}`);
      if (this.exitCode !== null) throw new Error(`agent exited ${this.exitCode} while waiting for ${label}; logs:\n${this.logs.slice(-30).join('\n')}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  waitReady(timeoutMs = 20_000): Promise<void> {
    return this.waitFor(() => this.notifications.some((n) => n.includes('READY=1')), timeoutMs, 'READY=1');
  }

  api(method: string, path: string, body?: unknown): Promise<ApiResponse> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        { socketPath: this.socket, path, method, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} },
        (res) => {
          let out = '';
          res.on('data', (c) => (out += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: out ? JSON.parse(out) : null }));
        },
      );
      req.on('error', reject);
      req.end(data);
    });
  }

  /** Sends `signal` and resolves with the exit code and how long the exit took. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; ms: number }> {
    const t0 = performance.now();
    if (this.exitCode === null) this.proc.kill(signal);
    const code = await this.exited;
    this.listener.kill('SIGKILL');
    return { code, ms: performance.now() - t0 };
  }
}

export function agentDir(): string {
  return mkdtempSync(join(tmpdir(), 'aegis-agent-'));
}

export async function startAgent(o: AgentOptions): Promise<TestAgent> {
  const dir = o.dir ?? agentDir();
  const notifySocket = join(dir, `notify-${Date.now()}.sock`);
  const listener = spawn('python3', [LISTENER, notifySocket], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => createInterface({ input: listener.stdout! }).once('line', () => resolve()));
  const stateDir = join(dir, 'state');
  const socket = join(dir, 'agent.sock');
  const tokenPath = o.tokenPath ?? join(dir, 'etc', 'auth.token');
  const configPath = join(dir, 'agent.json');
  // Stands in for /sys/kernel/aegis/reload: the agent writes to it only when it exists.
  writeFileSync(join(dir, 'kmod-reload'), '');
  writeFileSync(
    configPath,
    JSON.stringify({
      server_url: o.serverUrl,
      state_dir: stateDir,
      socket_path: socket,
      token_path: tokenPath,
      // Tests that do not exercise the datapath get a pin root off bpffs: the datapath
      // reports itself unavailable and nothing is left pinned in the kernel.
      pin_root: o.pinRoot ?? join(dir, 'not-bpffs'),
      services: o.services ?? {},
      kmod_reload_path: join(dir, 'kmod-reload'),
      kmod_hwid_path: join(dir, 'kmod-hwid'),
      // No NATS unless a test asks for it (then it passes nats_url in extraConfig).
      nats_url: '',
      // No package inventory unless a test asks for it (test/intel/inventory_agent.test.ts).
      dpkg_status_path: '',
      log_level: 'debug',
      ...o.extraConfig,
    }),
  );
  const env: NodeJS.ProcessEnv = { ...process.env, NOTIFY_SOCKET: notifySocket, AEGIS_CONFIG: configPath, ...o.env };
  if (o.hardwareFacts) {
    const f = join(dir, 'hwfacts.json');
    writeFileSync(f, JSON.stringify(o.hardwareFacts));
    env.AEGIS_HWID_FACTS = f;
  }
  const proc = spawn(process.execPath, [AGENT], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  return new TestAgent(proc, listener, dir, socket, tokenPath, stateDir);
}

export function cleanupDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
