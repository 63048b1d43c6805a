/**
 * Attack: make the agent trust a key it was never told to trust. A man in the middle on
 * plain http (here a node:http proxy in front of the real aegis-server) adds its own key
 * to the activation answer and to /.well-known/jwks.json, serves a forged signed key set,
 * and pushes a snapshot message signed by its key. With the real server key pinned, the
 * agent refuses the forged key everywhere and applies nothing it signed; a genuine key
 * rotation still reaches it through /.well-known/jwks.signed. Plain http:// to a host that
 * is not loopback is refused at start unless the operator allows it. Run once per storage
 * backend (agent_trust_sqlite.test.ts, agent_trust_postgres.test.ts).
 */
import type { Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { CompactSign, decodeProtectedHeader } from 'jose';
import { AUD_SEG_MAP, JWKS_SIGNATURE_TYP, canonicalJson, jwkThumbprint, publicJwkOf } from '../../protocol/src/index.js';
import { startTestServer, type TestServer } from '../harness/server.js';
import { startAgent, agentDir, cleanupDir, type TestAgent } from '../harness/agent.js';
import { aegisctl } from '../harness/ctl.js';
import { Middlebox, eventually, type OwnAnswer, type UpstreamAnswer } from '../harness/middlebox.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const MITM_KID = 'mitm-1';
const SERVICE = 101;

async function sign(payload: unknown, key: KeyObject, kid: string, typ?: string): Promise<string> {
  return new CompactSign(new TextEncoder().encode(typeof payload === 'string' ? payload : JSON.stringify(payload)))
    .setProtectedHeader({ alg: 'EdDSA', kid, ...(typ ? { typ } : {}) })
    .sign(key);
}

function segMessage(machineId: string, revision: number): Record<string, unknown> {
  const iat = Math.floor(Date.now() / 1000);
  return {
    aud: AUD_SEG_MAP,
    iss: 'aegis-server',
    iat,
    exp: iat + 600,
    target: machineId,
    service_id: SERVICE,
    revision,
    stage: 'canary',
    snapshot: { version: 1, service_id: SERVICE, edges: [{ dst_cidr: '10.0.0.0/8', proto: 'any', port: 0 }], ttl_seconds: 600 },
  };
}

/** The man in the middle: forwards to aegis-server, rewriting what names keys when `inject` is on. */
class Mitm {
  inject = true;
  /** Signed messages served as the host's snapshots (null: forward the server's). */
  snapshots: string[] | null = null;
  readonly privateKey: KeyObject;
  readonly jwk: Record<string, unknown>;
  private box!: Middlebox;

  private constructor() {
    this.privateKey = generateKeyPairSync('ed25519').privateKey;
    this.jwk = { ...publicJwkOf(this.privateKey), kid: MITM_KID, alg: 'EdDSA', use: 'sig' };
  }

  static async start(upstream: string): Promise<Mitm> {
    const m = new Mitm();
    m.box = await Middlebox.start(upstream, { answer: (req) => m.answer(req), rewrite: (res) => m.rewrite(res) });
    return m;
  }

  get url(): string {
    return this.box.url;
  }

  private async answer({ method, path }: { method: string; path: string }): Promise<OwnAnswer | null> {
    const json = (body: unknown): OwnAnswer => ({ status: 200, contentType: 'application/json', body: JSON.stringify(body) });
    if (this.inject && path === '/.well-known/jwks.signed') {
      const jwks = { keys: [this.jwk] };
      return json({ jwks, signatures: [await sign(canonicalJson(jwks), this.privateKey, MITM_KID, JWKS_SIGNATURE_TYP)] });
    }
    if (this.snapshots && method === 'GET' && /^\/api\/v1\/machines\/[^/]+\/snapshots$/.test(path)) {
      return json({ machine_id: decodeURIComponent(path.split('/')[4]!), messages: this.snapshots });
    }
    return null;
  }

  private rewrite({ path, contentType, body }: UpstreamAnswer): Buffer | undefined {
    if (!this.inject || !contentType.includes('json')) return undefined;
    try {
      const v = JSON.parse(body.toString('utf8')) as Record<string, any>;
      // The key set the server published, and the one in activation/refresh answers.
      if (path === '/.well-known/jwks.json' && Array.isArray(v.keys)) v.keys.push(this.jwk);
      if (v.jwks && Array.isArray(v.jwks.keys)) v.jwks.keys.push(this.jwk);
      return Buffer.from(JSON.stringify(v));
    } catch {
      return undefined; // not JSON after all: pass it on
    }
  }

  close(): Promise<void> {
    return this.box.close();
  }
}

const kidsIn = (agent: TestAgent): string[] =>
  (JSON.parse(readFileSync(join(agent.stateDir, 'jwks.json'), 'utf8')) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);

export function agentTrustSuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;
  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
  });
  t.teardown(async () => {
    await s?.close();
  });

  t.test('plain http:// to a server that is not loopback is refused at start', async (t) => {
    const dir = agentDir();
    t.teardown(() => cleanupDir(dir));
    const agent = await startAgent({ serverUrl: 'http://10.0.0.1:8000', dir });
    await eventually('the agent exits on its own', () => agent.exitCode !== null, 15_000);
    await agent.stop();
    t.equal(agent.exitCode, 78, 'exit 78 (EX_CONFIG)');
    const said = agent.logs.join('\n');
    t.match(said, /server_url: http:\/\/10\.0\.0\.1:8000 is plain http/, 'names the setting');
    t.match(said, /https:\/\/.*allow_insecure_http/s, 'says what to do');

    const dir2 = agentDir();
    t.teardown(() => cleanupDir(dir2));
    const allowed = await startAgent({ serverUrl: 'http://10.0.0.1:8000', dir: dir2, extraConfig: { allow_insecure_http: true } });
    await allowed.waitReady();
    t.ok(allowed.logs.some((l) => l.includes('INSECURE: server_url http://10.0.0.1:8000')), 'allowed by the operator: a loud warning at start');
    await allowed.stop();
  });

  t.test('a pinned agent refuses the key of a man in the middle and what it signs; a rotation reaches it signed', async (t) => {
    const box = await Mitm.start(s.url);
    t.teardown(() => box.close());
    const real = s.keys.jwks().keys[0]!;
    const host = `trust-host-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    const dir = agentDir();
    t.teardown(() => cleanupDir(dir));
    const agent = await startAgent({
      serverUrl: box.url,
      dir,
      services: { [String(SERVICE)]: join(dir, 'no-cgroup') },
      hardwareFacts: { machine_id: host, macs: ['52:54:00:aa:cc:01'] },
      extraConfig: { hostname: host, trusted_keys: [jwkThumbprint(real)], fallback_interval_seconds: 1 },
    });
    t.teardown(() => agent.stop());
    await agent.waitReady();
    const c = await s.req('POST', '/api/v1/customers', { name: 'Pinned host' });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });

    const a = await agent.api('POST', '/v1/activate', { license_key: l.body.license_key });
    t.equal(a.status, 200, `activation with the real key still works: ${JSON.stringify(a.body)}`);
    const machineId = (await agent.api('GET', '/v1/status')).body.machine_id as string;
    t.same(kidsIn(agent), [real.kid], 'only the pinned key is kept from the activation answer');
    t.ok(agent.logs.some((x) => x.includes('refused server keys that no trust anchor vouches for') && x.includes(MITM_KID)), 'the injected key is refused, and said so');

    // The forged snapshot names the forged kid: the agent fetches jwks.json (rewritten)
    // and jwks.signed (forged), and must adopt neither.
    box.snapshots = [await sign(segMessage(machineId, 5), box.privateKey, MITM_KID)];
    await eventually('forged snapshot rejected', () => agent.logs.some((x) => x.includes('rejected a snapshot message: signature')));
    await eventually('forged jwks.json refused', () => agent.logs.some((x) => x.includes('/.well-known/jwks.json') && x.includes('refused server keys')));
    t.ok(agent.logs.some((x) => x.includes('the signed server JWKS carries no valid signature by a trusted key')), 'the forged signed key set vouches for nothing');
    const snaps = (await agent.api('GET', '/v1/snapshots')).body.services as Array<{ service_id: number; revision: number | null }>;
    t.equal(snaps.find((x) => x.service_id === SERVICE)?.revision ?? null, null, 'the forged snapshot is not applied');
    t.notOk(kidsIn(agent).includes(MITM_KID), 'the forged key never reaches jwks.json');
    t.notOk(agent.logs.some((x) => x.includes('snapshot applied')), 'nothing applied');

    // A real rotation: the refresh answer is signed by the new key, and the new key comes
    // with a key set signed by the pinned one.
    box.inject = false;
    box.snapshots = null;
    const rotated = s.keys.rotate();
    const r = await agent.api('POST', '/v1/refresh');
    t.equal(r.body.state, 'licensed', `refresh with the rotated key: ${JSON.stringify(r.body)}`);
    t.ok(kidsIn(agent).includes(rotated.kid), 'the rotated key is adopted');
    t.ok(agent.logs.some((x) => x.includes('adopted server keys from a key set signed by a trusted key') && x.includes(rotated.kid)), 'adopted through the signed key set');
    const tok = (await agent.api('GET', '/v1/token')).body;
    t.equal(tok.header?.kid ?? decodeProtectedHeader(readFileSync(agent.tokenPath, 'utf8').trim()).kid, rotated.kid, 'the kernel token in place is signed by the new key');
    const sk = s.keys.signingKey();
    box.snapshots = [await sign(segMessage(machineId, 7), sk.privateKey, sk.kid)];
    await eventually('snapshot signed by the rotated key applied', async () => {
      const v = (await agent.api('GET', '/v1/snapshots')).body.services as Array<{ service_id: number; revision: number | null }>;
      return v.find((x) => x.service_id === SERVICE)?.revision === 7;
    });
    t.pass('a message signed by the rotated key is accepted');
  });

  t.test('aegisctl trust add, list, remove', async (t) => {
    const state = mkdtempSync(join(tmpdir(), 'aegis-trust-'));
    t.teardown(() => rmSync(state, { recursive: true, force: true }));
    const env = { AEGIS_STATE_DIR: state };
    const jwks = s.keys.jwks();
    const file = join(state, 'server.jwks');
    writeFileSync(file, JSON.stringify(jwks));
    const tps = jwks.keys.map((k) => jwkThumbprint(k));
    const one = await aegisctl(env, ['trust', 'add', tps[0]!]);
    t.equal(one.code, 0, `add a thumbprint: ${one.stderr}`);
    const fromFile = await aegisctl(env, ['trust', 'add', file, '--json']);
    t.equal(fromFile.code, 0, `add a JWKS file: ${fromFile.stderr}`);
    const listed = await aegisctl(env, ['trust', 'list', '--json']);
    t.same((JSON.parse(listed.stdout) as { keys: Array<{ thumbprint: string }> }).keys.map((k) => k.thumbprint).sort(), [...new Set(tps)].sort(), 'every key pinned once');
    const rm = await aegisctl(env, ['trust', 'remove', tps[0]!]);
    t.equal(rm.code, 0, `remove: ${rm.stderr}`);
    const after = JSON.parse((await aegisctl(env, ['trust', 'list', '--json'])).stdout) as { keys: Array<{ thumbprint: string }> };
    t.notOk(after.keys.some((k) => k.thumbprint === tps[0]), 'removed');
    t.equal((await aegisctl(env, ['trust', 'remove', tps[0]!])).code, 5, 'removing what is not pinned: exit 5');
    t.equal((await aegisctl(env, ['trust', 'add', 'not-a-key'])).code, 2, 'neither a thumbprint nor a file: exit 2');
  });
}
