/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the switchover's rate (src/lib/migration/estimate.c): the
 * floor (the pass's rate, or its end to end rate when slower; 90% under a
 * cap), the lift (the destination's rate within the first pass's, at 70%),
 * the lift's bound (150% of the floor), and max-bandwidth capping all.
 * Figures from the runs estimate.h cites.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "migration/estimate.h"

#define MB 1000000ull

static uint64_t rate(uint64_t pass, uint64_t e2e, uint64_t dest, uint64_t first, uint64_t cap)
{
	ferry_rate_evidence e = { .pass_bps = pass, .e2e_bps = e2e, .dest_bps = dest,
				  .first_bps = first, .max_bandwidth = cap };
	return ferry__switch_rate(&e);
}

/* Nothing measured: 0 (the estimate says "unknown"); a lone destination report lifts from 0. */
static void t_nothing(void **s)
{
	(void)s;
	assert_int_equal(rate(0, 0, 0, 0, 0), 0);
	assert_int_equal(rate(0, 0, 1000 * MB, 0, 0), 0); /* no first pass: no lift */
	assert_int_equal(rate(0, 0, 1000 * MB, 2000 * MB, 0), 700 * MB);
}

/* The floor: the slower of the pass's own and its end to end rate, in full unthrottled. */
static void t_floor(void **s)
{
	(void)s;
	/* Run 1 of estimate.h's nine: pass 4.27 GB/s, end to end 3.71: the floor, above the lift. */
	assert_int_equal(rate(4274552085u, 3708113044u, 4839985448u, 2754089724u, 0), 3708113044u);
	/* End to end faster than the pass's own: the pass's. */
	assert_int_equal(rate(1000 * MB, 1200 * MB, 0, 0, 0), 1000 * MB);
	/* Unknown end to end (0): the pass's. */
	assert_int_equal(rate(1000 * MB, 0, 0, 0, 0), 1000 * MB);
}

/* The lift: the destination's rate within the first pass's, at 70%, when above the floor. */
static void t_lift(void **s)
{
	(void)s;
	/* Floor 1000, destination 2000, first pass 3000: 1400 (below 150% of the floor). */
	assert_int_equal(rate(1000 * MB, 0, 2000 * MB, 3000 * MB, 0), 1400 * MB);
	/* The first pass bounds it: 0.7 x 1800 = 1260. */
	assert_int_equal(rate(1000 * MB, 0, 4000 * MB, 1800 * MB, 0), 1260 * MB);
	/* A lift below the floor is no lift. */
	assert_int_equal(rate(1000 * MB, 0, 1200 * MB, 3000 * MB, 0), 1000 * MB);
}

/*
 * The lift's bound: estimate.h's slow run, pass 2 at 0.535 GB/s end to
 * end, destination 3.08, first pass 2.02: lifted to 1.41 GB/s before (42
 * ms for 58 MB; it took 140); 150% of the floor now (73 ms: another pass).
 */
static void t_lift_bound(void **s)
{
	(void)s;
	uint64_t e2e = 534720540u, bw = rate(535526066u, e2e, 3082000058u, 2015623114u, 0);
	assert_int_equal(bw, e2e / 100 * FERRY_LIFT_MAX_PCT);
	assert_int_equal(FERRY_LIFT_MAX_PCT, 150);
	uint64_t ms = 58212352ull * 1000 / bw;
	assert_int_equal(ms, 72);
}

/* max-bandwidth: the floor at 90%, the lift within the cap, and the result capped. */
static void t_cap(void **s)
{
	(void)s;
	/* A capped pass at the cap: 90% of it; the lift (0.7 x cap) below. */
	assert_int_equal(rate(200 * MB, 0, 3000 * MB, 3000 * MB, 200 * MB), 180 * MB);
	/* A cap lowered since the pass: the cap. */
	assert_int_equal(rate(1000 * MB, 0, 3000 * MB, 3000 * MB, 500 * MB), 500 * MB);
	/* A slow pass under a high cap: lifted by the destination, bounded by 150% of 90%. */
	assert_int_equal(rate(400 * MB, 0, 3000 * MB, 3000 * MB, 1000 * MB), 540 * MB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_nothing), cmocka_unit_test(t_floor), cmocka_unit_test(t_lift),
		cmocka_unit_test(t_lift_bound), cmocka_unit_test(t_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
