/**
 * Which machine a host is, from its fingerprint components: the decisions activation and
 * refresh take on a license's `fingerprint_match`, `clone_policy` and `allow_containers`.
 * Pure functions over rows already read inside the lifecycle's transaction; the machine
 * lifecycle applies what they decide.
 */
import type { Selectable } from 'kysely';
import {
  AegisError,
  matchFingerprint,
  sameCloneIdentity,
  type FingerprintComponentName,
  type FingerprintComponents,
  type FingerprintMatch,
  type HostEnvironment,
} from '../../protocol/src/index.js';
import type { LicensesTable, MachinesTable } from './db/schema.js';
import { componentsOf } from './licenses.js';

/** A host's identity as it presents it at activation or refresh. */
export interface PresentedFingerprint {
  hardware_id: string;
  components: FingerprintComponents;
  environment: HostEnvironment | null;
}

/** A recorded machine the presented components still are, with what changed. */
export interface FingerprintDrift {
  machine: Selectable<MachinesTable>;
  changed: FingerprintComponentName[];
}

/** Refuses a host reporting a container when the license does not allow containers. */
export function containerRefusal(lic: Pick<LicensesTable, 'allow_containers'>, environment: HostEnvironment | null): AegisError | null {
  if (environment === 'container' && Number(lic.allow_containers) !== 1) {
    return new AegisError('CONTAINER_NOT_ALLOWED', 'this license does not allow hosts running in a container (allow_containers is false)');
  }
  return null;
}

/**
 * Among machines held by this host key (same license), the one whose recorded components
 * the presented ones still match under `strategy`. A machine with no recorded components
 * (activated by an agent that sent none) is matched by its hardware id only.
 */
export function driftedMachine(sameKey: readonly Selectable<MachinesTable>[], presented: FingerprintComponents, strategy: FingerprintMatch): FingerprintDrift | null {
  if (Object.keys(presented).length === 0) return null;
  for (const m of sameKey) {
    if (m.fingerprint_components === null) continue;
    const r = matchFingerprint(componentsOf(m), presented, strategy);
    if (r.same) return { machine: m, changed: r.changed };
  }
  return null;
}

/** Active machines of the license under another host key whose clone identity (machine-id and product UUID) the host presents. */
export function clonesOf(onLicense: readonly Selectable<MachinesTable>[], thumbprint: string, presented: FingerprintComponents): Selectable<MachinesTable>[] {
  if (Object.keys(presented).length === 0) return [];
  return onLicense.filter((m) => m.host_key_thumbprint !== thumbprint && sameCloneIdentity(componentsOf(m), presented));
}

export function cloneRefusal(): AegisError {
  return new AegisError(
    'MACHINE_CLONE_DETECTED',
    'this host is a clone of an active machine of this license (same machine-id and product UUID, another host key); clone_policy refuse: give the clone its own machine-id (systemd-machine-id-setup) or deactivate the original',
    { details: { clone_policy: 'refuse' } },
  );
}

export function driftRefusal(strategy: FingerprintMatch, changed: readonly string[]): AegisError {
  return new AegisError(
    'FINGERPRINT_MISMATCH',
    `this host's hardware changed beyond the license's fingerprint_match (${strategy}): it is a new machine; activate it (a new seat)`,
    { details: { fingerprint_match: strategy, changed } },
  );
}
