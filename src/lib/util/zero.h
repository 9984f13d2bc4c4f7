/* SPDX-License-Identifier: MIT */
/*
 * Zero-page detection. ferry__page_is_zero() checks one FERRY_PAGE_SIZE page
 * with the widest vector unit the CPU has (AVX2, else SSE2), exiting early
 * on the first non-zero 128 bytes: a random page is rejected after reading
 * one cache line pair, a zero page costs one pass at memory bandwidth.
 * Thread: any.
 */
#ifndef FERRY_UTIL_ZERO_H
#define FERRY_UTIL_ZERO_H

#include <stdbool.h>
#include <stddef.h>

bool ferry__page_is_zero(const void *page);
/* Same for a buffer of any length (vector loop, then a byte tail). */
bool ferry__buf_is_zero(const void *buf, size_t len);
/*
 * Callers walking many pages prefetch the page FERRY_ZERO_PREFETCH pages
 * ahead: the hardware prefetchers stop at page boundaries, so without it
 * every random page is one full memory latency. bench-zero measures both
 * (random_pages_mpps, random_pages_prefetch_mpps).
 */
#define FERRY_ZERO_PREFETCH 4
static inline void ferry__page_prefetch(const void *page)
{
	__builtin_prefetch(page);
	__builtin_prefetch((const char *)page + 64);
}
/* Which implementation ferry__page_is_zero() uses ("avx2", "sse2"). */
const char *ferry__zero_impl(void);

#endif
