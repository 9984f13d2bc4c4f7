/* SPDX-License-Identifier: MIT */
/*
 * The switchover's rate: at what rate the downtime estimate assumes the
 * stop-copy will go, from the rates the passes showed. The estimate itself
 * (what is left, in flight, the final sync) is source.c's
 * (downtime_estimate_ns); this is the policy alone, kept apart so that
 * each of its rules is unit-tested (tests/unit/test-estimate.c).
 *
 * DESIGN: the switchover's rate is the slower end's once the vCPUs stop,
 * which cannot be measured before. The estimate takes the last pass's: its
 * own rate (the average over all passes, or the last pass's once a pass of
 * dirty pages lasted 10 ms or more: the first pass sends long runs of
 * pages, faster than the scattered dirty ones left at the end), less the
 * time mig/src/main waited for a CPU; or its rate end to end, the bytes
 * the destination reported loaded over the pass's time to the report,
 * when slower (it counts what the sockets still held when the pass ended).
 * Under a max-bandwidth it counts at 90% (a capped stop-copy reached 0.9
 * of the cap: it is too short for the limiter's average), and the cap
 * bounds it (a cap lowered since, by migrate-set-parameters).
 *
 * Measured on kernel 6.18 (bench/precopy.py --downtime-grid, 2 vCPUs on 2
 * CPUs): an unthrottled stop-copy went at 0.96-1.28x the end to end rate
 * of the pass before, and at 0.46-2.4x across a whole grid's cells (a
 * stop-copy of 10-40 MB lasts a few milliseconds, which this shared
 * machine's hiccups can double).
 *
 * No lift above it. Until 2026-12-07 the destination's rate per CPU
 * second (its LOAD reports, at 70%, at most the first pass's rate) raised
 * the rate when the pass was slower: on kernel 6.1 a dirty pass's pages
 * cost mig/src/main about 10x the CPU per byte they cost in the stop-copy
 * (the vCPUs wrote them meanwhile), and the pass's rate alone made the
 * estimate 1.8-2.9x the actual downtime. On 6.18 the vCPUs do not slow a
 * pass, and a slow pass is a slow machine, which may stay slow for the
 * stop-copy: in 5 of 41 runs of the 200M/unthrottled/50 cell the passes
 * went at 0.43-0.65 GB/s instead of 2.1-4.7 for a few hundred
 * milliseconds (mig/src/main at 3-8x its usual CPU, nearly all of it in
 * the kernel's copy from guest RAM into the socket's buffers,
 * _copy_from_iter: memory this VM's host was slow to give), and in two of
 * them the lift put the estimate at 42 and 45 ms and the stop-copy went at
 * 0.42 GB/s: 140 and 106 ms for the 50 ms limit (the second with the lift
 * already bounded to 1.5x the floor). Without it those runs take another
 * pass. Where the vCPUs do slow the passes the estimate is conservative
 * again: the safe side of a promise.
 *
 * Thread: any (pure).
 */
#ifndef FERRY_MIGRATION_ESTIMATE_H
#define FERRY_MIGRATION_ESTIMATE_H

#include <stdint.h>

/* What the passes showed (bytes/s; 0: not known). */
typedef struct ferry_rate_evidence {
	uint64_t pass_bps;      /* the pass's own rate (or the average, see above) */
	uint64_t e2e_bps;       /* the last pass's rate end to end */
	uint64_t max_bandwidth; /* the cap now (0: none) */
} ferry_rate_evidence;

/* The rate the stop-copy is assumed to go at (bytes/s; 0: nothing measured). */
uint64_t ferry__switch_rate(const ferry_rate_evidence *e);

#endif
