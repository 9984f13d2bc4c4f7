/* SPDX-License-Identifier: MIT */
/*
 * Private declarations of the virtio code (src/lib/virtio/): the
 * guest-physical address map's table and its checked translation, which
 * tells a range outside guest RAM from one that spans two blocks so that
 * error messages can say which.
 *
 * Thread: the map is immutable after ferry_gpa_map_create(); any thread.
 */
#ifndef FERRY_VIRTIO_INT_H
#define FERRY_VIRTIO_INT_H

#include "internal.h"
#include "ferry/virtio.h"

struct gpa_slot {
	uint64_t gpa;  /* first byte */
	uint64_t end;  /* one past the last byte (gpa + size, no overflow) */
	uint8_t *host;
	ferry_ram_block_t *rb;
	const char *name;
};

/* Slots sorted by gpa, non-overlapping. Immutable after creation. */
struct ferry_gpa_map {
	unsigned n;
	struct gpa_slot slot[];
};

/*
 * Translates [gpa, gpa + len), len >= 1. Returns 0 with *slot set,
 * -EFAULT (some byte is not guest RAM), or -EXDEV (it starts in one block
 * and runs into the next: *slot is the block it starts in, *next the one
 * it runs into).
 */
int ferry__gpa_lookup(const struct ferry_gpa_map *m, uint64_t gpa, uint64_t len,
		      const struct gpa_slot **slot, const struct gpa_slot **next);

/*
 * Marks vq broken with a message (for device models built on the queue,
 * e.g. a malformed balloon command). Returns -EINVAL.
 */
int ferry__vq_fail(ferry_vq_t *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* FERRY_VIRTIO_INT_H */
