/* SPDX-License-Identifier: MIT */
/*
 * Bitmap helpers (see bitmap.h). Word-at-a-time loops; ranges handle partial
 * first and last words with masks.
 */
#include "util/bitmap.h"

#include <string.h>

#define BPL FERRY_BITS_PER_LONG

static inline unsigned long first_mask(uint64_t start)
{
	return ~0UL << (start % BPL);
}

static inline unsigned long last_mask(uint64_t end)
{
	/* Mask of the bits below end within its word; end % BPL == 0 means all. */
	unsigned r = end % BPL;
	return r ? ~0UL >> (BPL - r) : ~0UL;
}

void ferry__bitmap_set_range(unsigned long *map, uint64_t start, uint64_t n)
{
	if (!n)
		return;
	uint64_t end = start + n;
	uint64_t w = start / BPL, we = (end - 1) / BPL;
	if (w == we) {
		map[w] |= first_mask(start) & last_mask(end);
		return;
	}
	map[w++] |= first_mask(start);
	while (w < we)
		map[w++] = ~0UL;
	map[we] |= last_mask(end);
}

void ferry__bitmap_clear_range(unsigned long *map, uint64_t start, uint64_t n)
{
	if (!n)
		return;
	uint64_t end = start + n;
	uint64_t w = start / BPL, we = (end - 1) / BPL;
	if (w == we) {
		map[w] &= ~(first_mask(start) & last_mask(end));
		return;
	}
	map[w++] &= ~first_mask(start);
	while (w < we)
		map[w++] = 0;
	map[we] &= ~last_mask(end);
}

uint64_t ferry__bitmap_count(const unsigned long *map, uint64_t nbits)
{
	uint64_t c = 0, full = nbits / BPL;
	for (uint64_t i = 0; i < full; i++)
		c += (uint64_t)__builtin_popcountl(map[i]);
	if (nbits % BPL)
		c += (uint64_t)__builtin_popcountl(map[full] & last_mask(nbits));
	return c;
}

uint64_t ferry__bitmap_next_set(const unsigned long *map, uint64_t nbits, uint64_t start)
{
	if (start >= nbits)
		return nbits;
	uint64_t w = start / BPL;
	unsigned long word = map[w] & first_mask(start);
	uint64_t nw = FERRY_BITMAP_LONGS(nbits);
	for (;;) {
		if (word) {
			uint64_t bit = w * BPL + (uint64_t)__builtin_ctzl(word);
			return bit < nbits ? bit : nbits;
		}
		if (++w >= nw)
			return nbits;
		word = map[w];
	}
}

uint64_t ferry__bitmap_next_clear(const unsigned long *map, uint64_t nbits, uint64_t start)
{
	if (start >= nbits)
		return nbits;
	uint64_t w = start / BPL;
	unsigned long word = ~map[w] & first_mask(start);
	uint64_t nw = FERRY_BITMAP_LONGS(nbits);
	for (;;) {
		if (word) {
			uint64_t bit = w * BPL + (uint64_t)__builtin_ctzl(word);
			return bit < nbits ? bit : nbits;
		}
		if (++w >= nw)
			return nbits;
		word = ~map[w];
	}
}

uint64_t ferry__bitmap_or(unsigned long *dst, const unsigned long *src, uint64_t nbits)
{
	uint64_t nw = FERRY_BITMAP_LONGS(nbits), added = 0;
	for (uint64_t i = 0; i < nw; i++) {
		unsigned long s = src[i];
		if (i == nw - 1)
			s &= last_mask(nbits);
		added += (uint64_t)__builtin_popcountl(s & ~dst[i]);
		dst[i] |= s;
	}
	return added;
}

void ferry__bitmap_zero(unsigned long *map, uint64_t nbits)
{
	memset(map, 0, FERRY_BITMAP_LONGS(nbits) * sizeof(unsigned long));
}

void ferry__bitmap_fill(unsigned long *map, uint64_t nbits)
{
	ferry__bitmap_zero(map, nbits);
	ferry__bitmap_set_range(map, 0, nbits);
}

void ferry__bitmap_set_range_atomic(_Atomic unsigned long *map, uint64_t start,
				    uint64_t n)
{
	if (!n)
		return;
	uint64_t end = start + n;
	for (uint64_t w = start / BPL; w <= (end - 1) / BPL; w++) {
		unsigned long m = ~0UL;
		if (w == start / BPL)
			m &= first_mask(start);
		if (w == (end - 1) / BPL)
			m &= last_mask(end);
		/*
		 * Release: the guest's data writes to these pages happen before
		 * the bit is seen; pairs with the acquire exchange in
		 * ferry__bitmap_drain_atomic(), after which the migration thread
		 * reads the page. ("Data written is seen before the log.")
		 */
		atomic_fetch_or_explicit(&map[w], m, memory_order_release);
	}
}

uint64_t ferry__bitmap_count_atomic(_Atomic unsigned long *src, uint64_t nbits)
{
	uint64_t nw = FERRY_BITMAP_LONGS(nbits), c = 0;
	for (uint64_t i = 0; i < nw; i++) /* bits past nbits are never set */
		c += (uint64_t)__builtin_popcountl(atomic_load_explicit(&src[i], memory_order_relaxed));
	return c;
}

uint64_t ferry__bitmap_drain_atomic(unsigned long *dst, _Atomic unsigned long *src,
				    uint64_t nbits)
{
	uint64_t nw = FERRY_BITMAP_LONGS(nbits), added = 0;
	for (uint64_t i = 0; i < nw; i++) {
		/* Cheap relaxed peek first: most words are clean. */
		if (!atomic_load_explicit(&src[i], memory_order_relaxed))
			continue;
		/*
		 * Acquire: pairs with the release in set_range_atomic, so page
		 * data written before the bit was set is visible when the page
		 * is read after this drain.
		 */
		unsigned long s = atomic_exchange_explicit(&src[i], 0, memory_order_acquire);
		added += (uint64_t)__builtin_popcountl(s & ~dst[i]);
		dst[i] |= s;
	}
	return added;
}
