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
  SEG_MAPS_STREAM,
  SEG_MAPS_WILDCARD,
  SUBJECT_TOKEN_PATTERN,
  ValidationError,
  accountPushNatsPermissions,
  agentNatsPermissions,
  agentSubjectHost,
  isAgentHostId,
  isFleetName,
  isHostId,
  isSubjectToken,
  serverNatsPermissions,
  subjectWildcards,
  subjects,
} from '../src/index.js';

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

t.test('subjects: the wire format', async (t) => {
  t.equal(SEG_MAPS_STREAM, 'AEGIS_SEG_MAPS');
  t.equal(SEG_MAPS_WILDCARD, 'aegis.seg.maps.>');
  t.equal(subjects.license('prod'), 'aegis.license.prod');
  t.equal(subjects.segMap('web-1', 7), 'aegis.seg.maps.web-1.7');
  t.equal(subjects.segMapAll(7), 'aegis.seg.maps._all.7');
  t.equal(subjects.segMapsOf('web-1'), 'aegis.seg.maps.web-1.>');
  t.equal(subjects.segMapsOf(ALL_HOSTS), 'aegis.seg.maps._all.>');
  t.equal(subjects.segMapDirectGet('aegis.seg.maps.web-1.7'), '$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps.web-1.7');
  t.equal(subjects.agentStatus('web-1'), 'aegis.agent.web-1.status');
  t.equal(subjects.agentAck('web-1'), 'aegis.agent.web-1.ack');
  t.equal(subjects.agentFlows('web-1'), 'aegis.agent.web-1.flows');
  t.equal(subjects.agentLicenseRequest('web-1'), 'aegis.agent.web-1.license');
  t.equal(subjects.agentAll('web-1'), 'aegis.agent.web-1.>');
  t.equal(subjects.inboxPrefix('web-1'), '_INBOX.web-1');
  t.equal(subjects.inboxOf('web-1'), '_INBOX.web-1.>');
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
    ['host with a dot', () => subjects.segMap('a.b', 1), /host/],
    ['fractional service id', () => subjects.segMapAll(1.5), /service_id/],
    ['fleet wildcard', () => subjects.license('f>'), /fleet/],
    ['empty host', () => subjects.agentStatus(''), /host/],
    ['host wildcard', () => subjects.inboxOf('*'), /host/],
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

t.test('agentSubjectHost: the host token of aegis.agent.<host>.<kind>', async (t) => {
  t.equal(agentSubjectHost('aegis.agent.web-1.status'), 'web-1');
  t.equal(agentSubjectHost('aegis.agent._all.ack'), '_all', 'unchecked: the caller decides');
  t.equal(agentSubjectHost('aegis.agent.web-1'), null);
  t.equal(agentSubjectHost('aegis.seg.web-1.status'), null);
  t.equal(agentSubjectHost('aegis.agent.a.b.status'), null);
});

t.test('permissions: what nats-server lets each user do', async (t) => {
  t.same(agentNatsPermissions('web-1', 'prod'), {
    pub: {
      allow: ['aegis.agent.web-1.>', '$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps.web-1.>', '$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps._all.>'],
    },
    sub: { allow: ['aegis.seg.maps.web-1.>', 'aegis.seg.maps._all.>', 'aegis.license.prod', '_INBOX.web-1.>'] },
  });
  t.same(serverNatsPermissions(), {
    pub: { allow: ['aegis.seg.maps.>', 'aegis.license.>', '$JS.API.>', '_INBOX.>'] },
    sub: { allow: ['aegis.agent.>', '_INBOX.>'] },
  });
  t.same(accountPushNatsPermissions(), { pub: { allow: ['$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE'] }, sub: { allow: ['_INBOX.>'] } });
  t.not(agentNatsPermissions('a', 'f').pub.allow, agentNatsPermissions('a', 'f').pub.allow, 'a fresh object each call (callers may keep and change it)');
  for (const [host, fleet, re] of [
    [ALL_HOSTS, 'f', /reserved/],
    ['a.b', 'f', /host/],
    ['a', 'f>', /fleet/],
    ['', 'f', /host/],
  ] as const) {
    t.throws(() => agentNatsPermissions(host, fleet), ValidationError, `${host}/${fleet}`);
    t.throws(() => agentNatsPermissions(host, fleet), re);
  }
});
