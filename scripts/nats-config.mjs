// Renders a nats-server config for Aegis: JetStream on, and an authorization block in which
// the aegis-server user alone publishes snapshots and license envelopes, and each agent
// user (one per machine id, the id aegis-server assigned at activation) reads only its own
// machine's subjects (plus _all and its fleet's license) and publishes only its own
// reports. nats-server's static config cannot template per machine, hence this script. With --operator it renders operator mode instead: no passwords, the permissions
// come from user JWTs that aegis-server signs (server/src/nats/credentials.ts) and the
// operator/account JWTs from the fragment aegis-server writes. --tls-* add a tls block.
// With --cluster and --node (three or more) it renders one config per node of a JetStream
// cluster: its own server_name, cluster block (listen, authenticated routes to the
// others) and store dir, and the same authorization (or operator include) on every node.
// See deploy/nats/README.md.
//
// Subjects, permission lists and the machine-id rule come from the compiled protocol
// (dist/protocol, `npm run build`): the same code that builds the permissions of the JWTs
// aegis-server signs, so static users and JWT users are allowed exactly the same.
import { parseArgs } from 'node:util';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PROTOCOL = new URL('../dist/protocol/src/index.js', import.meta.url);
let protocol;
try {
  protocol = await import(PROTOCOL.href);
} catch (err) {
  process.stderr.write(`nats-config: cannot load the compiled protocol ${fileURLToPath(PROTOCOL)} (${err.message}); run npm run build first\n`);
  process.exit(2);
}
const { ALL_HOSTS, SEG_MAPS_STREAM, agentNatsPermissions, isMachineId, isSubjectToken, serverNatsPermissions, subjects } = protocol;

const USAGE = `usage: scripts/nats-config --fleet NAME [options]        (static users and passwords)
       scripts/nats-config --operator FILE [options]     (operator mode: JWTs from aegis-server)

  --fleet NAME          fleet name (license subject ${subjects.license('NAME')})
  --server-pass PASS    password of the aegis-server user (or env AEGIS_NATS_SERVER_PASS)
  --server-user NAME    server user name (default aegis-server)
  --machine ID:PASS     an activated machine's id and its agent's password; repeatable
                        (user agent-ID)
  --machines-file FILE  more ID:PASS lines ('#' comments and blank lines ignored)
  --store-dir DIR       JetStream store (default /var/lib/aegis-nats)
  --listen ADDR         client listener (default 0.0.0.0:4222)
  --http ADDR           monitoring listener (default 127.0.0.1:8222; "off" for none)
  --auth-only           print only the authorization block (to include or append);
                        with --operator or --tls-*: only the tls block and the include
  --operator FILE       operator mode: include FILE, the fragment aegis-server writes
                        (operator JWT, system account, account JWTs with revocations);
                        relative to the config file's directory; no --fleet, passwords
                        or machines
  --tls-cert FILE       nats-server's certificate (PEM); with --tls-key turns TLS on,
                        required for every client
  --tls-key FILE        its private key (PEM, readable by nats-server only)
  --tls-ca FILE         CA bundle for client certificates (with --tls-verify)
  --tls-verify          require client certificates signed by --tls-ca
  -o, --output FILE     write to FILE (mode 0600) instead of stdout
  -h, --help

JetStream cluster (one config per node; the snapshot stream is then created with
AEGIS_NATS_STREAM_REPLICAS=3 on aegis-server):
  --cluster NAME        cluster name; needs --node at least three times
  --node SPEC           NAME@HOST[:CLIENT_PORT[:CLUSTER_PORT[:HTTP_PORT]]]; repeatable.
                        HOST is where the other nodes reach its cluster port; the
                        ports default to --listen's and --http's ports and 6222
  --cluster-user NAME   user of the routes between nodes (default aegis-route)
  --cluster-pass PASS   its password (or env AEGIS_NATS_CLUSTER_PASS); required
  --output-dir DIR      write DIR/NAME.conf per node (mode 0600)
  --only NAME           print (or -o) only node NAME's config
  Each node listens on --listen's and --http's host with its own ports and stores
  JetStream in STORE_DIR/NAME.

Passwords: at least 12 characters of A-Z a-z 0-9 . _ ~ + / = - (openssl rand -base64 24
gives one). They are written in plain text: keep the output mode 0600.
Machines: the machine id aegis-server assigned at activation (a lowercase UUID; aegisctl
status and GET /api/v1/licenses/ID/machines show it), not a hostname: agent subjects
are named by it.
Prefer --machines-file or the environment to command-line passwords (visible in ps).`;

const PASS_RE = /^[A-Za-z0-9._~+/=-]{12,256}$/;
const ADDR_RE = /^[A-Za-z0-9.:[\]-]+:\d{1,5}$/;
const NODE_RE = /^([A-Za-z0-9_-]{1,64})@([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\])((?::\d{1,5}){0,3})$/;

function fail(msg) {
  process.stderr.write(`nats-config: ${msg}\n(scripts/nats-config --help for usage)\n`);
  process.exit(2);
}

function checkPass(who, pass) {
  if (!PASS_RE.test(pass)) {
    fail(`password of ${who} must be at least 12 characters of A-Z a-z 0-9 . _ ~ + / = -`);
  }
  return pass;
}

function checkMachine(machine, where) {
  if (machine === ALL_HOSTS) fail(`"${ALL_HOSTS}" is reserved for snapshots addressed to every host, it names no machine (${where})`);
  if (!isMachineId(machine)) {
    fail(
      `${JSON.stringify(machine)} (${where}) is not a machine id: agent users are per machine, named by the lowercase UUID ` +
        `aegis-server assigned at activation (aegisctl status, GET /api/v1/licenses/ID/machines), not by hostname`,
    );
  }
  return machine;
}

function parseMachinePass(spec, where) {
  const i = spec.indexOf(':');
  if (i <= 0) fail(`expected MACHINE_ID:PASS, got ${JSON.stringify(spec.length > 40 ? spec.slice(0, 40) + '...' : spec)} (${where})`);
  const machine = checkMachine(spec.slice(0, i), where);
  return { machine, pass: checkPass(`machine ${machine}`, spec.slice(i + 1)) };
}

const q = (s) => JSON.stringify(s);
const list = (items, indent) => `[\n${items.map((s) => `${indent}  ${q(s)}`).join(',\n')}\n${indent}]`;

/** The authorization block: protocol's permission lists, one user per machine plus the server's. */
function renderAuthorization({ fleet, serverUser, serverPass, machines }) {
  const lines = ['authorization {', '  users = ['];
  const server = serverNatsPermissions();
  lines.push(
    `    # The control plane: the only publisher of snapshots and license envelopes, manages the stream.`,
    `    {`,
    `      user: ${q(serverUser)}`,
    `      password: ${q(serverPass)}`,
    `      permissions: {`,
    `        publish: { allow: ${list(server.pub.allow, '        ')} }`,
    `        subscribe: { allow: ${list(server.sub.allow, '        ')} }`,
    `      }`,
    `    }`,
  );
  for (const { machine, pass } of machines) {
    const agent = agentNatsPermissions(machine, fleet);
    lines.push(
      `    # Agent of machine ${machine}: reads its own and ${ALL_HOSTS} snapshots (live and last value by`,
      `    # Direct Get) and its fleet's license; writes only its own reports. Replies come to ${subjects.inboxOf(machine)}.`,
      `    {`,
      `      user: ${q(`agent-${machine}`)}`,
      `      password: ${q(pass)}`,
      `      permissions: {`,
      `        publish: { allow: ${list(agent.pub.allow, '        ')} }`,
      `        subscribe: { allow: ${list(agent.sub.allow, '        ')} }`,
      `      }`,
      `    }`,
    );
  }
  lines.push('  ]', '}');
  return lines.join('\n') + '\n';
}

/** The --tls-* options, checked; null when TLS is off. */
function tlsOptions(args) {
  const cert = args['tls-cert'];
  const key = args['tls-key'];
  const ca = args['tls-ca'];
  if (cert === undefined && key === undefined) {
    if (ca !== undefined || args['tls-verify']) fail('--tls-ca and --tls-verify need --tls-cert and --tls-key');
    return null;
  }
  if (cert === undefined || key === undefined) fail('--tls-cert and --tls-key go together');
  if (args['tls-verify'] && ca === undefined) fail('--tls-verify needs --tls-ca (the CA that signs client certificates)');
  for (const [name, v] of [['--tls-cert', cert], ['--tls-key', key], ['--tls-ca', ca]]) {
    if (v === undefined) continue;
    if (!v.startsWith('/') && !v.startsWith('.')) fail(`${name} must be a path (absolute, or starting with ./)`);
    if (/["\n]/.test(v)) fail(`${name} must not contain quotes or newlines`);
  }
  return { cert, key, ca, verify: args['tls-verify'] };
}

function renderTls({ cert, key, ca, verify }) {
  return [
    `# TLS on the client port: every client must use it (nats-server refuses plain connections).`,
    `tls {`,
    `  cert_file: ${q(cert)}`,
    `  key_file: ${q(key)}`,
    ca === undefined ? '' : `  ca_file: ${q(ca)}`,
    verify ? `  verify: true` : '',
    `  timeout: 2`,
    `}`,
  ]
    .filter((l) => l !== '')
    .join('\n');
}

function main() {
  let args;
  try {
    args = parseArgs({
      options: {
        fleet: { type: 'string' },
        'server-pass': { type: 'string' },
        'server-user': { type: 'string', default: 'aegis-server' },
        machine: { type: 'string', multiple: true, default: [] },
        'machines-file': { type: 'string' },
        // The per-host options of old: refused with a message, not as unknown options.
        host: { type: 'string', multiple: true, default: [] },
        'hosts-file': { type: 'string' },
        'store-dir': { type: 'string', default: '/var/lib/aegis-nats' },
        listen: { type: 'string', default: '0.0.0.0:4222' },
        http: { type: 'string', default: '127.0.0.1:8222' },
        'auth-only': { type: 'boolean', default: false },
        operator: { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-ca': { type: 'string' },
        'tls-verify': { type: 'boolean', default: false },
        cluster: { type: 'string' },
        node: { type: 'string', multiple: true, default: [] },
        'cluster-user': { type: 'string', default: 'aegis-route' },
        'cluster-pass': { type: 'string' },
        'output-dir': { type: 'string' },
        only: { type: 'string' },
        output: { type: 'string', short: 'o' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      allowPositionals: false,
    }).values;
  } catch (err) {
    fail(err.message);
  }
  if (args.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (args.host.length > 0 || args['hosts-file'] !== undefined) {
    fail('--host and --hosts-file are gone: agent users are per machine now (--machine MACHINE_ID:PASS, --machines-file), named by the machine id aegis-server assigns at activation');
  }
  const operator = args.operator;
  if (operator !== undefined) {
    // nats-server resolves an include relative to the including file's directory, even a
    // path that starts with "/", so only a relative path means what it says.
    if (!/^[A-Za-z0-9_][A-Za-z0-9._/-]*$/.test(operator) || operator.split('/').includes('..')) {
      fail(`--operator must be a path relative to the config file's directory (nats-server resolves includes there), e.g. aegis-operator.conf; got ${JSON.stringify(operator)}`);
    }
    for (const o of ['fleet', 'server-pass', 'machines-file']) {
      if (args[o] !== undefined && args[o] !== false) fail(`--${o} does not apply to --operator (users come from JWTs aegis-server issues)`);
    }
    if (args.machine.length > 0) fail('--machine does not apply to --operator (users come from JWTs aegis-server issues)');
  }
  const tls = tlsOptions(args);

  let machines = [];
  let fleet = '';
  let serverUser = '';
  let serverPass = '';
  if (operator === undefined) {
    if (!args.fleet) fail('--fleet is required');
    fleet = args.fleet;
    if (!isSubjectToken(fleet)) fail(`fleet ${JSON.stringify(fleet)} may only contain A-Z a-z 0-9 _ - (1-128 characters)`);
    serverUser = args['server-user'];
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(serverUser)) fail('--server-user may only contain A-Z a-z 0-9 _ -');
    if (serverUser.startsWith('agent-')) fail('--server-user must not start with "agent-" (reserved for agent users)');
    serverPass = checkPass('the server user', args['server-pass'] ?? process.env.AEGIS_NATS_SERVER_PASS ?? fail('--server-pass or AEGIS_NATS_SERVER_PASS is required'));

    machines = args.machine.map((m, i) => parseMachinePass(m, `--machine #${i + 1}`));
    if (args['machines-file']) {
      let text;
      try {
        text = readFileSync(args['machines-file'], 'utf8');
      } catch (err) {
        fail(`cannot read --machines-file ${args['machines-file']}: ${err.code ?? err.message}`);
      }
      text.split('\n').forEach((line, n) => {
        const t = line.trim();
        if (t === '' || t.startsWith('#')) return;
        machines.push(parseMachinePass(t, `${args['machines-file']}:${n + 1}`));
      });
    }
    const seen = new Set();
    for (const { machine } of machines) {
      if (seen.has(machine)) fail(`machine ${machine} is listed twice`);
      seen.add(machine);
    }
  }

  const cluster = clusterOptions(args);
  if (!args['auth-only']) {
    if (!ADDR_RE.test(args.listen)) fail(`--listen must be HOST:PORT, got ${JSON.stringify(args.listen)}`);
    if (args.http !== 'off' && !ADDR_RE.test(args.http)) fail(`--http must be HOST:PORT or "off", got ${JSON.stringify(args.http)}`);
    if (!args['store-dir'].startsWith('/') && !args['store-dir'].startsWith('.')) fail('--store-dir must be a path');
  }
  const tail = (tls ? renderTls(tls) + '\n\n' : '') + (operator === undefined ? renderAuthorization({ fleet, serverUser, serverPass, machines }) : `include ${q(operator)}\n`);
  const render = (node) => (args['auth-only'] ? '' : renderHead({ args, operator, fleet, machines, node, cluster })) + tail;

  const what = operator === undefined ? `server user ${serverUser}, ${machines.length} agent user(s), fleet ${fleet}` : `operator mode, including ${operator}`;
  if (cluster === null) {
    emit(args.output, render(null), `${what}${tls ? ', TLS' : ''}`);
    return;
  }
  const nodes = args.only === undefined ? cluster.nodes : cluster.nodes.filter((n) => n.name === args.only);
  if (nodes.length === 0) fail(`--only ${JSON.stringify(args.only)} names no --node (${cluster.nodes.map((n) => n.name).join(', ')})`);
  if (args['output-dir'] !== undefined) {
    if (args.output !== undefined) fail('--output and --output-dir do not go together');
    for (const node of nodes) emit(join(args['output-dir'], `${node.name}.conf`), render(node), `node ${node.name} of cluster ${cluster.name}, ${what}${tls ? ', TLS' : ''}`);
    return;
  }
  if (nodes.length > 1) fail('a cluster renders one config per node: give --output-dir DIR, or --only NAME for one node');
  emit(args.output, render(nodes[0]), `node ${nodes[0].name} of cluster ${cluster.name}, ${what}${tls ? ', TLS' : ''}`);
}

function emit(file, text, what) {
  if (file === undefined) {
    process.stdout.write(text);
    return;
  }
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600);
  process.stderr.write(`nats-config: wrote ${file} (${what})\n`);
}

/** --cluster, --node and the route credentials, checked; null when no cluster is asked for. */
function clusterOptions(args) {
  const given = args.node.length > 0 || args['output-dir'] !== undefined || args.only !== undefined || args['cluster-pass'] !== undefined;
  if (args.cluster === undefined) {
    if (given) fail('--node, --cluster-pass, --output-dir and --only need --cluster NAME');
    return null;
  }
  if (args['auth-only']) fail('--auth-only does not apply to --cluster (the authorization block is the same on every node)');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(args.cluster)) fail('--cluster may only contain A-Z a-z 0-9 _ - (1-64 characters)');
  if (args.node.length < 3) fail(`a JetStream cluster needs at least three nodes (--node given ${args.node.length} time(s)): with two, losing one loses the quorum`);
  const listenPort = Number(/:(\d+)$/.exec(args.listen)?.[1] ?? 4222);
  const httpPort = args.http === 'off' ? null : Number(/:(\d+)$/.exec(args.http)?.[1] ?? 8222);
  const port = (text, fallback, what, spec) => {
    if (text === undefined || text === '') return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n > 65535) fail(`${what} port ${JSON.stringify(text)} of --node ${spec} is not a port`);
    return n;
  };
  const nodes = args.node.map((spec) => {
    const m = NODE_RE.exec(spec);
    if (!m) fail(`--node must be NAME@HOST[:CLIENT_PORT[:CLUSTER_PORT[:HTTP_PORT]]] (NAME of A-Z a-z 0-9 _ -), got ${JSON.stringify(spec)}`);
    const [, name, host, ports] = m;
    const [client, clusterPort, http] = ports.split(':').slice(1);
    return { name, host, port: port(client, listenPort, 'client', spec), clusterPort: port(clusterPort, 6222, 'cluster', spec), httpPort: httpPort === null ? null : port(http, httpPort, 'monitoring', spec) };
  });
  const seen = new Set();
  for (const n of nodes) {
    if (seen.has(n.name)) fail(`node ${n.name} is listed twice`);
    seen.add(n.name);
    const endpoint = `${n.host}:${n.clusterPort}`;
    if (seen.has(endpoint)) fail(`two nodes share the cluster address ${endpoint}`);
    seen.add(endpoint);
  }
  const user = args['cluster-user'];
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(user)) fail('--cluster-user may only contain A-Z a-z 0-9 _ -');
  const pass = checkPass('the cluster routes', args['cluster-pass'] ?? process.env.AEGIS_NATS_CLUSTER_PASS ?? fail('--cluster-pass or AEGIS_NATS_CLUSTER_PASS is required: an unauthenticated cluster port lets anyone join as a node and read every message'));
  return { name: args.cluster, nodes, user, pass };
}

/** Everything above the tls and authorization blocks: identity, listeners, JetStream, cluster. */
function renderHead({ args, operator, fleet, machines, node, cluster }) {
  const bind = (addr, p) => `${addr.replace(/:\d+$/, '')}:${p}`;
  const listen = node ? bind(args.listen, node.port) : args.listen;
  const http = args.http === 'off' ? null : node ? bind(args.http, node.httpPort) : args.http;
  const storeDir = node ? `${args['store-dir'].replace(/\/+$/, '')}/${node.name}` : args['store-dir'];
  const lines = [
    operator === undefined
      ? `# Aegis nats-server config, rendered by scripts/nats-config (fleet ${fleet}, ${machines.length} machine(s)).`
      : `# Aegis nats-server config in operator mode, rendered by scripts/nats-config.`,
    operator === undefined
      ? `# Re-render and reload (nats-server --signal reload) when machines change. Contains passwords: mode 0600.`
      : `# Users are JWTs signed by aegis-server; ${operator} next to this file (written by aegis-server)\n# holds the operator and account JWTs. Reload (nats-server --signal reload) after it changes.`,
    node ? `# Node ${node.name} of the ${cluster.nodes.length}-node JetStream cluster ${cluster.name}: render every node with the same options.` : null,
    `server_name: ${node ? q(node.name) : '"aegis-nats"'}`,
    `listen: ${q(listen)}`,
    http === null ? '' : `http: ${q(http)}`,
    `max_payload: 1MB`,
    ``,
    node
      ? `# Snapshots live in the ${SEG_MAPS_STREAM} stream (last value per subject), created by aegis-server\n# with AEGIS_NATS_STREAM_REPLICAS replicas (3 here: a node may die without losing an acked snapshot).`
      : `# Snapshots live in the ${SEG_MAPS_STREAM} stream (last value per subject), created by aegis-server.`,
    `jetstream {`,
    `  store_dir: ${q(storeDir)}`,
    `}`,
    ``,
  ];
  if (node) {
    const routes = cluster.nodes.filter((n) => n !== node).map((n) => `nats-route://${encodeURIComponent(cluster.user)}:${encodeURIComponent(cluster.pass)}@${n.host}:${n.clusterPort}`);
    lines.push(
      `# Routes between the nodes, authenticated (the password is the same on every node).`,
      `cluster {`,
      `  name: ${q(cluster.name)}`,
      `  listen: ${q(bind(args.listen, node.clusterPort))}`,
      `  authorization {`,
      `    user: ${q(cluster.user)}`,
      `    password: ${q(cluster.pass)}`,
      `  }`,
      `  routes: ${list(routes, '  ')}`,
      `}`,
      ``,
    );
  }
  return lines
    .filter((l) => l !== null)
    .filter((l, i, a) => !(l === '' && a[i - 1] === ''))
    .join('\n');
}

main();
