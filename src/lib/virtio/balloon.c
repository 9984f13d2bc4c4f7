/* SPDX-License-Identifier: MIT */
/*
 * virtio-balloon, device side, free page hints only
 * (VIRTIO_BALLOON_F_FREE_PAGE_HINT): the host publishes a command id, the
 * guest answers on the free page queue with buffers whose guest-physical
 * ranges are free memory, and the pages of those ranges go to a callback
 * (the migration drops them from its dirty bitmap).
 *
 * DESIGN
 *
 * State machine, per published id (cur_id):
 *  - hint_start publishes a new id (0x80000000 upwards, wrapping back to
 *    it) and forgets the guest's previous report;
 *  - a readable 4-byte buffer equal to cur_id opens the report (report_id);
 *    any other id (older, or garbage) closes it: the buffers that follow
 *    belong to a stale report and are ignored;
 *  - writable buffers are hinted only while report_id == cur_id and the
 *    host has not stopped; otherwise they are counted as ignored;
 *  - a VIRTIO_BALLOON_CMD_ID_STOP buffer closes the report (complete, if it
 *    was the current one);
 *  - hint_stop / hint_done publish STOP / DONE: from then on nothing is
 *    hinted until the next hint_start.
 * Correctness of what is hinted rests on the caller: it starts a new id
 * right after each dirty-log sync, so a page hinted free and then written
 * by the guest shows up dirty in a later sync, and a page reallocated
 * before the new id is simply not free in the guest's next report.
 *
 * Hostile guest: chains are popped through the checked virtqueue (which
 * guarantees every buffer lies inside one RAM block); a chain that mixes
 * readable and writable buffers, has several command buffers, or a command
 * buffer that is not 4 bytes breaks the queue. Every chain goes back used
 * with length 0 (the device writes nothing). Only whole pages inside a
 * range are hinted: a partial page may hold live data.
 *
 * Migration: the next id and the published one are device state
 * (ferry_balloon_vmsd), as QEMU migrates free_page_hint_cmd_id: ids are
 * never reused across hosts, so buffers of a report the guest had queued
 * before switchover (its rings arrive with its RAM) can never pass for a
 * report of a later migration from the destination, whose hints would
 * then drop pages written since. A loaded id is never current: whatever
 * the rings still hold for it is ignored.
 *
 * Thread: the config's command id is an atomic (the guest reads it from
 * its own threads). Everything else, the queue included, is protected by
 * b->lock, so that start/stop/done are atomic with respect to a poll: once
 * hint_stop returned, no callback runs for the id it stopped. Callbacks
 * run with b->lock held (a leaf: they must not call back in).
 */
#include "virtio-int.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* At most this many chains per poll: a busy guest cannot pin the caller. */
#define POLL_MAX_CHAINS ((int)(4 * FERRY_VQ_MAX_SIZE))
/* Largest chain accepted (buffers). */
#define CHAIN_MAX FERRY_VQ_MAX_SIZE

struct ferry_balloon {
	const ferry_gpa_map_t *map;
	/* Published in the config; read by the guest at any time. */
	_Atomic uint32_t cmd_id;
	atomic_bool complete;

	pthread_mutex_t lock; /* protects everything below */
	ferry_vq_t *vq;
	uint32_t next_id;   /* next id hint_start publishes */
	uint32_t cur_id;    /* last id published by hint_start, 0 before any */
	bool stopped;       /* STOP or DONE published since cur_id */
	uint32_t report_id; /* id the guest's open report announced, 0 if none */
	ferry_balloon_stats stats;
	/* Device state (ferry_balloon_vmsd): filled by pre_save, read by post_load. */
	struct {
		uint32_t next_id;
		uint32_t cmd_id;
	} mig;
	struct iovec iov[CHAIN_MAX];
	uint64_t gpa[CHAIN_MAX];
};

int ferry_balloon_create(const ferry_gpa_map_t *map, ferry_balloon_t **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!map)
		return -EINVAL;
	ferry_balloon_t *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	int r = ferry_vq_create(map, &b->vq);
	if (r < 0) {
		free(b);
		return r;
	}
	b->map = map;
	b->next_id = FERRY_BALLOON_CMD_ID_MIN;
	atomic_init(&b->cmd_id, VIRTIO_BALLOON_CMD_ID_DONE);
	atomic_init(&b->complete, false);
	pthread_mutex_init(&b->lock, NULL);
	*out = b;
	return 0;
}

void ferry_balloon_destroy(ferry_balloon_t *b)
{
	if (!b)
		return;
	ferry_vq_destroy(b->vq);
	pthread_mutex_destroy(&b->lock);
	free(b);
}

uint64_t ferry_balloon_features(const ferry_balloon_t *b)
{
	(void)b;
	return 1ull << VIRTIO_BALLOON_F_FREE_PAGE_HINT | 1ull << VIRTIO_RING_F_EVENT_IDX |
	       1ull << VIRTIO_RING_F_INDIRECT_DESC | 1ull << VIRTIO_F_VERSION_1;
}

void ferry_balloon_config_read(const ferry_balloon_t *b, struct virtio_balloon_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	if (!b)
		return;
	/* Acquire: pairs with the release in publish(); nothing else to order. */
	cfg->free_page_hint_cmd_id =
		htole32(atomic_load_explicit(&b->cmd_id, memory_order_acquire));
}

int ferry_balloon_setup_vq(ferry_balloon_t *b, const ferry_vq_config *cfg)
{
	if (!b || !cfg)
		return -EINVAL;
	pthread_mutex_lock(&b->lock);
	int r = ferry_vq_setup(b->vq, cfg);
	b->report_id = 0;
	pthread_mutex_unlock(&b->lock);
	return r;
}

ferry_vq_t *ferry_balloon_free_page_vq(ferry_balloon_t *b)
{
	return b ? b->vq : NULL;
}

/* Caller holds b->lock. */
static void publish(ferry_balloon_t *b, uint32_t id)
{
	atomic_store_explicit(&b->cmd_id, id, memory_order_release);
}

uint32_t ferry_balloon_hint_start(ferry_balloon_t *b)
{
	if (!b)
		return 0;
	pthread_mutex_lock(&b->lock);
	uint32_t id = b->next_id;
	b->next_id = id == UINT32_MAX ? FERRY_BALLOON_CMD_ID_MIN : id + 1;
	b->cur_id = id;
	b->stopped = false;
	b->report_id = 0;
	atomic_store(&b->complete, false);
	b->stats.hint_cmds++;
	publish(b, id);
	pthread_mutex_unlock(&b->lock);
	return id;
}

void ferry_balloon_hint_stop(ferry_balloon_t *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	b->stopped = true;
	publish(b, VIRTIO_BALLOON_CMD_ID_STOP);
	pthread_mutex_unlock(&b->lock);
}

void ferry_balloon_hint_done(ferry_balloon_t *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	b->stopped = true;
	publish(b, VIRTIO_BALLOON_CMD_ID_DONE);
	pthread_mutex_unlock(&b->lock);
}

bool ferry_balloon_hint_complete(const ferry_balloon_t *b)
{
	return b && atomic_load(&b->complete);
}

/* A command buffer: opens, closes or ignores a report. Caller holds lock. */
static int command(ferry_balloon_t *b, const ferry_vq_elem *e)
{
	if (e->out_num != 1)
		return ferry__vq_fail(b->vq,
				      "free page chain at head %u: %u command buffers (expected 1)",
				      e->head, e->out_num);
	if (e->iov[0].iov_len != sizeof(uint32_t))
		return ferry__vq_fail(b->vq,
				      "free page chain at head %u: command id buffer is %zu bytes "
				      "(expected 4)",
				      e->head, e->iov[0].iov_len);
	uint32_t id;
	memcpy(&id, e->iov[0].iov_base, sizeof(id));
	id = le32toh(id);
	const bool current = b->cur_id && !b->stopped;
	if (id == VIRTIO_BALLOON_CMD_ID_STOP) {
		if (current && b->report_id == b->cur_id) {
			b->stats.reports++;
			atomic_store(&b->complete, true);
		}
		b->report_id = 0;
	} else if (current && id == b->cur_id) {
		b->report_id = id;
	} else {
		b->report_id = 0; /* a stale report: its buffers are ignored */
		b->stats.ignored_buffers++;
	}
	return 0;
}

/* Free page buffers. Caller holds lock. */
static void hints(ferry_balloon_t *b, const ferry_vq_elem *e, ferry_balloon_hint_fn fn,
		  void *opaque)
{
	const bool take = b->report_id && b->report_id == b->cur_id && !b->stopped;
	for (unsigned i = 0; i < e->in_num; i++) {
		if (!take) {
			b->stats.ignored_buffers++;
			continue;
		}
		const struct iovec *v = &e->iov[e->out_num + i];
		ferry_ram_block_t *rb;
		uint64_t off;
		/* Cannot fail: ferry_vq_pop() checked the range. */
		if (!ferry_gpa_map_translate(b->map, e->gpa[e->out_num + i], v->iov_len, &rb, &off))
			continue;
		/* Whole pages only: a partial page may hold live data. */
		uint64_t first = (off + FERRY_PAGE_SIZE - 1) >> FERRY_PAGE_SHIFT;
		uint64_t end = (off + v->iov_len) >> FERRY_PAGE_SHIFT;
		b->stats.buffers_hinted++;
		if (end <= first)
			continue;
		b->stats.pages_hinted += end - first;
		if (fn)
			fn(opaque, rb, first, end - first);
	}
}

int ferry_balloon_hint_poll(ferry_balloon_t *b, ferry_balloon_hint_fn fn, void *opaque)
{
	if (!b)
		return -EINVAL;
	pthread_mutex_lock(&b->lock);
	int r = 0, n = 0;
	if (!ferry_vq_ready(b->vq))
		goto out;
	while (n < POLL_MAX_CHAINS) {
		ferry_vq_elem e = { .iov = b->iov, .gpa = b->gpa, .cap = CHAIN_MAX };
		r = ferry_vq_pop(b->vq, &e);
		if (r <= 0)
			break;
		if (e.out_num && e.in_num) {
			r = ferry__vq_fail(b->vq,
					   "free page chain at head %u mixes %u readable and %u "
					   "writable buffers",
					   e.head, e.out_num, e.in_num);
			break;
		}
		if (e.out_num) {
			r = command(b, &e);
			if (r < 0)
				break;
		} else {
			hints(b, &e, fn, opaque);
		}
		n++;
		r = ferry_vq_push(b->vq, e.head, 0);
		if (r < 0)
			break;
	}
out:
	pthread_mutex_unlock(&b->lock);
	return r < 0 ? r : n;
}

/* ------------------------------------------------------------------ */
/* Free page hint provider (ferry/hint.h).                            */

static int ops_start(void *opaque)
{
	ferry_balloon_hint_start(opaque);
	return 0;
}

static int ops_poll(void *opaque, ferry_hint_fn fn, void *fn_opaque)
{
	return ferry_balloon_hint_poll(opaque, fn, fn_opaque);
}

static bool ops_complete(void *opaque)
{
	return ferry_balloon_hint_complete(opaque);
}

static void ops_stop(void *opaque)
{
	ferry_balloon_hint_stop(opaque);
}

static void ops_done(void *opaque)
{
	ferry_balloon_hint_done(opaque);
}

static const char *ops_error(void *opaque)
{
	return ferry_vq_error(ferry_balloon_free_page_vq(opaque));
}

static const ferry_hint_ops hint_ops = {
	.start = ops_start,
	.poll = ops_poll,
	.complete = ops_complete,
	.stop = ops_stop,
	.done = ops_done,
	.error = ops_error,
};

const ferry_hint_ops *ferry_balloon_hint_ops(void)
{
	return &hint_ops;
}

void ferry_balloon_get_stats(ferry_balloon_t *b, ferry_balloon_stats *st)
{
	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	*st = b->stats;
	pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------------ */
/* Device state.                                                      */

static int balloon_pre_save(void *opaque)
{
	ferry_balloon_t *b = opaque;
	pthread_mutex_lock(&b->lock);
	b->mig.next_id = b->next_id;
	b->mig.cmd_id = atomic_load(&b->cmd_id);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static int balloon_post_load(void *opaque, uint32_t version, char *msg, size_t len)
{
	ferry_balloon_t *b = opaque;
	(void)version;
	const uint32_t next = b->mig.next_id, id = b->mig.cmd_id;
	if (next < FERRY_BALLOON_CMD_ID_MIN) {
		snprintf(msg, len, "next command id 0x%x is below 0x%x", next,
			 FERRY_BALLOON_CMD_ID_MIN);
		return FERRY_EBADSTREAM;
	}
	if (id > VIRTIO_BALLOON_CMD_ID_DONE && id < FERRY_BALLOON_CMD_ID_MIN) {
		snprintf(msg, len, "published command id 0x%x is neither STOP, DONE nor >= 0x%x", id,
			 FERRY_BALLOON_CMD_ID_MIN);
		return FERRY_EBADSTREAM;
	}
	pthread_mutex_lock(&b->lock);
	b->next_id = next;
	/* The guest keeps seeing the id it saw; nothing is hinted for it here. */
	b->cur_id = id >= FERRY_BALLOON_CMD_ID_MIN ? id : 0;
	b->stopped = true;
	b->report_id = 0;
	atomic_store(&b->complete, false);
	publish(b, id);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static const ferry_field balloon_fields[] = {
	{ "next_cmd_id", FERRY_FT_U32, offsetof(struct ferry_balloon, mig.next_id), 4, 0 },
	{ "free_page_hint_cmd_id", FERRY_FT_U32, offsetof(struct ferry_balloon, mig.cmd_id), 4, 0 },
	FERRY_FIELD_END,
};

static const ferry_vmsd balloon_vmsd = {
	.name = "virtio-balloon",
	.version = 1,
	.min_version = 1,
	.fields = balloon_fields,
	.pre_save = balloon_pre_save,
	.post_load_msg = balloon_post_load,
};

const ferry_vmsd *ferry_balloon_vmsd(void)
{
	return &balloon_vmsd;
}
