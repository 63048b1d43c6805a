#!/usr/bin/env node
// Prints, for TAP files named on the command line, every failing test point with the
// subtests it sits in and the first lines of its diagnostics. scripts/test prints this
// after both streams' full TAP, so the end of a CI log (often all that is kept) says
// what failed and why, not only how many.
import { readFileSync } from 'node:fs';

const MAX_DIAG_LINES = 24;
const MAX_FAILURES = 40;
let shown = 0;

for (const file of process.argv.slice(2)) {
  const lines = readFileSync(file, 'utf8').split('\n');
  const path = []; // [indent, name] of the open subtests
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const sub = /^(\s*)# Subtest: (.*)$/.exec(line);
    if (sub) {
      const indent = sub[1].length;
      while (path.length && path[path.length - 1][0] >= indent) path.pop();
      path.push([indent, sub[2]]);
      continue;
    }
    const bad = /^(\s*)not ok \d+ - (.*)$/.exec(line);
    if (!bad) continue;
    const indent = bad[1].length;
    // A subtest's own closing point sits at its "# Subtest" indent; only the enclosing ones
    // stay on the path.
    const where = path.filter(([d]) => d < indent).map(([, n]) => n);
    if (shown++ >= MAX_FAILURES) continue;
    console.log(`# FAILED: ${[...where, bad[2]].join(' > ')}`);
    if (lines[i + 1]?.trim() === '---') {
      for (let j = i + 2, n = 0; j < lines.length && lines[j].trim() !== '...'; j++, n++) {
        if (n < MAX_DIAG_LINES) console.log(`#   ${lines[j].trim()}`);
      }
    }
  }
}
if (shown > MAX_FAILURES) console.log(`# ... and ${shown - MAX_FAILURES} more failing points`);
