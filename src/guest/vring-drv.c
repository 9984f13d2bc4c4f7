/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest's split-ring driver (see vring-drv.h): rings in guest
 * RAM, chains of guest-physical buffers, kicks and interrupt suppression,
 * and a hostile mode that writes malformed rings.
 *
 * DESIGN: the layout in the given area is, each 16-byte aligned: the
 * driver's state (struct ferry_gvq_state), the descriptor table
 * (16 * num), the avail ring (6 + 2 * num, used_event included), the used
 * ring (6 + 8 * num, avail_event included), then num indirect tables of
 * FERRY_GVQ_MAX_CHAIN entries (table t belongs to the chain whose head is
 * t, so tables never need allocating). Free ring descriptors are chained
 * through their `next` fields; a posted chain's length is remembered per
 * head so reaping never trusts the device. The state is in guest RAM like
 * the rings, so it migrates with them; the host-side ferry_gvq only holds
 * pointers, rebuilt by ferry_gvq_attach().
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
#define GVQ_MAGIC 0x3176716779727266ull /* "ferrygvq1" */

static uint64_t off_desc(void)
{
	return ALIGN16(sizeof(struct ferry_gvq_state));
}

static uint64_t off_avail(uint16_t num)
{
	return off_desc() + 16ull * num;
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

static bool num_ok(unsigned num)
{
	return num && num <= 1024 && !(num & (num - 1));
}

/* Host pointers and addresses of a queue of st->num entries at host/gpa. */
static void set_pointers(ferry_gvq *q, uint8_t *host, uint64_t gpa, uint64_t size)
{
	const uint16_t num = ((struct ferry_gvq_state *)(void *)host)->num;
	memset(q, 0, sizeof(*q));
	q->st = (void *)host;
	q->vr.num = num;
	q->vr.desc = (void *)(host + off_desc());
	q->vr.avail = (void *)(host + off_avail(num));
	q->vr.used = (void *)(host + off_used(num));
	q->indirect = host + off_indirect(num);
	q->area_gpa = gpa;
	q->area_size = size;
	q->desc_gpa = gpa + off_desc();
	q->avail_gpa = gpa + off_avail(num);
	q->used_gpa = gpa + off_used(num);
	q->indirect_gpa = gpa + off_indirect(num);
}

/* Logs [p, p + len) of the area as written (explicit dirty tracking). */
static void dirty(const ferry_gvq *q, const void *p, uint64_t len)
{
	if (q->dirty_rb)
		ferry_ram_mark_dirty(q->dirty_rb,
				     q->dirty_off + (uint64_t)((const uint8_t *)p - (uint8_t *)q->st),
				     len);
}

int ferry_gvq_init(ferry_gvq *q, uint8_t *host, uint64_t gpa, uint64_t size, uint16_t num,
		   uint64_t features)
{
	if (!q || !host || !num_ok(num) || gpa % 16 || (uintptr_t)host % 16 ||
	    size < ferry_gvq_area_size(num))
		return -EINVAL;
	memset(host, 0, ferry_gvq_area_size(num));
	struct ferry_gvq_state *st = (void *)host;
	st->num = num;
	set_pointers(q, host, gpa, size);
	st->features = features;
	for (uint16_t i = 0; i < num; i++)
		desc_write(&q->vr.desc[i], 0, 0, 0, (uint16_t)(i + 1 < num ? i + 1 : 0));
	st->free_head = 0;
	st->num_free = num;
	st->magic = GVQ_MAGIC;
	return 0;
}

int ferry_gvq_attach(ferry_gvq *q, uint8_t *host, uint64_t gpa, uint64_t size)
{
	if (!q || !host || gpa % 16 || (uintptr_t)host % 16 ||
	    size < sizeof(struct ferry_gvq_state))
		return -EINVAL;
	const struct ferry_gvq_state *st = (const void *)host;
	if (st->magic != GVQ_MAGIC || !num_ok(st->num) || size < ferry_gvq_area_size(st->num) ||
	    st->free_head >= st->num || st->num_free > st->num)
		return -EINVAL;
	set_pointers(q, host, gpa, size);
	return 0;
}

void ferry_gvq_set_dirty_log(ferry_gvq *q, ferry_ram_block_t *rb, uint64_t off)
{
	q->dirty_rb = rb;
	q->dirty_off = off;
}

void ferry_gvq_config(const ferry_gvq *q, ferry_vq_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->features = q->st->features;
	cfg->num = q->st->num;
	cfg->desc = q->desc_gpa;
	cfg->avail = q->avail_gpa;
	cfg->used = q->used_gpa;
}

static uint16_t desc_next(const ferry_gvq *q, uint16_t i)
{
	return ld16(&q->vr.desc[i].next) & (q->st->num - 1); /* our RAM, but stay inside */
}

/* Publishes head in the next avail slot. */
static void publish(ferry_gvq *q, uint16_t head)
{
	struct ferry_gvq_state *st = q->st;
	st16(&q->vr.avail->ring[st->avail_idx & (st->num - 1)], head);
	/*
	 * Release: the descriptors and the avail entry written above are
	 * visible before the new avail->idx (pairs with the device's acquire
	 * after it loads avail->idx).
	 */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	st->avail_idx++;
	st16(&q->vr.avail->idx, st->avail_idx);
	/* The whole area but the used ring (the device's) and the tables. */
	dirty(q, st, (uint64_t)((uint8_t *)q->vr.used - (uint8_t *)st));
}

int ferry_gvq_add(ferry_gvq *q, const ferry_gbuf *out, unsigned nout, const ferry_gbuf *in,
		  unsigned nin, bool indirect)
{
	const unsigned total = nout + nin;
	if (!q || !total || total > FERRY_GVQ_MAX_CHAIN)
		return -EINVAL;
	struct ferry_gvq_state *st = q->st;
	if (indirect && !(st->features >> VIRTIO_RING_F_INDIRECT_DESC & 1))
		return -EINVAL;
	const unsigned need = indirect ? 1 : total;
	if (st->num_free < need)
		return -ENOSPC;
	const uint16_t head = st->free_head;
	if (indirect) {
		uint8_t *t = q->indirect + (size_t)head * TABLE_BYTES;
		for (unsigned k = 0; k < total; k++) {
			const ferry_gbuf *b = k < nout ? &out[k] : &in[k - nout];
			uint16_t fl = (uint16_t)((k < nout ? 0 : VRING_DESC_F_WRITE) |
						 (k + 1 < total ? VRING_DESC_F_NEXT : 0));
			desc_write(t + k * sizeof(struct vring_desc), b->gpa, b->len, fl,
				   (uint16_t)(k + 1));
		}
		dirty(q, t, total * sizeof(struct vring_desc));
		uint16_t nx = desc_next(q, head);
		desc_write(&q->vr.desc[head], ferry_gvq_indirect_gpa(q, head),
			   (uint32_t)(total * sizeof(struct vring_desc)), VRING_DESC_F_INDIRECT, nx);
		st->free_head = nx;
	} else {
		uint16_t i = head;
		for (unsigned k = 0; k < total; k++) {
			const ferry_gbuf *b = k < nout ? &out[k] : &in[k - nout];
			uint16_t nx = desc_next(q, i);
			uint16_t fl = (uint16_t)((k < nout ? 0 : VRING_DESC_F_WRITE) |
						 (k + 1 < total ? VRING_DESC_F_NEXT : 0));
			desc_write(&q->vr.desc[i], b->gpa, b->len, fl, nx);
			if (k + 1 == total)
				st->free_head = nx;
			i = nx;
		}
	}
	st->num_free = (uint16_t)(st->num_free - need);
	st->chain_len[head] = (uint8_t)need;
	publish(q, head);
	return head;
}

bool ferry_gvq_kick_needed(ferry_gvq *q)
{
	struct ferry_gvq_state *st = q->st;
	const uint16_t old = st->kicked_idx, cur = st->avail_idx;
	st->kicked_idx = cur;
	/*
	 * Full barrier: our store of avail->idx is visible before we read the
	 * device's flag / avail event (pairs with the device's full fence after
	 * it re-enabled notifications and before it re-reads avail->idx).
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (st->features >> VIRTIO_RING_F_EVENT_IDX & 1)
		return vring_need_event(ld16(&vring_avail_event(&q->vr)), cur, old);
	return !(ld16(&q->vr.used->flags) & VRING_USED_F_NO_NOTIFY);
}

int ferry_gvq_get_used(ferry_gvq *q, uint32_t *len)
{
	struct ferry_gvq_state *st = q->st;
	if (ld16(&q->vr.used->idx) == st->last_used)
		return -EAGAIN;
	/*
	 * Acquire: the load of used->idx above happens before the element is
	 * read (pairs with the device's release before it stored used->idx).
	 */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	const vring_used_elem_t *u = &q->vr.used->ring[st->last_used & (st->num - 1)];
	uint32_t id = ld32(&u->id);
	if (id >= st->num || !st->chain_len[id])
		return -EPROTO;
	if (len)
		*len = ld32(&u->len);
	st->last_used++;
	/* Give the chain's ring descriptors back, trusting only our own count. */
	uint16_t n = st->chain_len[id], last = (uint16_t)id;
	for (uint16_t k = 1; k < n; k++)
		last = desc_next(q, last) & (st->num - 1);
	desc_write(&q->vr.desc[last], 0, 0, 0, st->free_head);
	st->free_head = (uint16_t)id;
	st->num_free = (uint16_t)(st->num_free + n);
	st->chain_len[id] = 0;
	dirty(q, st, (uint64_t)((uint8_t *)q->vr.avail - (uint8_t *)st));
	return (int)id;
}

void ferry_gvq_enable_interrupts(ferry_gvq *q, bool enable)
{
	const struct ferry_gvq_state *st = q->st;
	if (st->features >> VIRTIO_RING_F_EVENT_IDX & 1)
		/* Interrupt when the device uses the entry after those reaped. */
		st16(&vring_used_event(&q->vr),
		     enable ? st->last_used : (uint16_t)(st->last_used - 1));
	else
		st16(&q->vr.avail->flags, enable ? 0 : VRING_AVAIL_F_NO_INTERRUPT);
	dirty(q, q->vr.avail, (uint64_t)((uint8_t *)q->vr.used - (uint8_t *)q->vr.avail));
	/*
	 * Full barrier: the event / flag is visible before the caller re-reads
	 * used->idx (pairs with the device's full fence in need_notify).
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

unsigned ferry_gvq_outstanding(const ferry_gvq *q)
{
	return (uint16_t)(q->st->avail_idx - q->st->last_used);
}

/* ------------------------------------------------------------------ */
/* Hostile mode.                                                       */

void ferry_gvq_raw_desc(ferry_gvq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
			uint16_t next)
{
	desc_write(&q->vr.desc[i & (q->st->num - 1)], addr, len, flags, next);
}

void ferry_gvq_raw_avail(ferry_gvq *q, uint16_t idx, uint16_t head)
{
	st16(&q->vr.avail->ring[idx & (q->st->num - 1)], head);
	__atomic_thread_fence(__ATOMIC_RELEASE); /* as publish() */
	q->st->avail_idx = (uint16_t)(idx + 1);
	st16(&q->vr.avail->idx, q->st->avail_idx);
}

void ferry_gvq_raw_avail_idx(ferry_gvq *q, uint16_t idx)
{
	__atomic_thread_fence(__ATOMIC_RELEASE); /* as publish() */
	q->st->avail_idx = idx;
	st16(&q->vr.avail->idx, idx);
}

uint64_t ferry_gvq_indirect_gpa(const ferry_gvq *q, uint16_t t)
{
	return q->indirect_gpa + (uint64_t)(t & (q->st->num - 1)) * TABLE_BYTES;
}

void ferry_gvq_raw_indirect(ferry_gvq *q, uint16_t t, uint16_t i, uint64_t addr, uint32_t len,
			    uint16_t flags, uint16_t next)
{
	uint8_t *tb = q->indirect + (size_t)(t & (q->st->num - 1)) * TABLE_BYTES;
	desc_write(tb + (size_t)(i % FERRY_GVQ_MAX_CHAIN) * sizeof(struct vring_desc), addr, len,
		   flags, next);
}

int ferry_gvq_post_malformed(ferry_gvq *q, ferry_gvq_malformed kind, uint64_t buf,
			     uint64_t outside, uint64_t straddle)
{
	if (!q || q->st->num < 4)
		return -EINVAL;
	const uint16_t num = q->st->num;
	const uint16_t N = VRING_DESC_F_NEXT, W = VRING_DESC_F_WRITE, I = VRING_DESC_F_INDIRECT;
	const uint16_t at = q->st->avail_idx;
	const uint64_t tbl = ferry_gvq_indirect_gpa(q, 0);
	switch (kind) {
	case FERRY_GVQ_BAD_AVAIL_IDX:
		ferry_gvq_raw_desc(q, 0, buf, 16, 0, 0);
		ferry_gvq_raw_avail_idx(q, (uint16_t)(at + num + 1));
		return 0;
	case FERRY_GVQ_BAD_HEAD:
		ferry_gvq_raw_avail(q, at, num);
		return 0;
	case FERRY_GVQ_BAD_NEXT:
		ferry_gvq_raw_desc(q, 0, buf, 16, N, num);
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
		for (uint16_t i = 0; i < num; i++)
			ferry_gvq_raw_desc(q, i, buf, 4, (uint16_t)(i + 1 < num ? N : 0),
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
