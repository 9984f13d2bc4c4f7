/* SPDX-License-Identifier: MIT */
/*
 * Zero-page detection (see zero.h).
 *
 * DESIGN: the AVX2 variant is compiled with a target attribute and chosen
 * once at first use with __builtin_cpu_supports, so the library still runs
 * on CPUs without AVX2. Both variants look at 128 bytes per iteration (two
 * cache lines) and OR them together before one test, which keeps the loop
 * at memory speed; the first iteration already rejects almost every
 * non-zero page. Measured in bench/zero (GB/s on zero pages, Mpages/s on
 * random pages).
 */
#include "util/zero.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "ferry/vm.h"

__attribute__((target("avx2"))) static bool is_zero_avx2(const void *p, size_t len)
{
	const __m256i *v = p;
	for (size_t i = 0; i < len / 32; i += 4) {
		__m256i a = _mm256_or_si256(_mm256_loadu_si256(v + i), _mm256_loadu_si256(v + i + 1));
		__m256i b = _mm256_or_si256(_mm256_loadu_si256(v + i + 2),
					    _mm256_loadu_si256(v + i + 3));
		a = _mm256_or_si256(a, b);
		if (!_mm256_testz_si256(a, a))
			return false;
	}
	return true;
}

static bool is_zero_sse2(const void *p, size_t len)
{
	const __m128i *v = p;
	for (size_t i = 0; i < len / 16; i += 8) {
		__m128i a = _mm_or_si128(_mm_loadu_si128(v + i), _mm_loadu_si128(v + i + 1));
		__m128i b = _mm_or_si128(_mm_loadu_si128(v + i + 2), _mm_loadu_si128(v + i + 3));
		__m128i c = _mm_or_si128(_mm_loadu_si128(v + i + 4), _mm_loadu_si128(v + i + 5));
		__m128i d = _mm_or_si128(_mm_loadu_si128(v + i + 6), _mm_loadu_si128(v + i + 7));
		a = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
		if (_mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_setzero_si128())) != 0xffff)
			return false;
	}
	return true;
}

typedef bool (*zero_fn)(const void *, size_t);

static zero_fn pick(void)
{
	/* Benign race: every thread picks the same function. */
	static zero_fn fn;
	zero_fn f = __atomic_load_n(&fn, __ATOMIC_RELAXED);
	if (!f) {
		__builtin_cpu_init();
		f = __builtin_cpu_supports("avx2") ? is_zero_avx2 : is_zero_sse2;
		__atomic_store_n(&fn, f, __ATOMIC_RELAXED);
	}
	return f;
}

bool ferry__page_is_zero(const void *page)
{
	return pick()(page, FERRY_PAGE_SIZE);
}

bool ferry__buf_is_zero(const void *buf, size_t len)
{
	size_t head = len & ~(size_t)127;
	if (head && !pick()(buf, head))
		return false;
	const unsigned char *t = (const unsigned char *)buf + head;
	for (size_t i = 0; i < len - head; i++)
		if (t[i])
			return false;
	return true;
}

const char *ferry__zero_impl(void)
{
	return pick() == is_zero_avx2 ? "avx2" : "sse2";
}
