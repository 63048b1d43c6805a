/**
 * One severity scale over what feeds give: a CVSS v3 base vector is scored (the FIRST
 * v3.1 formula) and rated; the tracker's urgency words map to the nearest rating. What
 * neither describes is `unknown`, which a `?severity=` filter never hides behind a level.
 */
export const SEVERITY_LEVELS = ['none', 'low', 'medium', 'high', 'critical'] as const;
export type SeverityLevel = (typeof SEVERITY_LEVELS)[number] | 'unknown';

const URGENCY: Readonly<Record<string, SeverityLevel>> = {
  unimportant: 'none',
  'end-of-life': 'unknown',
  'not yet assigned': 'unknown',
  low: 'low',
  'low*': 'low',
  'low**': 'low',
  medium: 'medium',
  'medium*': 'medium',
  'medium**': 'medium',
  high: 'high',
  'high*': 'high',
  'high**': 'high',
  critical: 'critical',
  moderate: 'medium',
  important: 'high',
};

const roundUp = (x: number): number => {
  const i = Math.round(x * 100000);
  return i % 10000 === 0 ? i / 100000 : (Math.floor(i / 10000) + 1) / 10;
};

/** The CVSS v3.x base score of a vector, or null when it is not one. */
export function cvss3BaseScore(vector: string): number | null {
  const m = /^CVSS:3\.[01]\/(.+)$/.exec(vector.trim());
  if (!m) return null;
  const metrics = new Map<string, string>();
  for (const part of m[1]!.split('/')) {
    const [k, v] = part.split(':');
    if (!k || !v || metrics.has(k)) return null;
    metrics.set(k, v);
  }
  const W: Record<string, Record<string, number>> = {
    AV: { N: 0.85, A: 0.62, L: 0.55, P: 0.2 },
    AC: { L: 0.77, H: 0.44 },
    UI: { N: 0.85, R: 0.62 },
    C: { H: 0.56, L: 0.22, N: 0 },
    I: { H: 0.56, L: 0.22, N: 0 },
    A: { H: 0.56, L: 0.22, N: 0 },
  };
  const S = metrics.get('S');
  if (S !== 'U' && S !== 'C') return null;
  const PR = { N: 0.85, L: S === 'C' ? 0.68 : 0.62, H: S === 'C' ? 0.5 : 0.27 }[metrics.get('PR') ?? ''];
  const w = (k: string): number | undefined => W[k]![metrics.get(k) ?? ''];
  const [av, ac, ui, c, i, a] = ['AV', 'AC', 'UI', 'C', 'I', 'A'].map(w);
  if ([av, ac, ui, c, i, a, PR].some((x) => x === undefined)) return null;
  const iss = 1 - (1 - c!) * (1 - i!) * (1 - a!);
  const impact = S === 'U' ? 6.42 * iss : 7.52 * (iss - 0.029) - 3.25 * Math.pow(iss - 0.02, 15);
  const exploitability = 8.22 * av! * ac! * PR! * ui!;
  if (impact <= 0) return 0;
  return S === 'U' ? roundUp(Math.min(impact + exploitability, 10)) : roundUp(Math.min(1.08 * (impact + exploitability), 10));
}

export function severityLevel(severity: string | null): SeverityLevel {
  if (severity === null) return 'unknown';
  const score = cvss3BaseScore(severity);
  if (score !== null) return score === 0 ? 'none' : score < 4 ? 'low' : score < 7 ? 'medium' : score < 9 ? 'high' : 'critical';
  return URGENCY[severity.trim().toLowerCase()] ?? 'unknown';
}

/** The levels at or above `min` (what `?severity=high` selects). */
export function levelsAtLeast(min: (typeof SEVERITY_LEVELS)[number]): SeverityLevel[] {
  return SEVERITY_LEVELS.slice(SEVERITY_LEVELS.indexOf(min));
}
