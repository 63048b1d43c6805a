/**
 * The Prometheus text exposition format (0.0.4), read strictly: a line that is not HELP,
 * TYPE, a comment, or a well-formed sample of a declared family is an error naming the
 * line. Label values may only use the format's three escapes. And `promtool check
 * metrics`, the real tool, on the same text.
 */
import { spawnSync } from 'node:child_process';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: Sample[];
  types: Map<string, string>;
  /** The value of the one sample of `name` whose labels include `labels`; undefined if none. */
  value(name: string, labels?: Record<string, string>): number | undefined;
  /** Every sample of `name` whose labels include `labels`. */
  all(name: string, labels?: Record<string, string>): Sample[];
}

export class ExpositionError extends Error {
  readonly code = 'EXPOSITION_INVALID';
  constructor(line: number, text: string, why: string) {
    super(`line ${line}: ${why}: ${JSON.stringify(text.slice(0, 200))}`);
    this.name = 'ExpositionError';
  }
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(text: string): number | null {
  // Prometheus reads values with Go's ParseFloat: NaN and Inf in any letter case.
  if (/^nan$/i.test(text)) return NaN;
  if (/^\+?inf(inity)?$/i.test(text)) return Infinity;
  if (/^-inf(inity)?$/i.test(text)) return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) return null;
  return Number(text);
}

/** The family a sample belongs to: histograms and summaries add suffixes to theirs. */
function familyOf(name: string, types: Map<string, string>): string | null {
  if (types.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const t = types.get(base);
      if (t === 'histogram' || (t === 'summary' && suffix !== '_bucket')) return base;
    }
  }
  return null;
}

export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, i) => {
    const n = i + 1;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) {
        if (/^# (HELP|TYPE)\b/.test(line)) throw new ExpositionError(n, line, 'malformed HELP/TYPE line');
        return; // a plain comment
      }
      if (!NAME.test(m[2]!)) throw new ExpositionError(n, line, 'bad metric name');
      if (m[1] === 'HELP') {
        // HELP text may hold only \\ and \n escapes.
        if (/\\[^\\n]/.test(m[3]!.replace(/\\\\/g, ''))) throw new ExpositionError(n, line, 'bad escape in HELP');
        return;
      }
      if (!TYPES.has(m[3]!)) throw new ExpositionError(n, line, 'unknown type');
      if (types.has(m[2]!)) throw new ExpositionError(n, line, 'TYPE declared twice');
      types.set(m[2]!, m[3]!);
      return;
    }
    if (line === '') return; // the format ignores empty lines
    if (line.trim() === '') throw new ExpositionError(n, line, 'whitespace-only line');
    const head = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (!head) throw new ExpositionError(n, line, 'no metric name');
    const name = head[1]!;
    let rest = line.slice(name.length);
    const labels: Record<string, string> = {};
    if (rest.startsWith('{')) {
      rest = rest.slice(1);
      for (;;) {
        if (rest.startsWith('}')) {
          rest = rest.slice(1);
          break;
        }
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(rest);
        if (!lm || !LABEL_NAME.test(lm[1]!)) throw new ExpositionError(n, line, 'bad label');
        rest = rest.slice(lm[0].length);
        let value = '';
        for (;;) {
          const c = rest[0];
          if (c === undefined) throw new ExpositionError(n, line, 'unterminated label value');
          if (c === '"') {
            rest = rest.slice(1);
            break;
          }
          if (c === '\\') {
            const e = rest[1];
            if (e === '\\') value += '\\';
            else if (e === '"') value += '"';
            else if (e === 'n') value += '\n';
            else throw new ExpositionError(n, line, 'bad escape in label value');
            rest = rest.slice(2);
            continue;
          }
          value += c;
          rest = rest.slice(1);
        }
        if (lm[1]! in labels) throw new ExpositionError(n, line, 'label repeated');
        labels[lm[1]!] = value;
        if (rest.startsWith(',')) rest = rest.slice(1);
        else if (!rest.startsWith('}')) throw new ExpositionError(n, line, 'expected , or }');
      }
    }
    const vm = /^ (\S+)( -?\d+)?$/.exec(rest);
    if (!vm) throw new ExpositionError(n, line, 'expected " value [timestamp]"');
    const value = parseValue(vm[1]!);
    if (value === null) throw new ExpositionError(n, line, 'bad value');
    if (familyOf(name, types) === null) throw new ExpositionError(n, line, 'sample of an undeclared family');
    samples.push({ name, labels, value });
  });
  const includes = (s: Sample, labels: Record<string, string>) => Object.entries(labels).every(([k, v]) => s.labels[k] === v);
  const all = (name: string, labels: Record<string, string> = {}) => samples.filter((s) => s.name === name && includes(s, labels));
  return {
    samples,
    types,
    all,
    value(name, labels = {}) {
      const found = all(name, labels);
      if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
      return found[0]?.value;
    },
  };
}

/**
 * `promtool check metrics` on `text`: the problems it reports. A parse error throws; lint
 * findings come back as lines (exit 3), so a caller can tell its own families' from a
 * library's.
 */
export function promtoolCheckMetrics(text: string): string[] {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr}`.trim();
  if (r.status === 0) return [];
  if (r.status === 3 && !/error while linting|parsing error/.test(out)) return out.split('\n');
  throw new Error(`promtool check metrics exited ${r.status ?? r.signal}: ${out}`);
}
