/**
 * The repository's shape, checked on the sources: the contract is reached only through
 * protocol's entry file, product code never reaches into test code, NATS subjects and the
 * host identifier pattern have one home each, and the README and comments point only at
 * things that live in the repository. These rules keep one definition per concern, so a
 * change to the contract cannot miss a copy.
 */
import t from 'tap';
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SOURCE_ROOTS = ['agent', 'server', 'protocol', 'runtime', 'bench', 'scripts', 'test', 'kmod'];

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (/\.(ts|mjs)$/.test(name)) out.push(p);
  }
  return out;
}

const files = SOURCE_ROOTS.filter((d) => existsSync(join(ROOT, d)))
  .flatMap((d) => walk(join(ROOT, d)))
  .map((abs) => ({ path: relative(ROOT, abs), text: readFileSync(abs, 'utf8') }));
const isTest = (p: string) => p.endsWith('.test.ts') || p.startsWith('test/') || p.includes('/test/');
const product = files.filter((f) => /^(agent|server|protocol|runtime)\/src\//.test(f.path) && !isTest(f.path));

function importsOf(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:import|export)\s[^'";]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
    out.push((m[1] ?? m[2])!);
  }
  return out;
}

t.test('protocol is imported only through protocol/src/index', async (t) => {
  const deep: string[] = [];
  for (const f of files) {
    if (f.path.startsWith('protocol/')) continue;
    for (const spec of importsOf(f.text)) {
      if (/protocol\/src\/(?!index\.js$)[^/]+$/.test(spec)) deep.push(`${f.path} imports ${spec}`);
    }
  }
  t.same(deep, [], 'no deep imports into protocol/src');
});

t.test('product code never imports test code', async (t) => {
  const bad: string[] = [];
  for (const f of product) {
    for (const spec of importsOf(f.text)) {
      if (/(^|\/)test\/|_test_support|test_support\.js$/.test(spec)) bad.push(`${f.path} imports ${spec}`);
    }
  }
  t.same(bad, [], 'agent/src, server/src, protocol/src and runtime/src import nothing from test/');
});

t.test('NATS subjects are spelled only in protocol/src/subjects.ts', async (t) => {
  const bad: string[] = [];
  // `aegis.license.v<N>|…` is the envelope's AEAD context label, not a subject.
  const subject = /['"`](?:aegis\.(?:agent|seg)\.|aegis\.license\.(?!v\$\{)|_INBOX\.|\$JS\.API\.)/;
  for (const f of files) {
    if (isTest(f.path) || f.path === 'protocol/src/subjects.ts') continue;
    f.text.split('\n').forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, '');
      if (/^\s*(\*|\/\*\*?)/.test(line)) return;
      if (subject.test(code)) bad.push(`${f.path}:${i + 1}: ${line.trim()}`);
    });
  }
  t.same(bad, [], 'no hand-written subject strings');
});

t.test('the host identifier pattern has one definition', async (t) => {
  const bad = product
    .filter((f) => f.text.includes('A-Za-z0-9_-]{1,128}') && f.path !== 'protocol/src/identifiers.ts')
    .map((f) => f.path);
  const scripts = files.filter((f) => f.path.startsWith('scripts/') && f.text.includes('A-Za-z0-9_-]{1,128}')).map((f) => f.path);
  t.same([...bad, ...scripts], [], 'only protocol/src/identifiers.ts spells it');
});

t.test('comments and the README point only inside the repository', async (t) => {
  const bad: string[] = [];
  // Case matters for the design document: docs/architecture.md is ours, ARCHITECTURE.md is not.
  const refersOutside = (line: string) => /\bseed\s*0\d\d\b|\bseeds?\/|\bissue\s*#?\d+\b|shared docs/i.test(line) || line.includes('ARCHITECTURE.md');
  for (const f of product) {
    f.text.split('\n').forEach((line, i) => {
      if (refersOutside(line)) bad.push(`${f.path}:${i + 1}: ${line.trim()}`);
    });
  }
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  readme.split('\n').forEach((line, i) => {
    if (refersOutside(line)) bad.push(`README.md:${i + 1}: ${line.trim()}`);
  });
  for (const m of readme.matchAll(/\]\(([^)#]+)(?:#[^)]*)?\)/g)) {
    const target = m[1]!;
    if (/^[a-z]+:/.test(target)) continue;
    if (!existsSync(join(ROOT, target))) bad.push(`README.md links to missing ${target}`);
  }
  for (const doc of ['docs/architecture.md', 'docs/security.md']) {
    if (!existsSync(join(ROOT, doc))) bad.push(`${doc} is missing`);
    else if (!readme.includes(`(${doc})`)) bad.push(`README.md does not link ${doc}`);
  }
  t.same(bad, [], 'nothing refers to documents outside the repository');
});
