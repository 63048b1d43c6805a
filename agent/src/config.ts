/**
 * aegis-agent configuration: defaults < /etc/aegis/agent.json (or --config/AEGIS_CONFIG)
 * < AEGIS_* environment < command-line flags. Validated once at start; every bad field
 * gets its own line in the error.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { Ajv } from 'ajv';
import { FLEET_NAME_PATTERN, IDENTIFIER_CHARS, SUBJECT_TOKEN_MAX_LENGTH, parseFleetKey } from '../../protocol/src/index.js';
import { ConfigError } from './errors.js';

export interface AgentConfig {
  /** aegis-server's URL, or several replicas' as a comma list (tried in turn on no answer or 5xx). */
  server_url: string;
  /** Several replicas' URLs; when not empty, used instead of server_url. */
  server_urls: string[];
  /** The server's mTLS agent listener (https://…), or several replicas' as a comma list; empty: agent calls go to server_url with host proofs. */
  agent_server_url: string;
  /** Several replicas' agent listeners; when not empty, used instead of agent_server_url. */
  agent_server_urls: string[];
  /** A CA certificate file to pin for agent_server_url; empty: the CA the server sent at activation. */
  ca_cert_path: string;
  nats_url: string;
  fleet: string;
  /** service_id → cgroup path (absolute, or relative to the cgroup v2 mount). */
  services: Record<string, string>;
  token_path: string;
  state_dir: string;
  socket_path: string;
  /** Group given access to the control socket (mode 0660); empty: root's group. */
  socket_group: string;
  /** Group whose members may change the agent through the socket (policy, license, reload); empty: root only. */
  admin_group: string;
  expiry_behaviour: 'fail-open' | 'fail-closed';
  log_level: 'error' | 'warn' | 'info' | 'debug';
  log_format: 'json' | 'text';
  pin_root: string;
  hostname: string;
  /** Where the kernel module takes its reload trigger. */
  kmod_reload_path: string;
  /** The kernel module's hwid parameter in sysfs: read back to check the module is bound to this machine. */
  kmod_hwid_path: string;
  /** NATS credentials of this host (empty: none); a .creds file wins over user/password. */
  nats_user: string;
  nats_password: string;
  nats_creds_file: string;
  /** CA that signed nats-server's certificate (TLS to NATS). */
  nats_tls_ca: string;
  /** The fleet key that opens sealed fleet licenses, 32 bytes base64 (AEGIS_FLEET_KEY), or a 0600 file holding it. */
  fleet_key: string;
  fleet_key_file: string;
  /** Where the fleet license envelope is kept (env LICENSE_KEY_PATH); empty: <state>/license.key. */
  license_key_path: string;
  status_interval_seconds: number;
  fallback_interval_seconds: number;
  /** Recent flow verdicts kept in memory for `aegisctl flows` (GET /v1/flows). */
  flow_log_entries: number;
  /** Let server_url be plain http:// to a host that is not loopback (a network attacker can then read and change everything). */
  allow_insecure_http: boolean;
  /** RFC 7638 thumbprints of the server signing keys this host trusts; empty (and no trusted_jwks_path): trust on first use. */
  trusted_keys: string[];
  /** A JWKS file installed with the agent whose keys are trusted like trusted_keys. */
  trusted_jwks_path: string;
  /** dpkg's status file, read for the package inventory at start and whenever it changes; empty: no inventory. */
  dpkg_status_path: string;
  /** dpkg's per-package file lists (`<package>.list`): which package owns a listening socket's executable. */
  dpkg_info_dir: string;
  /** Where the Debian release codename is read (VERSION_CODENAME). */
  os_release_path: string;
  /** Seconds between inventory checks (status file mtime and listening sockets); a change to the file is seen at once. */
  inventory_interval_seconds: number;
  /** host:port of a TCP listener serving GET /metrics without authentication; empty: metrics only on the control socket. */
  metrics_listen: string;
  /** Let metrics_listen be an address that is not loopback (anything that reaches it reads the metrics). */
  metrics_allow_remote: boolean;
}

export const DEFAULT_CONFIG_PATH = '/etc/aegis/agent.json';

export function defaults(): AgentConfig {
  return {
    server_url: 'http://127.0.0.1:8000',
    server_urls: [],
    agent_server_url: '',
    agent_server_urls: [],
    ca_cert_path: '',
    nats_url: 'nats://127.0.0.1:4222',
    fleet: 'default',
    services: {},
    token_path: '/etc/aegis/auth.token',
    state_dir: '/var/lib/aegis',
    socket_path: '/run/aegis/agent.sock',
    socket_group: '',
    admin_group: '',
    expiry_behaviour: 'fail-open',
    log_level: 'info',
    log_format: 'json',
    pin_root: '/sys/fs/bpf/aegis',
    hostname: hostname(),
    kmod_reload_path: '/sys/kernel/aegis/reload',
    kmod_hwid_path: '/sys/module/aegis/parameters/hwid',
    nats_user: '',
    nats_password: '',
    nats_creds_file: '',
    nats_tls_ca: '',
    fleet_key: '',
    fleet_key_file: '',
    license_key_path: '',
    status_interval_seconds: 30,
    fallback_interval_seconds: 30,
    flow_log_entries: 4096,
    allow_insecure_http: false,
    trusted_keys: [],
    trusted_jwks_path: '',
    dpkg_status_path: '/var/lib/dpkg/status',
    dpkg_info_dir: '/var/lib/dpkg/info',
    os_release_path: '/etc/os-release',
    inventory_interval_seconds: 60,
    metrics_listen: '',
    metrics_allow_remote: false,
  };
}

const SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    server_url: { type: 'string', pattern: '^https?://[^\\s,]+(,https?://[^\\s,]+)*$' },
    server_urls: { type: 'array', maxItems: 16, uniqueItems: true, items: { type: 'string', pattern: '^https?://[^\\s,]+$' } },
    agent_server_url: { type: 'string', pattern: '^(https://[^\\s,]+(,https://[^\\s,]+)*)?$' },
    agent_server_urls: { type: 'array', maxItems: 16, uniqueItems: true, items: { type: 'string', pattern: '^https://[^\\s,]+$' } },
    ca_cert_path: { type: 'string', pattern: '^(/.*)?$' },
    nats_url: { type: 'string', pattern: '^((nats|tls)://[^\\s,]+(,(nats|tls)://[^\\s,]+)*)?$' },
    fleet: { type: 'string', pattern: FLEET_NAME_PATTERN.source },
    services: {
      type: 'object',
      propertyNames: { pattern: '^(0|[1-9][0-9]{0,8})$' },
      additionalProperties: { type: 'string', minLength: 1, maxLength: 4096 },
    },
    token_path: { type: 'string', pattern: '^/' },
    state_dir: { type: 'string', pattern: '^/' },
    socket_path: { type: 'string', pattern: '^/', maxLength: 107 },
    socket_group: { type: 'string', maxLength: 64 },
    admin_group: { type: 'string', maxLength: 64 },
    expiry_behaviour: { enum: ['fail-open', 'fail-closed'] },
    log_level: { enum: ['error', 'warn', 'info', 'debug'] },
    log_format: { enum: ['json', 'text'] },
    pin_root: { type: 'string', pattern: '^/' },
    hostname: { type: 'string', pattern: `^[A-Za-z0-9]${IDENTIFIER_CHARS}{0,${SUBJECT_TOKEN_MAX_LENGTH - 1}}$` },
    kmod_reload_path: { type: 'string', pattern: '^/' },
    kmod_hwid_path: { type: 'string', pattern: '^/' },
    nats_user: { type: 'string', maxLength: 256 },
    nats_password: { type: 'string', maxLength: 1024 },
    nats_creds_file: { type: 'string', pattern: '^(/.*)?$' },
    nats_tls_ca: { type: 'string', pattern: '^(/.*)?$' },
    fleet_key: { type: 'string', maxLength: 128 },
    fleet_key_file: { type: 'string', pattern: '^(/.*)?$' },
    license_key_path: { type: 'string', pattern: '^(/.*)?$' },
    status_interval_seconds: { type: 'integer', minimum: 1, maximum: 3600 },
    fallback_interval_seconds: { type: 'integer', minimum: 1, maximum: 3600 },
    flow_log_entries: { type: 'integer', minimum: 16, maximum: 1048576 },
    allow_insecure_http: { type: 'boolean' },
    trusted_keys: { type: 'array', maxItems: 64, items: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' } },
    trusted_jwks_path: { type: 'string', pattern: '^(/.*)?$' },
    dpkg_status_path: { type: 'string', pattern: '^(/.*)?$' },
    dpkg_info_dir: { type: 'string', pattern: '^/' },
    os_release_path: { type: 'string', pattern: '^/' },
    inventory_interval_seconds: { type: 'integer', minimum: 1, maximum: 86400 },
    metrics_listen: { type: 'string', maxLength: 64, pattern: '^((\\[[0-9a-fA-F:.]+\\]|[^:\\s\\[\\]]+):[0-9]{1,5})?$' },
    metrics_allow_remote: { type: 'boolean' },
  },
} as const;

const validate = new Ajv({ allErrors: true, strict: false }).compile(SCHEMA);

/** Environment variables and the keys they set. */
const ENV_KEYS: Record<string, keyof AgentConfig> = {
  AEGIS_SERVER_URL: 'server_url',
  AEGIS_AGENT_SERVER_URL: 'agent_server_url',
  AEGIS_CA_CERT_PATH: 'ca_cert_path',
  AEGIS_NATS_URL: 'nats_url',
  NATS_URL: 'nats_url',
  AEGIS_FLEET: 'fleet',
  AEGIS_TOKEN_PATH: 'token_path',
  AEGIS_STATE_DIR: 'state_dir',
  AEGIS_SOCKET: 'socket_path',
  AEGIS_SOCKET_GROUP: 'socket_group',
  AEGIS_ADMIN_GROUP: 'admin_group',
  AEGIS_EXPIRY_BEHAVIOUR: 'expiry_behaviour',
  AEGIS_LOG_LEVEL: 'log_level',
  AEGIS_LOG_FORMAT: 'log_format',
  AEGIS_PIN_ROOT: 'pin_root',
  AEGIS_HOSTNAME: 'hostname',
  AEGIS_KMOD_RELOAD_PATH: 'kmod_reload_path',
  AEGIS_KMOD_HWID_PATH: 'kmod_hwid_path',
  AEGIS_NATS_USER: 'nats_user',
  AEGIS_NATS_PASSWORD: 'nats_password',
  AEGIS_NATS_CREDS: 'nats_creds_file',
  AEGIS_NATS_CA: 'nats_tls_ca',
  AEGIS_FLEET_KEY: 'fleet_key',
  AEGIS_FLEET_KEY_FILE: 'fleet_key_file',
  LICENSE_KEY_PATH: 'license_key_path',
  AEGIS_TRUSTED_JWKS_PATH: 'trusted_jwks_path',
  AEGIS_DPKG_STATUS_PATH: 'dpkg_status_path',
  AEGIS_METRICS_LISTEN: 'metrics_listen',
};

/** Settings given as numbers in the environment. */
const NUMERIC_ENV: Record<string, keyof AgentConfig> = {
  AEGIS_STATUS_INTERVAL: 'status_interval_seconds',
  AEGIS_INVENTORY_INTERVAL: 'inventory_interval_seconds',
  AEGIS_FALLBACK_INTERVAL: 'fallback_interval_seconds',
  AEGIS_FLOW_LOG_ENTRIES: 'flow_log_entries',
};

/** `101=/sys/fs/cgroup/web,102=db.slice` or a JSON object. */
export function parseServices(text: string): Record<string, string> {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) return JSON.parse(trimmed) as Record<string, string>;
  const out: Record<string, string> = {};
  for (const part of trimmed.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new ConfigError([`AEGIS_SERVICES: "${part}" is not service_id=cgroup_path`]);
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

export interface ConfigSources {
  /** Explicit config file (flag or AEGIS_CONFIG): must exist. */
  configPath?: string;
  env?: NodeJS.ProcessEnv;
  flags?: Partial<AgentConfig>;
}

export interface LoadedConfig {
  config: AgentConfig;
  /** The file that was read, if any. */
  file: string | null;
}

export function loadConfig(src: ConfigSources = {}): LoadedConfig {
  const env = src.env ?? process.env;
  const problems: string[] = [];
  const explicit = src.configPath ?? env.AEGIS_CONFIG;
  const path = explicit ?? DEFAULT_CONFIG_PATH;
  let fromFile: Record<string, unknown> = {};
  let file: string | null = null;
  if (existsSync(path)) {
    file = path;
    try {
      const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) problems.push(`${path}: must hold a JSON object`);
      else fromFile = parsed as Record<string, unknown>;
    } catch (e) {
      problems.push(`${path}: not valid JSON (${(e as Error).message})`);
    }
  } else if (explicit !== undefined) {
    problems.push(`config file ${explicit} does not exist`);
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV_KEYS)) {
    const v = env[name];
    if (v !== undefined && v !== '') fromEnv[key] = v;
  }
  for (const [name, key] of Object.entries(NUMERIC_ENV)) {
    const v = env[name];
    if (v !== undefined && v !== '') fromEnv[key] = /^\d+$/.test(v) ? Number(v) : v;
  }
  const remote = env.AEGIS_METRICS_ALLOW_REMOTE;
  if (remote !== undefined && remote !== '') {
    if (/^(1|true|yes)$/i.test(remote)) fromEnv.metrics_allow_remote = true;
    else if (/^(0|false|no)$/i.test(remote)) fromEnv.metrics_allow_remote = false;
    else problems.push(`AEGIS_METRICS_ALLOW_REMOTE: must be true or false, got ${JSON.stringify(remote)}`);
  }
  const insecure = env.AEGIS_ALLOW_INSECURE_HTTP;
  if (insecure !== undefined && insecure !== '') {
    if (/^(1|true|yes)$/i.test(insecure)) fromEnv.allow_insecure_http = true;
    else if (/^(0|false|no)$/i.test(insecure)) fromEnv.allow_insecure_http = false;
    else problems.push(`AEGIS_ALLOW_INSECURE_HTTP: must be true or false, got ${JSON.stringify(insecure)}`);
  }
  if (env.AEGIS_TRUSTED_KEYS) {
    fromEnv.trusted_keys = env.AEGIS_TRUSTED_KEYS.split(',').map((k) => k.trim()).filter(Boolean);
  }
  if (env.AEGIS_SERVICES) {
    try {
      fromEnv.services = parseServices(env.AEGIS_SERVICES);
    } catch (e) {
      problems.push(e instanceof ConfigError ? e.problems.join('; ') : `AEGIS_SERVICES: ${(e as Error).message}`);
    }
  }
  const merged: Record<string, unknown> = { ...defaults(), ...fromFile, ...fromEnv, ...(src.flags ?? {}) };
  if (!validate(merged)) {
    for (const e of validate.errors ?? []) {
      const field = e.instancePath.replace(/^\//, '').replace(/\//g, '.') || '(root)';
      if (e.keyword === 'additionalProperties') {
        problems.push(`${(e.params as { additionalProperty: string }).additionalProperty}: unknown setting`);
      } else if (e.keyword === 'propertyNames') {
        problems.push(`services: key ${JSON.stringify((e.params as { propertyName: string }).propertyName)} is not a service id (0..999999999)`);
      } else if (e.keyword === 'enum') {
        problems.push(`${field}: must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`);
      } else if (e.keyword !== 'if') {
        problems.push(`${field}: ${e.message ?? 'is invalid'}`);
      }
    }
  }
  if (problems.length === 0) {
    const c = merged as unknown as AgentConfig;
    for (const url of serverUrlsOf(c)) {
      const why = insecureServerUrl(url);
      if (!why || c.allow_insecure_http) continue;
      problems.push(
        `server_url: ${url} is plain http:// to ${why}: anyone on the network path can read and change what the server says (keys, licenses, policy). ` +
          'Use an https:// URL, or set allow_insecure_http: true (AEGIS_ALLOW_INSECURE_HTTP=true) if you accept that risk',
      );
    }
  }
  if (problems.length === 0) {
    const c = merged as unknown as AgentConfig;
    const where = metricsAddress(c.metrics_listen);
    if (c.metrics_listen && where === null) problems.push(`metrics_listen: ${JSON.stringify(c.metrics_listen)} is not host:port with a port up to 65535 (e.g. 127.0.0.1:9465; port 0 picks a free one, logged at start)`);
    else if (where && !isLoopbackHost(where.host) && !c.metrics_allow_remote) {
      problems.push(
        `metrics_listen: ${c.metrics_listen} is not a loopback address and the metrics listener has no authentication; bind 127.0.0.1, or set metrics_allow_remote: true (AEGIS_METRICS_ALLOW_REMOTE=true) for a private network only Prometheus reaches`,
      );
    }
  }
  if (problems.length > 0) throw new ConfigError([...new Set(problems)]);
  return { config: merged as unknown as AgentConfig, file };
}

/** metrics_listen as host and port (IPv6 without brackets); null when empty or malformed. */
export function metricsAddress(listen: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[3]) > 65535) return null;
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

/** Loopback hosts: a plain http:// server there never crosses a network. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** The server URLs in the order they are tried: server_urls when given, else server_url's comma list. */
export function serverUrlsOf(c: Pick<AgentConfig, 'server_url' | 'server_urls'>): string[] {
  return c.server_urls && c.server_urls.length > 0 ? [...c.server_urls] : c.server_url.split(',').filter((u) => u !== '');
}

/**
 * The agent listener URLs in the order they are tried: agent_server_urls when given, else
 * agent_server_url's comma list; empty: no mTLS. Only https:// passes the schema.
 */
export function agentServerUrlsOf(c: Pick<AgentConfig, 'agent_server_url' | 'agent_server_urls'>): string[] {
  return c.agent_server_urls && c.agent_server_urls.length > 0 ? [...c.agent_server_urls] : c.agent_server_url.split(',').filter((u) => u !== '');
}

/** Why `url` is plain http across a network ("host 10.0.0.1 (not loopback)"), or null when it is https or loopback. */
export function insecureServerUrl(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null; // the schema pattern reports a malformed URL
  }
  if (u.protocol !== 'http:' || isLoopbackHost(u.hostname)) return null;
  return `host ${u.hostname} (not loopback)`;
}

/** The fleet key from fleet_key or fleet_key_file (which must be 0600), or null when none is set. */
export function fleetKeyOf(c: AgentConfig): Buffer | null {
  let text = c.fleet_key;
  if (!text && c.fleet_key_file) {
    let st;
    try {
      st = statSync(c.fleet_key_file);
    } catch {
      throw new ConfigError([`fleet_key_file: ${c.fleet_key_file} does not exist`]);
    }
    if ((st.mode & 0o077) !== 0) throw new ConfigError([`fleet_key_file: ${c.fleet_key_file} must not be readable by group or others (chmod 600)`]);
    text = readFileSync(c.fleet_key_file, 'utf8');
  }
  if (!text) return null;
  try {
    return parseFleetKey(text);
  } catch (e) {
    throw new ConfigError([`fleet_key: ${(e as Error).message}`]);
  }
}

/** Resolves a configured cgroup path against the cgroup v2 mount. */
export function resolveCgroupPath(path: string, cgroupMount: string): string {
  return isAbsolute(path) ? path : join(cgroupMount, path);
}
