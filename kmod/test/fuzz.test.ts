/**
 * A short, bounded libFuzzer run over the verifier and the claim reader (clang,
 * ASan + UBSan), seeded from kmod/fuzz/corpus. New inputs go to a scratch directory,
 * never into the committed corpus.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { missingCommand, requireCapability } from '../../test/harness/capabilities.js';

const KMOD = fileURLToPath(new URL('../../../kmod/', import.meta.url));
const SECONDS = Number(process.env.AEGIS_FUZZ_SECONDS ?? 20);

t.test('libFuzzer run over the token verifier', { timeout: 300_000 }, async (t) => {
  const missing = missingCommand('make') ?? (missingCommand('clang-14') && missingCommand('clang'));
  if (!requireCapability(t, missing)) return;

  const build = spawnSync('make', ['-C', KMOD, '--no-print-directory', 'fuzz'], { encoding: 'utf8' });
  t.equal(build.status, 0, `make fuzz${build.status === 0 ? '' : `: ${build.stderr}${build.stdout}`}`);
  if (build.status !== 0) return;

  const work = mkdtempSync(join(tmpdir(), 'aegis-fuzz-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const r = spawnSync(join(KMOD, 'build', 'aegis-fuzz'), [
    `-max_total_time=${SECONDS}`, '-timeout=10', '-rss_limit_mb=1024', '-max_len=9000',
    '-print_final_stats=1', `-artifact_prefix=${work}/`, work, join(KMOD, 'fuzz', 'corpus'),
  ], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const log = `${r.stdout}${r.stderr}`;
  const crash = /==\d+==ERROR|runtime error|invariant broken|deadly signal/.exec(log);
  t.notOk(crash, crash ? `fuzzer found a bug:\n${log.slice(-4000)}` : 'no crash, sanitizer report or broken invariant');
  t.equal(r.status, 0, 'fuzzer exit status');
  const execs = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(log)?.[1] ?? 0);
  t.comment(`fuzz: ${execs} executions in ${SECONDS} s`);
  t.ok(execs > 1000, `${execs} inputs executed`);
});
