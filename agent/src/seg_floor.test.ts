/**
 * The replay floor after a stop between applying a message and saving the floor: the policy
 * cache says enforce of revision N while seg_floor.json still holds that revision's canary.
 * Seeding from the cache lifts the floor, so the recorded canary message is then refused as
 * a replay (before, the two compared equal and the replay passed silently as "already
 * accepted"). Seeding never lowers a floor.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAgentLogger } from './logger.js';
import { StateStore } from './state_store.js';
import { SegFloor, SEG_FLOOR_FILE, compareFloor } from './seg_floor.js';

const store = (files: Record<string, unknown>): StateStore => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-floor-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, v] of Object.entries(files)) writeFileSync(join(dir, name), JSON.stringify(v), { mode: 0o600 });
  return new StateStore(dir, createAgentLogger('error', 'json'));
};

t.test('a cache ahead of the saved floor lifts it; the recorded canary is then older', async (t) => {
  const canary = { revision: 7, stage: 'canary' as const, iat: 1_800_000_000 };
  const floor = new SegFloor(store({ [SEG_FLOOR_FILE]: { version: 1, services: { '101': canary } } }));
  t.same(floor.get(101), canary, 'the saved floor is loaded');
  floor.seed(101, { revision: 7, stage: 'enforce', iat: 0 });
  t.equal(floor.get(101)?.stage, 'enforce', 'lifted to the cached enforce stage');
  t.ok(compareFloor(canary, floor.get(101)!) < 0, 'the recorded canary message now compares older: refused as a replay');
  t.ok(compareFloor({ revision: 7, stage: 'enforce', iat: 1_800_000_100 }, floor.get(101)!) > 0, 'a fresh enforce message of the revision still passes');
});

t.test('seeding never lowers a floor', async (t) => {
  const enforce = { revision: 9, stage: 'enforce' as const, iat: 1_800_000_000 };
  const floor = new SegFloor(store({ [SEG_FLOOR_FILE]: { version: 1, services: { '101': enforce } } }));
  floor.seed(101, { revision: 8, stage: 'enforce', iat: 0 });
  t.same(floor.get(101), enforce, 'an older cached revision leaves it');
  floor.seed(101, { revision: 9, stage: 'canary', iat: 0 });
  t.same(floor.get(101), enforce, 'the same revision at an earlier stage leaves it');
  floor.seed(101, { revision: 9, stage: 'enforce', iat: 0 });
  t.same(floor.get(101), enforce, 'the same revision and stage keeps the saved iat');
});

t.test('a service with no saved floor takes the cache', async (t) => {
  const floor = new SegFloor(store({}));
  floor.seed(5, { revision: 2, stage: 'canary', iat: 0 });
  t.same(floor.get(5), { revision: 2, stage: 'canary', iat: 0 });
});
