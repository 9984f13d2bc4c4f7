/* SPDX-License-Identifier: MIT */
/*
 * The RAM loader: parses the records of the "ram" section's bodies on one
 * input channel (the main connection, a postcopy package's listener, the
 * preempt connection) and hands their pages to the placer (place.h).
 *
 * DESIGN: records are bounds-checked against the local block before
 * anything is written. Before postcopy's LISTEN, PAGES and ZEROS go to the
 * placer: queued to its placing threads when it runs (the main connection
 * without multifd or postcopy), else placed inline. Destination RAM is zero
 * when registered, so a ZEROS run needs work only for pages this migration
 * already wrote data to: the `received` bitmap, set by PAGES only (a zero
 * page that was a hole stays one, and its bit clear), and cleared again
 * where postcopy discard punches pages. A set bit thus means "the page is
 * in the block's memory": the placer writes such pages with memcpy. After
 * LISTEN (l->pc set) the guest may run: pages are read whole into the
 * bounce buffer and placed atomically by postcopy (ferry__pc_place).
 * Page data is always read "direct" (ferry__chan_read_direct): it carries
 * its own checksums, so it stays out of the channel's control hash and its
 * input buffer (one copy from the socket, no second hash of every byte).
 *
 * Thread: one loader belongs to the thread that reads its channel:
 * mig/dst/main, mig/dst/listen or mig/dst/preempt. It takes no lock of its
 * own; the placer and the multifd receiver lock what they share.
 */
#include "migration/mig.h"

#include <errno.h>
#include <stdlib.h>

#include "migration/multifd.h"
#include "migration/participant.h"
#include "migration/place.h"
#include "migration/postcopy-dst.h"
#include "stream/format.h"
#include "stream/wire.h"

static int load_mem_size(ferry_vm_t *vm, ferry_chan *c, uint64_t total)
{
	uint32_t n;
	int r = ferry__wire_get_mem_size(c, &n);
	if (r)
		return r;
	if (n != vm->nblocks)
		return ferry__chan_fail(c, FERRY_EMISMATCH,
					"stream has %u RAM blocks, destination has %u", n,
					vm->nblocks);
	uint64_t sum = 0;
	for (uint32_t i = 0; i < n; i++) {
		char name[FERRY_NAME_MAX + 1];
		uint64_t size;
		if ((r = ferry__wire_get_block_entry(c, name, &size)))
			return r;
		struct ferry_ram_block *rb = ferry_ram_block_find(vm, name);
		if (!rb)
			return ferry__chan_fail(c, FERRY_EMISMATCH,
						"RAM block '%s' does not exist on the destination",
						name);
		if (rb->size != size)
			return ferry__chan_fail(c, FERRY_EMISMATCH,
						"RAM block '%s' is %llu bytes in the stream, %llu here",
						name, (unsigned long long)size,
						(unsigned long long)rb->size);
		sum += size;
	}
	if (sum != total)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"RAM total %llu does not match the blocks' sum %llu",
					(unsigned long long)total, (unsigned long long)sum);
	return 0;
}

/*
 * The placing threads for l, started on the first record that can use
 * them: only for the main channel of a precopy without multifd or
 * postcopy, and for blocks whose placement may wait on page allocation,
 * which two threads overlap. NULL when records are placed inline: one
 * CPU, no thread could be started, rb is received straight into its
 * mapping, or it takes a copy into memory that is all there already
 * (FERRY_PLACE_COPY into a fully allocated file: the handoff costs more
 * than the copy; measured, bench/vs-qemu --base, random-1 preallocated,
 * 4 runs: 2.62 GB/s inline against 2.13 through the placers, the
 * destination's CPU 0.50-0.56 s against 0.70-1.10).
 */
static struct ferry_placer *placer_want(ferry_ram_loader *l, const struct ferry_ram_block *rb)
{
	if (l->pc || l->mf || ferry__place_in_mapping(rb) ||
	    (rb->place == FERRY_PLACE_COPY && rb->place_filled))
		return NULL;
	if (!l->placer_tried) { /* decided once: no syscall or retry per record */
		l->placer_tried = true;
		l->placer = ferry__placer_start();
	}
	return l->placer;
}

/*
 * Whether a run is written here rather than queued to the placing
 * threads, which cost a slot's handoff (a wakeup) per run, and later
 * passes send scattered pages, a run each: a run whose pages were all
 * placed before (a later pass's copy: mapped, a plain memcpy), or a short
 * one (PLACE_HANDOFF_MIN), whose first touch costs less than its handoff.
 * Long runs of fresh pages still go to the threads, which share their
 * first touch out over the CPUs. Only when no queued or placing job holds
 * any of the run's pages, so that nothing lands after this write (only
 * this thread queues).
 * Measured (bench/precopy.py --downtime-grid cells, 2 vCPUs random,
 * unthrottled, 50 ms limit): later passes 2.8-4.2 GB/s against 0.6, the
 * switch after 3 passes against 6-10, downtime 2-4 ms against 36-63 (200
 * MB/s per vCPU); with a guest that populates its RAM as it runs (fresh
 * pages in every pass, fill=none), 400 MB/s per vCPU: 7-8 ms after 3
 * passes with short fresh runs placed here, 21-31 ms after 3-16 passes
 * with them queued.
 */
enum { PLACE_HANDOFF_MIN = 16 }; /* pages */
static bool place_here(struct ferry_placer *pl, const struct ferry_ram_block *rb, uint64_t first,
		       uint32_t n)
{
	for (uint64_t p = first; n >= PLACE_HANDOFF_MIN && p < first + n; p++)
		if (!ferry__bitmap_test_atomic(rb->received, p))
			return false;
	return ferry__placer_clear_of(pl, rb, first, n);
}

/* A PAGES or ZEROS record as read: where, how many, its checksums (stream/sum.h). */
struct ram_run {
	struct ferry_ram_block *rb;
	bool zero;
	uint64_t first;
	uint32_t n;
	uint64_t rec; /* the record's number on its channel */
	uint8_t sums[FERRY_RAM_MAX_RUN * FERRY_SUM_LEN];
};

/* Progress: relaxed, only counters (ferry__dst_stats reads them on another thread). */
static void count(ferry_ram_loader *l, bool zero, uint32_t n)
{
	atomic_fetch_add_explicit(zero ? &l->zeros : &l->pages, n, memory_order_relaxed);
}

/*
 * The run's checksums (stream/sum.h) once its data is in data (NULL: in
 * guest RAM at its place); zeros make bad pages good. strict: postcopy.
 */
static int verify_run(ferry_ram_loader *l, const struct ram_run *run, const uint8_t *data,
		      bool strict)
{
	ferry_chan *c = l->c;
	if (!c->sums)
		return 0;
	if (run->zero) {
		ferry__sum_clear(c->sums, run->rb, NULL, run->first, run->n);
		return 0;
	}
	return ferry__sum_check_pages(c, run->rec, run->rb, NULL, run->first, run->n, data, run->sums,
				      strict);
}

/*
 * One PAGES (zero false) or ZEROS run of rb, its bounds checked: hands it
 * to postcopy's atomic placement after LISTEN (verified first), else to
 * the placer (queued to the placing threads when they run and the run is
 * not one to place here, place_here; else placed here), verified as it
 * lands.
 */
static int load_run(ferry_ram_loader *l, const struct ram_run *run)
{
	ferry_chan *c = l->c;
	struct ferry_ram_block *rb = run->rb;
	bool zero = run->zero;
	uint64_t first = run->first;
	uint32_t n = run->n;
	int r;
	if (l->pc) {
		/* Postcopy: RAM may be in use; place whole pages atomically. */
		unsigned bi = ferry__block_index(l->vm, rb);
		/*
		 * Direct, as the source sends it (put_external): read through the
		 * channel's buffer, the background cost mig/dst/listen a memcpy and
		 * a control-hash pass per byte, 0.25 s of CPU per GB (measured).
		 */
		if (!zero && (r = ferry__chan_read_direct(c, l->bounce, (size_t)n << FERRY_PAGE_SHIFT)))
			return r;
		if ((r = verify_run(l, run, l->bounce, true)))
			return r;
		if ((r = ferry__pc_place(l->pc, bi, first, n, zero ? NULL : l->bounce)))
			return ferry__chan_fail(c, r, "cannot place pages %llu..%llu of '%s': %s",
						(unsigned long long)first,
						(unsigned long long)(first + n - 1), rb->name,
						ferry_strerror(r));
		count(l, zero, n);
		return 0;
	}
	struct ferry_placer *pl = placer_want(l, rb);
	if (pl && !place_here(pl, rb, first, n)) {
		uint8_t *buf = ferry__placer_slot(c, pl, &r);
		if (!buf)
			return r;
		if (!zero && (r = ferry__chan_read_direct(c, buf, (size_t)n << FERRY_PAGE_SHIFT)))
			return r;
		verify_run(l, run, buf, false);
		ferry__placer_push(pl, rb, first, n, zero);
		count(l, zero, n);
		return 0;
	}
	if (zero) {
		for (uint64_t p = first; p < first + n; p++)
			if ((r = ferry__place_zero(c, rb, p)))
				return r;
		count(l, true, n);
		verify_run(l, run, NULL, false);
		return 0; /* holes stay holes: `received` only for data */
	}
	if (!ferry__place_in_mapping(rb) && !l->bounce &&
	    !(l->bounce = malloc((size_t)FERRY_RAM_MAX_RUN << FERRY_PAGE_SHIFT)))
		return ferry__chan_fail(c, -ENOMEM, "out of memory for a RAM buffer");
	if ((r = ferry__place_recv(c, rb, NULL, first, n, l->bounce)))
		return r;
	verify_run(l, run, ferry__place_in_mapping(rb) ? NULL : l->bounce, false);
	count(l, false, n);
	/* Atomic: the placing threads may set bits of the same words meanwhile (place_here). */
	ferry__bitmap_set_range_atomic((_Atomic unsigned long *)rb->received, first, n);
	return 0;
}

int ferry__ram_part_load(void *opaque, ferry_chan *c, const ferry_section *s)
{
	ferry_ram_loader *l = opaque;
	if (s->type == FERRY_REC_SECTION_PART || s->type == FERRY_REC_SECTION_END)
		return ferry__ram_load(l, false);
	if (s->type != FERRY_REC_SECTION_START || s->id != FERRY_SECTION_RAM || s->instance != 0)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"RAM section must be a start section with id %u",
					FERRY_SECTION_RAM);
	if (s->version != FERRY_RAM_VERSION)
		return ferry__chan_fail(c, FERRY_EVERSION, "RAM section version %u (supported: %u)",
					s->version, FERRY_RAM_VERSION);
	if (l->started)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "second RAM setup section");
	l->started = true;
	return ferry__ram_load(l, true);
}

void ferry__ram_loader_fini(ferry_ram_loader *l)
{
	ferry__placer_stop(l->placer);
	l->placer = NULL;
}

static int ram_load_records(ferry_ram_loader *l, bool setup);

int ferry__ram_load(ferry_ram_loader *l, bool setup)
{
	int r = ram_load_records(l, setup);
	if (l->placer) {
		int e = ferry__placer_drain(l->c, l->placer);
		if (!r)
			r = e;
	}
	return r;
}

/* The block a PAGES/ZEROS record names, or the last one (CONTINUE). */
static int record_block(ferry_ram_loader *l, uint64_t flags, struct ferry_ram_block **out)
{
	ferry_chan *c = l->c;
	if (flags & FERRY_RAM_CONTINUE) {
		if (!l->last)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"RAM record continues a block but none was named");
		*out = l->last;
		return 0;
	}
	char name[FERRY_NAME_MAX + 1];
	int r = ferry__wire_get_name(c, FERRY_WIRE_BLOCK, name);
	if (r)
		return r;
	struct ferry_ram_block *rb = ferry_ram_block_find(l->vm, name);
	if (!rb)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown RAM block '%s'", name);
	*out = l->last = rb;
	return 0;
}

/* A PAGES or ZEROS record: its block, count and range checked, then placed. */
static int load_pages_record(ferry_ram_loader *l, uint64_t flags, uint64_t addr)
{
	ferry_chan *c = l->c;
	uint64_t kind = flags & ~(uint64_t)FERRY_RAM_CONTINUE;
	bool free_run = kind == FERRY_RAM_FREE && c->sums;
	if (kind != FERRY_RAM_PAGES && kind != FERRY_RAM_ZEROS && !free_run)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown RAM record flags 0x%llx",
					(unsigned long long)flags);
	ferry__chan_ctx_name(c, kind == FERRY_RAM_PAGES ? "RAM pages"
				: kind == FERRY_RAM_ZEROS ? "RAM zero pages" : "RAM free pages");
	struct ram_run run = { .zero = kind == FERRY_RAM_ZEROS, .first = addr >> FERRY_PAGE_SHIFT };
	int r;
	if ((r = record_block(l, flags, &run.rb)) || (r = ferry__wire_get_ram_count(c, &run.n)) ||
	    (r = ferry__wire_get_ram_sums(c, kind, run.rb->name, run.first, run.n, run.sums,
					  &run.rec)))
		return r;
	struct ferry_ram_block *rb = run.rb;
	uint64_t first = run.first;
	uint32_t n = run.n;
	if (first >= rb->npages || n > rb->npages - first)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"pages %llu..%llu outside RAM block '%s' (%llu pages)",
					(unsigned long long)first, (unsigned long long)(first + n - 1),
					rb->name, (unsigned long long)rb->npages);
	if (free_run) { /* hinted free: whatever copy is here does not matter */
		ferry__sum_clear(c->sums, rb, NULL, first, n);
		return 0;
	}
	return load_run(l, &run);
}

/*
 * The source closed the connection while its multifd channels owed a sync
 * (ferry__mf_recv_sync's -ENOTCONN): the record after the sync, already
 * here, says why if it is a cancel notice. Nothing after the sync is acted
 * on: the channels' pages are missing.
 */
static int load_orphaned_sync(ferry_chan *c)
{
	uint64_t flags, addr;
	int r = ferry__wire_get_ram_word(c, &flags, &addr);
	if (r)
		return r;
	if (flags == FERRY_RAM_CANCELLED && !addr)
		return ferry__chan_fail_msg(c, FERRY_EPEER, FERRY_CANCELLED_MSG);
	return ferry__chan_fail_msg(c, -ENOTCONN, FERRY_MF_ORPHANED_MSG);
}

/* One record after its RAM word; *eos set at the end of the section. */
static int load_record(ferry_ram_loader *l, uint64_t flags, uint64_t addr, bool setup, bool *eos)
{
	ferry_chan *c = l->c;
	switch (flags) {
	case FERRY_RAM_EOS:
		*eos = true;
		return addr ? ferry__chan_fail(c, FERRY_EBADSTREAM,
					       "RAM end-of-section with offset bits set")
			    : 0;
	case FERRY_RAM_MULTIFD_SYNC: {
		if (addr || !l->mf)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "multifd sync %s",
						l->mf ? "with offset bits set" : "without multifd");
		ferry__chan_ctx_name(c, "multifd sync");
		int r = ferry__mf_recv_sync(l->mf);
		return r == -ENOTCONN ? load_orphaned_sync(c) : r;
	}
	case FERRY_RAM_CANCELLED:
		if (!addr)
			return ferry__chan_fail_msg(c, FERRY_EPEER, FERRY_CANCELLED_MSG);
		break;
	case FERRY_RAM_MEM_SIZE:
		if (!setup)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"RAM block list outside the setup section");
		ferry__chan_ctx_name(c, "RAM block list");
		return load_mem_size(l->vm, c, addr);
	}
	return load_pages_record(l, flags, addr);
}

static int ram_load_records(ferry_ram_loader *l, bool setup)
{
	bool eos = false;
	int r;
	while (!eos) {
		uint64_t flags, addr;
		ferry__chan_ctx(l->c, "RAM record");
		if ((r = ferry__wire_get_ram_word(l->c, &flags, &addr)) ||
		    (r = load_record(l, flags, addr, setup, &eos)))
			return r;
	}
	return 0;
}
