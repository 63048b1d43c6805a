/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The only place where the verifier core knows whether it is built into the kernel
 * module or into a userspace test/fuzz binary. Everything else in core/ uses these
 * names and nothing from libc or the kernel beyond memcpy/memset/memcmp.
 */
#ifndef AEGIS_CORE_COMPAT_H
#define AEGIS_CORE_COMPAT_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/string.h>
#include <linux/kernel.h>
#else
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int64_t s64;
#endif

/*
 * Field arithmetic uses 64x64->128-bit products. Every 64-bit target the kernel
 * supports with CONFIG_ARCH_SUPPORTS_INT128 (x86_64, arm64, riscv64, ...) has this.
 */
#ifndef __SIZEOF_INT128__
#error "the Aegis verifier core needs a compiler with unsigned __int128 (a 64-bit target)"
#endif
typedef unsigned __int128 aegis_u128;

#define AEGIS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif /* AEGIS_CORE_COMPAT_H */
