/* SPDX-License-Identifier: MIT */
/*
 * Postcopy helpers both sides use (postcopy.h): the fault-path threads'
 * CPU and priority, the end of a recovery, a block's index, and the
 * decoding of one page bitmap message (DISCARD on the destination, MISSING
 * on the source). The destination's postcopy is in postcopy-dst.c.
 *
 * Thread: any; none of these keeps state.
 */
#include "migration/postcopy.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "stream/format.h"
#include "stream/wire.h"

void ferry__pc_boost_thread(struct ferry_migration *m)
{
	ferry_migration_params p;
	ferry__mig_params(m, &p);
	const int cpu = p.postcopy_cpu;
	/*
	 * Pinned to cpu (x-postcopy-cpu) if asked: the threads of one page
	 * request then wake each other on one CPU, without an inter-processor
	 * interrupt. Checked when the parameter was set; a failure here (the
	 * process's CPUs changed since) only costs latency.
	 */
	if (cpu >= 0) {
		cpu_set_t cs;
		CPU_ZERO(&cs);
		CPU_SET(cpu, &cs);
		int e = pthread_setaffinity_np(pthread_self(), sizeof(cs), &cs);
		if (e)
			ferry_warn("postcopy: cannot pin a fault-path thread to CPU %d: %s", cpu,
				   strerror(e));
	}
	/*
	 * A vCPU waits on this thread: run it before the (busy) vCPU threads.
	 * SCHED_FIFO at the lowest real-time priority, so that it preempts them
	 * the moment it wakes. Measured (bench/postcopy.py, preempt, 6 runs
	 * each): p99 fault latency 344-884 us, against 557-2359 us at nice -10
	 * and 786-1703 us with nice -10 plus a 100 us EEVDF slice. It sleeps
	 * in read()/poll() between faults, and the kernel's real-time
	 * throttling bounds it anyway. Without the right (CAP_SYS_NICE or
	 * RLIMIT_RTPRIO) nice -10; without that either, nothing breaks.
	 */
	struct sched_param sp = { .sched_priority = 1 };
	if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0)
		return;
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), -10))
		ferry_dbg("postcopy: cannot raise the priority of a fault-path thread: %s",
			  strerror(errno));
}

/* Takes stats_lock, then vm->mig_lock (not both at once). */
void ferry__pc_recovered(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->stats_lock);
	m->info.postcopy_recoveries++;
	if (!m->info.error) /* the pause's reason (ferry__mig_pause_reason) is over */
		m->info.error_desc[0] = 0;
	m->pause_why[0] = 0; /* a cut while paused does not explain the next pause */
	pthread_mutex_unlock(&m->stats_lock);
	ferry__mig_set_status(m, FERRY_MIGRATION_POSTCOPY_ACTIVE);
}

unsigned ferry__block_index(const ferry_vm_t *vm, const struct ferry_ram_block *rb)
{
	for (unsigned i = 0; i < vm->nblocks; i++)
		if (vm->blocks[i] == rb)
			return i;
	return 0;
}

int ferry__pc_bitmap_decode(ferry_vm_t *vm, ferry_chan *c, const uint8_t *p, size_t len,
			    unsigned long **maps, unsigned *block, uint64_t *first,
			    uint64_t *npages)
{
	char name[FERRY_NAME_MAX + 1];
	const uint8_t *q;
	uint64_t f;
	size_t body;
	int r = ferry__wire_bitmap_decode(c, p, len, name, &f, &q, &body);
	if (r)
		return r;
	struct ferry_ram_block *rb = ferry_ram_block_find(vm, name);
	if (!rb)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "page bitmap for unknown RAM block '%s'",
					name);
	if (f % 64 || f >= rb->npages || body % 8 || body == 0 || body > FERRY_PC_BITMAP_CHUNK ||
	    body * 8 > ((rb->npages - f + 63) & ~(uint64_t)63))
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"page bitmap of RAM block '%s' at page %llu, %zu bytes: "
					"outside the block (%llu pages)",
					rb->name, (unsigned long long)f, body,
					(unsigned long long)rb->npages);
	unsigned bi = ferry__block_index(vm, rb);
	uint64_t n = body * 8;
	if (n > rb->npages - f)
		n = rb->npages - f;
	for (size_t w = 0; w < body / FERRY_BITMAP_WORD_LEN; w++) {
		uint64_t v = ferry__wire_bitmap_word(q, w);
		uint64_t page0 = f + w * 64;
		if (page0 + 64 > rb->npages) /* bits past the block's end are ignored */
			v &= (1ULL << (rb->npages - page0)) - 1;
		maps[bi][f / 64 + w] |= v;
	}
	*block = bi;
	*first = f;
	*npages = n;
	return 0;
}
