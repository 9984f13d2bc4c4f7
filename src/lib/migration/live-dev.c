/* SPDX-License-Identifier: MIT */
/*
 * Live devices (ferry/device.h): the participant that migrates them, on
 * both sides. The drivers never name it; they walk the participant table.
 *
 * DESIGN (source):
 *   save_setup     the section "live-devices" START: every device (id,
 *                  instance, config version), so that the destination
 *                  refuses an unknown or missing device before any data.
 *                  Nothing at all when the VM has no live device. Then
 *                  every PRE_COPY device goes RUNNING -> PRE_COPY.
 *   save_iterate   (each precopy pass, the guest running) a PART section:
 *                  mig/src/main reads the PRE_COPY devices in turn, each
 *                  buffer a DEV_STATE record, until every device said 0
 *                  (nothing more for now: initial data, then what the
 *                  guest dirtied, as VFIO's PRE_COPY read) or the pass's
 *                  PRECOPY_SLICE_MS are up; once a device's precopy_info
 *                  says no initial bytes are left, an INIT marker (its
 *                  index: the buffers so far) tells the destination.
 *   pending        PRE_COPY devices' initial + dirty bytes as precopy
 *                  bytes; stop_copy_size as stop-copy bytes, less what
 *                  precopy can still move (a device counts it in both).
 *   save_complete  (vCPUs stopped; before RAM's, so the threads run during
 *                  the final RAM pass) SWITCHOVER_START on the main
 *                  channel, every device to STOP_COPY (PRE_COPY devices
 *                  directly: the uAPI arc), then one save
 *                  thread per device (mig/src/dev_N) that reads until the
 *                  device says 0 and puts each buffer (indices go on from
 *                  the precopy ones: one monotonic index per device), then
 *                  an end marker,
 *                  on the carrier (live-dev.h): chan_put, or with multifd
 *                  mf_put (packets on the channels).
 *   complete_wait  mig/src/main drains the main-channel carrier into the
 *                  section END body (DEV_STATE records, in the order the
 *                  threads put them), or with multifd joins the threads,
 *                  has every channel send a SYNC and writes DEV_MF_SYNC
 *                  and the end markers; then each device's config vmsd
 *                  (DEV_CONFIG) and the end of the body; the devices go
 *                  to STOP.
 *   (postcopy)     FERRY_PART_BEFORE_RUN: save_complete and complete_wait
 *                  run at the switch before LISTEN, as above (the multifd
 *                  channels are still up), so the state is whole on the
 *                  destination before it can run; nothing after the switch.
 *   save_cleanup   stops and joins the threads (a cancel is seen between
 *                  two reads and while a thread waits for the carrier);
 *                  unless the migration completed, or failed after a
 *                  postcopy switch (the destination may run the guest:
 *                  the source's stays stopped), every device goes back to
 *                  RUNNING (the guest runs on).
 * DESIGN (destination):
 *   load_setup     the per-device queues (x-device-state-max-queued slots);
 *   load           START: the device list must be exactly ours (PRE_COPY
 *                  or not as ours too); PART (precopy): the load threads
 *                  start at the first one, each DEV_STATE to load_buf, and
 *                  an INIT marker waits until the device's load thread
 *                  wrote every buffer before it, then approves the
 *                  switchover (swack.h); END: the body's records, each
 *                  DEV_STATE to load_buf, DEV_MF_SYNC waits for every
 *                  multifd channel's SYNC;
 *   load_start     SWITCHOVER_START: every device's load thread
 *                  (mig/dst/devl_N), unless precopy started them;
 *   load_buf       (mig/dst/main, or mig/dst/recv_N for multifd packets)
 *                  queues the buffer in its slot (index mod
 *                  the bound), refusing an unknown device number, a
 *                  duplicate index, an index as far ahead of the first
 *                  missing one as the bound, data after the end marker; an
 *                  in-order buffer that finds the queue full waits for the
 *                  load thread (back-pressure). The thread moves the device
 *                  to RESUMING and writes the buffers strictly in index
 *                  order, with no lock held.
 *   load_complete  at EOF (postcopy: after the package, before its vCPUs
 *                  start; the END body came before LISTEN): every device
 *                  sent its end marker and config,
 *                  every load thread finished, each device goes to STOP,
 *                  then the config vmsds are applied in registration order
 *                  under vm->run_lock, before the vCPUs start.
 *   load_cleanup   stops and joins the load threads, frees what is queued.
 *
 * Thread: the handlers run on mig/src/main and mig/dst/main (so precopy
 * reads run on mig/src/main, never the caller's thread), but load_buf
 * also on mig/dst/recv_N (multifd packets; it reads nstream and map only
 * after it saw t->seen, which mig/dst/main sets with release once they are
 * final: a hostile source may send device packets before the list). struct
 * ferry_live_src's queue and errors are protected by its lock, struct
 * ferry_live_dst's queues and loader states by its lock (one for all
 * devices: the hand-off is per buffer of up to 1 MiB, so it is not
 * contended). Neither lock is held while a device op runs. A device is
 * driven by one thread at a time: mig/src/main before and after its save
 * thread, mig/dst/devl_N while it loads, mig/dst/main after the join.
 * Lock order: these locks are leaves, but for m->stats_lock
 * (ferry__mig_set_error) taken under none of them.
 */
#include "migration/live-dev.h"

#include <assert.h>
#include <errno.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration/live-stats.h"
#include "migration/mig.h"
#include "migration/multifd.h"
#include "migration/swack.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "util/bufpool.h"

/* The public states are the kernel's (ferry/device.h promises it). */
static_assert((int)FERRY_LIVE_ERROR == (int)VFIO_DEVICE_STATE_ERROR, "vfio state");
static_assert((int)FERRY_LIVE_STOP == (int)VFIO_DEVICE_STATE_STOP, "vfio state");
static_assert((int)FERRY_LIVE_RUNNING == (int)VFIO_DEVICE_STATE_RUNNING, "vfio state");
static_assert((int)FERRY_LIVE_STOP_COPY == (int)VFIO_DEVICE_STATE_STOP_COPY, "vfio state");
static_assert((int)FERRY_LIVE_RESUMING == (int)VFIO_DEVICE_STATE_RESUMING, "vfio state");
static_assert((int)FERRY_LIVE_RUNNING_P2P == (int)VFIO_DEVICE_STATE_RUNNING_P2P, "vfio state");
/* PRE_COPY came with VFIO_MIG_GET_PRECOPY_INFO (Linux 6.2); 6.1's headers lack both. */
#ifdef VFIO_MIG_GET_PRECOPY_INFO
static_assert((int)FERRY_LIVE_PRE_COPY == (int)VFIO_DEVICE_STATE_PRE_COPY, "vfio state");
static_assert((int)FERRY_LIVE_PRE_COPY_P2P == (int)VFIO_DEVICE_STATE_PRE_COPY_P2P, "vfio state");
#endif

/* How often a waiting thread looks at cancel (the migration's flag is not a condvar). */
#define POLL_MS 10
/* The longest a precopy pass reads PRE_COPY devices (the rest of the pass is RAM's). */
#define PRECOPY_SLICE_MS 100
/* ferry_part_buf flags bit (never on the wire): the buffer came in precopy (statistics). */
#define BUF_PRECOPY 0x80000000u

static const char *state_name(int s)
{
	static const char *const names[] = { "ERROR", "STOP", "RUNNING", "STOP_COPY",
					     "RESUMING", "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P" };
	return s >= 0 && s < 8 ? names[s] : "?";
}

ferry_live_state ferry__live_next_state(ferry_live_state from, ferry_live_state to)
{
	bool valid = to == FERRY_LIVE_STOP || to == FERRY_LIVE_RUNNING ||
		     to == FERRY_LIVE_STOP_COPY || to == FERRY_LIVE_RESUMING ||
		     to == FERRY_LIVE_PRE_COPY;
	if (!valid)
		return FERRY_LIVE_ERROR;
	if (from == to)
		return to;
	switch (from) {
	case FERRY_LIVE_STOP:
		return to == FERRY_LIVE_RUNNING || to == FERRY_LIVE_PRE_COPY ? FERRY_LIVE_RUNNING : to;
	case FERRY_LIVE_RUNNING:
		return to == FERRY_LIVE_PRE_COPY ? to : FERRY_LIVE_STOP;
	case FERRY_LIVE_PRE_COPY:
		return to == FERRY_LIVE_STOP_COPY ? to : FERRY_LIVE_RUNNING;
	case FERRY_LIVE_STOP_COPY:
	case FERRY_LIVE_RESUMING:
		return FERRY_LIVE_STOP;
	default:
		return FERRY_LIVE_ERROR;
	}
}

/*
 * Moves d to `to` one allowed arc at a time. A failed arc leaves d in
 * ERROR (nothing more is asked of it) and records why in *err.
 * Thread: the one driving d.
 */
static int live_goto(struct ferry_live_device *d, ferry_live_state to, ferry_error *err)
{
	int cur = atomic_load(&d->state);
	while (cur != (int)to) {
		ferry_live_state nx = ferry__live_next_state((ferry_live_state)cur, to);
		int r = nx == FERRY_LIVE_ERROR ? -EIO : d->ops.set_state(d->opaque, nx);
		if (r) {
			ferry__error_set(err, r < 0 ? r : -EIO,
					 "live device '%s' instance %u: cannot go from %s to %s: %s",
					 d->id, d->instance, state_name(cur), state_name(nx),
					 ferry_strerror(r < 0 ? r : -EIO));
			atomic_store(&d->state, FERRY_LIVE_ERROR);
			return r < 0 ? r : -EIO;
		}
		atomic_store(&d->state, (int)nx);
		cur = (int)nx;
	}
	return 0;
}

/* At the end (cleanup): d to `to`, unless it is in ERROR (nothing more is asked of it). */
static void settle(struct ferry_live_device *d, ferry_live_state to)
{
	ferry_error e = { 0 };
	if (atomic_load(&d->state) != FERRY_LIVE_ERROR && live_goto(d, to, &e))
		ferry_warn("%s", e.msg);
}

/* Wakes every waiter on cond. */
static void wake(pthread_mutex_t *lock, pthread_cond_t *cond)
{
	pthread_mutex_lock(lock);
	pthread_cond_broadcast(cond);
	pthread_mutex_unlock(lock);
}

/* Waits on cond for at most POLL_MS (a CLOCK_MONOTONIC condvar). */
static void wait_poll(pthread_cond_t *cond, pthread_mutex_t *lock)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += POLL_MS * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_cond_timedwait(cond, lock, &ts);
}

static ferry_migration_status mig_status(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->vm->mig_lock);
	ferry_migration_status st = m->status;
	pthread_mutex_unlock(&m->vm->mig_lock);
	return st;
}

/* Whether m ended COMPLETED (cleanup handlers: the status is final by then). */
static bool mig_completed(struct ferry_migration *m)
{
	return mig_status(m) == FERRY_MIGRATION_COMPLETED;
}

/*
 * Setup (either side): 0 when the VM has no live device (nothing to do),
 * else 1 with m's parameters in p.
 */
static int live_wanted(struct ferry_migration *m, ferry_migration_params *p)
{
	if (!m->vm->nlive)
		return 0;
	ferry__mig_params(m, p);
	return 1;
}

/* ================================ source ================================ */

struct ferry_live_src;

/* One device's save thread. */
struct live_saver {
	struct ferry_live_src *s;
	struct ferry_live_device *d;
	unsigned n;          /* device number: registration order */
	pthread_t thread;
	bool started;        /* mig/src/main: joined once */
	bool precopy;        /* mig/src/main's: the device went to PRE_COPY */
	bool idle;           /* mig/src/main's: said 0 in this pass */
	bool init_sent;      /* mig/src/main's: the INIT marker went */
	uint32_t count;      /* data buffers so far: mig/src/main's, then the save thread's */
};

/* The main-channel carrier: a bounded FIFO that mig/src/main drains. */
#define QCAP_PER_DEV 2
/*
 * Buffers made (and touched) at setup, per device, at most RESERVE_MAX in
 * all: about the peak in flight measured with bench/devices.py (4 devices:
 * 8 MiB on the source, 13 MiB on the destination over the main channel, 31
 * MiB over multifd), so that the downtime does not pay their first touch.
 */
#define RESERVE_SRC_PER_DEV (QCAP_PER_DEV + 2)
#define RESERVE_DST_PER_DEV 8
#define RESERVE_MAX 64

/* Setup: n buffers per device ready (best effort: a shortfall only costs time). */
static void reserve_bufs(struct ferry_migration *m, unsigned per_dev)
{
	size_t n = (size_t)m->vm->nlive * per_dev;
	(void)ferry__bufpool_reserve(m->bufs, n < RESERVE_MAX ? n : RESERVE_MAX);
}

struct ferry_live_src {
	struct ferry_migration *m;
	ferry_vm_t *vm;
	ferry_chan *c;               /* save_complete's, for complete_wait */
	uint32_t section_id;
	bool copying;                /* devices left RUNNING: go back on failure */
	unsigned npre;               /* devices in PRE_COPY */
	atomic_bool abort;
	ferry_dev_carrier carrier;
	ferry_mf_sender *mf;         /* the multifd carrier's channels, or NULL */
	pthread_mutex_t lock;
	pthread_cond_t cond;         /* the queue changed, or a thread failed */
	ferry_part_buf *q;           /* protected by lock: a ring of qcap */
	unsigned qhead, qlen, qcap;  /* protected by lock */
	int err;                     /* protected by lock: a save thread's failure */
	/* x-device-save-threads: devices read at once (0: all); their turn, protected by lock. */
	unsigned gate_limit, gate_next, gate_active;
	ferry_part_buf end[FERRY_LIVE_DEVICES_MAX]; /* protected by lock: multifd's end markers */
	bool ended[FERRY_LIVE_DEVICES_MAX];
	struct live_saver dev[FERRY_LIVE_DEVICES_MAX];
};

static bool src_aborted(struct ferry_live_src *s)
{
	return atomic_load(&s->abort) || ferry__mig_cancelled(s->m);
}

/* The carrier's put (mig/src/dev_N): waits for room; takes b. */
static int chan_put(ferry_dev_carrier *cr, ferry_part_buf *b)
{
	struct ferry_live_src *s = (struct ferry_live_src *)((char *)cr -
							     offsetof(struct ferry_live_src, carrier));
	pthread_mutex_lock(&s->lock);
	while (s->qlen == s->qcap && !src_aborted(s))
		wait_poll(&s->cond, &s->lock);
	bool room = s->qlen < s->qcap && !src_aborted(s);
	if (room) {
		s->q[(s->qhead + s->qlen++) % s->qcap] = *b;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	if (!room)
		ferry__buf_put(b->data);
	return room ? 0 : -ECANCELED;
}

/*
 * The multifd carrier's put (mig/src/dev_N): a data buffer goes out as a
 * device-state packet on the channels (waiting while all are busy); the
 * end marker is kept for mig/src/main, which sends it on the main channel
 * once the channels' SYNC follows the last packet. A channel's failure is
 * recorded without a message: the channel has its own, which the driver
 * reports (src_pick_error).
 */
static int mf_put(ferry_dev_carrier *cr, ferry_part_buf *b)
{
	struct ferry_live_src *s = ferry_container_of(cr, struct ferry_live_src, carrier);
	int r = 0;
	if (!(b->flags & FERRY_DEV_F_END))
		r = ferry__mf_send_buf(s->mf, b, &s->abort);
	pthread_mutex_lock(&s->lock);
	if (!r && (b->flags & FERRY_DEV_F_END)) {
		s->end[b->dev] = *b;
		s->ended[b->dev] = true;
	}
	if (r && r != -ECANCELED && !s->err)
		s->err = r;
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* A save thread failed: the first failure is the migration's error. */
static int save_fail(struct live_saver *v, int r, const char *what)
{
	struct ferry_live_src *s = v->s;
	if (!src_aborted(s))
		ferry__mig_set_error(s->m, r, "live device '%s' instance %u: %s of buffer %u failed: %s",
				     v->d->id, v->d->instance, what, v->count, ferry_strerror(r));
	pthread_mutex_lock(&s->lock);
	if (!s->err)
		s->err = r;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return r;
}

/*
 * A slow device reads small chunks: one of n bytes gets a buffer of its own
 * size (a plain one, bufpool.h) and the pooled one goes back, so queued
 * chunks never hold a full buffer each.
 */
static void *fit(ferry_bufpool *pool, void *buf, size_t n)
{
	void *small = n < FERRY_DEV_BUF_MAX / 4 ? ferry__buf_get(pool, n) : NULL;
	if (!small)
		return buf;
	memcpy(small, buf, n);
	ferry__buf_put(buf);
	return small;
}

/* One read: 0 (a buffer put), 1 (the end marker put) or a negative errno. */
static int read_one(struct live_saver *v)
{
	struct ferry_live_device *d = v->d;
	uint8_t *buf = ferry__buf_get(v->s->m->bufs, FERRY_DEV_BUF_MAX);
	if (!buf)
		return save_fail(v, -ENOMEM, "read");
	ssize_t n = d->ops.read(d->opaque, buf, FERRY_DEV_BUF_MAX);
	if (n < 0 || n > (ssize_t)FERRY_DEV_BUF_MAX) {
		ferry__buf_put(buf);
		return save_fail(v, n < 0 ? (int)n : -EOVERFLOW, "read");
	}
	ferry_part_buf b = { .dev = v->n, .index = v->count, .len = (uint32_t)n, .data = buf };
	if (n == 0) {
		ferry__buf_put(buf);
		b.data = NULL;
		b.flags = FERRY_DEV_F_END;
	} else {
		b.data = fit(v->s->m->bufs, buf, (size_t)n);
		v->count++;
	}
	int r = v->s->carrier.put(&v->s->carrier, &b);
	if (!r && n)
		ferry__live_stat_buf(v->s->m, v->n, (uint64_t)n, false);
	return r ? r : n == 0;
}

/* mig/src/dev_N: reads the device until its end, or a cancel, or a failure. */
/*
 * x-device-save-threads: device v reads once the devices before it started
 * and fewer than the limit read (registration order; 0: no limit).
 * 0, or -ECANCELED.
 */
static int gate_enter(struct live_saver *v)
{
	struct ferry_live_src *s = v->s;
	pthread_mutex_lock(&s->lock);
	while ((s->gate_next != v->n || (s->gate_limit && s->gate_active >= s->gate_limit)) &&
	       !src_aborted(s))
		wait_poll(&s->cond, &s->lock);
	bool go = !src_aborted(s);
	if (go) {
		s->gate_next++;
		s->gate_active++;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return go ? 0 : -ECANCELED;
}

static void gate_leave(struct ferry_live_src *s)
{
	pthread_mutex_lock(&s->lock);
	s->gate_active--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void *save_thread(void *arg)
{
	struct live_saver *v = arg;
	char name[16];
	snprintf(name, sizeof(name), "mig/src/dev_%u", v->n);
	pthread_setname_np(pthread_self(), name);
	int r = gate_enter(v);
	bool entered = !r;
	uint64_t t0 = ferry__now_ns();
	while (!r)
		r = src_aborted(v->s) ? -ECANCELED : read_one(v);
	if (entered)
		gate_leave(v->s);
	if (r == 1)
		ferry__live_stat_time(v->s->m, v->n, FERRY_LIVE_SAVE, t0);
	if (r == -ECANCELED) /* wake a drain that waits for this thread */
		wake(&v->s->lock, &v->s->cond);
	return NULL;
}

/* The device list (START section) on c. */
static void put_list(struct ferry_live_src *s, ferry_chan *c)
{
	ferry_vm_t *vm = s->vm;
	ferry__wire_put_section_start(c, FERRY_REC_SECTION_START, s->section_id, FERRY_LIVE_IDSTR, 0,
				      FERRY_LIVE_VERSION);
	ferry__wire_put_live_count(c, vm->nlive);
	for (unsigned i = 0; i < vm->nlive; i++) {
		const struct ferry_live_device *d = &vm->live[i];
		ferry_wire_live_dev e = { .instance = d->instance, .has_config = d->config != NULL,
					  .precopy = !!(d->ops.flags & FERRY_LIVE_PRE_COPY_FLAG),
					  .config_version = d->config ? d->config->version : 0 };
		snprintf(e.id, sizeof(e.id), "%s", d->id);
		ferry__wire_put_live_dev(c, &e);
	}
	ferry__wire_put_footer(c, s->section_id);
}

/* The savers; every PRE_COPY device RUNNING -> PRE_COPY (mig/src/main). */
static int precopy_begin(struct ferry_live_src *s)
{
	ferry_error e = { 0 };
	for (unsigned i = 0; i < s->vm->nlive; i++) {
		struct live_saver *v = &s->dev[i];
		*v = (struct live_saver){ .s = s, .d = &s->vm->live[i], .n = i };
		if (!(v->d->ops.flags & FERRY_LIVE_PRE_COPY_FLAG))
			continue;
		s->copying = true; /* back to RUNNING unless it completes */
		int r = live_goto(v->d, FERRY_LIVE_PRE_COPY, &e);
		if (r) {
			ferry__mig_set_error_from(s->m, &e);
			return r;
		}
		v->precopy = true;
		s->npre++;
	}
	return 0;
}

/* save_setup: the device list (START section); nothing without live devices. */
static int live_save_setup(void *opaque, ferry_chan *c)
{
	struct ferry_migration *m = opaque;
	ferry_vm_t *vm = m->vm;
	ferry_migration_params p;
	int r = live_wanted(m, &p);
	if (r <= 0)
		return r;
	struct ferry_live_src *s = calloc(1, sizeof(*s));
	if (!s || !(s->q = calloc(vm->nlive * QCAP_PER_DEV, sizeof(*s->q)))) {
		free(s);
		return -ENOMEM;
	}
	s->m = m;
	s->vm = vm;
	s->qcap = vm->nlive * QCAP_PER_DEV;
	s->gate_limit = p.device_save_threads;
	s->mf = m->mf_send; /* published by this thread (source.c's mf_open) */
	s->carrier.put = s->mf ? mf_put : chan_put;
	s->section_id = FERRY_SECTION_RAM + 1 + vm->ndevices; /* after the vmsd devices' */
	pthread_mutex_init(&s->lock, NULL);
	ferry__cond_init_monotonic(&s->cond);
	m->live_src = s;
	ferry__live_stat_setup(m, vm->nlive);
	reserve_bufs(m, RESERVE_SRC_PER_DEV);
	put_list(s, c);
	return precopy_begin(s);
}

/* precopy_info of v's device; fails the migration when the device does. */
static int precopy_info(struct live_saver *v, uint64_t *initial, uint64_t *dirty)
{
	struct ferry_live_device *d = v->d;
	int r = d->ops.precopy_info(d->opaque, initial, dirty);
	if (r)
		ferry__mig_set_error(v->s->m, r < 0 ? r : -EIO, "live device '%s' instance %u: "
				     "precopy_info failed: %s", d->id, d->instance,
				     ferry_strerror(r < 0 ? r : -EIO));
	return r < 0 ? r : r ? -EIO : 0;
}

/*
 * One precopy read of v into buf (mig/src/main): a DEV_STATE record on c,
 * flushed (buf is reused), then the INIT marker once no initial bytes are
 * left. 1 when the device has nothing more for now, 0, or a negative errno.
 */
static int precopy_read(struct live_saver *v, ferry_chan *c, uint8_t *buf)
{
	struct ferry_live_device *d = v->d;
	ssize_t n = d->ops.read(d->opaque, buf, FERRY_DEV_BUF_MAX);
	if (n < 0 || n > (ssize_t)FERRY_DEV_BUF_MAX)
		return save_fail(v, n < 0 ? (int)n : -EOVERFLOW, "precopy read");
	int r = 0;
	if (n > 0) {
		ferry_wire_dev_hdr h = { .dev = v->n, .index = v->count++, .len = (uint32_t)n };
		ferry__wire_put_dev_state(c, &h, buf);
		if ((r = ferry__chan_flush(c)))
			return r;
		ferry__live_stat_buf(v->s->m, v->n, (uint64_t)n, true);
	}
	uint64_t initial, dirty;
	if (!v->init_sent) {
		if ((r = precopy_info(v, &initial, &dirty)))
			return r;
		if (!initial) {
			ferry_wire_dev_hdr h = { .dev = v->n, .index = v->count, .flags = FERRY_DEV_F_INIT };
			ferry__wire_put_dev_state(c, &h, NULL);
			v->init_sent = true;
		}
	}
	return n == 0;
}

/* Reads the PRE_COPY devices in turn until all said 0, the slice ends or a cancel. */
static int precopy_slice(struct ferry_live_src *s, ferry_chan *c, uint8_t *buf)
{
	uint64_t end = ferry__now_ns() + PRECOPY_SLICE_MS * 1000000ull;
	for (unsigned i = 0; i < s->vm->nlive; i++)
		s->dev[i].idle = !s->dev[i].precopy;
	for (bool busy = true; busy && ferry__now_ns() < end;) {
		busy = false;
		for (unsigned i = 0; i < s->vm->nlive; i++) {
			struct live_saver *v = &s->dev[i];
			if (v->idle)
				continue;
			if (ferry__mig_cancelled(s->m))
				return -ECANCELED; /* at a record boundary: the notice may follow */
			int r = precopy_read(v, c, buf);
			if (r < 0)
				return r;
			v->idle = r == 1;
			busy |= !v->idle;
		}
	}
	return 0;
}

/* save_iterate (a precopy pass, mig/src/main): the PRE_COPY devices' data, a PART section. */
static int live_save_iterate(void *opaque, ferry_chan *c)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_src *s = m->live_src;
	if (!s || !s->npre)
		return 0;
	uint8_t *buf = malloc(FERRY_DEV_BUF_MAX);
	if (!buf) {
		ferry__mig_set_error(m, -ENOMEM, "out of memory for device state");
		return -ENOMEM;
	}
	ferry__wire_put_section_part(c, FERRY_REC_SECTION_PART, s->section_id);
	int r = precopy_slice(s, c, buf);
	free(buf);
	if (r)
		return r;
	ferry__wire_put_dev_eos(c);
	ferry__wire_put_footer(c, s->section_id);
	return ferry__chan_flush(c);
}

/*
 * pending (mig/src/main, between passes): PRE_COPY devices' initial and
 * dirty bytes as precopy bytes; stop_copy_size as stop-copy bytes, less
 * what precopy can still move.
 */
static void live_pending(void *opaque, uint64_t *precopy, uint64_t *stopcopy)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_src *s = m->live_src;
	ferry_vm_t *vm = m->vm;
	for (unsigned i = 0; i < vm->nlive; i++) {
		struct ferry_live_device *d = &vm->live[i];
		uint64_t b, initial = 0, dirty = 0;
		if (s && s->dev[i].precopy && atomic_load(&d->state) == FERRY_LIVE_PRE_COPY &&
		    d->ops.precopy_info(d->opaque, &initial, &dirty))
			initial = dirty = 0;
		*precopy += initial + dirty;
		if (d->ops.stop_copy_size && !d->ops.stop_copy_size(d->opaque, &b))
			*stopcopy += b > initial + dirty ? b - (initial + dirty) : 0;
	}
}

/* save_complete (vCPUs stopped): STOP_COPY, then a save thread per device. */
static int live_save_complete(void *opaque, ferry_chan *c)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_src *s = m->live_src;
	ferry_error e = { 0 };
	if (!s)
		return 0;
	s->c = c;
	s->copying = true;
	/* Before any data, on any channel: the destination starts its load threads. */
	ferry__wire_put_cmd(c, FERRY_CMD_SWITCHOVER_START, NULL, 0);
	int fr = ferry__chan_flush(c);
	if (fr)
		return fr;
	for (unsigned i = 0; i < s->vm->nlive; i++) {
		int r = live_goto(&s->vm->live[i], FERRY_LIVE_STOP_COPY, &e);
		if (r) {
			ferry__mig_set_error_from(m, &e);
			return r;
		}
	}
	for (unsigned i = 0; i < s->vm->nlive; i++) {
		struct live_saver *v = &s->dev[i]; /* count goes on from precopy's */
		int r = -pthread_create(&v->thread, NULL, save_thread, v);
		if (r) {
			ferry__mig_set_error(m, r, "cannot start a live device save thread: %s",
					     ferry_strerror(r));
			return r;
		}
		v->started = true;
	}
	return 0;
}

/* The next buffer of the carrier (mig/src/main): 0, -ECANCELED or a thread's error. */
static int chan_get(struct ferry_live_src *s, ferry_part_buf *b)
{
	int r = 0;
	pthread_mutex_lock(&s->lock);
	while (!s->qlen && !s->err && !src_aborted(s))
		wait_poll(&s->cond, &s->lock);
	if (s->qlen) {
		*b = s->q[s->qhead];
		s->qhead = (s->qhead + 1) % s->qcap;
		s->qlen--;
		pthread_cond_broadcast(&s->cond);
	} else {
		r = s->err ? s->err : -ECANCELED;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* The section END body's DEV_STATE records, until every device's end marker. */
static int drain(struct ferry_live_src *s)
{
	ferry_chan *c = s->c;
	ferry__wire_put_section_part(c, FERRY_REC_SECTION_END, s->section_id);
	for (unsigned ends = 0; ends < s->vm->nlive;) {
		ferry_part_buf b;
		int r = chan_get(s, &b);
		if (r)
			return r;
		ferry_wire_dev_hdr h = { .dev = b.dev, .index = b.index, .flags = b.flags, .len = b.len };
		ferry__wire_put_dev_state(c, &h, b.data);
		r = ferry__chan_flush(c);
		ferry__buf_put(b.data);
		if (r)
			return r;
		ends += !!(b.flags & FERRY_DEV_F_END);
		if (ferry__mig_cancelled(s->m))
			return -ECANCELED; /* at a record boundary: the cancel notice may follow */
	}
	return 0;
}

static void join_savers(struct ferry_live_src *s)
{
	for (unsigned i = 0; i < s->vm->nlive; i++)
		if (s->dev[i].started) {
			pthread_join(s->dev[i].thread, NULL);
			s->dev[i].started = false;
		}
}

/*
 * The multifd carrier's end (mig/src/main): the save threads joined, every
 * channel's SYNC after their packets, then the section END body's
 * DEV_MF_SYNC and each device's end marker.
 */
static int mf_finish(struct ferry_live_src *s)
{
	ferry_chan *c = s->c;
	join_savers(s);
	pthread_mutex_lock(&s->lock);
	int r = s->err;
	pthread_mutex_unlock(&s->lock);
	if (!r && src_aborted(s))
		r = -ECANCELED;
	if (!r)
		r = ferry__mf_send_flush(s->mf);
	if (r)
		return r;
	ferry__wire_put_section_part(c, FERRY_REC_SECTION_END, s->section_id);
	ferry__wire_put_dev_mf_sync(c);
	for (unsigned i = 0; i < s->vm->nlive; i++) {
		ferry_wire_dev_hdr h = { .dev = i, .index = s->end[i].index, .flags = FERRY_DEV_F_END };
		assert(s->ended[i]); /* a thread that ended without error put it */
		ferry__wire_put_dev_state(c, &h, NULL);
	}
	return 0;
}

/* complete_wait: the data, the config vmsds, the end of the body; devices to STOP. */
static int live_complete_wait(void *opaque)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_src *s = m->live_src;
	ferry_error e = { 0 };
	if (!s || !s->c)
		return 0;
	int r = s->mf ? mf_finish(s) : drain(s);
	if (!r)
		m->sw_dev_ns = ferry__now_ns();
	else /* the link broke: a thread waiting for the carrier gives up */
		atomic_store(&s->abort, true);
	join_savers(s);
	for (unsigned i = 0; i < s->vm->nlive && !r; i++) {
		struct ferry_live_device *d = &s->vm->live[i];
		uint8_t *buf;
		uint32_t n;
		if (!d->config)
			continue;
		if (!(r = ferry__vmsd_save(m, d->id, d->instance, d->config, d->opaque, &buf, &n))) {
			ferry__wire_put_dev_config(s->c, i, d->config->version, buf, n);
			free(buf);
		}
	}
	if (r)
		return r;
	ferry__wire_put_dev_eos(s->c);
	ferry__wire_put_footer(s->c, s->section_id);
	for (unsigned i = 0; i < s->vm->nlive && !r; i++)
		if ((r = live_goto(&s->vm->live[i], FERRY_LIVE_STOP, &e)))
			ferry__mig_set_error_from(m, &e);
	return r;
}

/* save_cleanup: threads stopped; devices RUNNING again unless it completed. */
/*
 * Whether the destination may run the guest (a postcopy switch went out,
 * info.postcopy): after a failure past it the source guest stays stopped,
 * and so do its devices; the destination's are the live ones.
 */
static bool handed_over(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->stats_lock);
	bool over = m->info.postcopy;
	pthread_mutex_unlock(&m->stats_lock);
	return over;
}

static void live_save_cleanup(void *opaque)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_src *s = m->live_src;
	if (!s)
		return;
	atomic_store(&s->abort, true);
	join_savers(s);
	for (; s->qlen; s->qlen--, s->qhead = (s->qhead + 1) % s->qcap)
		ferry__buf_put(s->q[s->qhead].data);
	if (s->copying && !mig_completed(m) && !handed_over(m))
		for (unsigned i = 0; i < s->vm->nlive; i++)
			settle(&s->vm->live[i], FERRY_LIVE_RUNNING);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s->q);
	free(s);
	m->live_src = NULL;
}

/* ============================= destination ============================= */

struct ferry_live_dst;

/* One device's load state. */
struct live_loader {
	struct ferry_live_dst *t;
	struct ferry_live_device *d;
	unsigned n;              /* local number: registration order */
	pthread_t thread;
	bool started;            /* mig/dst/main's */
	bool precopy;            /* mig/dst/main's: PRE_COPY in the stream (and here) */
	bool init_seen;          /* mig/dst/main's: its INIT marker arrived */
	/* Protected by t->lock. */
	ferry_part_buf *ring;    /* t->max slots: index % max; data NULL: empty */
	uint32_t next;           /* the next index to write */
	uint32_t frontier;       /* the first index not received */
	uint64_t early;          /* buffers that arrived ahead of the frontier */
	bool ended;              /* the end marker arrived: count is known */
	uint32_t count;
	bool done;               /* the thread is finished (err: how) */
	ferry_error err;
	/* mig/dst/main's. */
	uint8_t *config;
	uint32_t config_len, config_version;
	bool has_config;
};

struct ferry_live_dst {
	struct ferry_migration *m;
	ferry_vm_t *vm;
	uint32_t max;            /* x-device-state-max-queued */
	/*
	 * The setup section was loaded: set once by mig/dst/main with release
	 * after nstream and map, which never change after; load_buf (any
	 * receiver) loads it with acquire before it reads them.
	 */
	atomic_bool seen;
	bool loading;            /* the load threads run (first precopy data or SWITCHOVER_START) */
	bool sw_start;           /* SWITCHOVER_START arrived */
	bool body_done;          /* the END body's EOS was loaded */
	unsigned nstream;
	unsigned map[FERRY_LIVE_DEVICES_MAX]; /* stream device number -> local */
	atomic_bool abort;
	pthread_mutex_t lock;
	pthread_cond_t cond;     /* any loader state changed */
	struct live_loader dev[FERRY_LIVE_DEVICES_MAX];
};

/* load_setup: the queues, when the VM has live devices. */
static int live_load_setup(void *opaque)
{
	struct ferry_migration *m = opaque;
	ferry_migration_params p;
	int r = live_wanted(m, &p);
	if (r <= 0)
		return r;
	struct ferry_live_dst *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->m = m;
	t->vm = m->vm;
	t->max = p.device_state_max_queued;
	pthread_mutex_init(&t->lock, NULL);
	ferry__cond_init_monotonic(&t->cond);
	m->live_dst = t;
	ferry__live_stat_setup(m, t->vm->nlive);
	unsigned npre = 0;
	for (unsigned i = 0; i < t->vm->nlive; i++) {
		struct live_loader *v = &t->dev[i];
		*v = (struct live_loader){ .t = t, .d = &t->vm->live[i], .n = i };
		if (!(v->ring = calloc(t->max, sizeof(*v->ring))))
			return -ENOMEM;
		npre += !!(v->d->ops.flags & FERRY_LIVE_PRE_COPY_FLAG);
	}
	ferry__swack_need(m, npre); /* each approves once its initial data is written */
	reserve_bufs(m, RESERVE_DST_PER_DEV);
	return 0;
}

/* Our device (id, instance), or -1. */
static int local_index(ferry_vm_t *vm, const ferry_wire_live_dev *e)
{
	for (unsigned i = 0; i < vm->nlive; i++)
		if (!strcmp(vm->live[i].id, e->id) && vm->live[i].instance == e->instance)
			return (int)i;
	return -1;
}

/* One entry of the setup list: must be ours, once, with config as ours. */
static int load_setup_entry(struct ferry_live_dst *t, ferry_chan *c, unsigned k, bool *listed)
{
	ferry_wire_live_dev e;
	int r = ferry__wire_get_live_dev(c, &e);
	if (r)
		return r;
	int j = t ? local_index(t->vm, &e) : -1;
	if (j < 0)
		return ferry__chan_fail(c, FERRY_EMISMATCH, "unknown live device '%s' instance %u",
					e.id, e.instance);
	if (listed[j])
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "live device '%s' instance %u listed twice",
					e.id, e.instance);
	if (e.has_config != (t->vm->live[j].config != NULL))
		return ferry__chan_fail(c, FERRY_EMISMATCH,
					"live device '%s' instance %u: config state %s the stream, %s here",
					e.id, e.instance, e.has_config ? "in" : "not in",
					e.has_config ? "none" : "one");
	if (e.precopy != !!(t->vm->live[j].ops.flags & FERRY_LIVE_PRE_COPY_FLAG))
		return ferry__chan_fail(c, FERRY_EMISMATCH, "live device '%s' instance %u: %s",
					e.id, e.instance, e.precopy ? "PRE_COPY in the stream, not here"
					: "PRE_COPY here, not in the stream");
	t->dev[j].precopy = e.precopy;
	listed[j] = true;
	t->map[k] = (unsigned)j;
	return 0;
}

/* The setup section (START): exactly our devices. */
static int load_setup_section(struct ferry_live_dst *t, ferry_chan *c, const ferry_section *s)
{
	bool listed[FERRY_LIVE_DEVICES_MAX] = { false };
	uint32_t n;
	int r;
	ferry__chan_ctx_name(c, "live device list");
	if (s->version != FERRY_LIVE_VERSION)
		return ferry__chan_fail(c, FERRY_EVERSION, "live devices section version %u (supported: %u)",
					s->version, FERRY_LIVE_VERSION);
	if (t && atomic_load_explicit(&t->seen, memory_order_relaxed)) /* only this thread stores */
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "live devices set up twice");
	if ((r = ferry__wire_get_live_count(c, &n)))
		return r;
	for (unsigned k = 0; k < n; k++)
		if ((r = load_setup_entry(t, c, k, listed)))
			return r;
	for (unsigned j = 0; j < t->vm->nlive; j++)
		if (!listed[j])
			return ferry__chan_fail(c, FERRY_EMISMATCH,
						"live device '%s' instance %u is not in the stream",
						t->vm->live[j].id, t->vm->live[j].instance);
	t->nstream = n;
	/* Release: a receiver that sees it sees nstream and map (see the field). */
	atomic_store_explicit(&t->seen, true, memory_order_release);
	return 0;
}

static int start_loaders(struct ferry_live_dst *t, ferry_chan *c);

/* mig/dst/devl_N: RESUMING, then each buffer in index order. */
static void *load_thread(void *arg)
{
	struct live_loader *v = arg;
	struct ferry_live_dst *t = v->t;
	struct ferry_live_device *d = v->d;
	char name[16];
	ferry_error e = { 0 };
	snprintf(name, sizeof(name), "mig/dst/devl_%u", v->n);
	pthread_setname_np(pthread_self(), name);
	uint64_t t0 = ferry__now_ns();
	int r = live_goto(d, FERRY_LIVE_RESUMING, &e);
	pthread_mutex_lock(&t->lock);
	while (!r) {
		ferry_part_buf *slot = &v->ring[v->next % t->max];
		if (atomic_load(&t->abort)) {
			r = -ECANCELED;
		} else if (slot->data && slot->index == v->next) {
			ferry_part_buf b = *slot;
			slot->data = NULL;
			pthread_mutex_unlock(&t->lock);
			ssize_t w = d->ops.write(d->opaque, b.data, b.len);
			ferry__buf_put(b.data);
			if (w != (ssize_t)b.len)
				r = w < 0 ? (int)w : -EIO;
			else
				ferry__live_stat_buf(t->m, v->n, b.len, b.flags & BUF_PRECOPY);
			if (r)
				ferry__error_set(&e, r,
						 "live device '%s' instance %u: write of buffer %u failed: %s",
						 d->id, d->instance, b.index, ferry_strerror(r));
			pthread_mutex_lock(&t->lock);
			v->next += !r;
			pthread_cond_broadcast(&t->cond);
		} else if (v->ended && v->next == v->count) {
			break;
		} else {
			pthread_cond_wait(&t->cond, &t->lock);
		}
	}
	v->done = true;
	if (r && !e.code) /* a cancel: no message of its own */
		ferry__error_set(&e, r, "%s", ferry_strerror(r));
	v->err = e;
	uint64_t early = v->early; /* every buffer arrived: final */
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	if (!r)
		ferry__live_stat_loaded(t->m, v->n, t0, early);
	return NULL;
}

/*
 * load_start (SWITCHOVER_START, mig/dst/main): every device's load thread,
 * which takes it to RESUMING, before its first buffer can arrive (precopy
 * data started them already). Buffers are queued (bounded) whenever they
 * come; only the threads write them.
 */
static int live_load_start(void *opaque, ferry_chan *c)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_dst *t = m->live_dst;
	if (!t)
		return 0;
	if (!atomic_load_explicit(&t->seen, memory_order_relaxed) || t->sw_start)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "SWITCHOVER_START %s",
					t->sw_start ? "twice" : "before the live device list");
	t->sw_start = true;
	return t->loading ? 0 : start_loaders(t, c);
}

/* Every device's load thread (mig/dst/main): at the first precopy data or SWITCHOVER_START. */
static int start_loaders(struct ferry_live_dst *t, ferry_chan *c)
{
	t->loading = true;
	for (unsigned i = 0; i < t->vm->nlive; i++) {
		struct live_loader *v = &t->dev[i];
		int r = -pthread_create(&v->thread, NULL, load_thread, v);
		if (r)
			return ferry__chan_fail(c, r, "cannot start a live device load thread: %s",
						ferry_strerror(r));
		v->started = true;
	}
	return 0;
}

/*
 * Whether a buffer waiting for room gives up (t->lock held; dropped to
 * read the status): load_cleanup began, or the migration is over (a
 * multifd receiver may wait while mig/dst/main fails).
 */
static bool dst_over(struct ferry_live_dst *t)
{
	if (atomic_load(&t->abort) || ferry__mig_cancelled(t->m))
		return true;
	pthread_mutex_unlock(&t->lock);
	ferry_migration_status st = mig_status(t->m);
	pthread_mutex_lock(&t->lock);
	return st == FERRY_MIGRATION_FAILED || st == FERRY_MIGRATION_CANCELLED ||
	       st == FERRY_MIGRATION_COMPLETED;
}

/* The end marker (t->lock held): no data at or past its count. */
static int accept_end(struct live_loader *v, ferry_chan *c, const ferry_part_buf *b)
{
	const struct ferry_live_device *d = v->d;
	if (v->ended)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"live device '%s' instance %u: second end of state marker",
					d->id, d->instance);
	/* Any buffer received at or past the count; the highest is named. */
	uint32_t late = v->frontier > b->index ? v->frontier - 1 : UINT32_MAX;
	for (uint32_t k = 0; k < v->t->max; k++)
		if (v->ring[k].data && v->ring[k].index >= b->index &&
		    (late == UINT32_MAX || v->ring[k].index > late))
			late = v->ring[k].index;
	if (late != UINT32_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"live device '%s' instance %u: end of state marker after %u "
					"buffers, but buffer index %u arrived",
					d->id, d->instance, b->index, late);
	v->ended = true;
	v->count = b->index;
	return 0;
}

/* A data buffer (t->lock held): in the window, not seen before; may wait for room. */
static int accept_buf(struct live_loader *v, ferry_chan *c, ferry_part_buf *b)
{
	struct ferry_live_dst *t = v->t;
	const struct ferry_live_device *d = v->d;
	if (v->ended && b->index >= v->count)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"live device '%s' instance %u: buffer index %u after the end "
					"of state marker (%u buffers)",
					d->id, d->instance, b->index, v->count);
	if (b->index >= v->frontier && b->index - v->frontier >= t->max)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"live device '%s' instance %u: buffer index %u is %u ahead of "
					"%u (x-device-state-max-queued %u)",
					d->id, d->instance, b->index, b->index - v->frontier,
					v->frontier, t->max);
	/* In the window of what is received, but not of what is written: back-pressure. */
	bool over = false;
	while (b->index >= v->frontier && b->index - v->next >= t->max && !v->done &&
	       !(over = dst_over(t)))
		wait_poll(&t->cond, &t->lock);
	if (v->done && v->err.code)
		return ferry__chan_fail_msg(c, v->err.code, v->err.msg);
	if (over)
		return -ECANCELED;
	ferry_part_buf *slot = &v->ring[b->index % t->max];
	if (b->index < v->frontier || (slot->data && slot->index == b->index))
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"live device '%s' instance %u: duplicate buffer index %u",
					d->id, d->instance, b->index);
	v->early += b->index > v->frontier;
	*slot = *b;
	b->data = NULL; /* the slot has it */
	while (v->ring[v->frontier % t->max].data &&
	       v->ring[v->frontier % t->max].index == v->frontier)
		v->frontier++;
	return 0;
}

/* load_buf: a buffer of a live device, from any carrier. Takes b->data. */
static int live_load_buf(void *opaque, ferry_chan *c, ferry_part_buf *b)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_dst *t = m->live_dst;
	int r = 0;
	/* Acquire: pairs with load_setup_section's release (nstream, map). */
	bool seen = t && atomic_load_explicit(&t->seen, memory_order_acquire);
	if (!seen || b->dev >= t->nstream)
		r = ferry__chan_fail(c, FERRY_EBADSTREAM, "state of live device number %u (%u devices)",
				     b->dev, seen ? t->nstream : 0);
	struct live_loader *v = r ? NULL : &t->dev[t->map[b->dev]];
	if (v) {
		pthread_mutex_lock(&t->lock);
		r = b->flags & FERRY_DEV_F_END ? accept_end(v, c, b) : accept_buf(v, c, b);
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->lock);
	}
	ferry__buf_put(b->data);
	b->data = NULL;
	return r;
}

/*
 * An INIT marker (PART, mig/dst/main): every buffer before it received;
 * once the load thread wrote them all, the device approves the switchover.
 */
static int accept_init(struct live_loader *v, ferry_chan *c, uint32_t index)
{
	struct ferry_live_dst *t = v->t;
	const struct ferry_live_device *d = v->d;
	if (!v->precopy || v->init_seen)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "live device '%s' instance %u: %s",
					d->id, d->instance, v->init_seen ? "second initial data marker"
					: "initial data marker, but the device is not PRE_COPY");
	v->init_seen = true;
	pthread_mutex_lock(&t->lock);
	uint32_t frontier = v->frontier;
	bool over = false;
	while (frontier == index && v->next < index && !v->done && !(over = dst_over(t)))
		wait_poll(&t->cond, &t->lock);
	bool written = v->next >= index;
	ferry_error err = v->err;
	pthread_mutex_unlock(&t->lock);
	if (frontier != index)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "live device '%s' instance %u: initial "
					"data marker after %u buffers, but %u received", d->id,
					d->instance, index, frontier);
	if (!written)
		return err.code ? ferry__chan_fail_msg(c, err.code, err.msg) : -ECANCELED;
	return ferry__swack_approve(t->m, c);
}

/* A DEV_STATE record of a body (precopy: a PART's): its header, its data, to load_buf. */
static int load_state_rec(struct ferry_migration *m, ferry_chan *c, bool precopy)
{
	ferry_wire_dev_hdr h;
	struct ferry_live_dst *t = m->live_dst;
	uint64_t sum;
	int r = ferry__wire_get_dev_hdr(c, &h);
	if (r || (r = ferry__wire_get_sum(c, &sum)))
		return r;
	if (!h.len && (r = ferry__wire_check_dev_sum(c, &h, NULL, sum)))
		return r;
	if ((h.flags & FERRY_DEV_F_END) && precopy)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "device %u: end of state marker in "
					"precopy", h.dev);
	if (h.flags & FERRY_DEV_F_INIT) {
		if (!precopy || h.dev >= t->nstream)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "device %u: initial data marker "
						"%s", h.dev, precopy ? "of no listed device" :
						"after the switchover");
		return accept_init(&t->dev[t->map[h.dev]], c, h.index);
	}
	ferry_part_buf b = { .dev = h.dev, .index = h.index, .flags = h.flags, .len = h.len };
	if (precopy)
		b.flags |= BUF_PRECOPY;
	if (h.len) {
		if (!(b.data = ferry__buf_get(m->bufs, h.len)))
			return ferry__chan_fail(c, -ENOMEM, "out of memory for device state");
		if ((r = ferry__chan_read_direct(c, b.data, h.len)) || /* no copy through c's buffer */
		    (r = ferry__wire_check_dev_sum(c, &h, b.data, sum))) {
			ferry__buf_put(b.data);
			return r;
		}
	}
	return live_load_buf(m, c, &b);
}

/* A DEV_CONFIG record: kept until load_complete applies it. */
static int load_config_rec(struct ferry_live_dst *t, ferry_chan *c)
{
	uint32_t dev, version, len;
	uint64_t sum;
	int r = ferry__wire_get_dev_config(c, &dev, &version, &len);
	if (r || (r = ferry__wire_get_sum(c, &sum)))
		return r;
	if (dev >= t->nstream)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "config of live device number %u (%u devices)",
					dev, t->nstream);
	struct live_loader *v = &t->dev[t->map[dev]];
	if (v->has_config)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"live device '%s' instance %u: config state sent twice",
					v->d->id, v->d->instance);
	if (!(v->config = malloc(len ? len : 1)))
		return ferry__chan_fail(c, -ENOMEM, "out of memory for device state");
	v->has_config = true;
	v->config_len = len;
	v->config_version = version;
	char what[FERRY_NAME_MAX + 40];
	snprintf(what, sizeof(what), "live device '%s' instance %u config", v->d->id, v->d->instance);
	if ((r = ferry__chan_read(c, v->config, len)))
		return r;
	return ferry__wire_check_sum(c, v->config, len, ferry__sum_dev_seed(dev, UINT32_MAX), sum,
				     what);
}

/* The end of the body: every device sent its end marker, and what it announced. */
static int load_body_end(struct ferry_live_dst *t, ferry_chan *c)
{
	for (unsigned k = 0; k < t->nstream; k++) {
		struct live_loader *v = &t->dev[t->map[k]];
		const struct ferry_live_device *d = v->d;
		pthread_mutex_lock(&t->lock);
		bool ended = v->ended;
		uint32_t count = v->count, frontier = v->frontier;
		pthread_mutex_unlock(&t->lock);
		if (!ended)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"live device '%s' instance %u: no end of state marker "
						"(%u buffers received)", d->id, d->instance, frontier);
		if (frontier < count)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"live device '%s' instance %u: buffer index %u missing "
						"(end marker after %u buffers)",
						d->id, d->instance, frontier, count);
		if (d->config && !v->has_config)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"live device '%s' instance %u: no config state",
						d->id, d->instance);
	}
	t->body_done = true;
	return 0;
}

/* DEV_MF_SYNC: every device-state packet on the multifd channels was handed over. */
static int load_mf_sync(struct ferry_migration *m, ferry_chan *c)
{
	if (!m->mf_recv) /* published by this thread (dest.c's cmd_multifd) */
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"live device state sync without multifd channels");
	int r = ferry__mf_recv_sync(m->mf_recv);
	if (r != -ENOTCONN)
		return r;
	/* The source is gone with channels behind: its last record says why if it cancelled. */
	uint8_t tag;
	if ((r = ferry__chan_get_u8(c, &tag)))
		return r;
	return tag == FERRY_DEV_CANCELLED ? ferry__chan_fail_msg(c, FERRY_EPEER, FERRY_CANCELLED_MSG)
					  : ferry__chan_fail_msg(c, -ENOTCONN, FERRY_MF_ORPHANED_MSG);
}

/* The section END body: records until DEV_EOS. */
static int load_body(struct ferry_migration *m, ferry_chan *c)
{
	struct ferry_live_dst *t = m->live_dst;
	if (!t->sw_start)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"live devices' state before SWITCHOVER_START");
	for (;;) {
		uint8_t tag;
		int r;
		ferry__chan_ctx(c, "device state");
		if ((r = ferry__chan_get_u8(c, &tag)))
			return r;
		switch (tag) {
		case FERRY_DEV_EOS:
			return load_body_end(t, c);
		case FERRY_DEV_STATE:
			r = load_state_rec(m, c, false);
			break;
		case FERRY_DEV_CONFIG:
			r = load_config_rec(t, c);
			break;
		case FERRY_DEV_MF_SYNC:
			r = load_mf_sync(m, c);
			break;
		case FERRY_DEV_CANCELLED:
			return ferry__chan_fail_msg(c, FERRY_EPEER, FERRY_CANCELLED_MSG);
		default:
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown live device record 0x%02x",
						tag);
		}
		if (r)
			return r;
		if (ferry__mig_cancelled(m))
			return -ECANCELED;
	}
}

/* A PART body (precopy): DEV_STATE records (data, INIT markers) until DEV_EOS. */
static int load_precopy(struct ferry_migration *m, ferry_chan *c)
{
	struct ferry_live_dst *t = m->live_dst;
	int r = t->loading ? 0 : start_loaders(t, c);
	while (!r) {
		uint8_t tag;
		ferry__chan_ctx(c, "device state");
		if ((r = ferry__chan_get_u8(c, &tag)))
			return r;
		if (tag == FERRY_DEV_EOS)
			return 0;
		if (tag == FERRY_DEV_CANCELLED)
			return ferry__chan_fail_msg(c, FERRY_EPEER, FERRY_CANCELLED_MSG);
		if (tag != FERRY_DEV_STATE)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "live device record 0x%02x in "
						"precopy", tag);
		r = load_state_rec(m, c, true);
		if (!r && ferry__mig_cancelled(m))
			r = -ECANCELED;
	}
	return r;
}

/* load: the setup section (START), precopy data (PART) or the state (END, once, last). */
static int live_load(void *opaque, ferry_chan *c, const ferry_section *s)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_dst *t = m->live_dst;
	if (s->type == FERRY_REC_SECTION_START)
		return load_setup_section(t, c, s);
	bool seen = t && atomic_load_explicit(&t->seen, memory_order_relaxed); /* this thread's */
	if (s->type == FERRY_REC_SECTION_PART && seen && !t->sw_start)
		return load_precopy(m, c);
	if (s->type != FERRY_REC_SECTION_END || !t || t->body_done)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "live devices sent as section type %u",
					s->type);
	return load_body(m, c);
}

/* Waits for v's thread to finish (mig/dst/main); 0 or its error, recorded in *err. */
static int loader_wait(struct live_loader *v, ferry_error *err)
{
	struct ferry_live_dst *t = v->t;
	pthread_mutex_lock(&t->lock);
	while (!v->done && !ferry__mig_cancelled(t->m))
		wait_poll(&t->cond, &t->lock);
	int r = v->done ? v->err.code : -ECANCELED;
	ferry__error_copy(err, &v->err);
	pthread_mutex_unlock(&t->lock);
	return r;
}

/* load_complete (EOF): threads done, devices STOP, configs applied in registration order. */
static int live_load_complete(void *opaque, ferry_chan *c)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_dst *t = m->live_dst;
	ferry_error e = { 0 };
	if (!t)
		return 0;
	if (!atomic_load_explicit(&t->seen, memory_order_relaxed))
		return ferry__chan_fail(c, FERRY_EMISMATCH, "live device '%s' instance %u is not in "
					"the stream", t->vm->live[0].id, t->vm->live[0].instance);
	if (!t->body_done)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "no live device state before the "
					"vCPUs start");
	for (unsigned i = 0; i < t->vm->nlive; i++) {
		int r = loader_wait(&t->dev[i], &e);
		if (!r)
			r = live_goto(t->dev[i].d, FERRY_LIVE_STOP, &e);
		if (r)
			return r == -ECANCELED ? r : ferry__chan_fail_msg(c, r, e.msg);
	}
	for (unsigned i = 0; i < t->vm->nlive; i++) {
		struct live_loader *v = &t->dev[i];
		const struct ferry_live_device *d = v->d;
		if (!d->config)
			continue;
		uint64_t t0 = ferry__now_ns();
		int r = ferry__vmsd_apply(t->vm, d->config, d->opaque, v->config_version, v->config,
					  v->config_len, &e);
		if (r)
			return ferry__chan_fail(c, r, "live device '%.64s' instance %u: %.200s", d->id,
						d->instance, ferry__error_text(&e, r));
		ferry__live_stat_time(m, i, FERRY_LIVE_APPLY, t0);
	}
	ferry__live_stat_applied(m);
	return 0;
}

/* load_cleanup: threads stopped and joined, buffers freed, devices settled. */
static void live_load_cleanup(void *opaque)
{
	struct ferry_migration *m = opaque;
	struct ferry_live_dst *t = m->live_dst;
	if (!t)
		return;
	atomic_store(&t->abort, true);
	wake(&t->lock, &t->cond);
	bool run = mig_completed(m) && ferry_vm_is_running(t->vm);
	for (unsigned i = 0; i < t->vm->nlive; i++) {
		struct live_loader *v = &t->dev[i];
		if (v->started)
			pthread_join(v->thread, NULL);
		for (uint32_t k = 0; v->ring && k < t->max; k++)
			ferry__buf_put(v->ring[k].data);
		free(v->ring);
		free(v->config);
		if (run || atomic_load(&v->d->state) == FERRY_LIVE_RESUMING)
			settle(v->d, run ? FERRY_LIVE_RUNNING : FERRY_LIVE_STOP);
	}
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	free(t);
	m->live_dst = NULL;
}

const ferry_participant ferry__live_participant = {
	.name = "live-devices",
	.flags = FERRY_PART_BEFORE_RUN, /* read from the device: never fetched on demand */
	.save_setup = live_save_setup,
	.save_iterate = live_save_iterate,
	.pending = live_pending,
	.save_complete = live_save_complete,
	.complete_wait = live_complete_wait,
	.save_cleanup = live_save_cleanup,
	.section = FERRY_LIVE_IDSTR,
	.load_setup = live_load_setup,
	.load = live_load,
	.load_start = live_load_start,
	.load_buf = live_load_buf,
	.load_complete = live_load_complete,
	.load_cleanup = live_load_cleanup,
};
