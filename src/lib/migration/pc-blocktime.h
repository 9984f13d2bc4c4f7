/* SPDX-License-Identifier: MIT */
/*
 * Postcopy blocktime and fault latency per vCPU (destination), QEMU's
 * `postcopy-blocktime` statistics: how long each vCPU waited for missing
 * pages, how long all of them waited at once, the average latency of
 * vCPU and non-vCPU faults, and a log2 histogram of the latencies.
 *
 * DESIGN:
 *  - A fault's thread id (UFFD_FEATURE_THREAD_ID's ptid) is mapped to a
 *    vCPU through the ids the embedder registered
 *    (ferry_vm_set_vcpu_threads); anything else is a non-vCPU fault
 *    (a device load thread, the embedder). Without the feature, or
 *    without registered ids, every fault is a non-vCPU one.
 *  - A vCPU thread blocked in a fault cannot fault again until woken: each
 *    vCPU waits on at most one page, so a vCPU's wait is (page, begin).
 *    A page's placement ends the wait of every vCPU on it (several may
 *    wait on one page, QEMU's per-address list). A non-vCPU wait is
 *    timed by the page request it caused (the first fault on a page);
 *    later non-vCPU faults on the same page are not timed.
 *  - Blocktime of all vCPUs: while every vCPU waits, the clock runs
 *    (QEMU's smp_cpus_down == smp_cpus).
 *
 * Thread: mig/dst/fault and the placing threads, under the postcopy
 * state's stat_lock (postcopy-dst.h), which the caller holds; fill under
 * it too.
 */
#ifndef FERRY_MIGRATION_PC_BLOCKTIME_H
#define FERRY_MIGRATION_PC_BLOCKTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ferry/migration.h"

typedef struct ferry_pc_blocktime {
	unsigned nvcpus; /* registered vCPU threads (0: all faults are non-vCPU ones) */
	pid_t tid[FERRY_POSTCOPY_MAX_VCPUS];
	struct {
		bool waiting;
		unsigned block;
		uint64_t page, begin_ns;
		uint64_t faults, latency_ns, blocked_ns;
	} vcpu[FERRY_POSTCOPY_MAX_VCPUS];
	unsigned down;          /* vCPUs waiting now */
	uint64_t all_begin_ns;  /* when the last of them started waiting */
	uint64_t all_blocked_ns;
	uint64_t non_vcpu_faults, non_vcpu_latency_ns;
	uint64_t dist[FERRY_POSTCOPY_LATENCY_BUCKETS];
} ferry_pc_blocktime;

/* The vCPU threads' ids (copied; at most FERRY_POSTCOPY_MAX_VCPUS). */
void ferry__pc_bt_init(ferry_pc_blocktime *bt, const pid_t *tids, unsigned n);

/*
 * A fault on (block, page) by thread ptid at now, for a page that is
 * missing. Returns true if ptid is a vCPU (its wait is timed here); false
 * for a non-vCPU thread (timed by the request, ferry__pc_bt_non_vcpu).
 */
bool ferry__pc_bt_begin(ferry_pc_blocktime *bt, pid_t ptid, unsigned block, uint64_t page,
			uint64_t now_ns);

/* (block, page) was placed at now: ends the waits of the vCPUs on it. */
void ferry__pc_bt_end(ferry_pc_blocktime *bt, unsigned block, uint64_t page, uint64_t now_ns);

/* A non-vCPU fault resolved after latency_ns. */
void ferry__pc_bt_non_vcpu(ferry_pc_blocktime *bt, uint64_t latency_ns);

/* The figures into info (the postcopy_blocktime_* / _latency_* members). */
void ferry__pc_bt_fill(const ferry_pc_blocktime *bt, ferry_migration_info *info);

#endif
