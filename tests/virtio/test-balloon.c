/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the free page hint protocol: the balloon device
 * (src/lib/virtio/balloon.c) answered by the synthetic guest's driver
 * (src/guest/balloon-drv.c) over the guest's churn free lists.
 *
 *  - a report for the current id hints exactly the guest's free pages;
 *  - a page freed, hinted, then reallocated and written is not hinted
 *    again once a new id starts;
 *  - buffers for an old id, or arriving after the host's stop, are ignored
 *    and counted; a guest that never answers yields nothing;
 *  - ids start at 0x80000000 and increase; the config shows STOP / DONE;
 *  - malformed free page chains (command buffer size, mixed buffers, two
 *    command buffers, a range outside RAM) break the queue with a message;
 *    only whole pages of a range are hinted;
 *  - the balloon's state migrates: a report queued before switchover is
 *    stale on the destination, and impossible ids are refused.
 */
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <cmocka.h>

#include "ferry.h"
#include "balloon-drv.h"
#include "guest.h"
#include "vring-drv.h"
#include "vmsd-patch.h"

#define PAGE 4096u
#define MiB (1ull << 20)

struct hfx {
	ferry_guest_t *g;
	ferry_vm_t *vm;
	ferry_gpa_map_t *map;
	ferry_balloon_t *b;
	ferry_guest_balloon_t *d;
	ferry_ram_block_t *pc;
	uint64_t npages;    /* pc.ram pages */
	uint64_t *hinted;   /* pages passed to the callback */
	uint64_t callbacks;
	bool auto_poll;     /* the guest's kick polls the device */
	int poll_err;
};

static void on_hint(void *opaque, ferry_ram_block_t *rb, uint64_t first, uint64_t n)
{
	struct hfx *f = opaque;
	if (rb != f->pc || first > f->npages || n > f->npages - first)
		fail_msg("hint outside pc.ram: %llu+%llu", (unsigned long long)first,
			 (unsigned long long)n);
	for (uint64_t p = first; p < first + n; p++)
		f->hinted[p / 64] |= 1ull << (p % 64);
	f->callbacks++;
}

static void on_kick(void *opaque)
{
	struct hfx *f = opaque;
	if (f->auto_poll) {
		int r = ferry_balloon_hint_poll(f->b, on_hint, f);
		if (r < 0)
			f->poll_err = r;
	}
}

static void hfx_setup(struct hfx *f, uint64_t mem, unsigned vcpus, unsigned wait_ms)
{
	memset(f, 0, sizeof(*f));
	ferry_guest_config cfg;
	ferry_guest_config_init(&cfg);
	cfg.mem_size = mem;
	cfg.vram_size = 1 * MiB;
	cfg.vcpus = vcpus;
	cfg.workload = FERRY_WL_CHURN;
	cfg.virtio = true;
	cfg.seed = 11;
	assert_int_equal(ferry_guest_create(&cfg, false, &f->g), 0);
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	assert_int_equal(ferry_vm_create(&o, &f->vm), 0);
	assert_int_equal(ferry_guest_attach(f->g, f->vm), 0);
	ferry_gpa_region reg[4];
	int n = ferry_guest_gpa_regions(f->g, reg, 4);
	assert_int_equal(n, 2);
	assert_int_equal(reg[1].gpa, mem);
	assert_int_equal(ferry_gpa_map_create(reg, (unsigned)n, &f->map), 0);
	assert_int_equal(ferry_balloon_create(f->map, &f->b), 0);
	f->pc = reg[0].rb;
	f->npages = mem / PAGE;
	f->hinted = calloc((f->npages + 63) / 64, 8);
	f->auto_poll = true;
	ferry_guest_balloon_opts bo = { .kick = on_kick, .opaque = f, .wait_ms = wait_ms };
	assert_int_equal(ferry_guest_balloon_create(f->g, f->b, &bo, &f->d), 0);
	assert_true(ferry_vq_ready(ferry_balloon_free_page_vq(f->b)));
}

static void hfx_teardown(struct hfx *f)
{
	ferry_guest_destroy(f->g);
	ferry_guest_balloon_destroy(f->d);
	ferry_balloon_destroy(f->b);
	ferry_gpa_map_destroy(f->map);
	ferry_vm_destroy(f->vm);
	free(f->hinted);
}

static void run_to(struct hfx *f, uint64_t steps)
{
	uint64_t t[FERRY_GUEST_MAX_VCPUS];
	for (unsigned i = 0; i < ferry_guest_vcpus(f->g); i++)
		t[i] = steps;
	assert_int_equal(ferry_guest_run_until(f->g, t), 0);
}

/* The guest's free pages now (the virtio area left out). */
static uint64_t *free_now(struct hfx *f, uint64_t *count)
{
	uint64_t *bits = calloc((f->npages + 63) / 64, 8);
	ferry_guest_undefined_pages(f->g, 0, bits);
	uint8_t *host;
	uint64_t gpa, size;
	ferry_guest_virtio_area(f->g, &host, &gpa, &size);
	for (uint64_t p = gpa / PAGE; p < (gpa + size) / PAGE; p++)
		bits[p / 64] &= ~(1ull << (p % 64));
	*count = 0;
	for (uint64_t w = 0; w < (f->npages + 63) / 64; w++)
		*count += (uint64_t)__builtin_popcountll(bits[w]);
	return bits;
}

static void assert_hinted_is(const struct hfx *f, const uint64_t *bits)
{
	for (uint64_t p = 0; p < f->npages; p++) {
		bool h = f->hinted[p / 64] >> (p % 64) & 1, e = bits[p / 64] >> (p % 64) & 1;
		if (h != e)
			fail_msg("page %llu: hinted %d, free %d", (unsigned long long)p, h, e);
	}
}

/* One full round: new id, the guest answers, the device drains. */
static void hint_round(struct hfx *f, uint32_t *id_out)
{
	memset(f->hinted, 0, (f->npages + 63) / 64 * 8);
	uint32_t id = ferry_balloon_hint_start(f->b);
	int64_t pages = ferry_guest_balloon_service(f->d);
	assert_true(pages > 0);
	assert_true(ferry_balloon_hint_poll(f->b, on_hint, f) >= 0);
	assert_int_equal(f->poll_err, 0);
	assert_true(ferry_balloon_hint_complete(f->b));
	if (id_out)
		*id_out = id;
}

static void test_report_exact(void **state)
{
	(void)state;
	struct hfx f;
	hfx_setup(&f, 16 * MiB, 2, 1000);
	run_to(&f, 20000);
	ferry_balloon_stats s0, s1;
	ferry_balloon_get_stats(f.b, &s0);
	uint32_t id;
	hint_round(&f, &id);
	assert_int_equal(id, FERRY_BALLOON_CMD_ID_MIN);
	uint64_t nfree;
	uint64_t *fr = free_now(&f, &nfree);
	assert_true(nfree > 100);
	assert_hinted_is(&f, fr);
	ferry_balloon_get_stats(f.b, &s1);
	assert_int_equal(s1.hint_cmds, 1);
	assert_int_equal(s1.reports, 1);
	assert_int_equal(s1.pages_hinted, nfree);
	assert_int_equal(s1.ignored_buffers, 0);
	ferry_guest_balloon_stats gs;
	ferry_guest_balloon_get_stats(f.d, &gs);
	assert_int_equal(gs.reports, 1);
	assert_int_equal(gs.pages, nfree);
	assert_int_equal(gs.last_id, id);
	/* The same id is not answered twice. */
	assert_int_equal(ferry_guest_balloon_service(f.d), 0);
	free(fr);
	hfx_teardown(&f);
}

/*
 * A page freed, hinted, then reallocated and written is not in the report
 * for the next id.
 */
static void test_realloc_after_hint(void **state)
{
	(void)state;
	struct hfx f;
	hfx_setup(&f, 16 * MiB, 2, 1000);
	run_to(&f, 20000);
	hint_round(&f, NULL);
	uint64_t *h1 = calloc((f.npages + 63) / 64, 8);
	memcpy(h1, f.hinted, (f.npages + 63) / 64 * 8);
	run_to(&f, 40000);
	uint64_t nfree;
	uint64_t *fr = free_now(&f, &nfree);
	uint64_t reallocated = 0;
	for (uint64_t w = 0; w < (f.npages + 63) / 64; w++)
		reallocated += (uint64_t)__builtin_popcountll(h1[w] & ~fr[w]);
	assert_true(reallocated > 10); /* the workload did reuse hinted pages */
	uint32_t id2;
	hint_round(&f, &id2);
	assert_int_equal(id2, FERRY_BALLOON_CMD_ID_MIN + 1);
	for (uint64_t w = 0; w < (f.npages + 63) / 64; w++)
		if (f.hinted[w] & h1[w] & ~fr[w])
			fail_msg("a reallocated page was hinted again (word %llu)",
				 (unsigned long long)w);
	assert_hinted_is(&f, fr);
	free(h1);
	free(fr);
	hfx_teardown(&f);
}

/* The guest answers an old id: everything it sends is ignored. */
static void test_stale_id(void **state)
{
	(void)state;
	struct hfx f;
	hfx_setup(&f, 4 * MiB, 1, 20);
	run_to(&f, 3000);
	uint64_t nfree;
	uint64_t *fr = free_now(&f, &nfree);
	f.auto_poll = false; /* the device is slow: it polls only later */
	uint32_t id1 = ferry_balloon_hint_start(f.b);
	int64_t r = ferry_guest_balloon_service(f.d);
	assert_true(r > 0 || r == -ETIMEDOUT); /* done, or the ring filled up */
	uint32_t id2 = ferry_balloon_hint_start(f.b);
	assert_int_equal(id2, id1 + 1);
	ferry_balloon_stats s0, s1;
	ferry_balloon_get_stats(f.b, &s0);
	int n = ferry_balloon_hint_poll(f.b, on_hint, &f);
	assert_true(n > 1);
	ferry_balloon_get_stats(f.b, &s1);
	assert_int_equal(f.callbacks, 0);
	assert_int_equal(s1.pages_hinted, 0);
	/* Every chain but the final STOP was a stale buffer. */
	ferry_guest_balloon_stats gs;
	ferry_guest_balloon_get_stats(f.d, &gs);
	assert_int_equal(s1.ignored_buffers, 1 + gs.buffers);
	assert_false(ferry_balloon_hint_complete(f.b));
	/* Now the guest answers the current id, and the device keeps up. */
	f.auto_poll = true;
	assert_true(ferry_guest_balloon_service(f.d) > 0);
	assert_true(ferry_balloon_hint_poll(f.b, on_hint, &f) >= 0);
	assert_true(ferry_balloon_hint_complete(f.b));
	assert_hinted_is(&f, fr);
	free(fr);
	hfx_teardown(&f);
}

/* Buffers arriving after the host's stop are ignored. */
static void test_after_stop(void **state)
{
	(void)state;
	struct hfx f;
	hfx_setup(&f, 4 * MiB, 1, 20);
	run_to(&f, 3000);
	f.auto_poll = false;
	ferry_balloon_hint_start(f.b);
	int64_t r = ferry_guest_balloon_service(f.d);
	assert_true(r > 0 || r == -ETIMEDOUT);
	ferry_balloon_hint_stop(f.b);
	struct virtio_balloon_config c;
	ferry_balloon_config_read(f.b, &c);
	assert_int_equal(le32toh(c.free_page_hint_cmd_id), VIRTIO_BALLOON_CMD_ID_STOP);
	assert_true(ferry_balloon_hint_poll(f.b, on_hint, &f) > 1);
	ferry_balloon_stats s;
	ferry_balloon_get_stats(f.b, &s);
	assert_int_equal(f.callbacks, 0);
	assert_int_equal(s.pages_hinted, 0);
	assert_true(s.ignored_buffers > 0);
	assert_false(ferry_balloon_hint_complete(f.b));
	/* STOP in the config: the guest does not answer it. */
	assert_int_equal(ferry_guest_balloon_service(f.d), 0);
	ferry_balloon_hint_done(f.b);
	ferry_balloon_config_read(f.b, &c);
	assert_int_equal(le32toh(c.free_page_hint_cmd_id), VIRTIO_BALLOON_CMD_ID_DONE);
	assert_int_equal(ferry_guest_balloon_service(f.d), 0);
	hfx_teardown(&f);
}

/* A guest that never answers: the device reports nothing, whatever the wait. */
static void test_silent_guest(void **state)
{
	(void)state;
	struct hfx f;
	hfx_setup(&f, 4 * MiB, 1, 20);
	run_to(&f, 1000);
	ferry_balloon_hint_start(f.b);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do { /* the caller's bounded wait */
		assert_int_equal(ferry_balloon_hint_poll(f.b, on_hint, &f), 0);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 50);
	assert_false(ferry_balloon_hint_complete(f.b));
	ferry_balloon_stats s;
	ferry_balloon_get_stats(f.b, &s);
	assert_int_equal(s.hint_cmds, 1);
	assert_int_equal(s.pages_hinted, 0);
	assert_int_equal(s.reports, 0);
	assert_int_equal(f.callbacks, 0);
	hfx_teardown(&f);
}

static void test_ids_and_config(void **state)
{
	(void)state;
	struct hfx f;
	hfx_setup(&f, 4 * MiB, 1, 20);
	assert_true(ferry_balloon_features(f.b) >> VIRTIO_BALLOON_F_FREE_PAGE_HINT & 1);
	struct virtio_balloon_config c;
	ferry_balloon_config_read(f.b, &c);
	assert_int_equal(le32toh(c.free_page_hint_cmd_id), VIRTIO_BALLOON_CMD_ID_DONE);
	assert_int_equal(c.num_pages, 0);
	for (uint32_t i = 0; i < 5; i++) {
		assert_int_equal(ferry_balloon_hint_start(f.b), FERRY_BALLOON_CMD_ID_MIN + i);
		ferry_balloon_config_read(f.b, &c);
		assert_int_equal(le32toh(c.free_page_hint_cmd_id), FERRY_BALLOON_CMD_ID_MIN + i);
	}
	hfx_teardown(&f);
}

/* ------------------------------------------------------------------------ */
/* Malformed free page chains (a hostile guest on a hand-made fixture)      */

struct rfx {
	ferry_vm_t *vm;
	uint8_t *ram;
	ferry_ram_block_t *rb;
	ferry_gpa_map_t *map;
	ferry_balloon_t *b;
	ferry_gvq q;
};

#define R_GPA 0x10000000ull
#define R_SIZE (1u << 20)
#define R_BUF (R_GPA + 0x80000)

static void rfx_setup(struct rfx *f)
{
	memset(f, 0, sizeof(*f));
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	assert_int_equal(ferry_vm_create(&o, &f->vm), 0);
	f->ram = mmap(NULL, R_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(f->ram != MAP_FAILED);
	assert_int_equal(ferry_ram_block_add(f->vm, "ram", f->ram, R_SIZE, -1, &f->rb), 0);
	ferry_gpa_region r = { f->rb, R_GPA };
	assert_int_equal(ferry_gpa_map_create(&r, 1, &f->map), 0);
	assert_int_equal(ferry_balloon_create(f->map, &f->b), 0);
	assert_int_equal(ferry_gvq_init(&f->q, f->ram, R_GPA, 0x40000, 16, 0), 0);
	ferry_vq_config cfg;
	ferry_gvq_config(&f->q, &cfg);
	assert_int_equal(ferry_balloon_setup_vq(f->b, &cfg), 0);
}

static void rfx_teardown(struct rfx *f)
{
	ferry_balloon_destroy(f->b);
	ferry_gpa_map_destroy(f->map);
	ferry_vm_destroy(f->vm);
	munmap(f->ram, R_SIZE);
}

static void put_id(struct rfx *f, uint64_t gpa, uint32_t id)
{
	uint32_t le = htole32(id);
	memcpy(f->ram + (gpa - R_GPA), &le, 4);
}

static void expect_broken(struct rfx *f, const char *msg)
{
	uint64_t hinted[4] = { 0 };
	struct hfx h = { .hinted = hinted, .pc = f->rb, .npages = R_SIZE / PAGE };
	int r = ferry_balloon_hint_poll(f->b, on_hint, &h);
	const char *e = ferry_vq_error(ferry_balloon_free_page_vq(f->b));
	if (r != -EINVAL || strcmp(e, msg))
		fail_msg("r=%d '%s', expected '%s'", r, e, msg);
	assert_int_equal(ferry_balloon_hint_poll(f->b, on_hint, &h), FERRY_EBROKEN);
	assert_int_equal(h.callbacks, 0);
}

static void test_bad_cmd_len(void **state)
{
	(void)state;
	struct rfx f;
	rfx_setup(&f);
	ferry_balloon_hint_start(f.b);
	ferry_gbuf b = { R_BUF, 8 };
	assert_true(ferry_gvq_add(&f.q, &b, 1, NULL, 0, false) >= 0);
	expect_broken(&f, "free page chain at head 0: command id buffer is 8 bytes (expected 4)");
	rfx_teardown(&f);
}

static void test_mixed_chain(void **state)
{
	(void)state;
	struct rfx f;
	rfx_setup(&f);
	uint32_t id = ferry_balloon_hint_start(f.b);
	put_id(&f, R_BUF, id);
	ferry_gbuf o = { R_BUF, 4 }, i = { R_BUF + PAGE, PAGE };
	assert_true(ferry_gvq_add(&f.q, &o, 1, &i, 1, false) >= 0);
	expect_broken(&f, "free page chain at head 0 mixes 1 readable and 1 writable buffers");
	rfx_teardown(&f);
}

static void test_two_cmds(void **state)
{
	(void)state;
	struct rfx f;
	rfx_setup(&f);
	uint32_t id = ferry_balloon_hint_start(f.b);
	put_id(&f, R_BUF, id);
	ferry_gbuf o[2] = { { R_BUF, 4 }, { R_BUF, 4 } };
	assert_true(ferry_gvq_add(&f.q, o, 2, NULL, 0, false) >= 0);
	expect_broken(&f, "free page chain at head 0: 2 command buffers (expected 1)");
	rfx_teardown(&f);
}

static void test_range_outside(void **state)
{
	(void)state;
	struct rfx f;
	rfx_setup(&f);
	uint32_t id = ferry_balloon_hint_start(f.b);
	put_id(&f, R_BUF, id);
	ferry_gbuf o = { R_BUF, 4 }, i = { R_GPA + R_SIZE - PAGE, 2 * PAGE };
	assert_true(ferry_gvq_add(&f.q, &o, 1, NULL, 0, false) >= 0);
	assert_true(ferry_gvq_add(&f.q, NULL, 0, &i, 1, false) >= 0);
	expect_broken(&f, "descriptor 1: buffer [0x100ff000, +0x2000) is outside guest RAM");
	rfx_teardown(&f);
}

/* Whole pages only; the device writes nothing; used length 0. */
static void test_partial_pages(void **state)
{
	(void)state;
	struct rfx f;
	rfx_setup(&f);
	uint32_t id = ferry_balloon_hint_start(f.b);
	put_id(&f, R_BUF, id);
	put_id(&f, R_BUF + 4, VIRTIO_BALLOON_CMD_ID_STOP);
	memset(f.ram + PAGE, 0x77, 8 * PAGE);
	ferry_gbuf o = { R_BUF, 4 }, stop = { R_BUF + 4, 4 };
	ferry_gbuf in[3] = { { R_GPA + PAGE + 100, 3 * PAGE }, /* pages 2, 3 only */
			     { R_GPA + 5 * PAGE, 100 },         /* no whole page */
			     { R_GPA + 6 * PAGE, PAGE } };      /* page 6 */
	assert_true(ferry_gvq_add(&f.q, &o, 1, NULL, 0, false) >= 0);
	for (int k = 0; k < 3; k++)
		assert_true(ferry_gvq_add(&f.q, NULL, 0, &in[k], 1, false) >= 0);
	assert_true(ferry_gvq_add(&f.q, &stop, 1, NULL, 0, false) >= 0);
	uint64_t hinted[4] = { 0 };
	struct hfx h = { .hinted = hinted, .pc = f.rb, .npages = R_SIZE / PAGE };
	assert_int_equal(ferry_balloon_hint_poll(f.b, on_hint, &h), 5);
	assert_int_equal(hinted[0], (1ull << 2) | (1ull << 3) | (1ull << 6));
	assert_true(ferry_balloon_hint_complete(f.b));
	for (size_t k = 0; k < 8 * PAGE; k++)
		if (f.ram[PAGE + k] != 0x77)
			fail_msg("the device wrote a hinted buffer at +%zu", k);
	uint32_t len;
	for (int k = 0; k < 5; k++) {
		assert_true(ferry_gvq_get_used(&f.q, &len) >= 0);
		assert_int_equal(len, 0);
	}
	ferry_balloon_stats s;
	ferry_balloon_get_stats(f.b, &s);
	assert_int_equal(s.buffers_hinted, 3);
	assert_int_equal(s.pages_hinted, 3);
	assert_int_equal(s.reports, 1);
	rfx_teardown(&f);
}

/* Encodes vmsd of opaque on one side and loads it into opaque2 on the other. */
static int move_state(const ferry_vmsd *v, void *from, void *to, char *err, size_t len)
{
	uint8_t buf[4096];
	int64_t n = ferry_vmsd_encode(v, from, buf, sizeof(buf));
	assert_true(n > 0 && n <= (int64_t)sizeof(buf));
	return ferry_vmsd_decode(v, to, v->version, buf, (size_t)n, err, len);
}

/*
 * A report the guest queued before switchover is still in its rings on the
 * destination (they arrive with its RAM). The balloon's state migrates, so
 * the destination's next id is new and that report stays stale: nothing
 * of it is hinted (were the ids to start over at 0x80000000, its buffers
 * would pass for the new report, and pages written since would be dropped).
 */
static void test_migrated_report_stale(void **state)
{
	(void)state;
	struct hfx f;
	hfx_setup(&f, 4 * MiB, 1, 20);
	run_to(&f, 3000);
	f.auto_poll = false; /* the source never polls this report */
	uint32_t id1 = ferry_balloon_hint_start(f.b);
	assert_int_equal(id1, FERRY_BALLOON_CMD_ID_MIN);
	int64_t r = ferry_guest_balloon_service(f.d);
	assert_true(r > 0 || r == -ETIMEDOUT);
	ferry_balloon_hint_done(f.b); /* switchover */

	/* The destination's balloon, over the same guest RAM. */
	ferry_balloon_t *b2;
	char err[256] = "";
	assert_int_equal(ferry_balloon_create(f.map, &b2), 0);
	assert_int_equal(move_state(ferry_balloon_vmsd(), f.b, b2, err, sizeof(err)), 0);
	assert_int_equal(move_state(ferry_vq_vmsd(), ferry_balloon_free_page_vq(f.b),
				    ferry_balloon_free_page_vq(b2), err, sizeof(err)),
			 0);
	struct virtio_balloon_config c;
	ferry_balloon_config_read(b2, &c);
	assert_int_equal(le32toh(c.free_page_hint_cmd_id), VIRTIO_BALLOON_CMD_ID_DONE);

	/* The guest migrates on: the destination asks for hints. */
	uint32_t id2 = ferry_balloon_hint_start(b2);
	assert_int_equal(id2, id1 + 1);
	int n = ferry_balloon_hint_poll(b2, on_hint, &f);
	assert_true(n > 1);
	ferry_balloon_stats s;
	ferry_balloon_get_stats(b2, &s);
	ferry_guest_balloon_stats gs;
	ferry_guest_balloon_get_stats(f.d, &gs);
	assert_true(gs.buffers > 0);
	assert_int_equal(f.callbacks, 0);
	assert_int_equal(s.pages_hinted, 0);
	assert_int_equal(s.ignored_buffers, 1 + gs.buffers);
	assert_false(ferry_balloon_hint_complete(b2));
	ferry_balloon_destroy(b2);
	hfx_teardown(&f);
}

/* Balloon state that cannot be right is refused; the balloon keeps its ids. */
static void test_bad_state(void **state)
{
	(void)state;
	struct hfx f;
	hfx_setup(&f, 4 * MiB, 1, 20);
	ferry_balloon_t *b2;
	assert_int_equal(ferry_balloon_create(f.map, &b2), 0);
	static const struct {
		uint32_t next, id;
		const char *msg;
	} bad[] = {
		{ 5, VIRTIO_BALLOON_CMD_ID_DONE,
		  "virtio-balloon: next command id 0x5 is below 0x80000000" },
		{ FERRY_BALLOON_CMD_ID_MIN, 2,
		  "virtio-balloon: published command id 0x2 is neither STOP, DONE nor >= 0x80000000" },
	};
	for (unsigned i = 0; i < 2; i++) {
		uint8_t buf[256];
		int64_t n = ferry_vmsd_encode(ferry_balloon_vmsd(), f.b, buf, sizeof(buf));
		assert_true(n > 8 && n <= (int64_t)sizeof(buf));
		patch_field(buf, (size_t)n, "next_cmd_id", bad[i].next);
		patch_field(buf, (size_t)n, "free_page_hint_cmd_id", bad[i].id);
		char err[256] = "";
		assert_int_equal(ferry_vmsd_decode(ferry_balloon_vmsd(), b2, 1, buf, (size_t)n, err,
						   sizeof(err)),
				 FERRY_EBADSTREAM);
		assert_string_equal(err, bad[i].msg);
	}
	assert_int_equal(ferry_balloon_hint_start(b2), FERRY_BALLOON_CMD_ID_MIN);
	ferry_balloon_destroy(b2);
	hfx_teardown(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_report_exact),
		cmocka_unit_test(test_realloc_after_hint),
		cmocka_unit_test(test_stale_id),
		cmocka_unit_test(test_after_stop),
		cmocka_unit_test(test_silent_guest),
		cmocka_unit_test(test_ids_and_config),
		cmocka_unit_test(test_bad_cmd_len),
		cmocka_unit_test(test_mixed_chain),
		cmocka_unit_test(test_two_cmds),
		cmocka_unit_test(test_range_outside),
		cmocka_unit_test(test_partial_pages),
		cmocka_unit_test(test_migrated_report_stale),
		cmocka_unit_test(test_bad_state),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
