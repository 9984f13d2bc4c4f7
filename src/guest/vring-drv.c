/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest's split-ring driver (see vring-drv.h): rings in guest
 * RAM, chains of guest-physical buffers, kicks and interrupt suppression,
 * and a hostile mode that writes malformed rings.
 *
 * DESIGN: the layout in the given area is, each 16-byte aligned: the
 * descriptor table (16 * num), the avail ring (6 + 2 * num, used_event
 * included), the used ring (6 + 8 * num, avail_event included), then num
 * indirect tables of FERRY_GVQ_MAX_CHAIN entries (table t belongs to the
 * chain whose head is t, so tables never need allocating). Free ring
 * descriptors are chained through their `next` fields; a posted chain's
 * length is remembered per head so reaping never trusts the device.
 *
 * Barriers (the driver's half of each pairing in src/lib/virtio/vring.c):
 *  - add: descriptors and the avail entry are written, then a release
 *    fence before avail->idx is stored (pairs with the device's acquire
 *    after loading avail->idx);
 *  - kick_needed: a full fence between our store of avail->idx and the
 *    load of used->flags / avail_event (pairs with the device's full fence
 *    after it enabled notifications);
 *  - get_used: load used->idx, then an acquire fence before the element
 *    is read (pairs with the device's release before storing used->idx);
 *  - enable_interrupts: a full fence after writing used_event / the flag,
 *    before the caller re-reads used->idx (pairs with the device's full
 *    fence in need_notify).
 *
 * Thread: one thread at a time per queue. Public API only.
 */
#include "vring-drv.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

#define ALIGN16(x) (((x) + 15) & ~(uint64_t)15)
#define TABLE_BYTES (FERRY_GVQ_MAX_CHAIN * sizeof(struct vring_desc))

static uint64_t off_avail(uint16_t num)
{
	return 16ull * num;
}

static uint64_t off_used(uint16_t num)
{
	return ALIGN16(off_avail(num) + 6 + 2ull * num);
}

static uint64_t off_indirect(uint16_t num)
{
	return ALIGN16(off_used(num) + 6 + 8ull * num);
}

uint64_t ferry_gvq_area_size(uint16_t num)
{
	return off_indirect(num) + (uint64_t)num * TABLE_BYTES;
}

static inline void st16(void *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, htole16(v), __ATOMIC_RELAXED);
}

static inline uint16_t ld16(const void *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED));
}

static inline uint32_t ld32(const void *p)
{
	return le32toh(__atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED));
}

static void desc_write(void *dst, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct vring_desc d = {
		.addr = htole64(addr),
		.len = htole32(len),
		.flags = htole16(flags),
		.next = htole16(next),
	};
	memcpy(dst, &d, sizeof(d));
}

int ferry_gvq_init(ferry_gvq *q, uint8_t *host, uint64_t gpa, uint64_t size, uint16_t num,
		   uint64_t features)
{
	if (!q || !host || !num || num > 1024 || (num & (num - 1)) || gpa % 16 ||
	    (uintptr_t)host % 16 || size < ferry_gvq_area_size(num))
		return -EINVAL;
	memset(q, 0, sizeof(*q));
	memset(host, 0, ferry_gvq_area_size(num));
	q->num = num;
	q->features = features;
	q->vr.num = num;
	q->vr.desc = (void *)host;
	q->vr.avail = (void *)(host + off_avail(num));
	q->vr.used = (void *)(host + off_used(num));
	q->indirect = host + off_indirect(num);
	q->desc_gpa = gpa;
	q->avail_gpa = gpa + off_avail(num);
	q->used_gpa = gpa + off_used(num);
	q->indirect_gpa = gpa + off_indirect(num);
	for (uint16_t i = 0; i < num; i++)
		desc_write(&q->vr.desc[i], 0, 0, 0, (uint16_t)(i + 1 < num ? i + 1 : 0));
	q->free_head = 0;
	q->num_free = num;
	return 0;
}

void ferry_gvq_config(const ferry_gvq *q, ferry_vq_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->features = q->features;
	cfg->num = q->num;
	cfg->desc = q->desc_gpa;
	cfg->avail = q->avail_gpa;
	cfg->used = q->used_gpa;
}

static uint16_t desc_next(const ferry_gvq *q, uint16_t i)
{
	return ld16(&q->vr.desc[i].next);
}

/* Publishes head in the next avail slot. */
static void publish(ferry_gvq *q, uint16_t head)
{
	st16(&q->vr.avail->ring[q->avail_idx & (q->num - 1)], head);
	/*
	 * Release: the descriptors and the avail entry written above are
	 * visible before the new avail->idx (pairs with the device's acquire
	 * after it loads avail->idx).
	 */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	q->avail_idx++;
	st16(&q->vr.avail->idx, q->avail_idx);
}

int ferry_gvq_add(ferry_gvq *q, const ferry_gbuf *out, unsigned nout, const ferry_gbuf *in,
		  unsigned nin, bool indirect)
{
	const unsigned total = nout + nin;
	if (!q || !total || total > FERRY_GVQ_MAX_CHAIN)
		return -EINVAL;
	if (indirect && !(q->features >> VIRTIO_RING_F_INDIRECT_DESC & 1))
		return -EINVAL;
	const unsigned need = indirect ? 1 : total;
	if (q->num_free < need)
		return -ENOSPC;
	const uint16_t head = q->free_head;
	if (indirect) {
		uint8_t *t = q->indirect + (size_t)head * TABLE_BYTES;
		for (unsigned k = 0; k < total; k++) {
			const ferry_gbuf *b = k < nout ? &out[k] : &in[k - nout];
			uint16_t fl = (uint16_t)((k < nout ? 0 : VRING_DESC_F_WRITE) |
						 (k + 1 < total ? VRING_DESC_F_NEXT : 0));
			desc_write(t + k * sizeof(struct vring_desc), b->gpa, b->len, fl,
				   (uint16_t)(k + 1));
		}
		uint16_t nx = desc_next(q, head);
		desc_write(&q->vr.desc[head], ferry_gvq_indirect_gpa(q, head),
			   (uint32_t)(total * sizeof(struct vring_desc)), VRING_DESC_F_INDIRECT, nx);
		q->free_head = nx;
	} else {
		uint16_t i = head;
		for (unsigned k = 0; k < total; k++) {
			const ferry_gbuf *b = k < nout ? &out[k] : &in[k - nout];
			uint16_t nx = desc_next(q, i);
			uint16_t fl = (uint16_t)((k < nout ? 0 : VRING_DESC_F_WRITE) |
						 (k + 1 < total ? VRING_DESC_F_NEXT : 0));
			desc_write(&q->vr.desc[i], b->gpa, b->len, fl, nx);
			if (k + 1 == total)
				q->free_head = nx;
			i = nx;
		}
	}
	q->num_free = (uint16_t)(q->num_free - need);
	q->chain_len[head] = (uint8_t)need;
	publish(q, head);
	return head;
}

bool ferry_gvq_kick_needed(ferry_gvq *q)
{
	const uint16_t old = q->kicked_idx, cur = q->avail_idx;
	q->kicked_idx = cur;
	/*
	 * Full barrier: our store of avail->idx is visible before we read the
	 * device's flag / avail event (pairs with the device's full fence after
	 * it re-enabled notifications and before it re-reads avail->idx).
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (q->features >> VIRTIO_RING_F_EVENT_IDX & 1)
		return vring_need_event(ld16(&vring_avail_event(&q->vr)), cur, old);
	return !(ld16(&q->vr.used->flags) & VRING_USED_F_NO_NOTIFY);
}

int ferry_gvq_get_used(ferry_gvq *q, uint32_t *len)
{
	if (ld16(&q->vr.used->idx) == q->last_used)
		return -EAGAIN;
	/*
	 * Acquire: the load of used->idx above happens before the element is
	 * read (pairs with the device's release before it stored used->idx).
	 */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	const vring_used_elem_t *u = &q->vr.used->ring[q->last_used & (q->num - 1)];
	uint32_t id = ld32(&u->id);
	if (id >= q->num || !q->chain_len[id])
		return -EPROTO;
	if (len)
		*len = ld32(&u->len);
	q->last_used++;
	/* Give the chain's ring descriptors back, trusting only our own count. */
	uint16_t n = q->chain_len[id], last = (uint16_t)id;
	for (uint16_t k = 1; k < n; k++)
		last = desc_next(q, last);
	desc_write(&q->vr.desc[last], 0, 0, 0, q->free_head);
	q->free_head = (uint16_t)id;
	q->num_free = (uint16_t)(q->num_free + n);
	q->chain_len[id] = 0;
	return (int)id;
}

void ferry_gvq_enable_interrupts(ferry_gvq *q, bool enable)
{
	if (q->features >> VIRTIO_RING_F_EVENT_IDX & 1)
		/* Interrupt when the device uses the entry after those reaped. */
		st16(&vring_used_event(&q->vr), enable ? q->last_used : (uint16_t)(q->last_used - 1));
	else
		st16(&q->vr.avail->flags, enable ? 0 : VRING_AVAIL_F_NO_INTERRUPT);
	/*
	 * Full barrier: the event / flag is visible before the caller re-reads
	 * used->idx (pairs with the device's full fence in need_notify).
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

unsigned ferry_gvq_outstanding(const ferry_gvq *q)
{
	return (uint16_t)(q->avail_idx - q->last_used);
}

/* ------------------------------------------------------------------ */
/* Hostile mode.                                                       */

void ferry_gvq_raw_desc(ferry_gvq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
			uint16_t next)
{
	desc_write(&q->vr.desc[i & (q->num - 1)], addr, len, flags, next);
}

void ferry_gvq_raw_avail(ferry_gvq *q, uint16_t idx, uint16_t head)
{
	st16(&q->vr.avail->ring[idx & (q->num - 1)], head);
	__atomic_thread_fence(__ATOMIC_RELEASE); /* as publish() */
	q->avail_idx = (uint16_t)(idx + 1);
	st16(&q->vr.avail->idx, q->avail_idx);
}

void ferry_gvq_raw_avail_idx(ferry_gvq *q, uint16_t idx)
{
	__atomic_thread_fence(__ATOMIC_RELEASE); /* as publish() */
	q->avail_idx = idx;
	st16(&q->vr.avail->idx, idx);
}

uint64_t ferry_gvq_indirect_gpa(const ferry_gvq *q, uint16_t t)
{
	return q->indirect_gpa + (uint64_t)(t & (q->num - 1)) * TABLE_BYTES;
}

void ferry_gvq_raw_indirect(ferry_gvq *q, uint16_t t, uint16_t i, uint64_t addr, uint32_t len,
			    uint16_t flags, uint16_t next)
{
	uint8_t *tb = q->indirect + (size_t)(t & (q->num - 1)) * TABLE_BYTES;
	desc_write(tb + (size_t)(i % FERRY_GVQ_MAX_CHAIN) * sizeof(struct vring_desc), addr, len,
		   flags, next);
}

int ferry_gvq_post_malformed(ferry_gvq *q, ferry_gvq_malformed kind, uint64_t buf,
			     uint64_t outside, uint64_t straddle)
{
	if (!q || q->num < 4)
		return -EINVAL;
	const uint16_t N = VRING_DESC_F_NEXT, W = VRING_DESC_F_WRITE, I = VRING_DESC_F_INDIRECT;
	const uint16_t at = q->avail_idx;
	const uint64_t tbl = ferry_gvq_indirect_gpa(q, 0);
	switch (kind) {
	case FERRY_GVQ_BAD_AVAIL_IDX:
		ferry_gvq_raw_desc(q, 0, buf, 16, 0, 0);
		ferry_gvq_raw_avail_idx(q, (uint16_t)(at + q->num + 1));
		return 0;
	case FERRY_GVQ_BAD_HEAD:
		ferry_gvq_raw_avail(q, at, q->num);
		return 0;
	case FERRY_GVQ_BAD_NEXT:
		ferry_gvq_raw_desc(q, 0, buf, 16, N, q->num);
		break;
	case FERRY_GVQ_LOOP:
		ferry_gvq_raw_desc(q, 0, buf, 16, N, 1);
		ferry_gvq_raw_desc(q, 1, buf + 16, 16, N, 0);
		break;
	case FERRY_GVQ_INDIRECT_LEN:
		ferry_gvq_raw_indirect(q, 0, 0, buf, 16, 0, 0);
		ferry_gvq_raw_desc(q, 0, tbl, 24, I, 0);
		break;
	case FERRY_GVQ_INDIRECT_EMPTY:
		ferry_gvq_raw_desc(q, 0, tbl, 0, I, 0);
		break;
	case FERRY_GVQ_INDIRECT_NESTED:
		ferry_gvq_raw_indirect(q, 0, 0, buf, 16, N, 1);
		ferry_gvq_raw_indirect(q, 0, 1, ferry_gvq_indirect_gpa(q, 1), 16, I, 0);
		ferry_gvq_raw_desc(q, 0, tbl, 32, I, 0);
		break;
	case FERRY_GVQ_INDIRECT_NEXT:
		ferry_gvq_raw_indirect(q, 0, 0, buf, 16, 0, 0);
		ferry_gvq_raw_desc(q, 0, tbl, 16, I | N, 1);
		ferry_gvq_raw_desc(q, 1, buf, 16, 0, 0);
		break;
	case FERRY_GVQ_INDIRECT_LOOP:
		ferry_gvq_raw_indirect(q, 0, 0, buf, 16, N, 1);
		ferry_gvq_raw_indirect(q, 0, 1, buf + 16, 16, N, 0);
		ferry_gvq_raw_desc(q, 0, tbl, 32, I, 0);
		break;
	case FERRY_GVQ_INDIRECT_BAD_NEXT:
		ferry_gvq_raw_indirect(q, 0, 0, buf, 16, N, 2);
		ferry_gvq_raw_desc(q, 0, tbl, 32, I, 0);
		break;
	case FERRY_GVQ_READ_AFTER_WRITE:
		ferry_gvq_raw_desc(q, 0, buf, 16, N | W, 1);
		ferry_gvq_raw_desc(q, 1, buf + 16, 16, 0, 0);
		break;
	case FERRY_GVQ_OUTSIDE_RAM:
		ferry_gvq_raw_desc(q, 0, buf, 16, N, 1);
		ferry_gvq_raw_desc(q, 1, outside, 4096, W, 0);
		break;
	case FERRY_GVQ_STRADDLE:
		ferry_gvq_raw_desc(q, 0, straddle, 2, 0, 0);
		break;
	case FERRY_GVQ_ZERO_LEN:
		ferry_gvq_raw_desc(q, 0, buf, 16, N, 1);
		ferry_gvq_raw_desc(q, 1, buf + 16, 0, W, 0);
		break;
	case FERRY_GVQ_LONG_CHAIN:
		for (uint16_t i = 0; i < q->num; i++)
			ferry_gvq_raw_desc(q, i, buf, 4, (uint16_t)(i + 1 < q->num ? N : 0),
					   (uint16_t)(i + 1));
		break;
	case FERRY_GVQ_HEAD_REUSED:
		ferry_gvq_raw_desc(q, 0, buf, 16, 0, 0);
		ferry_gvq_raw_avail(q, at, 0);
		ferry_gvq_raw_avail(q, (uint16_t)(at + 1), 0);
		return 0;
	default:
		return -EINVAL;
	}
	ferry_gvq_raw_avail(q, at, 0);
	return 0;
}
