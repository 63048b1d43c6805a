/**
 * What aegisctl prints. Results go to stdout: aligned tables and "key: value" blocks for
 * people, or with --json the raw JSON and nothing else. Progress and warnings go to
 * stderr: a spinner when stderr is a terminal, one plain line otherwise.
 */

export interface Stream {
  write(chunk: string): unknown;
  isTTY?: boolean;
}

export interface OutputOptions {
  json: boolean;
  quiet: boolean;
  stdout: Stream;
  stderr: Stream;
}

export interface Column<T> {
  header: string;
  value: (row: T) => string;
  /** Right-align (numbers). */
  right?: boolean;
}

const SPINNER_FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** Display width, close enough for a table: combining marks take no column. */
function width(s: string): number {
  return [...s.replace(/[\u0300-\u036f]/g, '')].length;
}

/** Control characters from a peer's data must never reach a terminal. */
export function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** Lines of a table: header, then rows; columns separated by two spaces, no trailing blanks. */
export function renderTable<T>(columns: ReadonlyArray<Column<T>>, rows: readonly T[]): string[] {
  const cells = rows.map((r) => columns.map((c) => printable(String(c.value(r)))));
  const widths = columns.map((c, i) => Math.max(width(c.header), ...cells.map((row) => width(row[i]!))));
  const line = (values: string[]) =>
    values
      .map((v, i) => {
        const pad = ' '.repeat(widths[i]! - width(v));
        return columns[i]!.right ? pad + v : v + pad;
      })
      .join('  ')
      .replace(/\s+$/, '');
  return [line(columns.map((c) => c.header)), ...cells.map(line)];
}

/** Lines of a "key: value" block with the values aligned. */
export function renderFields(fields: ReadonlyArray<readonly [string, string]>): string[] {
  const w = Math.max(0, ...fields.map(([k]) => width(k) + 1));
  return fields.map(([k, v]) => `${(k + ':').padEnd(w)}  ${printable(String(v))}`.replace(/\s+$/, ''));
}

export interface Progress {
  /** Ends the spinner (erasing it); a no-op for the plain line. */
  stop(): void;
}

export class Output {
  constructor(private readonly o: OutputOptions) {}

  get json(): boolean {
    return this.o.json;
  }

  /** Writes the value as JSON (only in --json mode; people get `human` instead). */
  result(value: unknown, human: () => void): void {
    if (this.o.json) this.o.stdout.write(JSON.stringify(value, null, 2) + '\n');
    else human();
  }

  lines(lines: readonly string[]): void {
    if (lines.length > 0) this.o.stdout.write(lines.join('\n') + '\n');
  }

  line(text = ''): void {
    this.o.stdout.write(text + '\n');
  }

  table<T>(columns: ReadonlyArray<Column<T>>, rows: readonly T[], empty: string): void {
    if (rows.length === 0) this.line(empty);
    else this.lines(renderTable(columns, rows));
  }

  fields(fields: ReadonlyArray<readonly [string, string]>): void {
    this.lines(renderFields(fields));
  }

  warn(message: string): void {
    this.o.stderr.write(`aegisctl: warning: ${message}\n`);
  }

  /** Shows that something waits on the network; call stop() when the answer is in. */
  progress(label: string): Progress {
    if (this.o.quiet) return { stop() {} };
    const err = this.o.stderr;
    if (!err.isTTY) {
      err.write(`aegisctl: ${label}...\n`);
      return { stop() {} };
    }
    let i = 0;
    const draw = () => err.write(`\r${SPINNER_FRAMES[i++ % SPINNER_FRAMES.length]} ${label}...`);
    draw();
    const timer = setInterval(draw, 80);
    // The spinner never keeps the process alive on its own.
    timer.unref();
    let stopped = false;
    return {
      stop() {
        if (stopped) return;
        stopped = true;
        clearInterval(timer);
        err.write('\r\x1b[K');
      },
    };
  }

  /** Runs `work` with a progress indicator that is cleared whatever the outcome. */
  async waiting<T>(label: string, work: () => Promise<T>): Promise<T> {
    const p = this.progress(label);
    try {
      return await work();
    } finally {
      p.stop();
    }
  }
}
