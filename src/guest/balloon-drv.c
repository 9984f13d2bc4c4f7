/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest's free page hint driver (see balloon-drv.h).
 *
 * DESIGN
 *
 * Layout in the virtio area (guest RAM): the split ring of
 * FREE_PAGE_RING entries (vring-drv.c; its state included), then one
 * 4-byte command slot per ring entry. Command buffers take slots round
 * robin: at most `num` chains are ever in flight, so a slot is never
 * rewritten while the device may still read it.
 *
 * A round: reap what the device used; read free_page_hint_cmd_id from the
 * device config; if it is a new id (>= FERRY_BALLOON_CMD_ID_MIN), answer:
 * a readable buffer with the id, one writable buffer per run of free pages
 * (at most MAX_RANGE bytes each; the device never writes them, their
 * guest-physical range is the message), a readable buffer with
 * VIRTIO_BALLOON_CMD_ID_STOP. The free runs come from a snapshot of each
 * vCPU's free list taken after the id was read, so every page reported was
 * free at some point after the host published the id. A page allocated
 * again afterwards is written, hence dirty in the host's next sync.
 *
 * When the ring is full the driver kicks and waits for used buffers. It
 * abandons a report (then still sends STOP if there is room) when the
 * config's id changes, when the guest is stopping, or after wait_ms
 * without room; an abandoned id is not answered again.
 *
 * Thread: rounds are serialised by d->lock (the activity thread and
 * direct callers). Stats are protected by d->lock too.
 */
#include "balloon-drv.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vring-drv.h"

#define FREE_PAGE_RING 256
#define MAX_RANGE (4u << 20) /* like Linux: one buffer per max-order block */
#define WAIT_NAP_NS 50000L

struct ferry_guest_balloon {
	ferry_guest_t *g;
	ferry_balloon_t *dev;
	ferry_guest_balloon_opts o;
	pthread_mutex_t lock; /* serialises rounds; protects everything below */
	ferry_gvq q;
	uint8_t *cmd;         /* FREE_PAGE_RING slots of 4 bytes, in guest RAM */
	uint64_t cmd_gpa;
	uint64_t cmd_off;     /* slot 0's offset in pc.ram (dirty log) */
	ferry_ram_block_t *dirty_rb; /* pc.ram in explicit dirty mode, else NULL */
	unsigned cmd_next;
	uint32_t last_id;     /* last id answered or abandoned */
	bool attached;        /* rings laid out or re-attached */
	int attach_err;       /* why that failed (then every round says so) */
	ferry_guest_balloon_stats stats;
};

/* Per report: what the range callback needs. */
struct report {
	ferry_guest_balloon_t *d;
	uint32_t id;
	const atomic_int *stop;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t config_id(const ferry_guest_balloon_t *d)
{
	struct virtio_balloon_config c;
	ferry_balloon_config_read(d->dev, &c);
	return le32toh(c.free_page_hint_cmd_id);
}

static void kick(ferry_guest_balloon_t *d)
{
	if (d->o.kick && ferry_gvq_kick_needed(&d->q))
		d->o.kick(d->o.opaque);
}

static void reap(ferry_guest_balloon_t *d)
{
	while (ferry_gvq_get_used(&d->q, NULL) >= 0)
		;
}

/*
 * Waits until `need` descriptors are free. id != 0: give up when the
 * config's id is no longer id. Caller holds d->lock.
 */
static int wait_room(ferry_guest_balloon_t *d, unsigned need, uint32_t id,
		     const atomic_int *stop)
{
	const uint64_t limit = (uint64_t)(d->o.wait_ms ? d->o.wait_ms : 1000) * 1000000ull;
	uint64_t t0 = 0;
	for (;;) {
		reap(d);
		if (d->q.st->num_free >= need)
			return 0;
		if (stop && atomic_load_explicit(stop, memory_order_relaxed))
			return -ECANCELED;
		if (id && config_id(d) != id)
			return -ECANCELED;
		kick(d);
		uint64_t t = mono_ns();
		if (!t0)
			t0 = t;
		else if (t - t0 > limit)
			return -ETIMEDOUT;
		struct timespec nap = { 0, WAIT_NAP_NS };
		nanosleep(&nap, NULL);
	}
}

/* Posts a readable command buffer holding v. Caller holds d->lock. */
static int post_cmd(ferry_guest_balloon_t *d, uint32_t v)
{
	unsigned slot = d->cmd_next++ % FREE_PAGE_RING;
	uint32_t le = htole32(v);
	memcpy(d->cmd + slot * 4, &le, 4);
	if (d->dirty_rb)
		ferry_ram_mark_dirty(d->dirty_rb, d->cmd_off + slot * 4, 4);
	ferry_gbuf b = { d->cmd_gpa + slot * 4, 4 };
	int r = ferry_gvq_add(&d->q, &b, 1, NULL, 0, false);
	return r < 0 ? r : 0;
}

/* ferry_guest_free_fn: posts one run of free pages, in MAX_RANGE pieces. */
static int post_range(void *opaque, uint64_t gpa, uint64_t len)
{
	struct report *rp = opaque;
	ferry_guest_balloon_t *d = rp->d;
	while (len) {
		uint32_t part = len < MAX_RANGE ? (uint32_t)len : MAX_RANGE;
		int r = wait_room(d, 1, rp->id, rp->stop);
		if (r < 0)
			return r;
		ferry_gbuf b = { gpa, part };
		r = ferry_gvq_add(&d->q, NULL, 0, &b, 1, false);
		if (r < 0)
			return r;
		d->stats.buffers++;
		d->stats.pages += part / FERRY_PAGE_SIZE;
		gpa += part;
		len -= part;
	}
	return 0;
}

/*
 * Lays out the rings and enables the queue, or, if the device's queue is
 * enabled already (its state was migrated), re-attaches to the rings in
 * guest RAM. Caller holds d->lock or owns d alone.
 */
static int attach_rings(ferry_guest_balloon_t *d)
{
	uint8_t *host;
	uint64_t gpa, size;
	ferry_guest_virtio_area(d->g, &host, &gpa, &size);
	const uint64_t ring = (ferry_gvq_area_size(FREE_PAGE_RING) + 15) & ~15ull;
	int r;
	ferry_vq_t *vq = ferry_balloon_free_page_vq(d->dev);
	if (ferry_vq_ready(vq)) {
		/* Migrated: the rings and the driver's state are in guest RAM. */
		r = ferry_gvq_attach(&d->q, host, gpa, ring);
	} else {
		const uint64_t features = ferry_balloon_features(d->dev) &
					  (1ull << VIRTIO_RING_F_EVENT_IDX |
					   1ull << VIRTIO_RING_F_INDIRECT_DESC);
		r = ferry_gvq_init(&d->q, host, gpa, ring, FREE_PAGE_RING, features);
		if (r == 0) {
			ferry_vq_config cfg;
			ferry_gvq_config(&d->q, &cfg);
			r = ferry_balloon_setup_vq(d->dev, &cfg);
		}
		if (d->dirty_rb)
			ferry_ram_mark_dirty(d->dirty_rb, gpa, size);
	}
	if (r == 0) {
		ferry_gvq_set_dirty_log(&d->q, d->dirty_rb, gpa);
		/* The guest does not take interrupts: it reaps when it needs room. */
		ferry_gvq_enable_interrupts(&d->q, false);
	}
	d->attach_err = r;
	d->attached = r == 0;
	return r;
}

static int64_t service(ferry_guest_balloon_t *d, const atomic_int *stop)
{
	pthread_mutex_lock(&d->lock);
	int64_t r = 0;
	if (!d->attached) {
		/* Deferred: the first round, the guest running (its RAM is here). */
		r = d->attach_err ? d->attach_err : attach_rings(d);
		if (r < 0)
			goto out;
	}
	reap(d);
	const uint32_t id = config_id(d);
	if (id < FERRY_BALLOON_CMD_ID_MIN || id == d->last_id)
		goto out;
	d->last_id = id;
	d->stats.last_id = id;
	struct report rp = { .d = d, .id = id, .stop = stop };
	r = wait_room(d, 1, id, stop);
	if (r == 0)
		r = post_cmd(d, id);
	if (r == 0)
		r = ferry_guest_free_ranges(d->g, post_range, &rp);
	/* STOP ends the report, also a cut one (if there is room for it). */
	bool stopping = stop && atomic_load_explicit(stop, memory_order_relaxed);
	if (stopping ? d->q.st->num_free > 0 : wait_room(d, 1, 0, stop) == 0)
		post_cmd(d, VIRTIO_BALLOON_CMD_ID_STOP);
	kick(d);
	if (r < 0)
		d->stats.reports_abandoned++;
	else
		d->stats.reports++;
out:
	pthread_mutex_unlock(&d->lock);
	return r;
}

int64_t ferry_guest_balloon_service(ferry_guest_balloon_t *d)
{
	return d ? service(d, NULL) : -EINVAL;
}

static void activity(void *opaque, const atomic_int *stop)
{
	service(opaque, stop);
}

int ferry_guest_balloon_create(ferry_guest_t *g, ferry_balloon_t *dev,
			       const ferry_guest_balloon_opts *opts, ferry_guest_balloon_t **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	uint8_t *host;
	uint64_t gpa, size;
	ferry_guest_virtio_area(g, &host, &gpa, &size);
	if (!g || !dev || !size || !ferry_guest_vm(g))
		return -EINVAL;
	if (ferry_guest_running(g))
		return -EBUSY;
	ferry_guest_balloon_t *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->g = g;
	d->dev = dev;
	if (opts)
		d->o = *opts;
	pthread_mutex_init(&d->lock, NULL);
	const uint64_t ring = (ferry_gvq_area_size(FREE_PAGE_RING) + 15) & ~15ull;
	d->cmd = host + ring;
	d->cmd_gpa = gpa + ring;
	d->cmd_off = gpa + ring; /* pc.ram is at gpa 0 */
	if (ferry_vm_dirty_mode(ferry_guest_vm(g)) == FERRY_DIRTY_EXPLICIT)
		d->dirty_rb = ferry_guest_ram_block(g, 0);

	int r = d->o.deferred ? 0 : attach_rings(d);
	if (r == 0 && d->o.background)
		r = ferry_guest_add_activity(g, activity, d);
	if (r < 0) {
		ferry_guest_balloon_destroy(d);
		return r;
	}
	*out = d;
	return 0;
}

void ferry_guest_balloon_destroy(ferry_guest_balloon_t *d)
{
	if (!d)
		return;
	pthread_mutex_destroy(&d->lock);
	free(d);
}

void ferry_guest_balloon_get_stats(ferry_guest_balloon_t *d, ferry_guest_balloon_stats *st)
{
	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	*st = d->stats;
	pthread_mutex_unlock(&d->lock);
}
