/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for src/lib/util/bitmap.c, against a naive bool-array model:
 * every range of small bitmaps whose sizes straddle word boundaries, count,
 * next_set/next_clear from every start (nbits not a multiple of 64), or,
 * zero/fill, the atomic set and drain, and a concurrent set/drain run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "util/bitmap.h"

#define BPL FERRY_BITS_PER_LONG
#define MAXBITS 300

/* Sizes around word boundaries. */
static const uint64_t sizes[] = { 1, 2, 7, 63, 64, 65, 100, 127, 128, 129, 191, 192, 193, 257 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

/* Words a bitmap of nbits occupies. */
static size_t words(uint64_t nbits)
{
	return FERRY_BITMAP_LONGS(nbits);
}

/* map equals the model over nbits, and bits beyond nbits are zero. */
static void check_equal(const unsigned long *map, const bool *m, uint64_t nbits,
			const char *what, uint64_t a, uint64_t b)
{
	for (uint64_t i = 0; i < nbits; i++)
		if (ferry__bitmap_test(map, i) != m[i])
			fail_msg("%s(%llu, %llu) nbits %llu: bit %llu is %d, model %d", what,
				 (unsigned long long)a, (unsigned long long)b,
				 (unsigned long long)nbits, (unsigned long long)i,
				 ferry__bitmap_test(map, i), m[i]);
	for (uint64_t i = nbits; i < words(nbits) * BPL; i++)
		if (ferry__bitmap_test(map, i))
			fail_msg("%s(%llu, %llu) nbits %llu: bit %llu beyond nbits set", what,
				 (unsigned long long)a, (unsigned long long)b,
				 (unsigned long long)nbits, (unsigned long long)i);
}

enum pattern { P_ZERO, P_ONES, P_RANDOM, NPATTERNS };

static void fill_pattern(unsigned long *map, bool *m, uint64_t nbits, enum pattern p)
{
	ferry__bitmap_zero(map, nbits);
	for (uint64_t i = 0; i < nbits; i++) {
		bool v = p == P_ONES || (p == P_RANDOM && (rnd() & 1));
		if (v)
			ferry__bitmap_set(map, i);
		m[i] = v;
	}
}

static void test_new_and_single_bits(void **state)
{
	(void)state;
	unsigned long *z = ferry__bitmap_new(0);
	assert_non_null(z);
	free(z);
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		unsigned long *map = ferry__bitmap_new(nbits);
		assert_non_null(map);
		for (size_t w = 0; w < words(nbits); w++)
			assert_true(map[w] == 0);
		for (uint64_t i = 0; i < nbits; i++) {
			ferry__bitmap_set(map, i);
			assert_true(ferry__bitmap_test(map, i));
			assert_int_equal(ferry__bitmap_count(map, nbits), 1);
			assert_int_equal(ferry__bitmap_next_set(map, nbits, 0), i);
			ferry__bitmap_clear(map, i);
			assert_false(ferry__bitmap_test(map, i));
			assert_int_equal(ferry__bitmap_count(map, nbits), 0);
		}
		free(map);
	}
}

typedef void (*range_fn)(unsigned long *map, uint64_t start, uint64_t n);

static void set_range_atomic(unsigned long *map, uint64_t start, uint64_t n)
{
	ferry__bitmap_set_range_atomic((_Atomic unsigned long *)map, start, n);
}

/* Every (start, n) with start + n <= nbits, from every pattern. */
static void exhaustive_ranges(range_fn fn, bool value, const char *what)
{
	unsigned long map[FERRY_BITMAP_LONGS(MAXBITS) + 1];
	bool m[MAXBITS];
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		size_t nw = words(nbits);
		for (uint64_t start = 0; start <= nbits; start++) {
			for (uint64_t n = 0; start + n <= nbits; n++) {
				for (int p = 0; p < NPATTERNS; p++) {
					map[nw] = 0x5a5a5a5aul; /* guard word */
					fill_pattern(map, m, nbits, (enum pattern)p);
					fn(map, start, n);
					for (uint64_t i = start; i < start + n; i++)
						m[i] = value;
					check_equal(map, m, nbits, what, start, n);
					assert_true(map[nw] == 0x5a5a5a5aul);
				}
			}
		}
	}
}

static void test_set_range(void **state)
{
	(void)state;
	exhaustive_ranges(ferry__bitmap_set_range, true, "set_range");
}

static void test_clear_range(void **state)
{
	(void)state;
	exhaustive_ranges(ferry__bitmap_clear_range, false, "clear_range");
}

static void test_set_range_atomic(void **state)
{
	(void)state;
	exhaustive_ranges(set_range_atomic, true, "set_range_atomic");
}

/* Ranges over many words, far from the start of the map. */
static void test_large_ranges(void **state)
{
	(void)state;
	const uint64_t nbits = 64 * 1000 + 37;
	unsigned long *map = ferry__bitmap_new(nbits);
	bool *m = calloc(nbits, sizeof(bool));
	for (int it = 0; it < 2000; it++) {
		uint64_t start = rnd() % nbits;
		uint64_t n = rnd() % (nbits - start + 1);
		bool set = rnd() & 1;
		if (set)
			ferry__bitmap_set_range(map, start, n);
		else
			ferry__bitmap_clear_range(map, start, n);
		for (uint64_t i = start; i < start + n; i++)
			m[i] = set;
		if (it % 100 == 0) {
			check_equal(map, m, nbits, set ? "set_range" : "clear_range", start, n);
			uint64_t c = 0;
			for (uint64_t i = 0; i < nbits; i++)
				c += m[i];
			assert_int_equal(ferry__bitmap_count(map, nbits), c);
		}
	}
	free(m);
	free(map);
}

static void test_count(void **state)
{
	(void)state;
	unsigned long map[FERRY_BITMAP_LONGS(MAXBITS)];
	bool m[MAXBITS];
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		for (int p = 0; p < NPATTERNS; p++) {
			fill_pattern(map, m, nbits, (enum pattern)p);
			/* Every prefix: bits at and past k are not counted. */
			uint64_t c = 0;
			for (uint64_t k = 0; k <= nbits; k++) {
				assert_int_equal(ferry__bitmap_count(map, k), c);
				if (k < nbits)
					c += m[k];
			}
		}
	}
}

static uint64_t model_next(const bool *m, uint64_t nbits, uint64_t start, bool v)
{
	for (uint64_t i = start; i < nbits; i++)
		if (m[i] == v)
			return i;
	return nbits;
}

static void test_next_set_clear(void **state)
{
	(void)state;
	unsigned long map[FERRY_BITMAP_LONGS(MAXBITS)];
	bool m[MAXBITS];
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		for (int p = 0; p < NPATTERNS + 4; p++) {
			if (p < NPATTERNS) {
				fill_pattern(map, m, nbits, (enum pattern)p);
			} else {
				/* Sparse: few bits, often none near the end. */
				fill_pattern(map, m, nbits, P_ZERO);
				for (int k = 0; k < p - NPATTERNS; k++) {
					uint64_t b = rnd() % nbits;
					ferry__bitmap_set(map, b);
					m[b] = true;
				}
			}
			for (uint64_t start = 0; start <= nbits + 70; start++) {
				uint64_t st = start < nbits ? model_next(m, nbits, start, true) : nbits;
				uint64_t cl = start < nbits ? model_next(m, nbits, start, false) : nbits;
				assert_int_equal(ferry__bitmap_next_set(map, nbits, start), st);
				assert_int_equal(ferry__bitmap_next_clear(map, nbits, start), cl);
			}
		}
	}
}

/* The last bit and the bits just past nbits. */
static void test_next_at_boundaries(void **state)
{
	(void)state;
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		unsigned long *map = ferry__bitmap_new(nbits);
		ferry__bitmap_fill(map, nbits);
		/* All ones: no clear bit, even though the last word's tail is 0. */
		assert_int_equal(ferry__bitmap_next_clear(map, nbits, 0), nbits);
		assert_int_equal(ferry__bitmap_next_clear(map, nbits, nbits - 1), nbits);
		assert_int_equal(ferry__bitmap_next_set(map, nbits, nbits - 1), nbits - 1);
		assert_int_equal(ferry__bitmap_next_set(map, nbits, nbits), nbits);
		assert_int_equal(ferry__bitmap_count(map, nbits), nbits);
		ferry__bitmap_clear(map, nbits - 1);
		assert_int_equal(ferry__bitmap_next_clear(map, nbits, 0), nbits - 1);
		ferry__bitmap_zero(map, nbits);
		assert_int_equal(ferry__bitmap_next_set(map, nbits, 0), nbits);
		ferry__bitmap_set(map, nbits - 1);
		assert_int_equal(ferry__bitmap_next_set(map, nbits, 0), nbits - 1);
		assert_int_equal(ferry__bitmap_next_clear(map, nbits, nbits - 1), nbits);
		free(map);
	}
}

/* Stray bits past nbits in the last word are never reported or counted. */
static void test_tail_bits_ignored(void **state)
{
	(void)state;
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		if (nbits % BPL == 0)
			continue;
		unsigned long map[FERRY_BITMAP_LONGS(MAXBITS)] = { 0 };
		unsigned long dst[FERRY_BITMAP_LONGS(MAXBITS)] = { 0 };
		size_t nw = words(nbits);
		unsigned r = (unsigned)(nbits % BPL);
		map[nw - 1] = ~0UL << r; /* only tail bits */
		assert_int_equal(ferry__bitmap_count(map, nbits), 0);
		assert_int_equal(ferry__bitmap_next_set(map, nbits, 0), nbits);
		assert_int_equal(ferry__bitmap_or(dst, map, nbits), 0);
		assert_true(dst[nw - 1] == 0);
		if (r + 1 < BPL) {
			/* Tail bits starting past bit nbits: still not found. */
			map[nw - 1] = ~0UL << (r + 1);
			assert_int_equal(ferry__bitmap_next_set(map, nbits, 0), nbits);
			/* All nbits set, tail with a hole past nbits. */
			ferry__bitmap_fill(map, nbits);
			map[nw - 1] |= ~0UL << r;
			map[nw - 1] &= ~(1UL << (r + 1));
			assert_int_equal(ferry__bitmap_next_clear(map, nbits, 0), nbits);
			assert_int_equal(ferry__bitmap_count(map, nbits), nbits);
		}
	}
}

static void test_zero_fill(void **state)
{
	(void)state;
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		size_t nw = words(nbits);
		unsigned long map[FERRY_BITMAP_LONGS(MAXBITS) + 1];
		map[nw] = 0x77;
		memset(map, 0xa5, nw * sizeof(unsigned long));
		ferry__bitmap_fill(map, nbits);
		bool m[MAXBITS];
		for (uint64_t i = 0; i < nbits; i++)
			m[i] = true;
		check_equal(map, m, nbits, "fill", 0, nbits);
		ferry__bitmap_zero(map, nbits);
		for (size_t w = 0; w < nw; w++)
			assert_true(map[w] == 0);
		assert_true(map[nw] == 0x77);
	}
}

static void test_or(void **state)
{
	(void)state;
	unsigned long dst[FERRY_BITMAP_LONGS(MAXBITS)], src[FERRY_BITMAP_LONGS(MAXBITS)];
	bool md[MAXBITS], ms[MAXBITS];
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		for (int pd = 0; pd < NPATTERNS; pd++) {
			for (int ps = 0; ps < NPATTERNS; ps++) {
				fill_pattern(dst, md, nbits, (enum pattern)pd);
				fill_pattern(src, ms, nbits, (enum pattern)ps);
				uint64_t added = 0;
				for (uint64_t i = 0; i < nbits; i++) {
					added += ms[i] && !md[i];
					md[i] = md[i] || ms[i];
				}
				unsigned long src_copy[FERRY_BITMAP_LONGS(MAXBITS)];
				memcpy(src_copy, src, sizeof(src));
				assert_int_equal(ferry__bitmap_or(dst, src, nbits), added);
				check_equal(dst, md, nbits, "or", (uint64_t)pd, (uint64_t)ps);
				assert_memory_equal(src, src_copy, words(nbits) * sizeof(unsigned long));
			}
		}
	}
	/* nbits 0 touches nothing. */
	dst[0] = 0;
	src[0] = ~0UL;
	assert_int_equal(ferry__bitmap_or(dst, src, 0), 0);
	assert_true(dst[0] == 0);
}

static void test_drain_atomic(void **state)
{
	(void)state;
	unsigned long dst[FERRY_BITMAP_LONGS(MAXBITS)];
	_Atomic unsigned long src[FERRY_BITMAP_LONGS(MAXBITS)];
	bool md[MAXBITS], ms[MAXBITS];
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t nbits = sizes[s];
		for (int pd = 0; pd < NPATTERNS; pd++) {
			for (int ps = 0; ps < NPATTERNS; ps++) {
				unsigned long tmp[FERRY_BITMAP_LONGS(MAXBITS)];
				fill_pattern(dst, md, nbits, (enum pattern)pd);
				fill_pattern(tmp, ms, nbits, (enum pattern)ps);
				for (size_t w = 0; w < words(nbits); w++)
					atomic_store(&src[w], tmp[w]);
				uint64_t added = 0, set = 0;
				for (uint64_t i = 0; i < nbits; i++) {
					added += ms[i] && !md[i];
					set += ms[i];
					md[i] = md[i] || ms[i];
				}
				/* Counting takes nothing: twice the same, then the drain sees it all. */
				assert_int_equal(ferry__bitmap_count_atomic(src, nbits), set);
				assert_int_equal(ferry__bitmap_count_atomic(src, nbits), set);
				assert_int_equal(ferry__bitmap_drain_atomic(dst, src, nbits), added);
				check_equal(dst, md, nbits, "drain_atomic", (uint64_t)pd, (uint64_t)ps);
				for (size_t w = 0; w < words(nbits); w++)
					assert_true(atomic_load(&src[w]) == 0);
				/* A second drain finds nothing. */
				assert_int_equal(ferry__bitmap_drain_atomic(dst, src, nbits), 0);
				check_equal(dst, md, nbits, "drain_atomic", (uint64_t)pd, (uint64_t)ps);
			}
		}
	}
}

/*
 * Writers publish data[i] then set bit i (release); the drainer collects
 * the bits (acquire) and must see the data of every bit it gets. At the
 * end every bit was drained exactly once.
 */
#define CNBITS (64 * 64 + 13)
#define NWRITERS 4

struct conc {
	_Atomic unsigned long log[FERRY_BITMAP_LONGS(CNBITS)];
	unsigned data[CNBITS]; /* plain writes, published by the bit */
	atomic_int done;
};

static void *writer(void *arg)
{
	struct conc *c = arg;
	static atomic_int next_id;
	int id = atomic_fetch_add(&next_id, 1) % NWRITERS;
	/* Writer id owns bits with (bit / 3) % NWRITERS == id, in runs of 3. */
	for (uint64_t b = (uint64_t)id * 3; b < CNBITS; b += 3 * NWRITERS) {
		uint64_t n = CNBITS - b < 3 ? CNBITS - b : 3;
		for (uint64_t i = b; i < b + n; i++)
			c->data[i] = (unsigned)i + 1;
		ferry__bitmap_set_range_atomic(c->log, b, n);
	}
	atomic_fetch_add(&c->done, 1);
	return NULL;
}

static void test_concurrent_drain(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		struct conc *c = calloc(1, sizeof(*c));
		unsigned long *dst = ferry__bitmap_new(CNBITS);
		pthread_t th[NWRITERS];
		for (int i = 0; i < NWRITERS; i++)
			assert_int_equal(pthread_create(&th[i], NULL, writer, c), 0);
		uint64_t total = 0;
		unsigned long *fresh = ferry__bitmap_new(CNBITS);
		for (;;) {
			int finished = atomic_load(&c->done) == NWRITERS;
			ferry__bitmap_zero(fresh, CNBITS);
			uint64_t got = ferry__bitmap_drain_atomic(fresh, c->log, CNBITS);
			for (uint64_t b = ferry__bitmap_next_set(fresh, CNBITS, 0); b < CNBITS;
			     b = ferry__bitmap_next_set(fresh, CNBITS, b + 1)) {
				/* Reading data is ordered after the acquire in drain. */
				unsigned v = __atomic_load_n(&c->data[b], __ATOMIC_RELAXED);
				if (v != b + 1)
					fail_msg("bit %llu drained before its data", (unsigned long long)b);
			}
			total += ferry__bitmap_or(dst, fresh, CNBITS);
			assert_int_equal(got, ferry__bitmap_count(fresh, CNBITS));
			if (finished)
				break;
		}
		for (int i = 0; i < NWRITERS; i++)
			pthread_join(th[i], NULL);
		assert_int_equal(ferry__bitmap_drain_atomic(dst, c->log, CNBITS), 0);
		assert_int_equal(total, CNBITS);
		assert_int_equal(ferry__bitmap_count(dst, CNBITS), CNBITS);
		free(fresh);
		free(dst);
		free(c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_and_single_bits),
		cmocka_unit_test(test_set_range),
		cmocka_unit_test(test_clear_range),
		cmocka_unit_test(test_set_range_atomic),
		cmocka_unit_test(test_large_ranges),
		cmocka_unit_test(test_count),
		cmocka_unit_test(test_next_set_clear),
		cmocka_unit_test(test_next_at_boundaries),
		cmocka_unit_test(test_tail_bits_ignored),
		cmocka_unit_test(test_zero_fill),
		cmocka_unit_test(test_or),
		cmocka_unit_test(test_drain_atomic),
		cmocka_unit_test(test_concurrent_drain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
