/**
 * One source for the datapath's shared constants: protocol/src/bpf_abi.generated.ts is
 * what scripts/gen-bpf-abi.mjs makes of the C headers today, and every value TypeScript
 * uses (the generated ones, the record layout, the protocol numbers) equals what the
 * addon was compiled with.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BPF_ABI, MAX_RULES_PER_SERVICE, RULE_RECORD_LAYOUT } from '../../../protocol/src/index.js';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, MAX_SERVICES, RULE_RECORD_BYTES } from './abi.js';
import { loadAddon, type NativeAddon } from './addon.js';

/** The package root: the nearest ancestor holding the generator. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'scripts', 'gen-bpf-abi.mjs'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('scripts/gen-bpf-abi.mjs not found above this test');
    dir = up;
  }
  return dir;
}

t.test('the generated constants are what the headers say now', async (t) => {
  const r = spawnSync(process.execPath, [join(packageRoot(), 'scripts', 'gen-bpf-abi.mjs'), '--check'], { encoding: 'utf8' });
  t.equal(r.status, 0, `gen-bpf-abi --check: ${r.stderr.trim() || 'up to date'}`);
});

t.test('TypeScript derives its datapath numbers from the generated ones', async (t) => {
  t.equal(MAX_RULES_PER_SERVICE, BPF_ABI.AEGIS_MAX_RULES, "protocol's capacity is the BPF rule trie's size");
  t.equal(MAX_SERVICES, BPF_ABI.AEGIS_MAX_SERVICES);
  t.equal(RULE_RECORD_BYTES, RULE_RECORD_LAYOUT.bytes);
  const fields = Object.values(RULE_RECORD_LAYOUT.fields).sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const f of fields) {
    t.equal(f.offset, end, `field at ${f.offset} follows the previous one (packed)`);
    end = f.offset + f.size;
  }
  t.equal(end, RULE_RECORD_LAYOUT.bytes, 'the fields fill the record');
});

t.test("the addon's compiled values equal TypeScript's", async (t) => {
  let addon: NativeAddon | undefined;
  let missing: string | null = null;
  try {
    addon = loadAddon();
  } catch (e) {
    missing = (e as Error).message;
  }
  if (!requireCapability(t, missing) || addon === undefined) return;
  const c = addon.constants;
  t.same(Object.keys(c.defines).sort(), Object.keys(BPF_ABI).sort(), 'the addon exports every define the generator found, and no other');
  for (const [name, value] of Object.entries(BPF_ABI)) t.equal(c.defines[name], value, name);
  t.same(c.ruleRecord, RULE_RECORD_LAYOUT, 'RuleRecord: sizeof and every offsetof/size');
  t.same(c.ipproto, { tcp: IPPROTO_TCP, udp: IPPROTO_UDP, icmp: IPPROTO_ICMP, icmpv6: IPPROTO_ICMPV6 }, 'IPPROTO_TCP / IPPROTO_UDP / IPPROTO_ICMP / IPPROTO_ICMPV6');
  t.equal(addon.maxRules, MAX_RULES_PER_SERVICE);
  t.equal(addon.maxServices, MAX_SERVICES);
  t.equal(addon.layoutVersion, BPF_ABI.AEGIS_LAYOUT_VERSION);
});
