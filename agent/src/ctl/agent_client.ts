/**
 * aegis-agent's local control API (HTTP over its Unix socket) as aegisctl uses it. The
 * types are the socket API's contract; the daemon owns the implementation.
 */
import type { OfflineSignedFile } from '../../../protocol/src/index.js';
import { ExitCode } from './exit_codes.js';
import { ProtocolError, UnreachableError } from './errors.js';
import { describeErrno, sendRequest, streamLines, type FailureMapper, type Target } from './http_transport.js';
import { readJson } from './json_api.js';

export const DEFAULT_SOCKET = '/run/aegis/agent.sock';

export interface AgentStatus {
  version: string;
  hostname: string;
  edition: 'licensed' | 'community';
  edition_reason: string;
  /** This host's own license: licensed, grace, community, activating (absent from older agents). */
  license_state?: string;
  grace_ends_at?: string | null;
  machine_id: string | null;
  tier: string | null;
  features: string[];
  datapath: { available: boolean; reason: string | null };
  token_path: string;
  token_fallback: boolean;
  /** The kernel module's verdict and whether it was loaded with this machine's hwid (absent from older agents). */
  kmod?: AgentKmod;
  services: Array<{ service_id: string | number; cgroup: string | null; bound: boolean; error: string | null }>;
  uptime_s: number;
}

/** How the loaded kernel module is bound to this machine (see agent/src/kernel_token.ts). */
export interface AgentKmodHwid {
  state: 'bound' | 'unbound' | 'mismatch' | 'unknown' | 'not_loaded';
  module_hwid: string | null;
  hardware_id: string;
  warning: string | null;
}

export interface AgentKmod extends AgentKmodHwid {
  status: string | null;
}

export interface AgentLicense {
  state: 'licensed' | 'community' | 'activating' | 'error';
  machine_id: string | null;
  license: Record<string, unknown> | null;
  license_expires_at: string | null;
  kernel_token_expires_at: string | null;
  last_refresh_at: string | null;
  next_refresh_at: string | null;
  last_error: { code: string; message: string } | null;
  retrying: boolean;
  /** Why the agent is in this state (not in the original contract; shown when present). */
  reason?: string;
}

export interface AgentHwid {
  hardware_id: string;
  version: number | string;
  components: {
    machine_id?: string;
    system_uuid?: string;
    board_serial?: string;
    cpu_model?: string;
    macs?: string[];
    disk_serials?: string[];
  };
  ignored_interfaces: string[];
}

export interface AgentSnapshots {
  services: Array<{
    service_id: string | number;
    cgroup: string | null;
    revision: number | null;
    stage: string | null;
    mode: 'observe' | 'enforce' | null;
    ttl_left_s: number | null;
    counters: { allowed: number; dropped: number; would_drop: number } | null;
  }>;
}

export interface AgentToken {
  path: string;
  present: boolean;
  header: Record<string, unknown> | null;
  claims: Record<string, unknown> | null;
  expires_at: string | null;
  seconds_left: number | null;
  kmod_status: string | null;
  kmod_hwid?: AgentKmodHwid;
}

/** One verdict of the agent's flow log (GET /v1/flows). */
export interface AgentFlowEntry {
  time: string;
  service_id: number;
  direction: 'egress' | 'ingress';
  verdict: 'allowed' | 'dropped' | 'would-drop';
  reason: 'policy' | 'expired' | 'unparsed' | 'cut';
  proto: 'tcp' | 'udp' | 'icmp' | number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  remote: string;
  port: number;
  rule: number | null;
  revision: number | null;
}

export interface AgentFlows {
  entries: AgentFlowEntry[];
  capacity: number;
  overwritten: number;
  datapath: boolean;
}

export interface FlowsQuery {
  service?: number;
  verdict?: string;
  limit?: number;
}

function flowsPath(q: FlowsQuery, follow: boolean): string {
  const p = new URLSearchParams();
  if (q.service !== undefined) p.set('service', String(q.service));
  if (q.verdict !== undefined) p.set('verdict', q.verdict);
  if (q.limit !== undefined) p.set('limit', String(q.limit));
  if (follow) p.set('follow', '1');
  const s = p.toString();
  return s ? `/v1/flows?${s}` : '/v1/flows';
}

export interface Activated {
  machine_id: string;
  tier: string;
  features: string[];
  license_expires_at: string | null;
}

/** What to suggest for an error the agent reports. */
function agentHint(code: string): string | undefined {
  switch (code) {
    case 'SEAT_LIMIT':
      return 'every seat of this license is taken; deactivate another machine (aegisctl licenses show ID lists them) or raise max machines';
    case 'LICENSE_REVOKED':
      return 'this license was revoked; ask for a new key';
    case 'LICENSE_EXPIRED':
      return 'this license has expired; renew it or ask for a new key';
    case 'LICENSE_SUSPENDED':
      return 'this license is suspended; contact whoever issued it';
    case 'VERSION_MISMATCH':
      return 'this license does not cover this major version of aegis-agent';
    case 'HOST_KEY_MISMATCH':
      return 'this hardware is already bound under another host key; deactivate the old binding on the server first';
    case 'NOT_FOUND':
      return 'the server does not know this license key; check it for typos';
    case 'SERVER_UNREACHABLE':
      return "aegis-agent cannot reach aegis-server; check the agent's server URL and the network (journalctl -u aegis-agent)";
    case 'RATE_LIMITED':
      return 'too many attempts; retry in a minute';
    case 'NOT_ACTIVATED':
      return 'activate it first: aegisctl activate KEY';
    case 'FORBIDDEN_CALLER':
      return "reading the agent needs socket_group; changing it (policy, license, reload) needs root or the agent's admin_group: run with sudo, or ask for membership of admin_group (then log in again)";
    case 'CALLER_UNKNOWN':
      return 'aegis-agent cannot read the caller credentials of its socket (is its native addon built?); run this as root meanwhile, and see journalctl -u aegis-agent';
    case 'ALREADY_ACTIVATING':
      return 'an activation is already under way; check aegisctl license in a moment';
    default:
      return 'see journalctl -u aegis-agent';
  }
}

export class AgentClient {
  private readonly target: Target;

  constructor(
    private readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    this.target = { kind: 'socket', socketPath };
  }

  private readonly unreachable: FailureMapper = ({ errno, cause }) => {
      const what = describeErrno(errno, this.timeoutMs);
      if (errno === 'EACCES' || errno === 'EPERM') {
        return new UnreachableError('agent', `cannot talk to aegis-agent: ${what} on socket ${this.socketPath}`, {
          errno,
          cause,
          exitCode: ExitCode.UNAUTHORIZED,
          hint: "run as root or as a member of the socket's group",
        });
      }
      return new UnreachableError('agent', `cannot reach aegis-agent: ${what} ${this.socketPath}`, {
        errno,
        cause,
        hint: `is aegis-agent running? (socket ${this.socketPath}; systemctl status aegis-agent, or point --socket / AEGIS_SOCKET elsewhere)`,
      });
  };

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await sendRequest(this.target, { method, path, body, timeoutMs: this.timeoutMs }, this.unreachable);
    const v = readJson<T>('agent', 'aegis-agent', res, agentHint);
    if (v === null) throw new ProtocolError(`aegis-agent answered ${method} ${path} without a body`);
    return v;
  }

  status(): Promise<AgentStatus> {
    return this.call('GET', '/v1/status');
  }
  license(): Promise<AgentLicense> {
    return this.call('GET', '/v1/license');
  }
  hwid(): Promise<AgentHwid> {
    return this.call('GET', '/v1/hwid');
  }
  snapshots(): Promise<AgentSnapshots> {
    return this.call('GET', '/v1/snapshots');
  }
  flows(q: FlowsQuery): Promise<AgentFlows> {
    return this.call('GET', flowsPath(q, false));
  }
  /** The recent entries, then every new one, until the agent ends the stream. */
  async followFlows(q: FlowsQuery, onEntry: (e: AgentFlowEntry) => void): Promise<void> {
    let bad: unknown = null;
    const res = await streamLines(this.target, { method: 'GET', path: flowsPath(q, true), timeoutMs: this.timeoutMs }, this.unreachable, (line) => {
      if (bad !== null) return;
      try {
        onEntry(JSON.parse(line) as AgentFlowEntry);
      } catch (cause) {
        bad = cause;
      }
    });
    if (bad !== null) throw new ProtocolError('aegis-agent sent a flow log line that is not JSON', { cause: bad });
    if (res.status < 200 || res.status >= 300) readJson('agent', 'aegis-agent', res, agentHint);
  }
  token(): Promise<AgentToken> {
    return this.call('GET', '/v1/token');
  }
  activate(licenseKey: string): Promise<Activated> {
    return this.call('POST', '/v1/activate', { license_key: licenseKey });
  }
  deactivate(): Promise<{ deactivated: boolean; machine_id: string | null }> {
    return this.call('POST', '/v1/deactivate');
  }
  offlineRequest(licenseKey: string): Promise<OfflineSignedFile> {
    return this.call('POST', '/v1/offline/request', { license_key: licenseKey });
  }
  installLicense(file: unknown): Promise<Activated> {
    return this.call('POST', '/v1/offline/install', file);
  }
  offlineRelease(): Promise<OfflineSignedFile & { machine_id: string }> {
    return this.call('POST', '/v1/offline/release');
  }
  refresh(): Promise<{ state: string; reason?: string; kernel_token_expires_at: string | null; last_error: { code: string; message: string } | null }> {
    return this.call('POST', '/v1/refresh');
  }
  reload(): Promise<{ reloaded: boolean }> {
    return this.call('POST', '/v1/reload');
  }
}
