/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest's virtio split-ring driver: the guest side of a
 * virtqueue whose rings live in guest RAM, as a real driver's do.
 *
 * The driver is given an area of guest RAM (host pointer and its
 * guest-physical address) and lays out in it its own state (indices, free
 * list), the descriptor table, the avail ring, the used ring and one
 * indirect table per descriptor. Everything lives in guest RAM, so a
 * migrated guest re-attaches to its queue (ferry_gvq_attach()). It posts
 * chains of guest-physical buffers, decides kicks (VRING_USED_F_NO_NOTIFY or
 * the avail event index) and reaps used elements. ferry_gvq_config() gives
 * what a device needs for ferry_vq_setup().
 *
 * Hostile mode: ferry_gvq_raw_desc(), ferry_gvq_raw_avail() and
 * ferry_gvq_post_malformed() write rings no correct driver would, for the
 * tests of the device's checks.
 *
 * Thread: one thread at a time per queue (the guest's). Public libferry API
 * only.
 */
#ifndef FERRY_GUEST_VRING_DRV_H
#define FERRY_GUEST_VRING_DRV_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry.h"

/* Most buffers a chain may have (indirect tables have this many entries). */
#define FERRY_GVQ_MAX_CHAIN 16u

/* The driver's state, at the start of its area in guest RAM. */
struct ferry_gvq_state {
	uint64_t magic;
	uint64_t features;
	uint16_t num;
	uint16_t free_head;      /* free descriptors, chained through desc.next */
	uint16_t num_free;
	uint16_t avail_idx;      /* our copy of avail->idx (we are its only writer) */
	uint16_t kicked_idx;     /* avail_idx at the last kick decision */
	uint16_t last_used;      /* next used entry to reap */
	uint8_t chain_len[1024]; /* ring descriptors used by the chain at each head */
};

/* Host-side view of a queue: pointers into guest RAM, rebuilt on attach. */
typedef struct ferry_gvq {
	struct ferry_gvq_state *st; /* in guest RAM */
	struct vring vr;            /* host pointers into guest RAM */
	uint8_t *indirect;          /* num tables of FERRY_GVQ_MAX_CHAIN entries */
	uint64_t area_gpa, desc_gpa, avail_gpa, used_gpa, indirect_gpa;
	uint64_t area_size;
	/* Explicit dirty tracking: the block holding the area, and its offset. */
	ferry_ram_block_t *dirty_rb;
	uint64_t dirty_off;
} ferry_gvq;

/* A buffer in guest-physical space. */
typedef struct ferry_gbuf {
	uint64_t gpa;
	uint32_t len;
} ferry_gbuf;

/* Bytes of guest RAM a queue of num entries needs (16-byte aligned start). */
uint64_t ferry_gvq_area_size(uint16_t num);

/*
 * Lays a queue out in [host, host + size) (guest-physical gpa, 16-byte
 * aligned) and zeroes it. num: a power of two <= 1024. features: the
 * negotiated ones (VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC).
 * Returns 0 or -EINVAL.
 */
int ferry_gvq_init(ferry_gvq *q, uint8_t *host, uint64_t gpa, uint64_t size, uint16_t num,
		   uint64_t features);

/*
 * Re-attaches to a queue ferry_gvq_init() laid out in this area earlier
 * (after a migration: the state arrived with guest RAM). Returns 0, or
 * -EINVAL if the area holds no valid queue state.
 */
int ferry_gvq_attach(ferry_gvq *q, uint8_t *host, uint64_t gpa, uint64_t size);

/*
 * Explicit dirty tracking: every driver write to the area is followed by
 * ferry_ram_mark_dirty(rb, off + ...). rb NULL: none (the default).
 */
void ferry_gvq_set_dirty_log(ferry_gvq *q, ferry_ram_block_t *rb, uint64_t off);

/* What the device is told at queue enable. */
void ferry_gvq_config(const ferry_gvq *q, ferry_vq_config *cfg);

/*
 * Posts a chain: nout device-readable buffers, then nin device-writable
 * ones; in an indirect table if `indirect` (and negotiated). Publishes it
 * (avail->idx). Returns the head, or -ENOSPC (not enough free
 * descriptors), -EINVAL (no buffer, or more than FERRY_GVQ_MAX_CHAIN).
 */
int ferry_gvq_add(ferry_gvq *q, const ferry_gbuf *out, unsigned nout, const ferry_gbuf *in,
		  unsigned nin, bool indirect);

/* Whether the device wants a kick for what was added since the last call. */
bool ferry_gvq_kick_needed(ferry_gvq *q);

/*
 * Reaps one used element: returns its head (and *len) and frees its
 * descriptors, or -EAGAIN if none. -EPROTO if the device returned a head
 * that is not out (a broken device).
 */
int ferry_gvq_get_used(ferry_gvq *q, uint32_t *len);

/*
 * Interrupt suppression: with event idx, asks for an interrupt after the
 * used entry `after` (used_event); else sets or clears
 * VRING_AVAIL_F_NO_INTERRUPT.
 */
void ferry_gvq_enable_interrupts(ferry_gvq *q, bool enable);

/* Chains posted and not reaped yet. */
unsigned ferry_gvq_outstanding(const ferry_gvq *q);

/* --- hostile mode --- */

/* Writes descriptor i as given (no checks). */
void ferry_gvq_raw_desc(ferry_gvq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
			uint16_t next);
/* Writes avail ring slot (idx % num) = head and publishes avail->idx = idx + 1. */
void ferry_gvq_raw_avail(ferry_gvq *q, uint16_t idx, uint16_t head);
/* Publishes avail->idx = idx, whatever the ring holds. */
void ferry_gvq_raw_avail_idx(ferry_gvq *q, uint16_t idx);
/* Writes entry i of the indirect table of descriptor t. */
void ferry_gvq_raw_indirect(ferry_gvq *q, uint16_t t, uint16_t i, uint64_t addr, uint32_t len,
			    uint16_t flags, uint16_t next);
/* Guest-physical address of the indirect table of descriptor t. */
uint64_t ferry_gvq_indirect_gpa(const ferry_gvq *q, uint16_t t);

typedef enum ferry_gvq_malformed {
	FERRY_GVQ_BAD_AVAIL_IDX,      /* avail->idx moved by num + 1 */
	FERRY_GVQ_BAD_HEAD,           /* head == num */
	FERRY_GVQ_BAD_NEXT,           /* next == num */
	FERRY_GVQ_LOOP,               /* 0 -> 1 -> 0 */
	FERRY_GVQ_INDIRECT_LEN,       /* table length 24 */
	FERRY_GVQ_INDIRECT_EMPTY,     /* table length 0 */
	FERRY_GVQ_INDIRECT_NESTED,    /* indirect entry with INDIRECT */
	FERRY_GVQ_INDIRECT_NEXT,      /* indirect descriptor with NEXT */
	FERRY_GVQ_INDIRECT_LOOP,      /* table entries 0 -> 1 -> 0 */
	FERRY_GVQ_INDIRECT_BAD_NEXT,  /* table entry next == table size */
	FERRY_GVQ_READ_AFTER_WRITE,   /* writable, then readable */
	FERRY_GVQ_OUTSIDE_RAM,        /* buffer at args.outside */
	FERRY_GVQ_STRADDLE,           /* buffer over args.straddle */
	FERRY_GVQ_ZERO_LEN,           /* len 0 */
	FERRY_GVQ_LONG_CHAIN,         /* num buffers (more than a small iovec array) */
	FERRY_GVQ_HEAD_REUSED,        /* the same head made available twice */
	FERRY_GVQ_MALFORMED_COUNT,
} ferry_gvq_malformed;

/*
 * Writes and publishes one malformed chain of the given kind, built from
 * descriptors 0.. and a valid buffer at buf (guest-physical, >= 64 bytes).
 * outside: an address that is not guest RAM; straddle: the last byte of a
 * block immediately followed by another block. Returns 0 or -EINVAL
 * (unknown kind, ring too small).
 */
int ferry_gvq_post_malformed(ferry_gvq *q, ferry_gvq_malformed kind, uint64_t buf,
			     uint64_t outside, uint64_t straddle);

#endif /* FERRY_GUEST_VRING_DRV_H */
