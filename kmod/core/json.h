/* SPDX-License-Identifier: GPL-2.0 OR MIT */
#ifndef AEGIS_CORE_JSON_H
#define AEGIS_CORE_JSON_H

#include "compat.h"

/*
 * A bounded reader for one flat JSON object: members whose values are strings, numbers,
 * true/false/null or one level of array of scalars. Nested objects and arrays inside
 * arrays are refused, so the reader is a single loop with no recursion and a fixed,
 * small amount of state whatever the input.
 */

#define AEGIS_JSON_MAX_MEMBERS 32	/* more members than this: malformed */
#define AEGIS_JSON_KEY_MAX 64		/* longest member name, decoded bytes */

enum aegis_json_status {
	AEGIS_JSON_OK = 0,
	AEGIS_JSON_MALFORMED,	/* not JSON, not flat, too long, too many members */
	AEGIS_JSON_DUPLICATE,	/* a member name appears twice */
	AEGIS_JSON_BAD_TYPE,	/* a known member has a value of the wrong type */
	AEGIS_JSON_MISSING,	/* a required member is absent */
	AEGIS_JSON_FORBIDDEN,	/* a member the caller refuses to see at all (e.g. "crit") */
};

enum aegis_json_field_type {
	AEGIS_JSON_STRING,	/* printable ASCII, NUL-terminated into dst[cap] */
	AEGIS_JSON_INT,		/* JSON integer (no fraction or exponent) that fits s64 */
	AEGIS_JSON_STRING_ARRAY, /* up to max_items strings into dst[max_items][cap] */
	AEGIS_JSON_REFUSE,	/* presence alone fails with AEGIS_JSON_FORBIDDEN */
};

/* What the caller wants from one member. */
struct aegis_json_field {
	const char *name;
	enum aegis_json_field_type type;
	bool required;
	void *dst;		/* char[cap], s64, or char[max_items][cap] */
	size_t cap;		/* string buffer size, terminating NUL included */
	size_t max_items;	/* STRING_ARRAY only */
	u32 *count;		/* STRING_ARRAY only: items stored */
	bool seen;		/* set by the reader */
};

/* Working memory for duplicate detection: the decoded names seen so far. */
struct aegis_json_scratch {
	char names[AEGIS_JSON_MAX_MEMBERS][AEGIS_JSON_KEY_MAX + 1];
};

/**
 * aegis_json_read_object() - read a flat JSON object into the caller's @fields
 *
 * Members not in @fields are checked for syntax and otherwise ignored. Strings are
 * decoded (all JSON escapes, surrogate pairs, strict UTF-8; "\u0000" refused); values
 * stored for a known field must be printable ASCII so they can be shown in sysfs
 * as-is. Every read is bounded by @len.
 *
 * Return: AEGIS_JSON_OK, or the first problem found.
 */
enum aegis_json_status aegis_json_read_object(const u8 *json, size_t len,
					      struct aegis_json_field *fields, size_t nfields,
					      struct aegis_json_scratch *scratch);

#endif /* AEGIS_CORE_JSON_H */
