/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the auto-converge decision (src/lib/migration/throttle.c):
 * the trigger (dirtied above the threshold twice, the count kept across
 * periods), the first step, increments, the cap, tailslow's smaller step,
 * the threshold's rounding, and periods of at least one second.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "migration/throttle.h"

#define SEC 1000000000ull

static ferry_migration_params params(void)
{
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.auto_converge = true;
	return p;
}

static void t_defaults(void **s)
{
	(void)s;
	ferry_migration_params p = params();
	assert_int_equal(p.throttle_trigger_threshold, 50);
	assert_int_equal(p.cpu_throttle_initial, 20);
	assert_int_equal(p.cpu_throttle_increment, 10);
	assert_false(p.cpu_throttle_tailslow);
	assert_int_equal(p.max_cpu_throttle, 99);
}

/* At or below the threshold nothing counts; the second period above it raises. */
static void t_trigger_twice(void **s)
{
	(void)s;
	ferry_migration_params p = params();
	unsigned hc = 0;
	assert_int_equal(ferry__throttle_next(&p, 0, 500, 1000, &hc), 0); /* exactly 50%: no */
	assert_int_equal(hc, 0);
	assert_int_equal(ferry__throttle_next(&p, 0, 501, 1000, &hc), 0);
	assert_int_equal(hc, 1);
	assert_int_equal(ferry__throttle_next(&p, 0, 10, 1000, &hc), 0); /* low: count kept */
	assert_int_equal(hc, 1);
	assert_int_equal(ferry__throttle_next(&p, 0, 501, 1000, &hc), 20);
	assert_int_equal(hc, 0);
	/* Then +10 every second high period. */
	assert_int_equal(ferry__throttle_next(&p, 20, 900, 1000, &hc), 20);
	assert_int_equal(ferry__throttle_next(&p, 20, 900, 1000, &hc), 30);
	/* Nothing sent at all (a stalled link) while the guest dirties: high. */
	assert_int_equal(ferry__throttle_next(&p, 30, 1, 0, &hc), 30);
	assert_int_equal(ferry__throttle_next(&p, 30, 1, 0, &hc), 40);
}

static void t_cap(void **s)
{
	(void)s;
	ferry_migration_params p = params();
	unsigned hc = 1;
	assert_int_equal(ferry__throttle_next(&p, 95, 900, 1000, &hc), 99);
	hc = 1;
	assert_int_equal(ferry__throttle_next(&p, 99, 900, 1000, &hc), 99);
	p.max_cpu_throttle = 50;
	p.cpu_throttle_increment = 30;
	hc = 1;
	assert_int_equal(ferry__throttle_next(&p, 40, 900, 1000, &hc), 50);
	/* A max lowered below the current throttle (live) never lowers it. */
	p.max_cpu_throttle = 30;
	p.cpu_throttle_initial = 30;
	hc = 1;
	assert_int_equal(ferry__throttle_next(&p, 40, 900, 1000, &hc), 40);
	/* The first step is capped too. */
	p.cpu_throttle_initial = 20;
	p.max_cpu_throttle = 20;
	hc = 1;
	assert_int_equal(ferry__throttle_next(&p, 0, 900, 1000, &hc), 20);
}

/*
 * Tailslow: vCPUs at 80% (throttle 20), dirtied 520 where 500 is the
 * threshold: 80 x 500/520 = 76.9 -> 76, so the step is 4, not 10. Far above
 * the threshold the increment stays the limit.
 */
static void t_tailslow(void **s)
{
	(void)s;
	ferry_migration_params p = params();
	p.cpu_throttle_tailslow = true;
	unsigned hc = 1;
	assert_int_equal(ferry__throttle_next(&p, 20, 520, 1000, &hc), 24);
	hc = 1;
	assert_int_equal(ferry__throttle_next(&p, 20, 5000, 1000, &hc), 30);
	/* The first step is always cpu-throttle-initial. */
	hc = 1;
	assert_int_equal(ferry__throttle_next(&p, 0, 520, 1000, &hc), 20);
}

/* threshold = sent x pct / 100, rounded down, without overflow for huge periods. */
static void t_threshold(void **s)
{
	(void)s;
	ferry_migration_params p = params();
	unsigned hc = 1;
	/* 199 x 50% = 99.5 -> 99: 99 is not above it, 100 is. */
	assert_int_equal(ferry__throttle_next(&p, 0, 99, 199, &hc), 0);
	assert_int_equal(hc, 1);
	assert_int_equal(ferry__throttle_next(&p, 0, 100, 199, &hc), 20);
	p.throttle_trigger_threshold = 100;
	hc = 1;
	uint64_t big = UINT64_MAX / 2;
	assert_int_equal(ferry__throttle_next(&p, 0, big, big, &hc), 0);
	assert_int_equal(ferry__throttle_next(&p, 0, big + 1, big, &hc), 20);
}

/* Syncs within a second accumulate; the one that ends the period decides. */
static void t_periods(void **s)
{
	(void)s;
	ferry_migration_params p = params();
	ferry_throttle t;
	ferry__throttle_init(&t, 10 * SEC, 5000);
	unsigned pct = 0;
	/* Period 1: 3 syncs, 3 x 400 dirtied while 1000 were sent: high (1). */
	assert_false(ferry__throttle_sync(&t, &p, 10 * SEC + SEC / 3, 400, 5300, &pct));
	assert_false(ferry__throttle_sync(&t, &p, 10 * SEC + SEC / 2, 400, 5600, &pct));
	assert_false(ferry__throttle_sync(&t, &p, 11 * SEC, 400, 6000, &pct));
	assert_int_equal(t.high_cnt, 1);
	assert_int_equal(t.period_dirty, 0);
	assert_int_equal(t.period_sent0, 6000);
	/* Period 2 high as well: 20. */
	assert_false(ferry__throttle_sync(&t, &p, 12 * SEC - 1, 600, 7000, &pct));
	assert_true(ferry__throttle_sync(&t, &p, 12 * SEC, 0, 7000, &pct));
	assert_int_equal(pct, 20);
	assert_int_equal(t.pct, 20);
	/* Two low periods: no change, nothing applied. */
	assert_false(ferry__throttle_sync(&t, &p, 13 * SEC, 10, 8000, &pct));
	assert_false(ferry__throttle_sync(&t, &p, 14 * SEC, 10, 9000, &pct));
	assert_int_equal(t.pct, 20);
	assert_int_equal(t.high_cnt, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_defaults),  cmocka_unit_test(t_trigger_twice),
		cmocka_unit_test(t_cap),       cmocka_unit_test(t_tailslow),
		cmocka_unit_test(t_threshold), cmocka_unit_test(t_periods),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
