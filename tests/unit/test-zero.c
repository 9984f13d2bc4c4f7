/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for zero-page detection (src/lib/util/zero.c): a zero page, a
 * single non-zero byte at every one of the 4096 positions, unaligned
 * buffers, and ferry__buf_is_zero() with lengths that are not a multiple of
 * 128. Buffers end right before a PROT_NONE guard page, so a read past the
 * end crashes even without ASan.
 *
 * The library picks AVX2 when the CPU has it, so the SSE2 fallback would go
 * untested on most machines: this file compiles a second copy of zero.c
 * with CPU detection forced to "no AVX2" and its entry points renamed, and
 * runs the same tests against both.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "ferry.h"
#include "util/zero.h"

/* The SSE2-only copy (see above); util/zero.h is already included. */
#define ferry__page_is_zero sse2_page_is_zero
#define ferry__buf_is_zero sse2_buf_is_zero
#define ferry__zero_impl sse2_zero_impl
#define __builtin_cpu_supports(feature) 0
#include "util/zero.c"
#undef ferry__page_is_zero
#undef ferry__buf_is_zero
#undef ferry__zero_impl
#undef __builtin_cpu_supports

struct impl {
	const char *name;
	bool (*page_is_zero)(const void *page);
	bool (*buf_is_zero)(const void *buf, size_t len);
};

static struct impl lib_impl = { "library", ferry__page_is_zero, ferry__buf_is_zero };
static struct impl sse2_impl = { "sse2", sse2_page_is_zero, sse2_buf_is_zero };

#define PS FERRY_PAGE_SIZE

/* n readable pages followed by one PROT_NONE page. */
struct region {
	uint8_t *base;
	size_t n;
};

static uint8_t *region_map(struct region *r, size_t n)
{
	r->n = n;
	void *p = mmap(NULL, (n + 1) * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	assert_true(p != MAP_FAILED);
	r->base = p;
	assert_int_equal(mprotect(r->base + n * PS, PS, PROT_NONE), 0);
	return r->base;
}

/* First byte past the readable pages. */
static uint8_t *region_end(const struct region *r)
{
	return r->base + r->n * PS;
}

static void region_unmap(struct region *r)
{
	munmap(r->base, (r->n + 1) * PS);
}

static void test_impl_name(void **state)
{
	(void)state;
	const char *impl = ferry__zero_impl();
	assert_non_null(impl);
	assert_true(!strcmp(impl, "avx2") || !strcmp(impl, "sse2"));
	/* Stable across calls. */
	assert_string_equal(ferry__zero_impl(), impl);
	assert_string_equal(sse2_zero_impl(), "sse2");
	print_message("library implementation: %s\n", impl);
}

static void test_zero_page(void **state)
{
	const struct impl *im = *state;
	struct region r;
	uint8_t *page = region_map(&r, 1);
	assert_true(im->page_is_zero(page));
	assert_true(im->buf_is_zero(page, PS));
	region_unmap(&r);

	/* Heap memory too (ASan sees it exactly). */
	uint8_t *h = calloc(1, PS);
	assert_true(im->page_is_zero(h));
	free(h);
}

static void test_every_position(void **state)
{
	const struct impl *im = *state;
	static const uint8_t vals[] = { 0x01, 0x80, 0xff, 0x10 };
	struct region r;
	uint8_t *page = region_map(&r, 1);
	for (size_t i = 0; i < PS; i++) {
		page[i] = vals[i % sizeof(vals)];
		if (im->page_is_zero(page))
			fail_msg("%s: byte %zu = 0x%02x not detected", im->name, i, page[i]);
		if (im->buf_is_zero(page, PS))
			fail_msg("%s: buf_is_zero: byte %zu = 0x%02x not detected", im->name, i, page[i]);
		page[i] = 0;
	}
	assert_true(im->page_is_zero(page));
	/* Every single bit of the last and first 128 bytes. */
	for (size_t i = 0; i < 128; i++) {
		for (int b = 0; b < 8; b++) {
			page[i] = (uint8_t)(1u << b);
			assert_false(im->page_is_zero(page));
			page[i] = 0;
			page[PS - 1 - i] = (uint8_t)(1u << b);
			assert_false(im->page_is_zero(page));
			page[PS - 1 - i] = 0;
		}
	}
	region_unmap(&r);
}

/* Pages at every offset 0..127 from page alignment, zero and not. */
static void test_unaligned(void **state)
{
	const struct impl *im = *state;
	struct region r;
	uint8_t *base = region_map(&r, 2);
	for (size_t off = 0; off < 128; off++) {
		/* Ends exactly at the guard page when off == 0. */
		uint8_t *page = region_end(&r) - PS - off;
		assert_true(im->page_is_zero(page));
		static const size_t pos[] = { 0, 1, 15, 16, 31, 32, 63, 64, 127, 128,
					      2047, 2048, 4000, 4064, 4094, 4095 };
		for (size_t k = 0; k < sizeof(pos) / sizeof(pos[0]); k++) {
			page[pos[k]] = 0x42;
			if (im->page_is_zero(page))
				fail_msg("%s: offset %zu: byte %zu not detected", im->name, off, pos[k]);
			page[pos[k]] = 0;
		}
		/* Non-zero bytes just outside the page do not count. */
		if (off)
			page[PS] = 0xff;
		if (page > base)
			page[-1] = 0xff;
		assert_true(im->page_is_zero(page));
		if (off)
			page[PS] = 0;
		if (page > base)
			page[-1] = 0;
	}
	region_unmap(&r);

	/* Heap buffers at odd offsets, exact size for ASan. */
	for (size_t off = 1; off < 64; off += 7) {
		uint8_t *h = calloc(1, PS + off);
		assert_true(im->page_is_zero(h + off));
		h[off + PS - 1] = 1;
		assert_false(im->page_is_zero(h + off));
		free(h);
	}
}

/* Lengths 0..1100, each ending at the guard page (so any alignment). */
static void test_buf_lengths(void **state)
{
	const struct impl *im = *state;
	struct region r;
	region_map(&r, 1);
	for (size_t len = 0; len <= 1100; len++) {
		uint8_t *buf = region_end(&r) - len;
		if (!im->buf_is_zero(buf, len))
			fail_msg("%s: len %zu: zero buffer reported non-zero", im->name, len);
		/* A non-zero byte just before the buffer is not part of it. */
		if (len < PS) {
			buf[-1] = 0xff;
			assert_true(im->buf_is_zero(buf, len));
			buf[-1] = 0;
		}
		for (size_t i = 0; i < len; i++) {
			buf[i] = (uint8_t)(1u << (i % 8));
			if (im->buf_is_zero(buf, len))
				fail_msg("%s: len %zu: byte %zu not detected", im->name, len, i);
			buf[i] = 0;
		}
	}
	region_unmap(&r);
}

/* Long buffers with tails, at aligned and unaligned starts. */
static void test_buf_long(void **state)
{
	const struct impl *im = *state;
	struct region r;
	region_map(&r, 64);
	static const size_t lens[] = { PS - 1, PS + 1, PS + 127, 3 * PS + 77, 63 * PS + 129,
				       64 * PS - 1, 64 * PS };
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		for (int aligned = 0; aligned < 2; aligned++) {
			size_t len = lens[k];
			uint8_t *buf = aligned ? r.base : region_end(&r) - len;
			assert_true(im->buf_is_zero(buf, len));
			size_t head = len & ~(size_t)127;
			const size_t pos[] = { 0, 1, 127, 128, head ? head - 1 : 0, head,
					       len - 1, len / 2 };
			for (size_t j = 0; j < sizeof(pos) / sizeof(pos[0]); j++) {
				if (pos[j] >= len)
					continue;
				buf[pos[j]] = 0x80;
				if (im->buf_is_zero(buf, len))
					fail_msg("%s: len %zu: byte %zu not detected", im->name, len, pos[j]);
				buf[pos[j]] = 0;
			}
		}
	}
	assert_true(im->buf_is_zero(NULL, 0));
	region_unmap(&r);
}

int main(void)
{
#define BOTH(f)                                            \
	{ #f "/library", f, NULL, NULL, &lib_impl }, \
	{ #f "/sse2", f, NULL, NULL, &sse2_impl }
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_impl_name),
		BOTH(test_zero_page),
		BOTH(test_every_position),
		BOTH(test_unaligned),
		BOTH(test_buf_lengths),
		BOTH(test_buf_long),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
