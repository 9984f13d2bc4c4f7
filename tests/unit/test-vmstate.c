/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for device-state encoding (src/lib/stream/vmstate.c): round
 * trips of every field type, subsections, version rules, the exact error of
 * every malformed-stream case, truncation at every length, a fixed-seed
 * mutation fuzzer (run it under ASan), and table validation.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ferry.h"
#include "internal.h"

/* ------------------------------------------------------------------------ */
/* A device with every field type, a v2 field and two levels of subsections */

struct dev {
	uint64_t guard_lo; /* not in any table: must never change on load */
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	int32_t i32;
	int64_t i64;
	bool flag;
	uint8_t blob[7];
	uint64_t arr[3];
	uint64_t steps; /* since version 2 */
	/* subsection "fpu" */
	uint32_t fpu_ctrl;
	uint64_t fpu_regs[2];
	/* subsection "avx", inside "fpu" */
	uint16_t avx_state;
	/* not migrated */
	bool want_fpu, want_avx;
	int pre_saves, post_loads, fpu_post_loads, avx_post_loads;
	uint32_t post_load_ver;
	int pre_save_ret, post_load_ret;
	uint64_t guard_hi;
};

static int dev_pre_save(void *opaque)
{
	struct dev *d = opaque;
	d->pre_saves++;
	return d->pre_save_ret;
}

static int dev_post_load(void *opaque, uint32_t version)
{
	struct dev *d = opaque;
	d->post_loads++;
	d->post_load_ver = version;
	return d->post_load_ret;
}

static int fpu_post_load(void *opaque, uint32_t version)
{
	(void)version;
	((struct dev *)opaque)->fpu_post_loads++;
	return 0;
}

static int avx_post_load(void *opaque, uint32_t version)
{
	(void)version;
	((struct dev *)opaque)->avx_post_loads++;
	return 0;
}

static bool need_fpu(void *opaque)
{
	return ((struct dev *)opaque)->want_fpu;
}

static bool need_avx(void *opaque)
{
	return ((struct dev *)opaque)->want_avx;
}

static const ferry_field avx_fields[] = {
	FERRY_FIELD_U16(struct dev, avx_state),
	FERRY_FIELD_END,
};
static const ferry_vmsd avx_vmsd = {
	.name = "avx", .version = 1, .min_version = 1, .fields = avx_fields,
	.post_load = avx_post_load,
};
static const ferry_vmsd_sub fpu_subs[] = { { &avx_vmsd, need_avx }, { NULL } };

static const ferry_field fpu_fields[] = {
	FERRY_FIELD_U32(struct dev, fpu_ctrl),
	FERRY_FIELD_U64_ARRAY(struct dev, fpu_regs),
	FERRY_FIELD_END,
};
static const ferry_vmsd fpu_vmsd = {
	.name = "fpu", .version = 1, .min_version = 1, .fields = fpu_fields,
	.subsections = fpu_subs, .post_load = fpu_post_load,
};
static const ferry_vmsd_sub cpu_subs[] = { { &fpu_vmsd, need_fpu }, { NULL } };

#define CPU_V1_FIELDS                                   \
	FERRY_FIELD_U8(struct dev, u8),                 \
	FERRY_FIELD_U16(struct dev, u16),               \
	FERRY_FIELD_U32(struct dev, u32),               \
	FERRY_FIELD_U64(struct dev, u64),               \
	FERRY_FIELD_I32(struct dev, i32),               \
	FERRY_FIELD_I64(struct dev, i64),               \
	FERRY_FIELD_BOOL(struct dev, flag),             \
	FERRY_FIELD_BYTES(struct dev, blob),            \
	FERRY_FIELD_U64_ARRAY(struct dev, arr)

static const ferry_field cpu_v2_fields[] = {
	CPU_V1_FIELDS,
	FERRY_FIELD_U64_V(struct dev, steps, 2),
	FERRY_FIELD_END,
};
static const ferry_field cpu_v1_fields[] = { CPU_V1_FIELDS, FERRY_FIELD_END };

static const ferry_vmsd cpu_v2 = {
	.name = "cpu", .version = 2, .min_version = 1, .fields = cpu_v2_fields,
	.subsections = cpu_subs, .pre_save = dev_pre_save, .post_load = dev_post_load,
};
static const ferry_vmsd cpu_v1 = {
	.name = "cpu", .version = 1, .min_version = 1, .fields = cpu_v1_fields,
	.subsections = cpu_subs, .pre_save = dev_pre_save, .post_load = dev_post_load,
};
static const ferry_vmsd cpu_v2_nosub = {
	.name = "cpu", .version = 2, .min_version = 1, .fields = cpu_v2_fields,
};

#define GUARD 0xdeadbeefcafef00dull

static void dev_init(struct dev *d)
{
	memset(d, 0, sizeof(*d));
	d->guard_lo = d->guard_hi = GUARD;
}

static void dev_fill(struct dev *d)
{
	dev_init(d);
	d->u8 = 0xa5;
	d->u16 = 0xbeef;
	d->u32 = 0x89abcdefu;
	d->u64 = 0x0123456789abcdefull;
	d->i32 = -123456789;
	d->i64 = -0x123456789abcdll;
	d->flag = true;
	memcpy(d->blob, "\x00\x01\xfe\xff\x80\x7f\x42", 7);
	d->arr[0] = 1;
	d->arr[1] = 0xffffffffffffffffull;
	d->arr[2] = 0x8000000000000001ull;
	d->steps = 424242;
	d->fpu_ctrl = 0x37f;
	d->fpu_regs[0] = 0x1111222233334444ull;
	d->fpu_regs[1] = 0x5555666677778888ull;
	d->avx_state = 0x0a0b;
	d->want_fpu = d->want_avx = true;
}

/* Encodes into a malloc'd buffer of the exact size. */
static uint8_t *encode(const ferry_vmsd *v, struct dev *d, size_t *len)
{
	int64_t n = ferry_vmsd_encode(v, d, NULL, 0);
	assert_true(n > 0);
	uint8_t *buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(ferry_vmsd_encode(v, d, buf, (size_t)n), n);
	*len = (size_t)n;
	return buf;
}

/* ------------------------------------------------------------------------ */
/* Stream builder for hand-made (malformed) streams                          */

struct sb {
	uint8_t b[1024];
	size_t n;
};

static void sb_u8(struct sb *s, uint8_t x)
{
	assert_true(s->n < sizeof(s->b));
	s->b[s->n++] = x;
}

static void sb_bytes(struct sb *s, const void *p, size_t n)
{
	assert_true(n <= sizeof(s->b) - s->n);
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static void sb_be32(struct sb *s, uint32_t x)
{
	for (int i = 3; i >= 0; i--)
		sb_u8(s, (uint8_t)(x >> (8 * i)));
}

static void sb_be64(struct sb *s, uint64_t x)
{
	for (int i = 7; i >= 0; i--)
		sb_u8(s, (uint8_t)(x >> (8 * i)));
}

static void sb_name(struct sb *s, const char *name)
{
	sb_u8(s, (uint8_t)strlen(name));
	sb_bytes(s, name, strlen(name));
}

/* Field header: tag, type, name, size. */
static void sb_fhdr(struct sb *s, uint8_t type, const char *name, uint32_t size)
{
	sb_u8(s, 0x01);
	sb_u8(s, type);
	sb_name(s, name);
	sb_be32(s, size);
}

static void sb_u64f(struct sb *s, const char *name, uint64_t v)
{
	sb_fhdr(s, FERRY_FT_U64, name, 8);
	sb_be64(s, v);
}

static void sb_u32f(struct sb *s, const char *name, uint32_t v)
{
	sb_fhdr(s, FERRY_FT_U32, name, 4);
	sb_be32(s, v);
}

static void sb_boolf(struct sb *s, const char *name, uint8_t v)
{
	sb_fhdr(s, FERRY_FT_BOOL, name, 1);
	sb_u8(s, v);
}

/* Subsection header with a body length to patch (returns its offset). */
static size_t sb_sub_begin(struct sb *s, const char *name, uint32_t version)
{
	sb_u8(s, 0x05);
	sb_name(s, name);
	sb_be32(s, version);
	size_t at = s->n;
	sb_be32(s, 0);
	return at;
}

static void sb_sub_end(struct sb *s, size_t at)
{
	uint32_t len = (uint32_t)(s->n - at - 4);
	for (int i = 0; i < 4; i++)
		s->b[at + i] = (uint8_t)(len >> (24 - 8 * i));
}

/* ------------------------------------------------------------------------ */
/* The device of the malformed-stream tests                                  */

struct mdev {
	uint64_t x, steps;
	bool on;
	uint32_t y, z;
};

static const ferry_field msub_fields[] = { FERRY_FIELD_U32(struct mdev, y), FERRY_FIELD_END };
static const ferry_vmsd msub = {
	.name = "sub", .version = 1, .min_version = 1, .fields = msub_fields,
};
static const ferry_field msub2_fields[] = { FERRY_FIELD_U32(struct mdev, z), FERRY_FIELD_END };
static const ferry_vmsd msub2 = {
	.name = "sub2", .version = 3, .min_version = 2, .fields = msub2_fields,
};
static const ferry_vmsd_sub msubs[] = { { &msub, NULL }, { &msub2, NULL }, { NULL } };
static const ferry_field m_fields[] = {
	FERRY_FIELD_U64(struct mdev, x),
	FERRY_FIELD_U64(struct mdev, steps),
	FERRY_FIELD_BOOL(struct mdev, on),
	FERRY_FIELD_END,
};
static const ferry_vmsd mvmsd = {
	.name = "cpu", .version = 1, .min_version = 1, .fields = m_fields, .subsections = msubs,
};
/* Same device where `steps` appeared in version 2. */
static const ferry_field m2_fields[] = {
	FERRY_FIELD_U64(struct mdev, x),
	FERRY_FIELD_U64_V(struct mdev, steps, 2),
	FERRY_FIELD_BOOL(struct mdev, on),
	FERRY_FIELD_END,
};
static const ferry_vmsd mvmsd2 = {
	.name = "cpu", .version = 2, .min_version = 1, .fields = m2_fields, .subsections = msubs,
};

/* x, steps, on: the fields of a valid mvmsd stream. */
static void sb_mfields(struct sb *s)
{
	sb_u64f(s, "x", 1);
	sb_u64f(s, "steps", 2);
	sb_boolf(s, "on", 1);
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                               */

static void test_roundtrip_all_types(void **state)
{
	(void)state;
	struct dev src, dst;
	dev_fill(&src);
	size_t n;
	uint8_t *buf = encode(&cpu_v2, &src, &n);
	assert_int_equal(src.pre_saves, 2); /* sizing call + encoding call */

	dev_init(&dst);
	char err[256] = "junk";
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 2, buf, n, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(dst.u8, src.u8);
	assert_int_equal(dst.u16, src.u16);
	assert_int_equal(dst.u32, src.u32);
	assert_true(dst.u64 == src.u64);
	assert_int_equal(dst.i32, -123456789);
	assert_true(dst.i64 == -0x123456789abcdll);
	assert_true(dst.flag);
	assert_memory_equal(dst.blob, src.blob, sizeof(src.blob));
	assert_memory_equal(dst.arr, src.arr, sizeof(src.arr));
	assert_true(dst.steps == src.steps);
	assert_int_equal(dst.fpu_ctrl, src.fpu_ctrl);
	assert_memory_equal(dst.fpu_regs, src.fpu_regs, sizeof(src.fpu_regs));
	assert_int_equal(dst.avx_state, src.avx_state);
	assert_int_equal(dst.post_loads, 1);
	assert_int_equal(dst.post_load_ver, 2);
	assert_int_equal(dst.fpu_post_loads, 1);
	assert_int_equal(dst.avx_post_loads, 1);
	assert_true(dst.guard_lo == GUARD && dst.guard_hi == GUARD);
	/* Not migrated: untouched. */
	assert_false(dst.want_fpu);
	assert_int_equal(dst.pre_saves, 0);

	/* Re-encoding the loaded state gives the same bytes. */
	dst.want_fpu = dst.want_avx = true;
	size_t n2;
	uint8_t *buf2 = encode(&cpu_v2, &dst, &n2);
	assert_int_equal(n2, n);
	assert_memory_equal(buf2, buf, n);
	free(buf2);
	free(buf);
}

/* bool false, zero and extreme values. */
static void test_roundtrip_extremes(void **state)
{
	(void)state;
	struct dev src, dst;
	dev_fill(&src);
	src.flag = false;
	src.u8 = 0xff;
	src.u16 = 0;
	src.i32 = INT32_MIN;
	src.i64 = INT64_MIN;
	src.u64 = UINT64_MAX;
	size_t n;
	uint8_t *buf = encode(&cpu_v2, &src, &n);
	dev_init(&dst);
	dst.flag = true;
	dst.u16 = 7;
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 2, buf, n, NULL, 0), 0);
	assert_false(dst.flag);
	assert_int_equal(dst.u8, 0xff);
	assert_int_equal(dst.u16, 0);
	assert_true(dst.i32 == INT32_MIN);
	assert_true(dst.i64 == INT64_MIN);
	assert_true(dst.u64 == UINT64_MAX);
	free(buf);
}

/* The exact bytes of a small vmsd, as docs/wire-format.md describes them. */
struct gdev {
	uint16_t a;
	bool b;
	uint8_t c;
	int32_t d;
};
static const ferry_field g_sub_fields[] = { FERRY_FIELD_U8(struct gdev, c), FERRY_FIELD_END };
static const ferry_vmsd g_sub = { .name = "s", .version = 3, .min_version = 1, .fields = g_sub_fields };
static const ferry_vmsd_sub g_subs[] = { { &g_sub, NULL }, { NULL } };
static const ferry_field g_fields[] = {
	FERRY_FIELD_U16(struct gdev, a),
	FERRY_FIELD_BOOL(struct gdev, b),
	FERRY_FIELD_I32(struct gdev, d),
	FERRY_FIELD_END,
};
static const ferry_vmsd g_vmsd = {
	.name = "g", .version = 1, .min_version = 1, .fields = g_fields, .subsections = g_subs,
};

static void test_golden_encoding(void **state)
{
	(void)state;
	static const uint8_t want[] = {
		0x01, 0x02, 0x01, 'a', 0x00, 0x00, 0x00, 0x02, 0x12, 0x34,
		0x01, 0x07, 0x01, 'b', 0x00, 0x00, 0x00, 0x01, 0x01,
		0x01, 0x05, 0x01, 'd', 0x00, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xfe,
		0x05, 0x01, 's', 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x0a,
		0x01, 0x01, 0x01, 'c', 0x00, 0x00, 0x00, 0x01, 0x7f,
		0x00,
		0x00,
	};
	struct gdev g = { .a = 0x1234, .b = true, .c = 0x7f, .d = -2 };
	uint8_t buf[128];
	assert_int_equal(ferry_vmsd_encode(&g_vmsd, &g, buf, sizeof(buf)), sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));

	struct gdev h = { 0 };
	assert_int_equal(ferry_vmsd_decode(&g_vmsd, &h, 1, want, sizeof(want), NULL, 0), 0);
	assert_int_equal(h.a, 0x1234);
	assert_true(h.b);
	assert_int_equal(h.c, 0x7f);
	assert_int_equal(h.d, -2);
}

/* A too small cap returns the needed size and writes nothing past cap. */
static void test_encode_cap(void **state)
{
	(void)state;
	struct dev d;
	dev_fill(&d);
	int64_t n = ferry_vmsd_encode(&cpu_v2, &d, NULL, 0);
	assert_true(n > 0);
	uint8_t *ref = malloc((size_t)n);
	assert_int_equal(ferry_vmsd_encode(&cpu_v2, &d, ref, (size_t)n), n);
	uint8_t *buf = malloc((size_t)n + 64);
	for (size_t cap = 0; cap <= (size_t)n + 8; cap++) {
		memset(buf, 0xcc, (size_t)n + 64);
		assert_int_equal(ferry_vmsd_encode(&cpu_v2, &d, buf, cap), n);
		for (size_t i = cap; i < (size_t)n + 64; i++)
			if (buf[i] != 0xcc)
				fail_msg("cap %zu: byte %zu written", cap, i);
		if (cap >= (size_t)n)
			assert_memory_equal(buf, ref, (size_t)n);
	}
	free(buf);
	free(ref);
}

static void test_encode_errors(void **state)
{
	(void)state;
	struct dev d;
	dev_fill(&d);
	uint8_t buf[512];
	assert_int_equal(ferry_vmsd_encode(NULL, &d, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(ferry_vmsd_encode(&cpu_v2, NULL, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(ferry_vmsd_encode(&cpu_v2, &d, NULL, 16), -EINVAL);
	d.pre_save_ret = -EIO;
	assert_int_equal(ferry_vmsd_encode(&cpu_v2, &d, buf, sizeof(buf)), -EIO);
	assert_int_equal(d.pre_saves, 1);
}

/* ------------------------------------------------------------------------ */
/* Subsections                                                               */

static void test_subsection_not_needed(void **state)
{
	(void)state;
	struct dev src, dst;
	dev_fill(&src);
	src.want_fpu = false;
	size_t n, n_nosub;
	uint8_t *buf = encode(&cpu_v2, &src, &n);
	uint8_t *ref = encode(&cpu_v2_nosub, &src, &n_nosub);
	/* Same bytes as a vmsd without the subsection at all. */
	assert_int_equal(n, n_nosub);
	assert_memory_equal(buf, ref, n);

	dev_init(&dst);
	dst.fpu_ctrl = 99;
	dst.fpu_regs[1] = 98;
	dst.avx_state = 97;
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 2, buf, n, NULL, 0), 0);
	assert_int_equal(dst.u32, src.u32);
	assert_int_equal(dst.fpu_ctrl, 99);
	assert_true(dst.fpu_regs[1] == 98);
	assert_int_equal(dst.avx_state, 97);
	assert_int_equal(dst.fpu_post_loads, 0);
	assert_int_equal(dst.post_loads, 1);
	free(buf);
	free(ref);
}

static void test_subsection_needed(void **state)
{
	(void)state;
	struct dev src, dst;
	dev_fill(&src);
	src.want_avx = false; /* fpu sent, avx inside it not */
	size_t n, n_nosub;
	uint8_t *buf = encode(&cpu_v2, &src, &n);
	uint8_t *ref = encode(&cpu_v2_nosub, &src, &n_nosub);
	assert_true(n > n_nosub);
	/* Fields first, then the subsection, then the end tag. */
	assert_memory_equal(buf, ref, n_nosub - 1);
	assert_int_equal(buf[n_nosub - 1], 0x05);
	assert_int_equal(buf[n - 1], 0x00);

	dev_init(&dst);
	dst.avx_state = 97;
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 2, buf, n, NULL, 0), 0);
	assert_int_equal(dst.fpu_ctrl, src.fpu_ctrl);
	assert_memory_equal(dst.fpu_regs, src.fpu_regs, sizeof(src.fpu_regs));
	assert_int_equal(dst.avx_state, 97);
	assert_int_equal(dst.fpu_post_loads, 1);
	assert_int_equal(dst.avx_post_loads, 0);
	free(buf);
	free(ref);
}

/* A chain of nested subsections, l0 .. l<depth>, each with one u8. */
struct chain {
	ferry_vmsd v[12];
	ferry_vmsd_sub subs[12][2];
	ferry_field fields[12][2];
	char names[12][4];
	uint8_t vals[12];
};

static void chain_build(struct chain *c, int depth)
{
	memset(c, 0, sizeof(*c));
	for (int i = 0; i <= depth; i++) {
		snprintf(c->names[i], sizeof(c->names[i]), "l%d", i);
		c->fields[i][0] = (ferry_field){ "v", FERRY_FT_U8, offsetof(struct chain, vals) + (size_t)i, 1, 0 };
		c->fields[i][1] = (ferry_field)FERRY_FIELD_END;
		c->v[i] = (ferry_vmsd){ .name = c->names[i], .version = 1, .min_version = 1,
					.fields = c->fields[i] };
		if (i < depth) {
			c->subs[i][0].vmsd = &c->v[i + 1];
			c->v[i].subsections = c->subs[i];
		}
	}
}

static void test_subsection_deep(void **state)
{
	(void)state;
	struct chain *c = malloc(sizeof(*c));
	chain_build(c, 8); /* the deepest nesting allowed */
	assert_int_equal(ferry__vmsd_validate(&c->v[0]), 0);
	for (int i = 0; i <= 8; i++)
		c->vals[i] = (uint8_t)(i + 10);
	int64_t n = ferry_vmsd_encode(&c->v[0], c, NULL, 0);
	assert_true(n > 0);
	uint8_t *buf = malloc((size_t)n);
	assert_int_equal(ferry_vmsd_encode(&c->v[0], c, buf, (size_t)n), n);
	memset(c->vals, 0, sizeof(c->vals));
	assert_int_equal(ferry_vmsd_decode(&c->v[0], c, 1, buf, (size_t)n, NULL, 0), 0);
	for (int i = 0; i <= 8; i++)
		assert_int_equal(c->vals[i], i + 10);

	/* Errors deep down name the whole path. The innermost field's type
	 * byte is at n - 9 (end tags) - 1 (data) - 4 (size) - 2 (name) - 1. */
	assert_int_equal(buf[n - 9 - 1 - 4 - 2 - 1], FERRY_FT_U8);
	buf[n - 9 - 1 - 4 - 2 - 1] = FERRY_FT_BOOL;
	char err[256];
	assert_int_equal(ferry_vmsd_decode(&c->v[0], c, 1, buf, (size_t)n, err, sizeof(err)),
			 FERRY_EBADSTREAM);
	assert_string_equal(err, "l0/l1/l2/l3/l4/l5/l6/l7/l8: field 'v': type bool in stream, u8 expected");
	free(buf);

	chain_build(c, 9);
	assert_int_equal(ferry__vmsd_validate(&c->v[0]), -EINVAL);
	assert_int_equal(ferry_vmsd_encode(&c->v[0], c, NULL, 0), -EINVAL);
	free(c);
}

/* ------------------------------------------------------------------------ */
/* Versions                                                                  */

static void test_version_newer_rejected(void **state)
{
	(void)state;
	struct dev src, dst;
	dev_fill(&src);
	size_t n;
	uint8_t *buf = encode(&cpu_v2, &src, &n);
	dev_init(&dst);
	char err[256];
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 3, buf, n, err, sizeof(err)),
			 FERRY_EVERSION);
	assert_string_equal(err, "device state 'cpu' version 3 is newer than supported 2");
	/* A v2 stream on a v1 destination. */
	assert_int_equal(ferry_vmsd_decode(&cpu_v1, &dst, 2, buf, n, err, sizeof(err)),
			 FERRY_EVERSION);
	assert_string_equal(err, "device state 'cpu' version 2 is newer than supported 1");
	assert_int_equal(dst.post_loads, 0);
	assert_int_equal(dst.u32, 0);
	free(buf);
}

static void test_version_older_rejected(void **state)
{
	(void)state;
	static const ferry_vmsd v3min2 = {
		.name = "cpu", .version = 3, .min_version = 2, .fields = cpu_v2_fields,
	};
	struct dev src, dst;
	dev_fill(&src);
	size_t n;
	uint8_t *buf = encode(&cpu_v1, &src, &n);
	dev_init(&dst);
	char err[256];
	assert_int_equal(ferry_vmsd_decode(&v3min2, &dst, 1, buf, n, err, sizeof(err)),
			 FERRY_EVERSION);
	assert_string_equal(err, "device state 'cpu' version 1 is older than minimum 2");
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 0, buf, n, err, sizeof(err)),
			 FERRY_EVERSION);
	assert_string_equal(err, "device state 'cpu' version 0 is older than minimum 1");
	free(buf);
}

static void test_version_old_stream_keeps_new_field(void **state)
{
	(void)state;
	struct dev src, dst;
	dev_fill(&src);
	size_t n;
	uint8_t *buf = encode(&cpu_v1, &src, &n); /* a v1 source: no `steps` */
	dev_init(&dst);
	dst.steps = 777;
	char err[256];
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 1, buf, n, err, sizeof(err)), 0);
	assert_true(dst.steps == 777);
	assert_true(dst.u64 == src.u64);
	assert_int_equal(dst.avx_state, src.avx_state);
	assert_int_equal(dst.post_load_ver, 1);
	free(buf);

	/* A v2 stream that claims to be v1 carries a field v1 did not have. */
	buf = encode(&cpu_v2, &src, &n);
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 1, buf, n, err, sizeof(err)),
			 FERRY_EVERSION);
	assert_string_equal(err, "cpu: field 'steps' is from version 2, stream has version 1");
	assert_true(dst.steps == 777);
	free(buf);
}

/* Version 2 of 'sub2' (between its min 2 and max 3) loads, and post_load sees it. */
static void test_subsection_versions(void **state)
{
	(void)state;
	struct sb s = { .n = 0 };
	sb_mfields(&s);
	size_t at = sb_sub_begin(&s, "sub2", 2);
	sb_u32f(&s, "z", 5);
	sb_u8(&s, 0);
	sb_sub_end(&s, at);
	sb_u8(&s, 0);
	struct mdev d = { 0 };
	assert_int_equal(ferry_vmsd_decode(&mvmsd, &d, 1, s.b, s.n, NULL, 0), 0);
	assert_int_equal(d.z, 5);
	assert_true(d.x == 1 && d.steps == 2 && d.on);
	assert_int_equal(d.y, 0);
}

static void test_valid_hand_stream(void **state)
{
	(void)state;
	struct sb s = { .n = 0 };
	sb_mfields(&s);
	size_t at = sb_sub_begin(&s, "sub", 1);
	sb_u32f(&s, "y", 0x01020304);
	sb_u8(&s, 0);
	sb_sub_end(&s, at);
	sb_u8(&s, 0);
	struct mdev d = { 0 };
	char err[128];
	assert_int_equal(ferry_vmsd_decode(&mvmsd, &d, 1, s.b, s.n, err, sizeof(err)), 0);
	assert_true(d.x == 1 && d.steps == 2 && d.on && d.y == 0x01020304);
}

/* A version-1 stream loads without the field version 2 added, which keeps its value. */
static void test_field_added_in_version(void **state)
{
	(void)state;
	struct sb s = { .n = 0 };
	sb_u64f(&s, "x", 9);
	sb_boolf(&s, "on", 1);
	sb_u8(&s, 0);
	struct mdev d = { .steps = 55 };
	assert_int_equal(ferry_vmsd_decode(&mvmsd2, &d, 1, s.b, s.n, NULL, 0), 0);
	assert_true(d.x == 9 && d.steps == 55 && d.on);
}

/* ------------------------------------------------------------------------ */
/* Malformed streams: exact errors                                           */

/*
 * A hand-made stream as a list of builder steps (the sb_* functions
 * above), so that each malformed case is one row of a table.
 */
enum sb_op {
	OP_DONE = 0,
	OP_U8,      /* v */
	OP_BYTES,   /* the first v bytes of s */
	OP_BE32,    /* v */
	OP_BE64,    /* v */
	OP_NAME,    /* s: length byte and bytes */
	OP_FHDR,    /* field header: type v, name s, size v2 */
	OP_U64F,    /* u64 field s = v */
	OP_U32F,    /* u32 field s = v */
	OP_BOOLF,   /* bool field s, raw byte v */
	OP_MFIELDS, /* x, steps and on: the fields of a valid mvmsd stream */
	OP_SUB,     /* subsection s of version v; its body follows */
	OP_SUB_END, /* patches the body length of the last open OP_SUB */
};

struct sb_step {
	enum sb_op op;
	const char *s;
	uint64_t v;
	uint32_t v2;
};

#define U8(x) { OP_U8, NULL, (x), 0 }
#define BYTES(str, n) { OP_BYTES, (str), (n), 0 }
#define BE32(x) { OP_BE32, NULL, (x), 0 }
#define BE64(x) { OP_BE64, NULL, (x), 0 }
#define NAME(str) { OP_NAME, (str), 0, 0 }
#define FHDR(type, str, size) { OP_FHDR, (str), (type), (size) }
#define U64F(str, x) { OP_U64F, (str), (x), 0 }
#define U32F(str, x) { OP_U32F, (str), (x), 0 }
#define BOOLF(str, x) { OP_BOOLF, (str), (x), 0 }
#define MFIELDS { OP_MFIELDS, NULL, 0, 0 }
#define SUB(str, ver) { OP_SUB, (str), (ver), 0 }
#define SUB_END { OP_SUB_END, NULL, 0, 0 }

/* Tags of the encoding (docs/wire-format.md): field, subsection, end. */
#define TAG_FIELD 0x01
#define TAG_SUB 0x05
#define TAG_END 0x00

static void sb_build(struct sb *s, const struct sb_step *st)
{
	size_t open[4];
	unsigned nopen = 0;
	s->n = 0;
	for (; st->op != OP_DONE; st++) {
		switch (st->op) {
		case OP_U8: sb_u8(s, (uint8_t)st->v); break;
		case OP_BYTES: sb_bytes(s, st->s, (size_t)st->v); break;
		case OP_BE32: sb_be32(s, (uint32_t)st->v); break;
		case OP_BE64: sb_be64(s, st->v); break;
		case OP_NAME: sb_name(s, st->s); break;
		case OP_FHDR: sb_fhdr(s, (uint8_t)st->v, st->s, st->v2); break;
		case OP_U64F: sb_u64f(s, st->s, st->v); break;
		case OP_U32F: sb_u32f(s, st->s, (uint32_t)st->v); break;
		case OP_BOOLF: sb_boolf(s, st->s, (uint8_t)st->v); break;
		case OP_MFIELDS: sb_mfields(s); break;
		case OP_SUB:
			assert_true(nopen < 4);
			open[nopen++] = sb_sub_begin(s, st->s, (uint32_t)st->v);
			break;
		case OP_SUB_END:
			assert_true(nopen > 0);
			sb_sub_end(s, open[--nopen]);
			break;
		case OP_DONE: break;
		}
	}
}

/* One malformed stream: decoded by vmsd at stream version ver, it fails with code and msg. */
struct bad_stream {
	const ferry_vmsd *vmsd;
	uint32_t ver;
	struct sb_step steps[16];
	int code;
	const char *msg;
};

#define BAD(...) { &mvmsd, 1, { __VA_ARGS__ }, FERRY_EBADSTREAM,
#define BADV(vmsd, ver, code, ...) { (vmsd), (ver), { __VA_ARGS__ }, (code),

static const struct bad_stream bad_streams[] = {
	/* Subsection versions outside sub2's 2..3. */
	BADV(&mvmsd, 1, FERRY_EVERSION, MFIELDS, SUB("sub2", 4), U32F("z", 5), U8(TAG_END), SUB_END,
	     U8(TAG_END)) "cpu: device state 'sub2' version 4 is newer than supported 3" },
	BADV(&mvmsd, 1, FERRY_EVERSION, MFIELDS, SUB("sub2", 1), U32F("z", 5), U8(TAG_END), SUB_END,
	     U8(TAG_END)) "cpu: device state 'sub2' version 1 is older than minimum 2" },

	/* Field types. */
	BAD(U64F("x", 1), U32F("steps", 2), BOOLF("on", 1), U8(TAG_END))
		"cpu: field 'steps': type u32 in stream, u64 expected" },
	BAD(FHDR(42, "x", 8), BE64(1)) "cpu: field 'x': type 42 in stream, u64 expected" },
	BAD(FHDR(FERRY_FT_END, "x", 8), BE64(1)) "cpu: field 'x': type 0 in stream, u64 expected" },
	BAD(FHDR(FERRY_FT_I64, "x", 8), BE64(1)) "cpu: field 'x': type i64 in stream, u64 expected" },

	/* Field sizes; a huge one is a mismatch, not a read past the end. */
	BAD(FHDR(FERRY_FT_U64, "x", 4), BE32(1), U8(TAG_END))
		"cpu: field 'x': size 4 in stream, 8 expected" },
	BAD(FHDR(FERRY_FT_U64, "x", 0xffffffffu))
		"cpu: field 'x': size 4294967295 in stream, 8 expected" },
	BAD(U64F("x", 1), U64F("steps", 1), FHDR(FERRY_FT_BOOL, "on", 2), U8(1), U8(TAG_END))
		"cpu: field 'on': size 2 in stream, 1 expected" },

	/* Unknown fields: a prefix of a local name is unknown; non-printable bytes show as '?'. */
	BAD(U64F("x", 1), U64F("foo", 1)) "cpu: unknown field 'foo'" },
	BAD(U64F("ste", 1)) "cpu: unknown field 'ste'" },
	BAD(FHDR(FERRY_FT_U64, "\x01" "a\x7f", 8), BE64(1)) "cpu: unknown field '?a?'" },

	/* Missing fields: the end before all, a skipped one, none, a subsection before the last. */
	BAD(U64F("x", 1), U8(TAG_END)) "cpu: missing field 'steps'" },
	BAD(U64F("x", 1), BOOLF("on", 1), U8(TAG_END)) "cpu: missing field 'steps'" },
	BAD(U8(TAG_END)) "cpu: missing field 'x'" },
	BAD(U64F("x", 1), SUB("sub", 1), U32F("y", 1), U8(TAG_END), SUB_END, U8(TAG_END))
		"cpu: missing field 'steps'" },

	/* Fields sent twice, an empty name. */
	BAD(U64F("x", 1), U64F("x", 1)) "cpu: duplicate field 'x'" },
	BAD(MFIELDS, U64F("steps", 3)) "cpu: duplicate field 'steps'" },
	BAD(U8(TAG_FIELD), U8(FERRY_FT_U64), U8(0), BE32(8), BE64(1)) "cpu: field with an empty name" },

	/* A field the stream's version did not have yet; a version-2 stream must carry it. */
	BADV(&mvmsd2, 1, FERRY_EVERSION, MFIELDS, U8(TAG_END))
		"cpu: field 'steps' is from version 2, stream has version 1" },
	BADV(&mvmsd2, 2, FERRY_EBADSTREAM, U64F("x", 9), BOOLF("on", 1), U8(TAG_END))
		"cpu: missing field 'steps'" },

	/* A bool is 0 or 1. */
	BAD(U64F("x", 1), U64F("steps", 2), BOOLF("on", 2), U8(TAG_END))
		"cpu: field 'on': invalid bool value 2" },
	BAD(U64F("x", 1), U64F("steps", 2), BOOLF("on", 53), U8(TAG_END))
		"cpu: field 'on': invalid bool value 53" },
	BAD(U64F("x", 1), U64F("steps", 2), BOOLF("on", 104), U8(TAG_END))
		"cpu: field 'on': invalid bool value 104" },
	BAD(U64F("x", 1), U64F("steps", 2), BOOLF("on", 155), U8(TAG_END))
		"cpu: field 'on': invalid bool value 155" },
	BAD(U64F("x", 1), U64F("steps", 2), BOOLF("on", 206), U8(TAG_END))
		"cpu: field 'on': invalid bool value 206" },

	/* Truncated: in a value, in a size, in a name, after the type, before the end tag. */
	BAD(U64F("x", 1), FHDR(FERRY_FT_U64, "steps", 8), U8(0), U8(0), U8(0))
		"cpu: truncated in field 'steps'" },
	BAD(U64F("x", 1), U8(TAG_FIELD), U8(FERRY_FT_U64), NAME("steps"), U8(0))
		"cpu: truncated in field 'steps'" },
	BAD(U8(TAG_FIELD), U8(FERRY_FT_U64), U8(5), BYTES("ste", 3)) "cpu: truncated field header" },
	BAD(U8(TAG_FIELD), U8(FERRY_FT_U64)) "cpu: truncated field header" },
	BAD(MFIELDS) "cpu: truncated before end tag" },
	BAD({ OP_DONE }) "cpu: truncated before end tag" },

	/* Tags, and bytes after the end. */
	BAD(U64F("x", 1), U8(0x07)) "cpu: unknown tag 0x07" },
	BAD(U8(0xff)) "cpu: unknown tag 0xff" },
	BAD(MFIELDS, U8(TAG_END), U8(0), U8(1), U8(2)) "cpu: 3 trailing bytes" },

	/* Subsections: unknown (a field name is not one), an empty name. */
	BAD(MFIELDS, SUB("x", 1), U8(TAG_END), SUB_END, U8(TAG_END)) "cpu: unknown subsection 'x'" },
	BAD(MFIELDS, SUB("steps", 1), U8(TAG_END), SUB_END, U8(TAG_END))
		"cpu: unknown subsection 'steps'" },
	BAD(MFIELDS, U8(TAG_SUB), U8(0), BE32(1), BE32(1), U8(TAG_END), U8(TAG_END))
		"cpu: subsection with an empty name" },

	/* Sent twice; out of the vmsd's order. */
	BAD(MFIELDS, SUB("sub", 1), U32F("y", 1), U8(TAG_END), SUB_END,
	    SUB("sub", 1), U32F("y", 1), U8(TAG_END), SUB_END, U8(TAG_END))
		"cpu: duplicate subsection 'sub'" },
	BAD(MFIELDS, SUB("sub", 1), U32F("y", 1), U8(TAG_END), SUB_END,
	    SUB("sub2", 3), U32F("z", 1), U8(TAG_END), SUB_END,
	    SUB("sub", 1), U32F("y", 1), U8(TAG_END), SUB_END, U8(TAG_END))
		"cpu: subsection 'sub' out of order" },

	/* Body length beyond the buffer, longer than its content, shorter (no end tag). */
	BAD(MFIELDS, U8(TAG_SUB), NAME("sub"), BE32(1), BE32(0xffffffffu), U32F("y", 1),
	    U8(TAG_END), U8(TAG_END)) "cpu: truncated in subsection 'sub'" },
	BAD(MFIELDS, SUB("sub", 1), U32F("y", 1), U8(TAG_END), U8(0), U8(0), SUB_END, U8(TAG_END))
		"cpu/sub: 2 trailing bytes" },
	BAD(MFIELDS, SUB("sub", 1), U32F("y", 1), SUB_END, U8(TAG_END), U8(TAG_END))
		"cpu/sub: truncated before end tag" },

	/* Errors inside the body carry the path. */
	BAD(MFIELDS, SUB("sub", 1), U64F("y", 1), U8(TAG_END), SUB_END, U8(TAG_END))
		"cpu/sub: field 'y': type u64 in stream, u32 expected" },
	BAD(MFIELDS, SUB("sub", 1), U8(TAG_END), SUB_END, U8(TAG_END)) "cpu/sub: missing field 'y'" },

	/* Truncated subsection headers. */
	BAD(MFIELDS, U8(TAG_SUB)) "cpu: truncated subsection header" },
	BAD(MFIELDS, U8(TAG_SUB), U8(3), BYTES("su", 2)) "cpu: truncated subsection header" },
	BAD(MFIELDS, U8(TAG_SUB), NAME("sub"), BE32(1), U8(0)) "cpu: truncated in subsection 'sub'" },

	/* A field after a subsection. */
	BAD(MFIELDS, SUB("sub", 1), U32F("y", 1), U8(TAG_END), SUB_END, U64F("x", 1), U8(TAG_END))
		"cpu: duplicate field 'x'" },
};

/* Each malformed stream fails with its code and message and changes nothing. */
static void test_malformed_streams(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_streams) / sizeof(bad_streams[0]); i++) {
		const struct bad_stream *c = &bad_streams[i];
		struct sb s;
		sb_build(&s, c->steps);
		struct mdev d, snap;
		memset(&d, 0x5a, sizeof(d));
		d.on = false;
		memcpy(&snap, &d, sizeof(d));
		/* A copy of exactly n bytes: ASan sees any read past the end. */
		uint8_t *copy = malloc(s.n ? s.n : 1);
		assert_non_null(copy);
		memcpy(copy, s.b, s.n);
		char err[512];
		memset(err, 'X', sizeof(err));
		int r = ferry_vmsd_decode(c->vmsd, &d, c->ver, copy, s.n, err, sizeof(err));
		free(copy);
		if (r != c->code || strcmp(err, c->msg))
			fail_msg("case %zu: %d \"%s\", expected %d \"%s\"", i, r, err, c->code, c->msg);
		if (memcmp(&d, &snap, sizeof(d)))
			fail_msg("case %zu (%s): the device changed", i, c->msg);
	}
}

/* A failing hook's error is returned; the fields are loaded by then. */
static void test_post_load_error(void **state)
{
	(void)state;
	struct dev src, dst;
	dev_fill(&src);
	size_t n;
	uint8_t *buf = encode(&cpu_v2, &src, &n);
	dev_init(&dst);
	dst.post_load_ret = -EIO;
	char err[256];
	assert_int_equal(ferry_vmsd_decode(&cpu_v2, &dst, 2, buf, n, err, sizeof(err)), -EIO);
	assert_int_equal(dst.post_loads, 1);
	assert_string_equal(err, "cpu: post_load failed: Input/output error");
	free(buf);
}

/* post_load_msg: the hook's own words make the error; without words, strerror. */
static int dev_post_load_msg(void *opaque, uint32_t version, char *msg, size_t len)
{
	struct dev *d = opaque;
	d->post_loads++;
	if (d->post_load_ret && d->post_load_ret != -EIO)
		snprintf(msg, len, "steps %u is more than version %u allows", 7u, version);
	return d->post_load_ret;
}

static const ferry_vmsd cpu_v2_msg = {
	.name = "cpu", .version = 2, .min_version = 1, .fields = cpu_v2_fields,
	.subsections = cpu_subs, .pre_save = dev_pre_save, .post_load_msg = dev_post_load_msg,
};

static void test_post_load_msg(void **state)
{
	(void)state;
	struct dev src, dst;
	dev_fill(&src);
	size_t n;
	uint8_t *buf = encode(&cpu_v2_msg, &src, &n);
	char err[256];
	dev_init(&dst);
	assert_int_equal(ferry_vmsd_decode(&cpu_v2_msg, &dst, 2, buf, n, err, sizeof(err)), 0);
	assert_int_equal(dst.post_loads, 1);
	dev_init(&dst);
	dst.post_load_ret = FERRY_EBADSTREAM;
	assert_int_equal(ferry_vmsd_decode(&cpu_v2_msg, &dst, 2, buf, n, err, sizeof(err)),
			 FERRY_EBADSTREAM);
	assert_string_equal(err, "cpu: steps 7 is more than version 2 allows");
	dev_init(&dst);
	dst.post_load_ret = -EIO;
	assert_int_equal(ferry_vmsd_decode(&cpu_v2_msg, &dst, 2, buf, n, err, sizeof(err)), -EIO);
	assert_string_equal(err, "cpu: Input/output error");
	free(buf);
}

static void test_err_buffer(void **state)
{
	(void)state;
	struct sb s = { .n = 0 };
	sb_u8(&s, 0x07);
	struct mdev d = { 0 };
	/* No buffer at all. */
	assert_int_equal(ferry_vmsd_decode(&mvmsd, &d, 1, s.b, s.n, NULL, 0), FERRY_EBADSTREAM);
	char err[8];
	memset(err, 'X', sizeof(err));
	assert_int_equal(ferry_vmsd_decode(&mvmsd, &d, 1, s.b, s.n, err, 0), FERRY_EBADSTREAM);
	assert_int_equal(err[0], 'X');
	/* Truncated, always terminated. */
	for (size_t l = 1; l <= sizeof(err); l++) {
		memset(err, 'X', sizeof(err));
		assert_int_equal(ferry_vmsd_decode(&mvmsd, &d, 1, s.b, s.n, err, l),
				 FERRY_EBADSTREAM);
		assert_int_equal(strlen(err), l - 1);
		assert_memory_equal(err, "cpu: unknown tag 0x07", l - 1);
	}
	/* Bad arguments. */
	char e2[64];
	assert_int_equal(ferry_vmsd_decode(NULL, &d, 1, s.b, s.n, e2, sizeof(e2)), -EINVAL);
	assert_string_equal(e2, "invalid arguments");
	assert_int_equal(ferry_vmsd_decode(&mvmsd, NULL, 1, s.b, s.n, e2, sizeof(e2)), -EINVAL);
	assert_int_equal(ferry_vmsd_decode(&mvmsd, &d, 1, NULL, 3, e2, sizeof(e2)), -EINVAL);
	assert_int_equal(ferry_vmsd_decode(&mvmsd, &d, 1, NULL, 0, e2, sizeof(e2)),
			 FERRY_EBADSTREAM);
	assert_string_equal(e2, "cpu: truncated before end tag");
}

/* ------------------------------------------------------------------------ */
/* Truncation and fuzzing                                                    */

static void test_truncation_every_length(void **state)
{
	(void)state;
	struct dev src, dst, snap;
	dev_fill(&src);
	size_t n;
	uint8_t *buf = encode(&cpu_v2, &src, &n);
	for (size_t l = 0; l < n; l++) {
		uint8_t *cut = malloc(l ? l : 1);
		memcpy(cut, buf, l);
		dev_init(&dst);
		dst.u32 = 5;
		memcpy(&snap, &dst, sizeof(dst));
		char err[256] = "";
		int r = ferry_vmsd_decode(&cpu_v2, &dst, 2, cut, l, err, sizeof(err));
		if (r != FERRY_EBADSTREAM)
			fail_msg("length %zu/%zu: %d (%s)", l, n, r, err);
		assert_true(err[0] != '\0');
		assert_memory_equal(&dst, &snap, sizeof(dst));
		free(cut);
	}
	free(buf);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static void test_fuzz(void **state)
{
	(void)state;
	struct dev src;
	dev_fill(&src);
	size_t n;
	uint8_t *seed = encode(&cpu_v2, &src, &n);
	uint8_t work[1024];
	unsigned ok = 0, failed = 0;
	rng_state = 0x9e3779b97f4a7c15ull;

	for (int it = 0; it < 200000; it++) {
		size_t len = n;
		memcpy(work, seed, n);
		int muts = 1 + (int)(rnd() % 4);
		for (int m = 0; m < muts; m++) {
			size_t at = len ? (size_t)(rnd() % len) : 0;
			switch (rnd() % 8) {
			case 0: /* random byte */
				if (len)
					work[at] = (uint8_t)rnd();
				break;
			case 1: /* bit flip */
				if (len)
					work[at] ^= (uint8_t)(1u << (rnd() % 8));
				break;
			case 2: /* interesting byte */
			{
				static const uint8_t v[] = { 0, 1, 2, 4, 5, 7, 8, 9, 0x7f, 0x80, 0xff };
				if (len)
					work[at] = v[rnd() % sizeof(v)];
				break;
			}
			case 3: /* insert */
				if (len < sizeof(work)) {
					memmove(work + at + 1, work + at, len - at);
					work[at] = (uint8_t)rnd();
					len++;
				}
				break;
			case 4: /* delete */
				if (len) {
					memmove(work + at, work + at + 1, len - at - 1);
					len--;
				}
				break;
			case 5: /* truncate */
				len = at;
				break;
			case 6: /* be32 max somewhere (lengths) */
				if (len >= 4) {
					at = (size_t)(rnd() % (len - 3));
					memset(work + at, rnd() & 1 ? 0xff : 0x00, 4);
					work[at + 3] ^= (uint8_t)(rnd() % 3);
				}
				break;
			case 7: /* duplicate a chunk */
			{
				size_t cl = 1 + (size_t)(rnd() % 32);
				if (at + cl <= len && len + cl <= sizeof(work)) {
					memmove(work + at + cl, work + at, len - at);
					len += cl;
				}
				break;
			}
			}
		}
		/* Exact-size copies so ASan sees any access outside. */
		uint8_t *in = malloc(len ? len : 1);
		memcpy(in, work, len);
		struct dev *dst = malloc(sizeof(*dst));
		dev_init(dst);
		char err[96];
		memset(err, 'X', sizeof(err));
		uint32_t ver = rnd() % 16 ? 2 : (uint32_t)(rnd() % 4);
		int r = ferry_vmsd_decode(&cpu_v2, dst, ver, in, len, err, sizeof(err));
		assert_true(memchr(err, '\0', sizeof(err)) != NULL);
		assert_true(dst->guard_lo == GUARD && dst->guard_hi == GUARD);
		if (r == 0) {
			ok++;
			assert_int_equal(dst->post_loads, 1);
		} else {
			failed++;
			assert_true(r == FERRY_EBADSTREAM || r == FERRY_EVERSION);
			assert_true(err[0] != '\0');
			assert_int_equal(dst->post_loads, 0);
		}
		free(dst);
		free(in);
	}
	print_message("fuzz: %u accepted, %u rejected\n", ok, failed);
	assert_true(failed > 0);
	free(seed);
}

/* ------------------------------------------------------------------------ */
/* Validation                                                                */

struct vdev {
	uint8_t a;
	uint16_t b;
	uint32_t c;
	uint64_t d;
	bool e;
	uint8_t f[12];
};

static const ferry_field ok_fields[] = {
	FERRY__FIELD(struct vdev, a, FERRY_FT_U8, 0),
	FERRY__FIELD(struct vdev, b, FERRY_FT_U16, 0),
	FERRY__FIELD(struct vdev, c, FERRY_FT_I32, 0),
	FERRY__FIELD(struct vdev, d, FERRY_FT_I64, 0),
	FERRY__FIELD(struct vdev, e, FERRY_FT_BOOL, 0),
	FERRY__FIELD(struct vdev, f, FERRY_FT_BYTES, 0),
	FERRY_FIELD_END,
};

static int check_table(const ferry_field *fields, uint32_t version, uint32_t min)
{
	ferry_vmsd v = { .name = "dev", .version = version, .min_version = min, .fields = fields };
	return ferry__vmsd_validate(&v);
}

#define F(name, type, size) { name, type, 0, size, 0 }
#define ONE(f) ((const ferry_field[]){ f, FERRY_FIELD_END })

static void test_validate(void **state)
{
	(void)state;
	char long_name[300];
	memset(long_name, 'n', sizeof(long_name));
	long_name[256] = '\0'; /* 256 characters */
	char max_name[256];
	memset(max_name, 'm', sizeof(max_name));
	max_name[255] = '\0'; /* 255 characters */

	/* Good tables. */
	assert_int_equal(ferry__vmsd_validate(&cpu_v2), 0);
	assert_int_equal(ferry__vmsd_validate(&cpu_v1), 0);
	assert_int_equal(ferry__vmsd_validate(&mvmsd), 0);
	assert_int_equal(check_table(ok_fields, 1, 1), 0);
	assert_int_equal(check_table(NULL, 1, 1), 0);
	assert_int_equal(check_table(ONE(F(max_name, FERRY_FT_U8, 1)), 0, 0), 0);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U64_ARRAY, 64)), 0, 0), 0);

	/* vmsd itself. */
	assert_int_equal(ferry__vmsd_validate(NULL), -EINVAL);
	ferry_vmsd v = { .name = NULL, .version = 1, .min_version = 1, .fields = ok_fields };
	assert_int_equal(ferry__vmsd_validate(&v), -EINVAL);
	v.name = "";
	assert_int_equal(ferry__vmsd_validate(&v), -EINVAL);
	v.name = long_name;
	assert_int_equal(ferry__vmsd_validate(&v), -EINVAL);
	v.name = max_name;
	assert_int_equal(ferry__vmsd_validate(&v), 0);
	assert_int_equal(check_table(ok_fields, 1, 2), -EINVAL);

	/* Sizes not matching types. */
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U8, 2)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U16, 1)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U16, 4)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U32, 8)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_I32, 2)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U64, 4)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_I64, 16)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_BOOL, 4)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_BYTES, 0)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U64_ARRAY, 12)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U64_ARRAY, 0)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", (ferry_field_type)42, 1)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_U32, 4)), 1, 1), 0);
	assert_int_equal(check_table(ONE(F("a", FERRY_FT_BYTES, 1)), 1, 1), 0);

	/* Names. */
	assert_int_equal(check_table(ONE(F(NULL, FERRY_FT_U8, 1)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F("", FERRY_FT_U8, 1)), 1, 1), -EINVAL);
	assert_int_equal(check_table(ONE(F(long_name, FERRY_FT_U8, 1)), 1, 1), -EINVAL);
	static const ferry_field dup[] = {
		F("a", FERRY_FT_U8, 1), F("b", FERRY_FT_U8, 1), F("a", FERRY_FT_U16, 2),
		FERRY_FIELD_END,
	};
	assert_int_equal(check_table(dup, 1, 1), -EINVAL);

	/* A field newer than the vmsd. */
	static const ferry_field future[] = {
		{ "a", FERRY_FT_U64, 0, 8, 3 },
		FERRY_FIELD_END,
	};
	assert_int_equal(check_table(future, 2, 1), -EINVAL);
	assert_int_equal(check_table(future, 3, 1), 0);

	/* Offset + size overflowing. */
	assert_int_equal(check_table(ONE(((ferry_field){ "a", FERRY_FT_U64, SIZE_MAX - 3, 8, 0 })), 1, 1),
			 -EINVAL);

	/* Bad subsection tables. */
	static const ferry_field bad_sub_fields[] = { F("a", FERRY_FT_U32, 8), FERRY_FIELD_END };
	static const ferry_vmsd bad_sub = {
		.name = "s", .version = 1, .min_version = 1, .fields = bad_sub_fields,
	};
	static const ferry_vmsd_sub bad_subs[] = { { &bad_sub, NULL }, { NULL } };
	ferry_vmsd p = { .name = "p", .version = 1, .min_version = 1, .fields = ok_fields,
			 .subsections = bad_subs };
	assert_int_equal(ferry__vmsd_validate(&p), -EINVAL);
	static const ferry_vmsd old_sub = { .name = "s", .version = 1, .min_version = 2 };
	static const ferry_vmsd_sub old_subs[] = { { &old_sub, NULL }, { NULL } };
	p.subsections = old_subs;
	assert_int_equal(ferry__vmsd_validate(&p), -EINVAL);
	static const ferry_vmsd good_sub = { .name = "s", .version = 1, .min_version = 1 };
	static const ferry_vmsd_sub dup_subs[] = { { &good_sub, NULL }, { &good_sub, NULL }, { NULL } };
	p.subsections = dup_subs;
	assert_int_equal(ferry__vmsd_validate(&p), -EINVAL);
	static const ferry_vmsd_sub one_sub[] = { { &good_sub, NULL }, { NULL } };
	p.subsections = one_sub;
	assert_int_equal(ferry__vmsd_validate(&p), 0);

	/* A table that contains itself. */
	static ferry_vmsd_sub loop_subs[2];
	static ferry_vmsd loop = { .name = "loop", .version = 1, .min_version = 1,
				   .subsections = loop_subs };
	loop_subs[0].vmsd = &loop;
	assert_int_equal(ferry__vmsd_validate(&loop), -EINVAL);

	/* encode and decode refuse bad tables too. */
	struct vdev vd = { 0 };
	uint8_t buf[64] = { 0 };
	char err[128];
	ferry_vmsd bad = { .name = "bad", .version = 1, .min_version = 1,
			   .fields = ONE(F("a", FERRY_FT_U32, 8)) };
	assert_int_equal(ferry_vmsd_encode(&bad, &vd, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(ferry_vmsd_decode(&bad, &vd, 1, buf, 1, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "bad: invalid device state description");
	assert_int_equal(ferry_vmsd_decode(&loop, &vd, 1, buf, 1, err, sizeof(err)), -EINVAL);
	ferry_vmsd noname = { .name = NULL, .version = 1, .min_version = 1 };
	assert_int_equal(ferry_vmsd_decode(&noname, &vd, 1, buf, 1, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "invalid device state description");
}

/* A 255-character field name goes through. */
static void test_long_names(void **state)
{
	(void)state;
	char name[256];
	memset(name, 'q', 255);
	name[255] = '\0';
	ferry_field fields[] = { { name, FERRY_FT_U32, 0, 4, 0 }, FERRY_FIELD_END };
	ferry_vmsd v = { .name = name, .version = 1, .min_version = 1, .fields = fields };
	uint32_t x = 0x11223344, y = 0;
	uint8_t buf[600];
	int64_t n = ferry_vmsd_encode(&v, &x, buf, sizeof(buf));
	assert_int_equal(n, 1 + 1 + 1 + 255 + 4 + 4 + 1);
	assert_int_equal(buf[2], 255);
	assert_int_equal(ferry_vmsd_decode(&v, &y, 1, buf, (size_t)n, NULL, 0), 0);
	assert_int_equal(y, x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_all_types),
		cmocka_unit_test(test_roundtrip_extremes),
		cmocka_unit_test(test_golden_encoding),
		cmocka_unit_test(test_encode_cap),
		cmocka_unit_test(test_encode_errors),
		cmocka_unit_test(test_subsection_not_needed),
		cmocka_unit_test(test_subsection_needed),
		cmocka_unit_test(test_subsection_deep),
		cmocka_unit_test(test_version_newer_rejected),
		cmocka_unit_test(test_version_older_rejected),
		cmocka_unit_test(test_version_old_stream_keeps_new_field),
		cmocka_unit_test(test_subsection_versions),
		cmocka_unit_test(test_valid_hand_stream),
		cmocka_unit_test(test_field_added_in_version),
		cmocka_unit_test(test_malformed_streams),
		cmocka_unit_test(test_post_load_error),
		cmocka_unit_test(test_post_load_msg),
		cmocka_unit_test(test_err_buffer),
		cmocka_unit_test(test_truncation_every_length),
		cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_long_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
