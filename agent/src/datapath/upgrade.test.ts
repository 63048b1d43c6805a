/**
 * Upgrading the datapath layout in place. An older build's pins (its maps, its links
 * attached to the service cgroups, a marker naming its layout) are found by a new build:
 * the new layout is loaded beside them instead of refusing to start, both judge every
 * packet until the new one enforces (so the upgrade never opens a gap and is never looser
 * than either policy), and retiring the old layout then detaches its programs and removes
 * its pins. A newer layout's pins (a downgrade) are refused, since a build cannot know
 * what maps it has not seen.
 *
 * The "older build" is this build's own pins renamed to a layout one below, with the
 * marker set to it: the old programs keep running with the old policy in the old maps,
 * which is exactly what an agent upgrade finds.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { ageLayout, helperScript, makeCgroup, missingDatapath, removeCgroup, runNodeInCgroup, tcpListener, testPinRoot, writeLayoutMarker } from '../../../test/harness/datapath.js';
import { BPF_ABI } from '../../../protocol/src/index.js';
import { open, purgePins } from './index.js';
import { DatapathError } from './errors.js';

const CURRENT = BPF_ABI.AEGIS_LAYOUT_VERSION;
const OLDER_PREFIX = `aegis_v${CURRENT - 1}_`;

t.test('an older layout is upgraded in place without a gap', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const bpftool = (() => {
    try {
      execFileSync('bpftool', ['version'], { stdio: 'ignore' });
      return null;
    } catch {
      return 'bpftool is not installed (apt-get install bpftool)';
    }
  })();
  if (!requireCapability(t, bpftool)) return;
  const client = helperScript('traffic_client.js');
  const pinRoot = testPinRoot('upgrade');
  const cg = makeCgroup('upgrade');
  const both = await tcpListener('127.0.0.1');
  const oldOnly = await tcpListener('127.0.0.1');
  const newOnly = await tcpListener('127.0.0.1');
  t.teardown(async () => {
    // A failed step may leave the marker naming a newer layout, which purge refuses.
    try {
      writeLayoutMarker(pinRoot, CURRENT);
    } catch {
      /* no marker: nothing to mend */
    }
    await purgePins(pinRoot).catch(() => undefined);
    removeCgroup(cg);
    for (const l of [both, oldOnly, newOnly]) await l.close();
  });
  const edge = (port: number) => ({ dst_cidr: '127.0.0.1/32', proto: 'tcp' as const, port });
  const future = Date.now() + 3_600_000;
  const svc = 331;
  const probe = async (): Promise<boolean[]> => {
    const targets = [both, oldOnly, newOnly].map((l) => ({ proto: 'tcp', host: '127.0.0.1', port: l.port, timeoutMs: 1500 }));
    const r = await runNodeInCgroup(cg, client, [JSON.stringify({ op: 'probe', targets })]);
    if (r.code !== 0) throw new Error(`traffic client failed: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { results: Array<{ ok: boolean }> }).results.map((x) => x.ok);
  };

  // The "old build" enforces {both, oldOnly} and exits; its pins stay.
  const old = await open({ pinRoot });
  await old.bindService(svc, cg);
  await old.apply(svc, { edges: [edge(both.port), edge(oldOnly.port)] }, { mode: 'enforce', expiresAt: future, generation: 1 });
  await old.close();
  ageLayout(pinRoot);
  t.same(await probe(), [true, true, false], 'the old layout alone enforces its policy');

  const dp = await open({ pinRoot });
  t.equal(dp.olderLayout, CURRENT - 1, 'open reports the older layout instead of refusing');
  t.same(await probe(), [true, true, false], 'opening alone changes nothing: the old programs still judge');
  await dp.bindService(svc, cg);
  await dp.apply(svc, { edges: [edge(both.port), edge(newOnly.port)] }, { mode: 'enforce', expiresAt: future, generation: 2 });
  t.same(await probe(), [true, false, false], 'while both run a packet needs both policies: never looser than either');

  const detached = await dp.retireOlderLayout();
  t.ok(detached >= 2, `the old layout's links were detached (${detached})`);
  t.same(await probe(), [true, false, true], 'after retiring, the new policy alone decides');
  t.same(readdirSync(pinRoot).filter((n) => n.startsWith(OLDER_PREFIX)), [], 'no pin of the old layout is left');
  t.equal(await dp.retireOlderLayout(), 0, 'retiring again is a no-op');
  await dp.close();

  const again = await open({ pinRoot });
  t.equal(again.olderLayout, null, 'the marker names this layout now');
  t.same(await probe(), [true, false, true], 'enforcement survived the upgrading process');
  await again.close();

  await t.test('old pins without a marker are an upgrade too', async (t) => {
    ageLayout(pinRoot, { marker: false });
    const d = await open({ pinRoot });
    t.equal(d.olderLayout, CURRENT - 1, 'found by the versioned names');
    await d.bindService(svc, cg);
    await d.apply(svc, { edges: [edge(both.port)] }, { mode: 'enforce', expiresAt: future, generation: 3 });
    t.ok((await d.retireOlderLayout()) >= 2, 'retired');
    t.same(await probe(), [true, false, false], 'the new policy decides');
    await d.close();
  });

  await t.test('a newer layout is refused, and purge leaves it alone', async (t) => {
    writeLayoutMarker(pinRoot, CURRENT + 1);
    const opened = await open({ pinRoot }).then(() => null, (e: unknown) => e);
    t.ok(opened instanceof DatapathError && opened.code === 'INCOMPATIBLE_PIN', `open refuses to guess at a newer layout: ${String(opened)}`);
    t.match((opened as Error).message, /newer layout is not downgraded/, 'and says why');
    const purged = await purgePins(pinRoot).then(() => null, (e: unknown) => e);
    t.ok(purged instanceof DatapathError && purged.code === 'INCOMPATIBLE_PIN', `purge refuses it too: ${String(purged)}`);
    t.same(await probe(), [true, false, false], 'and the pins that enforce were not touched');
    writeLayoutMarker(pinRoot, CURRENT);
  });
});
