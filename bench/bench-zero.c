/* SPDX-License-Identifier: MIT */
/*
 * Zero-page detection benchmark. Prints one JSON object on stdout:
 *
 *   {"impl": "avx2", "zero_pages_gbps": ..., "random_pages_mpps": ...,
 *    "memcmp_style_gbps": ...}
 *
 *  - zero_pages_gbps: GB/s (1e9 bytes) scanned by ferry__page_is_zero() over
 *    a buffer of zero pages (the worst case: every byte is read);
 *  - random_pages_mpps: millions of random pages rejected per second (the
 *    common case for guest RAM: the first 128 bytes decide);
 *  - memcmp_style_gbps: the baseline, memcmp() of each zero page against a
 *    static zero page, in GB/s.
 *
 * The buffer is 1 GiB (argv[1] overrides it, in MiB), written before
 * timing so every page is backed by its own memory rather than the kernel's
 * shared zero page. Each figure is the best of REPS passes over the buffer.
 * Usage: bench-zero [MiB]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ferry.h"
#include "util/clock.h"
#include "util/zero.h"

#define PS FERRY_PAGE_SIZE
#define REPS 5

static const uint8_t zero_page[PS] __attribute__((aligned(64)));

static uint64_t rng = 0x853c49e6748fea9bull;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

/* Best time (ns) of REPS passes of ferry__page_is_zero; *nzero = zero pages seen. */
static uint64_t time_page_is_zero(const uint8_t *buf, size_t npages, size_t *nzero)
{
	uint64_t best = UINT64_MAX;
	for (int r = 0; r < REPS; r++) {
		size_t z = 0;
		uint64_t t0 = ferry__now_ns();
		for (size_t i = 0; i < npages; i++)
			z += ferry__page_is_zero(buf + i * PS);
		uint64_t dt = ferry__now_ns() - t0;
		if (dt < best)
			best = dt;
		*nzero = z;
	}
	return best ? best : 1;
}

static uint64_t time_memcmp(const uint8_t *buf, size_t npages, size_t *nzero)
{
	uint64_t best = UINT64_MAX;
	for (int r = 0; r < REPS; r++) {
		size_t z = 0;
		uint64_t t0 = ferry__now_ns();
		for (size_t i = 0; i < npages; i++)
			z += memcmp(buf + i * PS, zero_page, PS) == 0;
		uint64_t dt = ferry__now_ns() - t0;
		if (dt < best)
			best = dt;
		*nzero = z;
	}
	return best ? best : 1;
}

int main(int argc, char **argv)
{
	size_t mib = 1024;
	if (argc > 1) {
		char *end;
		unsigned long v = strtoul(argv[1], &end, 10);
		if (*end || v == 0 || v > (1ul << 20)) {
			fprintf(stderr, "usage: %s [MiB]\n", argv[0]);
			return 2;
		}
		mib = v;
	}
	size_t size = mib << 20, npages = size / PS;
	uint8_t *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	/* Back every page with its own memory (and avoid huge-page effects
	 * varying between runs). */
	madvise(buf, size, MADV_NOHUGEPAGE);
	memset(buf, 0, size);

	size_t nzero;
	uint64_t t_zero = time_page_is_zero(buf, npages, &nzero);
	if (nzero != npages) {
		fprintf(stderr, "bench-zero: %zu of %zu zero pages detected\n", nzero, npages);
		return 1;
	}
	uint64_t t_memcmp = time_memcmp(buf, npages, &nzero);
	if (nzero != npages) {
		fprintf(stderr, "bench-zero: memcmp saw %zu of %zu zero pages\n", nzero, npages);
		return 1;
	}

	uint64_t *w = (uint64_t *)buf;
	for (size_t i = 0; i < size / 8; i++)
		w[i] = rnd();
	uint64_t t_rand = time_page_is_zero(buf, npages, &nzero);
	if (nzero != 0) {
		fprintf(stderr, "bench-zero: %zu random pages reported zero\n", nzero);
		return 1;
	}

	printf("{\"impl\": \"%s\", \"zero_pages_gbps\": %.2f, \"random_pages_mpps\": %.1f, "
	       "\"memcmp_style_gbps\": %.2f}\n",
	       ferry__zero_impl(), (double)size / (double)t_zero,
	       (double)npages * 1e3 / (double)t_rand, (double)size / (double)t_memcmp);
	munmap(buf, size);
	return 0;
}
