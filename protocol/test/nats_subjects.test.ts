/**
 * The NATS contract in protocol/: identifier rules, the wire format of every subject, and
 * the permission lists nats-server enforces. The literals here are the wire format; a
 * change to one is a protocol change that agents and deployed configs must follow.
 */
import t from 'tap';
import {
  ALL_HOSTS,
  AGENT_REPORT_KINDS,
  FLEET_NAME_PATTERN,
  HOST_ID_PATTERN,
  MACHINE_ID_PATTERN,
  SEG_MAPS_STREAM,
  SEG_MAPS_WILDCARD,
  SUBJECT_TOKEN_PATTERN,
  ValidationError,
  accountPushNatsPermissions,
  agentNatsPermissions,
  agentSubjectMachine,
  isAgentHostId,
  isFleetName,
  isHostId,
  isMachineId,
  isSubjectToken,
  serverNatsPermissions,
  subjectWildcards,
  subjects,
} from '../src/index.js';

/** A machine id as aegis-server assigns it: agent subjects are named by these. */
const M = '3f2c9a1e-7b4d-4c8e-9f01-a2b3c4d5e6f7';

t.test('identifiers: one host-id rule, one fleet-name rule', async (t) => {
  t.equal(HOST_ID_PATTERN.source, '^[A-Za-z0-9_-]{1,128}$');
  t.equal(HOST_ID_PATTERN, SUBJECT_TOKEN_PATTERN, 'a host id is exactly one subject token');
  t.equal(FLEET_NAME_PATTERN.source, '^[A-Za-z0-9_-]{1,64}$');
  for (const ok of ['web-1', 'A_b-9', 'x'.repeat(128), ALL_HOSTS]) t.ok(isHostId(ok), ok);
  for (const bad of ['', 'a.b', 'a*', 'a>', 'a b', 'x'.repeat(129), 'héllo', 7, null, undefined]) t.notOk(isHostId(bad), String(bad));
  t.ok(isAgentHostId('web-1'));
  t.notOk(isAgentHostId(ALL_HOSTS), '"_all" names no agent');
  t.notOk(isAgentHostId('a.b'));
  t.ok(isSubjectToken('fleet-1'));
  t.ok(isFleetName('x'.repeat(64)));
  t.notOk(isFleetName('x'.repeat(65)), 'fleet names are shorter than subject tokens');
  t.notOk(isFleetName('f.1'));
});

t.test('identifiers: a machine id is a lowercase UUID', async (t) => {
  t.equal(MACHINE_ID_PATTERN.source, '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$');
  t.ok(isMachineId(M));
  for (const bad of ['web-1', ALL_HOSTS, M.toUpperCase(), `${M}.x`, M.slice(1), '', 7, null, undefined]) t.notOk(isMachineId(bad), String(bad));
  t.ok(isSubjectToken(M), 'a machine id is one subject token');
});

t.test('subjects: the wire format', async (t) => {
  t.equal(SEG_MAPS_STREAM, 'AEGIS_SEG_MAPS');
  t.equal(SEG_MAPS_WILDCARD, 'aegis.seg.maps.>');
  t.equal(subjects.license('prod'), 'aegis.license.prod');
  t.equal(subjects.segMap(M, 7), `aegis.seg.maps.${M}.7`);
  t.equal(subjects.segMapAll(7), 'aegis.seg.maps._all.7');
  t.equal(subjects.segMapsOf(M), `aegis.seg.maps.${M}.>`);
  t.equal(subjects.segMapsOf(ALL_HOSTS), 'aegis.seg.maps._all.>');
  t.equal(subjects.segMapDirectGet(`aegis.seg.maps.${M}.7`), `$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps.${M}.7`);
  t.equal(subjects.agentStatus(M), `aegis.agent.${M}.status`);
  t.equal(subjects.agentAck(M), `aegis.agent.${M}.ack`);
  t.equal(subjects.agentFlows(M), `aegis.agent.${M}.flows`);
  t.equal(subjects.agentLicenseRequest(M), `aegis.agent.${M}.license`);
  t.equal(subjects.agentAll(M), `aegis.agent.${M}.>`);
  t.equal(subjects.inboxPrefix(M), `_INBOX.${M}`);
  t.equal(subjects.inboxOf(M), `_INBOX.${M}.>`);
  t.equal(subjects.accountClaimsUpdate('AABC'), '$SYS.REQ.ACCOUNT.AABC.CLAIMS.UPDATE');
  t.same([...AGENT_REPORT_KINDS], ['status', 'ack', 'flows']);
  t.same(
    AGENT_REPORT_KINDS.map((k) => subjectWildcards.agentReports(k)),
    ['aegis.agent.*.status', 'aegis.agent.*.ack', 'aegis.agent.*.flows'],
  );
  t.same(
    { ...subjectWildcards, agentReports: undefined },
    {
      agentReports: undefined,
      agentLicenseRequests: 'aegis.agent.*.license',
      agents: 'aegis.agent.>',
      licenses: 'aegis.license.>',
      segMaps: 'aegis.seg.maps.>',
      jetStreamApi: '$JS.API.>',
      inboxes: '_INBOX.>',
      accountClaimsUpdates: '$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE',
    },
  );
});

t.test('subjects: a token that would change the subject is refused', async (t) => {
  const cases: Array<[string, () => string, RegExp]> = [
    ['machine with a dot', () => subjects.segMap('a.b', 1), /machine/],
    ['fractional service id', () => subjects.segMapAll(1.5), /service_id/],
    ['fleet wildcard', () => subjects.license('f>'), /fleet/],
    ['empty machine', () => subjects.agentStatus(''), /machine/],
    ['machine wildcard', () => subjects.inboxOf('*'), /machine/],
    ['not a snapshot subject', () => subjects.segMapDirectGet('aegis.license.x'), /snapshot subject/],
    ['unknown report kind', () => subjectWildcards.agentReports('license' as never), /kind/],
  ];
  for (const [what, fn, re] of cases) {
    t.throws(fn, ValidationError, what);
    try {
      fn();
    } catch (err) {
      t.equal((err as ValidationError).code, 'VALIDATION_FAILED', what);
      t.match((err as Error).message, re, what);
    }
  }
});

t.test('agentSubjectMachine: the machine token of aegis.agent.<machine>.<kind>', async (t) => {
  t.equal(agentSubjectMachine(`aegis.agent.${M}.status`), M);
  t.equal(agentSubjectMachine('aegis.agent.web-1.status'), 'web-1', 'unchecked: the caller decides (isMachineId)');
  t.equal(agentSubjectMachine('aegis.agent._all.ack'), '_all', 'unchecked: the caller decides');
  t.equal(agentSubjectMachine(`aegis.agent.${M}`), null);
  t.equal(agentSubjectMachine(`aegis.seg.${M}.status`), null);
  t.equal(agentSubjectMachine('aegis.agent.a.b.status'), null);
});

t.test('permissions: what nats-server lets each user do', async (t) => {
  t.same(agentNatsPermissions(M, 'prod'), {
    pub: {
      allow: [`aegis.agent.${M}.>`, `$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps.${M}.>`, '$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps._all.>'],
    },
    sub: { allow: [`aegis.seg.maps.${M}.>`, 'aegis.seg.maps._all.>', 'aegis.license.prod', `_INBOX.${M}.>`] },
  });
  t.same(serverNatsPermissions(), {
    pub: { allow: ['aegis.seg.maps.>', 'aegis.license.>', '$JS.API.>', '_INBOX.>'] },
    sub: { allow: ['aegis.agent.>', '_INBOX.>'] },
  });
  t.same(accountPushNatsPermissions(), { pub: { allow: ['$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE'] }, sub: { allow: ['_INBOX.>'] } });
  t.not(agentNatsPermissions(M, 'f').pub.allow, agentNatsPermissions(M, 'f').pub.allow, 'a fresh object each call (callers may keep and change it)');
  // Only a machine id gets an agent's permissions: a hostname, even one that is a valid
  // subject token, would grant the subjects of whichever machine might be named by it.
  for (const [machine, fleet, re] of [
    [ALL_HOSTS, 'f', /reserved/],
    ['a.b', 'f', /machine/],
    ['web-1', 'f', /not a machine id/],
    [M.toUpperCase(), 'f', /not a machine id/],
    [`${M}.>`, 'f', /not a machine id/],
    [M, 'f>', /fleet/],
    ['', 'f', /machine/],
  ] as const) {
    t.throws(() => agentNatsPermissions(machine, fleet), ValidationError, `${machine}/${fleet}`);
    t.throws(() => agentNatsPermissions(machine, fleet), re);
  }
});
