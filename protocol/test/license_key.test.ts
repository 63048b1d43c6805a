import t from 'tap';
import { generateLicenseKey, normalizeLicenseKey, LICENSE_KEY_ALPHABET, LICENSE_KEY_PATTERN, SHELL_SAFE_LICENSE_KEY_PATTERN } from '../src/index.js';

const CHECK_SYMBOLS = LICENSE_KEY_ALPHABET + '*~$=U';

/** How keys were made before their check character was kept in the alphabet (Crockford mod 37). */
function legacyCheckCharacter(body: string): string {
  let mod = 0;
  for (const ch of body) mod = (mod * 32 + LICENSE_KEY_ALPHABET.indexOf(ch)) % 37;
  return CHECK_SYMBOLS[mod]!;
}

function keyOf(chars: string): string {
  return `AEGIS-${chars.match(/.{5}/g)!.join('-')}`;
}

function charsOf(key: string): string {
  return key.replace(/^AEGIS-/, '').replace(/-/g, '');
}

/** A legacy key whose check character is `symbol` (found by drawing bodies). */
function legacyKeyEndingIn(symbol: string): string {
  for (;;) {
    let body = '';
    for (let i = 0; i < 19; i++) body += LICENSE_KEY_ALPHABET[Math.floor(Math.random() * 32)];
    if (legacyCheckCharacter(body) === symbol) return keyOf(body + symbol);
  }
}

t.test('generated keys have the format and pass their own check', async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 500; i++) {
    const k = generateLicenseKey();
    t.match(k, LICENSE_KEY_PATTERN);
    t.equal(normalizeLicenseKey(k), k);
    seen.add(k);
  }
  t.equal(seen.size, 500, 'no collisions');
});

t.test('10,000 generated keys hold only [A-Z0-9-]: safe to paste unquoted into any shell', async (t) => {
  let bad = 0;
  const checks = new Set<string>();
  for (let i = 0; i < 10_000; i++) {
    const k = generateLicenseKey();
    if (!/^[A-Z0-9-]+$/.test(k) || !SHELL_SAFE_LICENSE_KEY_PATTERN.test(k) || normalizeLicenseKey(k) !== k) bad++;
    checks.add(k.slice(-1));
  }
  t.equal(bad, 0, 'every key is shell-safe and valid');
  t.equal(checks.size, 32, 'the check character takes every symbol of the alphabet, and nothing else');
});

t.test('the check catches every single substitution and every adjacent transposition (proof)', async (t) => {
  // The key is valid when Σ vᵢ·wᵢ ≡ 0 (mod 37) with wᵢ = 32^(18−i) for the body and −1 for
  // the check character. A substitution a→b at i moves the sum by (b−a)·wᵢ; swapping a, b at
  // i, i+1 moves it by (a−b)·(w_{i+1}−wᵢ). Symbol values differ by 1..36 and 37 is prime,
  // so both moves are non-zero exactly when every wᵢ and every w_{i+1}−wᵢ is non-zero.
  const w: number[] = [];
  for (let i = 0; i < 19; i++) {
    let p = 1;
    for (let k = 0; k < 18 - i; k++) p = (p * 32) % 37;
    w.push(p);
  }
  w.push(37 - 1);
  t.ok(w.every((x) => x % 37 !== 0), 'no weight is 0 mod 37: every substitution changes the sum');
  t.ok(w.slice(1).every((x, i) => (x - w[i]! + 37) % 37 !== 0), 'adjacent weights differ mod 37: every adjacent transposition changes it');
});

t.test('the check catches them in fact: every substitution and adjacent transposition of 200 keys', async (t) => {
  let missed = 0;
  let tried = 0;
  for (let n = 0; n < 200; n++) {
    const chars = charsOf(generateLicenseKey());
    for (let i = 0; i < 20; i++) {
      for (const s of CHECK_SYMBOLS) {
        if (s === chars[i]) continue;
        tried++;
        if (normalizeLicenseKey(keyOf(chars.slice(0, i) + s + chars.slice(i + 1))) !== null) missed++;
      }
      if (i < 19 && chars[i] !== chars[i + 1]) {
        tried++;
        if (normalizeLicenseKey(keyOf(chars.slice(0, i) + chars[i + 1] + chars[i] + chars.slice(i + 2))) !== null) missed++;
      }
    }
  }
  t.equal(missed, 0, `none of ${tried} single errors passes the check`);
});

t.test('keys issued before keep working, unchanged (their canonical form is what the server hashed)', async (t) => {
  for (const symbol of ['*', '~', '$', '=', 'U', 'Q', '0']) {
    const old = legacyKeyEndingIn(symbol);
    t.match(old, LICENSE_KEY_PATTERN);
    t.equal(normalizeLicenseKey(old), old, `a legacy key ending in ${symbol} normalises to itself`);
    t.equal(normalizeLicenseKey(old.toLowerCase().replace(/-/g, ' ')), old, 'typed loosely too');
  }
  // A legacy check character still catches typos in its key.
  const old = charsOf(legacyKeyEndingIn('*'));
  t.equal(normalizeLicenseKey(keyOf(old.slice(0, 19) + 'U')), null, 'another check symbol is refused');
  const i = [...old].findIndex((c, j) => j < 19 && c !== old[j + 1]);
  t.equal(normalizeLicenseKey(keyOf(old.slice(0, i) + old[i + 1] + old[i] + old.slice(i + 2))), null, 'a transposition is refused');
});

t.test('typing is forgiven, typos are caught', async (t) => {
  const k = generateLicenseKey();
  t.equal(normalizeLicenseKey(k.toLowerCase().replace(/-/g, ' ')), k);
  const readable = k.replace(/0/g, 'O').replace(/1/g, 'l');
  t.equal(normalizeLicenseKey(readable), k, 'O for 0 and l for 1, in the check position too');
  // Change one body character: the check character must catch it.
  const body = charsOf(k);
  const alt = body[3] === 'A' ? 'B' : 'A';
  const typo = keyOf(body.slice(0, 3) + alt + body.slice(4));
  t.equal(normalizeLicenseKey(typo), null);
  t.equal(normalizeLicenseKey('AEGIS-GAMER-2024-ACTIVE'), null);
  t.equal(normalizeLicenseKey(''), null);
});
