#!/usr/bin/env node
// Reads a TAP stream on stdin, passes it through to stdout, and ends with one line
// "N passed, N failed, N skipped" counted from the leaf test points (assertions), at
// every depth. A subtest that fails without a failing child (a crash, a timeout, a
// missing plan) counts as one failure, so nothing that broke goes uncounted.
import { Parser } from 'tap-parser';

let passed = 0;
let failed = 0;
let skipped = 0;

function watch(parser) {
  let childFailures = null;
  parser.on('child', (child) => {
    const state = { failures: 0 };
    childFailures = state;
    watchChild(child, state);
  });
  parser.on('assert', (a) => {
    if (childFailures !== null) {
      // The point that closes a subtest: its children were already counted.
      if (!a.ok && childFailures.failures === 0 && !a.skip && !a.todo) failed++;
      childFailures = null;
      return;
    }
    if (a.skip || a.todo) skipped++;
    else if (a.ok) passed++;
    else failed++;
  });
}

function watchChild(parser, state) {
  const before = () => failed;
  const start = before();
  watch(parser);
  parser.on('complete', () => {
    state.failures = failed - start;
  });
}

const root = new Parser();
watch(root);
let bailed = false;
root.on('bailout', () => {
  bailed = true;
});
process.stdin.on('data', (d) => {
  process.stdout.write(d);
  root.write(d);
});
process.stdin.on('end', () => {
  root.end();
  if (bailed) failed++;
  let line = `${passed} passed, ${failed} failed`;
  if (skipped > 0) line += `, ${skipped} skipped`;
  process.stdout.write(`\n${line}\n`);
  process.exitCode = failed > 0 ? 1 : 0;
});
