/**
 * Event ingest against a real aegis-server and the real yara/yarac, once per storage
 * backend (event_ingest_sqlite.test.ts, event_ingest_postgres.test.ts). Each agent route
 * takes a real single-use access token (host-key proof, no mTLS) with its own scope: a
 * token of another scope, a replayed, expired, forged or tampered one is refused; a body
 * naming another machine is refused and nothing is filed under either machine; malformed
 * JSON, unknown fields and out-of-range times are refused whole. Files: bytes that do not
 * hash to the digests are HASH_MISMATCH, oversized bytes and batches are 413 with the
 * limit, a YARA rule that does not compile (or includes a file) is refused with the
 * compiler's message, a file matching a real rule is malicious, a hash list hit is too, an
 * allow-list hit is clean. The events read keeps tenancy, and retention trims the oldest.
 */
import type { Test } from 'tap';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import { SignJWT, decodeJwt } from 'jose';
import { AGENT_API, AUD_AGENT_API, AUD_AGENT_TOKEN_PROOF, TOKEN_ISSUER, type AgentScope } from '../../protocol/src/index.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { openDatabase } from '../../server/src/db/database.js';
import { migratorFor } from '../../server/src/db/migrations.js';
import { missingCommand, requireCapability } from '../harness/capabilities.js';
import { activateTestHost, startTestServer, TestHost, type ActivatedHost, type TestServer } from '../harness/server.js';
import { startMtlsServer, tlsRequest } from '../harness/mtls.js';
import { createHostCsr } from '../../agent/src/csr.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const sha = (alg: string, b: Buffer | string) => createHash(alg).update(b).digest('hex');
const EVIL = Buffer.from('header\u0000AEGIS-TEST-EVIL-MARKER\u0000trailer');
const RULE = 'rule aegis_test_marker { strings: $a = "AEGIS-TEST-EVIL-MARKER" condition: $a }';

async function token(s: TestServer, h: ActivatedHost, scope: AgentScope[]): Promise<string> {
  const r = await s.req('POST', AGENT_API.token, { machine_id: h.machineId, proof: h.host.proof(AUD_AGENT_TOKEN_PROOF), scope }, { key: null });
  if (r.status !== 200) throw new Error(`token: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.access_token as string;
}

function agentPost(s: TestServer, path: string, body: unknown, bearer: string) {
  return s.req('POST', path, body, { key: null, headers: { authorization: `Bearer ${bearer}` } });
}

export function eventIngestSuite(t: Test, newDatabase: DatabaseFactory): void {
  t.test('0016_events goes up and down', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-evmig-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const { db, dialect } = openDatabase((await newDatabase()) ?? `sqlite:${join(dir, 'aegis.db')}`);
    t.teardown(() => db.destroy());
    const m = migratorFor(db, dialect);
    t.notOk((await m.migrateToLatest()).error);
    const raw = db as unknown as Kysely<any>;
    await raw.insertInto('events').values({ source: 'threat', machine_id: 'm', customer_id: null, at: '2026-12-01T00:00:00.000Z', received_at: '2026-12-01T00:00:00.000Z', kind: 'x', severity: 'low', body: '{}' }).execute();
    const names = (await m.getMigrations()).map((x) => x.name);
    t.ok(names.includes('0016_events'), 'a migration');
    t.notOk((await m.migrateTo(names[names.indexOf('0016_events') - 1]!)).error, 'down');
    await t.rejects(raw.selectFrom('events').selectAll().execute(), 'the events table is gone');
    t.notOk((await m.migrateToLatest()).error, 'up again');
    t.same(await raw.selectFrom('events').selectAll().execute(), [], 'empty after a fresh up');
  });

  t.test('agent ingest: threats, files, telemetry, their attacks, intel routes, tenancy', async (t) => {
    if (!requireCapability(t, missingCommand('yara', 'yarac'))) return;
    const url = await newDatabase();
    const s = await startTestServer({ ...(url === undefined ? {} : { databaseUrl: url }), env: { AEGIS_FILE_MAX_BYTES: '4096', AEGIS_TELEMETRY_MAX_EVENTS: '20' } });
    t.teardown(() => s.close());
    const a1 = await activateTestHost(s, 'ev-a1');
    const a2 = await activateTestHost(s, 'ev-a2', { licenseKey: a1.licenseKey, customerId: a1.customerId });
    const b1 = await activateTestHost(s, 'ev-b1');
    const events = async (query: string, key?: string) => {
      const r = await s.req('GET', `/api/v1/events?limit=1000${query}`, undefined, key ? { key } : {});
      if (r.status !== 200) throw new Error(`events: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.items as any[];
    };
    const count = async () => (await events('')).length;
    const now = () => new Date(s.clock.now().getTime()).toISOString();
    const threat = (extra: Record<string, unknown> = {}) => ({
      kind: 'ransomware.behaviour',
      severity: 'high',
      observed_at: now(),
      process: { pid: 4242, exe: '/usr/bin/python3', cmdline: 'python3 enc.py /srv' },
      file: { path: '/srv/data.db', sha256: 'A'.repeat(64) },
      evidence: { renamed_files: 120, window_seconds: 10, sample: ['a.locked', 'b.locked'] },
      ...extra,
    });

    // --- threats ---------------------------------------------------------------------------
    const ok = await agentPost(s, AGENT_API.threats, threat(), await token(s, a1, ['threat_reporting']));
    t.equal(ok.status, 201, JSON.stringify(ok.body));
    t.equal(ok.body.machine_id, a1.machineId);
    const [stored] = await events(`&machine=${a1.machineId}&source=threat`);
    t.same(
      [stored.id, stored.source, stored.kind, stored.severity, stored.customer_id, stored.body.process, stored.body.file.sha256, stored.body.evidence.renamed_files],
      [ok.body.id, 'threat', 'ransomware.behaviour', 'high', a1.customerId, { pid: 4242, exe: '/usr/bin/python3', cmdline: 'python3 enc.py /srv' }, 'a'.repeat(64), 120],
      'the detection is kept under the token\'s machine and its customer',
    );

    // Scopes: a telemetry token (or one for everything else) cannot post threats.
    const before = await count();
    const wrong = await agentPost(s, AGENT_API.threats, threat(), await token(s, a1, ['telemetry']));
    t.same([wrong.status, wrong.body.error.code, wrong.body.error.details.required_scope], [403, 'FORBIDDEN', 'threat_reporting'], 'a telemetry token cannot post threats');
    const others = await token(s, a1, ['telemetry', 'file_analysis', 'status:write', 'snapshots:read', 'license:refresh']);
    t.equal((await agentPost(s, AGENT_API.threats, threat(), others)).status, 403, 'nor can a token of every other scope');
    t.equal((await agentPost(s, AGENT_API.files, { sha256: 'a'.repeat(64) }, await token(s, a1, ['threat_reporting']))).status, 403, 'a threat token cannot ask for file verdicts');
    t.equal((await agentPost(s, AGENT_API.telemetry, { events: [{ kind: 'x', at: now() }] }, await token(s, a1, ['file_analysis']))).status, 403, 'a file token cannot send telemetry');

    // Tokens: none, replayed, expired, forged, tampered.
    t.equal((await s.req('POST', AGENT_API.threats, threat(), { key: null })).status, 401, 'no token: 401');
    t.equal((await s.req('POST', AGENT_API.threats, threat())).status, 401, 'an admin API key is not an agent token');
    const once = await token(s, a1, ['threat_reporting']);
    t.equal((await agentPost(s, AGENT_API.threats, threat(), once)).status, 201);
    const replay = await agentPost(s, AGENT_API.threats, threat(), once);
    t.same([replay.status, replay.body.error.code], [401, 'PROOF_REPLAYED'], 'a used token is refused');
    const stale = await token(s, a1, ['threat_reporting']);
    s.clock.offsetMs += 16 * 60_000;
    const expired = await agentPost(s, AGENT_API.threats, threat(), stale);
    s.clock.offsetMs -= 16 * 60_000;
    t.same([expired.status, expired.body.error.code], [401, 'UNAUTHORIZED'], 'an expired token is refused');
    t.match(expired.body.error.message, /expired/);
    const claims = decodeJwt(await token(s, a1, ['threat_reporting']));
    const { privateKey: foreign } = generateKeyPairSync('ed25519');
    const forged = await new SignJWT({ ...claims, jti: `${claims.jti}-f`, nonce: `${claims.nonce}-f` }).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: s.keys.activeKid()! }).sign(foreign);
    t.equal((await agentPost(s, AGENT_API.threats, threat(), forged)).status, 401, "a token signed with another key under the server's kid is refused");
    const real = (await token(s, a1, ['threat_reporting'])).split('.');
    const asB = Buffer.from(JSON.stringify({ ...decodeJwt(real.join('.')), sub: b1.machineId })).toString('base64url');
    t.equal((await agentPost(s, AGENT_API.threats, threat(), [real[0], asB, real[2]].join('.'))).status, 401, 'a token whose subject was changed is refused');
    const selfIssued = await new SignJWT({ iss: TOKEN_ISSUER, aud: AUD_AGENT_API, sub: b1.machineId, scope: 'threat_reporting', jti: 'x', nonce: 'y', iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 }).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: s.keys.activeKid()! }).sign(foreign);
    t.equal((await agentPost(s, AGENT_API.threats, threat(), selfIssued)).status, 401, 'a self-issued token for another machine is refused');
    t.equal(await count(), before + 1, 'of all these, only the one good token stored anything');

    // The body names another machine: refused, nothing filed under either.
    const spoof = await agentPost(s, AGENT_API.threats, threat({ machine_id: b1.machineId, kind: 'spoofed' }), await token(s, a1, ['threat_reporting']));
    t.same([spoof.status, spoof.body.error.code], [403, 'FORBIDDEN'], 'a threat naming another machine is refused');
    t.same(await events('&kind=spoofed'), [], 'nothing filed under either machine');
    t.same(await events(`&machine=${b1.machineId}`), [], 'the other machine has no events');
    const own = await agentPost(s, AGENT_API.threats, threat({ machine_id: a1.machineId, kind: 'named.self' }), await token(s, a1, ['threat_reporting']));
    t.equal(own.status, 201, 'naming its own machine is fine');
    t.notOk('machine_id' in (await events('&kind=named.self'))[0].body, 'the body does not carry a machine id of its own');
    const spoofTel = await agentPost(s, AGENT_API.telemetry, { machine_id: b1.machineId, events: [{ kind: 'spoofed', at: now() }] }, await token(s, a1, ['telemetry']));
    t.equal(spoofTel.status, 403, 'telemetry naming another machine is refused');
    const spoofFile = await agentPost(s, AGENT_API.files, { machine_id: b1.machineId, sha256: 'a'.repeat(64) }, await token(s, a1, ['file_analysis']));
    t.equal(spoofFile.status, 403, 'a file naming another machine is refused');

    // Malformed JSON, unknown fields, bad values: 400 naming the field, nothing stored.
    const n0 = await count();
    const malformed = await s.req('POST', AGENT_API.threats, '{"kind": "x", ', { key: null, headers: { authorization: `Bearer ${await token(s, a1, ['threat_reporting'])}` } });
    t.same([malformed.status, malformed.body.error.code], [400, 'MALFORMED_JSON']);
    const bad: Array<[string, unknown, RegExp]> = [
      ['an unknown top-level field', threat({ verdict: 'benign' }), /verdict|additional/],
      ['an unknown process field', threat({ process: { pid: 1, env: 'X=1' } }), /process/],
      ['a severity out of the list', threat({ severity: 'apocalyptic' }), /severity/],
      ['an upper-case kind', threat({ kind: 'DROP TABLE events' }), /kind/],
      ['a negative pid', threat({ process: { pid: -1 } }), /pid/],
      ['an over-long cmdline', threat({ process: { pid: 1, cmdline: 'x'.repeat(20_000) } }), /cmdline/],
      ['a non-hex sha256', threat({ file: { sha256: 'z'.repeat(64) } }), /sha256/],
      ['a time in the future', threat({ observed_at: new Date(Date.now() + 3_600_000).toISOString() }), /observed_at/],
      ['a time older than retention', threat({ observed_at: '2001-01-01T00:00:00Z' }), /observed_at/],
      ['not a time', threat({ observed_at: 'yesterday' }), /observed_at/],
      ['an array body', [threat()], /object/],
    ];
    for (const [what, body, field] of bad) {
      const r = await agentPost(s, AGENT_API.threats, body, await token(s, a1, ['threat_reporting']));
      t.equal(r.status, 400, `${what}: 400`);
      t.match(JSON.stringify(r.body.error), field, `${what}: names the field`);
    }
    const bigThreat = await agentPost(s, AGENT_API.threats, threat({ evidence: { blob: 'x'.repeat(70_000) } }), await token(s, a1, ['threat_reporting']));
    t.same([bigThreat.status, bigThreat.body.error.code], [413, 'PAYLOAD_TOO_LARGE'], 'a threat over 64 KiB is 413');
    t.equal(await count(), n0, 'none of the refused threats was stored');

    // --- intel: YARA rules and hash lists ---------------------------------------------------
    const broken = await s.req('POST', '/api/v1/yara-rules', { name: 'broken', source: 'rule broken { strings: $a = "x" condition: $b }' });
    t.same([broken.status, broken.body.error.code], [400, 'YARA_RULE_INVALID'], 'a rule that does not compile is refused');
    t.match(broken.body.error.message, /undefined string "\$b"/, "with yarac's message");
    t.notMatch(JSON.stringify(broken.body), /aegis-yara-/, 'the temporary path is not shown');
    const syntax = await s.req('POST', '/api/v1/yara-rules', { name: 'syntax', source: 'rule { nonsense' });
    t.same([syntax.status, syntax.body.error.code], [400, 'YARA_RULE_INVALID'], 'a syntax error is refused');
    const include = await s.req('POST', '/api/v1/yara-rules', { name: 'inc', source: 'include "/etc/passwd"\nrule r { condition: true }' });
    t.same([include.status, include.body.error.code], [400, 'YARA_RULE_INVALID'], 'include is refused');
    t.same((await s.req('GET', '/api/v1/yara-rules')).body.items, [], 'no refused rule was kept');
    const rule = await s.req('POST', '/api/v1/yara-rules', { name: 'aegis_test_marker', source: RULE, description: 'test marker' });
    t.equal(rule.status, 201, JSON.stringify(rule.body));
    t.equal((await s.req('POST', '/api/v1/yara-rules', { name: 'aegis_test_marker', source: RULE })).status, 409, 'a rule name is unique');
    t.equal((await s.req('POST', '/api/v1/yara-rules', { name: 'x', source: RULE, extra: 1 })).status, 400, 'unknown fields refused');
    const susp = await s.req('POST', '/api/v1/yara-rules', { name: 'packed_elf', source: 'rule packed_elf { strings: $u = "UPX!" condition: $u }', verdict: 'suspicious' });
    t.equal(susp.status, 201);
    const badFile = Buffer.from('some dropper bytes');
    const listed = await s.req('POST', '/api/v1/hash-lists', { list: 'known-bad', algorithm: 'sha256', hash: sha('sha256', badFile).toUpperCase(), verdict: 'malicious', description: 'seen 2026-11' });
    t.equal(listed.status, 201, JSON.stringify(listed.body));
    t.equal(listed.body.hash, sha('sha256', badFile), 'stored lower-case');
    const goodFile = Buffer.from('the distro ls binary');
    t.equal((await s.req('POST', '/api/v1/hash-lists', { list: 'allow', algorithm: 'md5', hash: sha('md5', goodFile), verdict: 'clean' })).status, 201);
    t.equal((await s.req('POST', '/api/v1/hash-lists', { list: 'known-bad', algorithm: 'sha256', hash: sha('sha256', badFile), verdict: 'malicious' })).status, 409, 'one entry per list and digest');
    t.equal((await s.req('POST', '/api/v1/hash-lists', { list: 'x', algorithm: 'sha1', hash: 'a'.repeat(64), verdict: 'malicious' })).status, 400, 'a digest of the wrong length for its algorithm');
    t.equal((await s.req('GET', '/api/v1/hash-lists?list=known-bad')).body.items.length, 1);
    t.equal((await s.req('GET', '/api/v1/hash-lists?list=a;drop')).status, 400, 'a bad list name is refused');
    t.equal((await s.req('GET', '/api/v1/hash-lists?bogus=1')).status, 400, 'unknown parameters refused');

    // --- files --------------------------------------------------------------------------------
    const file = async (body: Record<string, unknown>) => agentPost(s, AGENT_API.files, body, await token(s, a1, ['file_analysis']));
    const withBytes = (b: Buffer, extra: Record<string, unknown> = {}) => ({ sha256: sha('sha256', b), sha1: sha('sha1', b), md5: sha('md5', b), size: b.length, path: '/tmp/x', content_base64: b.toString('base64'), ...extra });
    const evil = await file(withBytes(EVIL));
    t.equal(evil.status, 200, JSON.stringify(evil.body));
    t.same([evil.body.verdict, evil.body.yara_matches.map((m: any) => [m.name, m.rule, m.verdict]), evil.body.scan], ['malicious', [['aegis_test_marker', 'aegis_test_marker', 'malicious']], { status: 'ok', rules: 2 }], 'a file matching a real YARA rule is malicious');
    const upx = await file(withBytes(Buffer.from('\u007fELF....UPX!....')));
    t.same([upx.body.verdict, upx.body.yara_matches.map((m: any) => m.name)], ['suspicious', ['packed_elf']], 'a suspicious rule makes it suspicious');
    const hit = await file({ sha256: sha('sha256', badFile) });
    t.same([hit.body.verdict, hit.body.hash_list_matches, hit.body.scan], ['malicious', [{ list: 'known-bad', algorithm: 'sha256', hash: sha('sha256', badFile), verdict: 'malicious' }], null], 'a hash list hit, digests only, is malicious');
    const allowed = await file(withBytes(goodFile));
    t.same([allowed.body.verdict, allowed.body.hash_list_matches.map((m: any) => m.list)], ['clean', ['allow']], 'an allow-list hit is clean');
    const plain = await file(withBytes(Buffer.from('nothing to see')));
    t.same([plain.body.verdict, plain.body.yara_matches], ['clean', []], 'scanned by every rule, no match: clean');
    const unknown = await file({ sha256: sha('sha256', 'never seen') });
    t.equal(unknown.body.verdict, 'unknown', 'digests alone, on no list: unknown');
    const verdictEvents = await events(`&machine=${a1.machineId}&source=file_verdict`);
    t.equal(verdictEvents.length, 6, 'each verdict is an event');
    const ev = verdictEvents.find((e) => e.id === evil.body.event_id);
    t.same([ev.kind, ev.severity, ev.body.sha256, ev.body.bytes_received, ev.body.verdict], ['malicious', 'high', sha('sha256', EVIL), EVIL.length, 'malicious']);
    t.notOk(JSON.stringify(ev.body).includes(EVIL.toString('base64')), 'the bytes are not kept');

    const n1 = await count();
    const mismatch = await file(withBytes(EVIL, { sha256: sha('sha256', 'other') }));
    t.same([mismatch.status, mismatch.body.error.code, mismatch.body.error.details.mismatched], [400, 'HASH_MISMATCH', ['sha256']], 'bytes that are not the sha256 given');
    const md5Wrong = await file(withBytes(EVIL, { md5: sha('md5', 'other') }));
    t.same([md5Wrong.status, md5Wrong.body.error.details.mismatched], [400, ['md5']], 'a wrong md5 alongside a right sha256');
    const hidden = await file(withBytes(Buffer.from('innocent'), { content_base64: EVIL.toString('base64') }));
    t.same([hidden.status, hidden.body.error.code], [400, 'HASH_MISMATCH'], "evil bytes under a clean file's digests are refused, not judged by the digests");
    t.equal((await file({ sha256: sha('sha256', EVIL), content_base64: 'not base64!!' })).status, 400, 'bytes that are not base64');
    t.equal((await file({ sha256: 'a'.repeat(63) })).status, 400, 'a short sha256');
    t.equal((await file({ md5: sha('md5', EVIL) })).status, 400, 'sha256 is required');
    t.equal((await file({ sha256: sha('sha256', EVIL), color: 'red' })).status, 400, 'unknown fields refused');
    const big = Buffer.alloc(4097, 0x41);
    const over = await file(withBytes(big));
    t.same([over.status, over.body.error.code, over.body.error.details], [413, 'PAYLOAD_TOO_LARGE', { limit: 4096, field: '/content_base64' }], 'bytes over AEGIS_FILE_MAX_BYTES: 413 naming the limit');
    const huge = await file(withBytes(Buffer.alloc(200_000, 0x41)));
    t.same([huge.status, huge.body.error.code], [413, 'PAYLOAD_TOO_LARGE'], 'a body far over the limit is cut off at the listener');
    t.equal(await count(), n1, 'no refused file left an event');

    // Deleting the rules: the same bytes are no longer judged malicious.
    t.equal((await s.req('DELETE', `/api/v1/yara-rules/${rule.body.id}`)).status, 200);
    t.equal((await s.req('DELETE', `/api/v1/yara-rules/${rule.body.id}`)).status, 404, 'deleted once');
    t.equal((await s.req('DELETE', `/api/v1/yara-rules/${susp.body.id}`)).status, 200);
    const after = await file(withBytes(EVIL));
    t.same([after.body.verdict, after.body.scan], ['unknown', { status: 'ok', rules: 0 }], 'no rules, no list hit: unknown');
    t.equal((await s.req('DELETE', `/api/v1/hash-lists/${listed.body.id}`)).status, 200);
    t.equal((await file({ sha256: sha('sha256', badFile) })).body.verdict, 'unknown', 'off the list: unknown');
    const audit = (await s.req('GET', '/api/v1/admin/audit-logs?limit=200')).body;
    const types = new Set(((audit.items ?? audit.logs ?? audit) as any[]).map((e: any) => e.event_type));
    for (const e of ['intel.yara_rule_added', 'intel.yara_rule_deleted', 'intel.hash_added', 'intel.hash_deleted']) t.ok(types.has(e), `${e} audited`);

    // --- telemetry ------------------------------------------------------------------------------
    const tel = (n: number, fields: Record<string, unknown> = { pid: 1, exe: '/bin/sh', ok: true, note: null }) => ({ events: Array.from({ length: n }, (_, i) => ({ kind: 'process.exec', at: new Date(s.clock.now().getTime() - i * 1000).toISOString(), fields })) });
    const sent = await agentPost(s, AGENT_API.telemetry, tel(3), await token(s, a2, ['telemetry']));
    t.same([sent.status, sent.body], [202, { accepted: 3 }], JSON.stringify(sent.body));
    const telEvents = await events(`&machine=${a2.machineId}&source=telemetry`);
    t.same([telEvents.length, telEvents[0].kind, telEvents[0].body.fields], [3, 'process.exec', { pid: 1, exe: '/bin/sh', ok: true, note: null }]);
    t.ok(telEvents[0].at > telEvents[1].at, 'newest first');
    const n2 = await count();
    const batch = await agentPost(s, AGENT_API.telemetry, tel(21), await token(s, a2, ['telemetry']));
    t.same([batch.status, batch.body.error.code, batch.body.error.details], [413, 'PAYLOAD_TOO_LARGE', { limit: 20, field: '/events' }], 'a batch over AEGIS_TELEMETRY_MAX_EVENTS: 413 naming the limit');
    const badTel: Array<[string, unknown]> = [
      ['an over-long field value', tel(2, { cmd: 'x'.repeat(3000) })],
      ['a nested field', tel(2, { proc: { pid: 1 } })],
      ['too many fields', tel(1, Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`f${i}`, i])))],
      ['a field name with spaces', tel(1, { 'a b': 1 })],
      ['an empty batch', { events: [] }],
      ['an unknown event field', { events: [{ kind: 'x', at: now(), severity: 'high' }] }],
      ['one event in the future', { events: [{ kind: 'x', at: now() }, { kind: 'x', at: new Date(Date.now() + 86_400_000).toISOString() }] }],
    ];
    for (const [what, body] of badTel) {
      const r = await agentPost(s, AGENT_API.telemetry, body, await token(s, a2, ['telemetry']));
      t.equal(r.status, 400, `${what}: 400 ${JSON.stringify(r.body?.error?.details)?.slice(0, 120)}`);
    }
    const bigTel = await agentPost(s, AGENT_API.telemetry, tel(20, { a: 'x'.repeat(2000), b: 'y'.repeat(2000), c: 'z'.repeat(2000), d: 'w'.repeat(2000), e: 'v'.repeat(2000), f: 'u'.repeat(2000), g: 't'.repeat(2000), h: 's'.repeat(2000) }), await token(s, a2, ['telemetry']));
    t.equal(bigTel.status, 202, 'a full batch within the body limit is taken');
    const tooBig = await agentPost(s, AGENT_API.telemetry, tel(20, Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`f${i}`, 'x'.repeat(2000)]))), await token(s, a2, ['telemetry']));
    t.same([tooBig.status, tooBig.body.error.code], [413, 'PAYLOAD_TOO_LARGE'], 'a batch body over 1 MiB: 413');
    t.equal(await count(), n2 + 20, 'only the good batch was stored: refused batches stored nothing, not even their good events');

    // --- events read: filters, paging, tenancy ---------------------------------------------------
    const keyA = (await s.app.apiKeys.create('events-a', [...SCOPES], a1.customerId)).key;
    const keyB = (await s.app.apiKeys.create('events-b', [...SCOPES], b1.customerId)).key;
    t.equal((await agentPost(s, AGENT_API.threats, threat({ kind: 'b.only' }), await token(s, b1, ['threat_reporting']))).status, 201);
    const seenByA = await events('', keyA);
    t.ok(seenByA.length > 0 && seenByA.every((e) => e.customer_id === a1.customerId), "key A sees its customer's machines' events only");
    t.ok(seenByA.some((e) => e.machine_id === a2.machineId), "…of all of its customer's machines");
    t.same((await events('', keyB)).map((e) => e.kind), ['b.only'], 'key B sees only its own');
    const foreign404 = await s.req('GET', `/api/v1/events?machine=${b1.machineId}`, undefined, { key: keyA });
    t.same([foreign404.status, foreign404.body.error.code], [404, 'NOT_FOUND'], "another customer's machine is the unknown-id 404");
    t.equal((await s.req('GET', '/api/v1/yara-rules', undefined, { key: keyA })).status, 403, 'a restricted key cannot read the global rules');
    t.equal((await s.req('POST', '/api/v1/hash-lists', { list: 'mine', algorithm: 'md5', hash: 'a'.repeat(32), verdict: 'clean' }, { key: keyA })).status, 403, '…nor allow-list a digest for every customer');
    const noScope = (await s.app.apiKeys.create('no-events', ['customers:read'])).key;
    t.equal((await s.req('GET', '/api/v1/events', undefined, { key: noScope })).status, 403, 'events:read is required');
    const page1 = await s.req('GET', `/api/v1/events?source=telemetry&limit=5`);
    t.equal(page1.body.items.length, 5);
    const page2 = await s.req('GET', `/api/v1/events?source=telemetry&limit=5&cursor=${page1.body.next_cursor}`);
    t.notOk(page2.body.items.some((e: any) => page1.body.items.some((f: any) => f.id === e.id)), 'pages do not overlap');
    t.ok(page2.body.items[0].at <= page1.body.items[4].at, 'and continue in time order');
    for (const q of ['source=alerts', 'machine=not-a-uuid', 'since=yesterday', 'limit=0', 'limit=1001', 'cursor=abc', "kind=x';drop", 'bogus=1', 'source=threat&source=flow']) {
      t.equal((await s.req('GET', `/api/v1/events?${q}`)).status, 400, `${q}: 400`);
    }
    t.same((await events('&source=threat,file_verdict&kind=ransomware.behaviour')).every((e) => e.source === 'threat'), true, 'source and kind filter');
    const gone = await s.req('DELETE', `/api/v1/customers/${b1.customerId}?force=true`);
    t.equal(gone.status, 204, JSON.stringify(gone.body));
    t.same((await events('')).filter((e) => e.customer_id === b1.customerId || e.machine_id === b1.machineId), [], "a deleted customer's events go with it");
    t.ok((await events('')).some((e) => e.customer_id === a1.customerId), "…and no one else's");
    const since = (await events(`&machine=${a2.machineId}&source=telemetry`))[1].at;
    t.ok((await events(`&machine=${a2.machineId}&since=${since}`)).every((e) => e.at >= since), 'since filters by when it happened');
  });

  t.test('retention trims by age and by row count, oldest first', async (t) => {
    const url = await newDatabase();
    const s = await startTestServer({ ...(url === undefined ? {} : { databaseUrl: url }), env: { AEGIS_EVENT_RETENTION_DAYS: '2', AEGIS_EVENT_MAX_ROWS: '5' } });
    t.teardown(() => s.close());
    const h = await activateTestHost(s, 'ev-ret');
    const at = (msAgo: number) => new Date(s.clock.now().getTime() - msAgo).toISOString();
    const day = 86_400_000;
    const batch = { events: [...[3, 2, 1].map((i) => ({ kind: 'old', at: at(day + i * 1000) })), ...[4, 3, 2, 1].map((i) => ({ kind: 'new', at: at(i * 1000) }))] };
    t.equal((await agentPost(s, AGENT_API.telemetry, batch, await token(s, h, ['telemetry']))).status, 202);
    t.same(await s.app.events.prune(), { expired: 0, over_cap: 2 }, 'seven rows, cap five: the two oldest go');
    const left = (await s.req('GET', '/api/v1/events')).body.items as any[];
    t.same(left.map((e) => e.kind), ['new', 'new', 'new', 'new', 'old'], 'the newest five remain');
    t.equal(left[4].at, batch.events[2]!.at, 'the newest of the old ones is the one kept');
    s.clock.advanceDays(1.5);
    t.same(await s.app.events.prune(), { expired: 1, over_cap: 0 }, 'older than two days: expired');
    t.same(((await s.req('GET', '/api/v1/events')).body.items as any[]).map((e) => e.kind), ['new', 'new', 'new', 'new']);
  });

  t.test('a scan that runs out of time is unknown, and scans queue rather than pile up', async (t) => {
    if (!requireCapability(t, missingCommand('yara', 'yarac'))) return;
    const url = await newDatabase();
    const s = await startTestServer({ ...(url === undefined ? {} : { databaseUrl: url }), env: { AEGIS_YARA_TIMEOUT_SECONDS: '1' } });
    t.teardown(() => s.close());
    const h = await activateTestHost(s, 'ev-slow');
    // Quadratic in the file's size: 64 KiB takes far longer than a second.
    const slow = 'rule slow { condition: for all i in (0..filesize) : ( for all j in (0..filesize) : ( uint8(i) != uint8(j) + 7 ) ) }';
    t.equal((await s.req('POST', '/api/v1/yara-rules', { name: 'slow', source: slow })).status, 201, JSON.stringify(slow));
    const bytes = Buffer.alloc(64 * 1024);
    const body = { sha256: sha('sha256', bytes), content_base64: bytes.toString('base64') };
    const started = Date.now();
    const answers = await Promise.all([0, 1, 2].map(async () => agentPost(s, AGENT_API.files, body, await token(s, h, ['file_analysis']))));
    const took = Date.now() - started;
    for (const a of answers) t.same([a.status, a.body.verdict, a.body.scan?.status], [200, 'unknown', 'timeout'], 'timed out: unknown, and said so');
    t.ok(took >= 1500, `three one-second scans, two at a time, took ${took} ms`);
    const kept = (await s.req('GET', '/api/v1/events?source=file_verdict')).body.items as any[];
    t.same(kept.map((e) => [e.kind, e.body.scan.status]), [['unknown', 'timeout'], ['unknown', 'timeout'], ['unknown', 'timeout']], 'each kept as an unknown verdict');
  });

  t.test('over mTLS: certificate-bound tokens, filed under the certificate\'s machine', async (t) => {
    const url = await newDatabase();
    const s = await startMtlsServer(url === undefined ? {} : { databaseUrl: url });
    t.teardown(() => s.close());
    const c = await s.req('POST', '/api/v1/customers', { name: 'mTLS events' });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', max_machines: 5 });
    const activate = async (name: string) => {
      const host = new TestHost(name);
      const r = await s.req('POST', '/api/v1/activations', host.activation(l.body.license_key, { csr: await createHostCsr(host.privateKey, name) }), { key: null });
      if (r.status !== 201) throw new Error(JSON.stringify(r.body));
      return { id: r.body.machine_id as string, cert: r.body.client_certificate as string, key: host.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
    };
    const a = await activate('mtls-ev-a');
    const b = await activate('mtls-ev-b');
    const call = (m: { cert: string; key: string }, path: string, body: unknown, bearer?: string) => tlsRequest(s.agentUrl, 'POST', path, { ca: s.caPem, cert: m.cert, key: m.key, body, ...(bearer ? { token: bearer } : {}) });
    const tok = async (m: { cert: string; key: string }, scope: string[]) => (await call(m, AGENT_API.token, { scope })).body.access_token as string;
    const threat = { kind: 'cryptominer', severity: 'medium', observed_at: new Date().toISOString(), process: { pid: 77, exe: '/tmp/xmrig' } };
    const ok = await call(a, AGENT_API.threats, threat, await tok(a, ['threat_reporting']));
    t.same([ok.status, ok.body.machine_id], [201, a.id], 'filed under the certificate\'s machine');
    const lifted = await call(b, AGENT_API.threats, threat, await tok(a, ['threat_reporting']));
    t.equal(lifted.status, 401, "A's token with B's certificate is refused");
    const verdict = await call(a, AGENT_API.files, { sha256: sha('sha256', 'x') }, await tok(a, ['file_analysis']));
    t.same([verdict.status, verdict.body.verdict], [200, 'unknown']);
    const main = await s.req('POST', AGENT_API.threats, threat, { key: null });
    t.equal(main.status, 404, 'with mTLS on, the main listener has no agent routes');
    const kept = (await s.req('GET', '/api/v1/events')).body.items as any[];
    t.same(kept.map((e) => [e.source, e.machine_id]).sort(), [['file_verdict', a.id], ['threat', a.id]], "only A's two events, nothing for B");
  });
}
