/* SPDX-License-Identifier: MIT */
/*
 * Dirty-tracking benchmark: harvest cost on a 1 GiB memfd (MAP_SHARED, fully
 * populated) in WP_ASYNC mode. Prints one JSON object:
 *   all_dirty_mpages_s    pages harvested per second (Mpages/s) with every
 *                         page written since the last harvest;
 *   sparse_1_64_mpages_s  range pages covered per second (Mpages/s) with one
 *                         page in 64 written (4096 separate regions);
 *   clean_scan_ms         harvest time with nothing written;
 *   track_start_ms, populated_scan_ms  one-off costs, for reference.
 * Each figure is the best of ROUNDS runs. Usage: bench-dirty [size_mib]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dirty/dirty.h"
#include "util/bitmap.h"
#include "util/clock.h"

#define ROUNDS 5
#define PS ((uint64_t)FERRY_PAGE_SIZE)

static void touch(volatile uint8_t *host, uint64_t npages, uint64_t stride, uint8_t v)
{
	for (uint64_t p = 0; p < npages; p += stride)
		host[p * PS] = v;
}

/* Runs one harvest; returns its duration in ns, checks the count. */
static uint64_t timed_harvest(ferry_dirty_tracker *t, uint8_t *host, uint64_t size,
			      unsigned long *bm, uint64_t expect)
{
	uint64_t npages = size / PS, newly = 0;
	ferry__bitmap_zero(bm, npages);
	uint64_t t0 = ferry__now_ns();
	int r = ferry__dirty_harvest(t, host, size, NULL, bm, &newly);
	uint64_t dt = ferry__now_ns() - t0;
	if (r < 0 || newly != expect) {
		fprintf(stderr, "bench-dirty: harvest r=%d newly=%llu expected %llu\n", r,
			(unsigned long long)newly, (unsigned long long)expect);
		exit(1);
	}
	return dt;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 1024;
	if (!mib) {
		fprintf(stderr, "usage: bench-dirty [size_mib]\n");
		return 2;
	}
	const uint64_t size = mib << 20, npages = size / PS;

	if (!ferry__dirty_wp_async_supported()) {
		printf("{\"wp_async\": false}\n");
		return 0;
	}

	int fd = memfd_create("bench-dirty", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		perror("bench-dirty: memfd");
		return 1;
	}
	uint8_t *host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	unsigned long *bm = ferry__bitmap_new(npages);
	if (host == MAP_FAILED || !bm) {
		perror("bench-dirty: mmap");
		return 1;
	}
	touch(host, npages, 1, 1); /* populate every page */

	uint64_t count = 0, t0 = ferry__now_ns();
	if (ferry__ram_scan_populated(host, size, fd, 0, bm, &count) < 0 || count != npages) {
		fprintf(stderr, "bench-dirty: populated scan found %llu pages\n",
			(unsigned long long)count);
		return 1;
	}
	uint64_t populated_ns = ferry__now_ns() - t0;

	ferry_dirty_tracker t;
	int r = ferry__dirty_tracker_init(&t, FERRY_DIRTY_WP_ASYNC);
	if (r < 0) {
		fprintf(stderr, "bench-dirty: tracker: %s\n", strerror(-r));
		return 1;
	}
	t0 = ferry__now_ns();
	r = ferry__dirty_track_start(&t, host, size);
	uint64_t start_ns = ferry__now_ns() - t0;
	if (r < 0) {
		fprintf(stderr, "bench-dirty: track_start: %s\n", strerror(-r));
		return 1;
	}

	uint64_t all = UINT64_MAX, sparse = UINT64_MAX, clean = UINT64_MAX;
	for (int i = 0; i < ROUNDS; i++) {
		touch(host, npages, 1, (uint8_t)(i + 2));
		all = min_u64(all, timed_harvest(&t, host, size, bm, npages));
		touch(host, npages, 64, (uint8_t)(i + 3));
		sparse = min_u64(sparse, timed_harvest(&t, host, size, bm, (npages + 63) / 64));
		clean = min_u64(clean, timed_harvest(&t, host, size, bm, 0));
	}

	printf("{\"size_mib\": %llu, \"pages\": %llu, \"all_dirty_mpages_s\": %.1f, "
	       "\"sparse_1_64_mpages_s\": %.1f, \"clean_scan_ms\": %.3f, "
	       "\"track_start_ms\": %.3f, \"populated_scan_ms\": %.3f}\n",
	       (unsigned long long)mib, (unsigned long long)npages,
	       (double)npages * 1e3 / (double)all, (double)npages * 1e3 / (double)sparse,
	       (double)clean / 1e6, (double)start_ns / 1e6, (double)populated_ns / 1e6);

	ferry__dirty_track_stop(&t, host, size);
	ferry__dirty_tracker_fini(&t);
	munmap(host, size);
	close(fd);
	free(bm);
	return 0;
}
