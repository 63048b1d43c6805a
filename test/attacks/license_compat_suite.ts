/**
 * Module licenses as the AEGIS License Server v0.8.0 README documents them: its curl
 * examples run verbatim with the real curl binary (test/fixtures/license_server_readme_examples.md),
 * and the attacks on them: a token validated for another customer's module, a tampered
 * `exp`, a module license token presented where machine tokens and host proofs are expected
 * (and machine tokens where a module token is), a key limited to one customer issuing for
 * another's external reference, hostile versions and external references. Run once per
 * storage backend (license_compat_sqlite.test.ts, license_compat_postgres.test.ts).
 */
import type { Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { AGENT_API, AUD_MODULE_LICENSE, AUD_REFRESH_PROOF } from '../../protocol/src/index.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { verifyLicenseOffline } from '../../agent/src/license_verifier.js';
import { startTestServer, TestHost, activateTestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const run = promisify(execFile);
const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/license_server_readme_examples.md', import.meta.url));

/** The curl commands of the fixture, in order, each with its backslash continuations joined. */
export function readmeCommands(text: string): string[] {
  const out: string[] = [];
  for (const [, block] of text.matchAll(/```bash\n([\s\S]*?)```/g)) {
    const lines = block!.replace(/\\\n/g, '').split('\n');
    let cmd = '';
    for (const line of lines) {
      if (cmd === '' && (line.trim() === '' || line.trim().startsWith('#'))) continue;
      cmd += (cmd ? '\n' : '') + line;
      // A command ends where its quotes balance (the -d '{...}' bodies span lines).
      if ((cmd.split("'").length - 1) % 2 === 0) {
        out.push(cmd);
        cmd = '';
      }
    }
  }
  return out;
}

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const payloadOf = (token: string): Record<string, any> => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8'));

export function licenseCompatSuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;
  let curlHome: string;

  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
    // curl reads $CURL_HOME/.curlrc: the commands stay verbatim and still report their status.
    curlHome = mkdtempSync(join(tmpdir(), 'aegis-curl-'));
    writeFileSync(join(curlHome, '.curlrc'), '--silent\n--show-error\n--write-out "\\n%{http_code}"\n');
  });
  t.teardown(async () => {
    await s?.close();
    if (curlHome) rmSync(curlHome, { recursive: true, force: true });
  });

  /** Runs one README command with the real curl, filling in what the README leaves to the reader. */
  async function curl(cmd: string, fill: Record<string, string> = {}): Promise<{ status: number; body: any }> {
    let c = cmd.replaceAll('http://localhost:8000', s.url).replaceAll('your-api-key', s.adminKey).replaceAll('your-key', s.adminKey);
    for (const [k, v] of Object.entries(fill)) c = c.replaceAll(k, v);
    const { stdout } = await run('bash', ['-c', c], { env: { ...process.env, CURL_HOME: curlHome, HOME: curlHome } });
    const nl = stdout.lastIndexOf('\n');
    return { status: Number(stdout.slice(nl + 1)), body: JSON.parse(stdout.slice(0, nl)) };
  }

  async function customer(name: string, external_id?: string): Promise<string> {
    const r = await s.req('POST', '/api/v1/customers', { name, ...(external_id ? { external_id } : {}) });
    if (r.status !== 201) throw new Error(`customer: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.id as string;
  }

  async function moduleLicense(customerRef: string, extra: Record<string, unknown> = {}): Promise<any> {
    const r = await s.req('POST', '/api/v1/licenses', { customer_id: customerRef, module_name: 'biz4a_payroll_drc', allowed_major_versions: ['17', '18'], license_type: 'perpetual', ...extra });
    if (r.status !== 201) throw new Error(`license: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  const validate = (body: Record<string, unknown>) => s.req('POST', '/api/v1/licenses/validate', body, { key: null });

  t.test('every request example of the README works as written, with curl', async (t) => {
    const cmds = readmeCommands(readFileSync(FIXTURE, 'utf8'));
    t.equal(cmds.length, 5, 'health, stats, issue, validate, revoke');
    const [health, stats, issue, validateCmd, revoke] = cmds as [string, string, string, string, string];
    const customerId = await customer('Acme Corp', 'CUST-001');

    const h = await curl(health);
    t.equal(h.status, 200);
    t.equal(h.body.status, 'ok');
    const st = await curl(stats);
    t.equal(st.status, 200, 'statistics with X-API-Key');

    const issued = await curl(issue);
    t.equal(issued.status, 201, 'issued by external customer id, module name and versions, no tier');
    t.match(issued.body, { customer_id: customerId, module_name: 'biz4a_payroll_drc', allowed_major_versions: ['17', '18'], license_type: 'perpetual', tier: 'basic', status: 'active', expires_at: null });
    const token = issued.body.token as string;
    const header = decodeProtectedHeader(token);
    t.match(header, { alg: 'EdDSA', typ: 'JWT' });
    const jwks = (await s.req('GET', '/.well-known/jwks.json', undefined, { key: null })).body;
    t.ok(jwks.keys.some((k: any) => k.kid === header.kid), 'kid names a key of the server JWKS');
    // Offline, as the product does: a standard JWT library and the published public key.
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { audience: AUD_MODULE_LICENSE, algorithms: ['EdDSA'] });
    t.match(payload, {
      jti: /^[0-9a-f-]{36}$/,
      iss: 'aegis-server',
      iat: Number,
      customer: { id: 'CUST-001', name: 'Acme Corp' },
      module: { technical_name: 'biz4a_payroll_drc', allowed_major_versions: ['17', '18'] },
      license_type: 'perpetual',
      license_id: issued.body.id,
    });
    t.equal(payload.exp, undefined, 'a perpetual license token has no exp (reads as null)');

    const placeholder = await curl(validateCmd);
    t.equal(placeholder.status, 200, 'the README placeholder token is answered, not refused');
    t.match(placeholder.body, { valid: false, code: 'MALFORMED' });
    const v = await curl(validateCmd, { 'eyJhbGc...': token });
    t.equal(v.status, 200);
    t.match(v.body, { valid: true, code: 'VALID', claims: { module: { technical_name: 'biz4a_payroll_drc' } } });

    const r = await curl(revoke, { '{id}': issued.body.id });
    t.equal(r.status, 200);
    t.match(r.body, { id: issued.body.id, status: 'revoked', revoke_reason: 'Customer requested cancellation' });
    const after = await curl(validateCmd, { 'eyJhbGc...': token });
    t.match(after.body, { valid: false, code: 'REVOKED' }, 'revocation makes /validate refuse the token');
  });

  t.test('GET /api/v1/licenses/{id} gives the same token again, within the key limits', async (t) => {
    const a = await customer('Get A', 'GET-A');
    const b = await customer('Get B', 'GET-B');
    const lic = await moduleLicense('GET-A', { license_type: 'subscription', duration_days: 30 });
    const again = await s.req('GET', `/api/v1/licenses/${lic.id}`);
    t.equal(again.status, 200);
    t.equal(again.body.token, lic.token, 'byte for byte the token issued');
    t.equal(payloadOf(lic.token).exp, Math.floor(Date.parse(lic.expires_at) / 1000), 'a subscription token ends with the license');
    const keyA = (await s.app.apiKeys.create('compat-a', [...SCOPES], a)).key;
    const keyB = (await s.app.apiKeys.create('compat-b', [...SCOPES], b)).key;
    const readOnlyCustomers = (await s.app.apiKeys.create('compat-customers', ['customers:read'])).key;
    t.equal((await s.req('GET', `/api/v1/licenses/${lic.id}`, undefined, { key: keyA })).body.token, lic.token, "A's key reads A's token");
    const asB = await s.req('GET', `/api/v1/licenses/${lic.id}`, undefined, { key: keyB });
    t.equal(asB.status, 404, "B's key cannot read A's license or token");
    t.notOk(JSON.stringify(asB.body).includes(lic.token));
    t.equal((await s.req('GET', `/api/v1/licenses/${lic.id}`, undefined, { key: readOnlyCustomers })).status, 403, 'licenses:read is required');
    t.equal((await s.req('GET', `/api/v1/licenses/${lic.id}`, undefined, { key: null })).status, 401);
    const list = await s.req('GET', '/api/v1/licenses?customer_id=GET-A');
    t.same(list.body.items.map((l: any) => l.id), [lic.id], 'licenses filter by external customer id');
    t.equal(list.body.items[0].token, undefined, 'lists carry no tokens');
    t.equal((await s.req('GET', '/api/v1/customers/GET-A')).body.id, a, 'customers by external id');
  });

  t.test("a token of customer A validated with customer B's module name is refused", async (t) => {
    await customer('Mod A', 'MOD-A');
    await customer('Mod B', 'MOD-B');
    const a = await moduleLicense('MOD-A');
    await moduleLicense('MOD-B', { module_name: 'biz4a_hr_cd' });
    const v = await validate({ token: a.token, module_name: 'biz4a_hr_cd', odoo_version: '17' });
    t.match(v.body, { valid: false, code: 'MODULE_MISMATCH' });
    t.match((await validate({ token: a.token, module_name: 'biz4a_payroll_drc', odoo_version: '17.0' })).body, { valid: true, code: 'VALID' }, '17.0 matches 17');
    t.match((await validate({ token: a.token, module_name: 'biz4a_payroll_drc', odoo_version: '18.0.3' })).body, { valid: true });
    t.match((await validate({ token: a.token, module_name: 'biz4a_payroll_drc', odoo_version: '16.0' })).body, { valid: false, code: 'VERSION_NOT_ALLOWED' });
    t.match((await validate({ token: a.token, hardware_id: 'a'.repeat(64) })).body, { valid: false, code: 'HWID_MISMATCH' }, 'bound to no hardware: a hardware check fails closed');
  });

  t.test('hostile versions are refused as bad requests', async (t) => {
    await customer('Ver', 'VER-1');
    const lic = await moduleLicense('VER-1');
    for (const odoo_version of ['17; DROP', '', '999999999999', '17.0.0.0.0', ' 17', '17\n']) {
      const v = await validate({ token: lic.token, module_name: 'biz4a_payroll_drc', odoo_version });
      t.equal(v.status, 400, JSON.stringify(odoo_version));
      t.match(v.body, { error: { code: 'VALIDATION_FAILED', details: [{ path: '/odoo_version' }] } });
    }
    const bad = await s.req('POST', '/api/v1/licenses', { customer_id: 'VER-1', module_name: 'biz4a_payroll_drc', allowed_major_versions: ['17; DROP'], license_type: 'perpetual' });
    t.equal(bad.status, 400, 'allowed versions are digits only');
    const mod = await validate({ token: lic.token, module_name: "x' OR 1=1" });
    t.equal(mod.status, 400, 'a module name that is no technical name is refused');
  });

  t.test('a tampered exp breaks the signature', async (t) => {
    await customer('Exp', 'EXP-1');
    const sub = await moduleLicense('EXP-1', { license_type: 'subscription', duration_days: 1 });
    const [h, p, sig] = sub.token.split('.');
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
    const forged = `${h}.${b64({ ...payload, exp: payload.exp + 365 * 86_400 })}.${sig}`;
    t.match((await validate({ token: forged })).body, { valid: false, code: 'SIGNATURE_INVALID' });
    const perpetual = await moduleLicense('EXP-1');
    const [h2, p2, sig2] = perpetual.token.split('.');
    const removed = { ...JSON.parse(Buffer.from(p2, 'base64url').toString('utf8')) };
    const withExp = `${h2}.${b64({ ...removed, exp: 1 })}.${sig2}`;
    t.match((await validate({ token: withExp })).body, { valid: false, code: 'SIGNATURE_INVALID' });
    const noExp = `${h}.${b64({ ...payload, exp: undefined })}.${sig}`;
    t.match((await validate({ token: noExp })).body, { valid: false, code: 'SIGNATURE_INVALID' }, 'dropping exp to make it perpetual');
    s.clock.advanceDays(2);
    try {
      t.match((await validate({ token: sub.token })).body, { valid: false, code: 'EXPIRED' }, 'the genuine token expires with its license');
    } finally {
      s.clock.advanceDays(-2);
    }
  });

  t.test('a module license token is no machine token, and machine tokens are no module token', async (t) => {
    const cust = await customer('Cross', 'CROSS-1');
    const lic = await moduleLicense('CROSS-1');
    // The agent API, without mTLS, takes a single-use access token as Bearer.
    for (const [method, path, body] of [
      ['GET', AGENT_API.snapshots, undefined],
      ['POST', AGENT_API.refresh, {}],
      ['POST', AGENT_API.status, { host: 'x' }],
    ] as const) {
      const r = await s.req(method, path, body, { key: null, headers: { authorization: `Bearer ${lic.token}` } });
      t.equal(r.status, 401, `${method} ${path} refuses a module license token`);
    }
    // An active machine of an aegis-agent license of the same customer.
    const m = await activateTestHost(s, 'cross-host', { customerId: cust });
    t.equal((await s.req('POST', AGENT_API.token, { machine_id: m.machineId, proof: lic.token }, { key: null })).status, 401, 'no access token for it as a proof');
    const refresh = await s.req('POST', `/api/v1/machines/${m.machineId}/refresh`, { proof: lic.token }, { key: null });
    t.equal(refresh.status, 401, 'as a host proof for refresh');
    t.equal((await s.req('DELETE', `/api/v1/machines/${m.machineId}`, { proof: lic.token }, { key: null })).status, 401, 'as a host proof for deactivation');
    const jwks = (await s.req('GET', '/.well-known/jwks.json', undefined, { key: null })).body;
    const offline = await verifyLicenseOffline(lic.token, jwks, { hardwareId: m.host.hardwareId, hostKeyThumbprint: '', agentVersion: '1.2.0' });
    t.match(offline, { ok: false, code: 'WRONG_AUDIENCE' }, "the agent's offline verifier refuses it");
    // And the other way: the machine's own tokens where a module license token is expected.
    const tokens = (await s.req('POST', `/api/v1/machines/${m.machineId}/refresh`, { proof: m.host.proof(AUD_REFRESH_PROOF) }, { key: null })).body;
    t.match((await validate({ token: tokens.license_token, module_name: 'biz4a_payroll_drc', odoo_version: '17' })).body, { valid: false, code: 'MODULE_MISMATCH' }, 'a machine license token licenses no module');
    t.match((await validate({ token: tokens.kernel_token, module_name: 'biz4a_payroll_drc' })).body, { valid: false, code: 'WRONG_AUDIENCE' });
    // A module license's key activates no aegis-agent host.
    const act = await s.req('POST', '/api/v1/activations', new TestHost('module-key-host').activation(lic.license_key), { key: null });
    t.equal(act.status, 403);
    t.match(act.body, { error: { code: 'PRODUCT_MISMATCH' } });
    t.equal((await s.req('GET', `/api/v1/licenses/${lic.id}/machines`)).body.items.length, 0, 'no seat taken');
  });

  t.test("a key limited to customer A cannot issue for customer B's external id", async (t) => {
    const a = await customer('Tenant A', 'TEN-A');
    const b = await customer('Tenant B', 'TEN-B');
    const keyA = (await s.app.apiKeys.create('tenant-a', [...SCOPES], a)).key;
    const body = { module_name: 'biz4a_payroll_drc', allowed_major_versions: ['17'], license_type: 'perpetual' };
    const forB = await s.req('POST', '/api/v1/licenses', { ...body, customer_id: 'TEN-B' }, { key: keyA });
    t.equal(forB.status, 404, "B's external id is a 404 to A's key");
    const unknown = await s.req('POST', '/api/v1/licenses', { ...body, customer_id: 'TEN-NOBODY' }, { key: keyA });
    t.equal(unknown.status, 404);
    t.same(unknown.body, forB.body, 'the same answer as an unknown reference: nothing to probe');
    t.equal((await s.req('POST', '/api/v1/licenses', { ...body, customer_id: b }, { key: keyA })).status, 404, "nor by B's id");
    t.equal((await s.req('GET', `/api/v1/licenses?customer_id=${b}`)).body.total, 0, 'B got no license');
    t.equal((await s.req('GET', '/api/v1/customers/TEN-B', undefined, { key: keyA })).status, 404, "A's key cannot read B by external id");
    t.equal((await s.req('POST', '/api/v1/licenses', { ...body, customer_id: 'TEN-A' }, { key: keyA })).status, 201, 'A issues for itself by external id');
  });

  t.test('external ids: unique, set at creation, hostile values refused', async (t) => {
    await customer('Uniq', 'UNIQ-1');
    const dup = await s.req('POST', '/api/v1/customers', { name: 'Uniq again', external_id: 'UNIQ-1' });
    t.equal(dup.status, 409);
    t.match(dup.body, { error: { code: 'CONFLICT', details: [{ path: '/external_id' }] } });
    for (const external_id of ['X'.repeat(65), 'CUST\u0001', 'CUST 001', '', '-lead', 'ä-umlaut', '00000000-0000-4000-8000-000000000000']) {
      const r = await s.req('POST', '/api/v1/customers', { name: 'Hostile', external_id });
      t.equal(r.status, 400, JSON.stringify(external_id));
      t.match(r.body, { error: { code: 'VALIDATION_FAILED', details: [{ path: '/external_id' }] } });
    }
    const c = await customer('Patch');
    t.equal((await s.req('PATCH', `/api/v1/customers/${c}`, { external_id: 'LATE-1' })).status, 400, 'not changed after creation');
    const racers = await Promise.all([1, 2, 3, 4].map((i) => s.req('POST', '/api/v1/customers', { name: `Race ${i}`, external_id: 'RACE-1' })));
    t.same(racers.map((r) => r.status).sort(), [201, 409, 409, 409], 'concurrent creations: one wins');
    const noTier = await s.req('POST', '/api/v1/licenses', { customer_id: c, license_type: 'perpetual' });
    t.match(noTier.body, { error: { code: 'VALIDATION_FAILED', details: [{ path: '/tier' }] } }, 'an aegis-agent license still names its tier');
    const fleet = await s.req('POST', '/api/v1/licenses', { customer_id: c, module_name: 'biz4a_payroll_drc', license_type: 'perpetual', fleet: 'f1' });
    t.match(fleet.body, { error: { code: 'VALIDATION_FAILED', details: [{ path: '/fleet' }] } });
    const agentLicense = await s.req('POST', '/api/v1/licenses', { customer_id: c, tier: 'server', license_type: 'perpetual' });
    t.equal(agentLicense.body.token, null, 'an aegis-agent license has no unbound token');
  });
}
