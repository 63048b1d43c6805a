/* SPDX-License-Identifier: GPL-2.0 OR MIT */
#ifndef AEGIS_CORE_SELFTEST_H
#define AEGIS_CORE_SELFTEST_H

#include "compat.h"

/*
 * Known-answer checks run by the module before it trusts its own verifier: SHA-512("abc")
 * and RFC 8032 TEST 1 (must verify), plus the same signature with one bit flipped and
 * with S + L (must not). Return: NULL when all pass, else the name of the failed check.
 */
const char *aegis_core_selftest(void);

#endif /* AEGIS_CORE_SELFTEST_H */
