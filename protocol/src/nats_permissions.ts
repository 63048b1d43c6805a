/**
 * What each NATS user of Aegis may publish and subscribe to, as plain data. nats-server
 * enforces these lists in two deployments that must agree exactly: the user JWTs that
 * aegis-server signs (server/src/nats/credentials.ts) and the static users of the config
 * scripts/nats-config renders. Both take their lists from here.
 *
 * The point of the agent's lists: a host reads only its own and the fleet-wide snapshots
 * (live, and their last values by Direct Get in the subject-in-subject form, so the
 * permission names the subject) and its fleet's license, publishes only its own reports,
 * and gets replies on _INBOX.<machine>.> (AgentBus sets that inbox prefix; a shared _INBOX.>
 * would expose other agents' replies). Only aegis-server publishes snapshots and licenses.
 * An agent's subjects are named by its machine id (subjects.ts), so its permissions are too.
 */
import { ValidationError } from './errors.js';
import { ALL_HOSTS, isMachineId } from './identifiers.js';
import { subjects, subjectWildcards } from './subjects.js';

/** Allow lists in the shape of a NATS user JWT's `pub`/`sub` (nats-server's publish/subscribe). */
export interface NatsPermissions {
  pub: { allow: string[] };
  sub: { allow: string[] };
}

/**
 * The permissions of the agent of machine `machine` in `fleet`. Throws ValidationError when
 * machine is not a machine id (a hostname, or ALL_HOSTS, which is reserved for fleet-wide
 * snapshots: granting either would hand one host the subjects of another or of all), or
 * when fleet cannot be a subject token.
 */
export function agentNatsPermissions(machine: string, fleet: string): NatsPermissions {
  if (machine === ALL_HOSTS) throw new ValidationError([{ path: 'machine', message: `"${ALL_HOSTS}" is reserved for snapshots addressed to every host` }]);
  if (!isMachineId(machine)) {
    throw new ValidationError([{ path: 'machine', message: `${JSON.stringify(machine)} is not a machine id (a lowercase UUID assigned at activation)` }]);
  }
  const own = subjects.segMapsOf(machine);
  const all = subjects.segMapsOf(ALL_HOSTS);
  return {
    pub: { allow: [subjects.agentAll(machine), subjects.segMapDirectGet(own), subjects.segMapDirectGet(all)] },
    sub: { allow: [own, all, subjects.license(fleet), subjects.inboxOf(machine)] },
  };
}

/** The permissions of aegis-server: the only publisher of snapshots and licenses; manages the stream; reads reports. */
export function serverNatsPermissions(): NatsPermissions {
  return {
    pub: { allow: [subjectWildcards.segMaps, subjectWildcards.licenses, subjectWildcards.jetStreamApi, subjectWildcards.inboxes] },
    sub: { allow: [subjectWildcards.agents, subjectWildcards.inboxes] },
  };
}

/** The short-lived system-account user aegis-server pushes account JWTs with (revocations). */
export function accountPushNatsPermissions(): NatsPermissions {
  return {
    pub: { allow: [subjectWildcards.accountClaimsUpdates] },
    sub: { allow: [subjectWildcards.inboxes] },
  };
}
