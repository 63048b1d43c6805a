// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Userspace driver for the verifier core, built from the same sources as the module
 * (with ASan and UBSan in the test build).
 *
 *   aegis-core-test vectors
 *       Known-answer tests; one "ok N - name" / "not ok N - name" line each, exit 1 on
 *       any failure.
 *   aegis-core-test verify [--pubkeys SPEC] [--hwid HWID] [--now SECONDS] [--bench N] FILE...
 *       Verifies each token file as the module would and prints "FILE<TAB>status".
 *       With --bench, also verifies the first file N times and prints the mean time.
 *   aegis-core-test ed25519-stdin
 *       Reads "pubhex msghex sighex" lines ("-" for an empty message), prints 1 or 0.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "b64url.h"
#include "ed25519.h"
#include "json.h"
#include "selftest.h"
#include "sha512.h"
#include "verify.h"
#include "rfc8032_vectors.h"

static int aegis_t_count, aegis_t_failed;

static void check(bool cond, const char *fmt, const char *name)
{
	char line[256];
	char *p;

	aegis_t_count++;
	if (!cond)
		aegis_t_failed++;
	snprintf(line, sizeof(line), fmt, name);
	/* One result per line, whatever bytes a test name holds. */
	for (p = line; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	printf("%s %d - %s\n", cond ? "ok" : "not ok", aegis_t_count, line);
}

static size_t unhex(u8 *out, size_t cap, const char *hex)
{
	size_t n = strlen(hex) / 2, i;

	if (n > cap) {
		fprintf(stderr, "hex string too long\n");
		exit(2);
	}
	for (i = 0; i < n; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
			fprintf(stderr, "bad hex\n");
			exit(2);
		}
		out[i] = (u8)b;
	}
	return n;
}

static void test_sha512(void)
{
	static const struct {
		const char *name, *msg, *digest;
	} v[] = {
		{ "empty", "",
		  "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e" },
		{ "abc", "abc",
		  "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f" },
		{ "896-bit",
		  "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
		  "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909" },
	};
	u8 want[64], got[64];
	size_t i, j;

	for (i = 0; i < AEGIS_ARRAY_SIZE(v); i++) {
		unhex(want, sizeof(want), v[i].digest);
		aegis_sha512(v[i].msg, strlen(v[i].msg), got);
		check(memcmp(want, got, 64) == 0, "sha512 %s", v[i].name);

		/* The same message fed one byte at a time exercises the buffering path. */
		{
			struct aegis_sha512_ctx ctx;

			aegis_sha512_init(&ctx);
			for (j = 0; j < strlen(v[i].msg); j++)
				aegis_sha512_update(&ctx, v[i].msg + j, 1);
			aegis_sha512_final(&ctx, got);
			check(memcmp(want, got, 64) == 0, "sha512 %s, byte by byte", v[i].name);
		}
	}

	{
		static char block[1000];
		struct aegis_sha512_ctx ctx;

		memset(block, 'a', sizeof(block));
		unhex(want, sizeof(want),
		      "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973ebde0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b");
		aegis_sha512_init(&ctx);
		for (i = 0; i < 1000; i++)
			aegis_sha512_update(&ctx, block, sizeof(block));
		aegis_sha512_final(&ctx, got);
		check(memcmp(want, got, 64) == 0, "sha512 %s", "one million 'a'");
	}
}

static void test_ed25519(void)
{
	static u8 msg[2048];
	static const u8 l[32] = {
		0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
	};
	u8 pub[32], sig[64], bad[64], badpub[32];
	char name[96];
	size_t i, j, n;

	for (i = 0; i < AEGIS_ARRAY_SIZE(aegis_rfc8032_vectors); i++) {
		const struct aegis_rfc8032_vector *v = &aegis_rfc8032_vectors[i];
		unsigned int carry = 0;

		unhex(pub, sizeof(pub), v->pub);
		unhex(sig, sizeof(sig), v->sig);
		n = unhex(msg, sizeof(msg), v->msg);

		check(aegis_ed25519_verify(sig, msg, n, pub), "rfc8032 %s verifies", v->name);

		for (j = 0; j < 3; j++) {
			static const size_t bits[3] = { 5, 8 * 32 + 3, 8 * 63 + 1 };

			memcpy(bad, sig, 64);
			bad[bits[j] / 8] ^= (u8)(1u << (bits[j] % 8));
			snprintf(name, sizeof(name), "rfc8032 %s with signature bit %zu flipped is refused",
				 v->name, bits[j]);
			check(!aegis_ed25519_verify(bad, msg, n, pub), "%s", name);
		}
		if (n) {
			msg[n - 1] ^= 0x80;
			check(!aegis_ed25519_verify(sig, msg, n, pub), "rfc8032 %s with message changed is refused",
			      v->name);
			msg[n - 1] ^= 0x80;
		}
		check(!aegis_ed25519_verify(sig, msg, n + 1, pub), "rfc8032 %s with a byte appended is refused",
		      v->name);
		memcpy(badpub, pub, 32);
		badpub[0] ^= 0x02;
		check(!aegis_ed25519_verify(sig, msg, n, badpub), "rfc8032 %s under another key is refused",
		      v->name);

		/* S + L: equal mod L, so only the S < L rule (no malleability) refuses it. */
		memcpy(bad, sig, 64);
		for (j = 0; j < 32; j++) {
			carry += bad[32 + j] + l[j];
			bad[32 + j] = (u8)carry;
			carry >>= 8;
		}
		check(!aegis_ed25519_verify(bad, msg, n, pub), "rfc8032 %s with S + L is refused", v->name);
	}

	/*
	 * The identity as public key with R = identity and S = 0 satisfies the cofactorless
	 * equation for every message; only the small-order check refuses it.
	 */
	memset(pub, 0, 32);
	pub[0] = 1;
	memset(sig, 0, 64);
	sig[0] = 1;
	check(!aegis_ed25519_verify(sig, (const u8 *)"any", 3, pub), "%s",
	      "identity public key with identity R and S = 0 is refused");

	/* Small-order public keys: (0, -1) of order 2, (+-sqrt(-1), 0) of order 4. */
	unhex(pub, 32, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
	unhex(sig, 64, aegis_rfc8032_vectors[0].sig);
	check(!aegis_ed25519_verify(sig, (const u8 *)"", 0, pub), "%s", "order-2 public key is refused");
	memset(pub, 0, 32);
	check(!aegis_ed25519_verify(sig, (const u8 *)"", 0, pub), "%s", "order-4 public key is refused");
	/* The identity encoded non-canonically (y = p + 1) does not decode at all. */
	unhex(pub, 32, "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
	check(!aegis_ed25519_verify(sig, (const u8 *)"", 0, pub), "%s", "non-canonical y (p + 1) is refused");
	/* y = 2 is not on the curve (u/v is not a square). */
	memset(pub, 0, 32);
	pub[0] = 2;
	check(!aegis_ed25519_verify(sig, (const u8 *)"", 0, pub), "%s", "point off the curve is refused");

	/* A small-order R with a valid key: refused before any arithmetic is trusted. */
	unhex(pub, 32, aegis_rfc8032_vectors[0].pub);
	memset(sig, 0, 64);
	sig[0] = 1;
	check(!aegis_ed25519_verify(sig, (const u8 *)"", 0, pub), "%s", "small-order R is refused");

	check(aegis_core_selftest() == NULL, "%s", "module selftest passes");
}

static void test_b64url(void)
{
	static const struct {
		const char *in, *out;	/* out NULL: must be refused */
	} v[] = {
		{ "", "" }, { "Zg", "f" }, { "Zm8", "fo" }, { "Zm9v", "foo" }, { "Zm9vYg", "foob" },
		{ "Zm9vYmE", "fooba" }, { "Zm9vYmFy", "foobar" }, { "-_8", "\xfb\xff" },
		{ "Zg==", NULL }, { "Z", NULL }, { "Zh", NULL }, { "Zm9=", NULL }, { "+/8", NULL },
		{ "Zm 9v", NULL }, { "Zm9v\n", NULL }, { "Zm9", NULL /* low bits set */ },
	};
	u8 out[16];
	size_t i, n;
	char name[64];

	for (i = 0; i < AEGIS_ARRAY_SIZE(v); i++) {
		bool ok = aegis_b64url_decode(out, sizeof(out), &n, v[i].in, strlen(v[i].in));

		snprintf(name, sizeof(name), "base64url \"%s\" %s", v[i].in, v[i].out ? "decodes" : "is refused");
		if (v[i].out)
			check(ok && n == strlen(v[i].out) && memcmp(out, v[i].out, n) == 0, "%s", name);
		else
			check(!ok, "%s", name);
	}
	check(!aegis_b64url_decode(out, 1, &n, "Zm9v", 4), "%s", "base64url output bound is enforced");
}

static void test_json(void)
{
	static const struct {
		const char *json;
		enum aegis_json_status want;
		const char *s;	/* expected "s" when OK */
	} v[] = {
		{ "{\"s\":\"x\",\"n\":1,\"a\":[\"p\",\"q\"]}", AEGIS_JSON_OK, "x" },
		{ " { \"s\" : \"x\" , \"n\" : -9223372036854775808 , \"a\" : [ ] } ", AEGIS_JSON_OK, "x" },
		{ "{\"s\":\"\\u0041\\n\"}", AEGIS_JSON_MALFORMED, NULL },	/* newline in a shown value */
		{ "{\"s\":\"\\u0041\\/\\\\\"}", AEGIS_JSON_OK, "A/\\" },
		{ "{\"\\u0073\":\"esc\"}", AEGIS_JSON_OK, "esc" },		/* escaped key matches "s" */
		{ "{\"s\":\"x\",\"\\u0073\":\"y\"}", AEGIS_JSON_DUPLICATE, NULL },
		{ "{\"u\":1,\"u\":2}", AEGIS_JSON_DUPLICATE, NULL },		/* unknown keys too */
		{ "{\"s\":1}", AEGIS_JSON_BAD_TYPE, NULL },
		{ "{\"n\":\"1\"}", AEGIS_JSON_BAD_TYPE, NULL },
		{ "{\"n\":1.5}", AEGIS_JSON_BAD_TYPE, NULL },
		{ "{\"n\":1e3}", AEGIS_JSON_BAD_TYPE, NULL },
		{ "{\"n\":9223372036854775808}", AEGIS_JSON_BAD_TYPE, NULL },
		{ "{\"a\":\"p\"}", AEGIS_JSON_BAD_TYPE, NULL },
		{ "{\"a\":[1]}", AEGIS_JSON_BAD_TYPE, NULL },
		{ "{\"a\":[[\"p\"]]}", AEGIS_JSON_MALFORMED, NULL },
		{ "{\"u\":{\"x\":1}}", AEGIS_JSON_MALFORMED, NULL },	/* not flat */
		{ "{\"u\":[1,\"x\",true,null,2.5e-3]}", AEGIS_JSON_OK, NULL },
		{ "{\"n\":01}", AEGIS_JSON_MALFORMED, NULL },
		{ "{\"n\":-}", AEGIS_JSON_MALFORMED, NULL },
		{ "{\"s\":\"x\"", AEGIS_JSON_MALFORMED, NULL },
		{ "{\"s\":\"x\"}}", AEGIS_JSON_MALFORMED, NULL },
		{ "{\"s\":\"x\",}", AEGIS_JSON_MALFORMED, NULL },
		{ "{\"s\":\"\\u0000\"}", AEGIS_JSON_MALFORMED, NULL },
		{ "{\"u\":\"\\ud83d\\ude00\"}", AEGIS_JSON_OK, NULL },		/* surrogate pair */
		{ "{\"u\":\"\\ud83d\"}", AEGIS_JSON_MALFORMED, NULL },		/* lone high surrogate */
		{ "{\"u\":\"\\ude00\"}", AEGIS_JSON_MALFORMED, NULL },		/* lone low surrogate */
		{ "{\"u\":\"\xc3\xa9\"}", AEGIS_JSON_OK, NULL },		/* raw UTF-8 */
		{ "{\"u\":\"\xc0\xa9\"}", AEGIS_JSON_MALFORMED, NULL },		/* overlong */
		{ "{\"u\":\"\xed\xa0\x80\"}", AEGIS_JSON_MALFORMED, NULL },	/* encoded surrogate */
		{ "{\"u\":\"a\tb\"}", AEGIS_JSON_MALFORMED, NULL },		/* raw control */
		{ "{\"s\":\"\xc3\xa9\"}", AEGIS_JSON_MALFORMED, NULL },		/* shown values are ASCII */
		{ "{\"s\":\"0123456789abcdef\"}", AEGIS_JSON_MALFORMED, NULL },	/* longer than cap */
		{ "{\"a\":[\"1\",\"2\",\"3\",\"4\",\"5\"]}", AEGIS_JSON_MALFORMED, NULL }, /* too many items */
		{ "{\"r\":1}", AEGIS_JSON_FORBIDDEN, NULL },
		{ "{}", AEGIS_JSON_OK, NULL },
		{ "[]", AEGIS_JSON_MALFORMED, NULL },
		{ "", AEGIS_JSON_MALFORMED, NULL },
		{ "{\"u\":tru}", AEGIS_JSON_MALFORMED, NULL },
	};
	char s[16], a[4][8], name[160];
	s64 n;
	u32 count;
	size_t i;
	struct aegis_json_scratch scratch;

	for (i = 0; i < AEGIS_ARRAY_SIZE(v); i++) {
		struct aegis_json_field f[] = {
			{ .name = "s", .type = AEGIS_JSON_STRING, .dst = s, .cap = sizeof(s) },
			{ .name = "n", .type = AEGIS_JSON_INT, .dst = &n },
			{ .name = "a", .type = AEGIS_JSON_STRING_ARRAY, .dst = a, .cap = sizeof(a[0]),
			  .max_items = 4, .count = &count },
			{ .name = "r", .type = AEGIS_JSON_REFUSE },
		};
		enum aegis_json_status st;

		s[0] = '\0';
		st = aegis_json_read_object((const u8 *)v[i].json, strlen(v[i].json), f, 4, &scratch);
		snprintf(name, sizeof(name), "json %s -> %d", v[i].json, (int)v[i].want);
		check(st == v[i].want && (!v[i].s || strcmp(s, v[i].s) == 0), "%s", name);
	}

	/* More members than the reader keeps names for. */
	{
		char big[32 * 12 + 8];
		size_t off = 0;
		struct aegis_json_field none[1] = { { .name = "s", .type = AEGIS_JSON_STRING, .dst = s, .cap = sizeof(s) } };

		off += (size_t)sprintf(big + off, "{");
		for (i = 0; i < 33; i++)
			off += (size_t)sprintf(big + off, "%s\"k%zu\":1", i ? "," : "", i);
		sprintf(big + off, "}");
		check(aegis_json_read_object((const u8 *)big, strlen(big), none, 1, &scratch) == AEGIS_JSON_MALFORMED,
		      "%s", "json with 33 members is refused");
	}
}

static void test_keyring(void)
{
	struct aegis_keyring ring;
	const char *err = NULL;
	static const char good[] = "aegis-2026-01=11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo,b=11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\n";

	check(aegis_keyring_parse(&ring, good, strlen(good), &err) == 0 && ring.count == 2 &&
	      strcmp(ring.keys[0].kid, "aegis-2026-01") == 0 && ring.keys[0].key[0] == 0xd7,
	      "%s", "pubkeys with two keys parses");
	check(aegis_keyring_parse(&ring, "", 0, &err) == 0 && ring.count == 0, "%s", "empty pubkeys parses");
	check(aegis_keyring_parse(&ring, "a=AAAA", 6, &err) != 0, "%s", "short key is refused");
	check(aegis_keyring_parse(&ring, "noequals", 8, &err) != 0, "%s", "missing '=' is refused");
	check(aegis_keyring_parse(&ring, "a b=11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", 46, &err) != 0,
	      "%s", "bad kid is refused");
	{
		static const char dup[] = "a=11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo,a=11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

		check(aegis_keyring_parse(&ring, dup, strlen(dup), &err) != 0, "%s", "duplicate kid is refused");
	}
}

static int run_vectors(void)
{
	test_sha512();
	test_ed25519();
	test_b64url();
	test_json();
	test_keyring();
	printf("# %d tests, %d failed\n", aegis_t_count, aegis_t_failed);
	return aegis_t_failed ? 1 : 0;
}

static u8 aegis_file_buf[AEGIS_TOKEN_MAX + 1];

/* Reads at most AEGIS_TOKEN_MAX + 1 bytes, as the module does. */
static enum aegis_verdict read_token(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");

	if (!f)
		return errno == ENOENT ? AEGIS_VERDICT_MISSING : AEGIS_VERDICT_READ_ERROR;
	*len = fread(aegis_file_buf, 1, sizeof(aegis_file_buf), f);
	if (ferror(f)) {
		fclose(f);
		return AEGIS_VERDICT_READ_ERROR;
	}
	fclose(f);
	return AEGIS_VERDICT_VALID;
}

static u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (u64)ts.tv_sec * 1000000000ULL + (u64)ts.tv_nsec;
}

static int run_verify(int argc, char **argv)
{
	static struct aegis_keyring ring;
	static struct aegis_verify_scratch scratch;
	static struct aegis_token_info info;
	struct aegis_verify_params params = { .keys = &ring, .hwid = NULL, .now = (s64)time(NULL) };
	const char *spec = "", *err = NULL;
	long bench = 0;
	int i;

	for (i = 2; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (strcmp(argv[i], "--pubkeys") == 0)
			spec = argv[i + 1];
		else if (strcmp(argv[i], "--hwid") == 0)
			params.hwid = argv[i + 1];
		else if (strcmp(argv[i], "--now") == 0)
			params.now = strtoll(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--bench") == 0)
			bench = strtol(argv[i + 1], NULL, 10);
		else
			break;
	}
	if (aegis_keyring_parse(&ring, spec, strlen(spec), &err) != 0) {
		fprintf(stderr, "aegis-core-test: bad --pubkeys: %s\n", err);
		return 2;
	}
	for (; i < argc; i++) {
		size_t len = 0;
		enum aegis_verdict v = read_token(argv[i], &len);

		if (v == AEGIS_VERDICT_VALID)
			v = aegis_verify_token(aegis_file_buf, len, &params, &scratch, &info);
		printf("%s\t%s", argv[i], aegis_verdict_str(v));
		if (info.signature_ok)
			printf("\ttier=%s fmask=%lld features=%u exp=%lld", info.claims.tier,
			       (long long)info.claims.fmask, info.claims.nfeatures, (long long)info.claims.exp);
		printf("\n");

		if (bench > 0) {
			u64 t0 = now_ns();
			long k;

			for (k = 0; k < bench; k++)
				aegis_verify_token(aegis_file_buf, len, &params, &scratch, &info);
			printf("# bench\t%s\t%ld runs\t%llu ns/verify\n", argv[i], bench,
			       (unsigned long long)((now_ns() - t0) / (u64)bench));
			bench = 0;
		}
	}
	return 0;
}

/*
 * Reads "pubhex msghex sighex" lines and prints 1 or 0 for each: lets the tests compare
 * this verifier with node:crypto on random keys, messages and corrupted signatures.
 */
static int run_ed25519_stdin(void)
{
	static char line[8192];
	static u8 msg[4096];
	u8 pub[32], sig[64];

	while (fgets(line, sizeof(line), stdin)) {
		char *pub_hex = strtok(line, " \n"), *msg_hex = strtok(NULL, " \n"), *sig_hex = strtok(NULL, " \n");
		size_t n;

		if (!pub_hex || !msg_hex || !sig_hex || strlen(pub_hex) != 64 || strlen(sig_hex) != 128) {
			fprintf(stderr, "bad input line\n");
			return 2;
		}
		unhex(pub, sizeof(pub), pub_hex);
		unhex(sig, sizeof(sig), sig_hex);
		n = strcmp(msg_hex, "-") == 0 ? 0 : unhex(msg, sizeof(msg), msg_hex);
		printf("%d\n", aegis_ed25519_verify(sig, msg, n, pub) ? 1 : 0);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "ed25519-stdin") == 0)
		return run_ed25519_stdin();
	if (argc >= 2 && strcmp(argv[1], "vectors") == 0)
		return run_vectors();
	if (argc >= 2 && strcmp(argv[1], "verify") == 0)
		return run_verify(argc, argv);
	fprintf(stderr, "usage: %s vectors | ed25519-stdin | verify [--pubkeys SPEC] [--hwid HWID] [--now SECONDS] [--bench N] FILE...\n",
		argv[0]);
	return 2;
}
