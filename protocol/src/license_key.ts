/**
 * License keys: `AEGIS-XXXXX-XXXXX-XXXXX-XXXXX`, 20 characters from Crockford's base32
 * alphabet (no I, L, O, U: nothing a person misreads). 19 are random and the last is a
 * check character (mod 37 over the 19, as in Crockford's scheme) so that a typo is caught
 * by the client before a round trip and never burns a rate-limit slot.
 *
 * The check is the weighted sum Σ vᵢ·32^(18−i) mod 37. Because 37 is prime and no weight
 * is 0 mod 37, it catches every single-character substitution (the sum moves by
 * (a−b)·32^k ≢ 0) and every transposition of two adjacent characters (the sum moves by
 * (a−b)·32^k·31 ≢ 0), the check character included; a sum mod 32 could not do both,
 * since the difference of two invertible weights mod 32 is even.
 *
 * Crockford's check takes 37 values, and values 32..36 are the symbols `*~$=U`, four of
 * which a shell expands or splits on. New keys draw only bodies whose check value is below
 * 32, so every key issued now is in [A-Z0-9-] and can be double-clicked and pasted
 * unquoted anywhere, at a cost of log2(37/32) ≈ 0.2 of its 95 random bits. Keys issued
 * before, whose check may be one of `*~$=U`, are still accepted and still normalise to
 * themselves (the server stores a hash of the canonical key), so they keep working.
 */
import { randomBytes } from 'node:crypto';

export const LICENSE_KEY_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
// Crockford's check symbols extend the alphabet with five more for values 32..36.
const CHECK_ALPHABET = LICENSE_KEY_ALPHABET + '*~$=U';
/** Every key ever issued, those with an old `*~$=U` check character too. */
export const LICENSE_KEY_PATTERN = /^AEGIS(-[0-9A-HJKMNP-TV-Z*~$=U]{5}){4}$/;
/** The keys issued now: check character from the alphabet, so only [A-Z0-9-]. */
export const SHELL_SAFE_LICENSE_KEY_PATTERN = /^AEGIS(-[0-9A-HJKMNP-TV-Z]{5}){4}$/;

function checkValue(body: string): number {
  let mod = 0;
  for (const ch of body) mod = (mod * 32 + LICENSE_KEY_ALPHABET.indexOf(ch)) % 37;
  return mod;
}

function formatted(chars: string): string {
  return `AEGIS-${chars.slice(0, 5)}-${chars.slice(5, 10)}-${chars.slice(10, 15)}-${chars.slice(15, 20)}`;
}

export function generateLicenseKey(): string {
  for (;;) {
    const bytes = randomBytes(19);
    let body = '';
    for (const b of bytes) body += LICENSE_KEY_ALPHABET[b & 31];
    const check = checkValue(body);
    // 5 bodies in 37 would need a symbol outside the alphabet: draw again.
    if (check < LICENSE_KEY_ALPHABET.length) return formatted(body + LICENSE_KEY_ALPHABET[check]!);
  }
}

/** What a person may type for a symbol: O for 0, I or L for 1 (never symbols themselves). */
function readAs(ch: string): string {
  return ch === 'O' ? '0' : ch === 'I' || ch === 'L' ? '1' : ch;
}

/**
 * Normalises what a person typed (case, spaces, O→0, I/L→1) and checks the format and
 * check character. Returns the canonical key, or null when it cannot be a valid key.
 */
export function normalizeLicenseKey(input: string): string | null {
  if (typeof input !== 'string' || input.length > 64) return null;
  const compact = input
    .toUpperCase()
    .replace(/[\s-]/g, '')
    .replace(/^AEGIS/, '');
  if (compact.length !== 20) return null;
  const chars = [...compact].map(readAs).join('');
  const body = chars.slice(0, 19);
  if (![...body].every((c) => LICENSE_KEY_ALPHABET.includes(c))) return null;
  if (CHECK_ALPHABET[checkValue(body)] !== chars[19]) return null;
  return formatted(chars);
}

/** The last five characters, kept by the server so operators can tell keys apart. */
export function licenseKeySuffix(key: string): string {
  return key.slice(-5);
}
