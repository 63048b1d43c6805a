/**
 * Debian package versions (Debian Policy 5.6.12), parsed and ordered exactly as dpkg does:
 * `parseversion` and `verrevcmp` of dpkg's lib/dpkg, mirrored character for character so
 * that a vulnerability match here says what dpkg on the host would say.
 */

export class DebianVersionError extends Error {
  readonly code = 'DEBIAN_VERSION_INVALID';
  constructor(
    readonly version: string,
    readonly reason: string,
  ) {
    super(`invalid Debian version ${JSON.stringify(version.length > 80 ? version.slice(0, 80) + '…' : version)}: ${reason}`);
    this.name = 'DebianVersionError';
  }
}

export interface DebianVersion {
  epoch: number;
  upstream: string;
  /** "" when the version has no hyphen; it then orders equal to "0", as in dpkg. */
  revision: string;
}

const INT_MAX = 2147483647;
const isBlank = (c: string) => c === ' ' || c === '\t';
const isDigit = (code: number) => code >= 48 && code <= 57;
const isAlpha = (code: number) => (code >= 65 && code <= 90) || (code >= 97 && code <= 122);

/**
 * Parses like dpkg's parseversion: its errors throw; what dpkg only warns about (an
 * upstream not starting with a digit, characters outside the Policy set) is accepted,
 * since dpkg installs and compares such versions too.
 */
export function parseDebianVersion(text: string): DebianVersion {
  let start = 0;
  while (start < text.length && isBlank(text[start]!)) start++;
  if (start === text.length) throw new DebianVersionError(text, 'version string is empty');
  let end = start;
  while (end < text.length && !isBlank(text[end]!)) end++;
  let rest = end;
  while (rest < text.length && isBlank(text[rest]!)) rest++;
  if (rest < text.length) throw new DebianVersionError(text, 'version string has embedded spaces');
  let s = text.slice(start, end);
  let epoch = 0;
  const colon = s.indexOf(':');
  if (colon >= 0) {
    // strtol: optional sign, then digits; it must stop exactly at the first colon.
    const m = /^[+-]?[0-9]+/.exec(s);
    if (!m) throw new DebianVersionError(text, 'epoch in version is empty');
    if (m[0].length !== colon) throw new DebianVersionError(text, 'epoch in version is not number');
    const value = Number(m[0]);
    if (value < 0) throw new DebianVersionError(text, 'epoch in version is negative');
    if (value > INT_MAX) throw new DebianVersionError(text, 'epoch in version is too big');
    if (colon + 1 === s.length) throw new DebianVersionError(text, 'nothing after colon in version number');
    epoch = value === 0 ? 0 : value;
    s = s.slice(colon + 1);
  }
  const hyphen = s.lastIndexOf('-');
  let upstream = s;
  let revision = '';
  if (hyphen >= 0) {
    upstream = s.slice(0, hyphen);
    revision = s.slice(hyphen + 1);
    if (revision === '') throw new DebianVersionError(text, 'revision number is empty');
  }
  if (upstream === '') throw new DebianVersionError(text, 'upstream version is empty');
  return { epoch, upstream, revision };
}

/** dpkg's `order`: digits and the end weigh 0, `~` sorts first, letters before other characters. */
function order(s: string, i: number): number {
  if (i >= s.length) return 0;
  const c = s.charCodeAt(i);
  if (isDigit(c)) return 0;
  if (isAlpha(c)) return c;
  if (c === 126) return -1;
  return c + 256;
}

/** dpkg's verrevcmp over one part (upstream or revision): a negative, zero or positive number. */
export function compareVersionPart(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDiff = 0;
    while ((i < a.length && !isDigit(a.charCodeAt(i))) || (j < b.length && !isDigit(b.charCodeAt(j)))) {
      const ac = order(a, i);
      const bc = order(b, j);
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (i < a.length && a.charCodeAt(i) === 48) i++;
    while (j < b.length && b.charCodeAt(j) === 48) j++;
    while (i < a.length && j < b.length && isDigit(a.charCodeAt(i)) && isDigit(b.charCodeAt(j))) {
      if (!firstDiff) firstDiff = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (i < a.length && isDigit(a.charCodeAt(i))) return 1;
    if (j < b.length && isDigit(b.charCodeAt(j))) return -1;
    if (firstDiff) return firstDiff;
  }
  return 0;
}

/** dpkg_version_compare: epoch, then upstream, then revision. */
export function compareParsedDebianVersions(a: DebianVersion, b: DebianVersion): number {
  if (a.epoch !== b.epoch) return a.epoch > b.epoch ? 1 : -1;
  return compareVersionPart(a.upstream, b.upstream) || compareVersionPart(a.revision, b.revision);
}

/** Compares two version strings: -1, 0 or 1. Throws DebianVersionError on a version dpkg refuses. */
export function compareDebianVersions(a: string, b: string): -1 | 0 | 1 {
  return Math.sign(compareParsedDebianVersions(parseDebianVersion(a), parseDebianVersion(b))) as -1 | 0 | 1;
}
