import t from 'tap';
import { computeFingerprint, canonicalizeFacts, ValidationError } from '../src/index.js';

t.test('fingerprint is stable across order, case and placeholders', async (t) => {
  const a = computeFingerprint({
    machine_id: 'ABCDEF0123456789abcdef0123456789',
    system_uuid: '4C4C4544-0042-3510-8052-B4C04F503132',
    board_serial: 'To Be Filled By O.E.M.',
    macs: ['52:54:00:12:34:56', '52-54-00-AB-CD-EF'],
    disk_serials: ['S3Z9NX0K', 'WD-123'],
    cpu_model: '  Intel(R)  Xeon(R) CPU ',
  });
  const b = computeFingerprint({
    cpu_model: 'intel(r) xeon(r) cpu',
    disk_serials: ['wd-123', 's3z9nx0k', 'WD-123'],
    macs: ['52:54:00:ab:cd:ef', '525400123456'],
    system_uuid: '4c4c4544-0042-3510-8052-b4c04f503132',
    machine_id: 'abcdef0123456789ABCDEF0123456789',
  });
  t.equal(a.hardware_id, b.hardware_id);
  t.match(a.hardware_id, /^[0-9a-f]{64}$/);
  t.equal(a.components.board_serial, undefined, 'placeholder board serial dropped');
  t.same(a.components.macs, ['52:54:00:12:34:56', '52:54:00:ab:cd:ef']);
});

t.test('a changed fact changes the fingerprint', async (t) => {
  const base = { machine_id: 'm1', macs: ['52:54:00:12:34:56'] };
  t.not(computeFingerprint(base).hardware_id, computeFingerprint({ ...base, machine_id: 'm2' }).hardware_id);
});

t.test('bad input names each field', async (t) => {
  const err = t.throws(() => canonicalizeFacts({ machine_id: 5, macs: 'x', bogus: 1 })) as unknown;
  t.ok(err instanceof ValidationError);
  const paths = (err as ValidationError).problems.map((p) => p.path).sort();
  t.same(paths, ['/bogus', '/machine_id', '/macs']);
  t.throws(() => computeFingerprint({ board_serial: 'none' }), /no usable hardware fact/);
});
