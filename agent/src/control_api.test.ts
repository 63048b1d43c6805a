/** The control API's snapshot check is the server's: a local PUT is refused as a POST would be. */
import t from 'tap';
import { checkSnapshot } from './control_api.js';
import { AgentError } from './errors.js';

const base = { version: 1, service_id: 101, ttl_seconds: 3600 };

t.test('a valid snapshot passes unchanged', async (t) => {
  const body = { ...base, edges: [{ dst_cidr: '127.0.0.1/32', proto: 'tcp', port: 80 }] };
  t.equal(checkSnapshot(body), body);
});

t.test('refusals are 400 VALIDATION_FAILED naming JSON Pointer paths', async (t) => {
  const cases: Array<[string, unknown, string[]]> = [
    ['schema', { ...base, version: 0 }, ['/version']],
    ['unparsable CIDR', { ...base, edges: [{ dst_cidr: 'nope', proto: 'tcp', port: 80 }] }, ['/edges/0/dst_cidr']],
    ['host bits', { ...base, allow_cidrs: [{ cidr: '10.0.0.1/8', proto: 'udp', port: 53 }] }, ['/allow_cidrs/0/cidr']],
    [
      'duplicate',
      { ...base, edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 80 }, { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 80 }] },
      ['/edges/1'],
    ],
    ['not an object', null, ['/']],
  ];
  for (const [name, body, paths] of cases) {
    const e = (() => {
      try {
        checkSnapshot(body);
        return null;
      } catch (x) {
        return x;
      }
    })();
    t.ok(e instanceof AgentError, `${name}: AgentError`);
    const a = e as AgentError;
    t.equal(a.code, 'VALIDATION_FAILED', name);
    t.equal(a.status, 400, name);
    t.same((a.details as Array<{ path: string }>).map((d) => d.path), paths, `${name}: ${a.message}`);
  }
});
