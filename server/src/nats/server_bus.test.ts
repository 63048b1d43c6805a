/** ServerBus against a real nats-server with JetStream. */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect, Empty, type NatsConnection } from 'nats';
import { missingCommand, requireCapability } from '../../../test/harness/capabilities.js';
import { memoryLog, startNats, waitFor, type TestNats } from '../../../test/harness/nats.js';
import { freePort } from '../../../test/harness/postgres.js';
import { BusError, SEG_MAPS_STREAM_CONFIG, ServerBus, type AgentReportKind } from './server_bus.js';

const td = new TextDecoder();
/** Machine ids: the <machine> token of agent and snapshot subjects. */
const MACHINE_A = randomUUID();
const MACHINE_B = randomUUID();

async function lastValue(nc: NatsConnection, subject: string): Promise<{ data: string; seq: number } | null> {
  const m = await nc.request(`$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.${subject}`, Empty, { timeout: 2000 });
  if (m.headers?.code === 404) return null;
  return { data: td.decode(m.data), seq: Number(m.headers?.get('Nats-Sequence')) };
}

async function rejectsWith(t: Test, p: Promise<unknown>, code: string, msgPattern?: RegExp): Promise<void> {
  try {
    await p;
    t.fail(`expected ${code}`);
  } catch (err) {
    t.type(err, BusError);
    t.equal((err as BusError).code, code, (err as Error).message);
    if (msgPattern) t.match((err as Error).message, msgPattern);
  }
}

t.test('ServerBus', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  let nats: TestNats;
  t.before(async () => {
    nats = await startNats();
  });
  t.teardown(async () => nats?.stop());

  t.test('ensureStream creates the last-value stream and is idempotent', async (t) => {
    const log = memoryLog();
    const bus = await ServerBus.connect({ url: nats.url, log });
    t.teardown(() => bus.close());
    await bus.ensureStream();
    await bus.ensureStream();
    const nc = await connect({ servers: nats.url });
    t.teardown(() => nc.close());
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info('AEGIS_SEG_MAPS');
    t.same(info.config.subjects, ['aegis.seg.maps.>']);
    t.equal(info.config.max_msgs_per_subject, 1);
    t.equal(info.config.storage, 'file');
    t.equal(info.config.allow_direct, true);
    t.equal(info.config.discard, 'old');
    t.equal(log.lines.filter((l) => l.msg.startsWith('created JetStream stream')).length, 1, 'created once');

    // A stream someone changed by hand is put back.
    await jsm.streams.update('AEGIS_SEG_MAPS', { ...info.config, max_msgs_per_subject: 5, allow_direct: false });
    await bus.ensureStream();
    const fixed = await jsm.streams.info('AEGIS_SEG_MAPS');
    t.equal(fixed.config.max_msgs_per_subject, 1);
    t.equal(fixed.config.allow_direct, true);
    t.ok(log.lines.some((l) => l.level === 'warn' && l.msg.startsWith('updated JetStream stream')));
    for (const [k, v] of Object.entries(SEG_MAPS_STREAM_CONFIG)) t.same((fixed.config as unknown as Record<string, unknown>)[k], v, k);
  });

  t.test('publishSegMap keeps only the newest message per subject', async (t) => {
    const bus = await ServerBus.connect({ url: nats.url });
    t.teardown(() => bus.close());
    await bus.ensureStream();
    const seqs: number[] = [];
    for (const rev of [1, 2, 3]) seqs.push((await bus.publishSegMap(MACHINE_A, 7, `jws-host-a-7-r${rev}`)).seq);
    t.ok(seqs[0]! < seqs[1]! && seqs[1]! < seqs[2]!, 'sequences increase');
    await bus.publishSegMap('_all', 7, 'jws-all-7');
    await bus.publishSegMap(MACHINE_B, 7, 'jws-host-b-7');

    const nc = await connect({ servers: nats.url });
    t.teardown(() => nc.close());
    t.same(await lastValue(nc, `aegis.seg.maps.${MACHINE_A}.7`), { data: 'jws-host-a-7-r3', seq: seqs[2] });
    t.equal((await lastValue(nc, 'aegis.seg.maps._all.7'))?.data, 'jws-all-7');
    t.equal((await lastValue(nc, `aegis.seg.maps.${MACHINE_B}.7`))?.data, 'jws-host-b-7');
    t.equal(await lastValue(nc, `aegis.seg.maps.${MACHINE_A}.8`), null);
    const jsm = await nc.jetstreamManager();
    const state = (await jsm.streams.info('AEGIS_SEG_MAPS')).state;
    t.equal(state.messages, 3, 'one message per subject is stored');
  });

  t.test('publishSegMap refuses bad arguments before touching NATS', async (t) => {
    const bus = await ServerBus.connect({ url: nats.url });
    t.teardown(() => bus.close());
    // A snapshot goes to a machine id or _all; a hostname (even a valid subject token) names
    // a subject no agent may read, and subject syntax would change the subject.
    for (const target of ['a.b', 'web-1', MACHINE_A.toUpperCase(), `${MACHINE_A}.>`, '']) {
      await rejectsWith(t, bus.publishSegMap(target, 1, 'x'), 'NATS_BAD_ARGUMENT', /machine id/);
    }
    await rejectsWith(t, bus.publishSegMap(MACHINE_A, -1, 'x'), 'NATS_BAD_ARGUMENT');
    await rejectsWith(t, bus.publishSegMap(MACHINE_A, 1.5, 'x'), 'NATS_BAD_ARGUMENT');
    await rejectsWith(t, bus.publishSegMap(MACHINE_A, 1, ''), 'NATS_BAD_ARGUMENT', /empty/);
    await rejectsWith(t, bus.publishLicense('f.1', 'x'), 'NATS_BAD_ARGUMENT');
  });

  t.test('publishSegMap without the stream says to call ensureStream', async (t) => {
    const bare = await startNats();
    t.teardown(() => bare.stop());
    const bus = await ServerBus.connect({ url: bare.url, publishTimeoutMs: 2000 });
    t.teardown(() => bus.close());
    await rejectsWith(t, bus.publishSegMap(MACHINE_A, 1, 'x'), 'NATS_STREAM', /ensureStream/);
  });

  t.test('ensureStream without JetStream fails clearly', async (t) => {
    const bare = await startNats({ jetstream: false });
    t.teardown(() => bare.stop());
    const bus = await ServerBus.connect({ url: bare.url, publishTimeoutMs: 2000 });
    t.teardown(() => bus.close());
    await rejectsWith(t, bus.ensureStream(), 'NATS_STREAM', /JetStream is not enabled/);
  });

  t.test('publishLicense reaches subscribers (core publish, not stored)', async (t) => {
    const bus = await ServerBus.connect({ url: nats.url });
    t.teardown(() => bus.close());
    await bus.ensureStream();
    const nc = await connect({ servers: nats.url });
    t.teardown(() => nc.close());
    const got: string[] = [];
    nc.subscribe('aegis.license.fleet-1', { callback: (_e, m) => got.push(td.decode(m.data)) });
    await nc.flush();
    await bus.publishLicense('fleet-1', '{"v":1,"seq":1}');
    await bus.publishLicense('fleet-2', '{"v":1,"seq":9}');
    await bus.publishLicense('fleet-1', '{"v":1,"seq":2}');
    await waitFor(() => got.length === 2, 'two envelopes');
    t.same(got, ['{"v":1,"seq":1}', '{"v":1,"seq":2}']);
    const jsm = await nc.jetstreamManager();
    t.equal((await jsm.streams.find('aegis.license.fleet-1').catch(() => null)) ?? null, null, 'no stream stores licenses');
  });

  t.test('agent reports: parsed, machine from the subject, garbage, oversize and non-machine-ids dropped', async (t) => {
    const log = memoryLog();
    const bus = await ServerBus.connect({ url: nats.url, log, maxReportBytes: 1024 });
    t.teardown(() => bus.close());
    const got: Array<[AgentReportKind, string, unknown]> = [];
    let throwOnce = true;
    const stop = bus.onAgentReport((kind, machine, data) => {
      if (throwOnce && kind === 'flows') {
        throwOnce = false;
        throw new Error('handler bug');
      }
      got.push([kind, machine, data]);
    });
    const nc = await connect({ servers: nats.url });
    t.teardown(() => nc.close());
    await nc.flush();
    const te = new TextEncoder();
    nc.publish(`aegis.agent.${MACHINE_A}.status`, te.encode('{"host":"spoofed","ok":true}'));
    nc.publish(`aegis.agent.${MACHINE_A}.ack`, te.encode('not json'));
    nc.publish(`aegis.agent.${MACHINE_A}.ack`, new Uint8Array([0xff, 0xfe, 0x7b, 0x7d]));
    nc.publish(`aegis.agent.${MACHINE_B}.flows`, te.encode(JSON.stringify({ pad: 'x'.repeat(2000) })));
    nc.publish(`aegis.agent.${MACHINE_B}.flows`, te.encode('{"n":1}'));
    nc.publish(`aegis.agent.${MACHINE_B}.flows`, te.encode('{"n":2}'));
    nc.publish(`aegis.agent.${MACHINE_B}.ack`, te.encode('{"revision":3}'));
    nc.publish(`aegis.agent.${MACHINE_B}.other`, te.encode('{}'));
    // A hostname or _all in the machine position is no machine's report.
    nc.publish('aegis.agent.web-1.status', te.encode('{"ok":true}'));
    nc.publish('aegis.agent._all.ack', te.encode('{"revision":4}'));
    nc.publish(`aegis.agent.${MACHINE_A.toUpperCase()}.flows`, te.encode('{"n":3}'));
    await nc.flush();
    await waitFor(() => got.length === 3, 'three reports');
    t.same(got, [
      ['status', MACHINE_A, { host: 'spoofed', ok: true }],
      ['flows', MACHINE_B, { n: 2 }],
      ['ack', MACHINE_B, { revision: 3 }],
    ]);
    t.equal(log.lines.filter((l) => l.level === 'warn' && /not JSON/.test(l.msg)).length, 2, 'non-JSON and non-UTF-8 dropped');
    t.equal(log.lines.filter((l) => l.level === 'warn' && /names no machine id/.test(l.msg)).length, 3, 'reports from non-machine-ids dropped');
    t.ok(log.lines.some((l) => l.level === 'warn' && /over 1024/.test(l.msg)), 'oversized dropped');
    t.ok(log.lines.some((l) => l.level === 'error' && /handler failed/.test(l.msg)), 'a throwing handler is logged, the subscription lives on');
    stop();
    await nc.flush();
    nc.publish(`aegis.agent.${MACHINE_A}.status`, te.encode('{}'));
    await nc.flush();
    await new Promise((r) => setTimeout(r, 100));
    t.equal(got.length, 3, 'nothing after stop()');
  });

  t.test('serveLicense answers agent requests', async (t) => {
    const log = memoryLog();
    const bus = await ServerBus.connect({ url: nats.url, log });
    t.teardown(() => bus.close());
    bus.serveLicense((fleet, machine) => (fleet === 'fleet-1' ? `env-for-${machine}` : null));
    const nc = await connect({ servers: nats.url });
    t.teardown(() => nc.close());
    await new Promise((r) => setTimeout(r, 50));
    const te = new TextEncoder();
    const r1 = await nc.request(`aegis.agent.${MACHINE_A}.license`, te.encode('{"fleet":"fleet-1"}'), { timeout: 2000 });
    t.equal(td.decode(r1.data), `env-for-${MACHINE_A}`);
    const r2 = await nc.request(`aegis.agent.${MACHINE_A}.license`, te.encode('{"fleet":"other"}'), { timeout: 2000 });
    t.equal(r2.data.length, 0, 'empty reply when there is no envelope');
    // The subject's token, whatever it is, goes to the provider, which decides (the real one
    // refuses a token that is no active machine with REQUESTER_UNKNOWN, so the requester
    // hears why: test/attacks/fleet_license_suite.ts).
    const seen: string[] = [];
    bus.serveLicense((_fleet, machine) => {
      seen.push(machine);
      return null;
    });
    await nc.request('aegis.agent.web-1.license', te.encode('{"fleet":"fleet-1"}'), { timeout: 2000 });
    await waitFor(() => seen.includes('web-1'), 'the token reached the provider');
    t.pass('the provider is given the token as nats-server vouched for it');
  });

  t.test('serveLicense answers a refusal with its code and no envelope', async (t) => {
    const bus = await ServerBus.connect({ url: nats.url, log: memoryLog() });
    t.teardown(() => bus.close());
    bus.serveLicense(() => {
      throw Object.assign(new Error('machine m-1 belongs to fleet fleet-1, not fleet-2'), { code: 'FLEET_MISMATCH' });
    });
    const nc = await connect({ servers: nats.url });
    t.teardown(() => nc.close());
    await new Promise((r) => setTimeout(r, 50));
    const r = await nc.request('aegis.agent.m-1.license', new TextEncoder().encode('{"fleet":"fleet-2"}'), { timeout: 2000 });
    t.same(JSON.parse(td.decode(r.data)), { error: { code: 'FLEET_MISMATCH', message: 'machine m-1 belongs to fleet fleet-1, not fleet-2' } });
  });

  t.test('first connect failures are named', async (t) => {
    const port = await freePort();
    await rejectsWith(t, ServerBus.connect({ url: `nats://127.0.0.1:${port}` }), 'NATS_UNREACHABLE', new RegExp(`127.0.0.1:${port}`));
  });

  t.test('publishes while disconnected throw; the bus reconnects and publishes again', async (t) => {
    const own = await startNats();
    t.teardown(() => own.stop());
    const log = memoryLog();
    const bus = await ServerBus.connect({ url: own.url, log, reconnectWaitMs: 100, publishTimeoutMs: 2000 });
    t.teardown(() => bus.close());
    await bus.ensureStream();
    await bus.publishSegMap(MACHINE_A, 1, 'before');
    t.ok(bus.isConnected());
    await own.kill();
    await waitFor(() => !bus.isConnected(), 'disconnect noticed');
    await rejectsWith(t, bus.publishSegMap(MACHINE_A, 1, 'during'), 'NATS_DISCONNECTED', /reconnecting/);
    await rejectsWith(t, bus.publishLicense('fleet-1', 'during'), 'NATS_DISCONNECTED');
    await new Promise((r) => setTimeout(r, 500));
    await own.restart();
    await waitFor(() => bus.isConnected(), 'reconnect');
    const { seq } = await bus.publishSegMap(MACHINE_A, 1, 'after');
    t.ok(seq >= 2, 'stream survived the kill (file storage)');
    // The metrics' source: each failed publish counted once, by kind and code; successes not.
    t.same(
      bus.publishFailures().sort((a, b) => a.kind.localeCompare(b.kind)),
      [
        { kind: 'license', code: 'NATS_DISCONNECTED', count: 1 },
        { kind: 'seg_map', code: 'NATS_DISCONNECTED', count: 1 },
      ],
      'the two failed publishes are counted',
    );
    const nc = await connect({ servers: own.url });
    t.teardown(() => nc.close());
    t.equal((await lastValue(nc, `aegis.seg.maps.${MACHINE_A}.1`))?.data, 'after');
    t.ok(log.lines.some((l) => l.level === 'warn' && /disconnected/.test(l.msg)));
    t.ok(log.lines.some((l) => l.level === 'info' && /reconnected/.test(l.msg)));

    // A nats-server that comes back without its store gets the stream again.
    await own.kill();
    rmSync(own.storeDir, { recursive: true, force: true });
    await own.restart();
    await waitFor(() => bus.isConnected(), 'reconnect to the wiped server');
    await waitFor(() => log.lines.filter((l) => l.msg.startsWith('created JetStream stream')).length === 2, 'stream re-created');
    t.same(await bus.publishSegMap(MACHINE_A, 1, 'on-new-store'), { seq: 1 });

    await bus.close();
    t.notOk(bus.isConnected());
    await rejectsWith(t, bus.publishLicense('fleet-1', 'closed'), 'NATS_CLOSED');
  });
});
