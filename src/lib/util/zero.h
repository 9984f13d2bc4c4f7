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
/* Which implementation ferry__page_is_zero() uses ("avx2", "sse2"). */
const char *ferry__zero_impl(void);

#endif
