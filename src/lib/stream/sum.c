/* SPDX-License-Identifier: MIT */
/*
 * Checksums and the stream digest (sum.h): the accumulator, the
 * destination's verification of pages and device payloads, its bad-page
 * bits and the report of the first mismatch not made good.
 *
 * Thread: see sum.h; every function may run on any thread that reads or
 * writes a carrier (mig/src/main, mig/src/send_N, mig/dst/main,
 * mig/dst/recv_N, mig/dst/listen, mig/dst/preempt, device save threads).
 */
#include "stream/sum.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/bitmap.h"

int ferry__sums_init(ferry_sums *s, ferry_vm_t *vm)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->vm = vm;
	if (!vm)
		return 0;
	s->dst = true;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		if (!(s->bad_map[i] = ferry__bitmap_new(vm->blocks[i]->npages))) {
			ferry__sums_fini(s);
			return -ENOMEM;
		}
	}
	return 0;
}

void ferry__sums_fini(ferry_sums *s)
{
	for (unsigned i = 0; i < FERRY_MAX_RAM_BLOCKS; i++) {
		free(s->bad_map[i]);
		s->bad_map[i] = NULL;
	}
	pthread_mutex_destroy(&s->lock);
}

void ferry__sums_attach(ferry_chan *c, ferry_sums *s, uint32_t carrier)
{
	c->sums = s;
	c->sum_carrier = carrier;
	c->sum_seq = 0;
}

void ferry__sum_fold(ferry_sums *s, uint32_t carrier, uint64_t seq, uint64_t v)
{
	uint8_t t[16]; /* big-endian: both sides hash the same bytes */
	ferry__st_be64(t, carrier);
	ferry__st_be64(t + 8, seq);
	atomic_fetch_add_explicit(&s->digest, XXH3_64bits_withSeed(t, sizeof(t), v),
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&s->records, 1, memory_order_relaxed);
}

uint64_t ferry__sum_ram_value(uint64_t kind, uint64_t seed, uint64_t where, uint32_t n,
			      const uint8_t *sums, uint32_t nsums)
{
	uint64_t f[5] = { kind, seed, where, n,
			  nsums ? XXH3_64bits(sums, (size_t)nsums * FERRY_SUM_LEN) : 0 };
	uint8_t t[sizeof(f)];
	for (unsigned i = 0; i < 5; i++)
		ferry__st_be64(t + 8 * i, f[i]);
	return XXH3_64bits(t, sizeof(t));
}

static unsigned block_of(const ferry_sums *s, const struct ferry_ram_block *rb)
{
	for (unsigned i = 0; i < s->vm->nblocks; i++)
		if (s->vm->blocks[i] == rb)
			return i;
	return 0;
}

/* Sets or clears page's bad bit; keeps `bad` the number of set bits. */
static bool set_bad(ferry_sums *s, unsigned bi, uint64_t page, bool on)
{
	_Atomic unsigned long *w = (_Atomic unsigned long *)s->bad_map[bi] + page / FERRY_BITS_PER_LONG;
	unsigned long bit = 1UL << (page % FERRY_BITS_PER_LONG);
	unsigned long old = on ? atomic_fetch_or(w, bit) : atomic_fetch_and(w, ~bit);
	bool was = old & bit;
	if (on && !was)
		atomic_fetch_add(&s->bad, 1);
	else if (!on && was)
		atomic_fetch_sub(&s->bad, 1);
	return was;
}

/* The carrier's name in messages: "main channel", "multifd channel 1", ... */
static void carrier_name(uint32_t carrier, char *buf, size_t len)
{
	if (carrier == FERRY_SUM_MAIN)
		snprintf(buf, len, "main channel");
	else if (carrier < FERRY_SUM_PREEMPT)
		snprintf(buf, len, "multifd channel %u", carrier - FERRY_SUM_MULTIFD);
	else if (carrier == FERRY_SUM_PREEMPT)
		snprintf(buf, len, "preempt channel");
	else
		snprintf(buf, len, "postcopy package");
}

/* The message of a page that failed (without the channel's record suffix when bare). */
static void page_msg(const ferry_chan *c, uint64_t rec, const struct ferry_ram_block *rb,
		     uint64_t page, bool bare, char *buf, size_t len)
{
	char who[40];
	carrier_name(c->sum_carrier, who, sizeof(who));
	int k = snprintf(buf, len, "checksum mismatch: page %llu of RAM block '%s' (offset 0x%llx), %s record %llu",
			 (unsigned long long)page, rb->name,
			 (unsigned long long)page << FERRY_PAGE_SHIFT, who, (unsigned long long)rec);
	if (!bare && k > 0 && (size_t)k < len)
		snprintf(buf + k, len - (size_t)k, " (%s at offset %llu)",
			 c->in_ctx ? c->in_ctx : "record", (unsigned long long)c->in_rec);
}

/* A page that failed in precopy: marked bad, its message kept if none is. */
static void page_bad(ferry_chan *c, uint64_t rec, struct ferry_ram_block *rb, uint64_t page)
{
	ferry_sums *s = c->sums;
	unsigned bi = block_of(s, rb);
	set_bad(s, bi, page, true);
	pthread_mutex_lock(&s->lock);
	if (!s->has_report) {
		s->has_report = true;
		s->report_block = bi;
		s->report_page = page;
		page_msg(c, rec, rb, page, false, s->report, sizeof(s->report));
	}
	pthread_mutex_unlock(&s->lock);
}

int ferry__sum_check_pages(ferry_chan *c, uint64_t rec, struct ferry_ram_block *rb,
			   const uint64_t *idx, uint64_t first, uint32_t n, const uint8_t *data,
			   const uint8_t *want, bool strict)
{
	ferry_sums *s = c->sums;
	uint64_t seed = ferry__sum_seed(rb->name), good = 0;
	/*
	 * A good page clears its bad bit only when some page is bad: an atomic
	 * read-modify-write per page on words the other receiving threads
	 * write too would bounce their cache lines for nothing.
	 */
	bool any_bad = s->dst && atomic_load_explicit(&s->bad, memory_order_relaxed);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t page = idx ? idx[i] : first + i;
		const uint8_t *p = data ? data + ((size_t)i << FERRY_PAGE_SHIFT)
					: rb->host + (page << FERRY_PAGE_SHIFT);
		if (ferry__sum_page(p, seed, page) == ferry__ld_be64(want + (size_t)i * FERRY_SUM_LEN)) {
			good++;
			if (any_bad)
				set_bad(s, block_of(s, rb), page, false);
			continue;
		}
		if (strict) {
			atomic_fetch_add(&s->mismatches, 1);
			char msg[FERRY_SUM_REPORT_MAX];
			page_msg(c, rec, rb, page, true, msg, sizeof(msg));
			atomic_fetch_add(&s->verified, good << FERRY_PAGE_SHIFT);
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "%s", msg);
		}
		page_bad(c, rec, rb, page);
	}
	atomic_fetch_add(&s->verified, good << FERRY_PAGE_SHIFT);
	return 0;
}

void ferry__sum_clear(ferry_sums *s, struct ferry_ram_block *rb, const uint64_t *idx,
		      uint64_t first, uint64_t n)
{
	if (!s || !s->dst || !atomic_load_explicit(&s->bad, memory_order_relaxed))
		return;
	unsigned bi = block_of(s, rb);
	for (uint64_t i = 0; i < n; i++)
		set_bad(s, bi, idx ? idx[i] : first + i, false);
}

int ferry__sum_check_buf(ferry_chan *c, const void *p, size_t len, uint64_t seed, uint64_t want,
			 const char *what)
{
	return ferry__sum_check_value(c, ferry__sum_buf(p, len, seed), want, what);
}

int ferry__sum_check_value(ferry_chan *c, uint64_t got, uint64_t want, const char *what)
{
	if (got == want)
		return 0;
	atomic_fetch_add(&c->sums->mismatches, 1);
	char who[40];
	carrier_name(c->sum_carrier, who, sizeof(who));
	return ferry__chan_fail(c, FERRY_EBADSTREAM, "checksum mismatch: %s, %s", what, who);
}

/* The first page still bad, for the report when the kept one was made good. */
static void first_bad(ferry_sums *s, char *buf, size_t len)
{
	for (unsigned bi = 0; bi < s->vm->nblocks; bi++) {
		struct ferry_ram_block *rb = s->vm->blocks[bi];
		uint64_t p = 0;
		while (p < rb->npages && !ferry__bitmap_test_atomic(s->bad_map[bi], p))
			p++;
		if (p < rb->npages) {
			snprintf(buf, len, "checksum mismatch: page %llu of RAM block '%s' (offset 0x%llx) was not sent again",
				 (unsigned long long)p, rb->name, (unsigned long long)p << FERRY_PAGE_SHIFT);
			return;
		}
	}
	snprintf(buf, len, "checksum mismatch");
}

/* Fails c when a page is still bad: the kept report if that page is, else the first. */
static int report_bad(ferry_chan *c)
{
	ferry_sums *s = c->sums;
	uint64_t bad = atomic_load(&s->bad);
	if (!bad)
		return 0;
	atomic_fetch_add(&s->mismatches, bad); /* not made good: now they count */
	char msg[FERRY_SUM_REPORT_MAX];
	pthread_mutex_lock(&s->lock);
	if (s->has_report && ferry__bitmap_test_atomic(s->bad_map[s->report_block], s->report_page))
		snprintf(msg, sizeof(msg), "%s", s->report);
	else
		first_bad(s, msg, sizeof(msg));
	pthread_mutex_unlock(&s->lock);
	return ferry__chan_fail_msg(c, FERRY_EBADSTREAM, msg);
}

int ferry__sum_listen(ferry_chan *c, unsigned long *const *pending)
{
	ferry_sums *s = c->sums;
	if (!s || !atomic_load(&s->bad))
		return 0;
	for (unsigned bi = 0; bi < s->vm->nblocks; bi++) {
		uint64_t np = s->vm->blocks[bi]->npages;
		for (uint64_t p = 0; p < np; p++)
			if (ferry__bitmap_test(pending[bi], p))
				set_bad(s, bi, p, false);
	}
	return report_bad(c);
}

int ferry__sum_finish(ferry_chan *c, uint64_t records, uint64_t digest, uint64_t ctl_sent,
		      uint64_t ctl_here, bool pages)
{
	ferry_sums *s = c->sums;
	int r = pages ? report_bad(c) : 0;
	if (r)
		return r;
	if (ctl_sent != ctl_here) {
		atomic_fetch_add(&s->mismatches, 1);
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"checksum mismatch: the main channel's records, commands and headers hash to %016llx at the source, %016llx here",
					(unsigned long long)ctl_sent, (unsigned long long)ctl_here);
	}
	uint64_t have = atomic_load(&s->records), sum = atomic_load(&s->digest);
	if (have != records || sum != digest)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"stream digest mismatch: the source sent %llu guest-data records (digest %016llx), %llu arrived (digest %016llx)",
					(unsigned long long)records, (unsigned long long)digest,
					(unsigned long long)have, (unsigned long long)sum);
	return 0;
}
