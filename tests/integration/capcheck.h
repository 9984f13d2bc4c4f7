/* SPDX-License-Identifier: MIT */
/*
 * max-bandwidth check shared by test-migrate.c and test-multifd.c: a
 * running guest dirtying scattered pages is migrated under a cap, and the
 * test asserts that the cap held in every 100 ms window (the source's own
 * measure at the point where bytes are written), on average over the whole
 * migration, that query-migrate's transferred and remaining kept moving
 * while the sending was throttled, and that the destination RAM is exact.
 *
 * No fixed sleeps: the sampling loop waits on the migration's status
 * (ferry_migration_wait with a short timeout), a bounded number of times.
 */
#ifndef FERRY_TEST_CAPCHECK_H
#define FERRY_TEST_CAPCHECK_H

#include <stdio.h>
#include <time.h>

#include "harness.h"

/* 2 x 4 MB/s of random writes over 2 x 8 MiB: converges well under the caps used. */
#define CAP_SPEC "mem=64M,vram=4M,vcpus=2,rate=4M,wss=8M,workload=random"

static uint64_t cap_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Migrates CAP_SPEC with p (p->max_bandwidth set); returns the source's final info. */
static ferry_migration_info cap_migrate(const ferry_migration_params *p)
{
	side src, dst;
	const char *uri = running_pair(&src, &dst, CAP_SPEC);
	assert_int_equal(ferry_migration_start(src.vm, uri, p), 0);
	/* The sample compared against: the last one at least 150 ms older. */
	ferry_migration_info ref = { .status = FERRY_MIGRATION_NONE }, i;
	uint64_t ref_ns = 0;
	unsigned compared = 0;
	int st = -ETIMEDOUT;
	for (int k = 0; k < 3000 && st == -ETIMEDOUT; k++) {
		st = ferry_migration_wait(src.vm, 20);
		uint64_t now = cap_now_ns();
		ferry_migration_query(src.vm, &i);
		if (i.status != FERRY_MIGRATION_ACTIVE) {
			ref.status = FERRY_MIGRATION_NONE;
			continue;
		}
		if (ref.status != FERRY_MIGRATION_ACTIVE) {
			ref = i;
			ref_ns = now;
			continue;
		}
		if (now - ref_ns < 150000000ull)
			continue;
		/* Throttled or not, the counters move (remaining is 0 only between a pass's end and its sync). */
		if (i.transferred == ref.transferred ||
		    (i.remaining == ref.remaining && (i.remaining || ref.remaining)))
			fail_msg("query-migrate froze for %llu ms: transferred %llu -> %llu, "
				 "remaining %llu -> %llu",
				 (unsigned long long)(now - ref_ns) / 1000000,
				 (unsigned long long)ref.transferred, (unsigned long long)i.transferred,
				 (unsigned long long)ref.remaining, (unsigned long long)i.remaining);
		compared++;
		ref = i;
		ref_ns = now;
	}
	assert_int_equal(st, FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
	ferry_migration_query(src.vm, &i);
	uint64_t win_cap = p->max_bandwidth / 10;
	fprintf(stderr, "cap %llu B/s: peak 100 ms window %llu bytes (%.3f of the cap), "
		"%llu bytes in %llu ms (%.3f of the cap), %u samples compared\n",
		(unsigned long long)p->max_bandwidth,
		(unsigned long long)i.bandwidth_peak_window_bytes,
		(double)i.bandwidth_peak_window_bytes / (double)win_cap,
		(unsigned long long)i.transferred, (unsigned long long)i.total_time_ms,
		(double)i.transferred * 1000 / (double)i.total_time_ms / (double)p->max_bandwidth,
		compared);
	/* Throttled for over a second: several comparisons were made. */
	assert_true(compared >= 5);
	assert_true(i.bandwidth_peak_window_bytes * 100 <= win_cap * 110);
	/* Something was measured: at least half the cap in the busiest window. */
	assert_true(i.bandwidth_peak_window_bytes * 2 >= win_cap);
	assert_true((double)i.transferred * 1000 / (double)i.total_time_ms <=
		    1.1 * (double)p->max_bandwidth);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
	return i;
}

#endif
