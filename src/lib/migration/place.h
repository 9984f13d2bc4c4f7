/* SPDX-License-Identifier: MIT */
/*
 * The destination's placer: the one place where received pages are written
 * into guest RAM during precopy (place.c).
 *
 * Callers: the RAM loader (ram-load.c, records of the main channel, on
 * mig/dst/main), the multifd receivers (multifd.c, mig/dst/recv_N) and the
 * placing threads below (mig/dst/place_N), and postcopy (postcopy-dst.c):
 * at LISTEN, ferry__place_fini() ends the precopy strategies and RAM is
 * registered for postcopy, whose page bookkeeping (ferry__pc_place) then
 * places through ferry__place_atomic() while the guest runs.
 *
 * One page's path: a loader or receiver checks the record against the
 * block, then ferry__place_recv() reads its data from the channel straight
 * into the mapping (FERRY_PLACE_MAPPING) or into a bounce buffer that
 * ferry__place_buf() writes with UFFDIO_COPY or pwrite(); a zero page goes
 * through ferry__place_zero(). The placing threads do the same for jobs
 * queued by mig/dst/main (ferry__placer_*), keeping the stream's order per
 * page (placeq.h).
 *
 * Every function here returns 0 or a negative errno; those that take a
 * channel record their failure on it (ferry__chan_fail).
 */
#ifndef FERRY_MIGRATION_PLACE_H
#define FERRY_MIGRATION_PLACE_H

#include "migration/mig.h"

/*
 * Decides per block how precopy pages are written (ferry_ram_block.place)
 * from want (FERRY_PLACE_*), opening and registering vm->place_uffd when
 * used; blocks written through their mapping are FERRY_PLACE_COPY when
 * copy (x-user-copy), else FERRY_PLACE_MAPPING. *used: the placement of
 * the file-backed blocks (the mapping's if none). Fails (with err) only when userfaultfd was
 * asked for and is unavailable.
 * Thread: mig/dst/main, before any receive thread starts.
 */
int ferry__place_setup(ferry_vm_t *vm, uint32_t want, bool copy, uint32_t *used,
		       ferry_error *err);
/*
 * End of the precopy RAM phase: unregisters the userfaultfd placement, so
 * that device state, vCPUs and postcopy find ordinary memory. Idempotent.
 * Thread: mig/dst/main (or the package loader it runs), receive threads idle.
 */
void ferry__place_end(ferry_vm_t *vm);
/* After the receive threads were joined: ends and closes it all. Thread: mig/dst/main. */
void ferry__place_fini(ferry_vm_t *vm);

/*
 * The end of the run of consecutive pages that starts at idx[i] (i < n):
 * the first k > i whose idx[k] is not idx[k - 1] + 1, or n. A run is
 * one copy, one read, one iovec or one bitmap update instead of one per
 * page.
 */
static inline uint32_t ferry__place_run_end(const uint64_t *idx, uint32_t i, uint32_t n)
{
	uint32_t k = i + 1;
	while (k < n && idx[k] == idx[k - 1] + 1)
		k++;
	return k;
}

/* Whether rb's pages are received straight into its mapping (no bounce). */
static inline bool ferry__place_in_mapping(const struct ferry_ram_block *rb)
{
	return rb->place == FERRY_PLACE_MAPPING;
}

/*
 * Reads n pages of page data from c and places them at pages idx[0..n) of
 * rb (first + i when idx is NULL), every index already checked against the
 * block. bounce holds at least n pages (used unless in the mapping).
 * Thread: any receiving thread (mig/dst/main, mig/dst/recv_N); writers of
 * the same page are ordered by the caller (multifd sync, placeq).
 */
int ferry__place_recv(ferry_chan *c, struct ferry_ram_block *rb, const uint64_t *idx,
		      uint64_t first, uint32_t n, uint8_t *bounce);
/* Places n pages held in buf the same way (checked indices). Thread: as above. */
int ferry__place_buf(ferry_chan *c, struct ferry_ram_block *rb, const uint64_t *idx,
		     uint64_t first, uint32_t n, const uint8_t *buf);
/*
 * A zero page received for page (checked): clears it if it was received
 * before (fresh RAM is zero), without faulting in a missing page.
 * Thread: as above (each page has one writer per pass).
 */
int ferry__place_zero(ferry_chan *c, struct ferry_ram_block *rb, uint64_t page);

/*
 * Postcopy's strategy, once RAM is registered for it (the guest may run):
 * pages are placed whole and atomically through uffd. placed(opaque,
 * first, n) reports each run that is now in RAM (also a page that was
 * there already).
 */
struct ferry_place_atomic {
	int uffd;      /* postcopy's userfaultfd, every block registered MISSING */
	bool zeropage; /* UFFDIO_ZEROPAGE works (else zeros are copied) */
	void (*placed)(void *opaque, uint64_t first, uint64_t n);
	void *opaque;
};
/*
 * n pages of rb from first: data (n pages) or zeros (data NULL).
 * Thread: any postcopy thread (mig/dst/listen, mig/dst/preempt,
 * mig/dst/fault, mig/dst/main for the package); the kernel serialises
 * placements of one page, so writers need no lock.
 */
int ferry__place_atomic(const struct ferry_place_atomic *pa, struct ferry_ram_block *rb,
			uint64_t first, uint32_t n, const uint8_t *data);

/*
 * Placing threads (mig/dst/place_N) behind an ordering queue: the filler
 * (one thread, mig/dst/main) takes a free slot, reads a record's pages
 * into it and pushes it; the threads place slots oldest first, in parallel
 * where their pages do not overlap. A failure is sticky: the jobs after it
 * in the stream are dropped, and every later call of the filler reports,
 * once the jobs in flight are done, the failure of the earliest job that
 * failed (a later job may fail first on the other thread).
 */
struct ferry_placer;

/* Starts the threads; NULL when not worth it (one CPU) or impossible. */
struct ferry_placer *ferry__placer_start(void);
/*
 * The CPU time the placing threads used since they started (ns; 0 for
 * NULL). Thread: the one that stops pl (it reads started).
 */
uint64_t ferry__placer_cpu_ns(struct ferry_placer *pl);
/*
 * The next free slot's buffer (FERRY_RAM_MAX_RUN pages; waits for one),
 * or NULL with the placer's failure (reported on c) in *r.
 */
uint8_t *ferry__placer_slot(ferry_chan *c, struct ferry_placer *pl, int *r);
/*
 * Whether no queued or placing job holds any of pages [first, first + n)
 * of rb (and nothing failed): then the filler may write them itself, as
 * it alone queues. Takes pl's lock.
 */
bool ferry__placer_clear_of(struct ferry_placer *pl, const struct ferry_ram_block *rb,
			    uint64_t first, uint32_t n);
/* Queues that slot: n pages of rb from first, data in its buffer or zeros. */
void ferry__placer_push(struct ferry_placer *pl, struct ferry_ram_block *rb, uint64_t first,
			uint32_t n, bool zero);
/* Waits until every queued job is placed; the failure, if any (on c). */
int ferry__placer_drain(ferry_chan *c, struct ferry_placer *pl);
/* Stops and joins the threads and frees pl (NULL: nothing). */
void ferry__placer_stop(struct ferry_placer *pl);

#endif
