/**
 * The installed-package inventory in dpkg's status file (/var/lib/dpkg/status): deb822
 * paragraphs of `Field: value` lines with continuation lines. Only what a vulnerability
 * match needs is kept: each installed binary package with its source package and source
 * version. A paragraph that cannot be read is reported with its number and reason and
 * skipped; it never stops the rest of the file from being read.
 */
import { parseDebianVersion, DebianVersionError } from './debian_version.js';

export interface InstalledPackage {
  package: string;
  version: string;
  architecture: string;
  /** The source package this binary was built from (its own name when `Source:` is absent). */
  source: string;
  /** The source version: `Source: name (version)` when given, else the binary's version. */
  source_version: string;
}

export type DpkgStatusProblemCode =
  | 'LINE_TOO_LONG'
  | 'MALFORMED_LINE'
  | 'DUPLICATE_FIELD'
  | 'MISSING_FIELD'
  | 'INVALID_FIELD'
  | 'TOO_MANY_PARAGRAPHS';

export interface DpkgStatusProblem {
  /** 1-based number of the paragraph in the file. */
  paragraph: number;
  /** 1-based line where the paragraph starts. */
  line: number;
  code: DpkgStatusProblemCode;
  message: string;
}

export interface DpkgInventory {
  packages: InstalledPackage[];
  /** Paragraphs whose package is not installed (removed, config-files only, half-installed…). */
  not_installed: number;
  problems: DpkgStatusProblem[];
}

export interface DpkgStatusLimits {
  /** Longest line accepted; a longer one makes its paragraph a problem. */
  maxLineLength: number;
  /** Paragraphs read at most; the rest are one TOO_MANY_PARAGRAPHS problem. */
  maxParagraphs: number;
}

export const DEFAULT_DPKG_STATUS_LIMITS: DpkgStatusLimits = { maxLineLength: 1 << 20, maxParagraphs: 200_000 };

/** Debian Policy 5.6.1 package names; 5.6.8 architecture names (a wildcard never appears in status). */
export const DEBIAN_PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
const ARCHITECTURE = /^[a-z0-9][a-z0-9-]*$/;
const FIELD_NAME = /^[!-9;-~]+$/;
const SOURCE_FIELD = /^(\S+)(?:\s+\((\S+)\))?$/;

class ParagraphProblem extends Error {
  constructor(
    readonly code: DpkgStatusProblemCode,
    message: string,
  ) {
    super(message);
  }
}

const show = (s: string) => JSON.stringify(s.length > 80 ? s.slice(0, 80) + '…' : s);

function fieldsOf(lines: string[], limits: DpkgStatusLimits): Map<string, string> {
  const fields = new Map<string, string>();
  let last: string | null = null;
  for (const line of lines) {
    if (line.length > limits.maxLineLength) throw new ParagraphProblem('LINE_TOO_LONG', `a line is ${line.length} characters (at most ${limits.maxLineLength})`);
    if (line[0] === ' ' || line[0] === '\t') {
      if (last === null) throw new ParagraphProblem('MALFORMED_LINE', 'a continuation line before any field');
      fields.set(last, fields.get(last)! + '\n' + line.slice(1));
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!FIELD_NAME.test(name) || name[0] === '#' || name[0] === '-') throw new ParagraphProblem('MALFORMED_LINE', `not a "Field: value" line: ${show(line)}`);
    // Field names are case-insensitive in deb822.
    const key = name.toLowerCase();
    if (fields.has(key)) throw new ParagraphProblem('DUPLICATE_FIELD', `field ${name} appears twice`);
    fields.set(key, line.slice(colon + 1).trim());
    last = key;
  }
  return fields;
}

function required(fields: Map<string, string>, name: string): string {
  const v = fields.get(name.toLowerCase());
  if (v === undefined || v === '') throw new ParagraphProblem('MISSING_FIELD', `no ${name} field`);
  return v;
}

function version(value: string, field: string): string {
  try {
    parseDebianVersion(value);
    return value;
  } catch (err) {
    if (err instanceof DebianVersionError) throw new ParagraphProblem('INVALID_FIELD', `${field}: ${err.reason} (${show(value)})`);
    throw err;
  }
}

/** One paragraph: an installed package, `null` when it is not installed, or a ParagraphProblem. */
function packageOf(fields: Map<string, string>): InstalledPackage | null {
  const name = required(fields, 'Package');
  if (!DEBIAN_PACKAGE_NAME.test(name)) throw new ParagraphProblem('INVALID_FIELD', `Package: not a package name: ${show(name)}`);
  const status = required(fields, 'Status').split(/\s+/);
  if (status.length !== 3) throw new ParagraphProblem('INVALID_FIELD', `Status: expected "want flag state", got ${show(status.join(' '))}`);
  // The state word says what is on disk; the want word (install, hold, deinstall, purge)
  // is only the operator's intent, so a held or to-be-removed package is still installed.
  if (status[1] !== 'ok' || status[2] !== 'installed') return null;
  const v = version(required(fields, 'Version'), 'Version');
  const architecture = required(fields, 'Architecture');
  if (!ARCHITECTURE.test(architecture)) throw new ParagraphProblem('INVALID_FIELD', `Architecture: not an architecture: ${show(architecture)}`);
  let source = name;
  let sourceVersion = v;
  const src = fields.get('source');
  if (src !== undefined) {
    const m = SOURCE_FIELD.exec(src);
    if (!m || !DEBIAN_PACKAGE_NAME.test(m[1]!)) throw new ParagraphProblem('INVALID_FIELD', `Source: expected "name" or "name (version)", got ${show(src)}`);
    source = m[1]!;
    if (m[2] !== undefined) sourceVersion = version(m[2], 'Source version');
  }
  return { package: name, version: v, architecture, source, source_version: sourceVersion };
}

export function parseDpkgStatus(text: string, limits: DpkgStatusLimits = DEFAULT_DPKG_STATUS_LIMITS): DpkgInventory {
  const out: DpkgInventory = { packages: [], not_installed: 0, problems: [] };
  const lines = text.split('\n');
  let paragraph = 0;
  let i = 0;
  while (i < lines.length) {
    while (i < lines.length && lines[i]!.replace(/\r$/, '').trim() === '') i++;
    if (i >= lines.length) break;
    const start = i;
    const body: string[] = [];
    while (i < lines.length && lines[i]!.replace(/\r$/, '').trim() !== '') body.push(lines[i++]!.replace(/\r$/, ''));
    paragraph++;
    if (paragraph > limits.maxParagraphs) {
      out.problems.push({ paragraph, line: start + 1, code: 'TOO_MANY_PARAGRAPHS', message: `more than ${limits.maxParagraphs} paragraphs; the rest is not read` });
      break;
    }
    try {
      const p = packageOf(fieldsOf(body, limits));
      if (p) out.packages.push(p);
      else out.not_installed++;
    } catch (err) {
      if (!(err instanceof ParagraphProblem)) throw err;
      out.problems.push({ paragraph, line: start + 1, code: err.code, message: err.message });
    }
  }
  return out;
}
