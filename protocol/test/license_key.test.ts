import t from 'tap';
import { generateLicenseKey, normalizeLicenseKey, LICENSE_KEY_PATTERN } from '../src/index.js';

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

t.test('typing is forgiven, typos are caught', async (t) => {
  const k = generateLicenseKey();
  t.equal(normalizeLicenseKey(k.toLowerCase().replace(/-/g, ' ')), k);
  // Change one body character: the check character must catch it.
  const body = k.replace(/^AEGIS-/, '').replace(/-/g, '');
  const alt = body[3] === 'A' ? 'B' : 'A';
  const typo = `AEGIS-${(body.slice(0, 3) + alt + body.slice(4)).match(/.{5}/g)!.join('-')}`;
  t.equal(normalizeLicenseKey(typo), null);
  t.equal(normalizeLicenseKey('AEGIS-GAMER-2024-ACTIVE'), null);
  t.equal(normalizeLicenseKey(''), null);
});
