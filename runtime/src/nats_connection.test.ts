/**
 * The shared NATS connection layer without a nats-server: the options both buses connect
 * with, and how a failed first connect is classified (the buses' own tests cover the same
 * codes against a real nats-server).
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { authConnectOptions, buildConnectOptions, classifyConnectError, isAuthError, isTlsError, NatsConnectError, withTimeout } from './nats_connection.js';

const natsErr = (code: string, message = code) => Object.assign(new Error(message), { code });

t.test('buildConnectOptions: reconnect forever, the given name, inbox prefix and TLS', async (t) => {
  const o = buildConnectOptions({ url: ['nats://a:4222', 'nats://b:4222'], auth: { user: 'u', pass: 'p' }, tls: { caFile: '/ca.pem' }, name: 'x', inboxPrefix: '_INBOX.h' });
  t.same(o.servers, ['nats://a:4222', 'nats://b:4222']);
  t.equal(o.user, 'u');
  t.equal(o.pass, 'p');
  t.same(o.tls, { caFile: '/ca.pem' });
  t.equal(o.name, 'x');
  t.equal(o.inboxPrefix, '_INBOX.h');
  t.equal(o.maxReconnectAttempts, -1, 'attempts never stop');
  t.equal(o.reconnectTimeWait, 1000);
  t.equal(o.waitOnFirstConnect, false);
  t.equal(o.ignoreAuthErrorAbort, true, 'a nats-server restarted with a changed config does not stop reconnects');
  const bare = buildConnectOptions({ url: 'nats://a:4222', auth: {}, name: 'y', reconnectWaitMs: 50, waitOnFirstConnect: true });
  t.notOk('inboxPrefix' in bare, 'the default inbox prefix unless one is given');
  t.notOk('tls' in bare);
  t.notOk('user' in bare);
  t.equal(bare.reconnectTimeWait, 50);
  t.equal(bare.waitOnFirstConnect, true);
});

t.test('authConnectOptions: creds win over a creds file, both over user/pass; an unreadable file is NATS_AUTH', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-nats-conn-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'u.creds');
  writeFileSync(file, 'not really creds', { mode: 0o600 });
  t.ok(authConnectOptions({ creds: 'x', credsFile: '/missing', user: 'u' }).authenticator, 'creds text');
  t.notOk(authConnectOptions({ creds: 'x', user: 'u' }).user);
  t.ok(authConnectOptions({ credsFile: file, user: 'u' }).authenticator, 'creds file');
  t.same(authConnectOptions({ user: 'u' }), { user: 'u', pass: '' });
  t.same(authConnectOptions({}), {});
  try {
    authConnectOptions({ credsFile: join(dir, 'missing.creds') });
    t.fail('a missing creds file');
  } catch (err) {
    t.type(err, NatsConnectError);
    t.equal((err as NatsConnectError).code, 'NATS_AUTH');
    t.match((err as Error).message, /cannot read the NATS credentials file .*missing\.creds/);
    t.equal(((err as Error).cause as { code?: string }).code, 'ENOENT', 'the fs error is the cause');
  }
});

t.test('classifyConnectError: NATS_AUTH, NATS_TLS or NATS_UNREACHABLE, with the cause kept', async (t) => {
  const ctx = { url: ['nats://a:1', 'nats://b:2'], refused: 'the test credentials' };
  const auth = natsErr('AUTHORIZATION_VIOLATION');
  const a = classifyConnectError(auth, ctx);
  t.equal(a.code, 'NATS_AUTH');
  t.equal(a.message, 'nats-server at nats://a:1,nats://b:2 refused the test credentials');
  t.equal(a.cause, auth);
  t.equal(classifyConnectError(natsErr('AUTHENTICATION_EXPIRED'), ctx).code, 'NATS_AUTH');
  for (const e of [natsErr('UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unable to verify the first certificate'), natsErr('SERVER_OPT_NA', 'server requires tls'), natsErr('ERR_SSL_WRONG_VERSION_NUMBER')]) {
    const c = classifyConnectError(e, ctx);
    t.equal(c.code, 'NATS_TLS', e.message);
    t.match(c.message, /check the CA file \(tls\.caFile\) and that nats-server's certificate names this host$/);
  }
  t.match(classifyConnectError(natsErr('DEPTH_ZERO_SELF_SIGNED_CERT'), { ...ctx, tlsAdvice: 'do this' }).message, /; do this$/);
  const u = classifyConnectError(natsErr('CONNECTION_REFUSED', 'connect ECONNREFUSED'), { url: 'nats://a:1', refused: '' });
  t.equal(u.code, 'NATS_UNREACHABLE');
  t.equal(u.message, 'cannot connect to nats-server at nats://a:1: connect ECONNREFUSED');
  const own = new NatsConnectError('NATS_AUTH', 'unreadable');
  t.equal(classifyConnectError(own, ctx), own, 'an error of this layer passes through');
  t.ok(isTlsError(natsErr('X', 'self signed certificate')));
  t.notOk(isTlsError(natsErr('CONNECTION_REFUSED', 'refused')));
  t.notOk(isAuthError(new Error('AUTHORIZATION_VIOLATION')), 'the code counts, not the text');
});

t.test('withTimeout', async (t) => {
  t.equal(await withTimeout(Promise.resolve(1), 1000, 'x'), 1);
  await t.rejects(withTimeout(new Promise(() => {}), 10, 'flush'), /flush: no answer from nats-server within 10 ms/);
});
