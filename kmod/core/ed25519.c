// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Ed25519 signature verification (RFC 8032), verification only.
 *
 * Field elements mod p = 2^255 - 19 are five 51-bit limbs in u64 with 128-bit products.
 * Invariant kept by every field operation below: on output, limbs 1..4 are < 2^51 and
 * limb 0 is < 2^51 + 2^18, so inputs to fe_mul never exceed 2^52 and no product sum
 * overflows 128 bits. Points are in extended twisted Edwards coordinates with the
 * complete addition law for a = -1, so doubling, identity and equal inputs need no
 * special cases. Nothing here is secret, so branches on data are fine.
 */
#include "ed25519.h"
#include "sha512.h"

#define AEGIS_FE_MASK ((1ULL << 51) - 1)

struct aegis_fe {
	u64 v[5];
};

struct aegis_ge {
	struct aegis_fe x, y, z, t;
};

/* Little-endian 32-byte encodings of the curve constants. */
static const u8 aegis_ed_d[32] = {	/* d = -121665/121666 */
	0xa3, 0x78, 0x59, 0x13, 0xca, 0x4d, 0xeb, 0x75, 0xab, 0xd8, 0x41, 0x41, 0x4d, 0x0a, 0x70, 0x00,
	0x98, 0xe8, 0x79, 0x77, 0x79, 0x40, 0xc7, 0x8c, 0x73, 0xfe, 0x6f, 0x2b, 0xee, 0x6c, 0x03, 0x52,
};
static const u8 aegis_ed_sqrtm1[32] = {	/* 2^((p-1)/4), a square root of -1 */
	0xb0, 0xa0, 0x0e, 0x4a, 0x27, 0x1b, 0xee, 0xc4, 0x78, 0xe4, 0x2f, 0xad, 0x06, 0x18, 0x43, 0x2f,
	0xa7, 0xd7, 0xfb, 0x3d, 0x99, 0x00, 0x4d, 0x2b, 0x0b, 0xdf, 0xc1, 0x4f, 0x80, 0x24, 0x83, 0x2b,
};
static const u8 aegis_ed_bx[32] = {	/* base point B, x (even) */
	0x1a, 0xd5, 0x25, 0x8f, 0x60, 0x2d, 0x56, 0xc9, 0xb2, 0xa7, 0x25, 0x95, 0x60, 0xc7, 0x2c, 0x69,
	0x5c, 0xdc, 0xd6, 0xfd, 0x31, 0xe2, 0xa4, 0xc0, 0xfe, 0x53, 0x6e, 0xcd, 0xd3, 0x36, 0x69, 0x21,
};
static const u8 aegis_ed_by[32] = {	/* base point B, y = 4/5 */
	0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
	0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
};
static const u8 aegis_ed_l[32] = {	/* group order L = 2^252 + 27742317777372353535851937790883648493 */
	0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
};
static const u8 aegis_ed_p_minus_2[32] = {	/* exponent for inversion */
	0xeb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
};
static const u8 aegis_ed_p58[32] = {	/* (p - 5) / 8 = 2^252 - 3, for the square root */
	0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f,
};

static inline u64 aegis_load_le64(const u8 *p)
{
	return (u64)p[0] | ((u64)p[1] << 8) | ((u64)p[2] << 16) | ((u64)p[3] << 24) |
	       ((u64)p[4] << 32) | ((u64)p[5] << 40) | ((u64)p[6] << 48) | ((u64)p[7] << 56);
}

/* ---- field arithmetic mod 2^255 - 19 ---- */

static void aegis_fe_set(struct aegis_fe *h, u64 small)
{
	h->v[0] = small;
	h->v[1] = h->v[2] = h->v[3] = h->v[4] = 0;
}

/* Loads 255 bits little-endian; bit 255 (the x sign in point encodings) is ignored. */
static void aegis_fe_frombytes(struct aegis_fe *h, const u8 s[32])
{
	h->v[0] = aegis_load_le64(s) & AEGIS_FE_MASK;
	h->v[1] = (aegis_load_le64(s + 6) >> 3) & AEGIS_FE_MASK;
	h->v[2] = (aegis_load_le64(s + 12) >> 6) & AEGIS_FE_MASK;
	h->v[3] = (aegis_load_le64(s + 19) >> 1) & AEGIS_FE_MASK;
	h->v[4] = (aegis_load_le64(s + 24) >> 12) & AEGIS_FE_MASK;
}

/* True when the 255-bit value in @s (bit 255 ignored) is below p. */
static bool aegis_fe_bytes_canonical(const u8 s[32])
{
	int i;

	if ((s[31] & 0x7f) != 0x7f)
		return true;
	for (i = 30; i >= 1; i--)
		if (s[i] != 0xff)
			return true;
	return s[0] < 0xed;
}

static void aegis_fe_carry(struct aegis_fe *h)
{
	u64 c;

	c = h->v[0] >> 51; h->v[0] &= AEGIS_FE_MASK; h->v[1] += c;
	c = h->v[1] >> 51; h->v[1] &= AEGIS_FE_MASK; h->v[2] += c;
	c = h->v[2] >> 51; h->v[2] &= AEGIS_FE_MASK; h->v[3] += c;
	c = h->v[3] >> 51; h->v[3] &= AEGIS_FE_MASK; h->v[4] += c;
	c = h->v[4] >> 51; h->v[4] &= AEGIS_FE_MASK; h->v[0] += 19 * c;
}

/* Writes the unique representative in [0, p) as 32 bytes little-endian. */
static void aegis_fe_tobytes(u8 s[32], const struct aegis_fe *f)
{
	struct aegis_fe h = *f;
	u64 q, c, w[4];
	int i, j;

	aegis_fe_carry(&h);
	aegis_fe_carry(&h);
	/* Now h < 2^255 + 2^18 < 2p: q = 1 exactly when h >= p, i.e. h + 19 >= 2^255. */
	q = (h.v[0] + 19) >> 51;
	q = (h.v[1] + q) >> 51;
	q = (h.v[2] + q) >> 51;
	q = (h.v[3] + q) >> 51;
	q = (h.v[4] + q) >> 51;
	h.v[0] += 19 * q;
	/* Propagate and drop bit 255: that subtracts q * 2^255, so h - q * p in total. */
	c = h.v[0] >> 51; h.v[0] &= AEGIS_FE_MASK; h.v[1] += c;
	c = h.v[1] >> 51; h.v[1] &= AEGIS_FE_MASK; h.v[2] += c;
	c = h.v[2] >> 51; h.v[2] &= AEGIS_FE_MASK; h.v[3] += c;
	c = h.v[3] >> 51; h.v[3] &= AEGIS_FE_MASK; h.v[4] += c;
	h.v[4] &= AEGIS_FE_MASK;

	/* Pack 5 x 51 bits into four little-endian 64-bit words (255 bits). */
	w[0] = h.v[0] | (h.v[1] << 51);
	w[1] = (h.v[1] >> 13) | (h.v[2] << 38);
	w[2] = (h.v[2] >> 26) | (h.v[3] << 25);
	w[3] = (h.v[3] >> 39) | (h.v[4] << 12);
	for (i = 0; i < 4; i++)
		for (j = 0; j < 8; j++)
			s[8 * i + j] = (u8)(w[i] >> (8 * j));
}

static void aegis_fe_add(struct aegis_fe *h, const struct aegis_fe *f, const struct aegis_fe *g)
{
	int i;

	for (i = 0; i < 5; i++)
		h->v[i] = f->v[i] + g->v[i];
	aegis_fe_carry(h);
}

static void aegis_fe_sub(struct aegis_fe *h, const struct aegis_fe *f, const struct aegis_fe *g)
{
	/* Add 4p first so no limb goes negative (g's limbs are < 2^52 < 4p's). */
	h->v[0] = f->v[0] + 0x1fffffffffffb4ULL - g->v[0];
	h->v[1] = f->v[1] + 0x1ffffffffffffcULL - g->v[1];
	h->v[2] = f->v[2] + 0x1ffffffffffffcULL - g->v[2];
	h->v[3] = f->v[3] + 0x1ffffffffffffcULL - g->v[3];
	h->v[4] = f->v[4] + 0x1ffffffffffffcULL - g->v[4];
	aegis_fe_carry(h);
}

static void aegis_fe_neg(struct aegis_fe *h, const struct aegis_fe *f)
{
	struct aegis_fe zero;

	aegis_fe_set(&zero, 0);
	aegis_fe_sub(h, &zero, f);
}

static void aegis_fe_mul(struct aegis_fe *h, const struct aegis_fe *f, const struct aegis_fe *g)
{
	const u64 f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
	const u64 g0 = g->v[0], g1 = g->v[1], g2 = g->v[2], g3 = g->v[3], g4 = g->v[4];
	/* 2^255 = 19 mod p: limb products that land at 2^255 and above wrap times 19. */
	const u64 g1_19 = 19 * g1, g2_19 = 19 * g2, g3_19 = 19 * g3, g4_19 = 19 * g4;
	aegis_u128 r0, r1, r2, r3, r4;
	u64 c;

	r0 = (aegis_u128)f0 * g0 + (aegis_u128)f1 * g4_19 + (aegis_u128)f2 * g3_19 +
	     (aegis_u128)f3 * g2_19 + (aegis_u128)f4 * g1_19;
	r1 = (aegis_u128)f0 * g1 + (aegis_u128)f1 * g0 + (aegis_u128)f2 * g4_19 +
	     (aegis_u128)f3 * g3_19 + (aegis_u128)f4 * g2_19;
	r2 = (aegis_u128)f0 * g2 + (aegis_u128)f1 * g1 + (aegis_u128)f2 * g0 +
	     (aegis_u128)f3 * g4_19 + (aegis_u128)f4 * g3_19;
	r3 = (aegis_u128)f0 * g3 + (aegis_u128)f1 * g2 + (aegis_u128)f2 * g1 +
	     (aegis_u128)f3 * g0 + (aegis_u128)f4 * g4_19;
	r4 = (aegis_u128)f0 * g4 + (aegis_u128)f1 * g3 + (aegis_u128)f2 * g2 +
	     (aegis_u128)f3 * g1 + (aegis_u128)f4 * g0;

	r1 += (u64)(r0 >> 51); h->v[0] = (u64)r0 & AEGIS_FE_MASK;
	r2 += (u64)(r1 >> 51); h->v[1] = (u64)r1 & AEGIS_FE_MASK;
	r3 += (u64)(r2 >> 51); h->v[2] = (u64)r2 & AEGIS_FE_MASK;
	r4 += (u64)(r3 >> 51); h->v[3] = (u64)r3 & AEGIS_FE_MASK;
	c = (u64)(r4 >> 51);   h->v[4] = (u64)r4 & AEGIS_FE_MASK;
	h->v[0] += 19 * c;
	c = h->v[0] >> 51; h->v[0] &= AEGIS_FE_MASK; h->v[1] += c;
}

static void aegis_fe_sq(struct aegis_fe *h, const struct aegis_fe *f)
{
	aegis_fe_mul(h, f, f);
}

/* h = f^e for a 255-bit exponent @e (little-endian), by left-to-right square-and-multiply. */
static void aegis_fe_pow(struct aegis_fe *h, const struct aegis_fe *f, const u8 e[32])
{
	struct aegis_fe r;
	int i;

	aegis_fe_set(&r, 1);
	for (i = 254; i >= 0; i--) {
		aegis_fe_sq(&r, &r);
		if ((e[i >> 3] >> (i & 7)) & 1)
			aegis_fe_mul(&r, &r, f);
	}
	*h = r;
}

static bool aegis_fe_equal(const struct aegis_fe *f, const struct aegis_fe *g)
{
	u8 a[32], b[32];

	aegis_fe_tobytes(a, f);
	aegis_fe_tobytes(b, g);
	return memcmp(a, b, 32) == 0;
}

static bool aegis_fe_iszero(const struct aegis_fe *f)
{
	struct aegis_fe zero;

	aegis_fe_set(&zero, 0);
	return aegis_fe_equal(f, &zero);
}

static bool aegis_fe_isodd(const struct aegis_fe *f)
{
	u8 s[32];

	aegis_fe_tobytes(s, f);
	return s[0] & 1;
}

/* ---- group operations ---- */

static void aegis_ge_identity(struct aegis_ge *p)
{
	aegis_fe_set(&p->x, 0);
	aegis_fe_set(&p->y, 1);
	aegis_fe_set(&p->z, 1);
	aegis_fe_set(&p->t, 0);
}

/* r = p + q (complete for a = -1 and non-square d: any inputs, including p == q). */
static void aegis_ge_add(struct aegis_ge *r, const struct aegis_ge *p, const struct aegis_ge *q,
			 const struct aegis_fe *d2)
{
	struct aegis_fe a, b, c, d, e, f, g, h, t;

	aegis_fe_sub(&a, &p->y, &p->x);
	aegis_fe_sub(&t, &q->y, &q->x);
	aegis_fe_mul(&a, &a, &t);
	aegis_fe_add(&b, &p->y, &p->x);
	aegis_fe_add(&t, &q->y, &q->x);
	aegis_fe_mul(&b, &b, &t);
	aegis_fe_mul(&c, &p->t, &q->t);
	aegis_fe_mul(&c, &c, d2);
	aegis_fe_mul(&d, &p->z, &q->z);
	aegis_fe_add(&d, &d, &d);
	aegis_fe_sub(&e, &b, &a);
	aegis_fe_sub(&f, &d, &c);
	aegis_fe_add(&g, &d, &c);
	aegis_fe_add(&h, &b, &a);
	aegis_fe_mul(&r->x, &e, &f);
	aegis_fe_mul(&r->y, &g, &h);
	aegis_fe_mul(&r->t, &e, &h);
	aegis_fe_mul(&r->z, &f, &g);
}

/* r = 2p (dbl-2008-hwcd with a = -1; signs chosen so no negation is needed). */
static void aegis_ge_double(struct aegis_ge *r, const struct aegis_ge *p)
{
	struct aegis_fe a, b, c, e, f, g, h, t;

	aegis_fe_sq(&a, &p->x);
	aegis_fe_sq(&b, &p->y);
	aegis_fe_sq(&c, &p->z);
	aegis_fe_add(&c, &c, &c);
	aegis_fe_add(&h, &a, &b);
	aegis_fe_add(&t, &p->x, &p->y);
	aegis_fe_sq(&t, &t);
	aegis_fe_sub(&e, &h, &t);
	aegis_fe_sub(&g, &a, &b);
	aegis_fe_add(&f, &c, &g);
	aegis_fe_mul(&r->x, &e, &f);
	aegis_fe_mul(&r->y, &g, &h);
	aegis_fe_mul(&r->t, &e, &h);
	aegis_fe_mul(&r->z, &f, &g);
}

static void aegis_ge_tobytes(u8 s[32], const struct aegis_ge *p)
{
	struct aegis_fe zinv, x, y;

	aegis_fe_pow(&zinv, &p->z, aegis_ed_p_minus_2);
	aegis_fe_mul(&x, &p->x, &zinv);
	aegis_fe_mul(&y, &p->y, &zinv);
	aegis_fe_tobytes(s, &y);
	s[31] |= (u8)(aegis_fe_isodd(&x) << 7);
}

/*
 * Decodes a point (RFC 8032 section 5.1.3). Fails on y >= p, on a y with no x on the
 * curve, and on the encoding of x = 0 with the sign bit set.
 */
static bool aegis_ge_frombytes(struct aegis_ge *p, const u8 s[32])
{
	struct aegis_fe d, u, v, v3, x, vx2, t;
	bool sign = s[31] >> 7;

	if (!aegis_fe_bytes_canonical(s))
		return false;
	aegis_fe_frombytes(&p->y, s);
	aegis_fe_frombytes(&d, aegis_ed_d);
	aegis_fe_set(&p->z, 1);

	/* x^2 = u / v with u = y^2 - 1, v = d y^2 + 1. */
	aegis_fe_sq(&u, &p->y);
	aegis_fe_mul(&v, &u, &d);
	aegis_fe_sub(&u, &u, &p->z);
	aegis_fe_add(&v, &v, &p->z);

	/* Candidate root x = u v^3 (u v^7)^((p-5)/8). */
	aegis_fe_sq(&v3, &v);
	aegis_fe_mul(&v3, &v3, &v);
	aegis_fe_sq(&x, &v3);
	aegis_fe_mul(&x, &x, &v);
	aegis_fe_mul(&x, &x, &u);
	aegis_fe_pow(&x, &x, aegis_ed_p58);
	aegis_fe_mul(&x, &x, &v3);
	aegis_fe_mul(&x, &x, &u);

	aegis_fe_sq(&vx2, &x);
	aegis_fe_mul(&vx2, &vx2, &v);
	if (!aegis_fe_equal(&vx2, &u)) {
		aegis_fe_neg(&t, &u);
		if (!aegis_fe_equal(&vx2, &t))
			return false;
		aegis_fe_frombytes(&t, aegis_ed_sqrtm1);
		aegis_fe_mul(&x, &x, &t);
	}
	if (aegis_fe_iszero(&x) && sign)
		return false;
	if (aegis_fe_isodd(&x) != sign)
		aegis_fe_neg(&x, &x);

	p->x = x;
	aegis_fe_mul(&p->t, &p->x, &p->y);
	return true;
}

/* True when [8]p is the identity, i.e. p lies in the torsion subgroup of order <= 8. */
static bool aegis_ge_is_small_order(const struct aegis_ge *p)
{
	struct aegis_ge q;

	aegis_ge_double(&q, p);
	aegis_ge_double(&q, &q);
	aegis_ge_double(&q, &q);
	/* On the curve, X = 0 means (0, +-1); (0, -1) has order 2, so [8]p would be (0, 1). */
	return aegis_fe_iszero(&q.x);
}

/* ---- scalars mod L ---- */

/* True when the 256-bit little-endian @s is < L (RFC 8032: reject S >= L). */
static bool aegis_sc_is_canonical(const u8 s[32])
{
	int i;

	for (i = 31; i >= 0; i--) {
		if (s[i] < aegis_ed_l[i])
			return true;
		if (s[i] > aegis_ed_l[i])
			return false;
	}
	return false;	/* equal to L */
}

/*
 * r = x mod L for a 512-bit little-endian @x, by shift-and-subtract one bit at a time:
 * 512 cheap steps, simple enough to be obviously right, negligible next to the curve work.
 */
static void aegis_sc_reduce512(u8 r[32], const u8 x[64])
{
	u64 acc[4] = { 0 }, l[4];
	int i, j;

	for (j = 0; j < 4; j++)
		l[j] = aegis_load_le64(aegis_ed_l + 8 * j);

	for (i = 511; i >= 0; i--) {
		u64 borrow = 0, diff[4];
		bool ge;

		/* acc < L < 2^253, so the doubled value still fits in 4 limbs. */
		acc[3] = (acc[3] << 1) | (acc[2] >> 63);
		acc[2] = (acc[2] << 1) | (acc[1] >> 63);
		acc[1] = (acc[1] << 1) | (acc[0] >> 63);
		acc[0] = (acc[0] << 1) | ((x[i >> 3] >> (i & 7)) & 1);

		for (j = 0; j < 4; j++) {
			u64 t = acc[j] - l[j];
			u64 b2 = (acc[j] < l[j]) | (t < borrow);

			diff[j] = t - borrow;
			borrow = b2;
		}
		ge = !borrow;
		if (ge)
			memcpy(acc, diff, sizeof(acc));
	}
	for (j = 0; j < 4; j++)
		for (i = 0; i < 8; i++)
			r[8 * j + i] = (u8)(acc[j] >> (8 * i));
}

static inline int aegis_sc_bit(const u8 s[32], int i)
{
	return (s[i >> 3] >> (i & 7)) & 1;
}

bool aegis_ed25519_verify(const u8 sig[AEGIS_ED25519_SIG_SIZE], const u8 *msg, size_t msg_len,
			  const u8 pub[AEGIS_ED25519_PUBKEY_SIZE])
{
	struct aegis_sha512_ctx hctx;
	struct aegis_ge a, r, b, bma, acc;
	struct aegis_fe d2;
	u8 h[64], k[32], check[32];
	const u8 *s = sig + 32;
	int i;

	if (!aegis_sc_is_canonical(s))
		return false;
	if (!aegis_ge_frombytes(&a, pub) || aegis_ge_is_small_order(&a))
		return false;
	if (!aegis_ge_frombytes(&r, sig) || aegis_ge_is_small_order(&r))
		return false;

	aegis_sha512_init(&hctx);
	aegis_sha512_update(&hctx, sig, 32);
	aegis_sha512_update(&hctx, pub, 32);
	aegis_sha512_update(&hctx, msg, msg_len);
	aegis_sha512_final(&hctx, h);
	aegis_sc_reduce512(k, h);

	/* -A, B and B - A, for a joint double-and-add of [S]B + [k](-A). */
	aegis_fe_neg(&a.x, &a.x);
	aegis_fe_neg(&a.t, &a.t);
	aegis_fe_frombytes(&b.x, aegis_ed_bx);
	aegis_fe_frombytes(&b.y, aegis_ed_by);
	aegis_fe_set(&b.z, 1);
	aegis_fe_mul(&b.t, &b.x, &b.y);
	aegis_fe_frombytes(&d2, aegis_ed_d);
	aegis_fe_add(&d2, &d2, &d2);
	aegis_ge_add(&bma, &b, &a, &d2);

	/* Both scalars are < L < 2^253. */
	aegis_ge_identity(&acc);
	for (i = 252; i >= 0; i--) {
		int sb = aegis_sc_bit(s, i), kb = aegis_sc_bit(k, i);

		aegis_ge_double(&acc, &acc);
		if (sb && kb)
			aegis_ge_add(&acc, &acc, &bma, &d2);
		else if (sb)
			aegis_ge_add(&acc, &acc, &b, &d2);
		else if (kb)
			aegis_ge_add(&acc, &acc, &a, &d2);
	}
	aegis_ge_tobytes(check, &acc);
	return memcmp(check, sig, 32) == 0;
}
