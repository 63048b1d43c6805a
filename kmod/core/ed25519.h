/* SPDX-License-Identifier: GPL-2.0 OR MIT */
#ifndef AEGIS_CORE_ED25519_H
#define AEGIS_CORE_ED25519_H

#include "compat.h"

#define AEGIS_ED25519_PUBKEY_SIZE 32
#define AEGIS_ED25519_SIG_SIZE 64

/**
 * aegis_ed25519_verify() - verify a pure Ed25519 signature (RFC 8032 section 5.1.7)
 *
 * Beyond the RFC's required checks (S < L, R and A decode as curve points with
 * canonical y), this also refuses a public key A or a commitment R of small order, so no
 * signature verifies under a weak key. The group equation is the cofactorless one,
 * [S]B = R + [k]A, checked by comparing the encoding of [S]B - [k]A with R.
 * Variable time: every input is public.
 *
 * Return: true only when @sig is a valid signature of @msg under @pub.
 */
bool aegis_ed25519_verify(const u8 sig[AEGIS_ED25519_SIG_SIZE], const u8 *msg, size_t msg_len,
			  const u8 pub[AEGIS_ED25519_PUBKEY_SIZE]);

#endif /* AEGIS_CORE_ED25519_H */
