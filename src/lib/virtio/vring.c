/* SPDX-License-Identifier: MIT */
/*
 * The split virtqueue, device side: pops descriptor chains the guest made
 * available, pushes used elements back, decides notifications, and
 * migrates its state.
 *
 * DESIGN
 *
 * Mapping. ferry_vq_setup() translates the three ring areas once through
 * the immutable guest-physical map and keeps host pointers in a kernel
 * `struct vring` (the layout and the vring_used_event()/vring_avail_event()
 * accessors come from <linux/virtio_ring.h>). Buffers are translated per
 * descriptor through the same map: a binary search, no callback, no lock.
 *
 * The guest is hostile. Shared ring memory is read with single loads
 * (16-bit atomics for the indices, one 16-byte copy per descriptor) into
 * locals, and only the locals are checked and used: nothing is fetched
 * twice. The checks (each breaks the queue with a message naming the
 * descriptor and the values seen):
 *  - avail->idx more than `num` ahead of last_avail_idx;
 *  - a head or a `next` outside the ring (or outside an indirect table);
 *  - a chain longer than the ring, or than its indirect table (a loop);
 *  - indirect tables: feature not negotiated, NEXT flag set, length 0 or
 *    not a multiple of 16, a nested indirect descriptor;
 *  - a device-readable buffer after a device-writable one;
 *  - a zero-length buffer, a buffer outside guest RAM or spanning two
 *    blocks (also for indirect tables);
 *  - more buffers than the caller's iovec array holds;
 *  - a head that is already in flight (the guest reused it before it came
 *    back used).
 * A failed pop consumes nothing; the queue is broken (sticky) and every
 * later call returns FERRY_EBROKEN until a reset. Because every address is
 * translated through the map before any access, a broken queue has never
 * touched memory outside guest RAM.
 *
 * In flight. A bitmap of heads popped and not pushed (num <= 1024 bits)
 * catches double use and device bugs (push of a head not in flight) and
 * migrates: after a load the chains still in flight are handed out again
 * by ferry_vq_pop_inflight(), so a request the source had taken but not
 * completed is neither lost nor run twice.
 *
 * Barriers (virtio 1.x, 2.7.7 / 2.7.13; the driver's side pairs with each):
 *  - pop: load avail->idx, then an acquire fence before the ring entry and
 *    the descriptors are read (pairs with the driver's write barrier
 *    between filling them and publishing avail->idx);
 *  - push: the used element is written, then a release fence before
 *    used->idx is stored (pairs with the driver's read barrier after it
 *    reads used->idx and before it reads the element);
 *  - need_notify: a full fence between our store of used->idx and the load
 *    of avail->flags / used_event (pairs with the driver's full barrier
 *    between writing used_event and re-reading used->idx), else both sides
 *    could miss each other's update and the interrupt would be lost;
 *  - set_notification(true): a full fence between our store of the flag /
 *    avail_event and the caller's next load of avail->idx (pairs with the
 *    driver's full barrier between publishing avail->idx and reading the
 *    flag / avail_event).
 *
 * Thread: one thread at a time per queue (the device's). The map is
 * shared read-only. Fields marked "migrated" are saved and loaded by
 * ferry_vq_vmsd() while the device thread is quiesced.
 */
#include "virtio-int.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define INFLIGHT_WORDS (FERRY_VQ_MAX_SIZE / 64)

struct ferry_vq {
	/* Migrated state (ferry_vq_vmsd), owned by the device thread. */
	bool ready;
	uint16_t num;
	uint64_t features;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t last_avail_idx; /* next avail ring entry to consume */
	uint16_t used_idx;       /* our copy of used->idx (we are its only writer) */
	uint16_t signalled_used; /* used_idx at the last need_notify */
	bool signalled_used_valid;
	bool notification;       /* the device wants kicks */
	uint64_t inflight[INFLIGHT_WORDS]; /* heads popped, not pushed */
	bool broken;
	char error[FERRY_VQ_ERROR_MAX];

	/* Local, owned by the device thread. */
	const ferry_gpa_map_t *map;
	struct vring vr;          /* host pointers; valid while `mapped` */
	bool mapped;
	ferry_ram_block_t *used_rb; /* for dirty marks of the used area */
	uint64_t used_off;
	uint64_t redeliver[INFLIGHT_WORDS]; /* in flight at load, not yet re-popped */
};

/* ------------------------------------------------------------------ */
/* Helpers.                                                            */

static inline bool bit_test(const uint64_t *b, unsigned i)
{
	return b[i / 64] >> (i % 64) & 1;
}

static inline void bit_set(uint64_t *b, unsigned i)
{
	b[i / 64] |= 1ull << (i % 64);
}

static inline void bit_clear(uint64_t *b, unsigned i)
{
	b[i / 64] &= ~(1ull << (i % 64));
}

/* Single loads/stores of shared 16-bit ring fields (little-endian). */
static inline uint16_t ring_load16(const void *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED));
}

static inline void ring_store16(void *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, htole16(v), __ATOMIC_RELAXED);
}

static inline void ring_store32(void *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)p, htole32(v), __ATOMIC_RELAXED);
}

/* One copy of a descriptor into a local, then host byte order. */
static inline void desc_read(struct vring_desc *d, const void *src)
{
	memcpy(d, src, sizeof(*d));
	d->addr = le64toh(d->addr);
	d->len = le32toh(d->len);
	d->flags = le16toh(d->flags);
	d->next = le16toh(d->next);
}

static void used_mark_dirty(const ferry_vq_t *vq, const void *p, size_t len)
{
	uint64_t off = vq->used_off + (uint64_t)((const uint8_t *)p - (const uint8_t *)vq->vr.used);
	ferry_ram_mark_dirty(vq->used_rb, off, len);
}

static bool has_feature(const ferry_vq_t *vq, unsigned bit)
{
	return vq->features >> bit & 1;
}

static void vq_vfail(ferry_vq_t *vq, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void vq_vfail(ferry_vq_t *vq, const char *fmt, va_list ap)
{
	vsnprintf(vq->error, sizeof(vq->error), fmt, ap);
	vq->broken = true;
	ferry_warn("virtqueue broken: %s", vq->error);
}

/* Marks the queue broken with a message. Returns -EINVAL. */
int ferry__vq_fail(ferry_vq_t *vq, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vq_vfail(vq, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

#define vq_fail ferry__vq_fail

/* Bytes of each area for a ring of num entries (event fields included). */
static uint64_t desc_bytes(uint16_t num)
{
	return 16ull * num;
}

static uint64_t avail_bytes(uint16_t num)
{
	return 6ull + 2ull * num;
}

static uint64_t used_bytes(uint16_t num)
{
	return 6ull + 8ull * num;
}

/* ------------------------------------------------------------------ */
/* Setup.                                                              */

int ferry_vq_create(const ferry_gpa_map_t *map, ferry_vq_t **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!map)
		return -EINVAL;
	ferry_vq_t *vq = calloc(1, sizeof(*vq));
	if (!vq)
		return -ENOMEM;
	vq->map = map;
	*out = vq;
	return 0;
}

void ferry_vq_destroy(ferry_vq_t *vq)
{
	free(vq);
}

void ferry_vq_reset(ferry_vq_t *vq)
{
	if (!vq)
		return;
	const ferry_gpa_map_t *map = vq->map;
	memset(vq, 0, sizeof(*vq));
	vq->map = map;
}

bool ferry_vq_ready(const ferry_vq_t *vq)
{
	return vq && vq->ready;
}

/* Translates one ring area (for setup and load): 0, or -EINVAL and why in msg. */
static int map_area(const ferry_vq_t *vq, const char *what, uint64_t gpa, uint64_t len,
		    unsigned align, void **host, char *msg, size_t msg_len)
{
	const struct gpa_slot *s, *nx;
	if (gpa % align) {
		snprintf(msg, msg_len, "%s ring at 0x%" PRIx64 " is not %u-byte aligned", what,
			 gpa, align);
		return -EINVAL;
	}
	int r = ferry__gpa_lookup(vq->map, gpa, len, &s, &nx);
	if (r == -EXDEV) {
		snprintf(msg, msg_len,
			 "%s ring [0x%" PRIx64 ", +0x%" PRIx64 ") straddles RAM blocks '%s' and '%s'",
			 what, gpa, len, s->name, nx->name);
		return -EINVAL;
	}
	if (r < 0) {
		snprintf(msg, msg_len, "%s ring [0x%" PRIx64 ", +0x%" PRIx64 ") is outside guest RAM",
			 what, gpa, len);
		return -EINVAL;
	}
	*host = s->host + (gpa - s->gpa);
	return 0;
}

/* Sets vq->vr from the migrated addresses. 0, or a message in msg. */
static int map_rings(ferry_vq_t *vq, char *msg, size_t msg_len)
{
	void *d, *a, *u;
	vq->mapped = false;
	if (map_area(vq, "descriptor", vq->desc_gpa, desc_bytes(vq->num), 16, &d, msg, msg_len) ||
	    map_area(vq, "avail", vq->avail_gpa, avail_bytes(vq->num), 2, &a, msg, msg_len) ||
	    map_area(vq, "used", vq->used_gpa, used_bytes(vq->num), 4, &u, msg, msg_len))
		return -EINVAL;
	vq->vr.num = vq->num;
	vq->vr.desc = d;
	vq->vr.avail = a;
	vq->vr.used = u;
	vq->used_rb = NULL;
	vq->used_off = 0;
	ferry_gpa_map_translate(vq->map, vq->used_gpa, used_bytes(vq->num), &vq->used_rb,
				&vq->used_off);
	vq->mapped = true;
	return 0;
}

static bool size_ok(unsigned num)
{
	return num >= 1 && num <= FERRY_VQ_MAX_SIZE && !(num & (num - 1));
}

int ferry_vq_setup(ferry_vq_t *vq, const ferry_vq_config *cfg)
{
	if (!vq || !cfg)
		return -EINVAL;
	ferry_vq_reset(vq);
	if (!size_ok(cfg->num))
		return vq_fail(vq, "ring size %u is not a power of two in 1..%u", cfg->num,
			       FERRY_VQ_MAX_SIZE);
	vq->num = cfg->num;
	vq->features = cfg->features;
	vq->desc_gpa = cfg->desc;
	vq->avail_gpa = cfg->avail;
	vq->used_gpa = cfg->used;
	vq->notification = true;
	char msg[FERRY_VQ_ERROR_MAX];
	if (map_rings(vq, msg, sizeof(msg)) < 0)
		return vq_fail(vq, "%s", msg);
	vq->ready = true;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Pop.                                                                */

/* Where a descriptor sits, for messages. */
struct desc_pos {
	bool indirect;
	unsigned idx;    /* in the ring, or in the indirect table */
	unsigned parent; /* ring descriptor holding the table (indirect) */
};

static const char *pos_name(char *buf, size_t len, const struct desc_pos *p)
{
	if (p->indirect)
		snprintf(buf, len, "indirect descriptor %u (table of descriptor %u)", p->idx,
			 p->parent);
	else
		snprintf(buf, len, "descriptor %u", p->idx);
	return buf;
}

struct walk {
	ferry_vq_elem *e;
	uint16_t head;
	unsigned n;
	bool seen_write;
};

static int add_buffer(ferry_vq_t *vq, struct walk *w, const struct desc_pos *p,
		      const struct vring_desc *d)
{
	char nm[64];
	const bool write = d->flags & VRING_DESC_F_WRITE;
	if (!d->len)
		return vq_fail(vq, "%s: zero-length buffer", pos_name(nm, sizeof(nm), p));
	if (write)
		w->seen_write = true;
	else if (w->seen_write)
		return vq_fail(vq, "%s: device-readable buffer after a device-writable one",
			       pos_name(nm, sizeof(nm), p));
	if (w->n == w->e->cap)
		return vq_fail(vq, "chain at head %u has more than %u buffers (iovec array full)",
			       w->head, w->e->cap);
	const struct gpa_slot *s, *nx;
	int r = ferry__gpa_lookup(vq->map, d->addr, d->len, &s, &nx);
	if (r == -EXDEV)
		return vq_fail(vq,
			       "%s: buffer [0x%" PRIx64 ", +0x%" PRIx32
			       ") straddles RAM blocks '%s' and '%s'",
			       pos_name(nm, sizeof(nm), p), (uint64_t)d->addr, (uint32_t)d->len,
			       s->name, nx->name);
	if (r < 0)
		return vq_fail(vq, "%s: buffer [0x%" PRIx64 ", +0x%" PRIx32 ") is outside guest RAM",
			       pos_name(nm, sizeof(nm), p), (uint64_t)d->addr, (uint32_t)d->len);
	w->e->iov[w->n].iov_base = s->host + (d->addr - s->gpa);
	w->e->iov[w->n].iov_len = d->len;
	if (w->e->gpa)
		w->e->gpa[w->n] = d->addr;
	w->n++;
	if (write)
		w->e->in_num++;
	else
		w->e->out_num++;
	return 0;
}

/* Walks the indirect table described by ring descriptor `parent` (d). */
static int walk_indirect(ferry_vq_t *vq, struct walk *w, unsigned parent,
			 const struct vring_desc *d)
{
	if (!has_feature(vq, VIRTIO_RING_F_INDIRECT_DESC))
		return vq_fail(vq,
			       "descriptor %u: indirect table but VIRTIO_RING_F_INDIRECT_DESC "
			       "was not negotiated",
			       parent);
	if (d->flags & VRING_DESC_F_NEXT)
		return vq_fail(vq, "descriptor %u: indirect table with the NEXT flag", parent);
	if (!d->len)
		return vq_fail(vq, "descriptor %u: empty indirect table", parent);
	if (d->len % sizeof(struct vring_desc))
		return vq_fail(vq,
			       "descriptor %u: indirect table length %" PRIu32
			       " is not a multiple of 16",
			       parent, (uint32_t)d->len);
	const struct gpa_slot *s, *nx;
	int r = ferry__gpa_lookup(vq->map, d->addr, d->len, &s, &nx);
	if (r == -EXDEV)
		return vq_fail(vq,
			       "descriptor %u: indirect table [0x%" PRIx64 ", +0x%" PRIx32
			       ") straddles RAM blocks '%s' and '%s'",
			       parent, (uint64_t)d->addr, (uint32_t)d->len, s->name, nx->name);
	if (r < 0)
		return vq_fail(vq,
			       "descriptor %u: indirect table [0x%" PRIx64 ", +0x%" PRIx32
			       ") is outside guest RAM",
			       parent, (uint64_t)d->addr, (uint32_t)d->len);
	const uint8_t *table = s->host + (d->addr - s->gpa);
	const unsigned entries = d->len / sizeof(struct vring_desc);
	struct desc_pos p = { .indirect = true, .idx = 0, .parent = parent };
	for (unsigned count = 1;; count++) {
		char nm[64];
		struct vring_desc id;
		if (count > entries)
			return vq_fail(vq,
				       "descriptor %u: indirect chain longer than its table of %u "
				       "entries (loop)",
				       parent, entries);
		desc_read(&id, table + (size_t)p.idx * sizeof(struct vring_desc));
		if (id.flags & VRING_DESC_F_INDIRECT)
			return vq_fail(vq, "%s: nested indirect table",
				       pos_name(nm, sizeof(nm), &p));
		r = add_buffer(vq, w, &p, &id);
		if (r < 0)
			return r;
		if (!(id.flags & VRING_DESC_F_NEXT))
			return 0;
		if (id.next >= entries)
			return vq_fail(vq, "%s: next %u out of range (table size %u)",
				       pos_name(nm, sizeof(nm), &p), id.next, entries);
		p.idx = id.next;
	}
}

/* Walks the chain at head into e. 0 or -EINVAL (queue broken). */
static int walk_chain(ferry_vq_t *vq, uint16_t head, ferry_vq_elem *e)
{
	struct walk w = { .e = e, .head = head };
	unsigned i = head;
	e->head = head;
	e->out_num = e->in_num = 0;
	for (unsigned count = 1;; count++) {
		struct vring_desc d;
		struct desc_pos p = { .idx = i };
		int r;
		if (count > vq->num)
			return vq_fail(vq, "chain at head %u is longer than the ring size %u (loop)",
				       head, vq->num);
		desc_read(&d, &vq->vr.desc[i]);
		if (d.flags & VRING_DESC_F_INDIRECT)
			r = walk_indirect(vq, &w, i, &d); /* no NEXT: ends the chain */
		else
			r = add_buffer(vq, &w, &p, &d);
		if (r < 0)
			return r;
		if (!(d.flags & VRING_DESC_F_NEXT))
			return 0;
		if (d.next >= vq->num)
			return vq_fail(vq, "descriptor %u: next %u out of range (ring size %u)", i,
				       d.next, vq->num);
		i = d.next;
	}
}

/* Common entry checks. 0 if the queue may be used. */
static int vq_usable(const ferry_vq_t *vq)
{
	if (!vq)
		return -EINVAL;
	if (vq->broken)
		return FERRY_EBROKEN;
	if (!vq->ready || !vq->mapped)
		return -ENODEV;
	return 0;
}

static bool elem_ok(const ferry_vq_elem *e)
{
	return e && e->iov;
}

int ferry_vq_pop(ferry_vq_t *vq, ferry_vq_elem *elem)
{
	int r = vq_usable(vq);
	if (r < 0)
		return r;
	if (!elem_ok(elem))
		return -EINVAL;
	const uint16_t avail_idx = ring_load16(&vq->vr.avail->idx);
	const uint16_t pending = (uint16_t)(avail_idx - vq->last_avail_idx);
	if (!pending)
		return 0;
	if (pending > vq->num)
		return vq_fail(vq, "avail index moved from %u to %u: more than the ring size %u",
			       vq->last_avail_idx, avail_idx, vq->num);
	/*
	 * Acquire: our load of avail->idx above happens before the loads of the
	 * ring entry and of the descriptors below (pairs with the driver's
	 * write barrier before it published avail->idx).
	 */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	const unsigned slot = vq->last_avail_idx & (vq->num - 1);
	const uint16_t head = ring_load16(&vq->vr.avail->ring[slot]);
	if (head >= vq->num)
		return vq_fail(vq, "avail ring entry %u (slot %u): head %u out of range (ring size %u)",
			       vq->last_avail_idx, slot, head, vq->num);
	if (bit_test(vq->inflight, head))
		return vq_fail(vq, "avail ring entry %u (slot %u): head %u is already in flight",
			       vq->last_avail_idx, slot, head);
	r = walk_chain(vq, head, elem);
	if (r < 0)
		return r;
	vq->last_avail_idx++;
	bit_set(vq->inflight, head);
	if (has_feature(vq, VIRTIO_RING_F_EVENT_IDX) && vq->notification) {
		/* Kick us again once the driver makes the next entry available. */
		void *ev = &vring_avail_event(&vq->vr);
		ring_store16(ev, vq->last_avail_idx);
		used_mark_dirty(vq, ev, 2);
	}
	return 1;
}

int ferry_vq_pop_inflight(ferry_vq_t *vq, ferry_vq_elem *elem)
{
	int r = vq_usable(vq);
	if (r < 0)
		return r;
	if (!elem_ok(elem))
		return -EINVAL;
	for (unsigned w = 0; w < INFLIGHT_WORDS; w++) {
		if (!vq->redeliver[w])
			continue;
		unsigned head = w * 64 + (unsigned)__builtin_ctzll(vq->redeliver[w]);
		/*
		 * The chain was validated on the source, but the guest could have
		 * rewritten its descriptors since: check it again.
		 */
		r = walk_chain(vq, (uint16_t)head, elem);
		if (r < 0)
			return r;
		bit_clear(vq->redeliver, head);
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Push and notifications.                                             */

int ferry_vq_push(ferry_vq_t *vq, uint16_t head, uint32_t len)
{
	int r = vq_usable(vq);
	if (r < 0)
		return r;
	if (head >= vq->num || !bit_test(vq->inflight, head))
		return -EINVAL;
	vring_used_elem_t *u = &vq->vr.used->ring[vq->used_idx & (vq->num - 1)];
	ring_store32(&u->id, head);
	ring_store32(&u->len, len);
	used_mark_dirty(vq, u, sizeof(*u));
	/*
	 * Release: the used element stored above is visible before the new
	 * used->idx that publishes it (pairs with the driver's read barrier
	 * between loading used->idx and reading the element).
	 */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	vq->used_idx++;
	ring_store16(&vq->vr.used->idx, vq->used_idx);
	used_mark_dirty(vq, &vq->vr.used->idx, 2);
	bit_clear(vq->inflight, head);
	bit_clear(vq->redeliver, head);
	return 0;
}

unsigned ferry_vq_inflight(const ferry_vq_t *vq)
{
	unsigned n = 0;
	for (unsigned w = 0; vq && w < INFLIGHT_WORDS; w++)
		n += (unsigned)__builtin_popcountll(vq->inflight[w]);
	return n;
}

void ferry_vq_set_notification(ferry_vq_t *vq, bool enable)
{
	if (vq_usable(vq) < 0)
		return;
	vq->notification = enable;
	if (has_feature(vq, VIRTIO_RING_F_EVENT_IDX)) {
		/*
		 * Disabled: the avail event is simply left behind. Enabled: ask
		 * for a kick at the next entry after those already there.
		 */
		if (enable) {
			void *ev = &vring_avail_event(&vq->vr);
			ring_store16(ev, ring_load16(&vq->vr.avail->idx));
			used_mark_dirty(vq, ev, 2);
		}
	} else {
		ring_store16(&vq->vr.used->flags, enable ? 0 : VRING_USED_F_NO_NOTIFY);
		used_mark_dirty(vq, &vq->vr.used->flags, 2);
	}
	/*
	 * Full barrier: the flag / avail event stored above is visible before
	 * the caller's next load of avail->idx (pairs with the driver's full
	 * barrier between publishing avail->idx and reading the flag or the
	 * avail event); otherwise a chain made available meanwhile could be
	 * neither kicked nor seen.
	 */
	if (enable)
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

bool ferry_vq_need_notify(ferry_vq_t *vq)
{
	if (vq_usable(vq) < 0)
		return false;
	/*
	 * Full barrier: our store of used->idx (push) is visible before the
	 * loads of avail->flags / used_event below (pairs with the driver's
	 * full barrier between writing used_event or clearing
	 * VRING_AVAIL_F_NO_INTERRUPT and re-reading used->idx).
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!has_feature(vq, VIRTIO_RING_F_EVENT_IDX))
		return !(ring_load16(&vq->vr.avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
	const bool valid = vq->signalled_used_valid;
	const uint16_t old = vq->signalled_used, cur = vq->used_idx;
	vq->signalled_used_valid = true;
	vq->signalled_used = cur;
	return !valid || vring_need_event(ring_load16(&vring_used_event(&vq->vr)), cur, old);
}

bool ferry_vq_is_broken(const ferry_vq_t *vq)
{
	return vq && vq->broken;
}

const char *ferry_vq_error(const ferry_vq_t *vq)
{
	return vq && vq->broken ? vq->error : "";
}

/* ------------------------------------------------------------------ */
/* Migration.                                                          */

/* ferry_vq_revalidate(), saying why in msg when the state is refused. */
static int revalidate(ferry_vq_t *vq, char *msg, size_t len)
{
	vq->mapped = false;
	memset(vq->redeliver, 0, sizeof(vq->redeliver));
	if (!memchr(vq->error, '\0', sizeof(vq->error))) {
		snprintf(msg, len, "error message is not terminated");
		return FERRY_EBADSTREAM;
	}
	if (!vq->broken)
		vq->error[0] = '\0';
	if (!vq->ready) {
		/* Nothing more may be set on a queue the driver never enabled. */
		for (unsigned w = 0; w < INFLIGHT_WORDS; w++)
			if (vq->inflight[w])
				goto bad_inflight;
		return 0;
	}
	if (!size_ok(vq->num)) {
		snprintf(msg, len, "ring size %u is not a power of two in 1..%u",
			 vq->num, FERRY_VQ_MAX_SIZE);
		return FERRY_EBADSTREAM;
	}
	for (unsigned i = vq->num; i < FERRY_VQ_MAX_SIZE; i++)
		if (bit_test(vq->inflight, i))
			goto bad_inflight;
	const unsigned inflight = ferry_vq_inflight(vq);
	if (inflight != (uint16_t)(vq->last_avail_idx - vq->used_idx))
		goto bad_inflight;
	char why[FERRY_VQ_ERROR_MAX];
	if (map_rings(vq, why, sizeof(why)) < 0) {
		snprintf(msg, len, "%s", why);
		return FERRY_EMISMATCH;
	}
	if (vq->broken)
		return 0;
	/* The rings' contents are the guest's: a contradiction breaks the queue. */
	const uint16_t used = ring_load16(&vq->vr.used->idx);
	if (used != vq->used_idx) {
		vq_fail(vq, "after load: used index in guest RAM is %u, the device's is %u", used,
			vq->used_idx);
		return 0;
	}
	const uint16_t avail = ring_load16(&vq->vr.avail->idx);
	if ((uint16_t)(avail - vq->last_avail_idx) > vq->num) {
		vq_fail(vq, "after load: avail index %u is more than the ring size %u ahead of %u",
			avail, vq->num, vq->last_avail_idx);
		return 0;
	}
	memcpy(vq->redeliver, vq->inflight, sizeof(vq->redeliver));
	return 0;
bad_inflight:
	snprintf(msg, len,
		 "in-flight heads (%u) do not match the indices "
		 "(last avail %u, used %u, ring size %u)",
		 ferry_vq_inflight(vq), vq->last_avail_idx, vq->used_idx, vq->num);
	return FERRY_EBADSTREAM;
}

int ferry_vq_revalidate(ferry_vq_t *vq)
{
	if (!vq)
		return -EINVAL;
	char msg[FERRY_VQ_ERROR_MAX + 64];
	int r = revalidate(vq, msg, sizeof(msg));
	if (r < 0)
		ferry_warn("virtqueue state: %s", msg);
	return r;
}

static int vq_post_load(void *opaque, uint32_t version, char *msg, size_t len)
{
	(void)version;
	return revalidate(opaque, msg, len);
}

static const ferry_field vq_fields[] = {
	FERRY_FIELD_BOOL(struct ferry_vq, ready),
	FERRY_FIELD_U16(struct ferry_vq, num),
	FERRY_FIELD_U64(struct ferry_vq, features),
	FERRY_FIELD_U64(struct ferry_vq, desc_gpa),
	FERRY_FIELD_U64(struct ferry_vq, avail_gpa),
	FERRY_FIELD_U64(struct ferry_vq, used_gpa),
	FERRY_FIELD_U16(struct ferry_vq, last_avail_idx),
	FERRY_FIELD_U16(struct ferry_vq, used_idx),
	FERRY_FIELD_U16(struct ferry_vq, signalled_used),
	FERRY_FIELD_BOOL(struct ferry_vq, signalled_used_valid),
	FERRY_FIELD_BOOL(struct ferry_vq, notification),
	FERRY_FIELD_U64_ARRAY(struct ferry_vq, inflight),
	FERRY_FIELD_BOOL(struct ferry_vq, broken),
	FERRY_FIELD_BYTES(struct ferry_vq, error),
	FERRY_FIELD_END,
};

static const ferry_vmsd vq_vmsd = {
	.name = "virtqueue",
	.version = 1,
	.min_version = 1,
	.fields = vq_fields,
	.post_load_msg = vq_post_load,
};

const ferry_vmsd *ferry_vq_vmsd(void)
{
	return &vq_vmsd;
}
