/* SPDX-License-Identifier: MIT */
/*
 * The switchover's rate: at what rate the downtime estimate assumes the
 * stop-copy will go, from the rates the passes showed. The estimate itself
 * (what is left, in flight, the final sync) is source.c's
 * (downtime_estimate_ns); this is the policy alone, kept apart so that
 * each of its rules is unit-tested (tests/unit/test-estimate.c).
 *
 * DESIGN: the switchover's rate is the slower end's once the vCPUs stop,
 * which cannot be measured before. So:
 *  - the pass's own rate is a floor: the average over all passes, or the
 *    last pass's once a pass of dirty pages lasted 10 ms or more (the
 *    first pass sends long runs of pages, faster than the scattered dirty
 *    ones left at the end), less the time mig/src/main waited for a CPU;
 *    or the pass's rate end to end, when the destination's reports show
 *    it slower;
 *  - above it (the lift), the destination's rate as if its loading
 *    threads shared one CPU (its report of the last pass: bytes per CPU
 *    second), but not above the first pass's rate, the fastest this side
 *    and the link were seen to go (so a destination's report cannot raise
 *    it further), nor above FERRY_LIFT_MAX_PCT of the floor.
 * Measured (bench/precopy.py --downtime-grid, 2 busy vCPUs on 2 CPUs,
 * kernel 6.1): a dirty pass's pages cost mig/src/main about 10x the CPU
 * per byte they cost in the stop-copy (the vCPUs write them meanwhile),
 * and the log sync 10-20x, so the pass's rate alone made the estimate
 * 1.8-2.9x the actual downtime. The destination's CPU per byte was within
 * 0.8-1.25x between the last pass and the stop-copy, which it bounds.
 *
 * Headroom: the destination's rate (or max-bandwidth, when lower) counts
 * at 70%, the floor at 90% under a max-bandwidth (a capped stop-copy
 * reached 0.9 of the cap: it is too short for the limiter's average).
 * Three grids without it: the stop-copy went at 0.83-1.8x the rate
 * assumed, and one switchover took 54 ms for a 50 ms limit (the
 * destination's threads and the source share this machine's 2 CPUs in the
 * stop-copy); 80% held there. The same kind of machine on kernel 6.18: the
 * stop-copy went at 0.74-0.76 of the destination's rate, and at 0.97 of
 * the end to end rate of the pass before, whose vCPUs did not slow it.
 * Since later passes are loaded without a handoff (ram-load.c,
 * place_here), an unthrottled stop-copy went at 0.96-1.28x the end to end
 * rate of the pass before (2026-12-07, 200 and 400 MB/s per vCPU): the
 * floor counts in full there, where at 90% it put the estimate 1.2-1.7x
 * over downtimes of 2-12 ms.
 *
 * The lift's bound: the lift stands for vCPUs that slow a pass and stop
 * for the switchover, not for a machine that is slow for a while.
 * Measured (2026-12-07, 200 MB/s per vCPU unthrottled, limit 50): in one
 * run of nine the last pass went at 0.54 GB/s where the others went at
 * 2.1-4.7 (mig/src/main burning 4x its usual CPU, as in one more run whose
 * first pass took 3x its usual time); the destination's rate lifted the
 * estimate to 1.41 GB/s, 42 ms, and the stop-copy went at 0.42 GB/s: 140
 * ms for the 50 ms limit. Bounded, the estimate said 73 ms and the
 * migration ran another pass.
 *
 * Thread: any (pure).
 */
#ifndef FERRY_MIGRATION_ESTIMATE_H
#define FERRY_MIGRATION_ESTIMATE_H

#include <stdint.h>

#define FERRY_LIFT_MAX_PCT 150

/* What the passes showed (bytes/s; 0: not known). */
typedef struct ferry_rate_evidence {
	uint64_t pass_bps;      /* the pass's own rate (or the average, see above) */
	uint64_t e2e_bps;       /* the last pass's rate end to end */
	uint64_t dest_bps;      /* the destination's rate per CPU second */
	uint64_t first_bps;     /* the first pass's rate */
	uint64_t max_bandwidth; /* the cap now (0: none) */
} ferry_rate_evidence;

/* The rate the stop-copy is assumed to go at (bytes/s; 0: nothing measured). */
uint64_t ferry__switch_rate(const ferry_rate_evidence *e);

#endif
