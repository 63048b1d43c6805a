/** AgentBus against a real nats-server with JetStream, fed by the real ServerBus. */
import { randomUUID } from 'node:crypto';
import t from 'tap';
import { missingCommand, requireCapability } from '../../../test/harness/capabilities.js';
import { memoryLog, startNats, waitFor, type TestNats } from '../../../test/harness/nats.js';
import { ServerBus, type AgentReportKind } from '../../../server/src/nats/server_bus.js';
import { AgentBus, AgentBusError } from './agent_bus.js';

/** Machine ids (the <machine> token of every agent subject), one per simulated host. */
const late1 = randomUUID();
const isoA = randomUUID();
const isoB = randomUUID();
const svcHost = randomUUID();
const thrower = randomUUID();
const rc1 = randomUUID();
const early = randomUUID();
const lic1 = randomUUID();
const rep1 = randomUUID();
const patient = randomUUID();

type Got = Array<[string, string]>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function recorder(): { got: Got; onMessage: (subject: string, data: string) => void } {
  const got: Got = [];
  return { got, onMessage: (subject, data) => void got.push([subject, data]) };
}

t.test('AgentBus', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  let nats: TestNats;
  let server: ServerBus;
  t.before(async () => {
    nats = await startNats();
    server = await ServerBus.connect({ url: nats.url });
    await server.ensureStream();
  });
  t.teardown(async () => {
    await server?.close();
    await nats?.stop();
  });

  t.test('a late agent gets only the newest revision, then live updates', async (t) => {
    for (const rev of [1, 2, 3]) await server.publishSegMap(late1, 10, `late-1/10/r${rev}`);
    await server.publishSegMap(late1, 11, 'late-1/11/r1');
    const log = memoryLog();
    const agent = await AgentBus.connect({ url: nats.url, machine: late1, log });
    t.teardown(() => agent.close());
    const { got, onMessage } = recorder();
    await agent.watchSegMaps([10, 11, 12], onMessage);
    t.same(
      [...got].sort(),
      [
        [`aegis.seg.maps.${late1}.10`, 'late-1/10/r3'],
        [`aegis.seg.maps.${late1}.11`, 'late-1/11/r1'],
      ],
      'last values only; service 12 has nothing stored, which is fine',
    );
    t.ok(log.lines.some((l) => /read last snapshot values \(start\)/.test(l.msg) && JSON.stringify(l.meta) === '{"found":2,"missing":4,"failed":0}'), JSON.stringify(log.lines));
    got.length = 0;
    await server.publishSegMap(late1, 10, 'late-1/10/r4');
    await server.publishSegMap(late1, 99, 'late-1/99/r1');
    await waitFor(() => got.length === 2, 'live updates');
    t.same(got, [
      [`aegis.seg.maps.${late1}.10`, 'late-1/10/r4'],
      [`aegis.seg.maps.${late1}.99`, 'late-1/99/r1'],
    ], 'live messages arrive for every service of the host, configured or not');
  });

  t.test('per-host isolation and _all', async (t) => {
    await server.publishSegMap(isoA, 20, 'iso-a/20');
    await server.publishSegMap(isoB, 20, 'iso-b/20');
    await server.publishSegMap('_all', 20, 'all/20');
    const a = await AgentBus.connect({ url: nats.url, machine: isoA });
    const b = await AgentBus.connect({ url: nats.url, machine: isoB });
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    const ra = recorder();
    const rb = recorder();
    await a.watchSegMaps([20], ra.onMessage);
    await b.watchSegMaps([20], rb.onMessage);
    t.same([...ra.got].sort(), [['aegis.seg.maps._all.20', 'all/20'], [`aegis.seg.maps.${isoA}.20`, 'iso-a/20']].sort());
    t.same([...rb.got].sort(), [['aegis.seg.maps._all.20', 'all/20'], [`aegis.seg.maps.${isoB}.20`, 'iso-b/20']].sort());
    ra.got.length = 0;
    rb.got.length = 0;
    await server.publishSegMap(isoB, 20, 'iso-b/20/r2');
    await server.publishSegMap('_all', 21, 'all/21');
    await waitFor(() => ra.got.length === 1 && rb.got.length === 2, 'live _all on both, iso-b only on b');
    await sleep(100);
    t.same(ra.got, [['aegis.seg.maps._all.21', 'all/21']]);
    t.same(rb.got, [[`aegis.seg.maps.${isoB}.20`, 'iso-b/20/r2'], ['aegis.seg.maps._all.21', 'all/21']]);
  });

  t.test('setServiceIds reads the last values of added services', async (t) => {
    await server.publishSegMap(svcHost, 30, 'svc-host/30');
    await server.publishSegMap(svcHost, 31, 'svc-host/31');
    const a = await AgentBus.connect({ url: nats.url, machine: svcHost });
    t.teardown(() => a.close());
    const r = recorder();
    await a.watchSegMaps([30], r.onMessage);
    t.same(r.got, [[`aegis.seg.maps.${svcHost}.30`, 'svc-host/30']]);
    await a.setServiceIds([30, 31]);
    t.same(r.got, [[`aegis.seg.maps.${svcHost}.30`, 'svc-host/30'], [`aegis.seg.maps.${svcHost}.31`, 'svc-host/31']], 'only the added one is read');
    try {
      await a.watchSegMaps([1], r.onMessage);
      t.fail('second watchSegMaps');
    } catch (err) {
      t.equal((err as AgentBusError).code, 'NATS_BAD_ARGUMENT');
    }
  });

  t.test('a handler that throws does not stop delivery', async (t) => {
    const log = memoryLog();
    const a = await AgentBus.connect({ url: nats.url, machine: thrower, log });
    t.teardown(() => a.close());
    const seen: string[] = [];
    await a.watchSegMaps([], (_s, data) => {
      seen.push(data);
      if (data === 'boom') throw new Error('handler bug');
    });
    await server.publishSegMap(thrower, 1, 'boom');
    await server.publishSegMap(thrower, 1, 'after');
    await waitFor(() => seen.length === 2, 'both messages');
    t.ok(log.lines.some((l) => l.level === 'error' && /handler failed/.test(l.msg)));
  });

  t.test('nats-server killed mid-run: reconnect re-reads last values, live updates resume', async (t) => {
    const own = await startNats();
    t.teardown(() => own.stop());
    const srv = await ServerBus.connect({ url: own.url, reconnectWaitMs: 100 });
    t.teardown(() => srv.close());
    await srv.ensureStream();
    await srv.publishSegMap(rc1, 40, 'rc-1/40/r1');
    const log = memoryLog();
    // The agent comes back well after the server bus, so what is published in between
    // can only reach it through the re-read.
    const agent = await AgentBus.connect({ url: own.url, machine: rc1, log, reconnectWaitMs: 2500 });
    t.teardown(() => agent.close());
    const r = recorder();
    await agent.watchSegMaps([40, 41], r.onMessage);
    t.same(r.got, [[`aegis.seg.maps.${rc1}.40`, 'rc-1/40/r1']]);

    await own.kill();
    await waitFor(() => !agent.isConnected() && !srv.isConnected(), 'both see the disconnect');
    try {
      await agent.publishStatus({ host: 'rc-1' });
      t.fail('publish while disconnected');
    } catch (err) {
      t.equal((err as AgentBusError).code, 'NATS_DISCONNECTED', (err as Error).message);
    }
    await own.restart();
    await waitFor(() => srv.isConnected(), 'server bus reconnects');
    t.notOk(agent.isConnected(), 'agent still away');
    await srv.publishSegMap(rc1, 40, 'rc-1/40/r2');
    await srv.publishSegMap(rc1, 40, 'rc-1/40/r3');
    await srv.publishSegMap('_all', 41, 'all/41/r1');
    await waitFor(() => agent.isConnected(), 'agent reconnects', 15_000);
    await waitFor(() => r.got.length === 3, 'the re-read');
    t.same([...r.got.slice(1)].sort(), [['aegis.seg.maps._all.41', 'all/41/r1'], [`aegis.seg.maps.${rc1}.40`, 'rc-1/40/r3']].sort(), 'only the newest of what was missed');
    t.ok(log.lines.some((l) => /read last snapshot values \(reconnect\)/.test(l.msg)));
    await srv.publishSegMap(rc1, 40, 'rc-1/40/r4');
    await waitFor(() => r.got.length === 4, 'live after reconnect');
    t.same(r.got[3], [`aegis.seg.maps.${rc1}.40`, 'rc-1/40/r4']);
    await agent.publishStatus({ host: 'rc-1' });
  });

  t.test('no stream yet: watchSegMaps still subscribes; reads fail softly', async (t) => {
    const bare = await startNats();
    t.teardown(() => bare.stop());
    const log = memoryLog();
    const agent = await AgentBus.connect({ url: bare.url, machine: early, log, requestTimeoutMs: 1000 });
    t.teardown(() => agent.close());
    const r = recorder();
    await agent.watchSegMaps([1], r.onMessage);
    t.ok(log.lines.some((l) => l.level === 'warn' && /no answer from stream AEGIS_SEG_MAPS within 1000 ms/.test(l.msg)), JSON.stringify(log.lines));
    const srv = await ServerBus.connect({ url: bare.url });
    t.teardown(() => srv.close());
    await srv.ensureStream();
    await srv.publishSegMap(early, 1, 'early/1');
    await waitFor(() => r.got.length === 1, 'live');
    const s = await agent.refetch();
    t.same(s, { found: 1, missing: 1, failed: 0 }, 'early.1 found, _all.1 missing');
  });

  t.test('license envelopes: watch, wait, ask the server', async (t) => {
    const a = await AgentBus.connect({ url: nats.url, machine: lic1 });
    t.teardown(() => a.close());
    const seen: string[] = [];
    const stop = a.watchLicense('fleet-1', (d) => void seen.push(d));
    await sleep(50);
    await server.publishLicense('fleet-1', 'env-1');
    await server.publishLicense('fleet-2', 'env-other-fleet');
    await waitFor(() => seen.length === 1, 'envelope');
    t.same(seen, ['env-1']);
    stop();

    // Nobody publishes and nobody answers: null after the timeout.
    let t0 = Date.now();
    t.equal(await a.waitForLicense('fleet-9', 300), null);
    t.ok(Date.now() - t0 >= 290, 'waited the full timeout');

    // A periodic publish during the wait.
    t0 = Date.now();
    const p = a.waitForLicense('fleet-1', 5000);
    await sleep(100);
    await server.publishLicense('fleet-1', 'env-2');
    t.equal(await p, 'env-2');
    t.ok(Date.now() - t0 < 2000);

    // The server answers the request at once.
    const stopServe = server.serveLicense((fleet, host) => (fleet === 'fleet-1' ? `env-3-for-${host}` : null));
    t.teardown(stopServe);
    await sleep(50);
    t0 = Date.now();
    t.equal(await a.waitForLicense('fleet-1', 5000), `env-3-for-${lic1}`);
    t.ok(Date.now() - t0 < 1000, 'no wait for the next periodic publish');
    t.equal(await a.waitForLicense('fleet-9', 300), null, 'an empty answer is not an envelope');
    stopServe();

    // A refusal is not an envelope: the agent says why and keeps listening.
    const stopRefuse = server.serveLicense(() => {
      throw Object.assign(new Error('not your fleet'), { code: 'FLEET_MISMATCH' });
    });
    t.teardown(stopRefuse);
    await sleep(50);
    t.equal(await a.waitForLicense('fleet-1', 300), null, 'a refusal is not an envelope');
  });

  t.test('reports reach the server bus', async (t) => {
    const got: Array<[AgentReportKind, string, unknown]> = [];
    const stop = server.onAgentReport((kind, machine, data) => void got.push([kind, machine, data]));
    t.teardown(stop);
    const a = await AgentBus.connect({ url: nats.url, machine: rep1 });
    t.teardown(() => a.close());
    await sleep(50);
    await a.publishStatus({ host: 'rep-1', services: [] });
    await a.publishAck({ host: 'rep-1', service_id: 1, revision: 2, ok: true });
    await a.publishFlows({ host: 'rep-1', service_id: 1, flows: [{ dst: '10.0.0.1', proto: 'tcp', port: 443, count: 3 }] });
    await waitFor(() => got.length === 3, 'three reports');
    t.same(got, [
      ['status', rep1, { host: 'rep-1', services: [] }],
      ['ack', rep1, { host: 'rep-1', service_id: 1, revision: 2, ok: true }],
      ['flows', rep1, { host: 'rep-1', service_id: 1, flows: [{ dst: '10.0.0.1', proto: 'tcp', port: 443, count: 3 }] }],
    ]);
    await a.close();
    try {
      await a.publishStatus({});
      t.fail('publish after close');
    } catch (err) {
      t.equal((err as AgentBusError).code, 'NATS_CLOSED');
    }
  });

  t.test('non-machine-ids and unreachable servers are named', async (t) => {
    // Hostnames (even valid subject tokens), _all, subject syntax and uppercase UUIDs are
    // not machine ids: an agent's subjects may only be named by the id it got at activation.
    for (const machine of ['_all', 'a.b', '', 'x>', 'web-1', randomUUID().toUpperCase(), `${randomUUID()}.x`]) {
      try {
        await AgentBus.connect({ url: nats.url, machine });
        t.fail(`machine ${machine}`);
      } catch (err) {
        t.equal((err as AgentBusError).code, 'NATS_BAD_ARGUMENT', (err as Error).message);
      }
    }
    const dead = await startNats();
    const deadUrl = dead.url;
    await dead.stop();
    try {
      await AgentBus.connect({ url: deadUrl, machine: randomUUID() });
      t.fail('unreachable');
    } catch (err) {
      t.equal((err as AgentBusError).code, 'NATS_UNREACHABLE', (err as Error).message);
    }
  });

  t.test('machine null (not activated): only _all snapshots and license broadcasts, no reports', async (t) => {
    const other = randomUUID();
    await server.publishSegMap(other, 50, 'other/50');
    await server.publishSegMap('_all', 50, 'all/50');
    const reports: unknown[] = [];
    const stopReports = server.onAgentReport((kind, machine, data) => void reports.push([kind, machine, data]));
    t.teardown(stopReports);
    const licenseAsked: string[] = [];
    const stopServe = server.serveLicense((fleet, machine) => {
      licenseAsked.push(machine);
      return fleet === 'fleet-null' ? 'env-answered' : null;
    });
    t.teardown(stopServe);
    const log = memoryLog();
    const a = await AgentBus.connect({ url: nats.url, machine: null, log });
    t.teardown(() => a.close());
    t.equal(a.machine, null);
    const r = recorder();
    await a.watchSegMaps([50], r.onMessage);
    t.same(r.got, [['aegis.seg.maps._all.50', 'all/50']], 'the last _all value only, nothing addressed to a machine');
    t.ok(log.lines.some((l) => /read last snapshot values \(start\)/.test(l.msg) && JSON.stringify(l.meta) === '{"found":1,"missing":0,"failed":0}'), JSON.stringify(log.lines));
    r.got.length = 0;
    await server.publishSegMap(other, 50, 'other/50/r2');
    await server.publishSegMap('_all', 51, 'all/51');
    await waitFor(() => r.got.length === 1, 'live _all');
    await sleep(100);
    t.same(r.got, [['aegis.seg.maps._all.51', 'all/51']], 'live: _all only');

    // Licenses come by broadcast only: no request is sent without a machine to ask as.
    t.equal(await a.waitForLicense('fleet-null', 300), null, 'nobody broadcast, nothing asked');
    const p = a.waitForLicense('fleet-null', 5000);
    await sleep(100);
    await server.publishLicense('fleet-null', 'env-broadcast');
    t.equal(await p, 'env-broadcast');
    t.same(licenseAsked, [], 'the server was never asked');

    for (const publish of [() => a.publishStatus({}), () => a.publishAck({}), () => a.publishFlows({})]) {
      try {
        await publish();
        t.fail('a report without a machine id');
      } catch (err) {
        t.equal((err as AgentBusError).code, 'NATS_NO_MACHINE', (err as Error).message);
      }
    }
    await sleep(100);
    t.same(reports, [], 'nothing reached the server');
  });

  t.test('waitOnFirstConnect: an agent started before nats-server connects when it comes up', async (t) => {
    const later = await startNats();
    t.teardown(() => later.stop());
    await later.kill();
    const p = AgentBus.connect({ url: later.url, machine: patient, reconnectWaitMs: 100, waitOnFirstConnect: true });
    await sleep(300);
    await later.restart();
    const a = await p;
    t.teardown(() => a.close());
    t.ok(a.isConnected());
  });
});
