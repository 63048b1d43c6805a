/* SPDX-License-Identifier: GPL-2.0 OR MIT */
#ifndef AEGIS_CORE_B64URL_H
#define AEGIS_CORE_B64URL_H

#include "compat.h"

/* Bytes needed to decode @in_len characters of unpadded base64url. */
#define AEGIS_B64URL_DECODED_MAX(in_len) (((in_len) / 4) * 3 + 2)

/**
 * aegis_b64url_decode() - decode unpadded base64url (RFC 4648 section 5, as JWS uses it)
 *
 * Accepts only the canonical form: no padding, no '+' or '/', no whitespace, a length
 * that is not 1 mod 4, and zero bits in the unused tail of the last character, so every
 * byte string has exactly one accepted encoding.
 *
 * Return: true and *@out_len set on success; false when the input is not canonical
 * base64url or would not fit in @out_cap bytes.
 */
bool aegis_b64url_decode(u8 *out, size_t out_cap, size_t *out_len, const char *in, size_t in_len);

#endif /* AEGIS_CORE_B64URL_H */
