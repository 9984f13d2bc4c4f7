/* SPDX-License-Identifier: MIT */
/*
 * Auto-converge: slows the source guest's vCPUs down (through the VMM's
 * ferry_vcpu_ops.set_throttle) when it dirties RAM faster than the
 * migration can send it, so that a precopy that would never reach its
 * downtime limit does.
 *
 * DESIGN: the decision follows QEMU's (migration_trigger_throttle): at a
 * dirty-log sync that ends a period of at least one second, compare the
 * bytes dirtied in the period with the bytes sent in it. Dirtied more than
 * throttle-trigger-threshold percent of sent, for the second time (the
 * count is kept across periods), raises the throttle: to
 * cpu-throttle-initial if none is set yet, else by cpu-throttle-increment
 * (with cpu-throttle-tailslow: by no more than would bring the dirty rate
 * down to the threshold, assuming dirtying scales with vCPU time), capped
 * at max-cpu-throttle. The throttle never goes down while the migration
 * runs; the source thread sets it back to 0 when the migration ends, however
 * it ends, before the final status shows.
 *
 * Thread: mig/src/main only (no shared state here).
 */
#ifndef FERRY_MIGRATION_THROTTLE_H
#define FERRY_MIGRATION_THROTTLE_H

#include <stdint.h>

#include "ferry/migration.h"

#define FERRY_THROTTLE_PERIOD_NS 1000000000ull

typedef struct ferry_throttle {
	uint64_t period_start_ns;
	uint64_t period_dirty;  /* bytes dirtied in the period (sum over its syncs) */
	uint64_t period_sent0;  /* bytes sent when the period started */
	unsigned high_cnt;      /* periods that dirtied above the threshold, mod 2 */
	unsigned pct;           /* current throttle, 0 = none */
} ferry_throttle;

/* Starts the first period at now_ns with sent_total bytes already sent. */
void ferry__throttle_init(ferry_throttle *t, uint64_t now_ns, uint64_t sent_total);

/*
 * The decision alone, for one period that dirtied `dirty` bytes and sent
 * `sent` bytes, with throttle pct now and *high_cnt periods above the
 * threshold so far (updated). Returns the new throttle percentage (pct
 * when it stays).
 */
unsigned ferry__throttle_next(const ferry_migration_params *p, unsigned pct, uint64_t dirty,
			      uint64_t sent, unsigned *high_cnt);

/*
 * At a dirty-log sync that found newly_bytes newly dirtied, with
 * sent_total bytes sent so far. True when the throttle changes, with
 * the percentage to apply now in *pct; false when it stays as it is.
 */
bool ferry__throttle_sync(ferry_throttle *t, const ferry_migration_params *p, uint64_t now_ns,
			  uint64_t newly_bytes, uint64_t sent_total, unsigned *pct);

#endif
