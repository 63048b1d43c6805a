/**
 * The alert rules and the Grafana dashboard in deploy/: promtool checks and unit-tests the
 * rules (and a weakened copy must fail those tests, so they can fail), every dashboard
 * expression parses as PromQL, and every aegis_server_* series either names is exported by
 * a real server while every aegis_agent_* one is documented for the agent to match.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingCommand, requireCapability } from './harness/capabilities.js';
import { parseExposition } from './harness/prometheus_text.js';
import { startTestServer } from './harness/server.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RULES = join(ROOT, 'deploy/prometheus/aegis_alerts.yml');
const RULE_TESTS = join(ROOT, 'deploy/prometheus/aegis_alerts.test.yml');
const DASHBOARD = join(ROOT, 'deploy/grafana/aegis-dashboard.json');
const DOC = join(ROOT, 'docs/observability.md');

const promtool = (args: string[], cwd?: string) => spawnSync('promtool', args, { encoding: 'utf8', cwd });

interface Panel {
  id: number;
  title: string;
  type: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets: Array<{ refId: string; expr: string }>;
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { uid: string; title: string; panels: Panel[]; templating: { list: Array<{ name: string }> } };
const expressions = dashboard.panels.flatMap((p) => p.targets.map((x) => x.expr));
/** Grafana's variables replaced by what they stand for, so promtool can parse the query. */
const asPromQL = (expr: string) => expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*');
const seriesNames = (text: string) => new Set([...text.matchAll(/\b(aegis_(?:server|agent)_[a-z0-9_]+)/g)].map((m) => m[1]!));

if (requireCapability(t, missingCommand('promtool'))) {
  t.test('promtool check rules accepts the alert rules', async (t) => {
    const r = promtool(['check', 'rules', RULES]);
    t.equal(r.status, 0, r.stdout + r.stderr);
    t.match(r.stdout, /SUCCESS: 14 rules found/);
  });

  t.test('promtool test rules: each alert fires on the recorded series that should trip it, and only those', async (t) => {
    const r = promtool(['test', 'rules', RULE_TESTS], join(ROOT, 'deploy/prometheus'));
    t.equal(r.status, 0, r.stdout + r.stderr);
    t.match(r.stdout, /SUCCESS/);
  });

  t.test('a weakened rule fails its test (the tests can fail)', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-rules-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    copyFileSync(RULE_TESTS, join(dir, 'aegis_alerts.test.yml'));
    const rules = readFileSync(RULES, 'utf8');
    const weakened = rules.replace('expr: time() - aegis_server_agent_last_seen_timestamp_seconds > 600', 'expr: time() - aegis_server_agent_last_seen_timestamp_seconds > 6000');
    t.not(weakened, rules, 'the rule was found and changed');
    writeFileSync(join(dir, 'aegis_alerts.yml'), weakened);
    const r = promtool(['test', 'rules', 'aegis_alerts.test.yml'], dir);
    t.not(r.status, 0, 'promtool test rules fails');
    t.match(r.stdout + r.stderr, /AegisAgentSilent/, 'naming the alert');
  });

  t.test('the dashboard is sound JSON and every panel expression parses as PromQL', async (t) => {
    t.equal(dashboard.uid, 'aegis-overview');
    const ids = dashboard.panels.map((p) => p.id);
    t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    for (const p of dashboard.panels) {
      t.ok(p.title && p.type && p.gridPos && p.gridPos.w > 0 && p.gridPos.h > 0, `panel ${p.id} has a title, type and place`);
      t.ok(p.targets.length > 0 && p.targets.every((x) => typeof x.expr === 'string' && x.expr.length > 0), `panel ${p.id} queries something`);
    }
    const names = dashboard.templating.list.map((v) => v.name);
    t.same(names.sort(), ['datasource', 'instance'], 'the variables the expressions use are defined');
    // Each expression as a recording rule: promtool check rules parses every one of them.
    const dir = mkdtempSync(join(tmpdir(), 'aegis-dash-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'dashboard_exprs.yml');
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules: expressions.map((e, i) => ({ record: `dashboard:expr_${i}`, expr: asPromQL(e) })) }] }));
    const r = promtool(['check', 'rules', file]);
    t.equal(r.status, 0, r.stdout + r.stderr);
    t.match(r.stdout, new RegExp(`SUCCESS: ${expressions.length} rules found`));
    // And a broken one is refused, so the check is real.
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'd', rules: [{ record: 'dashboard:bad', expr: 'sum by (route (rate(x[5m]))' }] }] }));
    t.not(promtool(['check', 'rules', file]).status, 0, 'a malformed expression fails the check');
  });

  t.test('every aegis_server_* series the rules and dashboard use is exported; every aegis_agent_* one is documented', async (t) => {
    const s = await startTestServer();
    t.teardown(() => s.close());
    const text = await (await fetch(`${s.url}/metrics`, { headers: { 'x-api-key': s.adminKey } })).text();
    const exported = new Set<string>();
    for (const [family, type] of parseExposition(text).types) {
      exported.add(family);
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(family + suffix);
    }
    const used = new Set([...seriesNames(readFileSync(RULES, 'utf8')), ...expressions.flatMap((e) => [...seriesNames(e)])]);
    const doc = readFileSync(DOC, 'utf8');
    for (const name of [...used].sort()) {
      if (name.startsWith('aegis_server_')) t.ok(exported.has(name), `${name} is exported by aegis-server`);
      else t.ok(doc.includes(`\`${name}\``), `${name} is documented in docs/observability.md for the agent`);
    }
    for (const family of exported) {
      if (family.startsWith('aegis_server_') && !/_(bucket|sum|count)$/.test(family)) t.ok(doc.includes(`\`${family}\``), `${family} is documented`);
    }
  });
}
