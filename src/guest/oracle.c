/* SPDX-License-Identifier: MIT */
/*
 * The oracle: proves that a (migrated) guest's RAM is exactly what it must
 * be.
 *
 * What: ferry_guest_hash() is XXH3-64 over the concatenation of every block
 * ("pc.ram" then "vga.vram"), page by page. ferry_guest_verify() builds a
 * never-migrated twin with the same config (same initial fill), runs each
 * twin vCPU to this guest's step count with ferry_guest_vcpu_exec() (the
 * very step function the vCPU threads use), compares every page with
 * memcmp and hashes both sides in the same pass. It finally compares the
 * vCPUs' PRNG states, which a faithful migration also preserves.
 *
 * DESIGN: pages in holes of the memfd (never populated; found with
 * lseek(SEEK_DATA/SEEK_HOLE)) are read as zeros from a static page instead
 * of through the mapping: reading a hole of a shared memfd mapping would
 * allocate it, and hashing a guest must not change what a later migration
 * sees as never populated. The twin's vCPUs run one after the other in the
 * calling thread, in tight loops (no threads, no pacing).
 *
 * Undefined pages: free pages of the churn workload and the virtio area
 * (ferry_guest_undefined_pages()) may hold anything (a free page hinted to
 * the migration is not sent). They are hashed as zero pages and not
 * compared; verify takes the list from the twin, so a guest whose free
 * lists differ from the twin's fails on the (compared) list pages
 * themselves. Every allocated page must match bit for bit.
 *
 * Live devices: after RAM, each device's memory (ferry_guest_dev_mem(),
 * in device order) is hashed and compared page by page too; a difference
 * reads as block "gdevN". A guest without devices hashes as before.
 *
 * Thread: the caller's (the guest's control thread), with the guest
 * stopped. The twin lives only for the duration of ferry_guest_verify().
 */
#include "guest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <xxhash.h>

#define PAGE FERRY_PAGE_SIZE

static const uint8_t zero_page[PAGE] __attribute__((aligned(64)));

/* Walks a memfd's data extents in increasing offsets. */
struct extents {
	int fd;
	uint64_t size;
	uint64_t data_start, data_end; /* current data extent, or start = size */
	bool all_data;                 /* fd unusable: treat everything as data */
};

static void extents_init(struct extents *e, int fd, uint64_t size)
{
	e->fd = fd;
	e->size = size;
	e->data_start = e->data_end = 0;
	e->all_data = fd < 0;
}

/* Whether the page at off (offsets must not decrease) holds data. */
static bool extents_has_data(struct extents *e, uint64_t off)
{
	if (e->all_data)
		return true;
	if (off < e->data_end)
		return off >= e->data_start;
	off_t d = lseek(e->fd, (off_t)off, SEEK_DATA);
	if (d < 0) {
		if (errno != ENXIO) {
			e->all_data = true;
			return true;
		}
		e->data_start = e->data_end = e->size; /* no data at or after off */
		return false;
	}
	off_t h = lseek(e->fd, d, SEEK_HOLE);
	if (h < 0) {
		e->all_data = true;
		return true;
	}
	e->data_start = (uint64_t)d & ~(uint64_t)(PAGE - 1);
	e->data_end = (uint64_t)h;
	return off >= e->data_start && off < e->data_end;
}

static const uint8_t *page_at(struct extents *e, const uint8_t *host, uint64_t off)
{
	return extents_has_data(e, off) ? host + off : zero_page;
}

/* Undefined pages of block b of g (NULL if none or out of memory). */
static uint64_t *undefined_bits(const ferry_guest_t *g, unsigned b, uint64_t size)
{
	uint64_t *bits = calloc((size / PAGE + 63) / 64, sizeof(uint64_t));
	if (bits && !ferry_guest_undefined_pages(g, b, bits)) {
		free(bits);
		bits = NULL;
	}
	return bits;
}

static bool bit(const uint64_t *bits, uint64_t page)
{
	return bits && bits[page / 64] >> (page % 64) & 1;
}

/* Hashes device memory into st; with twin, also into tst and compares (res). */
static void devs_pass(const ferry_guest_t *g, const ferry_guest_t *twin, XXH3_state_t *st,
		      XXH3_state_t *tst, ferry_verify_result *res)
{
	for (unsigned i = 0; i < ferry_guest_dev_count(g); i++) {
		uint8_t *mem, *tmem = NULL;
		uint64_t size, tsize = 0;
		ferry_guest_dev_mem(g, i, &mem, &size);
		if (twin)
			ferry_guest_dev_mem(twin, i, &tmem, &tsize);
		for (uint64_t off = 0; off < size; off += PAGE) {
			XXH3_64bits_update(st, mem + off, PAGE);
			if (!twin)
				continue;
			XXH3_64bits_update(tst, tmem + off, PAGE);
			res->pages_compared++;
			if (!memcmp(mem + off, tmem + off, PAGE))
				continue;
			if (res->matches) {
				res->matches = false;
				snprintf(res->block, sizeof(res->block), "gdev%u", i);
				res->page = off / PAGE;
			}
			res->pages_differing++;
		}
	}
}

uint64_t ferry_guest_hash(const ferry_guest_t *g)
{
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return 0;
	XXH3_64bits_reset(st);
	for (unsigned b = 0; b < ferry_guest_ram_count(g); b++) {
		const char *name;
		uint8_t *host;
		uint64_t size;
		struct extents e;
		ferry_guest_ram(g, b, &name, &host, &size);
		extents_init(&e, ferry_guest_ram_fd(g, b), size);
		uint64_t *undef = undefined_bits(g, b, size);
		for (uint64_t off = 0; off < size; off += PAGE)
			XXH3_64bits_update(st, bit(undef, off / PAGE) ? zero_page
								      : page_at(&e, host, off),
					   PAGE);
		free(undef);
	}
	devs_pass(g, NULL, st, NULL, NULL);
	uint64_t h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

int ferry_guest_verify(const ferry_guest_t *g, ferry_verify_result *res)
{
	if (!g || !res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	if (ferry_guest_running(g))
		return -EBUSY;

	const unsigned nv = ferry_guest_vcpus(g);
	uint64_t steps[FERRY_GUEST_MAX_VCPUS];
	ferry_guest_steps(g, steps);

	ferry_guest_t *twin;
	int r = ferry_guest_create(ferry_guest_get_config(g), false, &twin);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < nv && r == 0; i++)
		r = ferry_guest_vcpu_exec(twin, i, steps[i]);
	XXH3_state_t *sg = XXH3_createState(), *st = XXH3_createState();
	if (r == 0 && (!sg || !st))
		r = -ENOMEM;
	if (r < 0)
		goto out;

	XXH3_64bits_reset(sg);
	XXH3_64bits_reset(st);
	res->matches = true;
	for (unsigned b = 0; b < ferry_guest_ram_count(g); b++) {
		const char *name, *tname;
		uint8_t *host, *thost;
		uint64_t size, tsize;
		struct extents eg, et;
		ferry_guest_ram(g, b, &name, &host, &size);
		ferry_guest_ram(twin, b, &tname, &thost, &tsize);
		if (size != tsize || strcmp(name, tname)) { /* same config: cannot happen */
			r = -EINVAL;
			goto out;
		}
		extents_init(&eg, ferry_guest_ram_fd(g, b), size);
		extents_init(&et, ferry_guest_ram_fd(twin, b), size);
		uint64_t *undef = undefined_bits(twin, b, size);
		for (uint64_t off = 0; off < size; off += PAGE) {
			if (bit(undef, off / PAGE)) {
				XXH3_64bits_update(sg, zero_page, PAGE);
				XXH3_64bits_update(st, zero_page, PAGE);
				res->pages_excluded++;
				continue;
			}
			const uint8_t *pg = page_at(&eg, host, off);
			const uint8_t *pt = page_at(&et, thost, off);
			XXH3_64bits_update(sg, pg, PAGE);
			XXH3_64bits_update(st, pt, PAGE);
			res->pages_compared++;
			if (pg != pt && memcmp(pg, pt, PAGE)) {
				if (res->matches) {
					res->matches = false;
					snprintf(res->block, sizeof(res->block), "%s", name);
					res->page = off / PAGE;
				}
				res->pages_differing++;
			}
		}
		free(undef);
	}
	devs_pass(g, twin, sg, st, res);
	res->hash = XXH3_64bits_digest(sg);
	res->twin_hash = XXH3_64bits_digest(st);

	/* RAM matches: the vCPU state must too (or the next steps diverge). */
	for (unsigned i = 0; i < nv && res->matches; i++) {
		uint64_t sa, sb, pa[4], pb[4];
		ferry_guest_vcpu_state(g, i, &sa, pa);
		ferry_guest_vcpu_state(twin, i, &sb, pb);
		if (sa != sb || memcmp(pa, pb, sizeof(pa))) {
			res->matches = false;
			snprintf(res->block, sizeof(res->block), "cpu");
			res->page = i;
		}
	}
out:
	XXH3_freeState(sg);
	XXH3_freeState(st);
	ferry_guest_destroy(twin);
	return r;
}
