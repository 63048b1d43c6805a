// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Unpadded base64url decoding for the JWS segments and the pubkeys module parameter.
 * Branches on the input are fine: tokens and public keys are not secret.
 */
#include "b64url.h"

/* Returns the 6-bit value of @c, or -1 when @c is not in the base64url alphabet. */
static int aegis_b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

bool aegis_b64url_decode(u8 *out, size_t out_cap, size_t *out_len, const char *in, size_t in_len)
{
	size_t full = in_len / 4, rem = in_len % 4, need, i, o = 0;
	u32 acc;
	int v;

	if (rem == 1)
		return false;
	need = full * 3 + (rem ? rem - 1 : 0);
	if (need > out_cap)
		return false;

	for (i = 0; i < full * 4; i += 4) {
		int a = aegis_b64url_value((unsigned char)in[i]);
		int b = aegis_b64url_value((unsigned char)in[i + 1]);
		int c = aegis_b64url_value((unsigned char)in[i + 2]);
		int d = aegis_b64url_value((unsigned char)in[i + 3]);

		if ((a | b | c | d) < 0)
			return false;
		acc = ((u32)a << 18) | ((u32)b << 12) | ((u32)c << 6) | (u32)d;
		out[o++] = (u8)(acc >> 16);
		out[o++] = (u8)(acc >> 8);
		out[o++] = (u8)acc;
	}

	if (rem) {
		acc = 0;
		for (i = 0; i < rem; i++) {
			v = aegis_b64url_value((unsigned char)in[full * 4 + i]);
			if (v < 0)
				return false;
			acc = (acc << 6) | (u32)v;
		}
		if (rem == 2) {
			/* 12 bits carry one byte; the low 4 must be zero. */
			if (acc & 0xf)
				return false;
			out[o++] = (u8)(acc >> 4);
		} else {
			/* 18 bits carry two bytes; the low 2 must be zero. */
			if (acc & 0x3)
				return false;
			out[o++] = (u8)(acc >> 10);
			out[o++] = (u8)(acc >> 2);
		}
	}
	*out_len = o;
	return true;
}
