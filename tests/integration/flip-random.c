/* SPDX-License-Identifier: MIT */
/*
 * Randomized integrity runs (issue 18's guarantee): each run migrates a
 * running guest through the fault-injecting proxy, which flips one random
 * bit at a random offset of one random connection, in precopy (main
 * channel), multifd (main or one of 2 channels) or postcopy with preempt
 * (main or preempt channel). Every run must end one of three ways:
 *   - completed, and the destination's guest matches its twin bit for bit
 *     (the flip fell in bytes nothing reads, or past the stream's end);
 *   - failed, with the source guest still running (precopy);
 *   - postcopy paused, then recovered over a clean link, and bit-exact.
 * A completion whose guest differs from its twin is a silent corruption:
 * the run fails. So is a failure that leaves the source guest stopped
 * before the switchover.
 *
 * Offsets: a connection's length is learned from the last run of its mode
 * (a clean calibration run first), and the flip falls uniformly in it.
 *
 * Environment: FLIP_RUNS (default 6: CI's sample), FLIP_SEED (default 1).
 * bench/flip.sh runs 200 and more. Prints one line per run and, last, one
 * JSON object with the counts. Exit status 0 only with no silent run.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"
#include "proxy.h"

#define SPEC "mem=64M,vram=4M,vcpus=2,workload=random,rate=20M"

enum { M_PRECOPY, M_MULTIFD, M_POSTCOPY, M__N };
static const char *const mode_name[M__N] = { "precopy", "multifd", "postcopy" };
static const unsigned mode_conns[M__N] = { 1, 3, 2 };

/* Counts of outcomes. */
static struct {
	unsigned exact, failed_clean, recovered, not_reached, silent, source_lost;
} n;
/* Bytes connection k carried in the last run of each mode. */
static uint64_t len_of[M__N][4];

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void params(int mode, ferry_migration_params *p)
{
	ferry_migration_params_init(p);
	p->downtime_limit_ms = 300;
	if (mode == M_MULTIFD) {
		p->multifd = true;
		p->multifd_channels = 2;
	}
	if (mode == M_POSTCOPY) {
		p->postcopy = true;
		p->postcopy_preempt = true;
		p->postcopy_after_passes = 1;
		p->downtime_limit_ms = 1; /* never converge: always switch */
	}
}

static bool is_final(ferry_migration_status st)
{
	return st == FERRY_MIGRATION_COMPLETED || st == FERRY_MIGRATION_FAILED ||
	       st == FERRY_MIGRATION_CANCELLED;
}

/* Polls until the source is final or postcopy paused (60 s at most). */
static ferry_migration_status wait_src_end(side *src)
{
	for (unsigned i = 0; i < 12000; i++) {
		ferry_migration_info si;
		assert_int_equal(ferry_migration_query(src->vm, &si), 0);
		if (is_final(si.status) || si.status == FERRY_MIGRATION_POSTCOPY_PAUSED)
			return si.status;
		msleep(5);
	}
	/* A hang is a finding: keep every thread's stack for whoever reads the log. */
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "gdb -p %d -batch -ex 'thread apply all bt' 2>&1 | grep -E '^(Thread|#)'",
		 (int)getpid());
	if (system(cmd) == -1)
		perror("gdb");
	fail_msg("source neither ended nor paused within 60 s");
	return FERRY_MIGRATION_FAILED;
}

/* A paused postcopy: both sides recover over a fresh, unproxied socket. */
static void recover(side *src, side *dst)
{
	wait_status(dst->vm, FERRY_MIGRATION_POSTCOPY_PAUSED);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_recover(dst->vm, uri), 0);
	assert_int_equal(ferry_migration_resume(src->vm, uri), 0);
	for (unsigned i = 0; i < 12000; i++) { /* until the source has left PAUSED */
		ferry_migration_info si;
		assert_int_equal(ferry_migration_query(src->vm, &si), 0);
		if (si.status != FERRY_MIGRATION_POSTCOPY_PAUSED)
			return;
		msleep(5);
	}
	fail_msg("the source did not leave postcopy-paused within 60 s");
}

/* One run; returns a word for its line. */
static const char *one_run(int mode, unsigned k, uint64_t at, uint8_t mask, bool calibrate)
{
	side src, dst;
	char puri[120];
	proxy *px = running_pair_proxied(&src, &dst, SPEC, puri);
	if (mode == M_POSTCOPY) {
		ferry_migration_params ip;
		ferry_migration_params_init(&ip);
		ip.postcopy = true;
		assert_int_equal(ferry_migration_set_incoming_params(dst.vm, &ip), 0);
	}
	side_wait_steps(&src, 256);
	if (!calibrate)
		proxy_flip_at(px, k, at, mask);
	ferry_migration_params p;
	params(mode, &p);
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	ferry_migration_status st = wait_src_end(&src);
	bool paused = st == FERRY_MIGRATION_POSTCOPY_PAUSED;
	for (unsigned tries = 0; st == FERRY_MIGRATION_POSTCOPY_PAUSED; tries++) {
		assert_true(tries < 3);
		recover(&src, &dst);
		st = wait_src_end(&src);
	}
	bool reached = !calibrate && proxy_forwarded(px, k) > at;
	for (unsigned c = 0; c < proxy_connections(px) && c < 4; c++)
		if (calibrate || proxy_forwarded(px, c) > len_of[mode][c])
			len_of[mode][c] = proxy_forwarded(px, c);
	proxy_stop(px);
	const char *what;
	if (st == FERRY_MIGRATION_COMPLETED) {
		assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
		bool exact = side_run_and_verify(&dst, 1000);
		if (!exact) {
			n.silent++;
			what = "SILENT CORRUPTION";
		} else if (paused) {
			n.recovered++;
			what = "recovered, bit-exact";
		} else if (!reached && !calibrate) {
			n.not_reached++;
			what = "flip past the end, bit-exact";
		} else {
			n.exact++;
			what = "completed bit-exact";
		}
	} else {
		/* Failed: the source's guest runs, and is the only one. */
		if (ferry_vm_is_running(src.vm) && !ferry_vm_is_running(dst.vm)) {
			n.failed_clean++;
			what = "failed, source running";
		} else {
			n.source_lost++;
			what = "FAILED WITH THE SOURCE STOPPED";
		}
	}
	side_destroy(&dst);
	side_destroy(&src);
	return what;
}

static void t_flip_random(void **state)
{
	(void)state;
	const char *e = getenv("FLIP_RUNS");
	unsigned runs = e ? (unsigned)strtoul(e, NULL, 10) : 6;
	e = getenv("FLIP_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 10) : 1, s = seed * 0x9e3779b97f4a7c15ull + 1;
	for (int m = 0; m < M__N; m++)
		one_run(m, 0, 0, 0, true);
	memset(&n, 0, sizeof(n));
	for (unsigned i = 0; i < runs; i++) {
		int mode = (int)(i % M__N);
		unsigned k = (unsigned)(rnd(&s) % mode_conns[mode]);
		uint64_t len = len_of[mode][k] ? len_of[mode][k] : 1;
		uint64_t at = rnd(&s) % len;
		uint8_t mask = (uint8_t)(1u << (rnd(&s) % 8));
		const char *what = one_run(mode, k, at, mask, false);
		printf("run %u: %s, connection %u of %" PRIu64 " bytes, flip 0x%02x at %" PRIu64 ": %s\n",
		       i, mode_name[mode], k, len, mask, at, what);
		fflush(stdout);
	}
	printf("{\"runs\": %u, \"seed\": %" PRIu64 ", \"completed_exact\": %u, \"flip_past_end\": %u, "
	       "\"failed_source_running\": %u, \"postcopy_recovered_exact\": %u, "
	       "\"silent_corruptions\": %u, \"failed_source_stopped\": %u}\n",
	       runs, seed, n.exact, n.not_reached, n.failed_clean, n.recovered, n.silent,
	       n.source_lost);
	assert_int_equal(n.silent, 0);
	assert_int_equal(n.source_lost, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_flip_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
