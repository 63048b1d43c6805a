/* SPDX-License-Identifier: GPL-2.0 OR MIT */
#ifndef AEGIS_CORE_SHA512_H
#define AEGIS_CORE_SHA512_H

#include "compat.h"

#define AEGIS_SHA512_DIGEST_SIZE 64
#define AEGIS_SHA512_BLOCK_SIZE 128

struct aegis_sha512_ctx {
	u64 state[8];
	u64 bytes;	/* message length so far; tokens are far below 2^61 bytes */
	u8 buf[AEGIS_SHA512_BLOCK_SIZE];
	size_t buf_len;
};

/* SHA-512 (FIPS 180-4), incremental: init, any number of updates, final. */
void aegis_sha512_init(struct aegis_sha512_ctx *ctx);
void aegis_sha512_update(struct aegis_sha512_ctx *ctx, const void *data, size_t len);
void aegis_sha512_final(struct aegis_sha512_ctx *ctx, u8 out[AEGIS_SHA512_DIGEST_SIZE]);
/* One-shot SHA-512 of @len bytes at @data. */
void aegis_sha512(const void *data, size_t len, u8 out[AEGIS_SHA512_DIGEST_SIZE]);

#endif /* AEGIS_CORE_SHA512_H */
