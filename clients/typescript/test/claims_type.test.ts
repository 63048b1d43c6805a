/**
 * The library declares its own ModuleLicenseClaims (the published package needs nothing
 * outside itself); the compiler holds it to protocol's, the claims aegis-server signs. The
 * protocol side is a type-only import: erased from the compiled test, and the library's
 * sources never import it. If either declaration gains, loses or retypes a claim, this file
 * stops compiling (and the build with it).
 */
import t from 'tap';
import type { ModuleLicenseClaims as ServerClaims } from '../../../protocol/src/index.js';
import type { ModuleLicenseClaims as ClientClaims } from '../src/index.js';

/** Claims only the library reads: a hardware binding the server may put in a token later. */
type ClientOnly = 'hwid';

type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type OptionalKeys<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? K : never }[keyof T];
type Assert<T extends true> = T;

/** The same claim names, apart from the client-only ones (which must be optional). */
export type SameNames = Assert<Same<Exclude<keyof ClientClaims, ClientOnly>, keyof ServerClaims>>;
export type ClientOnlyOptional = Assert<Same<ClientOnly extends OptionalKeys<ClientClaims> ? true : false, true>>;
/** The same claims optional on both sides. */
export type SameOptional = Assert<Same<Exclude<OptionalKeys<ClientClaims>, ClientOnly>, OptionalKeys<ServerClaims>>>;
/** Every token the server signs reads as the library's claims: each server type fits the client's. */
export type ServerFitsClient = Assert<ServerClaims extends ClientClaims ? true : false>;
/** And each claim the library reads is the server's type or a widening of it (no narrower, no other). */
export type ClientWidensServer = Assert<{ [K in keyof ServerClaims]-?: Exclude<ServerClaims[K], undefined> extends ClientClaims[K] ? true : false }[keyof ServerClaims]>;

// The names at run time too, held to both declarations by `satisfies` (a missing or extra
// name does not compile).
const serverNames = {
  iss: 1, aud: 1, sub: 1, jti: 1, iat: 1, exp: 1, license_id: 1, license_type: 1, customer: 1, module: 1, tier: 1, features: 1, entitlements: 1, grace_seconds: 1,
} satisfies Record<keyof ServerClaims, 1>;
const clientNames = { ...serverNames, hwid: 1 } satisfies Record<keyof ClientClaims, 1>;

t.test("the library's module license claims are the server's (plus client-only optional ones)", async (t) => {
  t.same(
    Object.keys(clientNames).filter((k) => k !== ('hwid' satisfies ClientOnly)),
    Object.keys(serverNames),
  );
  // A claims object typed by the server is accepted where the library's is expected.
  const signed: ServerClaims = {
    iss: 'aegis', aud: 'aegis-module-license', sub: 'l', jti: 'j', iat: 1, license_id: 'l', license_type: 'perpetual',
    customer: { id: 'c', name: 'C' }, module: { technical_name: 'm', allowed_major_versions: ['1'] }, tier: 'server', features: [],
  };
  const read: ClientClaims = signed;
  t.equal(read.license_id, 'l');
});
