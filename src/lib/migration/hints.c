/* SPDX-License-Identifier: MIT */
/*
 * Free page hints, source side: the RAM saver asks the VM's hint provider
 * (ferry/hint.h; Ferry's balloon device is one) which pages are free and
 * does not send them.
 *
 * DESIGN: one round per precopy pass. ferry__ram_hints_begin starts a
 * round right after a dirty-log sync and polls, bounded by hint_wait_ms,
 * until the guest's report is complete; the pass polls again between
 * chunks. A reported page loses its dirty bit and is marked in hinted[],
 * so the pass skips it (counted as hint_skipped). This is safe because
 * tracking covers every page before the first round (protect_all) and the
 * page was free after the sync that preceded the round: a write since is
 * caught by the next sync. ferry__ram_hints_end stops the round right
 * before that sync; its marks move to hinted_last[] and hinted[] starts
 * empty, so a page hinted in an old round is sent once written again.
 * At a postcopy switch the pages of hinted_last[] that are still clean go
 * as ZEROS after the background pages: the destination places them
 * without faulting on them.
 *
 * With checksums, a page whose dirty bit a hint cleared also goes as a
 * FREE record: its copy at the destination may be torn (sent while the
 * guest wrote it, which is why it was dirty) and no pass replaces it, so
 * the destination must not judge it. FREE records go on the main channel
 * inside the pass whose round cleared the bits (drained after every poll
 * in a section, and at a section's start for the polls of begin), before
 * the pass's multifd sync: so a FREE never overtakes a later copy of its
 * page. end does not poll then: after a pass cut short by a postcopy
 * switch, its FREE records would have no pass left to go in before
 * LISTEN judges the pages.
 *
 * A provider that fails (start or poll < 0) is not asked again in this
 * migration; the marks of the current round stay valid (they were taken
 * before the failure). However the migration ends, cleanup stops the
 * provider and tells it done.
 *
 * Thread: mig/src/main only; the saver's state takes no lock. The
 * provider's callback (on_hint) runs inside its poll, on that thread.
 */
#include "migration/mig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "migration/postcopy.h"
#include "stream/format.h"
#include "stream/wire.h"

/* How often the bounded wait of a round polls the provider. */
#define WAIT_POLL_NS 200000ull

void ferry__ram_hints_setup(ferry_ram_saver *rs, const ferry_migration_params *p)
{
	ferry_vm_t *vm = rs->vm;
	if (!p->free_page_hints || !vm->hint_ops.start)
		return;
	rs->hints.ops = &vm->hint_ops;
	rs->hints.opaque = vm->hint_opaque;
	rs->hints.wait_ms = p->hint_wait_ms;
	rs->protect_all = vm->dirty_mode != FERRY_DIRTY_EXPLICIT;
}

int ferry__ram_hints_alloc(ferry_ram_saver *rs)
{
	struct ferry_ram_hints *h = &rs->hints;
	for (unsigned i = 0; h->ops && i < rs->vm->nblocks; i++) {
		uint64_t npages = rs->vm->blocks[i]->npages;
		if (!(h->hinted[i] = ferry__bitmap_new(npages)) ||
		    !(h->hinted_last[i] = ferry__bitmap_new(npages)))
			return -ENOMEM;
	}
	return 0;
}

/*
 * A hint for the current round (inside the provider's poll). The pages were
 * free when the guest reported them, after the round started and so after
 * the last sync: a write since then is caught by the next harvest, so they
 * need not be sent now.
 */
/* Queues page p of block bi for a FREE record; false when out of memory. */
static bool freed_add(struct ferry_ram_hints *h, unsigned bi, uint64_t p)
{
	struct ferry_free_run *last = h->nfreed ? &h->freed[h->nfreed - 1] : NULL;
	if (last && last->block == bi && last->first + last->n == p && last->n < FERRY_RAM_MAX_RUN) {
		last->n++;
		return true;
	}
	if (h->nfreed == h->freed_cap) {
		size_t cap = h->freed_cap ? h->freed_cap * 2 : 256;
		struct ferry_free_run *f = realloc(h->freed, cap * sizeof(*f));
		if (!f)
			return false;
		h->freed = f;
		h->freed_cap = cap;
	}
	h->freed[h->nfreed++] = (struct ferry_free_run){ bi, p, 1 };
	return true;
}

static void on_hint(void *opaque, ferry_ram_block_t *rb, uint64_t first, uint64_t n)
{
	ferry_ram_saver *rs = opaque;
	/* The provider is the embedder's: never trust its ranges blindly. */
	if (!rb || rb->vm != rs->vm || first >= rb->npages || n > rb->npages - first)
		return;
	unsigned bi = ferry__block_index(rs->vm, rb);
	for (uint64_t p = first; p < first + n; p++) {
		if (ferry__bitmap_test(rb->dirty, p)) {
			/* Out of memory for its FREE record: the page is sent instead. */
			if (rs->c->sums && !freed_add(&rs->hints, bi, p))
				continue;
			ferry__bitmap_clear(rb->dirty, p);
			if (rs->dirty_pages)
				rs->dirty_pages--;
		}
	}
	ferry__bitmap_set_range(rs->hints.hinted[bi], first, n);
}

/* The provider failed (r < 0): no more hints; the marks of this round stay valid. */
static void provider_failed(struct ferry_ram_hints *h, const char *op, int r)
{
	const char *why = h->ops->error ? h->ops->error(h->opaque) : NULL;
	ferry_warn("free page hints: the provider's %s failed (%s); no more hints",
		   op, why && *why ? why : ferry_strerror(r));
	h->broken = true;
}

void ferry__ram_hints_put_freed(ferry_ram_saver *rs)
{
	struct ferry_ram_hints *h = &rs->hints;
	for (size_t i = 0; i < h->nfreed; i++) {
		struct ferry_ram_block *rb = rs->vm->blocks[h->freed[i].block];
		ferry__wire_put_ram_run(rs->c, FERRY_RAM_FREE, rb->name, rb == rs->last_block,
					h->freed[i].first, h->freed[i].n, NULL, NULL);
		rs->last_block = rb;
	}
	h->nfreed = 0;
}

void ferry__ram_hints_poll(ferry_ram_saver *rs)
{
	struct ferry_ram_hints *h = &rs->hints;
	if (!h->ops || h->broken)
		return;
	int r = h->ops->poll(h->opaque, on_hint, rs);
	if (r < 0)
		provider_failed(h, "poll", r);
	if (rs->in_section)
		ferry__ram_hints_put_freed(rs);
}

static void hinted_zero(ferry_ram_saver *rs, unsigned long **maps)
{
	for (unsigned i = 0; i < rs->vm->nblocks; i++)
		ferry__bitmap_zero(maps[i], rs->vm->blocks[i]->npages);
}

void ferry__ram_hints_begin(ferry_ram_saver *rs)
{
	struct ferry_ram_hints *h = &rs->hints;
	if (!h->ops)
		return;
	hinted_zero(rs, h->hinted);
	if (h->broken)
		return;
	int r = h->ops->start(h->opaque);
	if (r < 0) {
		provider_failed(h, "start", r);
		return;
	}
	h->cmds++;
	/* Bounded: a guest that never answers costs at most wait_ms a pass. */
	uint64_t t0 = ferry__now_ns(), end = t0 + (uint64_t)h->wait_ms * 1000000;
	for (;;) {
		ferry__ram_hints_poll(rs);
		if (h->broken || h->ops->complete(h->opaque) || ferry__now_ns() >= end ||
		    ferry__mig_cancelled(rs->m))
			break;
		ferry__sleep_ns(WAIT_POLL_NS);
	}
	h->wait_ns += ferry__now_ns() - t0;
	ferry__ram_stats(rs);
}

void ferry__ram_hints_end(ferry_ram_saver *rs)
{
	struct ferry_ram_hints *h = &rs->hints;
	if (!h->ops)
		return;
	if (!rs->c->sums) /* what arrived for this round is still good (see the top) */
		ferry__ram_hints_poll(rs);
	h->ops->stop(h->opaque);
	/*
	 * The round expires with the coming sync: a hinted page may be
	 * written again and harvested, and must then be sent (the
	 * switchover's pass too). Its dirty bit was cleared when the hint
	 * came; the mark goes.
	 */
	for (unsigned i = 0; i < rs->vm->nblocks; i++)
		memcpy(h->hinted_last[i], h->hinted[i],
		       FERRY_BITMAP_LONGS(rs->vm->blocks[i]->npages) * sizeof(unsigned long));
	hinted_zero(rs, h->hinted);
}

void ferry__ram_postcopy_hint_zeros(ferry_ram_saver *rs)
{
	rs->hints.zeros_block = 0;
	rs->hints.zeros_page = 0;
	for (unsigned i = 0; i < rs->vm->nblocks && rs->hints.hinted_last[i]; i++) {
		struct ferry_ram_block *rb = rs->vm->blocks[i];
		/* A page written after its hint is dirty: its data goes, never a zero. */
		for (uint64_t w = 0; w < FERRY_BITMAP_LONGS(rb->npages); w++)
			rs->hints.hinted_last[i][w] &= ~rb->dirty[w];
	}
}

bool ferry__ram_hints_next_zeros(ferry_ram_saver *rs, struct ferry_ram_block **rbp,
				 uint64_t *first, uint64_t *n)
{
	struct ferry_ram_hints *h = &rs->hints;
	for (; h->zeros_block < rs->vm->nblocks && h->hinted_last[h->zeros_block];
	     h->zeros_block++, h->zeros_page = 0) {
		struct ferry_ram_block *rb = rs->vm->blocks[h->zeros_block];
		unsigned long *map = h->hinted_last[h->zeros_block];
		uint64_t page = ferry__bitmap_next_set(map, rb->npages, h->zeros_page);
		if (page >= rb->npages)
			continue;
		uint64_t end = ferry__bitmap_next_clear(map, rb->npages, page);
		if (end - page > FERRY_RAM_MAX_RUN)
			end = page + FERRY_RAM_MAX_RUN;
		ferry__bitmap_clear_range(map, page, end - page);
		h->zeros_page = end;
		*rbp = rb;
		*first = page;
		*n = end - page;
		return true;
	}
	return false;
}

void ferry__ram_hints_stats(const ferry_ram_saver *rs, ferry_migration_info *info)
{
	info->hint_cmds = rs->hints.cmds;
	info->hint_skipped = rs->hints.skipped;
	info->hint_wait_ms = rs->hints.wait_ns / 1000000;
}

void ferry__ram_hints_cleanup(ferry_ram_saver *rs)
{
	struct ferry_ram_hints *h = &rs->hints;
	for (unsigned i = 0; i < rs->vm->nblocks; i++) {
		free(h->hinted[i]);
		free(h->hinted_last[i]);
		h->hinted[i] = h->hinted_last[i] = NULL;
	}
	free(h->freed);
	h->freed = NULL;
	h->nfreed = h->freed_cap = 0;
	if (h->ops) {
		h->ops->stop(h->opaque);
		if (h->ops->done)
			h->ops->done(h->opaque); /* the guest may reuse its report memory */
		h->ops = NULL;
	}
}
