#!/usr/bin/env node
// Splits compiled test files into two streams that scripts/test runs side by side:
//   host:   tests that touch state the whole machine shares (cgroups, BPF programs and
//           pins, network namespaces and veths, qemu, real agents with a datapath). They
//           run one after another, as they always did.
//   server: everything else (servers, databases, NATS, browsers on free ports and
//           private temp dirs), which cannot collide with the host stream.
// A test belongs to the host stream when it, or a test-side module it imports (a suite,
// a harness helper), uses one of the markers below. The check follows relative imports,
// so a runner that only imports its suite is classified by the suite.
// Usage: test-streams.mjs FILE... ; prints "host FILE" or "server FILE" per line.
import { readFileSync, existsSync } from 'node:fs';
import { dirname, resolve, sep } from 'node:path';

const HOST_HARNESS = new Set(['agent.js', 'datapath.js', 'netns.js', 'vm.js', 'raw_socket.js', 'raw_packets.js', 'middlebox.js']);
const HOST_TEXT = /cgroup|\/sys\/fs\/bpf|netns|qemu|unshare|aegis_kmod|insmod/;
const IMPORT = /(?:from\s+|import\s*\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g;

/** Test-side code: test files, suites and the harness, not the product modules they exercise. */
function isTestSide(path) {
  return path.includes(`${sep}test${sep}`) || path.endsWith('.test.js') || path.endsWith('_suite.js');
}

const verdicts = new Map();

function touchesHost(file, seen = new Set()) {
  if (verdicts.has(file)) return verdicts.get(file);
  if (seen.has(file) || !existsSync(file)) return false;
  seen.add(file);
  const parts = file.split(sep);
  // A harness module is judged by what it is (capabilities.js names cgroups only to
  // check for them); tests and suites by what they use.
  const harness = parts.includes('harness');
  if (harness && HOST_HARNESS.has(parts[parts.length - 1])) return remember(file, true);
  const text = readFileSync(file, 'utf8');
  if (!harness && isTestSide(file) && HOST_TEXT.test(text)) return remember(file, true);
  for (const m of text.matchAll(IMPORT)) {
    const dep = resolve(dirname(file), m[1]);
    if (!isTestSide(dep)) continue;
    if (touchesHost(dep, seen)) return remember(file, true);
  }
  return remember(file, false);
}

function remember(file, v) {
  verdicts.set(file, v);
  return v;
}

for (const f of process.argv.slice(2)) {
  process.stdout.write(`${touchesHost(resolve(f)) ? 'host' : 'server'} ${f}\n`);
}
