// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Compact JWS verification for the kernel entitlement token:
 * base64url(header) "." base64url(payload) "." base64url(Ed25519 signature).
 *
 * Order: shape, header (alg, kid), signature, then claims. The payload is not even
 * parsed until its signature has verified, so the claim reader only ever sees bytes
 * the license authority signed (the fuzzer still drives it directly).
 */
#include "verify.h"

static const char *const aegis_verdict_names[AEGIS_VERDICT_COUNT] = {
	[AEGIS_VERDICT_VALID] = "valid",
	[AEGIS_VERDICT_MISSING] = "missing",
	[AEGIS_VERDICT_READ_ERROR] = "invalid: read error",
	[AEGIS_VERDICT_TOO_LARGE] = "invalid: token too large",
	[AEGIS_VERDICT_MALFORMED] = "invalid: malformed",
	[AEGIS_VERDICT_BAD_ALG] = "invalid: bad algorithm",
	[AEGIS_VERDICT_UNKNOWN_KID] = "invalid: unknown kid",
	[AEGIS_VERDICT_BAD_SIGNATURE] = "invalid: bad signature",
	[AEGIS_VERDICT_DUPLICATE_CLAIM] = "invalid: duplicate claim",
	[AEGIS_VERDICT_BAD_CLAIM_TYPE] = "invalid: bad claim type",
	[AEGIS_VERDICT_MISSING_CLAIM] = "invalid: missing claim",
	[AEGIS_VERDICT_WRONG_AUDIENCE] = "invalid: wrong audience",
	[AEGIS_VERDICT_HWID_MISMATCH] = "invalid: hwid mismatch",
	[AEGIS_VERDICT_NOT_YET_VALID] = "invalid: not yet valid",
	[AEGIS_VERDICT_EXPIRED] = "expired",
};

const char *aegis_verdict_str(enum aegis_verdict v)
{
	if ((unsigned int)v >= AEGIS_VERDICT_COUNT)
		return "invalid: internal error";
	return aegis_verdict_names[v];
}

static bool aegis_kid_char_ok(char ch, bool first)
{
	if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
		return true;
	return !first && (ch == '.' || ch == '_' || ch == '-');
}

int aegis_keyring_parse(struct aegis_keyring *ring, const char *spec, size_t len, const char **err)
{
	size_t pos = 0, i;

	memset(ring, 0, sizeof(*ring));
	/* Tolerate the newline a shell "echo" leaves behind. */
	while (len && (spec[len - 1] == '\n' || spec[len - 1] == ' '))
		len--;
	while (pos < len) {
		struct aegis_pubkey *k;
		size_t start = pos, klen, key_len;

		if (ring->count >= AEGIS_MAX_KEYS) {
			*err = "too many keys (at most 8)";
			return -1;
		}
		k = &ring->keys[ring->count];
		while (pos < len && spec[pos] != '=' && spec[pos] != ',')
			pos++;
		klen = pos - start;
		if (pos >= len || spec[pos] != '=') {
			*err = "expected kid=base64url-key";
			return -1;
		}
		if (klen == 0 || klen > AEGIS_KID_MAX) {
			*err = "kid must be 1 to 64 characters";
			return -1;
		}
		for (i = 0; i < klen; i++) {
			if (!aegis_kid_char_ok(spec[start + i], i == 0)) {
				*err = "kid may hold only letters, digits, '.', '_' and '-'";
				return -1;
			}
		}
		memcpy(k->kid, spec + start, klen);
		k->kid[klen] = '\0';
		for (i = 0; i < ring->count; i++) {
			if (strcmp(ring->keys[i].kid, k->kid) == 0) {
				*err = "the same kid appears twice";
				return -1;
			}
		}

		start = ++pos;
		while (pos < len && spec[pos] != ',')
			pos++;
		if (!aegis_b64url_decode(k->key, sizeof(k->key), &key_len, spec + start, pos - start) ||
		    key_len != AEGIS_ED25519_PUBKEY_SIZE) {
			*err = "key must be 32 bytes of base64url (the JWK x member)";
			return -1;
		}
		ring->count++;
		if (pos < len)
			pos++;	/* ',' */
	}
	return 0;
}

/* ASCII case-insensitive equality, so an upper-case hwid parameter still matches. */
static bool aegis_str_eq_nocase(const char *a, const char *b)
{
	for (;; a++, b++) {
		char x = *a, y = *b;

		if (x >= 'A' && x <= 'Z')
			x = (char)(x - 'A' + 'a');
		if (y >= 'A' && y <= 'Z')
			y = (char)(y - 'A' + 'a');
		if (x != y)
			return false;
		if (!x)
			return true;
	}
}

enum aegis_verdict aegis_read_header(const u8 *json, size_t len, struct aegis_header *h,
				     struct aegis_json_scratch *scratch)
{
	struct aegis_json_field fields[] = {
		{ .name = "alg", .type = AEGIS_JSON_STRING, .dst = h->alg, .cap = sizeof(h->alg) },
		{ .name = "typ", .type = AEGIS_JSON_STRING, .dst = h->typ, .cap = sizeof(h->typ) },
		{ .name = "kid", .type = AEGIS_JSON_STRING, .dst = h->kid, .cap = sizeof(h->kid) },
		/* We understand no extensions, and never take a key from the token itself. */
		{ .name = "crit", .type = AEGIS_JSON_REFUSE },
		{ .name = "jwk", .type = AEGIS_JSON_REFUSE },
		{ .name = "jku", .type = AEGIS_JSON_REFUSE },
		{ .name = "x5u", .type = AEGIS_JSON_REFUSE },
		{ .name = "x5c", .type = AEGIS_JSON_REFUSE },
	};
	enum aegis_json_status st;

	st = aegis_json_read_object(json, len, fields, AEGIS_ARRAY_SIZE(fields), scratch);
	if (st != AEGIS_JSON_OK)
		return AEGIS_VERDICT_MALFORMED;
	if (!fields[0].seen || strcmp(h->alg, "EdDSA") != 0)
		return AEGIS_VERDICT_BAD_ALG;
	if (!fields[2].seen)
		return AEGIS_VERDICT_UNKNOWN_KID;
	return AEGIS_VERDICT_VALID;
}

enum aegis_verdict aegis_read_claims(const u8 *json, size_t len, struct aegis_claims *c,
				     struct aegis_json_scratch *scratch)
{
	struct aegis_json_field fields[] = {
		{ .name = "iss", .type = AEGIS_JSON_STRING, .dst = c->iss, .cap = sizeof(c->iss) },
		{ .name = "aud", .type = AEGIS_JSON_STRING, .required = true, .dst = c->aud, .cap = sizeof(c->aud) },
		{ .name = "sub", .type = AEGIS_JSON_STRING, .required = true, .dst = c->sub, .cap = sizeof(c->sub) },
		{ .name = "hwid", .type = AEGIS_JSON_STRING, .required = true, .dst = c->hwid, .cap = sizeof(c->hwid) },
		{ .name = "tier", .type = AEGIS_JSON_STRING, .required = true, .dst = c->tier, .cap = sizeof(c->tier) },
		{ .name = "features", .type = AEGIS_JSON_STRING_ARRAY, .required = true, .dst = c->features,
		  .cap = sizeof(c->features[0]), .max_items = AEGIS_MAX_FEATURES, .count = &c->nfeatures },
		{ .name = "fmask", .type = AEGIS_JSON_INT, .required = true, .dst = &c->fmask },
		{ .name = "iat", .type = AEGIS_JSON_INT, .required = true, .dst = &c->iat },
		{ .name = "nbf", .type = AEGIS_JSON_INT, .dst = &c->nbf },
		{ .name = "exp", .type = AEGIS_JSON_INT, .required = true, .dst = &c->exp },
	};

	switch (aegis_json_read_object(json, len, fields, AEGIS_ARRAY_SIZE(fields), scratch)) {
	case AEGIS_JSON_OK:
		break;
	case AEGIS_JSON_DUPLICATE:
		return AEGIS_VERDICT_DUPLICATE_CLAIM;
	case AEGIS_JSON_BAD_TYPE:
		return AEGIS_VERDICT_BAD_CLAIM_TYPE;
	case AEGIS_JSON_MISSING:
		return AEGIS_VERDICT_MISSING_CLAIM;
	default:
		return AEGIS_VERDICT_MALFORMED;
	}
	if (!fields[8].seen)
		c->nbf = c->iat;
	if (c->fmask < 0)
		return AEGIS_VERDICT_BAD_CLAIM_TYPE;
	return AEGIS_VERDICT_VALID;
}

enum aegis_verdict aegis_verdict_at(const struct aegis_claims *claims, s64 now)
{
	if (now < claims->nbf)
		return AEGIS_VERDICT_NOT_YET_VALID;
	if (now >= claims->exp)
		return AEGIS_VERDICT_EXPIRED;
	return AEGIS_VERDICT_VALID;
}

enum aegis_verdict aegis_verify_token(const u8 *token, size_t len,
				      const struct aegis_verify_params *params,
				      struct aegis_verify_scratch *scratch,
				      struct aegis_token_info *info)
{
	const char *text = (const char *)token;
	size_t dot1, dot2, i, hlen, plen, slen;
	u8 sig[AEGIS_ED25519_SIG_SIZE];
	const struct aegis_pubkey *key = NULL;
	enum aegis_verdict v;

	memset(info, 0, sizeof(*info));
	if (len > AEGIS_TOKEN_MAX)
		return AEGIS_VERDICT_TOO_LARGE;
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
		       text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;

	/* Exactly three segments; the header is read first so "alg":"none" says so. */
	for (dot1 = 0; dot1 < len && text[dot1] != '.'; dot1++)
		;
	for (dot2 = dot1 + 1; dot2 < len && text[dot2] != '.'; dot2++)
		;
	if (dot1 == 0 || dot2 >= len)
		return AEGIS_VERDICT_MALFORMED;
	for (i = dot2 + 1; i < len; i++)
		if (text[i] == '.')
			return AEGIS_VERDICT_MALFORMED;

	if (!aegis_b64url_decode(scratch->header, sizeof(scratch->header), &hlen, text, dot1))
		return AEGIS_VERDICT_MALFORMED;
	v = aegis_read_header(scratch->header, hlen, &info->header, &scratch->json);
	if (v != AEGIS_VERDICT_VALID)
		return v;

	if (dot2 == dot1 + 1 ||
	    !aegis_b64url_decode(scratch->payload, sizeof(scratch->payload), &plen,
				 text + dot1 + 1, dot2 - dot1 - 1) ||
	    !aegis_b64url_decode(sig, sizeof(sig), &slen, text + dot2 + 1, len - dot2 - 1) ||
	    slen != sizeof(sig))
		return AEGIS_VERDICT_MALFORMED;

	for (i = 0; i < params->keys->count; i++) {
		if (strcmp(params->keys->keys[i].kid, info->header.kid) == 0) {
			key = &params->keys->keys[i];
			break;
		}
	}
	if (!key)
		return AEGIS_VERDICT_UNKNOWN_KID;

	/* The signing input is the ASCII text "header_b64.payload_b64" exactly as sent. */
	if (!aegis_ed25519_verify(sig, token, dot2, key->key))
		return AEGIS_VERDICT_BAD_SIGNATURE;

	v = aegis_read_claims(scratch->payload, plen, &info->claims, &scratch->json);
	if (v != AEGIS_VERDICT_VALID) {
		memset(&info->claims, 0, sizeof(info->claims));
		return v;
	}
	info->signature_ok = true;

	if (strcmp(info->claims.aud, AEGIS_AUDIENCE) != 0)
		return AEGIS_VERDICT_WRONG_AUDIENCE;
	if (params->hwid && params->hwid[0] && !aegis_str_eq_nocase(params->hwid, info->claims.hwid))
		return AEGIS_VERDICT_HWID_MISMATCH;
	return aegis_verdict_at(&info->claims, params->now);
}
