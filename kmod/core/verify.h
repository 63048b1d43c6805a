/* SPDX-License-Identifier: GPL-2.0 OR MIT */
#ifndef AEGIS_CORE_VERIFY_H
#define AEGIS_CORE_VERIFY_H

#include "compat.h"
#include "b64url.h"
#include "ed25519.h"
#include "json.h"

/* Largest token file accepted, trailing whitespace included. */
#define AEGIS_TOKEN_MAX 8192
/* The only audience a kernel token may carry. */
#define AEGIS_AUDIENCE "aegis-kmod"

#define AEGIS_MAX_KEYS 8
#define AEGIS_KID_MAX 64	/* as the server's KID_PATTERN: [A-Za-z0-9][A-Za-z0-9._-]{0,63} */
#define AEGIS_ALG_MAX 16
#define AEGIS_TYP_MAX 16
#define AEGIS_AUD_MAX 64
#define AEGIS_ISS_MAX 64
#define AEGIS_SUB_MAX 128
#define AEGIS_HWID_MAX 128
#define AEGIS_TIER_MAX 32
#define AEGIS_MAX_FEATURES 32
#define AEGIS_FEATURE_MAX 48

/*
 * The outcome of one verification, in precedence order: the first check that fails
 * decides. Time comes last so that a verified token's verdict can be re-derived from
 * its claims alone when only the clock has moved (aegis_verdict_at()).
 */
enum aegis_verdict {
	AEGIS_VERDICT_VALID = 0,
	AEGIS_VERDICT_MISSING,		/* no token file */
	AEGIS_VERDICT_READ_ERROR,	/* the file exists but could not be read */
	AEGIS_VERDICT_TOO_LARGE,	/* more than AEGIS_TOKEN_MAX bytes */
	AEGIS_VERDICT_MALFORMED,	/* not a compact JWS with a flat JSON header/payload */
	AEGIS_VERDICT_BAD_ALG,		/* header alg is not exactly "EdDSA" */
	AEGIS_VERDICT_UNKNOWN_KID,	/* header kid names no key in pubkeys */
	AEGIS_VERDICT_BAD_SIGNATURE,
	AEGIS_VERDICT_DUPLICATE_CLAIM,
	AEGIS_VERDICT_BAD_CLAIM_TYPE,
	AEGIS_VERDICT_MISSING_CLAIM,
	AEGIS_VERDICT_WRONG_AUDIENCE,
	AEGIS_VERDICT_HWID_MISMATCH,
	AEGIS_VERDICT_NOT_YET_VALID,	/* now < nbf */
	AEGIS_VERDICT_EXPIRED,		/* now >= exp */
	AEGIS_VERDICT_COUNT,
};

/* The sysfs status line for a verdict ("valid", "expired", "invalid: <reason>", ...). */
const char *aegis_verdict_str(enum aegis_verdict v);

struct aegis_pubkey {
	char kid[AEGIS_KID_MAX + 1];
	u8 key[AEGIS_ED25519_PUBKEY_SIZE];
};

struct aegis_keyring {
	struct aegis_pubkey keys[AEGIS_MAX_KEYS];
	size_t count;
};

/**
 * aegis_keyring_parse() - parse the pubkeys module parameter
 * @spec: "kid=base64url,kid=base64url,..."; each key the 32-byte raw Ed25519 public
 *        key, i.e. the JWK "x" member. Empty is allowed (then every token is unknown kid).
 *
 * Return: 0, or -1 with *@err set to a static description of what was wrong.
 */
int aegis_keyring_parse(struct aegis_keyring *ring, const char *spec, size_t len, const char **err);

struct aegis_header {
	char alg[AEGIS_ALG_MAX + 1];
	char typ[AEGIS_TYP_MAX + 1];
	char kid[AEGIS_KID_MAX + 1];
};

struct aegis_claims {
	char iss[AEGIS_ISS_MAX + 1];
	char aud[AEGIS_AUD_MAX + 1];
	char sub[AEGIS_SUB_MAX + 1];
	char hwid[AEGIS_HWID_MAX + 1];
	char tier[AEGIS_TIER_MAX + 1];
	char features[AEGIS_MAX_FEATURES][AEGIS_FEATURE_MAX + 1];
	u32 nfeatures;
	s64 fmask, iat, nbf, exp;	/* nbf defaults to iat when absent */
};

/* What a verification learned. Claims are trustworthy only when signature_ok. */
struct aegis_token_info {
	struct aegis_header header;
	struct aegis_claims claims;
	bool signature_ok;	/* signature verified and claims parsed */
};

struct aegis_verify_params {
	const struct aegis_keyring *keys;
	const char *hwid;	/* NULL or "" to skip the hwid check */
	s64 now;		/* seconds since the epoch */
};

/* Fixed working memory for one verification; its size is independent of the input. */
struct aegis_verify_scratch {
	u8 header[AEGIS_B64URL_DECODED_MAX(AEGIS_TOKEN_MAX)];
	u8 payload[AEGIS_B64URL_DECODED_MAX(AEGIS_TOKEN_MAX)];
	struct aegis_json_scratch json;
};

/**
 * aegis_verify_token() - verify a kernel entitlement token completely
 * @token: the file contents, @len bytes (not NUL-terminated); trailing whitespace is
 *         ignored, anything longer than AEGIS_TOKEN_MAX is refused unread
 *
 * Return: the verdict; @info is filled as far as verification got.
 */
enum aegis_verdict aegis_verify_token(const u8 *token, size_t len,
				      const struct aegis_verify_params *params,
				      struct aegis_verify_scratch *scratch,
				      struct aegis_token_info *info);

/*
 * The two JSON readers aegis_verify_token() uses, exposed for the fuzzer and tests:
 * the JWS header (alg, kid; "crit" and token-supplied keys refused) and the kernel
 * token claims. Return AEGIS_VERDICT_VALID when the JSON is acceptable.
 */
enum aegis_verdict aegis_read_header(const u8 *json, size_t len, struct aegis_header *h,
				     struct aegis_json_scratch *scratch);
enum aegis_verdict aegis_read_claims(const u8 *json, size_t len, struct aegis_claims *c,
				     struct aegis_json_scratch *scratch);

/* The time-dependent part of the verdict for verified claims at time @now. */
enum aegis_verdict aegis_verdict_at(const struct aegis_claims *claims, s64 now);

#endif /* AEGIS_CORE_VERIFY_H */
