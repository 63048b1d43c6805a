/**
 * The API document (`/openapi.json`) and its reader (`/docs`) against a real server: the
 * router's registry and the document list the same operations; the document is valid
 * OpenAPI 3.1 by the official schema (test/fixtures/openapi_3_1); every example fits its
 * schema; the server's real answers (issuing, validating, activating, refusing) fit the
 * schemas documented for their status; /docs references only same-origin assets that are
 * served with their types and a strict policy; and the attacks: neither discloses a key, a
 * customer or the server's configuration, and no path escapes the asset list. Run once per
 * storage backend (api_document_sqlite.test.ts, api_document_postgres.test.ts).
 */
import type { Test } from 'tap';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { AUD_MODULE_LICENSE, AUD_REFRESH_PROOF, AUD_SNAPSHOTS_PROOF } from '../../protocol/src/index.js';
import { openApiPath } from '../../server/src/http/openapi.js';
import { startTestServer, TestHost, activateTestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/openapi_3_1/', import.meta.url));
const fixture = (name: string): Record<string, unknown> => JSON.parse(readFileSync(FIXTURES + name, 'utf8'));
const SCHEMA_BASE_ID = 'https://spec.openapis.org/oas/3.1/schema-base/2022-10-07';

/**
 * The official OpenAPI 3.1 validator (schema-base: documents and their Schema Objects in
 * the OAS dialect). ajv does not follow `$dynamicRef` through `unevaluatedProperties`, so
 * schema.json's `{"$dynamicRef":"#meta"}` is pointed where dynamic scope resolves it when
 * schema-base is the entry point: schema-base's `$defs/schema` (the OAS dialect).
 */
export function openApi31Validator(): ValidateFunction {
  const ajv = new Ajv2020({ allErrors: true, strict: false, validateFormats: false });
  const schema = JSON.parse(JSON.stringify(fixture('schema.json')).replaceAll('{"$dynamicRef":"#meta"}', JSON.stringify({ $ref: `${SCHEMA_BASE_ID}#/$defs/schema` })));
  ajv.addSchema(fixture('meta_base.schema.json'));
  ajv.addSchema(fixture('dialect_base.schema.json'));
  ajv.addSchema(schema);
  return ajv.compile(fixture('schema-base.json'));
}

type Doc = { paths: Record<string, Record<string, any>>; components: { schemas: Record<string, unknown> } } & Record<string, any>;

/** Compiles `schema` (which may $ref the document's components) as draft 2020-12. */
function schemaChecker(doc: Doc): (schema: unknown) => ValidateFunction {
  const ajv = new Ajv2020({ allErrors: true, strict: false, validateFormats: false });
  ajv.addSchema({ $id: 'urn:aegis:openapi', components: doc.components });
  const cache = new Map<string, ValidateFunction>();
  return (schema) => {
    const text = JSON.stringify(schema).replaceAll('"#/components/', '"urn:aegis:openapi#/components/');
    let v = cache.get(text);
    if (!v) cache.set(text, (v = ajv.compile(JSON.parse(text))));
    return v;
  };
}

/** Every media type object of the document with where it is. */
function mediaTypes(doc: Doc): Array<{ where: string; media: { schema?: unknown; example?: unknown } }> {
  const out: Array<{ where: string; media: { schema?: unknown; example?: unknown } }> = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      for (const [type, media] of Object.entries<any>(op.requestBody?.content ?? {})) out.push({ where: `${method.toUpperCase()} ${path} request ${type}`, media });
      for (const [status, r] of Object.entries<any>(op.responses ?? {})) {
        for (const [type, media] of Object.entries<any>(r.content ?? {})) out.push({ where: `${method.toUpperCase()} ${path} ${status} ${type}`, media });
      }
    }
  }
  return out;
}

/** A raw GET whose path is sent exactly as given (fetch would normalize `..` away first). */
function rawGet(url: string, path: string): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

export function apiDocumentSuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;
  let databaseUrl: string | undefined;

  t.before(async () => {
    databaseUrl = await newDatabase();
    s = await startTestServer(databaseUrl === undefined ? {} : { databaseUrl });
  });
  t.teardown(async () => {
    await s?.close();
  });

  const document = async (): Promise<Doc> => {
    const res = await s.req('GET', '/openapi.json', undefined, { key: null });
    if (res.status !== 200) throw new Error(`/openapi.json answered ${res.status}`);
    return res.body as Doc;
  };

  t.test('every registered route is documented and every documented operation is registered', async (t) => {
    const doc = await document();
    const registered = s.app.router.registered();
    const undocumented = registered.filter((r) => !r.doc).map((r) => `${r.method} ${r.pattern}`);
    t.same(undocumented, [], 'every route registered with a doc');
    const fromRouter = registered.map((r) => `${r.method} ${openApiPath(r.pattern)}`).sort();
    const fromDoc = Object.entries(doc.paths)
      .flatMap(([path, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    t.same(fromDoc, fromRouter, 'the same method + path pairs');
    t.ok(fromDoc.length >= 40, `the document lists ${fromDoc.length} operations`);
    t.ok(fromDoc.includes('POST /api/v1/licenses') && fromDoc.includes('GET /openapi.json') && fromDoc.includes('GET /docs/{asset}'), 'including issuing and itself');
  });

  t.test('the document is valid OpenAPI 3.1 by the official schema, and the check is not vacuous', async (t) => {
    const validate = openApi31Validator();
    const doc = await document();
    t.equal(doc.openapi, '3.1.0');
    t.ok(validate(doc), `valid: ${JSON.stringify(validate.errors?.slice(0, 5))}`);
    // Controls: a broken Schema Object, an unknown operation member and a path without a
    // leading slash each fail the same validator.
    const badSchema = structuredClone(doc);
    badSchema.paths['/health']!.get.responses['200'].content['application/json'].schema = { type: 'nonsense' };
    t.notOk(validate(badSchema), 'a Schema Object with an unknown type is refused');
    const badOp = structuredClone(doc);
    badOp.paths['/health']!.get.handler = 'x';
    t.notOk(validate(badOp), 'an unknown operation member is refused');
    const badPath = structuredClone(doc);
    badPath.paths['health'] = badPath.paths['/health']!;
    t.notOk(validate(badPath), 'a path without its leading slash is refused');
    // Every operation names an auth requirement ([] = public) and a tag, and ids are unique.
    const ops = Object.values(doc.paths).flatMap((item) => Object.values(item));
    t.ok(ops.every((op) => Array.isArray(op.security) && op.tags?.length === 1), 'each operation has security and a tag');
    t.equal(new Set(ops.map((op) => op.operationId)).size, ops.length, 'operationIds are unique');
  });

  t.test('every example validates against its schema (draft 2020-12)', async (t) => {
    const doc = await document();
    const check = schemaChecker(doc);
    let examples = 0;
    for (const { where, media } of mediaTypes(doc)) {
      if (media.schema !== undefined) check(media.schema); // compiles: a valid 2020-12 schema
      if (media.example === undefined) continue;
      examples++;
      const v = check(media.schema);
      t.ok(v(media.example), `${where}: ${JSON.stringify(v.errors?.slice(0, 3))}`);
    }
    t.ok(examples >= 40, `${examples} examples checked (every error status has one)`);
    const issued = doc.paths['/api/v1/licenses']!.post.responses['201'].content['application/json'];
    t.ok(issued.example.license_key, 'the issued license example has a key…');
    t.notOk(/^AEGIS(-[0-9A-HJKMNP-TV-Z]{5}){4}$/.test(issued.example.license_key), '…that is not a well-formed issued key');
  });

  t.test('the real answers fit the schemas documented for their status', async (t) => {
    const doc = await document();
    const check = schemaChecker(doc);
    /** The answer's status must be documented for the operation, and its body must fit. */
    const fits = (method: string, pattern: string, res: { status: number; body: unknown }, what: string): void => {
      const op = doc.paths[openApiPath(pattern)]?.[method.toLowerCase()];
      const documented = op?.responses?.[String(res.status)];
      t.ok(documented, `${what}: ${method} ${pattern} documents ${res.status}`);
      const schema = documented?.content?.['application/json']?.schema;
      if (res.status === 204) {
        t.notOk(schema, `${what}: 204 has no body schema`);
        return;
      }
      const v = check(schema);
      t.ok(v(res.body), `${what}: ${res.status} body fits (${JSON.stringify(v.errors?.slice(0, 3))})`);
    };
    const req = async (method: string, pattern: string, path: string, body: unknown, what: string, opts?: Parameters<TestServer['req']>[3]) => {
      const res = await s.req(method, path, body, opts);
      fits(method, pattern, res, what);
      return res;
    };

    await req('GET', '/health', '/health', undefined, 'health', { key: null });
    await req('GET', '/info', '/info', undefined, 'info', { key: null });
    await req('GET', '/.well-known/jwks.json', '/.well-known/jwks.json', undefined, 'jwks', { key: null });
    await req('GET', '/.well-known/jwks.signed', '/.well-known/jwks.signed', undefined, 'signed jwks', { key: null });

    const customer = await req('POST', '/api/v1/customers', '/api/v1/customers', { name: 'Doc Customer', external_id: 'DOC-001', email: 'doc@example.com' }, 'create customer');
    await req('GET', '/api/v1/customers', '/api/v1/customers?limit=5', undefined, 'list customers');
    await req('GET', '/api/v1/customers/:id', '/api/v1/customers/DOC-001', undefined, 'get customer by external id');
    await req('PATCH', '/api/v1/customers/:id', `/api/v1/customers/${customer.body.id}`, { company: 'Doc Ltd' }, 'patch customer');

    const agentLicense = await req('POST', '/api/v1/licenses', '/api/v1/licenses', { customer_id: 'DOC-001', tier: 'server', license_type: 'subscription', duration_days: 30, max_machines: 3 }, 'issue license');
    const moduleLicense = await req('POST', '/api/v1/licenses', '/api/v1/licenses', { customer_id: 'DOC-001', module_name: 'doc_module', license_type: 'perpetual', allowed_major_versions: ['17'] }, 'issue module license');
    t.equal(typeof moduleLicense.body.token, 'string', 'the module license carries its token');
    await req('GET', '/api/v1/licenses', '/api/v1/licenses', undefined, 'list licenses');
    await req('GET', '/api/v1/licenses/:id', `/api/v1/licenses/${moduleLicense.body.id}`, undefined, 'get module license');

    const valid = await req('POST', '/api/v1/licenses/validate', '/api/v1/licenses/validate', { token: moduleLicense.body.token, module_name: 'doc_module', odoo_version: '17.0' }, 'validate', { key: null });
    t.equal(valid.body.valid, true, 'the module token validates');
    t.equal(JSON.parse(Buffer.from(String(moduleLicense.body.token).split('.')[1], 'base64url').toString()).aud, AUD_MODULE_LICENSE);
    const invalid = await req('POST', '/api/v1/licenses/validate', '/api/v1/licenses/validate', { token: 'e30.e30.e30' }, 'validate garbage', { key: null });
    t.equal(invalid.body.valid, false);
    await req('POST', '/api/v1/licenses/fingerprint', '/api/v1/licenses/fingerprint', { machine_id: 'doc-machine', macs: ['52:54:00:00:00:02'] }, 'fingerprint', { key: null });

    // Activation: by the harness, then a second host whose answer is checked itself.
    const activated = await activateTestHost(s, 'doc-host-1', { licenseKey: agentLicense.body.license_key, customerId: customer.body.id });
    const host = new TestHost('doc-host-2');
    const act = await req('POST', '/api/v1/activations', '/api/v1/activations', host.activation(agentLicense.body.license_key), 'activate', { key: null });
    t.equal(act.status, 201);
    const again = await req('POST', '/api/v1/activations', '/api/v1/activations', new TestHost('doc-host-3').activation('AEGIS-00000-00000-00000-00000'), 'activate unknown key', { key: null });
    t.equal(again.body.error?.code, 'NOT_FOUND', 'an unknown key is a documented 404');
    await req('POST', '/api/v1/machines/:id/refresh', `/api/v1/machines/${act.body.machine_id}/refresh`, { proof: host.proof(AUD_REFRESH_PROOF) }, 'refresh', { key: null });
    await req('GET', '/api/v1/licenses/:id/machines', `/api/v1/licenses/${agentLicense.body.id}/machines`, undefined, 'machines of a license');
    await req('GET', '/api/v1/machines/:id/snapshots', `/api/v1/machines/${activated.machineId}/snapshots`, undefined, 'snapshot fallback', {
      key: null,
      headers: { 'x-aegis-proof': activated.host.proof(AUD_SNAPSHOTS_PROOF) },
    });
    await req('DELETE', '/api/v1/machines/:id', `/api/v1/machines/${act.body.machine_id}`, undefined, 'deactivate');
    await req('DELETE', '/api/v1/licenses/:id/revoke', `/api/v1/licenses/${moduleLicense.body.id}/revoke`, { reason: 'doc test' }, 'revoke');
    await req('GET', '/api/v1/admin/stats', '/api/v1/admin/stats', undefined, 'stats');
    await req('GET', '/api/v1/admin/audit-logs', '/api/v1/admin/audit-logs?limit=20', undefined, 'audit log');
    await req('GET', '/api/v1/seg/maps', '/api/v1/seg/maps', undefined, 'seg maps');
    await req('GET', '/api/v1/agents', '/api/v1/agents', undefined, 'agents');

    // Refusals: each is the error envelope with a code listed under its status.
    await req('GET', '/api/v1/customers', '/api/v1/customers', undefined, 'no key', { key: null });
    const reader = await s.app.apiKeys.create('doc-reader', ['customers:read']);
    await req('POST', '/api/v1/licenses', '/api/v1/licenses', { customer_id: 'DOC-001', tier: 'server', license_type: 'demo' }, 'missing scope', { key: reader.key });
    await req('GET', '/api/v1/customers/:id', '/api/v1/customers/no-such-customer', undefined, 'unknown customer');
    await req('POST', '/api/v1/customers', '/api/v1/customers', { name: '' }, 'invalid body');
    await req('POST', '/api/v1/customers', '/api/v1/customers', '{"name":', 'malformed JSON');
    await req('POST', '/api/v1/customers', '/api/v1/customers', 'name=x', 'wrong content type', { headers: { 'content-type': 'text/plain' } });
    await req('GET', '/api/v1/licenses', '/api/v1/licenses?status=bogus', undefined, 'bad query');
    await req('DELETE', '/api/v1/customers/:id', `/api/v1/customers/${customer.body.id}`, undefined, 'delete with active licenses');
    await req('DELETE', '/api/v1/customers/:id', `/api/v1/customers/${customer.body.id}?force=true`, undefined, 'forced delete');
  });

  t.test('/docs is same-origin only, typed, cached and under a strict policy', async (t) => {
    const page = await fetch(`${s.url}/docs`);
    t.equal(page.status, 200);
    t.match(page.headers.get('content-type'), /^text\/html; charset=utf-8$/);
    const csp = page.headers.get('content-security-policy') ?? '';
    t.match(csp, /default-src 'none'/);
    t.match(csp, /script-src 'self'(;|$)/, 'scripts from this origin only');
    t.notMatch(csp, /unsafe-inline|unsafe-eval|\*|https?:/, 'no inline or eval, no other origin');
    t.match(csp, /frame-ancestors 'none'/);
    t.equal(page.headers.get('x-content-type-options'), 'nosniff');
    const html = await page.text();
    t.notMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, 'no inline script');
    t.notMatch(html, /\son[a-z]+=/i, 'no inline event handler');
    const refs = [...html.matchAll(/\b(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    t.ok(refs.length >= 4, `references: ${refs.join(', ')}`);
    const expected: Record<string, RegExp> = { js: /^text\/javascript/, css: /^text\/css/, png: /^image\/png$/ };
    for (const ref of refs) {
      t.ok(ref.startsWith('/') && !ref.startsWith('//'), `${ref} is same-origin`);
      const res = await fetch(new URL(ref, s.url));
      t.equal(res.status, 200, `${ref} served`);
      t.match(res.headers.get('content-type'), expected[ref.split('.').pop()!]!, `${ref} typed`);
      t.match(res.headers.get('cache-control'), /max-age=\d+/, `${ref} cacheable`);
      const body = Buffer.from(await res.arrayBuffer());
      t.ok(body.length > 0, `${ref} not empty`);
      const etag = res.headers.get('etag')!;
      t.equal((await fetch(new URL(ref, s.url), { headers: { 'if-none-match': etag } })).status, 304, `${ref} revalidates by ETag`);
    }
    // The init script points the reader at this origin's document and turns off URL-given specs.
    const init = await (await fetch(`${s.url}/docs/init.js`)).text();
    t.match(init, /url: '\/openapi\.json'/);
    t.match(init, /queryConfigEnabled: false/);
    t.notMatch(init, /https?:\/\//, 'nothing from another origin');
  });

  t.test('attack: no path under /docs escapes the asset list', async (t) => {
    const attempts = [
      '/docs/../../etc/passwd',
      '/docs/../../../../../../etc/passwd',
      '/docs/..%2f..%2f..%2fetc%2fpasswd',
      '/docs/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
      '/docs/%2e%2e/%2e%2e/etc/passwd',
      '/docs/%252e%252e%252fetc%252fpasswd',
      '/docs/..%5c..%5cetc%5cpasswd',
      '/docs/swagger-ui.css/../../../package.json',
      '/docs/%2fetc%2fpasswd',
      '/docs/..%00/etc/passwd',
      '/docs/package.json',
      '/docs/index.html',
      '/docs/swagger-initializer.js',
      '/docs/swagger-ui-bundle.js.map',
      '/docs/constructor',
      '/docs/__proto__',
      '/docs/hasOwnProperty',
      '/docs/..',
    ];
    for (const path of attempts) {
      const res = await rawGet(s.url, path);
      t.not(res.status, 200, `${path}: ${res.status}`);
      t.notMatch(res.body, /root:.*:0:0:|"name":\s*"(aegis|swagger-ui-dist)"|window\.ui/, `${path}: nothing of another file`);
    }
    // `/docs/.` is `/docs/` once the URL is resolved: the page itself, nothing else.
    const dot = await rawGet(s.url, '/docs/.');
    t.equal(dot.body, await (await fetch(`${s.url}/docs`)).text(), '/docs/. is the page');
  });

  t.test('attack: the document and the page disclose no key, customer or configuration', async (t) => {
    // Data exists now (customers, licenses, machines); the document must not have picked any of it up.
    const customer = await s.req('POST', '/api/v1/customers', { name: 'Secretive Customer', external_id: 'SECRET-CUST', email: 'secret@customer.test' });
    const lic = await s.req('POST', '/api/v1/licenses', { customer_id: customer.body.id, module_name: 'secret_module', license_type: 'perpetual' });
    const agentLic = await s.req('POST', '/api/v1/licenses', { customer_id: customer.body.id, tier: 'server', license_type: 'perpetual' });
    const host = await activateTestHost(s, 'secret-host.internal', { licenseKey: agentLic.body.license_key });
    const text = await (await fetch(`${s.url}/openapi.json`)).text();
    const page = (await (await fetch(`${s.url}/docs`)).text()) + (await (await fetch(`${s.url}/docs/init.js`)).text());
    const secrets: Record<string, string> = {
      'admin API key': s.adminKey,
      'issued license key': lic.body.license_key,
      'issued agent license key': agentLic.body.license_key,
      'license token': lic.body.token,
      'customer name': 'Secretive Customer',
      'customer email': 'secret@customer.test',
      'external id': 'SECRET-CUST',
      'machine id': host.machineId,
      'hostname': 'secret-host.internal',
      'keys directory': s.keysDir,
      'listener address': new URL(s.url).host,
      'signing key id': s.keys.activeKid()!,
      ...(databaseUrl ? { 'database URL': databaseUrl } : {}),
    };
    for (const [what, value] of Object.entries(secrets)) {
      t.ok(value && !text.includes(value), `the document has no ${what}`);
      t.ok(!page.includes(value), `the page has no ${what}`);
    }
    t.notMatch(text, /"d"\s*:|PRIVATE KEY|password|postgres(ql)?:\/\//i, 'no private key material, password or connection string');
    const doc = JSON.parse(text) as Doc;
    t.same(doc.servers, [{ url: '/' }], 'servers: this origin, not the configured address');
    // Public by decision: no credential needed, none is consulted.
    t.equal((await s.req('GET', '/openapi.json', undefined, { key: null })).status, 200, '/openapi.json is public');
    t.equal((await s.req('GET', '/openapi.json', undefined, { key: 'not-a-key' })).status, 200, 'a bad key is not even looked at');
    t.same(doc.paths['/openapi.json']!.get.security, [], 'documented as public');
  });
}
