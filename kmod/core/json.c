// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The flat JSON reader behind the JWS header and the kernel token claims. The input is
 * attacker-controlled up to the signature check and hostile input must never crash
 * it: every byte access goes through aegis_json_peek() or a check of pos < len, loops
 * only move forward, and output buffers are written only through aegis_json_emit().
 */
#include "json.h"

struct aegis_json_cursor {
	const u8 *p;
	size_t len, pos;
};

/* Where decoded string bytes go: a bounded buffer, or nowhere (validate only). */
struct aegis_json_sink {
	char *buf;
	size_t cap, used;	/* used counts bytes even when buf is NULL or full */
	bool ascii_only, bad_char;
};

static int aegis_json_peek(const struct aegis_json_cursor *c)
{
	return c->pos < c->len ? c->p[c->pos] : -1;
}

static void aegis_json_skip_ws(struct aegis_json_cursor *c)
{
	while (c->pos < c->len) {
		u8 ch = c->p[c->pos];

		if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
			break;
		c->pos++;
	}
}

static bool aegis_json_expect(struct aegis_json_cursor *c, u8 ch)
{
	if (aegis_json_peek(c) != ch)
		return false;
	c->pos++;
	return true;
}

static void aegis_json_emit(struct aegis_json_sink *s, u8 b)
{
	if (s->ascii_only && (b < 0x20 || b > 0x7e))
		s->bad_char = true;
	/* Keep one byte for the NUL. */
	if (s->buf && s->used + 1 < s->cap)
		s->buf[s->used] = (char)b;
	s->used++;
}

static void aegis_json_emit_utf8(struct aegis_json_sink *s, u32 cp)
{
	if (cp < 0x80) {
		aegis_json_emit(s, (u8)cp);
	} else if (cp < 0x800) {
		aegis_json_emit(s, (u8)(0xc0 | (cp >> 6)));
		aegis_json_emit(s, (u8)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		aegis_json_emit(s, (u8)(0xe0 | (cp >> 12)));
		aegis_json_emit(s, (u8)(0x80 | ((cp >> 6) & 0x3f)));
		aegis_json_emit(s, (u8)(0x80 | (cp & 0x3f)));
	} else {
		aegis_json_emit(s, (u8)(0xf0 | (cp >> 18)));
		aegis_json_emit(s, (u8)(0x80 | ((cp >> 12) & 0x3f)));
		aegis_json_emit(s, (u8)(0x80 | ((cp >> 6) & 0x3f)));
		aegis_json_emit(s, (u8)(0x80 | (cp & 0x3f)));
	}
}

static bool aegis_json_hex4(struct aegis_json_cursor *c, u32 *out)
{
	u32 v = 0;
	int i;

	if (c->len - c->pos < 4)
		return false;
	for (i = 0; i < 4; i++) {
		u8 ch = c->p[c->pos + i];

		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			v |= ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			v |= ch - 'A' + 10;
		else
			return false;
	}
	c->pos += 4;
	*out = v;
	return true;
}

/* Copies one raw (unescaped) UTF-8 sequence starting at a byte >= 0x80, strictly. */
static bool aegis_json_utf8_seq(struct aegis_json_cursor *c, struct aegis_json_sink *s)
{
	u8 lead = c->p[c->pos];
	size_t n, i;
	u32 cp, min;

	if (lead >= 0xc2 && lead <= 0xdf) {
		n = 1; cp = lead & 0x1f; min = 0x80;
	} else if (lead >= 0xe0 && lead <= 0xef) {
		n = 2; cp = lead & 0x0f; min = 0x800;
	} else if (lead >= 0xf0 && lead <= 0xf4) {
		n = 3; cp = lead & 0x07; min = 0x10000;
	} else {
		return false;
	}
	if (c->len - c->pos - 1 < n)
		return false;
	for (i = 1; i <= n; i++) {
		u8 b = c->p[c->pos + i];

		if ((b & 0xc0) != 0x80)
			return false;
		cp = (cp << 6) | (b & 0x3f);
	}
	/* No overlong forms, no UTF-16 surrogates, nothing past U+10FFFF. */
	if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return false;
	for (i = 0; i <= n; i++)
		aegis_json_emit(s, c->p[c->pos + i]);
	c->pos += n + 1;
	return true;
}

/*
 * Reads a string at the cursor (which must be on the opening quote) into @s.
 * Returns false on any syntax error; the caller checks s->used against s->cap.
 */
static bool aegis_json_string(struct aegis_json_cursor *c, struct aegis_json_sink *s)
{
	if (!aegis_json_expect(c, '"'))
		return false;
	while (c->pos < c->len) {
		u8 ch = c->p[c->pos];
		u32 cp, lo;

		if (ch == '"') {
			c->pos++;
			if (s->buf && s->cap)
				s->buf[s->used < s->cap ? s->used : s->cap - 1] = '\0';
			return true;
		}
		if (ch < 0x20)
			return false;
		if (ch >= 0x80) {
			if (!aegis_json_utf8_seq(c, s))
				return false;
			continue;
		}
		c->pos++;
		if (ch != '\\') {
			aegis_json_emit(s, ch);
			continue;
		}
		if (c->pos >= c->len)
			return false;
		ch = c->p[c->pos++];
		switch (ch) {
		case '"': case '\\': case '/':
			aegis_json_emit(s, ch);
			break;
		case 'b': aegis_json_emit(s, '\b'); break;
		case 'f': aegis_json_emit(s, '\f'); break;
		case 'n': aegis_json_emit(s, '\n'); break;
		case 'r': aegis_json_emit(s, '\r'); break;
		case 't': aegis_json_emit(s, '\t'); break;
		case 'u':
			if (!aegis_json_hex4(c, &cp))
				return false;
			/* A NUL would silently cut C strings short: refuse it. */
			if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
				return false;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (c->len - c->pos < 2 || c->p[c->pos] != '\\' || c->p[c->pos + 1] != 'u')
					return false;
				c->pos += 2;
				if (!aegis_json_hex4(c, &lo) || lo < 0xdc00 || lo > 0xdfff)
					return false;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			aegis_json_emit_utf8(s, cp);
			break;
		default:
			return false;
		}
	}
	return false;	/* unterminated */
}

enum aegis_json_number_kind { AEGIS_JSON_NUM_BAD, AEGIS_JSON_NUM_INT, AEGIS_JSON_NUM_OTHER };

/* Reads a JSON number; *out is set when it is an integer that fits s64. */
static enum aegis_json_number_kind aegis_json_number(struct aegis_json_cursor *c, s64 *out)
{
	bool neg = false, is_int = true;
	u64 mag = 0, limit;
	int ch;

	if (aegis_json_peek(c) == '-') {
		neg = true;
		c->pos++;
	}
	limit = neg ? (u64)1 << 63 : ((u64)1 << 63) - 1;
	ch = aegis_json_peek(c);
	if (ch == '0') {
		c->pos++;
	} else if (ch >= '1' && ch <= '9') {
		while ((ch = aegis_json_peek(c)) >= '0' && ch <= '9') {
			u64 digit = (u64)(ch - '0');

			if (mag > (limit - digit) / 10)
				is_int = false;	/* still a JSON number, just not an s64 */
			else
				mag = mag * 10 + digit;
			c->pos++;
		}
	} else {
		return AEGIS_JSON_NUM_BAD;
	}
	if (aegis_json_peek(c) == '.') {
		is_int = false;
		c->pos++;
		ch = aegis_json_peek(c);
		if (ch < '0' || ch > '9')
			return AEGIS_JSON_NUM_BAD;
		while ((ch = aegis_json_peek(c)) >= '0' && ch <= '9')
			c->pos++;
	}
	ch = aegis_json_peek(c);
	if (ch == 'e' || ch == 'E') {
		is_int = false;
		c->pos++;
		ch = aegis_json_peek(c);
		if (ch == '+' || ch == '-')
			c->pos++;
		ch = aegis_json_peek(c);
		if (ch < '0' || ch > '9')
			return AEGIS_JSON_NUM_BAD;
		while ((ch = aegis_json_peek(c)) >= '0' && ch <= '9')
			c->pos++;
	}
	if (!is_int)
		return AEGIS_JSON_NUM_OTHER;
	/* -(2^63) is representable; negate in unsigned arithmetic to avoid overflow. */
	*out = neg ? (s64)(0 - mag) : (s64)mag;
	return AEGIS_JSON_NUM_INT;
}

static bool aegis_json_literal(struct aegis_json_cursor *c, const char *word)
{
	size_t n = strlen(word);

	if (c->len - c->pos < n || memcmp(c->p + c->pos, word, n) != 0)
		return false;
	c->pos += n;
	return true;
}

/*
 * Reads any scalar (string, number, true, false, null) without storing it.
 * Arrays and objects are not scalars: the caller handles '[' and refuses '{'.
 */
static bool aegis_json_skip_scalar(struct aegis_json_cursor *c)
{
	struct aegis_json_sink none = { 0 };
	s64 ignored;

	switch (aegis_json_peek(c)) {
	case '"':
		return aegis_json_string(c, &none);
	case 't':
		return aegis_json_literal(c, "true");
	case 'f':
		return aegis_json_literal(c, "false");
	case 'n':
		return aegis_json_literal(c, "null");
	default:
		return aegis_json_number(c, &ignored) != AEGIS_JSON_NUM_BAD;
	}
}

/* Reads a string into a known field's buffer; too long or non-ASCII is malformed. */
static enum aegis_json_status aegis_json_field_string(struct aegis_json_cursor *c, char *dst,
						      size_t cap)
{
	struct aegis_json_sink s = { .buf = dst, .cap = cap, .ascii_only = true };

	if (!aegis_json_string(c, &s) || s.bad_char || s.used + 1 > cap)
		return AEGIS_JSON_MALFORMED;
	return AEGIS_JSON_OK;
}

/*
 * Reads an array at the cursor (on '['). With @f it must hold only strings, stored in
 * f->dst; without, any scalars are allowed and dropped. Nesting is refused.
 */
static enum aegis_json_status aegis_json_array(struct aegis_json_cursor *c,
					       struct aegis_json_field *f)
{
	size_t n = 0;
	enum aegis_json_status st;

	c->pos++;	/* '[' */
	aegis_json_skip_ws(c);
	if (aegis_json_expect(c, ']'))
		goto done;
	for (;;) {
		int ch;

		aegis_json_skip_ws(c);
		ch = aegis_json_peek(c);
		if (ch == '[' || ch == '{')
			return AEGIS_JSON_MALFORMED;
		if (f) {
			if (ch != '"')
				return ch < 0 ? AEGIS_JSON_MALFORMED : AEGIS_JSON_BAD_TYPE;
			if (n >= f->max_items)
				return AEGIS_JSON_MALFORMED;
			st = aegis_json_field_string(c, (char *)f->dst + n * f->cap, f->cap);
			if (st != AEGIS_JSON_OK)
				return st;
		} else if (!aegis_json_skip_scalar(c)) {
			return AEGIS_JSON_MALFORMED;
		}
		n++;
		aegis_json_skip_ws(c);
		if (aegis_json_expect(c, ']'))
			break;
		if (!aegis_json_expect(c, ','))
			return AEGIS_JSON_MALFORMED;
	}
done:
	if (f)
		*f->count = (u32)n;
	return AEGIS_JSON_OK;
}

/* Reads the value of one member into @f (NULL for a member nobody asked for). */
static enum aegis_json_status aegis_json_value(struct aegis_json_cursor *c,
					       struct aegis_json_field *f)
{
	int ch = aegis_json_peek(c);
	s64 v;

	if (ch == '{')	/* not flat */
		return f ? AEGIS_JSON_BAD_TYPE : AEGIS_JSON_MALFORMED;
	if (ch == '[') {
		if (f && f->type != AEGIS_JSON_STRING_ARRAY)
			return AEGIS_JSON_BAD_TYPE;
		return aegis_json_array(c, f);
	}
	if (!f)
		return aegis_json_skip_scalar(c) ? AEGIS_JSON_OK : AEGIS_JSON_MALFORMED;

	switch (f->type) {
	case AEGIS_JSON_STRING:
		if (ch != '"')
			break;
		return aegis_json_field_string(c, f->dst, f->cap);
	case AEGIS_JSON_INT:
		if (ch != '-' && (ch < '0' || ch > '9'))
			break;
		switch (aegis_json_number(c, &v)) {
		case AEGIS_JSON_NUM_INT:
			*(s64 *)f->dst = v;
			return AEGIS_JSON_OK;
		case AEGIS_JSON_NUM_OTHER:
			return AEGIS_JSON_BAD_TYPE;
		default:
			return AEGIS_JSON_MALFORMED;
		}
	default:
		break;
	}
	/* Wrong type: still make sure it is a JSON value at all, so junk reads as malformed. */
	return aegis_json_skip_scalar(c) ? AEGIS_JSON_BAD_TYPE : AEGIS_JSON_MALFORMED;
}

enum aegis_json_status aegis_json_read_object(const u8 *json, size_t len,
					      struct aegis_json_field *fields, size_t nfields,
					      struct aegis_json_scratch *scratch)
{
	struct aegis_json_cursor c = { .p = json, .len = len, .pos = 0 };
	enum aegis_json_status st;
	size_t members = 0, i;

	for (i = 0; i < nfields; i++)
		fields[i].seen = false;

	aegis_json_skip_ws(&c);
	if (!aegis_json_expect(&c, '{'))
		return AEGIS_JSON_MALFORMED;
	aegis_json_skip_ws(&c);
	if (!aegis_json_expect(&c, '}')) {
		for (;;) {
			struct aegis_json_sink key;
			struct aegis_json_field *f = NULL;
			char *name;

			if (members >= AEGIS_JSON_MAX_MEMBERS)
				return AEGIS_JSON_MALFORMED;
			name = scratch->names[members];
			key = (struct aegis_json_sink){ .buf = name, .cap = AEGIS_JSON_KEY_MAX + 1 };
			aegis_json_skip_ws(&c);
			if (!aegis_json_string(&c, &key) || key.used > AEGIS_JSON_KEY_MAX)
				return AEGIS_JSON_MALFORMED;
			/* Names are compared by length too: "\u0000" is refused, but be exact. */
			for (i = 0; i < members; i++)
				if (strlen(scratch->names[i]) == key.used &&
				    memcmp(scratch->names[i], name, key.used) == 0)
					return AEGIS_JSON_DUPLICATE;
			members++;

			for (i = 0; i < nfields; i++) {
				if (strlen(fields[i].name) == key.used &&
				    memcmp(fields[i].name, name, key.used) == 0) {
					f = &fields[i];
					break;
				}
			}
			if (f && f->type == AEGIS_JSON_REFUSE)
				return AEGIS_JSON_FORBIDDEN;

			aegis_json_skip_ws(&c);
			if (!aegis_json_expect(&c, ':'))
				return AEGIS_JSON_MALFORMED;
			aegis_json_skip_ws(&c);
			st = aegis_json_value(&c, f);
			if (st != AEGIS_JSON_OK)
				return st;
			if (f)
				f->seen = true;

			aegis_json_skip_ws(&c);
			if (aegis_json_expect(&c, '}'))
				break;
			if (!aegis_json_expect(&c, ','))
				return AEGIS_JSON_MALFORMED;
		}
	}
	aegis_json_skip_ws(&c);
	if (c.pos != c.len)
		return AEGIS_JSON_MALFORMED;	/* trailing bytes after the object */

	for (i = 0; i < nfields; i++)
		if (fields[i].required && !fields[i].seen)
			return AEGIS_JSON_MISSING;
	return AEGIS_JSON_OK;
}
