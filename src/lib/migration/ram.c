/* SPDX-License-Identifier: MIT */
/*
 * RAM: the "ram" section on both sides.
 *
 * DESIGN (source): the migration thread owns a dirty bitmap per block
 * (1 bit per page). Setup starts dirty tracking first and then marks every
 * populated page dirty, so a page written at any moment after setup is in
 * either the initial set or a later harvest; never-populated pages are not
 * read at all. A pass walks the bitmap, clears each run of dirty pages, and
 * hands it to the saver's page sink (sink.h): on the main channel, PAGES
 * records (iovecs pointing at guest RAM, no copy) or ZEROS records (a marker
 * for runs of zero pages); with multifd, jobs for the channel threads
 * (multifd.c). Tracking was re-armed before the pages are read, so a write
 * racing with the send is caught by the next harvest. Pages the guest
 * reported free are skipped (hints.c).
 *
 * DESIGN (destination): records are bounds-checked against the local block
 * before anything is written; PAGES are placed per block as
 * ferry__ram_place_setup decided (UFFDIO_COPY or pwrite() from a bounce
 * buffer, or received straight into the mapping). Destination RAM is zero
 * when registered, so a ZEROS run needs work only for pages this migration
 * already wrote data to: the `received` bitmap, set by PAGES only (a zero
 * page that was a hole stays one, and its bit clear), and cleared again
 * where postcopy discard punches pages. A set bit thus means "the page is
 * in the block's memory": place_uffd writes such pages with memcpy.
 *
 * Thread: the source side runs on mig/src/main, the destination side on
 * mig/dst/main, which may hand placement to mig/dst/place_N (the placement
 * pipeline below). RAM itself takes no lock.
 */
#include "migration/mig.h"
#include "migration/placeq.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "migration/multifd.h"
#include "migration/participant.h"
#include "migration/postcopy.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "util/zero.h"

#define FLUSH_BYTES (2u << 20)
/* query-migrate's counters are refreshed at least this often while sending. */
#define STATS_NS 20000000ull
/* Postcopy: background runs of at most this many pages, flushed often. */
#define PC_RUN 64u
#define PC_FLUSH_BYTES (256u << 10)
/* Pages classified zero/non-zero per round (64 MiB), and the smallest
 * batch worth handing half of to the helper. */
#define SCAN_BATCH 16384u
#define SPLIT_MIN 512u

static void rs_stats(ferry_ram_saver *rs, uint64_t remaining_pages)
{
	struct ferry_migration *m = rs->m;
	pthread_mutex_lock(&m->stats_lock);
	m->info.transferred = rs->c->out_bytes;
	m->info.normal = rs->normal;
	m->info.duplicate = rs->zero;
	if (rs->sink && rs->sink->ops->stats)
		rs->sink->ops->stats(rs->sink, &m->info);
	m->info.normal_bytes = m->info.normal * FERRY_PAGE_SIZE;
	m->info.skipped = rs->skipped;
	ferry__ram_hints_stats(rs, &m->info);
	m->info.remaining = remaining_pages * FERRY_PAGE_SIZE;
	/* mbps over the last window of at least 100 ms (QEMU's definition). */
	uint64_t now = ferry__now_ns();
	rs->stats_ns = now;
	if (!rs->mbps_t0) {
		rs->mbps_t0 = now;
		rs->mbps_b0 = m->info.transferred;
	} else if (now - rs->mbps_t0 >= 100000000ull) {
		m->info.mbps = (double)(m->info.transferred - rs->mbps_b0) * 8 * 1e3 /
			       (double)(now - rs->mbps_t0);
		rs->mbps_t0 = now;
		rs->mbps_b0 = m->info.transferred;
	}
	pthread_mutex_unlock(&m->stats_lock);
}

/* Bytes written so far: the main connection plus the sink's own channels. */
static uint64_t wire_bytes(ferry_ram_saver *rs)
{
	uint64_t b = rs->c->out_bytes;
	if (rs->sink->ops->bytes)
		b += rs->sink->ops->bytes(rs->sink);
	return b;
}

/* Progress within the current pass (cheap: called every ~1-2 MiB sent). */
static void rs_progress(ferry_ram_saver *rs)
{
	rs_stats(rs, rs->dirty_pages - rs->processed);
}

void ferry__ram_stats(ferry_ram_saver *rs)
{
	rs_stats(rs, rs->dirty_pages);
}

/*
 * The main channel's on_write hook: refreshes the counters while a long
 * flush goes out in grants of the rate limit (and when the channel
 * flushes by itself, its iovec array full, long before FLUSH_BYTES).
 */
static void rs_tick(void *opaque)
{
	ferry_ram_saver *rs = opaque;
	if (ferry__now_ns() - rs->stats_ns >= STATS_NS)
		rs_progress(rs);
}

static int rs_flush(ferry_ram_saver *rs)
{
	int r = ferry__chan_flush(rs->c);
	if (r)
		return r;
	rs_progress(rs);
	return ferry__mig_cancelled(rs->m) ? -ECANCELED : 0;
}

static void put_section_header(ferry_chan *c, uint8_t type)
{
	if (type == FERRY_REC_SECTION_START || type == FERRY_REC_SECTION_FULL)
		ferry__wire_put_section_start(c, type, FERRY_SECTION_RAM, FERRY_RAM_IDSTR, 0,
					      FERRY_RAM_VERSION);
	else
		ferry__wire_put_section_part(c, type, FERRY_SECTION_RAM);
}

static void put_section_end(ferry_chan *c)
{
	ferry__wire_put_ram_flag(c, FERRY_RAM_EOS);
	ferry__wire_put_footer(c, FERRY_SECTION_RAM);
}

int ferry__ram_save_setup(ferry_ram_saver *rs)
{
	ferry_vm_t *vm = rs->vm;
	uint64_t t0 = ferry__now_ns();
	int r = 0;

	if (!rs->sink)
		ferry__ram_set_sink(rs, NULL);
	rs->zmap = ferry__bitmap_new(SCAN_BATCH);
	rs->pmap = ferry__bitmap_new(SCAN_BATCH);
	if (!rs->zmap || !rs->pmap)
		return -ENOMEM;
	if ((r = ferry__ram_hints_alloc(rs)))
		return r;
	if (sysconf(_SC_NPROCESSORS_ONLN) > 1 && ferry__helper_start(&rs->zero_helper, "mig/src/zero"))
		ferry_warn("no helper thread: zero detection on one core");

	/*
	 * Tracking is registered here but pages are write-protected chunk by
	 * chunk during the first pass, right before each chunk is read: setup
	 * stays short whatever the RAM size, and the protection work is split
	 * over two threads like zero detection (see first_pass_chunk).
	 */
	rs->dirty_pages = 0;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		ferry__bitmap_zero(rb->dirty, rb->npages);
		if (vm->dirty_mode == FERRY_DIRTY_EXPLICIT) {
			ferry__bitmap_zero((unsigned long *)rb->mark_log, rb->npages);
			/* Marks count from here on; the first pass reads after this. */
			atomic_store(&rb->marking, true);
		} else if ((r = ferry__dirty_track_register(&vm->dirty, rb->host, rb->size))) {
			ferry__mig_set_error(rs->m, r, "cannot start dirty tracking on '%s': %s",
					     rb->name, ferry_strerror(r));
			for (unsigned j = 0; j < i; j++)
				ferry__dirty_track_stop(&vm->dirty, vm->blocks[j]->host,
							vm->blocks[j]->size);
			return r;
		}
		rs->maps_file[i] = ferry__ram_maps_file(rb->host, rb->size, rb->fd);
		rs->dirty_pages += rb->npages;
		/*
		 * With hints, every page must be tracked before the first
		 * command id goes out: a page reported free and then written is
		 * sent only because the write is harvested.
		 */
		if (!r && rs->protect_all &&
		    (r = ferry__dirty_track_protect(&vm->dirty, rb->host, rb->size)))
			ferry__mig_set_error(rs->m, r, "cannot write-protect RAM block '%s': %s",
					     rb->name, ferry_strerror(r));
		if (r) {
			for (unsigned j = 0; j <= i; j++)
				ferry__dirty_track_stop(&vm->dirty, vm->blocks[j]->host,
							vm->blocks[j]->size);
			return r;
		}
	}
	rs->tracking = true;
	rs->first_pass = true;
	ferry_info("setup: dirty tracking registered in %.1f ms", (double)(ferry__now_ns() - t0) / 1e6);
	ferry_chan *c = rs->c;
	uint64_t total = 0;
	for (unsigned i = 0; i < vm->nblocks; i++)
		total += vm->blocks[i]->size;
	put_section_header(c, FERRY_REC_SECTION_START);
	ferry__wire_put_mem_size(c, total, vm->nblocks);
	for (unsigned i = 0; i < vm->nblocks; i++)
		ferry__wire_put_block_entry(c, vm->blocks[i]->name, vm->blocks[i]->size);
	put_section_end(c);
	c->on_write = rs_tick;
	c->on_write_opaque = rs;
	r = rs_flush(rs);
	rs_stats(rs, rs->dirty_pages);
	return r;
}

int ferry__ram_sync(ferry_ram_saver *rs, uint64_t *newly)
{
	ferry_vm_t *vm = rs->vm;
	uint64_t total = 0;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		uint64_t n = 0;
		int r = ferry__dirty_harvest(&vm->dirty, rb->host, rb->size, rb->mark_log, rb->dirty,
					     &n);
		if (r) {
			ferry__mig_set_error(rs->m, r, "dirty log sync failed on '%s': %s", rb->name,
					     ferry_strerror(r));
			return r;
		}
		total += n;
	}
	rs->dirty_pages += total;
	if (newly)
		*newly = total;
	rs_stats(rs, rs->dirty_pages);
	return 0;
}

/*
 * The main channel's sink: one PAGES or ZEROS record per run, naming the
 * block only when it changes; flushed every FLUSH_BYTES (PC_FLUSH_BYTES in
 * postcopy, where requests wait behind the background).
 */
static int chan_put(ferry_page_sink *s, const struct ferry_ram_block *rb, uint64_t kind,
		    uint64_t start, uint32_t n)
{
	ferry_ram_saver *rs = ferry_container_of(s, ferry_ram_saver, chan_sink);
	ferry_chan *c = rs->c;
	ferry__wire_put_ram_run(c, kind, rb == rs->last_block ? NULL : rb->name, start, n,
				rb->host + (start << FERRY_PAGE_SHIFT));
	rs->last_block = rb;
	if (kind == FERRY_RAM_PAGES) {
		rs->normal += n;
	} else {
		rs->zero += n;
	}
	if (ferry__chan_pending(c) >= (rs->postcopy ? PC_FLUSH_BYTES : FLUSH_BYTES))
		return rs_flush(rs);
	return 0;
}

static const ferry_page_sink_ops chan_sink_ops = {
	.put = chan_put,
};

/* A batch went to another carrier: refresh the counters as a flush does. */
static void rs_sent(void *opaque)
{
	rs_progress(opaque);
}

void ferry__ram_set_sink(ferry_ram_saver *rs, ferry_page_sink *sink)
{
	rs->chan_sink.ops = &chan_sink_ops;
	rs->sink = sink ? sink : &rs->chan_sink;
	rs->sink->on_sent = rs_sent;
	rs->sink->on_sent_opaque = rs;
}

/* Queues pages [start, start + n) of rb, of the given kind, on the saver's sink. */
static int emit(ferry_ram_saver *rs, const struct ferry_ram_block *rb, uint64_t kind,
		uint64_t start, uint64_t n)
{
	rs->processed += n;
	int r = rs->sink->ops->put(rs->sink, rb, kind, start, (uint32_t)n);
	if (r)
		return r;
	/*
	 * Scattered pages fill the channel's iovecs long before FLUSH_BYTES, so
	 * it flushes by itself and rs_flush's check may not come for a whole
	 * chunk: look at cancel after every record (a record boundary, where
	 * the cancel notice can follow).
	 */
	return ferry__mig_cancelled(rs->m) ? -ECANCELED : 0;
}

/*
 * Work on pages [first, first + n) of a chunk of up to SCAN_BATCH pages
 * starting at page `base` of rb; first % 64 == 0, so two jobs of one chunk
 * never write the same bitmap word.
 *  prepare (first pass only): write-protect the pages, then find which are
 *  populated (pmap). Protection comes first, so a page is either read after
 *  its protection (and later writes are harvested) or was never populated.
 *  Then: zero detection of the (populated) pages into zmap.
 */
struct chunk_job {
	ferry_ram_saver *rs;
	struct ferry_ram_block *rb;
	uint64_t base, first, n;
	bool prepare, maps_file;
	int err;
	const char *what;
};

static void chunk_fn(void *arg)
{
	struct chunk_job *j = arg;
	ferry_ram_saver *rs = j->rs;
	const uint8_t *cbase = j->rb->host + (j->base << FERRY_PAGE_SHIFT);
	uint64_t w0 = j->first / FERRY_BITS_PER_LONG, w1 = FERRY_BITMAP_LONGS(j->first + j->n);
	j->err = 0;
	if (j->prepare) {
		uint8_t *host = j->rb->host + ((j->base + j->first) << FERRY_PAGE_SHIFT);
		uint64_t len = j->n << FERRY_PAGE_SHIFT, cnt;
		j->err = rs->protect_all ? 0 : ferry__dirty_track_protect(&rs->vm->dirty, host, len);
		j->what = "cannot write-protect";
		if (j->err)
			return;
		for (uint64_t w = w0; w < w1; w++)
			rs->pmap[w] = 0;
		/* The whole file allocated (or none of it): no need to walk it. */
		int fill = j->maps_file ? ferry__ram_file_fill(j->rb->fd, j->rb->size) : -1;
		if (fill == 1) {
			ferry__bitmap_set_range(rs->pmap, j->first, j->n);
		} else if (fill == -1) {
			j->what = "cannot scan";
			j->err = ferry__ram_scan_populated(host, len, j->rb->fd,
							   (j->base + j->first) << FERRY_PAGE_SHIFT,
							   rs->pmap + w0, &cnt);
			if (j->err)
				return;
		}
	}
	if (rs->sink->finds_zero) {
		/* Multifd: zero detection happens in the channel threads. */
		for (uint64_t w = w0; w < w1; w++)
			rs->zmap[w] = 0;
		return;
	}
	for (uint64_t w = w0; w < w1; w++) {
		unsigned long bits = 0;
		unsigned long want = j->prepare ? rs->pmap[w] : ~0UL;
		uint64_t p0 = w * FERRY_BITS_PER_LONG, p1 = p0 + FERRY_BITS_PER_LONG;
		if (p1 > j->first + j->n)
			p1 = j->first + j->n;
		for (uint64_t p = p0; p < p1; p++)
			if (((want >> (p - p0)) & 1) &&
			    ferry__page_is_zero(cbase + (p << FERRY_PAGE_SHIFT)))
				bits |= 1UL << (p - p0);
		rs->zmap[w] = bits;
	}
}

/*
 * Page i of a chunk starting at page base: 0 never populated (first pass;
 * skipped), 3 reported free for the current hint id (skipped), 1 zero
 * page, 2 data page. Hints are polled between chunks, so a hint that
 * arrives after the chunk's zero check only counts from the next chunk.
 */
static int page_kind(ferry_ram_saver *rs, const unsigned long *hinted, uint64_t base, uint64_t i,
		     bool prepare)
{
	if (prepare && !ferry__bitmap_test(rs->pmap, i))
		return 0;
	if (hinted && ferry__bitmap_test(hinted, base + i))
		return 3;
	return ferry__bitmap_test(rs->zmap, i) ? 1 : 2;
}

/*
 * Runs chunk_fn over a chunk of n pages, the second half on the helper
 * thread when the chunk is large: zero detection reads every byte of a zero
 * page and write protection touches every PTE, so two cores do it nearly
 * twice as fast as one. Then queues the chunk's records: runs of data
 * pages (PAGES), of zero pages (ZEROS), and, in the first pass, skips
 * never-populated pages without reading them.
 */
static int send_chunk(ferry_ram_saver *rs, struct ferry_ram_block *rb, uint64_t base, uint64_t n,
		      bool prepare, bool maps_file)
{
	struct chunk_job lo = { rs, rb, base, 0, n, prepare, maps_file, 0, NULL }, hi = lo;
	bool split = rs->zero_helper.started && n >= SPLIT_MIN;
	if (split) {
		uint64_t half = (n / 2) & ~(uint64_t)(FERRY_BITS_PER_LONG - 1);
		hi.first = half;
		hi.n = n - half;
		lo.n = half;
		ferry__helper_submit(&rs->zero_helper, chunk_fn, &hi);
	}
	chunk_fn(&lo);
	if (split)
		ferry__helper_wait(&rs->zero_helper);
	struct chunk_job *bad = lo.err ? &lo : hi.err ? &hi : NULL;
	if (bad) {
		ferry__mig_set_error(rs->m, bad->err, "%s RAM block '%s': %s", bad->what, rb->name,
				     ferry_strerror(bad->err));
		return bad->err;
	}
	unsigned long *hinted = rs->hints.hinted[ferry__block_index(rs->vm, rb)];
	for (uint64_t i = 0; i < n;) {
		int kind = page_kind(rs, hinted, base, i, prepare);
		uint64_t j = i + 1;
		while (j < n && j - i < FERRY_RAM_MAX_RUN && page_kind(rs, hinted, base, j, prepare) == kind)
			j++;
		if (kind == 0 || kind == 3) {
			*(kind == 0 ? &rs->skipped : &rs->hints.skipped) += j - i;
			rs->processed += j - i;
		} else {
			int r = emit(rs, rb, kind == 1 ? FERRY_RAM_ZEROS : FERRY_RAM_PAGES, base + i,
				     j - i);
			if (r)
				return r;
		}
		i = j;
	}
	return 0;
}

/* Sends dirty pages [page, end) of rb, split into zero and data runs. */
static int send_run(ferry_ram_saver *rs, struct ferry_ram_block *rb, uint64_t page, uint64_t end)
{
	while (page < end) {
		uint64_t n = end - page < SCAN_BATCH ? end - page : SCAN_BATCH;
		int r = send_chunk(rs, rb, page, n, false, false);
		if (r)
			return r;
		page += n;
	}
	return 0;
}

/* migrate-start-postcopy: the pass ends early, what it did not send stays dirty. */
static bool switch_requested(ferry_ram_saver *rs)
{
	return rs->pc_start && atomic_load_explicit(rs->pc_start, memory_order_relaxed);
}

/*
 * The first pass visits every page of every block, chunk by chunk:
 * protect, find populated pages, send those.
 */
static int first_pass(ferry_ram_saver *rs)
{
	ferry_vm_t *vm = rs->vm;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		for (uint64_t base = 0; base < rb->npages; base += SCAN_BATCH) {
			uint64_t n = rb->npages - base < SCAN_BATCH ? rb->npages - base : SCAN_BATCH;
			if (switch_requested(rs)) {
				/* Postcopy now: what this pass did not visit is all still to send. */
				ferry__bitmap_set_range(rb->dirty, base, rb->npages - base);
				for (unsigned k = i + 1; k < vm->nblocks; k++)
					ferry__bitmap_fill(vm->blocks[k]->dirty, vm->blocks[k]->npages);
				return 0;
			}
			ferry__ram_hints_poll(rs);
			int r = send_chunk(rs, rb, base, n, true, rs->maps_file[i]);
			if (r)
				return r;
		}
	}
	return 0;
}

int ferry__ram_save_pass(ferry_ram_saver *rs, uint8_t section_type)
{
	ferry_vm_t *vm = rs->vm;
	ferry_chan *c = rs->c;
	uint64_t t0 = ferry__now_ns(), b0 = wire_bytes(rs);
	int r = 0;

	rs->processed = 0;
	put_section_header(c, section_type);
	rs->in_section = true;
	rs->last_block = NULL; /* each section names its first block */
	if (rs->first_pass) {
		r = first_pass(rs);
		rs->first_pass = false;
	}
	for (unsigned i = 0; i < vm->nblocks && !r; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		uint64_t page = ferry__bitmap_next_set(rb->dirty, rb->npages, 0);
		while (page < rb->npages && !switch_requested(rs)) {
			uint64_t end = ferry__bitmap_next_clear(rb->dirty, rb->npages, page);
			if (end - page > SCAN_BATCH)
				end = page + SCAN_BATCH; /* a pending switch is seen within 64 MiB */
			ferry__ram_hints_poll(rs); /* may clear bits of this run: look again */
			if (!ferry__bitmap_test(rb->dirty, page)) {
				page = ferry__bitmap_next_set(rb->dirty, rb->npages, page);
				continue;
			}
			end = ferry__bitmap_next_clear(rb->dirty, end, page);
			ferry__bitmap_clear_range(rb->dirty, page, end - page);
			r = send_run(rs, rb, page, end);
			if (r)
				break;
			page = ferry__bitmap_next_set(rb->dirty, rb->npages, end);
		}
	}
	if (!r && rs->sink->ops->pass_end)
		r = rs->sink->ops->pass_end(rs->sink);
	if (!r) {
		put_section_end(c);
		rs->in_section = false;
		r = rs_flush(rs);
	}
	rs->dirty_pages = r ? rs->dirty_pages - rs->processed : 0;
	rs->send_ns += ferry__now_ns() - t0;
	rs->pass_bytes = wire_bytes(rs) - b0;
	rs->sent_bytes += rs->pass_bytes;
	ferry_info("pass: %llu pages (%llu bytes) in %.1f ms", (unsigned long long)rs->processed,
		   (unsigned long long)rs->pass_bytes, (double)(ferry__now_ns() - t0) / 1e6);
	rs_stats(rs, rs->dirty_pages);
	return r;
}

void ferry__ram_put_cancelled(ferry_ram_saver *rs)
{
	if (rs->in_section)
		ferry__wire_put_ram_flag(rs->c, FERRY_RAM_CANCELLED);
	else
		ferry__wire_put_record(rs->c, FERRY_REC_CANCELLED);
}

int ferry__ram_send_pages(ferry_ram_saver *rs, const struct ferry_ram_block *rb,
			  uint64_t first, uint32_t n)
{
	uint64_t before = rs->processed;
	int r = emit(rs, rb, FERRY_RAM_PAGES, first, n);
	rs->processed = before; /* not part of the background pass's count */
	return r ? r : rs_flush(rs);
}

int ferry__ram_postcopy_pass(ferry_ram_saver *rs, pthread_mutex_t *lock,
			     int (*serve)(void *opaque), void *opaque)
{
	ferry_vm_t *vm = rs->vm;
	ferry_chan *c = rs->c;
	int r = 0;
	rs->processed = 0;
	put_section_header(c, FERRY_REC_SECTION_PART);
	rs->last_block = NULL;
	for (unsigned i = 0; i < vm->nblocks && !r; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		uint64_t page = 0;
		for (;;) {
			if ((r = serve(opaque)))
				break;
			pthread_mutex_lock(lock);
			page = ferry__bitmap_next_set(rb->dirty, rb->npages, page);
			uint64_t end = page;
			if (page < rb->npages) {
				end = ferry__bitmap_next_clear(rb->dirty, rb->npages, page);
				if (end - page > PC_RUN)
					end = page + PC_RUN;
				ferry__bitmap_clear_range(rb->dirty, page, end - page);
			}
			pthread_mutex_unlock(lock);
			if (page >= rb->npages)
				break;
			/* Zero runs and data runs; source vCPUs are stopped, RAM is stable. */
			for (uint64_t p = page; p < end && !r;) {
				bool z = ferry__page_is_zero(rb->host + (p << FERRY_PAGE_SHIFT));
				uint64_t q = p + 1;
				while (q < end && ferry__page_is_zero(rb->host + (q << FERRY_PAGE_SHIFT)) == z)
					q++;
				r = emit(rs, rb, z ? FERRY_RAM_ZEROS : FERRY_RAM_PAGES, p, q - p);
				p = q;
			}
			if (r)
				break;
			page = end;
		}
	}
	/* Pages the guest reported free (and did not write since): zero pages, placed now. */
	struct ferry_ram_block *zrb;
	uint64_t zfirst, zn;
	while (!r && ferry__ram_hints_next_zeros(rs, &zrb, &zfirst, &zn))
		if (!(r = serve(opaque)))
			r = emit(rs, zrb, FERRY_RAM_ZEROS, zfirst, zn);
	if (!r) {
		put_section_end(c);
		r = rs_flush(rs);
	}
	rs_stats(rs, 0);
	return r;
}

void ferry__ram_save_cleanup(ferry_ram_saver *rs)
{
	ferry_vm_t *vm = rs->vm;
	ferry__helper_stop(&rs->zero_helper);
	free(rs->zmap);
	free(rs->pmap);
	rs->zmap = rs->pmap = NULL;
	ferry__ram_hints_cleanup(rs);
	if (!rs->tracking)
		return;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		if (vm->dirty_mode == FERRY_DIRTY_EXPLICIT)
			atomic_store(&rb->marking, false);
		else
			ferry__dirty_track_stop(&vm->dirty, rb->host, rb->size);
	}
	rs->tracking = false;
}

/* ---- the RAM participant (participant.h; opaque: the saver) ---- */

static int ram_part_setup(void *opaque, ferry_chan *c)
{
	(void)c; /* the saver writes on rs->c, the same channel */
	return ferry__ram_save_setup(opaque);
}

static int ram_part_iterate(void *opaque, ferry_chan *c)
{
	(void)c;
	return ferry__ram_save_pass(opaque, FERRY_REC_SECTION_PART);
}

static int ram_part_sync(void *opaque, uint64_t *dirtied)
{
	uint64_t newly = 0;
	int r = ferry__ram_sync(opaque, &newly);
	*dirtied += newly * FERRY_PAGE_SIZE;
	return r;
}

/* Every dirty page can go while the guest runs. */
static void ram_part_pending(void *opaque, uint64_t *precopy, uint64_t *stopcopy)
{
	const ferry_ram_saver *rs = opaque;
	(void)stopcopy;
	*precopy += rs->dirty_pages * FERRY_PAGE_SIZE;
}

static int ram_part_complete(void *opaque, ferry_chan *c)
{
	(void)c;
	return ferry__ram_save_pass(opaque, FERRY_REC_SECTION_END);
}

static void ram_part_cleanup(void *opaque)
{
	ferry__ram_save_cleanup(opaque);
}

/* After a postcopy switch, the rest of RAM goes in the background pass. */
const ferry_participant ferry__ram_participant = {
	.name = "ram",
	.flags = FERRY_PART_POSTCOPY,
	.save_setup = ram_part_setup,
	.save_iterate = ram_part_iterate,
	.sync = ram_part_sync,
	.pending = ram_part_pending,
	.save_complete = ram_part_complete,
	.save_cleanup = ram_part_cleanup,
};

/* ---- destination ---- */

/*
 * Placement of precopy pages (the destination guest does not run). A block
 * that maps its fd at offset 0 (MAP_SHARED memfd) and is not allocated yet
 * gets brand-new pages: a first write through the mapping takes a page
 * fault per 4 KiB page that allocates, zeroes and maps it (inside recv(),
 * with the socket locked). Two placements avoid that; both receive the
 * page data of a record or packet into a bounce buffer first (one recv),
 * then:
 *  - FERRY_PLACE_UFFD: the block is registered with a userfaultfd in
 *    MISSING mode for the RAM phase, and each run of consecutive pages is
 *    placed with one UFFDIO_COPY, which allocates, fills and maps the
 *    pages without zeroing them first and without a file-wide lock, so
 *    the multifd receive threads place in parallel. A page that exists
 *    already (sent again in a later pass) answers EEXIST and is written
 *    through the mapping. Nothing may touch a missing page meanwhile: a
 *    user-space reader would wait until the RAM phase ends
 *    (ferry__ram_place_end unregisters, which wakes it).
 *  - FERRY_PLACE_PWRITE: pwrite() per run into the file: no faults and no
 *    zeroing either, but the file's lock (i_rwsem) lets one writer in at a
 *    time, so receive threads queue on it (measured: two threads place no
 *    faster than one). The fallback when userfaultfd is unavailable.
 * Other blocks (anonymous memory, a file whose every page is allocated, as
 * with prealloc, or shmem huge pages on "advise", which only a fault
 * through a MADV_HUGEPAGE mapping gets) are received straight into the
 * mapping (FERRY_PLACE_MAPPING). docs/architecture.md has the numbers.
 */

/*
 * Whether shmem transparent huge pages are only given to mappings that asked
 * for them (shmem_enabled "advise"): then a fault through a MADV_HUGEPAGE
 * mapping allocates 2 MiB at once while pwrite() or UFFDIO_COPY (no fault)
 * get 4 KiB pages, so placing through them would lose the huge pages. With
 * "never"/"deny" no path gets them; with "always"/"within_size"/"force"
 * pwrite does too.
 */
static bool shmem_thp_advise(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
	if (!f)
		return false;
	bool advise = fgets(buf, sizeof(buf), f) && strstr(buf, "[advise]");
	fclose(f);
	return advise;
}

static const char *place_name(unsigned p)
{
	return p == FERRY_PLACE_UFFD	 ? "userfaultfd"
	       : p == FERRY_PLACE_PWRITE ? "pwrite"
					 : "mapping";
}

/* Opens vm->place_uffd and registers every FERRY_PLACE_UFFD block. */
static int place_uffd_open(ferry_vm_t *vm, char *err, size_t len)
{
	int fd = ferry__uffd_open();
	if (fd < 0) {
		snprintf(err, len, "userfaultfd: %s", ferry_strerror(fd));
		return fd;
	}
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int r = -errno;
		close(fd);
		snprintf(err, len, "UFFDIO_API: %s", ferry_strerror(r));
		return r;
	}
	vm->place_uffd = fd;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		if (rb->place != FERRY_PLACE_UFFD)
			continue;
		struct uffdio_register reg = {
			.range = {.start = (uintptr_t)rb->host, .len = rb->size},
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
			int r = -errno;
			snprintf(err, len, "cannot register RAM block '%.64s' with userfaultfd: %s",
				 rb->name, ferry_strerror(r));
			ferry__ram_place_end(vm);
			ferry__ram_place_fini(vm);
			return r;
		}
		vm->place_registered = true;
	}
	return 0;
}

int ferry__ram_place_setup(ferry_vm_t *vm, uint32_t want, uint32_t *used, char *err, size_t len)
{
	bool advise = shmem_thp_advise(), any = false;
	*used = FERRY_PLACE_AUTO;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		/*
		 * Fully allocated RAM (prealloc) needs no page allocation: a
		 * recv() straight into it (already mapped) then saves the
		 * bounce copy.
		 */
		bool fresh_file = !advise && ferry__ram_maps_file(rb->host, rb->size, rb->fd) &&
				  ferry__ram_file_fill(rb->fd, rb->size) != 1;
		rb->place = !fresh_file			     ? FERRY_PLACE_MAPPING
			    : want == FERRY_PLACE_AUTO ? FERRY_PLACE_UFFD
						       : (uint8_t)want;
		any |= rb->place == FERRY_PLACE_UFFD;
	}
	if (any) {
		char why[200];
		int r = place_uffd_open(vm, why, sizeof(why));
		if (r && want == FERRY_PLACE_UFFD) {
			snprintf(err, len, "x-placement userfaultfd: %.200s", why);
			return r;
		}
		if (r) {
			ferry_dbg("destination: %s; placing with pwrite()", why);
			for (unsigned i = 0; i < vm->nblocks; i++)
				if (vm->blocks[i]->place == FERRY_PLACE_UFFD)
					vm->blocks[i]->place = FERRY_PLACE_PWRITE;
		}
	}
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		if (rb->place != FERRY_PLACE_MAPPING || *used == FERRY_PLACE_AUTO)
			*used = rb->place;
		ferry_dbg("destination: RAM block '%s' placed through %s", rb->name,
			  place_name(rb->place));
	}
	return 0;
}

void ferry__ram_place_end(ferry_vm_t *vm)
{
	if (!vm->place_registered)
		return;
	/* Also wakes any thread that touched a missing page meanwhile. */
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		struct uffdio_range rg = {.start = (uintptr_t)rb->host, .len = rb->size};
		if (rb->place == FERRY_PLACE_UFFD)
			ioctl(vm->place_uffd, UFFDIO_UNREGISTER, &rg);
	}
	vm->place_registered = false;
}

void ferry__ram_place_fini(ferry_vm_t *vm)
{
	ferry__ram_place_end(vm);
	if (vm->place_uffd >= 0)
		close(vm->place_uffd);
	vm->place_uffd = -1;
}

/* Placement failures: an errno and the page it hit, reported by the caller. */
#define FERRY_PLACE_MSG_MAX (FERRY_NAME_MAX + 320)
struct place_err {
	int err;
	uint64_t page;
};

static int place_err(struct place_err *pe, uint64_t page, int e)
{
	pe->err = e;
	pe->page = page;
	return e;
}

static void place_err_msg(const struct ferry_ram_block *rb, const struct place_err *pe, char *buf,
			  size_t len)
{
	snprintf(buf, len, "cannot write page %llu of RAM block '%s': %s",
		 (unsigned long long)pe->page, rb->name, ferry_strerror(pe->err));
}

static int place_fail(ferry_chan *c, const struct ferry_ram_block *rb, const struct place_err *pe)
{
	char msg[FERRY_PLACE_MSG_MAX];
	place_err_msg(rb, pe, msg, sizeof(msg));
	return ferry__chan_fail(c, pe->err, "%s", msg);
}

/*
 * UFFDIO_COPY of n pages from p to page. Pages already received (a later
 * pass's copy) are in the file and mapped or mappable without a
 * userfault, so they are written with memcpy: a failing UFFDIO_COPY per
 * page cost ~10% of a running guest's migration. (Postcopy discard clears
 * `received` for the pages it punches, so a hole is never written that
 * way: the write would block on the placement userfaultfd.) A page that
 * exists without its bit (EEXIST) is copied over too.
 */
static int place_uffd(struct place_err *pe, struct ferry_ram_block *rb, uint64_t page, uint32_t n,
		      const uint8_t *p)
{
	int uffd = rb->vm->place_uffd;
	while (n) {
		/* `received` bits of other pages may be set by other receive threads. */
		uint32_t k = 0;
		while (k < n && ferry__bitmap_test_atomic(rb->received, page + k))
			k++;
		if (k) {
			memcpy(rb->host + (page << FERRY_PAGE_SHIFT), p, (size_t)k << FERRY_PAGE_SHIFT);
			page += k;
			p += (size_t)k << FERRY_PAGE_SHIFT;
			n -= k;
			continue;
		}
		while (k < n && !ferry__bitmap_test_atomic(rb->received, page + k))
			k++;
		struct uffdio_copy cp = {
			.dst = (uintptr_t)rb->host + (page << FERRY_PAGE_SHIFT),
			.src = (uintptr_t)p,
			.len = (uint64_t)k << FERRY_PAGE_SHIFT,
			.mode = UFFDIO_COPY_MODE_DONTWAKE, /* nobody waits on these pages */
		};
		if (ioctl(uffd, UFFDIO_COPY, &cp) == 0) {
			page += k;
			p += (size_t)k << FERRY_PAGE_SHIFT;
			n -= k;
			continue;
		}
		int e = errno;
		if (cp.copy > 0) { /* a prefix was placed (the call says EAGAIN) */
			uint32_t k = (uint32_t)((uint64_t)cp.copy >> FERRY_PAGE_SHIFT);
			page += k;
			p += (size_t)k << FERRY_PAGE_SHIFT;
			n -= k;
			continue;
		}
		if (e == EEXIST) {
			/* Placed in an earlier pass: mapped, so a plain write is safe. */
			memcpy(rb->host + (page << FERRY_PAGE_SHIFT), p, FERRY_PAGE_SIZE);
			page++;
			p += FERRY_PAGE_SIZE;
			n--;
			continue;
		}
		if (e == EAGAIN || e == EINTR)
			continue; /* the mapping was changing */
		return place_err(pe, page, -e);
	}
	return 0;
}

static int place_buf(struct place_err *pe, struct ferry_ram_block *rb, const uint64_t *idx,
		     uint64_t first, uint32_t n, const uint8_t *buf)
{
	for (uint32_t i = 0; i < n;) {
		uint32_t k = idx ? i + 1 : n;
		while (k < n && idx[k] == idx[k - 1] + 1)
			k++;
		uint64_t page = idx ? idx[i] : first + i;
		const uint8_t *p = buf + ((size_t)i << FERRY_PAGE_SHIFT);
		size_t len = (size_t)(k - i) << FERRY_PAGE_SHIFT;
		int r;
		if (rb->place == FERRY_PLACE_MAPPING) {
			memcpy(rb->host + (page << FERRY_PAGE_SHIFT), p, len);
		} else if (rb->place == FERRY_PLACE_UFFD) {
			if ((r = place_uffd(pe, rb, page, k - i, p)))
				return r;
		} else {
			off_t off = (off_t)(page << FERRY_PAGE_SHIFT);
			while (len) {
				ssize_t w = pwrite(rb->fd, p, len, off);
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					return place_err(pe, (uint64_t)off >> FERRY_PAGE_SHIFT,
							 w < 0 ? -errno : -EIO);
				p += w;
				off += w;
				len -= (size_t)w;
			}
		}
		i = k;
	}
	return 0;
}

int ferry__ram_place_buf(ferry_chan *c, struct ferry_ram_block *rb, const uint64_t *idx,
			 uint64_t first, uint32_t n, const uint8_t *buf)
{
	struct place_err pe;
	return place_buf(&pe, rb, idx, first, n, buf) ? place_fail(c, rb, &pe) : 0;
}

static int place_zero(struct place_err *pe, struct ferry_ram_block *rb, uint64_t page)
{
	uint8_t *a = rb->host + (page << FERRY_PAGE_SHIFT);
	/* Atomic: placing threads set bits of other pages in the same word. */
	if (!ferry__bitmap_test_atomic(rb->received, page))
		return 0; /* fresh RAM reads as zero */
	if (rb->place == FERRY_PLACE_UFFD) {
		/* The page may be a hole (it was zero before too): never fault it. */
		for (;;) {
			struct uffdio_zeropage zp = {
				.range = {.start = (uintptr_t)a, .len = FERRY_PAGE_SIZE},
				.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE,
			};
			if (ioctl(rb->vm->place_uffd, UFFDIO_ZEROPAGE, &zp) == 0)
				return 0;
			if (errno == EEXIST)
				break;
			if (errno != EAGAIN && errno != EINTR)
				return place_err(pe, page, -errno);
		}
	}
	memset(a, 0, FERRY_PAGE_SIZE);
	return 0;
}

int ferry__ram_place_zero(ferry_chan *c, struct ferry_ram_block *rb, uint64_t page)
{
	struct place_err pe;
	return place_zero(&pe, rb, page) ? place_fail(c, rb, &pe) : 0;
}

int ferry__ram_recv_pages(ferry_chan *c, struct ferry_ram_block *rb, const uint64_t *idx,
			  uint64_t first, uint32_t n, uint8_t *bounce)
{
	int r;
	if (rb->place != FERRY_PLACE_MAPPING) {
		if ((r = ferry__chan_read_direct(c, bounce, (size_t)n << FERRY_PAGE_SHIFT)))
			return r;
		return ferry__ram_place_buf(c, rb, idx, first, n, bounce);
	}
	for (uint32_t i = 0; i < n;) {
		uint32_t k = idx ? i + 1 : n;
		while (k < n && idx[k] == idx[k - 1] + 1)
			k++;
		uint64_t page = idx ? idx[i] : first + i;
		if ((r = ferry__chan_read_direct(c, rb->host + (page << FERRY_PAGE_SHIFT),
						 (size_t)(k - i) << FERRY_PAGE_SHIFT)))
			return r;
		i = k;
	}
	return 0;
}

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
 * The placement pipeline: precopy over the main connection alone (no
 * multifd, no postcopy) into blocks placed by userfaultfd or pwrite().
 * One thread would receive each record and then place it, and placing
 * costs the most: page allocation and a copy into fresh memory, whose
 * first write is expensive where the machine is itself a VM that hands
 * freed memory back to its host (see docs/architecture.md). So mig/dst/main
 * receives PAGES into a free slot and queues it, and PLACER_THREADS threads
 * (mig/dst/place_N) place the queued slots: on a two-CPU machine both CPUs
 * then take first-write faults, where one placing thread left the other
 * mostly idle.
 *
 * Order: every write to guest RAM and to `received` keeps the stream's
 * order where it matters, i.e. for the same page (a later pass's copy lands
 * after the earlier one). Placing threads take queued slots oldest first,
 * and a slot whose pages overlap a slot still being placed waits for it;
 * slots of distinct pages are placed in any order (placeq.h, unit-tested).
 * ZEROS runs queue too.
 * ferry__ram_load drains the queue before it returns, so between sections
 * nothing is in flight: device state, discards and postcopy see RAM as the
 * stream left it.
 */
#define PLACER_THREADS 2u

struct place_job {
	struct ferry_ram_block *rb;
	uint64_t first;
	uint32_t n;
	bool zero; /* a ZEROS run; else PAGES held in buf */
	uint8_t *buf; /* FERRY_RAM_MAX_RUN pages, the slot's own */
};

struct ferry_ram_placer {
	pthread_t thread[PLACER_THREADS];
	unsigned started;       /* threads running; mig/dst/main's */
	_Atomic unsigned named; /* for the threads' names */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a job was queued, taken or done, or stop */
	/*
	 * job[i] goes with q.slot[i]: a FREE slot outside q's ring belongs to
	 * mig/dst/main, a taken one to the placing thread that took it.
	 */
	struct place_job job[FERRY_PLACEQ_SLOTS];
	struct ferry_placeq q; /* protected by lock */
	bool stop;             /* protected by lock */
	int err;               /* protected by lock: the first failure, sticky */
	char msg[FERRY_PLACE_MSG_MAX]; /* protected by lock: err's message */
};

/* Thread: mig/dst/place_N. Places queued jobs until told to stop. */
static void *placer_main(void *arg)
{
	struct ferry_ram_placer *pl = arg;
	char name[16];
	snprintf(name, sizeof(name), "mig/dst/place_%u", atomic_fetch_add(&pl->named, 1));
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&pl->lock);
	for (;;) {
		int i;
		while ((i = ferry__placeq_take(&pl->q)) < 0 &&
		       !(pl->stop && ferry__placeq_none_queued(&pl->q)))
			pthread_cond_wait(&pl->cond, &pl->lock);
		if (i < 0)
			break;
		struct place_job j = pl->job[i];
		bool skip = pl->err != 0; /* after a failure, jobs are only dropped */
		pthread_mutex_unlock(&pl->lock);
		struct place_err pe = {0};
		int r = 0;
		if (!skip && j.zero) {
			for (uint64_t p = j.first; p < j.first + j.n && !r; p++)
				r = place_zero(&pe, j.rb, p);
		} else if (!skip) {
			r = place_buf(&pe, j.rb, NULL, j.first, j.n, j.buf);
		}
		if (!skip && !r && !j.zero) /* holes stay holes: `received` only for data */
			ferry__bitmap_set_range_atomic((_Atomic unsigned long *)j.rb->received,
						       j.first, j.n);
		pthread_mutex_lock(&pl->lock);
		if (r && !pl->err) {
			pl->err = r;
			place_err_msg(j.rb, &pe, pl->msg, sizeof(pl->msg));
		}
		ferry__placeq_done(&pl->q, i);
		pthread_cond_broadcast(&pl->cond);
	}
	pthread_mutex_unlock(&pl->lock);
	return NULL;
}

/* The placer's failure, reported on c (0 if none). Called with pl->lock held. */
static int placer_err(ferry_chan *c, struct ferry_ram_placer *pl)
{
	return pl->err ? ferry__chan_fail(c, pl->err, "%s", pl->msg) : 0;
}

/*
 * Starts the pipeline for l if it applies and is not running: 1 if it runs,
 * 0 if records are placed inline (one CPU, or no thread could be started).
 */
static int placer_want(ferry_ram_loader *l)
{
	if (l->pc || l->mf)
		return 0;
	if (l->placer_tried) /* decided once: no syscall or retry per record */
		return l->placer != NULL;
	l->placer_tried = true;
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return 0;
	struct ferry_ram_placer *pl = calloc(1, sizeof(*pl));
	if (!pl)
		return 0;
	unsigned i = 0, t = 0;
	for (; i < FERRY_PLACEQ_SLOTS; i++)
		if (!(pl->job[i].buf = malloc((size_t)FERRY_RAM_MAX_RUN << FERRY_PAGE_SHIFT)))
			break;
	pthread_mutex_init(&pl->lock, NULL);
	pthread_cond_init(&pl->cond, NULL);
	if (i == FERRY_PLACEQ_SLOTS)
		while (t < PLACER_THREADS && pthread_create(&pl->thread[t], NULL, placer_main, pl) == 0)
			t++;
	if (!t) {
		while (i--)
			free(pl->job[i].buf);
		pthread_mutex_destroy(&pl->lock);
		pthread_cond_destroy(&pl->cond);
		free(pl);
		return 0;
	}
	pl->started = t;
	l->placer = pl;
	return 1;
}

/* A free slot's job (waits for one), or NULL with the placer's failure in *r. */
static struct place_job *placer_slot(ferry_chan *c, struct ferry_ram_placer *pl, int *r)
{
	pthread_mutex_lock(&pl->lock);
	int i;
	while ((i = ferry__placeq_free_slot(&pl->q)) < 0 && !pl->err)
		pthread_cond_wait(&pl->cond, &pl->lock);
	*r = placer_err(c, pl);
	struct place_job *j = *r ? NULL : &pl->job[i];
	pthread_mutex_unlock(&pl->lock);
	return j;
}

/* Queues the free slot's job j (filled in by the caller). */
static void placer_push(struct ferry_ram_placer *pl, const struct place_job *j)
{
	pthread_mutex_lock(&pl->lock);
	ferry__placeq_push(&pl->q, j->rb, j->first, j->n);
	pthread_cond_broadcast(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
}

/* Waits until every queued job is placed; the placer's failure, if any. */
static int placer_drain(ferry_chan *c, struct ferry_ram_placer *pl)
{
	pthread_mutex_lock(&pl->lock);
	while (pl->q.used)
		pthread_cond_wait(&pl->cond, &pl->lock);
	int r = placer_err(c, pl);
	pthread_mutex_unlock(&pl->lock);
	return r;
}

void ferry__ram_loader_fini(ferry_ram_loader *l)
{
	struct ferry_ram_placer *pl = l->placer;
	if (!pl)
		return;
	pthread_mutex_lock(&pl->lock);
	pl->stop = true;
	pthread_cond_broadcast(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
	for (unsigned t = 0; t < pl->started; t++)
		pthread_join(pl->thread[t], NULL);
	for (unsigned i = 0; i < FERRY_PLACEQ_SLOTS; i++)
		free(pl->job[i].buf);
	pthread_mutex_destroy(&pl->lock);
	pthread_cond_destroy(&pl->cond);
	free(pl);
	l->placer = NULL;
}

static int ram_load_records(ferry_ram_loader *l, bool setup);

int ferry__ram_load(ferry_ram_loader *l, bool setup)
{
	int r = ram_load_records(l, setup);
	if (l->placer) {
		int e = placer_drain(l->c, l->placer);
		if (!r)
			r = e;
	}
	return r;
}

static int ram_load_records(ferry_ram_loader *l, bool setup)
{
	ferry_vm_t *vm = l->vm;
	ferry_chan *c = l->c;
	struct ferry_mf_receiver *mf = l->mf;
	struct ferry_ram_block **last = &l->last;
	int r;
	for (;;) {
		uint64_t flags, addr;
		ferry__chan_ctx(c, "RAM record");
		if ((r = ferry__wire_get_ram_word(c, &flags, &addr)))
			return r;
		if (flags == FERRY_RAM_EOS) {
			if (addr)
				return ferry__chan_fail(c, FERRY_EBADSTREAM,
							"RAM end-of-section with offset bits set");
			return 0;
		}
		if (flags == FERRY_RAM_MULTIFD_SYNC) {
			if (addr || !mf)
				return ferry__chan_fail(c, FERRY_EBADSTREAM,
							"multifd sync %s",
							mf ? "with offset bits set" : "without multifd");
			ferry__chan_ctx_name(c, "multifd sync");
			if ((r = ferry__mf_recv_sync(mf)))
				return r;
			continue;
		}
		if (flags == FERRY_RAM_CANCELLED && !addr)
			return ferry__chan_fail_msg(c, FERRY_EPEER, FERRY_CANCELLED_MSG);
		if (flags == FERRY_RAM_MEM_SIZE) {
			if (!setup)
				return ferry__chan_fail(c, FERRY_EBADSTREAM,
							"RAM block list outside the setup section");
			ferry__chan_ctx_name(c, "RAM block list");
			if ((r = load_mem_size(vm, c, addr)))
				return r;
			continue;
		}
		uint64_t kind = flags & ~(uint64_t)FERRY_RAM_CONTINUE;
		if (kind != FERRY_RAM_PAGES && kind != FERRY_RAM_ZEROS)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"unknown RAM record flags 0x%llx",
						(unsigned long long)flags);
		ferry__chan_ctx_name(c, kind == FERRY_RAM_PAGES ? "RAM pages" : "RAM zero pages");
		struct ferry_ram_block *rb;
		if (flags & FERRY_RAM_CONTINUE) {
			rb = *last;
			if (!rb)
				return ferry__chan_fail(c, FERRY_EBADSTREAM,
							"RAM record continues a block but none was named");
		} else {
			char name[FERRY_NAME_MAX + 1];
			if ((r = ferry__wire_get_name(c, FERRY_WIRE_BLOCK, name)))
				return r;
			rb = ferry_ram_block_find(vm, name);
			if (!rb)
				return ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown RAM block '%s'",
							name);
			*last = rb;
		}
		uint32_t n;
		if ((r = ferry__wire_get_ram_count(c, &n)))
			return r;
		uint64_t first = addr >> FERRY_PAGE_SHIFT;
		if (first >= rb->npages || n > rb->npages - first)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"pages %llu..%llu outside RAM block '%s' (%llu pages)",
						(unsigned long long)first,
						(unsigned long long)(first + n - 1), rb->name,
						(unsigned long long)rb->npages);
		if (l->pc) {
			/* Postcopy: RAM may be in use; place whole pages atomically. */
			unsigned bi = ferry__block_index(vm, rb);
			if (kind == FERRY_RAM_PAGES &&
			    (r = ferry__chan_read(c, l->bounce, (size_t)n << FERRY_PAGE_SHIFT)))
				return r;
			if ((r = ferry__pc_place(l->pc, bi, first, n,
						 kind == FERRY_RAM_PAGES ? l->bounce : NULL)))
				return ferry__chan_fail(c, r, "cannot place pages %llu..%llu of '%s': %s",
							(unsigned long long)first,
							(unsigned long long)(first + n - 1), rb->name,
							ferry_strerror(r));
			*(kind == FERRY_RAM_PAGES ? &l->pages : &l->zeros) += n;
			continue;
		}
		if (rb->place != FERRY_PLACE_MAPPING && placer_want(l)) {
			struct place_job *j = placer_slot(c, l->placer, &r);
			if (!j)
				return r;
			if (kind == FERRY_RAM_PAGES &&
			    (r = ferry__chan_read_direct(c, j->buf, (size_t)n << FERRY_PAGE_SHIFT)))
				return r;
			*j = (struct place_job){.rb = rb, .first = first, .n = n,
						.zero = kind == FERRY_RAM_ZEROS, .buf = j->buf};
			placer_push(l->placer, j);
			*(kind == FERRY_RAM_PAGES ? &l->pages : &l->zeros) += n;
			continue;
		}
		if (kind == FERRY_RAM_PAGES) {
			if (rb->place != FERRY_PLACE_MAPPING && !l->bounce &&
			    !(l->bounce = malloc((size_t)FERRY_RAM_MAX_RUN << FERRY_PAGE_SHIFT)))
				return ferry__chan_fail(c, -ENOMEM, "out of memory for a RAM buffer");
			if ((r = ferry__ram_recv_pages(c, rb, NULL, first, n, l->bounce)))
				return r;
			l->pages += n;
		} else {
			for (uint64_t p = first; p < first + n; p++)
				if ((r = ferry__ram_place_zero(c, rb, p)))
					return r;
			l->zeros += n;
			continue; /* holes stay holes: `received` only for data */
		}
		ferry__bitmap_set_range(rb->received, first, n);
	}
}
