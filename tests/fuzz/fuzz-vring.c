/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the device-side split virtqueue
 * (src/lib/virtio/vring.c): arbitrary ring and descriptor contents, ring
 * addresses, features and a sequence of device operations (pop, push,
 * notification changes, a state save/load in the middle).
 *
 * Oracles, beyond the sanitizers: every iovec pop returns and every dirty
 * mark lies inside a RAM block (the blocks are surrounded by PROT_NONE
 * guard pages, so a stray access also crashes); a failed pop leaves the
 * queue broken with a message; a broken queue refuses everything after.
 *
 * Input layout (short inputs are zero-padded):
 *   [0]      ring size 1 << (b % 9)
 *   [1]      bit 0 VIRTIO_RING_F_EVENT_IDX, bit 1 VIRTIO_RING_F_INDIRECT_DESC,
 *            bit 2 ring addresses from [3..8], bit 3 save/load after op 8
 *   [2]      iovec array size 1 + b % 64
 *   [3..8]   desc, avail, used: le16 each, gpa = 0x10000 + 2 * v
 *   [9..24]  16 operations: b & 3 = 0 pop and push up to 8 chains,
 *            1 guest moves avail->idx by b >> 2, 2 set_notification(b & 4),
 *            3 need_notify
 *   [25..]   guest RAM: block "a" (64 KiB at gpa 0x10000), then block "b"
 *            (16 KiB at gpa 0x20000, directly after "a"); a third block
 *            "c" (4 KiB at gpa 0x40000) stays zero.
 * Without bit 2 the rings sit at the start of "a": desc, then avail, then
 * used (4-byte aligned).
 *
 * Built by tests/fuzz/run.sh with only the sources it needs (the virtio
 * code and device-state encoding); the RAM block accessors are defined
 * here over internal.h's struct ferry_ram_block, so no VM is needed.
 */
#include "virtio/virtio-int.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fuzz-check.h"

#define HDR 25
#define NBLK 3

static const struct {
	const char *name;
	uint64_t gpa, size;
} layout[NBLK] = {
	{ "a", 0x10000, 0x10000 },
	{ "b", 0x20000, 0x4000 },
	{ "c", 0x40000, 0x1000 },
};

static struct ferry_ram_block blocks[NBLK];
static ferry_gpa_map_t *gmap;

/* The public RAM block API over our own blocks (no VM, no migration code). */
void *ferry_ram_block_host(const ferry_ram_block_t *rb)
{
	return rb->host;
}

uint64_t ferry_ram_block_size(const ferry_ram_block_t *rb)
{
	return rb->size;
}

const char *ferry_ram_block_name(const ferry_ram_block_t *rb)
{
	return rb->name;
}

void ferry_ram_mark_dirty(ferry_ram_block_t *rb, uint64_t offset, uint64_t len)
{
	CHECK(rb >= blocks && rb < blocks + NBLK);
	CHECK(len && offset < rb->size && len <= rb->size - offset);
}

static bool in_ram(const void *p, size_t len)
{
	const uintptr_t a = (uintptr_t)p;
	for (int i = 0; i < NBLK; i++) {
		const uintptr_t h = (uintptr_t)blocks[i].host;
		if (a >= h && len <= blocks[i].size && a - h <= blocks[i].size - len)
			return true;
	}
	return false;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setenv("FERRY_LOG", "error", 1); /* a broken queue logs a warning */
	ferry_gpa_region reg[NBLK];
	for (int i = 0; i < NBLK; i++) {
		uint8_t *m = mmap(NULL, layout[i].size + 8192, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		CHECK(m != MAP_FAILED);
		CHECK(!mprotect(m + 4096, layout[i].size, PROT_READ | PROT_WRITE));
		snprintf(blocks[i].name, sizeof(blocks[i].name), "%s", layout[i].name);
		blocks[i].host = m + 4096;
		blocks[i].size = layout[i].size;
		reg[i].rb = &blocks[i];
		reg[i].gpa = layout[i].gpa;
	}
	CHECK(ferry_gpa_map_create(reg, NBLK, &gmap) == 0);
	return 0;
}

static uint16_t le16_at(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Pops and completes up to n chains. Returns false once the queue broke. */
static bool device_run(ferry_vq_t *vq, ferry_vq_elem *e, unsigned n, bool inflight)
{
	for (unsigned k = 0; k < n; k++) {
		int r = inflight ? ferry_vq_pop_inflight(vq, e) : ferry_vq_pop(vq, e);
		if (r == 0)
			return true;
		if (r < 0) {
			CHECK(r == -EINVAL || r == FERRY_EBROKEN);
			CHECK(ferry_vq_is_broken(vq) && ferry_vq_error(vq)[0]);
			CHECK(ferry_vq_pop(vq, e) == FERRY_EBROKEN);
			return false;
		}
		CHECK(e->out_num + e->in_num >= 1 && e->out_num + e->in_num <= e->cap);
		uint32_t written = 0;
		for (unsigned i = 0; i < e->out_num + e->in_num; i++) {
			CHECK(e->iov[i].iov_len > 0);
			CHECK(in_ram(e->iov[i].iov_base, e->iov[i].iov_len));
			CHECK(ferry_gpa_map_translate(gmap, e->gpa[i], e->iov[i].iov_len, NULL, NULL) ==
			      e->iov[i].iov_base);
			/* Touch it: ASan and the guard pages see any bad pointer. */
			volatile uint8_t *p = e->iov[i].iov_base;
			if (i >= e->out_num) {
				p[0] = 0x5a;
				p[e->iov[i].iov_len - 1] = 0x5a;
				written += 1;
			} else {
				(void)p[e->iov[i].iov_len - 1];
			}
		}
		CHECK(ferry_vq_push(vq, e->head, written) == 0);
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t hdr[HDR] = { 0 };
	memcpy(hdr, data, size < HDR ? size : HDR);
	const uint8_t *img = size > HDR ? data + HDR : NULL;
	size_t img_len = size > HDR ? size - HDR : 0;
	for (int i = 0; i < NBLK; i++) {
		size_t n = 0;
		if (i < 2) { /* "a" then "b" come from the input */
			n = img_len < blocks[i].size ? img_len : (size_t)blocks[i].size;
			if (n) {
				memcpy(blocks[i].host, img, n);
				img += n;
				img_len -= n;
			}
		}
		memset(blocks[i].host + n, 0, blocks[i].size - n);
	}

	ferry_vq_config cfg = { .num = (uint16_t)(1u << (hdr[0] % 9)) };
	if (hdr[1] & 1)
		cfg.features |= 1ull << VIRTIO_RING_F_EVENT_IDX;
	if (hdr[1] & 2)
		cfg.features |= 1ull << VIRTIO_RING_F_INDIRECT_DESC;
	if (hdr[1] & 4) {
		cfg.desc = 0x10000 + 2ull * le16_at(hdr + 3);
		cfg.avail = 0x10000 + 2ull * le16_at(hdr + 5);
		cfg.used = 0x10000 + 2ull * le16_at(hdr + 7);
	} else {
		cfg.desc = 0x10000;
		cfg.avail = cfg.desc + 16ull * cfg.num;
		cfg.used = (cfg.avail + 6 + 2ull * cfg.num + 3) & ~3ull;
	}
	const unsigned cap = 1 + hdr[2] % 64;
	struct iovec iov[64];
	uint64_t gpa[64];
	ferry_vq_elem e = { .iov = iov, .gpa = gpa, .cap = cap };

	ferry_vq_t *vq;
	CHECK(ferry_vq_create(gmap, &vq) == 0);
	if (ferry_vq_setup(vq, &cfg) < 0) {
		CHECK(ferry_vq_is_broken(vq) && !ferry_vq_ready(vq));
		ferry_vq_destroy(vq);
		return 0;
	}
	bool alive = true;
	for (int op = 0; op < 16 && alive; op++) {
		const uint8_t b = hdr[9 + op];
		switch (b & 3) {
		case 0:
			alive = device_run(vq, &e, 8, false);
			break;
		case 1: {
			/* The guest publishes more (or garbage) avail entries. */
			struct vring_avail *av = ferry_gpa_map_translate(gmap, cfg.avail, 4, NULL, NULL);
			av->idx = htole16((uint16_t)(le16toh(av->idx) + (b >> 2)));
			break;
		}
		case 2:
			ferry_vq_set_notification(vq, b & 4);
			break;
		default:
			(void)ferry_vq_need_notify(vq);
			break;
		}
		if (op == 8 && (hdr[1] & 8) && alive) {
			/* Migrate the queue: save, load into a new one, continue there. */
			uint8_t st[1024];
			int64_t n = ferry_vmsd_encode(ferry_vq_vmsd(), vq, st, sizeof(st));
			CHECK(n > 0 && (size_t)n <= sizeof(st));
			const unsigned before = ferry_vq_inflight(vq);
			ferry_vq_t *nq;
			CHECK(ferry_vq_create(gmap, &nq) == 0);
			char err[256];
			int r = ferry_vmsd_decode(ferry_vq_vmsd(), nq, ferry_vq_vmsd()->version, st,
						  (size_t)n, err, sizeof(err));
			CHECK(r == 0); /* our own state always loads */
			CHECK(ferry_vq_inflight(nq) == before);
			ferry_vq_destroy(vq);
			vq = nq;
			alive = !ferry_vq_is_broken(vq) && device_run(vq, &e, 64, true);
		}
	}
	ferry_vq_destroy(vq);
	return 0;
}
