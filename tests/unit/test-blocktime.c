/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the postcopy blocktime statistics
 * (src/lib/migration/pc-blocktime.h), on a hand-made timeline with exact
 * figures: each vCPU's wait runs from its fault to the placement of its
 * page; several vCPUs on one page end together; the all-vCPU blocktime
 * runs only while every vCPU waits; a duplicate fault message of a
 * waiting vCPU does not restart its wait; unknown threads and ptid 0 are
 * non-vCPU faults; the histogram's buckets are [2^N, 2^(N+1)) us with the
 * ends clamped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "migration/pc-blocktime.h"

#define MS 1000000ull /* ns */

static const pid_t tids[2] = { 100, 101 };

static void t_two_vcpus(void **s)
{
	(void)s;
	ferry_pc_blocktime bt;
	ferry_migration_info info;
	memset(&info, 0, sizeof(info));
	ferry__pc_bt_init(&bt, tids, 2);
	/* vCPU 0 waits on page 7 from 0 to 10 ms; vCPU 1 on page 9 from 4 to 6 ms, then on 7 from 8. */
	assert_true(ferry__pc_bt_begin(&bt, 100, 0, 7, 0));
	assert_true(ferry__pc_bt_begin(&bt, 101, 0, 9, 4 * MS));
	assert_true(ferry__pc_bt_begin(&bt, 100, 0, 7, 5 * MS)); /* a duplicate message: ignored */
	ferry__pc_bt_end(&bt, 0, 9, 6 * MS);
	assert_true(ferry__pc_bt_begin(&bt, 101, 0, 7, 8 * MS));
	ferry__pc_bt_end(&bt, 1, 7, 9 * MS); /* another block: nobody waits there */
	ferry__pc_bt_end(&bt, 0, 7, 10 * MS);
	ferry__pc_bt_end(&bt, 0, 7, 11 * MS); /* placed again: no one left */
	ferry__pc_bt_fill(&bt, &info);
	assert_int_equal(info.postcopy_vcpus, 2);
	assert_int_equal(info.postcopy_vcpu_blocktime_ms[0], 10);
	assert_int_equal(info.postcopy_vcpu_blocktime_ms[1], 4);   /* 2 + 2 */
	assert_int_equal(info.postcopy_all_blocktime_ms, 4);       /* 4..6 and 8..10 */
	assert_int_equal(info.postcopy_vcpu_latency_ns[0], 10 * MS);
	assert_int_equal(info.postcopy_vcpu_latency_ns[1], 2 * MS);
	assert_int_equal(info.postcopy_latency_ns, 14 * MS / 3);   /* three faults */
	assert_int_equal(info.postcopy_non_vcpu_latency_ns, 0);
	/* 10 ms = 10000 us: bucket 13 ([8192, 16384) us); 2 ms = 2000 us: bucket 10 ([1024, 2048)). */
	uint64_t want[FERRY_POSTCOPY_LATENCY_BUCKETS] = { 0 };
	want[13] = 1;
	want[10] = 2;
	assert_memory_equal(info.postcopy_latency_dist, want, sizeof(want));
}

static void t_non_vcpu_and_clamps(void **s)
{
	(void)s;
	ferry_pc_blocktime bt;
	ferry_migration_info info;
	memset(&info, 0, sizeof(info));
	ferry__pc_bt_init(&bt, tids, 2);
	assert_false(ferry__pc_bt_begin(&bt, 555, 0, 1, 0)); /* not a vCPU thread */
	assert_false(ferry__pc_bt_begin(&bt, 0, 0, 1, 0));   /* no thread id from the kernel */
	ferry__pc_bt_non_vcpu(&bt, 500);                     /* 0.5 us: bucket 0 */
	ferry__pc_bt_non_vcpu(&bt, 1500);                    /* 1.5 us: bucket 0 */
	ferry__pc_bt_non_vcpu(&bt, 3000);                    /* 3 us: bucket 1 */
	ferry__pc_bt_non_vcpu(&bt, 3600ull * 1000 * MS);     /* an hour: the last bucket */
	ferry__pc_bt_fill(&bt, &info);
	assert_int_equal(info.postcopy_latency_dist[0], 2);
	assert_int_equal(info.postcopy_latency_dist[1], 1);
	assert_int_equal(info.postcopy_latency_dist[FERRY_POSTCOPY_LATENCY_BUCKETS - 1], 1);
	assert_int_equal(info.postcopy_non_vcpu_latency_ns, (500 + 1500 + 3000 + 3600ull * 1000 * MS) / 4);
	assert_int_equal(info.postcopy_latency_ns, info.postcopy_non_vcpu_latency_ns);
	assert_int_equal(info.postcopy_all_blocktime_ms, 0);
	assert_int_equal(info.postcopy_vcpu_blocktime_ms[0] + info.postcopy_vcpu_blocktime_ms[1], 0);
}

static void t_no_vcpus_registered(void **s)
{
	(void)s;
	ferry_pc_blocktime bt;
	ferry_migration_info info;
	memset(&info, 0, sizeof(info));
	ferry__pc_bt_init(&bt, NULL, 0);
	assert_false(ferry__pc_bt_begin(&bt, 100, 0, 1, 0));
	ferry__pc_bt_end(&bt, 0, 1, MS);
	ferry__pc_bt_fill(&bt, &info);
	assert_int_equal(info.postcopy_vcpus, 0);
	assert_int_equal(info.postcopy_all_blocktime_ms, 0); /* never "every one of zero vCPUs" */
	assert_int_equal(info.postcopy_latency_ns, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_two_vcpus),
		cmocka_unit_test(t_non_vcpu_and_clamps),
		cmocka_unit_test(t_no_vcpus_registered),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
