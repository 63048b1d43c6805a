/**
 * One permission model, two deployments: the permission lists of protocol's
 * nats_permissions.ts are exactly what NatsAuthority signs into user JWTs (operator mode)
 * and exactly what scripts/nats-config renders for static users (password mode).
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode, type User } from '@nats-io/jwt';
import { agentNatsPermissions, serverNatsPermissions, type NatsPermissions } from '../protocol/src/index.js';
import { NatsAuthority } from '../server/src/nats/credentials.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Machine ids: what agent users and their permissions are named by. */
const MACHINES = [randomUUID(), randomUUID(), randomUUID()];
const FLEET = 'fleet-7';

/** The user JWT's permissions of a .creds file. */
function jwtPermissions(creds: string): NatsPermissions {
  const jwt = creds.split('\n')[1] ?? '';
  const claims = decode<User>(jwt);
  // The whole pub/sub objects, so an extra deny list or field would show up as a difference.
  return { pub: claims.nats.pub, sub: claims.nats.sub } as NatsPermissions;
}

/** The publish/subscribe allow lists of one user in a rendered authorization block. */
function renderedPermissions(conf: string, user: string): NatsPermissions {
  const start = conf.indexOf(`user: ${JSON.stringify(user)}`);
  if (start < 0) throw new Error(`no user ${user} in the rendered config`);
  const block = conf.slice(start, conf.indexOf('\n    }', start));
  const list = (kind: string): string[] => {
    const m = new RegExp(`${kind}: \\{ allow: (\\[[^\\]]*\\]) \\}`).exec(block);
    if (!m) throw new Error(`no ${kind} list for ${user}`);
    return JSON.parse(m[1] as string) as string[];
  };
  return { pub: { allow: list('publish') }, sub: { allow: list('subscribe') } };
}

t.test('NatsAuthority signs protocol permissions into the user JWTs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-nats-perms-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const authority = await NatsAuthority.open({ dir: join(dir, 'nats') });
  for (const machineId of MACHINES) {
    const issued = await authority.issueAgentCredentials({ machineId, fleet: FLEET, hostname: 'web-1' });
    t.same(jwtPermissions(issued.creds), agentNatsPermissions(machineId, FLEET), `agent ${machineId}`);
  }
  t.same(jwtPermissions((await authority.issueServerCredentials()).creds), serverNatsPermissions(), 'aegis-server');
});

t.test('scripts/nats-config renders protocol permissions for static users', async (t) => {
  const env: NodeJS.ProcessEnv = { ...process.env, AEGIS_NATS_SERVER_PASS: 'server-password-0001' };
  delete env.NODE_OPTIONS;
  const args = ['--fleet', FLEET, '--auth-only', ...MACHINES.flatMap((m) => ['--machine', `${m}:${m.slice(0, 8)}-password-01`])];
  const r = spawnSync('bash', [join(ROOT, 'scripts/nats-config'), ...args], { encoding: 'utf8', env });
  t.equal(r.status, 0, r.stderr);
  for (const machine of MACHINES) {
    t.same(renderedPermissions(r.stdout, `agent-${machine}`), agentNatsPermissions(machine, FLEET), `agent ${machine}`);
  }
  t.same(renderedPermissions(r.stdout, 'aegis-server'), serverNatsPermissions(), 'aegis-server');
});
