#!/usr/bin/env node
/** aegisctl: the Aegis operator CLI. See program.ts for the commands, exit_codes.ts for the codes. */
import { run } from './program.js';

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

// EPIPE on stdout (e.g. `aegisctl licenses list | head -1`) is not an error worth a trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

const code = await run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  readStdin,
  now: () => new Date(),
});
process.exitCode = code;
