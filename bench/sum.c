/* SPDX-License-Identifier: MIT */
/*
 * What the stream's page checksums (x-checksum, stream/sum.h) cost per GiB
 * of guest RAM, where a migration computes them. Prints one JSON object:
 *
 *   {"pages": N, "copy_ms_per_gib": ..., "sum_cold_ms_per_gib": ...,
 *    "sum_after_copy_ms_per_gib": ..., "sum_before_copy_ms_per_gib": ...,
 *    "sum_cold_gbps": ..., "sum_hot_gbps": ...}
 *
 *  - copy: memcpy of the buffer into a second one, PIECE bytes at a time
 *    (as the kernel copies a packet's pages into or out of a socket);
 *  - sum_cold: ferry__sum_page() of every page of a buffer far larger
 *    than the caches (read from memory);
 *  - sum_after_copy: each piece copied, then its pages checksummed (the
 *    destination: a packet lands in guest RAM, then it is verified):
 *    the time beyond the copy alone;
 *  - sum_before_copy: each piece checksummed, then copied (the source:
 *    the checksums go in the packet's header, then the pages are sent);
 *  - sum_hot: checksums of one piece over and over (in cache), GB/s.
 * Each figure is the best of REPS passes. Issue 20's accounting: what a
 * page costs Ferry beyond the bare program (bench/bare-copy.c), which
 * checksums nothing.
 * Usage: bench-sum [MiB]   (default 1024)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "stream/sum.h"
#include "util/clock.h"

#define PS FERRY_PAGE_SIZE
#define PIECE (1u << 20) /* a multifd packet's data */
#define REPS 5

static uint64_t sink; /* keeps the checksums from being optimized away */

static void sum_pages(const uint8_t *p, size_t len, uint64_t first)
{
	for (size_t off = 0; off < len; off += PS)
		sink += ferry__sum_page(p + off, 0x5eed, first + off / PS);
}

enum mode { COPY, SUM, COPY_SUM, SUM_COPY, SUM_HOT /* the first piece each time */ };

/* Best time (ns) of REPS passes over size bytes of src (and dst) in mode m. */
static uint64_t best_ns(enum mode m, uint8_t *dst, const uint8_t *src, size_t size)
{
	uint64_t best = UINT64_MAX;
	for (int r = 0; r < REPS; r++) {
		uint64_t t0 = ferry__now_ns();
		for (size_t off = 0; off < size; off += PIECE) {
			if (m == SUM_HOT)
				sum_pages(src, PIECE, 0);
			if (m == SUM || m == SUM_COPY)
				sum_pages(src + off, PIECE, off / PS);
			if (m != SUM && m != SUM_HOT)
				memcpy(dst + off, src + off, PIECE);
			if (m == COPY_SUM)
				sum_pages(dst + off, PIECE, off / PS);
		}
		uint64_t dt = ferry__now_ns() - t0;
		if (dt < best)
			best = dt;
	}
	return best ? best : 1;
}

static double ms_per_gib(uint64_t ns, size_t size)
{
	return (double)ns / 1e6 * (double)(1ull << 30) / (double)size;
}

int main(int argc, char **argv)
{
	size_t mib = 1024;
	if (argc > 1) {
		char *end;
		unsigned long v = strtoul(argv[1], &end, 10);
		if (*end || v < 64 || v > (1ul << 20)) {
			fprintf(stderr, "usage: %s [MiB, at least 64]\n", argv[0]);
			return 2;
		}
		mib = v;
	}
	size_t size = mib << 20;
	uint8_t *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	/* Guest-like: 4 KiB pages, each backed by its own memory, random bytes. */
	madvise(a, size, MADV_NOHUGEPAGE);
	madvise(b, size, MADV_NOHUGEPAGE);
	uint64_t x = 0x853c49e6748fea9bull;
	for (size_t i = 0; i < size / 8; i++) {
		x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
		((uint64_t *)a)[i] = x * 0x2545f4914f6cdd1dull;
	}
	memset(b, 1, size);

	uint64_t copy = best_ns(COPY, b, a, size), cold = best_ns(SUM, b, a, size);
	uint64_t after = best_ns(COPY_SUM, b, a, size), before = best_ns(SUM_COPY, b, a, size);
	uint64_t hot = best_ns(SUM_HOT, b, a, size);
	printf("{\"pages\": %zu, \"piece_bytes\": %u, \"copy_ms_per_gib\": %.1f, "
	       "\"sum_cold_ms_per_gib\": %.1f, \"sum_after_copy_ms_per_gib\": %.1f, "
	       "\"sum_before_copy_ms_per_gib\": %.1f, \"sum_cold_gbps\": %.1f, "
	       "\"sum_hot_gbps\": %.1f, \"checksum\": %llu}\n",
	       size / PS, PIECE, ms_per_gib(copy, size), ms_per_gib(cold, size),
	       ms_per_gib(after > copy ? after - copy : 0, size),
	       ms_per_gib(before > copy ? before - copy : 0, size), (double)size / (double)cold,
	       (double)size / (double)hot, (unsigned long long)(sink & 0xffff));
	munmap(a, size);
	munmap(b, size);
	return 0;
}
