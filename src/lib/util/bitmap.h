/* SPDX-License-Identifier: MIT */
/*
 * Bitmaps of unsigned long words, one bit per page, as the dirty and received
 * bitmaps use them.
 *
 * DESIGN: plain (non-atomic) helpers for bitmaps owned by one thread (the
 * migration thread's dirty bitmap), and three atomic helpers for the explicit
 * dirty log that vCPU threads write while the migration thread drains it.
 * Bits beyond nbits in the last word are kept zero by every helper, so
 * counting and searching never look past the end.
 */
#ifndef FERRY_UTIL_BITMAP_H
#define FERRY_UTIL_BITMAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define FERRY_BITS_PER_LONG (8 * sizeof(unsigned long))
#define FERRY_BITMAP_LONGS(n) (((n) + FERRY_BITS_PER_LONG - 1) / FERRY_BITS_PER_LONG)

static inline unsigned long *ferry__bitmap_new(uint64_t nbits)
{
	return calloc(FERRY_BITMAP_LONGS(nbits) ? FERRY_BITMAP_LONGS(nbits) : 1,
		      sizeof(unsigned long));
}

static inline bool ferry__bitmap_test(const unsigned long *map, uint64_t bit)
{
	return (map[bit / FERRY_BITS_PER_LONG] >> (bit % FERRY_BITS_PER_LONG)) & 1;
}

/* Reads a bit of a map whose other bits other threads may set atomically. */
static inline bool ferry__bitmap_test_atomic(const unsigned long *map, uint64_t bit)
{
	unsigned long w = __atomic_load_n(&map[bit / FERRY_BITS_PER_LONG], __ATOMIC_RELAXED);
	return (w >> (bit % FERRY_BITS_PER_LONG)) & 1;
}

static inline void ferry__bitmap_set(unsigned long *map, uint64_t bit)
{
	map[bit / FERRY_BITS_PER_LONG] |= 1UL << (bit % FERRY_BITS_PER_LONG);
}

static inline void ferry__bitmap_clear(unsigned long *map, uint64_t bit)
{
	map[bit / FERRY_BITS_PER_LONG] &= ~(1UL << (bit % FERRY_BITS_PER_LONG));
}

/* Sets bits [start, start + n). */
void ferry__bitmap_set_range(unsigned long *map, uint64_t start, uint64_t n);
/* Clears bits [start, start + n). */
void ferry__bitmap_clear_range(unsigned long *map, uint64_t start, uint64_t n);
/* Number of set bits among the first nbits. */
uint64_t ferry__bitmap_count(const unsigned long *map, uint64_t nbits);
/* First set bit >= start, or nbits if none. */
uint64_t ferry__bitmap_next_set(const unsigned long *map, uint64_t nbits, uint64_t start);
/* First clear bit >= start, or nbits if none. */
uint64_t ferry__bitmap_next_clear(const unsigned long *map, uint64_t nbits, uint64_t start);
/* dst |= src over nbits; returns how many bits were newly set in dst. */
uint64_t ferry__bitmap_or(unsigned long *dst, const unsigned long *src, uint64_t nbits);
void ferry__bitmap_zero(unsigned long *map, uint64_t nbits);
void ferry__bitmap_fill(unsigned long *map, uint64_t nbits);

/*
 * Atomic set of bits [start, start + n) for writers on other threads. The
 * release ordering makes the caller's earlier data writes visible before the
 * bit; it pairs with the acquire in ferry__bitmap_drain_atomic().
 */
void ferry__bitmap_set_range_atomic(_Atomic unsigned long *map, uint64_t start,
				    uint64_t n);
/*
 * Atomically takes every set bit of src (leaving it zero) and ORs it into
 * dst; returns how many bits were newly set in dst.
 */
uint64_t ferry__bitmap_drain_atomic(unsigned long *dst, _Atomic unsigned long *src,
				    uint64_t nbits);
/*
 * How many bits of src are set now, leaving them (relaxed loads: a count,
 * nothing read after it relies on it).
 */
uint64_t ferry__bitmap_count_atomic(_Atomic unsigned long *src, uint64_t nbits);

#endif /* FERRY_UTIL_BITMAP_H */
