/**
 * License keys: `AEGIS-XXXXX-XXXXX-XXXXX-XXXXX`, 20 characters from Crockford's base32
 * alphabet (no I, L, O, U: nothing a person misreads). 19 are random (95 bits) and the last
 * is a check character (mod 37 over the 19, as in Crockford's scheme) so that a typo is
 * caught by the client before a round trip and never burns a rate-limit slot.
 */
import { randomBytes } from 'node:crypto';

export const LICENSE_KEY_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
// Crockford's check symbols extend the alphabet with five more for values 32..36.
const CHECK_ALPHABET = LICENSE_KEY_ALPHABET + '*~$=U';
export const LICENSE_KEY_PATTERN = /^AEGIS(-[0-9A-HJKMNP-TV-Z*~$=U]{5}){4}$/;

function checkSymbol(body: string): string {
  let mod = 0;
  for (const ch of body) mod = (mod * 32 + LICENSE_KEY_ALPHABET.indexOf(ch)) % 37;
  return CHECK_ALPHABET[mod]!;
}

export function generateLicenseKey(): string {
  const bytes = randomBytes(19);
  let body = '';
  for (const b of bytes) body += LICENSE_KEY_ALPHABET[b & 31];
  const chars = body + checkSymbol(body);
  return `AEGIS-${chars.slice(0, 5)}-${chars.slice(5, 10)}-${chars.slice(10, 15)}-${chars.slice(15, 20)}`;
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
  const body = compact.slice(0, 19).replace(/O/g, '0').replace(/[IL]/g, '1');
  if (![...body].every((c) => LICENSE_KEY_ALPHABET.includes(c))) return null;
  if (checkSymbol(body) !== compact[19]) return null;
  const chars = body + compact[19];
  return `AEGIS-${chars.slice(0, 5)}-${chars.slice(5, 10)}-${chars.slice(10, 15)}-${chars.slice(15, 20)}`;
}

/** The last five characters, kept by the server so operators can tell keys apart. */
export function licenseKeySuffix(key: string): string {
  return key.slice(-5);
}
