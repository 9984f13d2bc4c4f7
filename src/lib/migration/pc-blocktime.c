/* SPDX-License-Identifier: MIT */
/*
 * Postcopy blocktime and fault latency per vCPU: see pc-blocktime.h.
 *
 * Thread: callers hold the postcopy state's stat_lock.
 */
#include "migration/pc-blocktime.h"

#include <string.h>

void ferry__pc_bt_init(ferry_pc_blocktime *bt, const pid_t *tids, unsigned n)
{
	memset(bt, 0, sizeof(*bt));
	bt->nvcpus = n < FERRY_POSTCOPY_MAX_VCPUS ? n : FERRY_POSTCOPY_MAX_VCPUS;
	if (bt->nvcpus)
		memcpy(bt->tid, tids, bt->nvcpus * sizeof(bt->tid[0]));
}

/* Bucket N holds [2^N, 2^(N+1)) us; below 1 us goes to 0, beyond the last to the last. */
static void dist_add(ferry_pc_blocktime *bt, uint64_t ns)
{
	uint64_t us = ns / 1000;
	unsigned b = us ? 63u - (unsigned)__builtin_clzll(us) : 0;
	bt->dist[b < FERRY_POSTCOPY_LATENCY_BUCKETS ? b : FERRY_POSTCOPY_LATENCY_BUCKETS - 1]++;
}

static int vcpu_of(const ferry_pc_blocktime *bt, pid_t ptid)
{
	for (unsigned i = 0; ptid && i < bt->nvcpus; i++)
		if (bt->tid[i] == ptid)
			return (int)i;
	return -1;
}

bool ferry__pc_bt_begin(ferry_pc_blocktime *bt, pid_t ptid, unsigned block, uint64_t page,
			uint64_t now_ns)
{
	int v = vcpu_of(bt, ptid);
	if (v < 0)
		return false;
	if (bt->vcpu[v].waiting) /* its fault message came twice: the first one counts */
		return true;
	bt->vcpu[v].waiting = true;
	bt->vcpu[v].block = block;
	bt->vcpu[v].page = page;
	bt->vcpu[v].begin_ns = now_ns;
	bt->vcpu[v].faults++;
	if (++bt->down == bt->nvcpus)
		bt->all_begin_ns = now_ns;
	return true;
}

void ferry__pc_bt_end(ferry_pc_blocktime *bt, unsigned block, uint64_t page, uint64_t now_ns)
{
	for (unsigned v = 0; v < bt->nvcpus; v++) {
		if (!bt->vcpu[v].waiting || bt->vcpu[v].block != block || bt->vcpu[v].page != page)
			continue;
		uint64_t d = now_ns - bt->vcpu[v].begin_ns;
		bt->vcpu[v].waiting = false;
		bt->vcpu[v].latency_ns += d;
		bt->vcpu[v].blocked_ns += d;
		dist_add(bt, d);
		if (bt->down-- == bt->nvcpus) /* every vCPU was waiting until now */
			bt->all_blocked_ns += now_ns - bt->all_begin_ns;
	}
}

void ferry__pc_bt_non_vcpu(ferry_pc_blocktime *bt, uint64_t latency_ns)
{
	bt->non_vcpu_faults++;
	bt->non_vcpu_latency_ns += latency_ns;
	dist_add(bt, latency_ns);
}

void ferry__pc_bt_fill(const ferry_pc_blocktime *bt, ferry_migration_info *info)
{
	uint64_t faults = bt->non_vcpu_faults, ns = bt->non_vcpu_latency_ns;
	info->postcopy_vcpus = bt->nvcpus;
	for (unsigned v = 0; v < bt->nvcpus; v++) {
		info->postcopy_vcpu_blocktime_ms[v] = bt->vcpu[v].blocked_ns / 1000000;
		info->postcopy_vcpu_latency_ns[v] =
			bt->vcpu[v].faults ? bt->vcpu[v].latency_ns / bt->vcpu[v].faults : 0;
		faults += bt->vcpu[v].faults;
		ns += bt->vcpu[v].latency_ns;
	}
	info->postcopy_all_blocktime_ms = bt->all_blocked_ns / 1000000;
	info->postcopy_latency_ns = faults ? ns / faults : 0;
	info->postcopy_non_vcpu_latency_ns =
		bt->non_vcpu_faults ? bt->non_vcpu_latency_ns / bt->non_vcpu_faults : 0;
	memcpy(info->postcopy_latency_dist, bt->dist, sizeof(bt->dist));
}
