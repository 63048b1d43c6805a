// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * libFuzzer target for the verifier core. The first input byte picks what the rest is fed
 * to, because a fuzzer cannot forge signatures and so would never reach the claim reader
 * through the full path:
 *   0  aegis_verify_token(), the whole pipeline (keys: RFC 8032 TEST 1 under two kids)
 *   1  aegis_read_claims(), the claim reader on a payload
 *   2  aegis_read_header(), the header reader
 *   3  aegis_b64url_decode() and aegis_ed25519_verify(): pub(32) | sig(64) | message
 *   4  aegis_keyring_parse(), the pubkeys parameter
 * Any crash, sanitizer report or broken invariant below is a bug.
 */
#include <stdio.h>
#include <stdlib.h>

#include "b64url.h"
#include "ed25519.h"
#include "verify.h"

static struct aegis_verify_scratch aegis_fz_scratch;
static struct aegis_token_info aegis_fz_info;
static struct aegis_keyring aegis_fz_ring;

static void aegis_fz_assert(bool cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

static bool aegis_fz_terminated(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	const char *err;
	u8 *copy;
	size_t n;
	u32 i;

	if (!ready) {
		static const char spec[] = "aegis-2026-01=11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo,"
					   "k2=11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

		if (aegis_keyring_parse(&aegis_fz_ring, spec, strlen(spec), &err))
			abort();
		ready = true;
	}
	if (size < 1)
		return 0;

	/* An exact-size heap copy, so ASan sees any read past the end. */
	n = size - 1;
	copy = malloc(n ? n : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, n);

	switch (data[0] % 5) {
	case 0: {
		struct aegis_verify_params p = { .keys = &aegis_fz_ring, .hwid = "ab", .now = 1763790000 };
		enum aegis_verdict v = aegis_verify_token(copy, n, &p, &aegis_fz_scratch, &aegis_fz_info);

		aegis_fz_assert(v < AEGIS_VERDICT_COUNT, "verdict in range");
		/* Nobody can sign for the fuzzer: a forged token must never get past the signature. */
		aegis_fz_assert(!aegis_fz_info.signature_ok, "no signature verifies on fuzz input");
		aegis_fz_assert(v != AEGIS_VERDICT_VALID, "fuzz input is never valid");
		break;
	}
	case 1: {
		struct aegis_claims *c = &aegis_fz_info.claims;

		memset(c, 0xa5, sizeof(*c));
		if (aegis_read_claims(copy, n, c, &aegis_fz_scratch.json) == AEGIS_VERDICT_VALID) {
			aegis_fz_assert(aegis_fz_terminated(c->aud, sizeof(c->aud)) &&
					aegis_fz_terminated(c->tier, sizeof(c->tier)) &&
					aegis_fz_terminated(c->hwid, sizeof(c->hwid)) &&
					aegis_fz_terminated(c->sub, sizeof(c->sub)), "claims are NUL-terminated");
			aegis_fz_assert(c->nfeatures <= AEGIS_MAX_FEATURES, "feature count bounded");
			for (i = 0; i < c->nfeatures; i++)
				aegis_fz_assert(aegis_fz_terminated(c->features[i], sizeof(c->features[i])),
						"features are NUL-terminated");
		}
		break;
	}
	case 2: {
		struct aegis_header *h = &aegis_fz_info.header;

		if (aegis_read_header(copy, n, h, &aegis_fz_scratch.json) == AEGIS_VERDICT_VALID)
			aegis_fz_assert(strcmp(h->alg, "EdDSA") == 0, "only EdDSA passes the header");
		break;
	}
	case 3: {
		u8 out[256];
		size_t outlen;

		if (aegis_b64url_decode(out, sizeof(out), &outlen, (const char *)copy, n))
			aegis_fz_assert(outlen <= sizeof(out) && outlen == n * 3 / 4, "decoded length");
		if (n >= 96)
			(void)aegis_ed25519_verify(copy + 32, copy + 96, n - 96, copy);
		break;
	}
	default: {
		struct aegis_keyring ring;

		if (aegis_keyring_parse(&ring, (const char *)copy, n, &err) == 0)
			aegis_fz_assert(ring.count <= AEGIS_MAX_KEYS, "key count bounded");
		break;
	}
	}
	free(copy);
	return 0;
}
