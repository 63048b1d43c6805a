/**
 * Attacks on budgets: nobody spends another's rate-limit budget by naming it in traffic
 * that does not authenticate, and a flood of refused requests leaves a bounded number of
 * audit rows. Run once per storage backend (budgets_sqlite.test.ts,
 * budgets_postgres.test.ts) against a real server on port 0.
 *
 * The attacker sends from 127.0.0.2 and the victim from 127.0.0.1 (the server takes the
 * client IP from the socket; all of 127.0.0.0/8 reaches a listener on 127.0.0.1), and
 * per-IP limits are set high, so only the per-license and per-machine budgets are at stake.
 */
import type { Test } from 'tap';
import { generateKeyPairSync, sign } from 'node:crypto';
import { request } from 'node:http';
import { AUD_REFRESH_PROOF } from '../../protocol/src/index.js';
import { DEFAULT_AUDIT_REFUSALS_PER_MINUTE } from '../../server/src/audit.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const ATTACKER_IP = '127.0.0.2';

function b64(o: unknown): string {
  return Buffer.from(JSON.stringify(o)).toString('base64url');
}

/** POSTs JSON to the server from a chosen loopback source address. */
function postFrom(s: TestServer, from: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const url = new URL(path, s.url);
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', localAddress: from, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as unknown) : null });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Runs `n` calls of `fn`, `width` at a time, and returns their results in order. */
async function pooled<T>(n: number, width: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

export function budgetsSuite(t: Test, newDatabase: DatabaseFactory): void {
  async function server(opts: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
    const url = await newDatabase();
    return startTestServer({ ...(url === undefined ? {} : { databaseUrl: url }), ...opts });
  }

  async function seat(s: TestServer, name: string): Promise<{ licenseId: string; host: TestHost; machineId: string; token: string }> {
    const c = await s.req('POST', '/api/v1/customers', { name: `Budget ${name}` });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
    const host = new TestHost(name);
    const a = await s.req('POST', '/api/v1/activations', host.activation(l.body.license_key), { key: null });
    if (a.status !== 201) throw new Error(`activation: ${a.status} ${JSON.stringify(a.body)}`);
    return { licenseId: l.body.id, host, machineId: a.body.machine_id, token: a.body.license_token };
  }

  async function auditRows(s: TestServer): Promise<number> {
    const { n } = await s.app.ctx.db
      .selectFrom('audit_logs')
      .select((eb) => eb.fn.countAll<string | number>().as('n'))
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  t.test('200 forged tokens naming a license do not spend its validation budget', async (t) => {
    const s = await server({ rateLimits: 'validate_per_license=5/min' });
    t.teardown(() => s.close());
    const victim = await seat(s, 'victim-validate');
    const [hd, pl] = victim.token.split('.') as [string, string];
    const kid = JSON.parse(Buffer.from(hd, 'base64url').toString()).kid as string;
    const evil = generateKeyPairSync('ed25519').privateKey;
    const forged = (i: number): string => {
      const claims = b64({ ...JSON.parse(Buffer.from(pl, 'base64url').toString()), jti: `forged-${i}`, tier: 'server' });
      if (i % 2 === 0) return `${b64({ alg: 'none', typ: 'JWT', kid })}.${claims}.`; // unsigned
      const head = b64({ alg: 'EdDSA', typ: 'JWT', kid });
      return `${head}.${claims}.${sign(null, Buffer.from(`${head}.${claims}`), evil).toString('base64url')}`; // another key
    };
    const answers = await pooled(200, 8, (i) => postFrom(s, ATTACKER_IP, '/api/v1/licenses/validate', { token: forged(i) }));
    t.ok(answers.every((a) => a.status === 200 && a.body.valid === false), 'every forgery is refused (200 valid:false), none rate limited');
    t.same([...new Set(answers.map((a) => a.body.code))].sort(), ['MALFORMED', 'SIGNATURE_INVALID'], 'refused for their signatures (an empty one is malformed)');
    const genuine = await s.req('POST', '/api/v1/licenses/validate', { token: victim.token }, { key: null });
    t.equal(genuine.status, 200, JSON.stringify(genuine.body));
    t.match(genuine.body, { valid: true, code: 'VALID' }, "the victim's genuine validation still answers");
    // The budget still brakes the genuine token itself.
    const more = [];
    for (let i = 0; i < 5; i++) more.push((await s.req('POST', '/api/v1/licenses/validate', { token: victim.token }, { key: null })).status);
    t.same(more, [200, 200, 200, 200, 429], 'verified validations are still limited per license');
  });

  t.test('bogus refreshes naming a machine do not lock out its genuine refresh', async (t) => {
    const s = await server({ rateLimits: 'refresh_per_machine=3/min' });
    t.teardown(() => s.close());
    const victim = await seat(s, 'victim-refresh');
    const thief = new TestHost('thief');
    const path = `/api/v1/machines/${victim.machineId}/refresh`;
    const bogus = await pooled(24, 6, (i) =>
      postFrom(s, ATTACKER_IP, path, { proof: i % 3 === 0 ? 'not-a-proof' : thief.proof(AUD_REFRESH_PROOF, { hwid: victim.host.hardwareId }) }),
    );
    t.ok(bogus.every((b) => b.status === 401 || b.status === 400), `bogus refreshes refused for their proofs, none rate limited (${[...new Set(bogus.map((b) => b.status))].join(',')})`);
    t.notOk(bogus.some((b) => b.status === 429), 'no 429 for the attacker: the budget was not touched');
    const genuine = await s.req('POST', path, { proof: victim.host.proof(AUD_REFRESH_PROOF) }, { key: null });
    t.equal(genuine.status, 200, JSON.stringify(genuine.body));
    t.type(genuine.body.license_token, 'string', 'the genuine refresh succeeds');
    const more = [];
    for (let i = 0; i < 3; i++) more.push((await s.req('POST', path, { proof: victim.host.proof(AUD_REFRESH_PROOF) }, { key: null })).status);
    t.same(more, [200, 200, 429], 'authenticated refreshes are still limited per machine');
  });

  t.test('1000 garbage validations and 300 bogus refreshes leave a bounded audit trail', async (t) => {
    const s = await server({ auditRefusalsPerMinute: DEFAULT_AUDIT_REFUSALS_PER_MINUTE });
    t.teardown(() => s.close());
    const victim = await seat(s, 'victim-audit');
    const before = await auditRows(s);
    const garbage = await pooled(1000, 8, (i) => postFrom(s, ATTACKER_IP, '/api/v1/licenses/validate', { token: `garbage.${i}.x` }));
    t.ok(garbage.every((g) => g.status === 200 && g.body.valid === false), 'all refused');
    const thief = new TestHost('audit-thief');
    const refreshes = await pooled(300, 8, () =>
      postFrom(s, ATTACKER_IP, `/api/v1/machines/${victim.machineId}/refresh`, { proof: thief.proof(AUD_REFRESH_PROOF, { hwid: victim.host.hardwareId }) }),
    );
    t.ok(refreshes.every((r) => r.status === 401), 'all refused');
    const grown = (await auditRows(s)) - before;
    t.ok(grown <= 2 * DEFAULT_AUDIT_REFUSALS_PER_MINUTE, `audit rows grew by ${grown}, at most ${2 * DEFAULT_AUDIT_REFUSALS_PER_MINUTE}`);
    t.ok(grown >= 2, 'refusals are still recorded');

    // Another client's refusal is its own record, not lost in the flood.
    const victimRefusal = await s.req('POST', '/api/v1/licenses/validate', { token: 'mine.is.broken' }, { key: null });
    t.equal(victimRefusal.body.valid, false);
    const mine = await s.req('GET', '/api/v1/admin/audit-logs?event_type=license.validate&limit=500');
    t.ok(mine.body.items.some((e: any) => e.client_ip !== ATTACKER_IP && e.client_ip !== `::ffff:${ATTACKER_IP}`), "the victim's refusal is recorded");

    // Once the minute has passed, the suppressed count is written down: nothing is lost.
    s.clock.offsetMs += 61_000;
    try {
      await postFrom(s, ATTACKER_IP, '/api/v1/licenses/validate', { token: 'garbage.after.window' });
      const summary = await s.req('GET', '/api/v1/admin/audit-logs?event_type=audit.refusals_suppressed');
      const row = summary.body.items.find((e: any) => e.event_data.event_type === 'license.validate');
      t.ok(row, 'a summary row names the suppressed event');
      t.equal(row.event_data.suppressed, 1000 - DEFAULT_AUDIT_REFUSALS_PER_MINUTE, 'and counts every suppressed refusal');
      t.equal(row.outcome, 'refused');
    } finally {
      s.clock.offsetMs = 0;
    }
  });
}
