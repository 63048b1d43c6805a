/** Tables, fields, time formatting and exit-code mapping: the pieces every command prints with. */
import t from 'tap';
import { Output, printable, renderFields, renderTable } from './output.js';
import { formatDuration, formatEpoch, formatWhen } from './time_format.js';
import { ExitCode, exitCodeForApiError } from './exit_codes.js';
import { checkLicenseKey } from './commands_local.js';
import { UsageError, formatError, CtlError } from './errors.js';
import { generateLicenseKey } from '../../../protocol/src/index.js';

t.test('tables align columns, right-align numbers, trim trailing blanks', async (t) => {
  const lines = renderTable(
    [
      { header: 'NAME', value: (r: { n: string; c: number }) => r.n },
      { header: 'COUNT', value: (r) => String(r.c), right: true },
      { header: 'NOTE', value: () => '' },
    ],
    [
      { n: 'a', c: 5 },
      { n: 'longer name', c: 12345 },
    ],
  );
  t.same(lines, ['NAME         COUNT  NOTE', 'a                5', 'longer name  12345']);
});

t.test('fields align values; control characters from peers are neutralised', async (t) => {
  t.same(renderFields([['ID', '1'], ['Long key', 'v']]), ['ID:        1', 'Long key:  v']);
  t.equal(printable('evil\x1b[2Jname\n'), 'evil?[2Jname?');
});

t.test('durations and times: relative and absolute', async (t) => {
  t.equal(formatDuration(42), '42s');
  t.equal(formatDuration(42 * 60), '42m');
  t.equal(formatDuration(3 * 3600 + 12 * 60 + 5), '3h 12m');
  t.equal(formatDuration(3 * 3600), '3h');
  t.equal(formatDuration(12 * 86400 + 4 * 3600), '12d 4h');
  t.equal(formatDuration(30 * 86400 - 5), '30d', 'rounded at the second unit shown');
  t.equal(formatDuration(3599.6), '1h');
  t.equal(formatDuration(0), '0s');
  const now = new Date('2026-11-22T04:48:00Z');
  t.equal(formatWhen('2026-11-22T05:30:00Z', now), 'in 42m (2026-11-22T05:30:00Z)');
  t.equal(formatWhen('2026-11-19T04:48:00.000Z', now), '3d ago (2026-11-19T04:48:00Z)');
  t.equal(formatWhen(null, now, 'never'), 'never');
  t.equal(formatWhen('garbage', now), 'garbage');
  t.equal(formatEpoch(Date.parse('2026-11-22T05:48:00Z') / 1000, now), 'in 1h (2026-11-22T05:48:00Z)');
  t.equal(formatEpoch(undefined, now), '-');
});

t.test('error envelopes map to exit codes by code, then by status', async (t) => {
  t.equal(exitCodeForApiError('SEAT_LIMIT', 409), ExitCode.LICENSING_REFUSED);
  t.equal(exitCodeForApiError('LICENSE_REVOKED', 403), ExitCode.LICENSING_REFUSED);
  t.equal(exitCodeForApiError('HOST_KEY_MISMATCH', 409), ExitCode.LICENSING_REFUSED);
  t.equal(exitCodeForApiError('FORBIDDEN', 403), ExitCode.UNAUTHORIZED);
  t.equal(exitCodeForApiError('UNAUTHORIZED', 401), ExitCode.UNAUTHORIZED);
  t.equal(exitCodeForApiError('NOT_FOUND', 404), ExitCode.NOT_FOUND);
  t.equal(exitCodeForApiError('VALIDATION_FAILED', 400), ExitCode.USAGE);
  t.equal(exitCodeForApiError('SERVER_UNREACHABLE', 503), ExitCode.UNREACHABLE);
  t.equal(exitCodeForApiError('CONFLICT', 409), ExitCode.FAILURE);
  t.equal(exitCodeForApiError('SOMETHING_NEW', 404), ExitCode.NOT_FOUND);
  t.equal(exitCodeForApiError('SOMETHING_NEW', 500), ExitCode.FAILURE);
});

t.test('license keys are checked locally, without echoing the key', async (t) => {
  const key = generateLicenseKey();
  t.equal(checkLicenseKey(key.toLowerCase()), key, 'case and spacing do not matter');
  t.equal(checkLicenseKey(` ${key.replace(/-/g, ' ')} `), key);
  t.throws(() => checkLicenseKey('AEGIS-1234'), UsageError);
  t.throws(() => checkLicenseKey('AEGIS-!!!!!-00000-00000-00000'), /contains "!"/);
  const typo = key.slice(0, 6) + (key[6] === '2' ? '3' : '2') + key.slice(7);
  const err = (() => {
    try {
      checkLicenseKey(typo);
    } catch (e) {
      return e as CtlError;
    }
    return null;
  })();
  t.ok(err instanceof UsageError);
  t.match(err!.message, /check character/);
  t.notMatch(formatError(err), key.slice(6, 11), 'the key is not echoed');
});

t.test('progress: one plain line when stderr is not a terminal, nothing with --quiet', async (t) => {
  const out: string[] = [];
  const err: string[] = [];
  const mk = (quiet: boolean, isTTY: boolean) =>
    new Output({ json: false, quiet, stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s), isTTY } });
  await mk(false, false).waiting('asking', async () => 1);
  t.same(err, ['aegisctl: asking...\n']);
  err.length = 0;
  await mk(true, false).waiting('asking', async () => 1);
  t.same(err, []);
  await mk(false, true).waiting('asking', async () => 1);
  t.match(err.join(''), /asking\.\.\..*\r\x1b\[K$/s, 'the spinner erases itself');
  t.same(out, []);
});
