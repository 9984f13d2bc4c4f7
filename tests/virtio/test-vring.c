/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the device-side split virtqueue (src/lib/virtio/vring.c)
 * driven by the synthetic guest's driver (src/guest/vring-drv.c): the data
 * path (direct and indirect chains, used ring), every malformed-ring case
 * (the queue is broken with the exact message, nothing was consumed and
 * guest RAM is byte-identical; guard pages around every block catch any
 * access outside guest RAM), notification suppression and event index,
 * and the ring state migrated with requests in flight.
 *
 * Guest-physical layout of the fixture: block "a" (256 KiB) at 0x100000
 * holds the rings and data buffers, block "b" (64 KiB) follows it directly
 * at 0x140000 (for straddling buffers), block "c" (64 KiB) sits after a
 * hole at 0x400000.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "ferry.h"
#include "vring-drv.h"
#include "vmsd-patch.h"

#define PAGE 4096u
#define NBLK 3
#define RING_GPA 0x100000ull
#define BUF_GPA 0x120000ull  /* data buffers in block a */
#define OUTSIDE_GPA 0x300000ull
#define STRADDLE_GPA 0x13ffffull
#define EV (1ull << VIRTIO_RING_F_EVENT_IDX)
#define IND (1ull << VIRTIO_RING_F_INDIRECT_DESC)

static const struct {
	const char *name;
	uint64_t gpa, size;
} layout[NBLK] = {
	{ "a", 0x100000, 256 << 10 },
	{ "b", 0x140000, 64 << 10 },
	{ "c", 0x400000, 64 << 10 },
};

struct fx {
	ferry_vm_t *vm;
	uint8_t *map[NBLK]; /* guard page, block, guard page */
	uint8_t *ram[NBLK];
	ferry_ram_block_t *rb[NBLK];
	ferry_gpa_map_t *gmap;
	ferry_vq_t *vq;
	ferry_gvq q;
	uint8_t *snap[NBLK];
};

static void fx_ram(struct fx *f, const uint8_t *const *init)
{
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	assert_int_equal(ferry_vm_create(&o, &f->vm), 0);
	ferry_gpa_region reg[NBLK];
	for (int i = 0; i < NBLK; i++) {
		size_t len = layout[i].size + 2 * PAGE;
		f->map[i] = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(f->map[i] != MAP_FAILED);
		f->ram[i] = f->map[i] + PAGE;
		assert_int_equal(mprotect(f->ram[i], layout[i].size, PROT_READ | PROT_WRITE), 0);
		if (init)
			memcpy(f->ram[i], init[i], layout[i].size);
		else
			memset(f->ram[i], 0xa5, layout[i].size); /* canary */
		assert_int_equal(ferry_ram_block_add(f->vm, layout[i].name, f->ram[i], layout[i].size,
						     -1, &f->rb[i]), 0);
		reg[i].rb = f->rb[i];
		reg[i].gpa = layout[i].gpa;
		f->snap[i] = malloc(layout[i].size);
		assert_non_null(f->snap[i]);
	}
	assert_int_equal(ferry_gpa_map_create(reg, NBLK, &f->gmap), 0);
	assert_int_equal(ferry_vq_create(f->gmap, &f->vq), 0);
}

static void fx_setup(struct fx *f, uint16_t num, uint64_t features)
{
	memset(f, 0, sizeof(*f));
	fx_ram(f, NULL);
	assert_int_equal(ferry_gvq_init(&f->q, f->ram[0], RING_GPA, 0x20000, num, features), 0);
	ferry_vq_config cfg;
	ferry_gvq_config(&f->q, &cfg);
	assert_int_equal(ferry_vq_setup(f->vq, &cfg), 0);
	assert_true(ferry_vq_ready(f->vq));
}

static void fx_teardown(struct fx *f)
{
	ferry_vq_destroy(f->vq);
	ferry_gpa_map_destroy(f->gmap);
	ferry_vm_destroy(f->vm);
	for (int i = 0; i < NBLK; i++) {
		munmap(f->map[i], layout[i].size + 2 * PAGE);
		free(f->snap[i]);
	}
}

static void fx_snapshot(struct fx *f)
{
	for (int i = 0; i < NBLK; i++)
		memcpy(f->snap[i], f->ram[i], layout[i].size);
}

static void assert_ram_unchanged(const struct fx *f)
{
	for (int i = 0; i < NBLK; i++)
		if (memcmp(f->snap[i], f->ram[i], layout[i].size))
			fail_msg("guest RAM block %s changed", layout[i].name);
}

/* Host address of a guest-physical address in the fixture. */
static uint8_t *host_of(const struct fx *f, uint64_t gpa)
{
	for (int i = 0; i < NBLK; i++)
		if (gpa >= layout[i].gpa && gpa < layout[i].gpa + layout[i].size)
			return f->ram[i] + (gpa - layout[i].gpa);
	fail_msg("gpa 0x%llx not in RAM", (unsigned long long)gpa);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* The data path                                                            */

static void test_map(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f, 8, 0);
	ferry_ram_block_t *rb;
	uint64_t off;
	assert_ptr_equal(ferry_gpa_map_translate(f.gmap, 0x140010, 16, &rb, &off), f.ram[1] + 16);
	assert_ptr_equal(rb, f.rb[1]);
	assert_int_equal(off, 16);
	assert_null(ferry_gpa_map_translate(f.gmap, STRADDLE_GPA, 2, NULL, NULL));
	assert_null(ferry_gpa_map_translate(f.gmap, 0xfffff, 1, NULL, NULL));
	assert_null(ferry_gpa_map_translate(f.gmap, 0x150000, 1, NULL, NULL));
	assert_null(ferry_gpa_map_translate(f.gmap, 0x400000, 0, NULL, NULL));
	assert_null(ferry_gpa_map_translate(f.gmap, 0x400000, UINT64_MAX, NULL, NULL));
	assert_non_null(ferry_gpa_map_translate(f.gmap, 0x40ffff, 1, NULL, NULL));
	assert_null(ferry_gpa_map_translate(f.gmap, UINT64_MAX, 1, NULL, NULL));

	/* Overlaps, misalignment and overflow are refused. */
	ferry_gpa_map_t *m = (ferry_gpa_map_t *)&f;
	ferry_gpa_region bad[2] = { { f.rb[0], 0x100000 }, { f.rb[1], 0x13f000 } };
	assert_int_equal(ferry_gpa_map_create(bad, 2, &m), -EINVAL);
	assert_null(m);
	bad[1].gpa = 0x140800;
	assert_int_equal(ferry_gpa_map_create(bad, 2, &m), -EINVAL);
	bad[1].gpa = UINT64_MAX - 0x1fff;
	assert_int_equal(ferry_gpa_map_create(bad, 2, &m), -EINVAL);
	bad[1].rb = NULL;
	bad[1].gpa = 0;
	assert_int_equal(ferry_gpa_map_create(bad, 2, &m), -EINVAL);
	assert_int_equal(ferry_gpa_map_create(bad, 0, &m), -EINVAL);
	fx_teardown(&f);
}

static void test_pop_push(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f, 8, IND);
	struct iovec iov[8];
	uint64_t gpa[8];
	ferry_vq_elem e = { .iov = iov, .gpa = gpa, .cap = 8 };

	assert_int_equal(ferry_vq_pop(f.vq, &e), 0); /* empty */
	ferry_gbuf out[2] = { { BUF_GPA, 100 }, { 0x140000, 50 } };
	ferry_gbuf in[1] = { { 0x400100, 200 } };
	int h1 = ferry_gvq_add(&f.q, out, 2, in, 1, false);
	int h2 = ferry_gvq_add(&f.q, out, 1, in, 1, true);
	assert_true(h1 >= 0 && h2 >= 0);

	assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	assert_int_equal(e.head, h1);
	assert_int_equal(e.out_num, 2);
	assert_int_equal(e.in_num, 1);
	assert_ptr_equal(iov[0].iov_base, host_of(&f, BUF_GPA));
	assert_int_equal(iov[0].iov_len, 100);
	assert_ptr_equal(iov[1].iov_base, f.ram[1]);
	assert_ptr_equal(iov[2].iov_base, f.ram[2] + 0x100);
	assert_int_equal(iov[2].iov_len, 200);
	assert_int_equal(gpa[2], 0x400100);

	assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	assert_int_equal(e.head, h2);
	assert_int_equal(e.out_num, 1);
	assert_int_equal(e.in_num, 1);
	assert_int_equal(ferry_vq_inflight(f.vq), 2);
	assert_int_equal(ferry_vq_pop(f.vq, &e), 0);

	/* Complete out of order; the device writes its answer first. */
	memset(iov[1].iov_base, 0x11, 7);
	assert_int_equal(ferry_vq_push(f.vq, (uint16_t)h2, 7), 0);
	assert_int_equal(ferry_vq_push(f.vq, (uint16_t)h2, 7), -EINVAL); /* not in flight */
	assert_int_equal(ferry_vq_push(f.vq, 8, 0), -EINVAL);
	assert_false(ferry_vq_is_broken(f.vq)); /* device bugs do not break it */
	assert_int_equal(ferry_vq_push(f.vq, (uint16_t)h1, 0), 0);
	uint32_t len;
	assert_int_equal(ferry_gvq_get_used(&f.q, &len), h2);
	assert_int_equal(len, 7);
	assert_int_equal(ferry_gvq_get_used(&f.q, &len), h1);
	assert_int_equal(len, 0);
	assert_int_equal(ferry_gvq_get_used(&f.q, &len), -EAGAIN);
	assert_int_equal(ferry_vq_inflight(f.vq), 0);

	/* Many rounds: indices wrap, descriptors recycle. */
	for (unsigned round = 0; round < 70000; round++) {
		int h = ferry_gvq_add(&f.q, out, 1, in, 1, round % 3 == 0);
		assert_true(h >= 0);
		assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
		assert_int_equal(e.head, h);
		assert_int_equal(ferry_vq_push(f.vq, e.head, round & 0xff), 0);
		assert_int_equal(ferry_gvq_get_used(&f.q, &len), h);
		assert_int_equal(len, round & 0xff);
	}
	assert_false(ferry_vq_is_broken(f.vq));
	assert_string_equal(ferry_vq_error(f.vq), "");

	/* Reset: not ready until set up again. */
	ferry_vq_reset(f.vq);
	assert_false(ferry_vq_ready(f.vq));
	assert_int_equal(ferry_vq_pop(f.vq, &e), -ENODEV);
	assert_int_equal(ferry_vq_push(f.vq, 0, 0), -ENODEV);
	fx_teardown(&f);
}

/* Ring areas the driver programs: size, alignment, inside one block. */
static void test_setup_bad(void **state)
{
	(void)state;
	static const struct {
		uint16_t num;
		uint64_t desc, avail, used;
		const char *msg;
	} cases[] = {
		{ 6, RING_GPA, RING_GPA + 0x100, RING_GPA + 0x200,
		  "ring size 6 is not a power of two in 1..1024" },
		{ 0, RING_GPA, RING_GPA + 0x100, RING_GPA + 0x200,
		  "ring size 0 is not a power of two in 1..1024" },
		{ 2048, RING_GPA, RING_GPA + 0x100, RING_GPA + 0x200,
		  "ring size 2048 is not a power of two in 1..1024" },
		{ 8, RING_GPA + 8, RING_GPA + 0x100, RING_GPA + 0x200,
		  "descriptor ring at 0x100008 is not 16-byte aligned" },
		{ 8, RING_GPA, RING_GPA + 0x101, RING_GPA + 0x200,
		  "avail ring at 0x100101 is not 2-byte aligned" },
		{ 8, RING_GPA, RING_GPA + 0x100, RING_GPA + 0x202,
		  "used ring at 0x100202 is not 4-byte aligned" },
		{ 8, 0x13ffc0, RING_GPA + 0x100, RING_GPA + 0x200,
		  "descriptor ring [0x13ffc0, +0x80) straddles RAM blocks 'a' and 'b'" },
		{ 8, RING_GPA, 0x40fff0, RING_GPA + 0x200,
		  "avail ring [0x40fff0, +0x16) is outside guest RAM" },
		{ 8, RING_GPA, RING_GPA + 0x100, 0x50000,
		  "used ring [0x50000, +0x46) is outside guest RAM" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx f;
		fx_setup(&f, 8, 0);
		ferry_vq_config c = { .num = cases[i].num, .desc = cases[i].desc,
				      .avail = cases[i].avail, .used = cases[i].used };
		int r = ferry_vq_setup(f.vq, &c);
		if (r != -EINVAL || strcmp(ferry_vq_error(f.vq), cases[i].msg))
			fail_msg("case %zu: r=%d '%s', expected '%s'", i, r, ferry_vq_error(f.vq),
				 cases[i].msg);
		assert_true(ferry_vq_is_broken(f.vq));
		assert_false(ferry_vq_ready(f.vq));
		fx_teardown(&f);
	}
}

/* ------------------------------------------------------------------------ */
/* Malformed rings                                                          */

static const char *const malformed_msg[FERRY_GVQ_MALFORMED_COUNT] = {
	[FERRY_GVQ_BAD_AVAIL_IDX] = "avail index moved from 0 to 9: more than the ring size 8",
	[FERRY_GVQ_BAD_HEAD] = "avail ring entry 0 (slot 0): head 8 out of range (ring size 8)",
	[FERRY_GVQ_BAD_NEXT] = "descriptor 0: next 8 out of range (ring size 8)",
	[FERRY_GVQ_LOOP] = "chain at head 0 is longer than the ring size 8 (loop)",
	[FERRY_GVQ_INDIRECT_LEN] = "descriptor 0: indirect table length 24 is not a multiple of 16",
	[FERRY_GVQ_INDIRECT_EMPTY] = "descriptor 0: empty indirect table",
	[FERRY_GVQ_INDIRECT_NESTED] =
		"indirect descriptor 1 (table of descriptor 0): nested indirect table",
	[FERRY_GVQ_INDIRECT_NEXT] = "descriptor 0: indirect table with the NEXT flag",
	[FERRY_GVQ_INDIRECT_LOOP] =
		"descriptor 0: indirect chain longer than its table of 2 entries (loop)",
	[FERRY_GVQ_INDIRECT_BAD_NEXT] =
		"indirect descriptor 0 (table of descriptor 0): next 2 out of range (table size 2)",
	[FERRY_GVQ_READ_AFTER_WRITE] =
		"descriptor 1: device-readable buffer after a device-writable one",
	[FERRY_GVQ_OUTSIDE_RAM] = "descriptor 1: buffer [0x300000, +0x1000) is outside guest RAM",
	[FERRY_GVQ_STRADDLE] =
		"descriptor 0: buffer [0x13ffff, +0x2) straddles RAM blocks 'a' and 'b'",
	[FERRY_GVQ_ZERO_LEN] = "descriptor 1: zero-length buffer",
	[FERRY_GVQ_LONG_CHAIN] = "chain at head 0 has more than 4 buffers (iovec array full)",
	[FERRY_GVQ_HEAD_REUSED] = "avail ring entry 1 (slot 1): head 0 is already in flight",
};

/*
 * Posts one malformed chain; the pop that meets it must fail with -EINVAL,
 * break the queue with msg, consume nothing and leave guest RAM exactly as
 * it was; every later call reports FERRY_EBROKEN.
 */
static void run_malformed(ferry_gvq_malformed kind, unsigned cap)
{
	struct fx f;
	struct iovec iov[64];
	ferry_vq_elem e = { .iov = iov, .cap = cap };
	fx_setup(&f, 8, EV | IND);
	assert_int_equal(ferry_gvq_post_malformed(&f.q, kind, BUF_GPA, OUTSIDE_GPA, STRADDLE_GPA), 0);
	if (kind == FERRY_GVQ_HEAD_REUSED)
		assert_int_equal(ferry_vq_pop(f.vq, &e), 1); /* the first use is fine */
	fx_snapshot(&f);
	unsigned inflight = ferry_vq_inflight(f.vq);

	int r = ferry_vq_pop(f.vq, &e);
	if (r != -EINVAL || strcmp(ferry_vq_error(f.vq), malformed_msg[kind]))
		fail_msg("kind %d: r=%d '%s', expected '%s'", kind, r, ferry_vq_error(f.vq),
			 malformed_msg[kind]);
	assert_true(ferry_vq_is_broken(f.vq));
	assert_ram_unchanged(&f);
	assert_int_equal(ferry_vq_inflight(f.vq), inflight);

	/* Sticky. */
	assert_int_equal(ferry_vq_pop(f.vq, &e), FERRY_EBROKEN);
	assert_int_equal(ferry_vq_push(f.vq, 0, 0), FERRY_EBROKEN);
	assert_int_equal(ferry_vq_pop_inflight(f.vq, &e), FERRY_EBROKEN);
	assert_false(ferry_vq_need_notify(f.vq));
	ferry_vq_set_notification(f.vq, false);
	assert_ram_unchanged(&f);
	assert_string_equal(ferry_vq_error(f.vq), malformed_msg[kind]);

	/* A reset and a new setup bring it back. */
	ferry_vq_reset(f.vq);
	assert_false(ferry_vq_is_broken(f.vq));
	fx_teardown(&f);
}

#define MALFORMED_TEST(name, kind, cap)        \
	static void test_##name(void **state) \
	{                                      \
		(void)state;                   \
		run_malformed(kind, cap);      \
	}
MALFORMED_TEST(avail_idx_too_far, FERRY_GVQ_BAD_AVAIL_IDX, 64)
MALFORMED_TEST(head_out_of_range, FERRY_GVQ_BAD_HEAD, 64)
MALFORMED_TEST(next_out_of_range, FERRY_GVQ_BAD_NEXT, 64)
MALFORMED_TEST(chain_loop, FERRY_GVQ_LOOP, 64)
MALFORMED_TEST(indirect_len, FERRY_GVQ_INDIRECT_LEN, 64)
MALFORMED_TEST(indirect_empty, FERRY_GVQ_INDIRECT_EMPTY, 64)
MALFORMED_TEST(indirect_nested, FERRY_GVQ_INDIRECT_NESTED, 64)
MALFORMED_TEST(indirect_with_next, FERRY_GVQ_INDIRECT_NEXT, 64)
MALFORMED_TEST(indirect_loop, FERRY_GVQ_INDIRECT_LOOP, 64)
MALFORMED_TEST(indirect_next_out_of_range, FERRY_GVQ_INDIRECT_BAD_NEXT, 64)
MALFORMED_TEST(read_after_write, FERRY_GVQ_READ_AFTER_WRITE, 64)
MALFORMED_TEST(outside_ram, FERRY_GVQ_OUTSIDE_RAM, 64)
MALFORMED_TEST(straddle, FERRY_GVQ_STRADDLE, 64)
MALFORMED_TEST(zero_len, FERRY_GVQ_ZERO_LEN, 64)
MALFORMED_TEST(iovec_overflow, FERRY_GVQ_LONG_CHAIN, 4)
MALFORMED_TEST(head_reused, FERRY_GVQ_HEAD_REUSED, 64)

/* More addresses a guest can get wrong: each a single descriptor. */
static void test_bad_addresses(void **state)
{
	(void)state;
	static const struct {
		uint64_t addr;
		uint32_t len;
		uint16_t flags;
		uint64_t features;
		const char *msg;
	} cases[] = {
		{ UINT64_MAX - 7, 16, 0, 0,
		  "descriptor 0: buffer [0xfffffffffffffff8, +0x10) is outside guest RAM" },
		{ 0x40ffff, 2, 0, 0, "descriptor 0: buffer [0x40ffff, +0x2) is outside guest RAM" },
		{ 0x14ffff, 2, 0, 0, "descriptor 0: buffer [0x14ffff, +0x2) is outside guest RAM" },
		{ 0, 1, 0, 0, "descriptor 0: buffer [0x0, +0x1) is outside guest RAM" },
		{ BUF_GPA, 16, VRING_DESC_F_INDIRECT, 0,
		  "descriptor 0: indirect table but VIRTIO_RING_F_INDIRECT_DESC was not negotiated" },
		{ 0x13fff0, 32, VRING_DESC_F_INDIRECT, IND,
		  "descriptor 0: indirect table [0x13fff0, +0x20) straddles RAM blocks 'a' and 'b'" },
		{ 0x500000, 32, VRING_DESC_F_INDIRECT, IND,
		  "descriptor 0: indirect table [0x500000, +0x20) is outside guest RAM" },
		{ 0x100000, 0xfffffff0, VRING_DESC_F_INDIRECT, IND,
		  "descriptor 0: indirect table [0x100000, +0xfffffff0) is outside guest RAM" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx f;
		struct iovec iov[8];
		ferry_vq_elem e = { .iov = iov, .cap = 8 };
		fx_setup(&f, 8, cases[i].features);
		ferry_gvq_raw_desc(&f.q, 0, cases[i].addr, cases[i].len, cases[i].flags, 0);
		ferry_gvq_raw_avail(&f.q, 0, 0);
		fx_snapshot(&f);
		int r = ferry_vq_pop(f.vq, &e);
		if (r != -EINVAL || strcmp(ferry_vq_error(f.vq), cases[i].msg))
			fail_msg("case %zu: r=%d '%s', expected '%s'", i, r, ferry_vq_error(f.vq),
				 cases[i].msg);
		assert_ram_unchanged(&f);
		fx_teardown(&f);
	}
}

/* A valid chain popped before a malformed one stays usable state-wise. */
static void test_broken_after_good(void **state)
{
	(void)state;
	struct fx f;
	struct iovec iov[8];
	ferry_vq_elem e = { .iov = iov, .cap = 8 };
	fx_setup(&f, 8, 0);
	ferry_gbuf b = { BUF_GPA, 64 };
	int h = ferry_gvq_add(&f.q, &b, 1, NULL, 0, false);
	assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	/* Then a head out of range in the next slot. */
	ferry_gvq_raw_avail(&f.q, 1, 200);
	assert_int_equal(ferry_vq_pop(f.vq, &e), -EINVAL);
	assert_string_equal(ferry_vq_error(f.vq),
			    "avail ring entry 1 (slot 1): head 200 out of range (ring size 8)");
	assert_int_equal(ferry_vq_push(f.vq, (uint16_t)h, 0), FERRY_EBROKEN);
	assert_int_equal(ferry_vq_inflight(f.vq), 1);
	fx_teardown(&f);
}

/* ------------------------------------------------------------------------ */
/* Notifications                                                            */

static void test_notify_flags(void **state)
{
	(void)state;
	struct fx f;
	struct iovec iov[8];
	ferry_vq_elem e = { .iov = iov, .cap = 8 };
	fx_setup(&f, 8, 0);
	ferry_gbuf b = { BUF_GPA, 64 };

	/* Device suppresses kicks with VRING_USED_F_NO_NOTIFY. */
	assert_true(ferry_gvq_add(&f.q, &b, 1, NULL, 0, false) >= 0);
	assert_true(ferry_gvq_kick_needed(&f.q));
	ferry_vq_set_notification(f.vq, false);
	assert_int_equal(le16toh(f.q.vr.used->flags), VRING_USED_F_NO_NOTIFY);
	assert_true(ferry_gvq_add(&f.q, &b, 1, NULL, 0, false) >= 0);
	assert_false(ferry_gvq_kick_needed(&f.q));
	ferry_vq_set_notification(f.vq, true);
	assert_int_equal(le16toh(f.q.vr.used->flags), 0);
	assert_true(ferry_gvq_add(&f.q, &b, 1, NULL, 0, false) >= 0);
	assert_true(ferry_gvq_kick_needed(&f.q));

	/* Driver suppresses interrupts with VRING_AVAIL_F_NO_INTERRUPT. */
	assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	assert_int_equal(ferry_vq_push(f.vq, e.head, 0), 0);
	assert_true(ferry_vq_need_notify(f.vq));
	ferry_gvq_enable_interrupts(&f.q, false);
	assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	assert_int_equal(ferry_vq_push(f.vq, e.head, 0), 0);
	assert_false(ferry_vq_need_notify(f.vq));
	ferry_gvq_enable_interrupts(&f.q, true);
	assert_true(ferry_vq_need_notify(f.vq));
	fx_teardown(&f);
}

static void test_event_idx(void **state)
{
	(void)state;
	struct fx f;
	struct iovec iov[8];
	ferry_vq_elem e = { .iov = iov, .cap = 8 };
	fx_setup(&f, 8, EV);
	ferry_gbuf b = { BUF_GPA, 64 };
	int heads[8];

	/* Kicks: avail_event follows what the device consumed. */
	for (int i = 0; i < 3; i++)
		heads[i] = ferry_gvq_add(&f.q, &b, 1, NULL, 0, false);
	assert_true(ferry_gvq_kick_needed(&f.q)); /* avail_event 0 in [0, 3) */
	for (int i = 0; i < 3; i++)
		assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	assert_int_equal(le16toh(vring_avail_event(&f.q.vr)), 3);
	heads[3] = ferry_gvq_add(&f.q, &b, 1, NULL, 0, false);
	assert_true(ferry_gvq_kick_needed(&f.q)); /* entry 3 is the awaited one */
	heads[4] = ferry_gvq_add(&f.q, &b, 1, NULL, 0, false);
	assert_false(ferry_gvq_kick_needed(&f.q)); /* already kicked for 3 */
	/* Device stops wanting kicks: the avail event is left behind. */
	ferry_vq_set_notification(f.vq, false);
	assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	assert_int_equal(le16toh(vring_avail_event(&f.q.vr)), 3);
	heads[5] = ferry_gvq_add(&f.q, &b, 1, NULL, 0, false);
	assert_false(ferry_gvq_kick_needed(&f.q));
	ferry_vq_set_notification(f.vq, true); /* asks for the entry after 5 */
	assert_int_equal(le16toh(vring_avail_event(&f.q.vr)), 6);
	assert_int_equal(ferry_vq_pop(f.vq, &e), 1); /* re-check after enabling */
	heads[6] = ferry_gvq_add(&f.q, &b, 1, NULL, 0, false);
	assert_true(ferry_gvq_kick_needed(&f.q));
	assert_int_equal(ferry_vq_pop(f.vq, &e), 1);
	(void)heads;

	/* Interrupts: used_event. */
	ferry_gvq_enable_interrupts(&f.q, true); /* used_event = 0 */
	assert_int_equal(ferry_vq_push(f.vq, 0, 0), 0);
	assert_true(ferry_vq_need_notify(f.vq)); /* first decision: always */
	assert_int_equal(ferry_vq_push(f.vq, 1, 0), 0);
	assert_false(ferry_vq_need_notify(f.vq)); /* used_event 0 already passed */
	uint32_t len;
	assert_int_equal(ferry_gvq_get_used(&f.q, &len), 0);
	assert_int_equal(ferry_gvq_get_used(&f.q, &len), 1);
	ferry_gvq_enable_interrupts(&f.q, true); /* used_event = 2 */
	assert_int_equal(ferry_vq_push(f.vq, 2, 0), 0);
	assert_true(ferry_vq_need_notify(f.vq));
	assert_int_equal(ferry_vq_push(f.vq, 3, 0), 0);
	assert_int_equal(ferry_vq_push(f.vq, 4, 0), 0);
	assert_false(ferry_vq_need_notify(f.vq));
	ferry_gvq_enable_interrupts(&f.q, false); /* used_event behind: never */
	assert_int_equal(ferry_vq_push(f.vq, 5, 0), 0);
	assert_false(ferry_vq_need_notify(f.vq));
	fx_teardown(&f);
}

/* ------------------------------------------------------------------------ */
/* Migration of the ring state                                              */

/*
 * A second fixture whose RAM is a copy of f's (a migration), with the
 * guest's driver re-attached to its state in that RAM.
 */
static void fx_clone(const struct fx *f, struct fx *d)
{
	memset(d, 0, sizeof(*d));
	const uint8_t *init[NBLK] = { f->ram[0], f->ram[1], f->ram[2] };
	fx_ram(d, init);
	assert_int_equal(ferry_gvq_attach(&d->q, d->ram[0], RING_GPA, 0x20000), 0);
	assert_int_equal(ferry_gvq_outstanding(&d->q), ferry_gvq_outstanding(&f->q));
}

static int64_t save(ferry_vq_t *vq, uint8_t *buf, size_t cap)
{
	int64_t n = ferry_vmsd_encode(ferry_vq_vmsd(), vq, buf, cap);
	assert_true(n > 0 && (size_t)n <= cap);
	return n;
}

static int load(ferry_vq_t *vq, const uint8_t *buf, size_t len, char *err, size_t err_len)
{
	return ferry_vmsd_decode(ferry_vq_vmsd(), vq, ferry_vq_vmsd()->version, buf, len, err,
				 err_len);
}

/* Request i: a readable u32 (the request number) and an 8-byte answer. */
static void post_request(struct fx *f, uint32_t i)
{
	uint64_t req = BUF_GPA + i * 16;
	memcpy(host_of(f, req), &i, 4);
	ferry_gbuf out = { req, 4 }, in = { req + 8, 8 };
	assert_true(ferry_gvq_add(&f->q, &out, 1, &in, 1, i % 2 == 1) >= 0);
}

/* The device's work: answer = request number * 3. */
static void complete(struct fx *f, const ferry_vq_elem *e, unsigned *done)
{
	uint32_t n;
	assert_int_equal(e->out_num, 1);
	assert_int_equal(e->in_num, 1);
	memcpy(&n, e->iov[0].iov_base, 4);
	uint64_t a = (uint64_t)n * 3;
	memcpy(e->iov[1].iov_base, &a, 8);
	assert_int_equal(ferry_vq_push(f->vq, e->head, 8), 0);
	done[n]++;
}

static void test_migrate_inflight(void **state)
{
	(void)state;
	struct fx s, d;
	struct iovec iov[8];
	ferry_vq_elem e = { .iov = iov, .cap = 8 };
	unsigned done[32] = { 0 };
	fx_setup(&s, 16, EV | IND);
	for (uint32_t i = 0; i < 10; i++)
		post_request(&s, i);
	/* Source: take 6, complete 2 of them (the 2nd and the 5th). */
	ferry_vq_elem held[6];
	struct iovec hiov[6][2];
	for (int i = 0; i < 6; i++) {
		held[i] = (ferry_vq_elem){ .iov = hiov[i], .cap = 2 };
		assert_int_equal(ferry_vq_pop(s.vq, &held[i]), 1);
	}
	complete(&s, &held[1], done);
	complete(&s, &held[4], done);
	assert_int_equal(ferry_vq_inflight(s.vq), 4);
	/* Switchover: device state and RAM go to the destination. */
	uint8_t buf[4096];
	int64_t n = save(s.vq, buf, sizeof(buf));
	fx_clone(&s, &d);
	char err[256] = "";
	assert_int_equal(load(d.vq, buf, (size_t)n, err, sizeof(err)), 0);
	assert_true(ferry_vq_ready(d.vq));
	assert_int_equal(ferry_vq_inflight(d.vq), 4);

	/* The destination takes over: in-flight ones again, then the rest. */
	unsigned redelivered = 0, fresh = 0;
	while (ferry_vq_pop_inflight(d.vq, &e) == 1) {
		complete(&d, &e, done);
		redelivered++;
	}
	assert_int_equal(ferry_vq_pop_inflight(d.vq, &e), 0);
	/* The guest reaps what is done (its ring is full) and posts one more. */
	unsigned reaped = 0;
	uint32_t len;
	int h;
	while ((h = ferry_gvq_get_used(&d.q, &len)) >= 0) {
		assert_int_equal(len, 8);
		reaped++;
	}
	post_request(&d, 10);
	while (ferry_vq_pop(d.vq, &e) == 1) {
		complete(&d, &e, done);
		fresh++;
	}
	assert_int_equal(redelivered, 4);
	assert_int_equal(fresh, 5);
	for (unsigned i = 0; i <= 10; i++)
		if (done[i] != 1)
			fail_msg("request %u completed %u times", i, done[i]);
	/* The guest (now on the destination) reaps every answer exactly once. */
	while ((h = ferry_gvq_get_used(&d.q, &len)) >= 0) {
		assert_int_equal(len, 8);
		reaped++;
	}
	assert_int_equal(h, -EAGAIN);
	assert_int_equal(reaped, 11);
	assert_int_equal(ferry_gvq_outstanding(&d.q), 0);
	for (uint32_t i = 0; i <= 10; i++) {
		uint64_t a;
		memcpy(&a, host_of(&d, BUF_GPA + i * 16 + 8), 8);
		assert_int_equal(a, (uint64_t)i * 3);
	}
	assert_int_equal(ferry_vq_inflight(d.vq), 0);
	assert_false(ferry_vq_is_broken(d.vq));
	fx_teardown(&s);
	fx_teardown(&d);
}

/* A saved-broken queue stays broken with its message; a reset one loads idle. */
static void test_migrate_broken_and_idle(void **state)
{
	(void)state;
	struct fx s, d;
	uint8_t buf[4096];
	char err[256];
	fx_setup(&s, 8, 0);
	ferry_gvq_post_malformed(&s.q, FERRY_GVQ_BAD_HEAD, BUF_GPA, 0, 0);
	struct iovec iov[4];
	ferry_vq_elem e = { .iov = iov, .cap = 4 };
	assert_int_equal(ferry_vq_pop(s.vq, &e), -EINVAL);
	int64_t n = save(s.vq, buf, sizeof(buf));
	fx_clone(&s, &d);
	assert_int_equal(load(d.vq, buf, (size_t)n, err, sizeof(err)), 0);
	assert_true(ferry_vq_is_broken(d.vq));
	assert_string_equal(ferry_vq_error(d.vq), ferry_vq_error(s.vq));
	fx_teardown(&d);

	ferry_vq_reset(s.vq);
	n = save(s.vq, buf, sizeof(buf));
	fx_clone(&s, &d);
	assert_int_equal(load(d.vq, buf, (size_t)n, err, sizeof(err)), 0);
	assert_false(ferry_vq_ready(d.vq));
	assert_false(ferry_vq_is_broken(d.vq));
	fx_teardown(&d);
	fx_teardown(&s);
}

/*
 * Inconsistent state is refused (the stream's fault); rings contradicting
 * the state break the queue (the guest's fault).
 */
static void test_migrate_revalidate(void **state)
{
	(void)state;
	struct fx s, d;
	uint8_t buf[4096];
	char err[256];
	struct iovec iov[4];
	ferry_vq_elem e = { .iov = iov, .cap = 4 };
	fx_setup(&s, 8, IND);
	for (uint32_t i = 0; i < 3; i++)
		post_request(&s, i);
	assert_int_equal(ferry_vq_pop(s.vq, &e), 1);
	int64_t n = save(s.vq, buf, sizeof(buf));
	fx_clone(&s, &d);

	ferry_vq_t *t;
	assert_int_equal(ferry_vq_create(d.gmap, &t), 0);
	assert_int_equal(load(t, buf, (size_t)n, err, sizeof(err)), 0);
	assert_int_equal(ferry_vq_revalidate(t), 0); /* idempotent */
	assert_int_equal(ferry_vq_inflight(t), 1);
	ferry_vq_destroy(t);

	/* Stream edits: each must be refused, the queue left as it was. */
	static const struct {
		const char *field;
		uint64_t value;
		int err;
		const char *msg; /* the load's error */
	} edits[] = {
		{ "num", 6, FERRY_EBADSTREAM,
		  "virtqueue: ring size 6 is not a power of two in 1..1024" },
		{ "num", 2048, FERRY_EBADSTREAM,
		  "virtqueue: ring size 2048 is not a power of two in 1..1024" },
		/* in flight: 1 head, indices say 0 */
		{ "used_idx", 1, FERRY_EBADSTREAM,
		  "virtqueue: in-flight heads (1) do not match the indices "
		  "(last avail 1, used 1, ring size 8)" },
		{ "last_avail_idx", 3, FERRY_EBADSTREAM,
		  "virtqueue: in-flight heads (1) do not match the indices "
		  "(last avail 3, used 0, ring size 8)" },
		{ "desc_gpa", 0x200000, FERRY_EMISMATCH, /* not guest RAM here */
		  "virtqueue: descriptor ring [0x200000, +0x80) is outside guest RAM" },
	};
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		uint8_t b2[4096];
		memcpy(b2, buf, (size_t)n);
		patch_field(b2, (size_t)n, edits[i].field, edits[i].value);
		assert_int_equal(ferry_vq_create(d.gmap, &t), 0);
		int r = load(t, b2, (size_t)n, err, sizeof(err));
		if (r != edits[i].err)
			fail_msg("edit %s=%llu: r=%d (%s), expected %d", edits[i].field,
				 (unsigned long long)edits[i].value, r, err, edits[i].err);
		assert_string_equal(err, edits[i].msg);
		ferry_vq_destroy(t);
	}

	/* The guest scribbled on used->idx: the queue loads broken. */
	assert_int_equal(ferry_vq_create(d.gmap, &t), 0);
	d.q.vr.used->idx = htole16(5);
	assert_int_equal(load(t, buf, (size_t)n, err, sizeof(err)), 0);
	assert_true(ferry_vq_is_broken(t));
	assert_string_equal(ferry_vq_error(t),
			    "after load: used index in guest RAM is 5, the device's is 0");
	d.q.vr.used->idx = 0;
	ferry_vq_destroy(t);

	/* The guest moved avail->idx too far. */
	assert_int_equal(ferry_vq_create(d.gmap, &t), 0);
	d.q.vr.avail->idx = htole16(100);
	assert_int_equal(load(t, buf, (size_t)n, err, sizeof(err)), 0);
	assert_string_equal(ferry_vq_error(t),
			    "after load: avail index 100 is more than the ring size 8 ahead of 1");
	d.q.vr.avail->idx = htole16(3);
	ferry_vq_destroy(t);
	fx_teardown(&d);

	/* A destination whose RAM does not hold the rings: mismatch. */
	{
		ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
		ferry_vm_t *vm;
		assert_int_equal(ferry_vm_create(&o, &vm), 0);
		uint8_t *ram = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ferry_ram_block_t *rb;
		assert_int_equal(ferry_ram_block_add(vm, "c", ram, 64 << 10, -1, &rb), 0);
		ferry_gpa_region r = { rb, 0x400000 };
		ferry_gpa_map_t *m;
		assert_int_equal(ferry_gpa_map_create(&r, 1, &m), 0);
		assert_int_equal(ferry_vq_create(m, &t), 0);
		assert_int_equal(load(t, buf, (size_t)n, err, sizeof(err)), FERRY_EMISMATCH);
		ferry_vq_destroy(t);
		ferry_gpa_map_destroy(m);
		ferry_vm_destroy(vm);
		munmap(ram, 64 << 10);
	}
	fx_teardown(&s);
}

/* The state's field names are part of the stream format: keep them. */
static void test_state_fields(void **state)
{
	(void)state;
	const ferry_vmsd *v = ferry_vq_vmsd();
	assert_string_equal(v->name, "virtqueue");
	assert_int_equal(v->version, 1);
	static const char *const names[] = {
		"ready", "num", "features", "desc_gpa", "avail_gpa", "used_gpa", "last_avail_idx",
		"used_idx", "signalled_used", "signalled_used_valid", "notification", "inflight",
		"broken", "error",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_string_equal(v->fields[i].name, names[i]);
	assert_null(v->fields[sizeof(names) / sizeof(names[0])].name);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_map),
		cmocka_unit_test(test_pop_push),
		cmocka_unit_test(test_setup_bad),
		cmocka_unit_test(test_avail_idx_too_far),
		cmocka_unit_test(test_head_out_of_range),
		cmocka_unit_test(test_next_out_of_range),
		cmocka_unit_test(test_chain_loop),
		cmocka_unit_test(test_indirect_len),
		cmocka_unit_test(test_indirect_empty),
		cmocka_unit_test(test_indirect_nested),
		cmocka_unit_test(test_indirect_with_next),
		cmocka_unit_test(test_indirect_loop),
		cmocka_unit_test(test_indirect_next_out_of_range),
		cmocka_unit_test(test_read_after_write),
		cmocka_unit_test(test_outside_ram),
		cmocka_unit_test(test_straddle),
		cmocka_unit_test(test_zero_len),
		cmocka_unit_test(test_iovec_overflow),
		cmocka_unit_test(test_head_reused),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_broken_after_good),
		cmocka_unit_test(test_notify_flags),
		cmocka_unit_test(test_event_idx),
		cmocka_unit_test(test_migrate_inflight),
		cmocka_unit_test(test_migrate_broken_and_idle),
		cmocka_unit_test(test_migrate_revalidate),
		cmocka_unit_test(test_state_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
