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
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { CompactSign, decodeProtectedHeader } from 'jose';
import { AUD_SEG_MAP, JWKS_SIGNATURE_TYP, canonicalJson, jwkThumbprint, publicJwkOf } from '../../protocol/src/index.js';
import { startTestServer, type TestServer } from '../harness/server.js';
import { startMtlsServer } from '../harness/mtls.js';
import { initPki } from '../../server/src/pki/authority.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
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

/** A snapshot message addressed to a machine (snapshots name the machine id, not the hostname). */
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

  t.test('a replayed older signed key set does not bring back a retired key', async (t) => {
    // The middlebox records every signed key set the server publishes; later it replays
    // an old one (genuinely signed by the pinned key) and offers the retired key again.
    const recorded: string[] = [];
    let replay: string | null = null;
    let offer: object | null = null;
    let snapshots: string[] | null = null;
    const box = await Middlebox.start(s.url, {
      answer: ({ method, path }) => {
        if (replay !== null && path === '/.well-known/jwks.signed') return { status: 200, contentType: 'application/json', body: replay };
        if (snapshots && method === 'GET' && /^\/api\/v1\/(agents|machines)\/[^/]+\/snapshots$/.test(path)) {
          return { status: 200, contentType: 'application/json', body: JSON.stringify({ host: decodeURIComponent(path.split('/')[4]!), messages: snapshots }) };
        }
        return null;
      },
      rewrite: ({ path, status, body }) => {
        if (path === '/.well-known/jwks.signed' && status === 200) recorded.push(body.toString('utf8'));
        if (!offer) return undefined;
        try {
          const v = JSON.parse(body.toString('utf8')) as Record<string, any>;
          if (path === '/.well-known/jwks.json' && Array.isArray(v.keys)) v.keys.push(offer);
          else if (v.jwks && Array.isArray(v.jwks.keys)) v.jwks.keys.push(offer);
          else return undefined;
          return Buffer.from(JSON.stringify(v));
        } catch {
          return undefined;
        }
      },
    });
    t.teardown(() => box.close());
    const pinnedKid = s.keys.activeKid()!;
    const pinned = s.keys.jwks().keys.find((k) => k.kid === pinnedKid)!;
    const host = `replay-host-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    const dir = agentDir();
    t.teardown(() => cleanupDir(dir));
    const agent = await startAgent({
      serverUrl: box.url,
      dir,
      services: { [String(SERVICE)]: join(dir, 'no-cgroup') },
      hardwareFacts: { machine_id: host, macs: ['52:54:00:aa:cc:02'] },
      extraConfig: { hostname: host, trusted_keys: [jwkThumbprint(pinned)], fallback_interval_seconds: 1 },
    });
    t.teardown(() => agent.stop());
    await agent.waitReady();
    const c = await s.req('POST', '/api/v1/customers', { name: 'Replayed key set' });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
    const act = await agent.api('POST', '/v1/activate', { license_key: l.body.license_key });
    t.equal(act.status, 200, 'activated');
    const learned = (): string[] => JSON.parse(readFileSync(join(agent.stateDir, 'trust_learned.json'), 'utf8')).thumbprints as string[];

    // Rotate twice: the second key (to be retired) and the third are learned through signed sets.
    const second = s.keys.rotate();
    const secondKey = s.keys.signingKey();
    t.equal((await agent.api('POST', '/v1/refresh')).body.state, 'licensed', 'refresh with the second key');
    const secondJwk = s.keys.jwks().keys.find((k) => k.kid === second.kid)!;
    t.ok(learned().includes(jwkThumbprint(secondJwk)), 'the second key is learned from a signed set');
    const old = recorded.find((b) => (JSON.parse(b) as { jwks: { keys: Array<{ kid: string }> } }).jwks.keys.some((k) => k.kid === second.kid));
    t.ok(old, 'the middlebox recorded a signed key set listing the second key');
    const third = s.keys.rotate();
    t.equal((await agent.api('POST', '/v1/refresh')).body.state, 'licensed', 'refresh with the third key');
    t.ok(kidsIn(agent).includes(third.kid), 'the third key is adopted');

    // The server retires the second key; the next refresh brings the newer signed set.
    s.keys.retire(second.kid);
    t.equal((await agent.api('POST', '/v1/refresh')).body.state, 'licensed', 'refresh after the retirement');
    t.notOk(learned().includes(jwkThumbprint(secondJwk)), 'the retired key is dropped from the learned keys');
    t.notOk(kidsIn(agent).includes(second.kid), 'the retired key is gone from jwks.json');
    const floorPath = join(agent.stateDir, 'trust_signed_jwks.json');
    t.equal(statSync(floorPath).mode & 0o777, 0o600, 'the newest accepted signed set is kept 0600');
    const floor = JSON.parse(readFileSync(floorPath, 'utf8')) as { seq: number; iat: number };
    t.ok(Number.isInteger(floor.seq) && floor.seq > (JSON.parse(old!) as { seq?: number }).seq!, 'it is newer than the recorded one');

    // Replay: the recorded set (signed by the pinned key, and by the retired one) and the
    // retired key offered in jwks.json and refresh answers, and a snapshot it signed.
    replay = old!;
    offer = secondJwk;
    snapshots = [await sign(segMessage(act.body.machine_id as string, 9), secondKey.privateKey, secondKey.kid)];
    await eventually('snapshot signed by the retired key rejected', () => agent.logs.some((x) => x.includes('rejected a snapshot message: signature')));
    await eventually('the replayed set refused', () => agent.logs.some((x) => x.includes('refused a signed server key set older than the one accepted')));
    t.equal((await agent.api('POST', '/v1/refresh')).body.state, 'licensed', 'a refresh offering the retired key still licenses with the current one');
    const snaps = (await agent.api('GET', '/v1/snapshots')).body.services as Array<{ service_id: number; revision: number | null }>;
    t.equal(snaps.find((x) => x.service_id === SERVICE)?.revision ?? null, null, 'the snapshot signed by the retired key is not applied');
    t.notOk(kidsIn(agent).includes(second.kid), 'the retired key does not come back into jwks.json');
    t.notOk(learned().includes(jwkThumbprint(secondJwk)), 'nor into the learned keys');
    t.equal((JSON.parse(readFileSync(floorPath, 'utf8')) as { seq: number }).seq, floor.seq, 'the agent keeps the newer set');

    // The operator's pin outlives a retirement of the pinned key, with a warning.
    replay = null;
    offer = null;
    snapshots = null;
    s.keys.retire(pinnedKid);
    t.equal((await agent.api('POST', '/v1/refresh')).body.state, 'licensed', 'refresh after the pinned key is retired');
    t.ok(agent.logs.some((x) => x.includes('a pinned server key is no longer in the server') && x.includes(jwkThumbprint(pinned))), 'warned that a pinned key was retired');
  });

  t.test('with keys pinned, only the CA the server signed is adopted for mTLS', async (t) => {
    const url = await newDatabase();
    const m = await startMtlsServer(url === undefined ? {} : { databaseUrl: url });
    t.teardown(() => m.close());
    const forgedDir = mkdtempSync(join(tmpdir(), 'aegis-forged-ca-'));
    t.teardown(() => rmSync(forgedDir, { recursive: true, force: true }));
    await initPki(forgedDir, { trustDomain: 'aegis.test' });
    const forgedCa = readFileSync(join(forgedDir, 'ca.crt'), 'utf8');
    let forge: 'keep-signature' | 'strip-signature' | null = 'keep-signature';
    const box = await Middlebox.start(m.url, {
      rewrite: ({ body }) => {
        if (!forge) return undefined;
        try {
          const v = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
          if (typeof v.ca_certificate !== 'string') return undefined;
          v.ca_certificate = forgedCa;
          if (forge === 'strip-signature') delete v.ca_certificate_signature;
          return Buffer.from(JSON.stringify(v));
        } catch {
          return undefined;
        }
      },
    });
    t.teardown(() => box.close());
    const serverKey = KeyStore.open(join(m.dir, 'keys')).jwks().keys[0]!;
    const dir = agentDir();
    t.teardown(() => cleanupDir(dir));
    const host = `ca-host-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    const agent = await startAgent({
      serverUrl: box.url,
      dir,
      hardwareFacts: { machine_id: host, macs: ['52:54:00:aa:cc:03'] },
      extraConfig: { hostname: host, agent_server_url: m.agentUrl, trusted_keys: [jwkThumbprint(serverKey)], fallback_interval_seconds: 1 },
    });
    t.teardown(() => agent.stop());
    await agent.waitReady();
    const c = await m.req('POST', '/api/v1/customers', { name: 'Pinned CA' });
    const l = await m.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
    const mtlsFile = join(agent.stateDir, 'mtls.json');

    const a = await agent.api('POST', '/v1/activate', { license_key: l.body.license_key });
    t.equal(a.status, 200, `activation itself goes through: ${JSON.stringify(a.body)}`);
    t.ok(agent.logs.some((x) => x.includes('refused the CA certificate in the server') && x.includes('does not match')), 'a replaced CA under the genuine signature is refused, and said so');
    t.notOk(existsSync(mtlsFile), 'nothing cached for mTLS');
    t.equal((await agent.api('GET', '/v1/status')).body.mtls.certificate, null, 'no client certificate in use');

    forge = 'strip-signature';
    t.equal((await agent.api('POST', '/v1/refresh')).body.state, 'licensed', 'refresh with the CA replaced and its signature removed');
    t.ok(agent.logs.some((x) => x.includes('refused the CA certificate in the server') && x.includes('no signature')), 'an unsigned CA is refused, and said so');
    t.notOk(existsSync(mtlsFile), 'still nothing cached for mTLS');

    forge = null;
    t.equal((await agent.api('POST', '/v1/refresh')).body.state, 'licensed', 'refresh with the genuine answer');
    await eventually('client certificate installed', () => agent.logs.some((x) => x.includes('client certificate installed')));
    t.equal((JSON.parse(readFileSync(mtlsFile, 'utf8')) as { ca_certificate: string }).ca_certificate.trim(), m.caPem.trim(), 'the genuine, signed CA is adopted');
    await eventually('mTLS in use', async () => Boolean((await agent.api('GET', '/v1/status')).body.mtls.last_ok_at));
    t.pass('the agent talks to the mTLS listener with the genuine CA');
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
