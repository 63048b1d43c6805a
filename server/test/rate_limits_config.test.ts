/**
 * AEGIS_RATE_LIMITS: parsed strictly (a bad value stops `aegis-server` with one line),
 * `off` lifts every limit, and a configured limit is what the HTTP routes enforce.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { DEFAULT_RATE_LIMITS, RATE_LIMIT_NAMES, parseRateLimits } from '../src/rate_limit.js';
import { startTestServer } from '../../test/harness/server.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

t.test('parsing: defaults, named entries over them, units, off', async (t) => {
  t.same(parseRateLimits(undefined), DEFAULT_RATE_LIMITS, 'unset: the defaults');
  t.same(parseRateLimits('  '), DEFAULT_RATE_LIMITS, 'empty: the defaults');
  t.same(loadConfig({}, {}).rateLimits, DEFAULT_RATE_LIMITS, 'the config home carries them');
  t.ok(DEFAULT_RATE_LIMITS.validatePerLicense!.perMinute * 60 >= 10_000 * 3, 'a license validated hourly by 10,000 installations fits in the default with room');
  const r = parseRateLimits('validate_per_license=600/min, activation_per_ip=30/min,refresh_per_ip=5/s,heartbeat_per_ip=off,validate_per_ip=7200/h');
  t.same(r.validatePerLicense, { burst: 600, perMinute: 600 });
  t.same(r.activationPerIp, { burst: 30, perMinute: 30 });
  t.same(r.refreshPerIp, { burst: 5, perMinute: 300 }, 'per second');
  t.same(r.validatePerIp, { burst: 7200, perMinute: 120 }, 'per hour');
  t.equal(r.heartbeatPerIp, null, 'one limit off');
  t.same(r.activationPerLicense, DEFAULT_RATE_LIMITS.activationPerLicense, 'names not given keep their default');
  const off = parseRateLimits('off');
  t.same(Object.keys(off).sort(), Object.keys(RATE_LIMIT_NAMES).sort(), 'every limit is named');
  t.ok(Object.values(off).every((v) => v === null), 'off: every limit off');
});

t.test('refusal: unknown names, bad units, bad numbers, duplicates', async (t) => {
  const bad: [string, RegExp][] = [
    ['validate_per_licence=600/min', /unknown limit "validate_per_licence" \(known: .*validate_per_license/],
    ['validate_per_license=600/week', /validate_per_license: unit "week" is not s, min or h/],
    ['validate_per_license=600', /"validate_per_license=600" is not name=N\/unit or name=off/],
    ['validate_per_license=0/min', /must be an integer from 1/],
    ['validate_per_license=1.5/min', /is not name=N\/unit/],
    ['validate_per_license=-1/min', /is not name=N\/unit/],
    ['validate_per_license=5/min,validate_per_license=6/min', /given twice/],
    ['validate_per_license=5/min,', /"" is not name=N\/unit/],
    ['OFF', /is not name=N\/unit/],
  ];
  for (const [text, why] of bad) t.throws(() => loadConfig({}, { AEGIS_RATE_LIMITS: text }), why, text);
  const dir = mkdtempSync(join(tmpdir(), 'aegis-rl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const started = spawnSync(process.execPath, [CLI, '--listen', '127.0.0.1:0'], {
    encoding: 'utf8',
    timeout: 20000,
    // Plain node, as an operator runs it (not under the test runner's NODE_OPTIONS hooks).
    env: { ...process.env, NODE_OPTIONS: '', AEGIS_KEYS_DIR: join(dir, 'keys'), DATABASE_URL: `sqlite:${join(dir, 'aegis.db')}`, AEGIS_RATE_LIMITS: 'activation_per_ip=30/fortnight' },
  });
  t.equal(started.status, 1, 'start refuses');
  t.equal(started.stderr.trim().split('\n').length, 1, `one line: ${started.stderr}`);
  t.match(started.stderr, /^aegis-server: error: AEGIS_RATE_LIMITS: activation_per_ip: unit "fortnight" is not s, min or h/);
});

t.test('over HTTP: a configured limit is enforced, off lifts it', async (t) => {
  // Through the environment the operator sets, not a test hook: the harness passes
  // AEGIS_RATE_LIMITS on to loadConfig as it is.
  const limited = await startTestServer({ env: { AEGIS_RATE_LIMITS: 'validate_per_ip=3/min' } });
  t.teardown(() => limited.close());
  const codes: number[] = [];
  for (let i = 0; i < 5; i++) codes.push((await limited.req('POST', '/api/v1/licenses/validate', { token: 'x' }, { key: null })).status);
  t.same(codes, [200, 200, 200, 429, 429], 'three a minute, then 429');
  const r = await limited.req('POST', '/api/v1/licenses/validate', { token: 'x' }, { key: null });
  t.equal(r.body.error.code, 'RATE_LIMITED');
  t.ok(Number(r.headers.get('retry-after')) >= 1, 'Retry-After');

  const open = await startTestServer({ env: { AEGIS_RATE_LIMITS: 'off' } });
  t.teardown(() => open.close());
  const many: number[] = [];
  for (let i = 0; i < 40; i++) many.push((await open.req('POST', '/api/v1/licenses/validate', { token: 'x' }, { key: null })).status);
  t.ok(many.every((s) => s === 200), 'off: no 429 however many');
});
