/**
 * Identifiers that agent, server and the deploy scripts must agree on. A host (machine)
 * identifier becomes a token of NATS subjects (aegis.agent.<host>.status) and of the
 * permissions nats-server enforces, so it may hold only characters that cannot change a
 * subject's meaning: no ".", no "*" or ">" wildcards, no whitespace.
 */

/** The characters of every Aegis identifier that ends up in a subject, as a regex class. */
export const IDENTIFIER_CHARS = '[A-Za-z0-9_-]';

/** Longest subject token Aegis accepts (keeps subjects and JWT permissions short). */
export const SUBJECT_TOKEN_MAX_LENGTH = 128;

/** One token of an Aegis NATS subject: a host, a fleet on the wire, a service id. */
export const SUBJECT_TOKEN_PATTERN = new RegExp(`^${IDENTIFIER_CHARS}{1,${SUBJECT_TOKEN_MAX_LENGTH}}$`);

/** True when `value` can stand as one token of an Aegis NATS subject. */
export function isSubjectToken(value: unknown): value is string {
  return typeof value === 'string' && SUBJECT_TOKEN_PATTERN.test(value);
}

/**
 * A host (machine) identifier: exactly one subject token, because each host's subjects
 * and permissions are built from it. The same object as SUBJECT_TOKEN_PATTERN.
 */
export const HOST_ID_PATTERN = SUBJECT_TOKEN_PATTERN;

/** True when `value` is a valid host identifier (HOST_ID_PATTERN); ALL_HOSTS included. */
export function isHostId(value: unknown): value is string {
  return isSubjectToken(value);
}

/** The reserved host identifier of snapshots addressed to every host; no agent is named so. */
export const ALL_HOSTS = '_all';

/** True when `value` can name one agent's host: a host identifier other than ALL_HOSTS. */
export function isAgentHostId(value: unknown): value is string {
  return isHostId(value) && value !== ALL_HOSTS;
}

/**
 * A machine id as aegis-server assigns it at activation (a lowercase RFC 4122 UUID). It is
 * the host's identity in NATS subjects, credentials, snapshot targets and reports; a
 * hostname is only a label.
 */
export const MACHINE_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** True when `value` has the form of a machine id (MACHINE_ID_PATTERN). */
export function isMachineId(value: unknown): value is string {
  return typeof value === 'string' && MACHINE_ID_PATTERN.test(value);
}

/** Longest fleet name the HTTP API and the agent's config accept. */
export const FLEET_NAME_MAX_LENGTH = 64;

/** A fleet name as licenses and agent configs carry it (a subject token, at most 64 long). */
export const FLEET_NAME_PATTERN = new RegExp(`^${IDENTIFIER_CHARS}{1,${FLEET_NAME_MAX_LENGTH}}$`);

/** True when `value` is a valid fleet name (FLEET_NAME_PATTERN). */
export function isFleetName(value: unknown): value is string {
  return typeof value === 'string' && FLEET_NAME_PATTERN.test(value);
}
