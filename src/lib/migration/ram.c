/* SPDX-License-Identifier: MIT */
/*
 * RAM: the "ram" section, saver (source) side.
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
 * The destination half lives in ram-load.c (the records) and place.c (the
 * placer).
 *
 * Thread: mig/src/main (with its helper mig/src/zero). RAM itself takes no
 * lock.
 */
#include "migration/mig.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/*
 * Starts tracking block i: its dirty log cleared, registered (or, for
 * explicit marking, marks counting from now), and with hints protected
 * whole. On failure block i is left untracked; 0 or a negative errno
 * (recorded on the migration).
 */
static int track_block(ferry_ram_saver *rs, unsigned i)
{
	ferry_vm_t *vm = rs->vm;
	struct ferry_ram_block *rb = vm->blocks[i];
	int r;
	ferry__bitmap_zero(rb->dirty, rb->npages);
	if (vm->dirty_mode == FERRY_DIRTY_EXPLICIT) {
		ferry__bitmap_zero((unsigned long *)rb->mark_log, rb->npages);
		/* Marks count from here on; the first pass reads after this. */
		atomic_store(&rb->marking, true);
	} else if ((r = ferry__dirty_track_register(&vm->dirty, rb->host, rb->size))) {
		ferry__mig_set_error(rs->m, r, "cannot start dirty tracking on '%s': %s", rb->name,
				     ferry_strerror(r));
		return r;
	}
	rs->maps_file[i] = ferry__ram_maps_file(rb->host, rb->size, rb->fd);
	rs->dirty_pages += rb->npages;
	/*
	 * With hints, every page must be tracked before the first command id
	 * goes out: a page reported free and then written is sent only because
	 * the write is harvested.
	 */
	if (rs->protect_all && (r = ferry__dirty_track_protect(&vm->dirty, rb->host, rb->size))) {
		ferry__mig_set_error(rs->m, r, "cannot write-protect RAM block '%s': %s", rb->name,
				     ferry_strerror(r));
		ferry__dirty_track_stop(&vm->dirty, rb->host, rb->size);
		return r;
	}
	return 0;
}

/*
 * Tracking is registered here but pages are write-protected chunk by chunk
 * during the first pass, right before each chunk is read: setup stays short
 * whatever the RAM size, and the protection work is split over two threads
 * like zero detection (see first_pass_chunk). All blocks or none.
 */
static int track_start(ferry_ram_saver *rs)
{
	ferry_vm_t *vm = rs->vm;
	rs->dirty_pages = 0;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		int r = track_block(rs, i);
		if (r) {
			for (unsigned j = 0; j < i; j++)
				ferry__dirty_track_stop(&vm->dirty, vm->blocks[j]->host,
							vm->blocks[j]->size);
			return r;
		}
	}
	return 0;
}

/* RAM's START section: total size and every block's name and size (wire.h). */
static void put_ram_start(ferry_ram_saver *rs)
{
	ferry_vm_t *vm = rs->vm;
	uint64_t total = 0;
	for (unsigned i = 0; i < vm->nblocks; i++)
		total += vm->blocks[i]->size;
	put_section_header(rs->c, FERRY_REC_SECTION_START);
	ferry__wire_put_mem_size(rs->c, total, vm->nblocks);
	for (unsigned i = 0; i < vm->nblocks; i++)
		ferry__wire_put_block_entry(rs->c, vm->blocks[i]->name, vm->blocks[i]->size);
	put_section_end(rs->c);
}

int ferry__ram_save_setup(ferry_ram_saver *rs)
{
	uint64_t t0 = ferry__now_ns();
	int r = 0;

	if (!rs->sink)
		ferry__ram_set_sink(rs, NULL);
	for (unsigned k = 0; k < 2; k++) {
		rs->zmap[k] = ferry__bitmap_new(SCAN_BATCH);
		rs->pmap[k] = ferry__bitmap_new(SCAN_BATCH);
		rs->sums[k] = malloc(SCAN_BATCH * sizeof(uint64_t));
		if (!rs->zmap[k] || !rs->pmap[k] || !rs->sums[k])
			return -ENOMEM;
	}
	if ((r = ferry__ram_hints_alloc(rs)))
		return r;
	if (sysconf(_SC_NPROCESSORS_ONLN) > 1 && ferry__helper_start(&rs->zero_helper, "mig/src/zero"))
		ferry_warn("no helper thread: zero detection on one core");

	if ((r = track_start(rs)))
		return r;
	rs->tracking = true;
	rs->first_pass = true;
	ferry_info("setup: dirty tracking registered in %.1f ms", (double)(ferry__now_ns() - t0) / 1e6);
	put_ram_start(rs);
	ferry_chan *c = rs->c;
	c->on_write = rs_tick;
	c->on_write_opaque = rs;
	r = rs_flush(rs);
	rs_stats(rs, rs->dirty_pages);
	return r;
}

int ferry__ram_peek(ferry_ram_saver *rs, uint64_t *pages)
{
	ferry_vm_t *vm = rs->vm;
	*pages = 0;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		uint64_t n = 0;
		int r = ferry__dirty_peek(&vm->dirty, rb->host, rb->size, rb->mark_log, &n);
		if (r)
			return r;
		*pages += n;
	}
	return 0;
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
		    uint64_t start, uint32_t n, const uint64_t *sums)
{
	ferry_ram_saver *rs = ferry_container_of(s, ferry_ram_saver, chan_sink);
	ferry_chan *c = rs->c;
	ferry__wire_put_ram_run(c, kind, rb->name, rb == rs->last_block, start, n,
				rb->host + (start << FERRY_PAGE_SHIFT), sums);
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

/*
 * Queues pages [start, start + n) of rb, of the given kind, on the saver's
 * sink; sums: their checksums if computed already (main channel), or NULL.
 */
static int emit(ferry_ram_saver *rs, const struct ferry_ram_block *rb, uint64_t kind,
		uint64_t start, uint64_t n, const uint64_t *sums)
{
	rs->processed += n;
	int r = rs->sink->ops->put(rs->sink, rb, kind, start, (uint32_t)n, sums);
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
 * A page written after its zero check is sent as it is then, or as zero:
 * either way it was protected before, so the write is harvested and the
 * page sent again.
 */
struct chunk_job {
	ferry_ram_saver *rs;
	struct ferry_ram_block *rb;
	uint64_t base, first, n;
	bool prepare, maps_file;
	unsigned long *zmap, *pmap; /* the chunk's maps (rs->zmap/pmap[0] or [1]) */
	uint64_t *sums;		    /* NULL, or its data pages' checksums (rs->sums[0] or [1]) */
	uint64_t seed;		    /* with sums: the block's (ferry__sum_seed) */
	int err;
	const char *what;
};

/* The checksums of pages [p0, p1) of j's chunk whose bit (from p0) is set in data. */
static void chunk_sums(const struct chunk_job *j, unsigned long data, uint64_t p0, uint64_t p1)
{
	const uint8_t *cbase = j->rb->host + (j->base << FERRY_PAGE_SHIFT);
	for (uint64_t p = p0; p < p1; p++)
		if ((data >> (p - p0)) & 1)
			j->sums[p] = ferry__sum_page(cbase + (p << FERRY_PAGE_SHIFT), j->seed,
						     j->base + p);
}

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
			j->pmap[w] = 0;
		/* The whole file allocated (or none of it): no need to walk it. */
		ferry_file_fill fill = j->maps_file ? ferry__ram_file_fill(j->rb->fd, j->rb->size)
						    : FERRY_FILL_SOME;
		if (fill == FERRY_FILL_ALL) {
			ferry__bitmap_set_range(j->pmap, j->first, j->n);
		} else if (fill == FERRY_FILL_SOME) {
			j->what = "cannot scan";
			j->err = ferry__ram_scan_populated(host, len, j->rb->fd,
							   (j->base + j->first) << FERRY_PAGE_SHIFT,
							   j->pmap + w0, &cnt);
			if (j->err)
				return;
		}
	}
	if (rs->sink->finds_zero) {
		/* Multifd: zero detection happens in the channel threads. */
		for (uint64_t w = w0; w < w1; w++)
			j->zmap[w] = 0;
		return;
	}
	for (uint64_t w = w0; w < w1; w++) {
		unsigned long bits = 0;
		unsigned long want = j->prepare ? j->pmap[w] : ~0UL;
		uint64_t p0 = w * FERRY_BITS_PER_LONG, p1 = p0 + FERRY_BITS_PER_LONG;
		if (p1 > j->first + j->n)
			p1 = j->first + j->n;
		for (uint64_t p = p0; p < p1; p++)
			if (((want >> (p - p0)) & 1) &&
			    ferry__page_is_zero(cbase + (p << FERRY_PAGE_SHIFT)))
				bits |= 1UL << (p - p0);
		j->zmap[w] = bits;
		if (j->sums)
			chunk_sums(j, want & ~bits, p0, p1);
	}
}

/* The job for all of chunk [base, base + n) of rb, into map set `set`. */
static struct chunk_job chunk_job_of(ferry_ram_saver *rs, struct ferry_ram_block *rb,
				     uint64_t base, uint64_t n, bool prepare, bool maps_file,
				     unsigned set)
{
	bool sums = rs->sink == &rs->chan_sink && rs->c->sums;
	return (struct chunk_job){ .rs = rs, .rb = rb, .base = base, .n = n, .prepare = prepare,
				   .maps_file = maps_file, .zmap = rs->zmap[set],
				   .pmap = rs->pmap[set], .sums = sums ? rs->sums[set] : NULL,
				   .seed = sums ? ferry__sum_seed(rb->name) : 0 };
}

/*
 * Runs job j (a whole chunk) now, the second half on the helper thread when
 * the chunk is large: zero detection reads every byte of a zero page and
 * write protection touches every PTE, so two cores do it nearly twice as
 * fast as one.
 */
static void chunk_prepare_now(ferry_ram_saver *rs, struct chunk_job *j)
{
	struct chunk_job hi = *j;
	bool split = rs->zero_helper.started && j->n >= SPLIT_MIN;
	if (split) {
		uint64_t half = (j->n / 2) & ~(uint64_t)(FERRY_BITS_PER_LONG - 1);
		hi.first = half;
		hi.n = j->n - half;
		j->n = half;
		ferry__helper_submit(&rs->zero_helper, chunk_fn, &hi);
	}
	chunk_fn(j);
	if (split) {
		ferry__helper_wait(&rs->zero_helper);
		j->n += hi.n;
		if (!j->err) {
			j->err = hi.err;
			j->what = hi.what;
		}
	}
}

/*
 * Page i of job j's chunk: 0 never populated (first pass; skipped), 3
 * reported free for the current hint id (skipped), 1 zero page, 2 data
 * page. Hints are polled between chunks, so a hint that arrives after the
 * chunk's zero check only counts from the next chunk.
 */
static int page_kind(const struct chunk_job *j, const unsigned long *hinted, uint64_t i)
{
	if (j->prepare && !ferry__bitmap_test(j->pmap, i))
		return 0;
	if (hinted && ferry__bitmap_test(hinted, j->base + i))
		return 3;
	return ferry__bitmap_test(j->zmap, i) ? 1 : 2;
}

/*
 * Queues the records of a prepared chunk: runs of data pages (PAGES), of
 * zero pages (ZEROS), and, in the first pass, skips never-populated pages
 * without reading them.
 */
static int chunk_emit(ferry_ram_saver *rs, const struct chunk_job *j)
{
	if (j->err) {
		ferry__mig_set_error(rs->m, j->err, "%s RAM block '%s': %s", j->what, j->rb->name,
				     ferry_strerror(j->err));
		return j->err;
	}
	unsigned long *hinted = rs->hints.hinted[ferry__block_index(rs->vm, j->rb)];
	for (uint64_t i = 0; i < j->n;) {
		int kind = page_kind(j, hinted, i);
		uint64_t e = i + 1;
		while (e < j->n && e - i < FERRY_RAM_MAX_RUN && page_kind(j, hinted, e) == kind)
			e++;
		if (kind == 0 || kind == 3) {
			*(kind == 0 ? &rs->skipped : &rs->hints.skipped) += e - i;
			rs->processed += e - i;
		} else {
			int r = emit(rs, j->rb, kind == 1 ? FERRY_RAM_ZEROS : FERRY_RAM_PAGES,
				     j->base + i, e - i, kind == 2 && j->sums ? j->sums + i : NULL);
			if (r)
				return r;
		}
		i = e;
	}
	return 0;
}

/* Sends dirty pages [page, end) of rb, split into zero and data runs. */
static int send_run(ferry_ram_saver *rs, struct ferry_ram_block *rb, uint64_t page, uint64_t end)
{
	while (page < end) {
		uint64_t n = end - page < SCAN_BATCH ? end - page : SCAN_BATCH;
		struct chunk_job j = chunk_job_of(rs, rb, page, n, false, false, 0);
		chunk_prepare_now(rs, &j);
		int r = chunk_emit(rs, &j);
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

/* The first pass's next chunk after (*block, *base) of n pages; false after the last. */
static bool next_chunk(const ferry_vm_t *vm, unsigned *block, uint64_t *base, uint64_t *n)
{
	*base += *n;
	while (*block < vm->nblocks && *base >= vm->blocks[*block]->npages) {
		(*block)++;
		*base = 0;
	}
	if (*block >= vm->nblocks)
		return false;
	uint64_t left = vm->blocks[*block]->npages - *base;
	*n = left < SCAN_BATCH ? left : SCAN_BATCH;
	return true;
}

/*
 * The first pass visits every page of every block, chunk by chunk:
 * protect, find populated pages, send those. A pipeline of two: while this
 * thread queues and sends chunk k, the helper prepares chunk k + 1 whole
 * (protection, populated scan, zero check, checksums) into the other set
 * of maps; this thread prepares a chunk itself (split with the helper)
 * only for the first one or without a helper. With the 1 MiB send staging
 * (transport.h), A/B in one run (bench/vs-qemu --base, random-1
 * preallocated, perf): mig/src/main's samples per byte 40% fewer, the
 * source's CPU 0.74 against 0.98 s for 2 GiB.
 */
static int first_pass(ferry_ram_saver *rs)
{
	ferry_vm_t *vm = rs->vm;
	unsigned i = 0, set = 0;
	uint64_t base = 0, n = 0;
	if (!next_chunk(vm, &i, &base, &n))
		return 0;
	struct chunk_job jobs[2];
	jobs[set] = chunk_job_of(rs, vm->blocks[i], base, n, true, rs->maps_file[i], set);
	chunk_prepare_now(rs, &jobs[set]);
	for (int r = 0;; set ^= 1) {
		struct chunk_job *cur = &jobs[set], *next = &jobs[set ^ 1];
		unsigned ni = i;
		uint64_t nbase = base, nn = n;
		bool more = next_chunk(vm, &ni, &nbase, &nn);
		if (switch_requested(rs)) {
			/* Postcopy now: what this pass did not send is all still to send. */
			ferry__bitmap_set_range(vm->blocks[i]->dirty, base, vm->blocks[i]->npages - base);
			for (unsigned k = i + 1; k < vm->nblocks; k++)
				ferry__bitmap_fill(vm->blocks[k]->dirty, vm->blocks[k]->npages);
			return 0;
		}
		if (more)
			*next = chunk_job_of(rs, vm->blocks[ni], nbase, nn, true, rs->maps_file[ni],
					     set ^ 1);
		bool ahead = more && rs->zero_helper.started;
		if (ahead)
			ferry__helper_submit(&rs->zero_helper, chunk_fn, next);
		ferry__ram_hints_poll(rs);
		r = chunk_emit(rs, cur);
		if (ahead)
			ferry__helper_wait(&rs->zero_helper); /* the job's maps are read after this */
		if (r || !more)
			return r;
		if (!ahead)
			chunk_prepare_now(rs, next);
		i = ni;
		base = nbase;
		n = nn;
	}
}

int ferry__ram_save_pass(ferry_ram_saver *rs, uint8_t section_type)
{
	ferry_vm_t *vm = rs->vm;
	ferry_chan *c = rs->c;
	uint64_t t0 = ferry__now_ns(), b0 = wire_bytes(rs), w0 = ferry__thread_wait_ns();
	int r = 0;

	rs->processed = 0;
	put_section_header(c, section_type);
	rs->in_section = true;
	rs->last_block = NULL; /* each section names its first block */
	ferry__ram_hints_put_freed(rs);
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
	rs->pass_ns = ferry__now_ns() - t0;
	rs->pass_wait_ns = ferry__thread_wait_ns() - w0;
	rs->send_ns += rs->pass_ns;
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
	int r = emit(rs, rb, FERRY_RAM_PAGES, first, n, NULL);
	rs->processed = before; /* not part of the background pass's count */
	return r ? r : rs_flush(rs);
}

void ferry__ram_postcopy_break(ferry_ram_saver *rs, void (*put)(ferry_chan *c, void *opaque),
			       void *opaque)
{
	put_section_end(rs->c);
	put(rs->c, opaque);
	put_section_header(rs->c, FERRY_REC_SECTION_PART);
	rs->last_block = NULL; /* a new section names its first block */
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
				r = emit(rs, rb, z ? FERRY_RAM_ZEROS : FERRY_RAM_PAGES, p, q - p, NULL);
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
			r = emit(rs, zrb, FERRY_RAM_ZEROS, zfirst, zn, NULL);
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
	for (unsigned k = 0; k < 2; k++) {
		free(rs->zmap[k]);
		free(rs->pmap[k]);
		free(rs->sums[k]);
		rs->zmap[k] = rs->pmap[k] = NULL;
		rs->sums[k] = NULL;
	}
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
	ferry_ram_saver *rs = opaque;
	(void)c;
	int r = ferry__ram_save_pass(rs, FERRY_REC_SECTION_END);
	rs->m->sw_ram_ns = ferry__now_ns(); /* the downtime split's RAM part (live-stats.c) */
	return r;
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
	.section = FERRY_RAM_IDSTR,
	.load = ferry__ram_part_load, /* ram-load.c */
};

