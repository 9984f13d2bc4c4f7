/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the switchover's rate (src/lib/migration/estimate.c): the
 * pass's rate, or its end to end rate when slower; 90% under a cap; the
 * cap bounding all. Figures from the runs estimate.h cites.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "migration/estimate.h"

#define MB 1000000ull

static uint64_t rate(uint64_t pass, uint64_t e2e, uint64_t cap)
{
	ferry_rate_evidence e = { .pass_bps = pass, .e2e_bps = e2e, .max_bandwidth = cap };
	return ferry__switch_rate(&e);
}

/* Nothing measured: 0 (the estimate says "unknown"), with or without a cap. */
static void t_nothing(void **s)
{
	(void)s;
	assert_int_equal(rate(0, 0, 0), 0);
	assert_int_equal(rate(0, 0, 200 * MB), 0);
	assert_int_equal(rate(0, 700 * MB, 0), 0); /* an end to end rate alone lifts nothing */
}

/* The slower of the pass's own and its end to end rate, in full unthrottled. */
static void t_floor(void **s)
{
	(void)s;
	/* A run of estimate.h's cell: pass 4.27 GB/s, end to end 3.71. */
	assert_int_equal(rate(4274552085u, 3708113044u, 0), 3708113044u);
	/* End to end faster than the pass's own: the pass's. */
	assert_int_equal(rate(1000 * MB, 1200 * MB, 0), 1000 * MB);
	/* Unknown end to end (0): the pass's. */
	assert_int_equal(rate(1000 * MB, 0, 0), 1000 * MB);
}

/*
 * A slow pass stays slow: estimate.h's run, pass 2 at 0.535 GB/s end to
 * end with the destination reporting 3.08 per CPU second; lifted to 1.41
 * GB/s before (42 ms for 58 MB; it took 140): 109 ms now, another pass.
 */
static void t_slow_pass(void **s)
{
	(void)s;
	uint64_t e2e = 534720540u, bw = rate(535526066u, e2e, 0);
	assert_int_equal(bw, e2e);
	assert_int_equal(58212352ull * 1000 / bw, 108);
}

/* max-bandwidth: 90% of the pass's rate, and a cap lowered since bounds it. */
static void t_cap(void **s)
{
	(void)s;
	assert_int_equal(rate(200 * MB, 0, 200 * MB), 180 * MB);
	assert_int_equal(rate(200 * MB, 150 * MB, 200 * MB), 135 * MB);
	assert_int_equal(rate(1000 * MB, 0, 500 * MB), 500 * MB);
	assert_int_equal(rate(400 * MB, 0, 1000 * MB), 360 * MB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_nothing), cmocka_unit_test(t_floor), cmocka_unit_test(t_slow_pass),
		cmocka_unit_test(t_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
