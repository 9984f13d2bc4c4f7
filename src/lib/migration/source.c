/* SPDX-License-Identifier: MIT */
/*
 * The outgoing (source) side of a precopy migration.
 *
 * DESIGN: mig/src/main connects, writes the stream header and the RAM setup
 * section, then iterates: send every dirty page (one PART section per pass),
 * log sync, and estimate whether what is still dirty can be sent within
 * downtime-limit at the bandwidth measured so far. When it can, the vCPUs are
 * stopped, the last dirty pages go out in the END section, followed by every
 * device's state (FULL sections), the run state and EOF. The destination
 * answers SHUT on the return path once its vCPUs run (or it failed); the
 * time from our stop to that answer is the downtime. With auto-converge,
 * each log sync also feeds the throttle decision (throttle.h), which may
 * slow the guest's vCPUs down; they run at full speed again when the
 * migration ends.
 *
 * mig/src/rp reads the return path. It shares only rp_* fields with the main
 * thread, under rp_lock.
 *
 * Failure or cancel at any point: tracking stops, and if this thread
 * stopped the vCPUs it starts them again, so the source guest keeps running
 * with nothing lost.
 */
#include "migration/mig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migration/multifd.h"
#include "migration/postcopy.h"
#include "migration/throttle.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "transport/transport.h"

/*
 * Postcopy state of the source. The return path thread serves page
 * requests: with preempt it sends them itself on the preempt channel,
 * otherwise it queues them for the main thread.
 */
#define PC_QUEUE 4096
/* Pre-discard rounds before the stop, and what is little enough to stop. */
#define PC_PREDISCARD_ROUNDS 6
#define PC_PREDISCARD_ENOUGH 2048
typedef struct ferry_pc_src {
	pthread_mutex_t lock; /* the dirty bitmaps once in postcopy; all below */
	pthread_cond_t cond;
	struct { const struct ferry_ram_block *rb; uint64_t page; uint32_t n; } q[PC_QUEUE];
	unsigned qhead, qlen;
	bool preempt;
	ferry_chan pre;       /* written by mig/src/rp only, once pre_up */
	bool pre_up;
	bool missing_end;     /* recovery: the destination's bitmaps are in */
	uint64_t running_ns;  /* RP RUNNING: the destination's vCPUs run */
	bool phase;           /* past the switch: a dead return path pauses */
	uint64_t requests, dropped;
	uint32_t pong;        /* last PONG value seen */
	uint64_t closed_bytes; /* main thread: bytes of connections closed after the switch */
	/* Pages discarded on the destination before the stop (main thread only). */
	unsigned long *prediscarded[FERRY_MAX_RAM_BLOCKS];
} ferry_pc_src;

/* A page request (mig/src/rp). Returns 0 or a protocol/I-O error. */
static int rp_request(struct ferry_migration *m, ferry_chan *c, const uint8_t *b, size_t len)
{
	ferry_vm_t *vm = m->vm;
	ferry_pc_src *pc = m->pc_src;
	if (!pc || !ferry__wire_req_len_ok(b, len))
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "page request of %zu bytes%s", len,
					pc ? "" : " without postcopy");
	char name[FERRY_NAME_MAX + 1];
	uint64_t first;
	uint32_t n;
	int r = ferry__wire_req_decode(c, b, &first, &n, name);
	if (r)
		return r;
	struct ferry_ram_block *rb = ferry_ram_block_find(vm, name);
	if (!rb || n == 0 || n > FERRY_RAM_MAX_RUN || first >= rb->npages || n > rb->npages - first)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"page request for pages %llu+%u of '%s' outside guest RAM",
					(unsigned long long)first, n, name);
	pthread_mutex_lock(&pc->lock);
	pc->requests++;
	if (pc->preempt && pc->pre_up) {
		/* Not again in the background: it goes now, on its own channel. */
		ferry__bitmap_clear_range(rb->dirty, first, n);
		pthread_mutex_unlock(&pc->lock);
		ferry_chan *pre = &pc->pre;
		ferry__wire_put_ram_run(pre, FERRY_RAM_PAGES, rb->name, first, n,
					rb->host + (first << FERRY_PAGE_SHIFT));
		r = ferry__chan_flush(pre);
		if (r) {
			/*
			 * Requests wait for the main thread from now on. If the
			 * link broke, the destination's preempt thread notices and
			 * breaks the main connection, so both sides pause; if the
			 * destination just completed, its SHUT is still to be read
			 * on this connection: it must not be shut down here.
			 */
			pthread_mutex_lock(&pc->lock);
			pc->pre_up = false;
			pthread_mutex_unlock(&pc->lock);
		}
		return 0;
	}
	if (pc->qlen < PC_QUEUE) {
		unsigned i = (pc->qhead + pc->qlen++) % PC_QUEUE;
		pc->q[i].rb = rb;
		pc->q[i].page = first;
		pc->q[i].n = n;
	} else {
		pc->dropped++; /* a flood: the background stream brings them anyway */
	}
	pthread_mutex_unlock(&pc->lock);
	return 0;
}

/* Recovery: the destination's bitmap of pages it still misses (mig/src/rp). */
static int rp_missing(struct ferry_migration *m, ferry_chan *c, const uint8_t *b, size_t len)
{
	ferry_vm_t *vm = m->vm;
	ferry_pc_src *pc = m->pc_src;
	if (!pc)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "missing-page bitmap without postcopy");
	unsigned long *maps[FERRY_MAX_RAM_BLOCKS];
	for (unsigned i = 0; i < vm->nblocks; i++)
		maps[i] = vm->blocks[i]->dirty;
	unsigned bi;
	uint64_t first, n;
	pthread_mutex_lock(&pc->lock);
	int r = ferry__pc_bitmap_decode(vm, c, b, len, maps, &bi, &first, &n);
	pthread_mutex_unlock(&pc->lock);
	return r;
}

/* How long a cancelled source waits to write its cancel notice before it cuts the links. */
#define CANCEL_GRACE_S 1

/*
 * A QMP monitor greets first, {"QMP": {...; read as a return path message
 * that is type '{"', length 'QM', then 'P"'.
 */
static bool qmp_greeting(ferry_chan *c, uint16_t type, uint16_t len)
{
	uint8_t b[2];
	return type == ('{' << 8 | '"') && len == ('Q' << 8 | 'M') && !ferry__chan_read(c, b, 2) &&
	       b[0] == 'P' && b[1] == '"';
}

/* The main thread has written all it will after a cancel (the notice, or nothing). */
static void rp_bye(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->rp_lock);
	m->rp_bye = true;
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
}

/*
 * Cancel (mig/src/rp, woken by ferry_migration_cancel's shutdown(SHUT_RD)):
 * the links stay up for the main thread to finish its current write and
 * send the cancel notice; if that takes more than CANCEL_GRACE_S (a
 * destination that does not read), every connection is cut, which fails
 * the blocked write.
 */
static void await_bye(struct ferry_migration *m)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl); /* rp_cond's clock */
	dl.tv_sec += CANCEL_GRACE_S;
	pthread_mutex_lock(&m->rp_lock);
	while (!m->rp_bye)
		if (pthread_cond_timedwait(&m->rp_cond, &m->rp_lock, &dl))
			break;
	bool bye = m->rp_bye;
	pthread_mutex_unlock(&m->rp_lock);
	if (bye)
		return;
	ferry_warn("cancel: the destination does not read; closing the connections");
	ferry__chan_shutdown(&m->chan);
	pthread_mutex_lock(&m->vm->mig_lock); /* keeps mf_send alive */
	if (m->mf_send)
		ferry__mf_send_shutdown(m->mf_send);
	pthread_mutex_unlock(&m->vm->mig_lock);
}

static void *rp_thread(void *arg)
{
	struct ferry_migration *m = arg;
	ferry_chan *c = &m->chan;
	pthread_setname_np(pthread_self(), "mig/src/rp");
	if (m->pc_src && m->pc_src->preempt)
		ferry__pc_boost_thread(m); /* it serves page requests */
	size_t cap = FERRY_RP_PAYLOAD_MAX;
	uint8_t *buf = malloc(cap);
	for (bool first = true; buf; first = false) {
		uint16_t type, len;
		ferry__chan_ctx(c, "return path message");
		if (ferry__wire_get_rp(c, &type, &len))
			break;
		if (first && qmp_greeting(c, type, len)) {
			pthread_mutex_lock(&m->rp_lock);
			m->rp_qmp = true;
			pthread_mutex_unlock(&m->rp_lock);
			ferry__chan_shutdown(c); /* the main thread's next write fails */
			break;
		}
		if (len > cap) {
			ferry__chan_fail(c, FERRY_EBADSTREAM, "return path message of %u bytes", len);
			break;
		}
		if (ferry__chan_read(c, buf, len))
			break;
		if (type == FERRY_RP_SHUT && len >= FERRY_RP_SHUT_STATUS_LEN) {
			const uint8_t *msg;
			size_t ml;
			int status;
			ferry__wire_rp_shut_decode(buf, len, &status, &msg, &ml);
			pthread_mutex_lock(&m->rp_lock);
			m->rp_shut = true;
			m->rp_shut_ns = ferry__now_ns();
			m->rp_status = status;
			if (ml > sizeof(m->rp_msg) - 1)
				ml = sizeof(m->rp_msg) - 1;
			memcpy(m->rp_msg, msg, ml);
			m->rp_msg[ml] = 0;
			pthread_cond_broadcast(&m->rp_cond);
			pthread_mutex_unlock(&m->rp_lock);
			break;
		} else if (type == FERRY_RP_PONG && len == FERRY_RP_PONG_LEN) {
			if (m->pc_src) {
				pthread_mutex_lock(&m->pc_src->lock);
				m->pc_src->pong = ferry__wire_rp_pong_decode(buf);
				pthread_cond_broadcast(&m->pc_src->cond);
				pthread_mutex_unlock(&m->pc_src->lock);
			}
			continue;
		} else if (type == FERRY_RP_REQ_PAGES) {
			if (rp_request(m, c, buf, len))
				break;
			continue;
		} else if (type == FERRY_RP_HEARTBEAT && len == 0 && m->pc_src) {
			continue;
		} else if (type == FERRY_RP_RUNNING && len == 0 && m->pc_src) {
			pthread_mutex_lock(&m->pc_src->lock);
			m->pc_src->running_ns = ferry__now_ns();
			pthread_mutex_unlock(&m->pc_src->lock);
			continue;
		} else if (type == FERRY_RP_MISSING) {
			if (rp_missing(m, c, buf, len))
				break;
			continue;
		} else if (type == FERRY_RP_MISSING_END && len == 0 && m->pc_src) {
			pthread_mutex_lock(&m->pc_src->lock);
			m->pc_src->missing_end = true;
			pthread_cond_broadcast(&m->pc_src->cond);
			pthread_mutex_unlock(&m->pc_src->lock);
			continue;
		}
		ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown return path message %u (len %u)", type,
				 len);
		break;
	}
	free(buf);
	if (m->pc_src) {
		pthread_mutex_lock(&m->pc_src->lock);
		bool phase = m->pc_src->phase;
		pthread_mutex_unlock(&m->pc_src->lock);
		pthread_mutex_lock(&m->rp_lock);
		bool shut = m->rp_shut;
		pthread_mutex_unlock(&m->rp_lock);
		/* A silent or broken return path must stop the sender too. */
		if (phase && !shut)
			ferry__chan_shutdown(c);
		if (!phase && ferry__mig_cancelled(m))
			await_bye(m);
	} else if (ferry__mig_cancelled(m)) {
		await_bye(m);
	}
	pthread_mutex_lock(&m->rp_lock);
	m->rp_dead = true;
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
	if (m->pc_src) {
		pthread_mutex_lock(&m->pc_src->lock);
		pthread_cond_broadcast(&m->pc_src->cond);
		pthread_mutex_unlock(&m->pc_src->lock);
	}
	return NULL;
}

/* Waits for SHUT. Returns 0 (and the destination's status) or an error. */
static int wait_shut(struct ferry_migration *m, int *status)
{
	pthread_mutex_lock(&m->rp_lock);
	while (!m->rp_shut && !m->rp_dead && !ferry__mig_cancelled(m))
		pthread_cond_wait(&m->rp_cond, &m->rp_lock);
	int r = 0;
	if (m->rp_shut)
		*status = m->rp_status;
	else if (ferry__mig_cancelled(m))
		r = -ECANCELED;
	else
		r = m->chan.in_err ? m->chan.in_err : -EPIPE;
	pthread_mutex_unlock(&m->rp_lock);
	return r;
}

static int save_devices(struct ferry_migration *m, ferry_chan *c)
{
	ferry_vm_t *vm = m->vm;
	for (unsigned i = 0; i < vm->ndevices; i++) {
		struct ferry_device *d = &vm->devices[i];
		int64_t n = ferry_vmsd_encode(d->vmsd, d->opaque, NULL, 0);
		if (n < 0) {
			ferry__mig_set_error(m, (int)n, "cannot save device '%s' instance %u: %s",
					     d->id, d->instance, ferry_strerror((int)n));
			return (int)n;
		}
		if ((uint64_t)n > FERRY_DEVICE_STATE_MAX) {
			ferry__mig_set_error(m, -E2BIG, "device '%s' state is %lld bytes (max %u)",
					     d->id, (long long)n, FERRY_DEVICE_STATE_MAX);
			return -E2BIG;
		}
		uint8_t *buf = malloc((size_t)n ? (size_t)n : 1);
		if (!buf)
			return -ENOMEM;
		int64_t k = ferry_vmsd_encode(d->vmsd, d->opaque, buf, (size_t)n);
		if (k != n) {
			free(buf);
			ferry__mig_set_error(m, -EIO, "device '%s' state changed size while saved",
					     d->id);
			return -EIO;
		}
		uint32_t id = FERRY_SECTION_RAM + 1 + i;
		ferry__wire_put_section_start(c, FERRY_REC_SECTION_FULL, id, d->id, d->instance,
					      d->vmsd->version);
		ferry__wire_put_device_state(c, buf, (uint32_t)n);
		ferry__wire_put_footer(c, id);
		free(buf);
	}
	return 0;
}

/* ---- postcopy (source) ---- */

/* Connects the preempt channel to uri and sends its handshake. */
static int pc_connect_preempt(struct ferry_migration *m, const char *uri)
{
	ferry_pc_src *pc = m->pc_src;
	char err[256];
	int fd, r = ferry__sock_connect(uri, &fd, &m->cancel, err, sizeof(err));
	if (r) {
		ferry_warn("postcopy preempt channel: %s", err);
		return r;
	}
	uint8_t hs[FERRY_PC_HS_LEN];
	ferry__wire_pc_hs_encode(hs, m->vm->uuid);
	struct iovec iov = {hs, sizeof(hs)};
	if ((r = ferry__sock_send_all(fd, &iov, 1, NULL)) || (r = ferry__chan_init(&pc->pre, fd))) {
		close(fd);
		return r;
	}
	atomic_store(&m->preempt_fd, fd);
	pthread_mutex_lock(&pc->lock);
	pc->pre_up = true;
	pthread_mutex_unlock(&pc->lock);
	return 0;
}

/*
 * Drops both connections (main and preempt) and joins the return path
 * thread, which is the preempt channel's only writer.
 */
static void pc_disconnect(struct ferry_migration *m)
{
	ferry_pc_src *pc = m->pc_src;
	atomic_store(&m->chan_fd, -1);
	atomic_store(&m->preempt_fd, -1);
	if (m->chan.fd >= 0)
		ferry__chan_shutdown(&m->chan);
	pthread_mutex_lock(&pc->lock);
	bool pre = pc->pre_up || pc->pre.fd >= 0;
	pc->pre_up = false;
	bool phase = pc->phase;
	pthread_mutex_unlock(&pc->lock);
	if (phase) /* counted once: the channels are reset below */
		pc->closed_bytes += m->chan.out_bytes + pc->pre.out_bytes;
	if (pre && pc->pre.ibuf)
		ferry__chan_shutdown(&pc->pre);
	if (m->rp_started)
		pthread_join(m->rp_thread, NULL);
	m->rp_started = false;
	if (m->chan.fd >= 0 || m->chan.ibuf)
		ferry__chan_close(&m->chan);
	m->chan.fd = -1;
	m->chan.out_bytes = 0;
	if (pc->pre.fd >= 0 || pc->pre.ibuf)
		ferry__chan_close(&pc->pre);
	pc->pre.fd = -1;
	pc->pre.out_bytes = 0;
}

static int start_rp(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->rp_lock);
	m->rp_shut = m->rp_dead = false;
	pthread_mutex_unlock(&m->rp_lock);
	int r = -pthread_create(&m->rp_thread, NULL, rp_thread, m);
	m->rp_started = !r;
	return r;
}

/* Link supervision for the postcopy phase (both connections). */
static void pc_set_timeouts(struct ferry_migration *m)
{
	ferry_mig_params p;
	ferry__mig_params(m, &p);
	int fd = atomic_load(&m->chan_fd);
	if (fd >= 0)
		ferry__sock_set_link_timeout(fd, p.link_timeout_ms);
	fd = atomic_load(&m->preempt_fd);
	if (fd >= 0)
		ferry__sock_set_link_timeout(fd, p.link_timeout_ms);
}

/* Reconnects to uri after a pause. 0 once the destination said what it misses. */
static int pc_reconnect(struct ferry_migration *m, const char *uri, ferry_ram_saver *rs)
{
	ferry_vm_t *vm = m->vm;
	ferry_pc_src *pc = m->pc_src;
	ferry_chan *c = &m->chan;
	char err[256];
	int fd, r = ferry__sock_connect(uri, &fd, &m->cancel, err, sizeof(err));
	if (r) {
		ferry_warn("postcopy resume: %s", err);
		return r;
	}
	if ((r = ferry__chan_init(c, fd))) {
		close(fd);
		return r;
	}
	c->peer = "destination";
	atomic_store(&m->chan_fd, fd);
	/* Everything is sent again unless the destination says it has it. */
	pthread_mutex_lock(&pc->lock);
	for (unsigned i = 0; i < vm->nblocks; i++)
		ferry__bitmap_zero(vm->blocks[i]->dirty, vm->blocks[i]->npages);
	pc->missing_end = false;
	pc->qlen = 0;
	pthread_mutex_unlock(&pc->lock);
	if ((r = start_rp(m)))
		goto fail;
	ferry__wire_put_header(c, vm->uuid);
	ferry__wire_put_cmd(c, FERRY_CMD_POSTCOPY_RESUME, NULL, 0);
	if ((r = ferry__chan_flush(c)))
		goto fail;
	if (pc->preempt && (r = pc_connect_preempt(m, uri)))
		goto fail;
	pc_set_timeouts(m);
	ferry_mig_params p;
	ferry__mig_params(m, &p);
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += p.link_timeout_ms / 1000 + 1;
	pthread_mutex_lock(&pc->lock);
	while (!pc->missing_end && !r) {
		pthread_mutex_lock(&m->rp_lock);
		bool dead = m->rp_dead;
		pthread_mutex_unlock(&m->rp_lock);
		if (dead)
			r = c->in_err ? c->in_err : -EPIPE;
		else if (pthread_cond_timedwait(&pc->cond, &pc->lock, &dl) == ETIMEDOUT)
			r = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&pc->lock);
	if (r)
		goto fail;
	rs->last_block = NULL; /* a new stream names its first block */
	return 0;
fail:
	ferry_warn("postcopy resume failed: %s",
		   c->in_errmsg[0] ? c->in_errmsg : ferry_strerror(r));
	pc_disconnect(m);
	return r;
}

/*
 * The link broke in postcopy: neither side can go back. Waits, paused, for
 * ferry_migrate_resume() and reconnects; returns once the migration is
 * active again.
 */
static int pc_pause(struct ferry_migration *m, ferry_ram_saver *rs)
{
	ferry_vm_t *vm = m->vm;
	char why[256];
	snprintf(why, sizeof(why), "%s",
		 m->chan.in_errmsg[0] ? m->chan.in_errmsg
		 : m->chan.out_err == -EAGAIN ? "link silent: nothing could be sent within the link timeout"
					      : ferry_strerror(m->chan.out_err));
	pc_disconnect(m);
	ferry_warn("postcopy paused: %s", why);
	ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_PAUSED);
	for (;;) {
		char uri[512];
		pthread_mutex_lock(&vm->mig_lock);
		while (!m->resume_req && !ferry__mig_cancelled(m))
			pthread_cond_wait(&vm->mig_cond, &vm->mig_lock);
		snprintf(uri, sizeof(uri), "%s", m->resume_uri);
		m->resume_req = false;
		pthread_mutex_unlock(&vm->mig_lock);
		if (ferry__mig_cancelled(m)) /* the VM is being destroyed */
			return -ECANCELED;
		ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_RECOVER);
		if (pc_reconnect(m, uri, rs) == 0)
			break;
		ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_PAUSED);
	}
	pthread_mutex_lock(&m->stats_lock);
	m->info.postcopy_recoveries++;
	pthread_mutex_unlock(&m->stats_lock);
	ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_ACTIVE);
	return 0;
}

struct serve_ctx {
	struct ferry_migration *m;
	ferry_ram_saver *rs;
};

/* Without preempt: requested pages go first on the main channel. */
static int pc_serve(void *opaque)
{
	struct serve_ctx *x = opaque;
	ferry_pc_src *pc = x->m->pc_src;
	for (;;) {
		pthread_mutex_lock(&pc->lock);
		if (!pc->qlen) {
			pthread_mutex_unlock(&pc->lock);
			return 0;
		}
		const struct ferry_ram_block *rb = pc->q[pc->qhead].rb;
		uint64_t page = pc->q[pc->qhead].page;
		uint32_t n = pc->q[pc->qhead].n;
		pc->qhead = (pc->qhead + 1) % PC_QUEUE;
		pc->qlen--;
		ferry__bitmap_clear_range(rb->dirty, page, n);
		pthread_mutex_unlock(&pc->lock);
		int r = ferry__ram_send_pages(x->rs, rb, page, n);
		if (r)
			return r;
	}
}

/*
 * Before the stop, while the guest still runs: the pages dirtied during
 * the last pass will be sent again in postcopy, so the destination can drop
 * them now (DISCARD), which takes it ~2 us per run of pages. The PING/PONG
 * round trip waits until it has; the switch then discards only the pages
 * dirtied since (see pc_switch), keeping that work out of the downtime.
 */
static int discard_one(void *opaque, const uint8_t *msg, size_t len)
{
	ferry__wire_put_cmd(opaque, FERRY_CMD_POSTCOPY_DISCARD, msg, (uint16_t)len);
	return 0;
}

/* Queues the DISCARD bitmaps of the pages set in map (all of rb's). */
static int put_discard(ferry_chan *c, const struct ferry_ram_block *rb, const unsigned long *map)
{
	return ferry__wire_bitmap_each(rb->name, rb->npages, map, discard_one, c);
}

static int pc_prediscard(struct ferry_migration *m, ferry_ram_saver *rs)
{
	ferry_vm_t *vm = m->vm;
	ferry_pc_src *pc = m->pc_src;
	ferry_chan *c = &m->chan;
	unsigned long *delta[FERRY_MAX_RAM_BLOCKS] = { NULL };
	int r = 0;
	for (unsigned i = 0; i < vm->nblocks && !r; i++) {
		pc->prediscarded[i] = ferry__bitmap_new(vm->blocks[i]->npages);
		delta[i] = ferry__bitmap_new(vm->blocks[i]->npages);
		if (!pc->prediscarded[i] || !delta[i])
			r = -ENOMEM;
	}
	ferry_mig_params p;
	ferry__mig_params(m, &p);
	/*
	 * Rounds, like precopy passes: each discards what was dirtied during
	 * the previous one, until little is left for the stopped guest.
	 */
	for (uint32_t round = 1; !r && round <= PC_PREDISCARD_ROUNDS; round++) {
		uint64_t t0 = ferry__now_ns(), newbits = 0;
		if (round > 1 && (r = ferry__ram_sync(rs, NULL)))
			break;
		for (unsigned i = 0; i < vm->nblocks; i++) {
			struct ferry_ram_block *rb = vm->blocks[i];
			for (uint64_t w = 0; w < FERRY_BITMAP_LONGS(rb->npages); w++) {
				delta[i][w] = rb->dirty[w] & ~pc->prediscarded[i][w];
				newbits += (uint64_t)__builtin_popcountl(delta[i][w]);
			}
		}
		if (round > 1 && newbits <= PC_PREDISCARD_ENOUGH)
			break; /* few enough: the switch discards these */
		for (unsigned i = 0; i < vm->nblocks; i++) {
			struct ferry_ram_block *rb = vm->blocks[i];
			for (uint64_t w = 0; w < FERRY_BITMAP_LONGS(rb->npages); w++)
				pc->prediscarded[i][w] |= delta[i][w];
			if (!r)
				r = put_discard(c, rb, delta[i]);
		}
		const uint32_t token = 0x50434400u + round; /* "PCD" + round */
		ferry__wire_put_cmd_be32(c, FERRY_CMD_PING, token);
		if (!r)
			r = ferry__chan_flush(c);
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += p.link_timeout_ms / 1000 + 1;
		pthread_mutex_lock(&pc->lock);
		while (!r && pc->pong != token) {
			pthread_mutex_lock(&m->rp_lock);
			bool dead = m->rp_dead || m->rp_shut;
			pthread_mutex_unlock(&m->rp_lock);
			if (ferry__mig_cancelled(m))
				r = -ECANCELED;
			else if (dead)
				r = m->chan.in_err ? m->chan.in_err : -EPIPE;
			else if (pthread_cond_timedwait(&pc->cond, &pc->lock, &dl) == ETIMEDOUT)
				r = -ETIMEDOUT;
		}
		pthread_mutex_unlock(&pc->lock);
		ferry_dbg("postcopy: pre-discard round %u: %llu pages, acknowledged in %.2f ms", round,
			  (unsigned long long)newbits, (double)(ferry__now_ns() - t0) / 1e6);
	}
	for (unsigned i = 0; i < vm->nblocks; i++)
		free(delta[i]);
	return r;
}

/*
 * The device state and RUN as one PACKAGE (see format.h): built in a memfd
 * through a channel of its own, then queued on c straight from its mapping.
 */
static int pc_package(struct ferry_migration *m, ferry_chan *c, bool running)
{
	int pfd = memfd_create("ferry-package", MFD_CLOEXEC), r;
	if (pfd < 0)
		return -errno;
	ferry_chan pk;
	if ((r = ferry__chan_init(&pk, pfd))) {
		close(pfd);
		return r;
	}
	uint8_t run = running;
	if (!(r = save_devices(m, &pk))) {
		ferry__wire_put_cmd_u8(&pk, FERRY_CMD_POSTCOPY_RUN, run);
		r = ferry__chan_flush(&pk);
	}
	uint64_t len = pk.out_bytes;
	if (!r && len > FERRY_PC_PACKAGE_MAX) {
		ferry__mig_set_error(m, -E2BIG, "device state of %llu bytes (max %u in postcopy)",
				     (unsigned long long)len, FERRY_PC_PACKAGE_MAX);
		r = -E2BIG;
	}
	void *map = MAP_FAILED;
	if (!r && (map = mmap(NULL, len, PROT_READ, MAP_SHARED, pfd, 0)) == MAP_FAILED)
		r = -errno;
	if (!r) {
		ferry__wire_put_cmd_be32(c, FERRY_CMD_POSTCOPY_PACKAGE, (uint32_t)len);
		ferry__chan_put_external(c, map, len);
		r = ferry__chan_flush(c); /* before the mapping goes */
		munmap(map, len);
	}
	ferry__chan_close(&pk);
	return r;
}

/*
 * The switch: with the vCPUs stopped, the final dirty bitmap goes out as
 * DISCARD bitmaps, then LISTEN, the device state and RUN. Returns 0 once
 * RUN is flushed: from then on the destination may run the guest.
 */
static int pc_switch(struct ferry_migration *m, ferry_ram_saver *rs, bool running)
{
	ferry_vm_t *vm = m->vm;
	ferry_chan *c = &m->chan;
	int r;
	uint64_t t0 = ferry__now_ns();
	if ((r = ferry__ram_sync(rs, NULL)))
		return r;
	ferry__ram_postcopy_hint_zeros(rs);
	ferry_dbg("postcopy switch: final sync %.2f ms", (double)(ferry__now_ns() - t0) / 1e6);
	ferry_pc_src *pc = m->pc_src;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		/* Only what was not discarded before the stop (pc_prediscard). */
		unsigned long *delta = rb->dirty;
		if (pc->prediscarded[i]) {
			delta = pc->prediscarded[i];
			for (uint64_t w = 0; w < FERRY_BITMAP_LONGS(rb->npages); w++)
				delta[w] = rb->dirty[w] & ~delta[w];
		}
		if ((r = put_discard(c, rb, delta)))
			return r;
	}
	ferry__wire_put_cmd(c, FERRY_CMD_POSTCOPY_LISTEN, NULL, 0);
	if ((r = pc_package(m, c, running)))
		return r;
	r = ferry__chan_flush(c);
	ferry_dbg("postcopy switch: sent in %.2f ms", (double)(ferry__now_ns() - t0) / 1e6);
	return r;
}

/*
 * After the switch: the background stream, requests, pauses and
 * recoveries until the destination has every page. Returns 0 (completed)
 * or the destination's failure.
 */
static int pc_run(struct ferry_migration *m, ferry_ram_saver *rs)
{
	struct serve_ctx x = {m, rs};
	ferry_chan *c = &m->chan;
	for (;;) {
		int r = ferry__ram_postcopy_pass(rs, &m->pc_src->lock, pc_serve, &x);
		if (!r) {
			ferry__wire_put_record(c, FERRY_REC_EOF);
			r = ferry__chan_flush(c);
		}
		int status = 0;
		if (!r)
			r = wait_shut(m, &status);
		if (!r && status) {
			ferry__mig_set_error(m, status, "destination failed in postcopy: %s", m->rp_msg);
			return FERRY_EPEER;
		}
		if (!r)
			return 0;
		if (ferry__mig_cancelled(m) || pc_pause(m, rs))
			return -ECANCELED;
	}
}

/* Auto-converge: applies a new vCPU throttle percentage and shows it. */
static void throttle_apply(struct ferry_migration *m, ferry_throttle *t, unsigned pct)
{
	ferry_vm_t *vm = m->vm;
	int r = vm->vcpu_ops.set_throttle(vm->vcpu_opaque, (int)pct);
	if (r)
		ferry_warn("auto-converge: cannot throttle the vCPUs to %u%%: %s", pct,
			   ferry_strerror(r));
	else if (pct)
		ferry_info("auto-converge: vCPUs throttled to %u%%", pct);
	t->pct = pct;
	pthread_mutex_lock(&m->stats_lock);
	m->info.cpu_throttle_percentage = pct;
	if (pct > m->info.cpu_throttle_peak) {
		m->info.cpu_throttle_peak = pct;
		m->info.cpu_throttle_raises++;
	}
	pthread_mutex_unlock(&m->stats_lock);
}

/* The migration ends (any outcome): the guest runs at full speed again. */
static void throttle_end(struct ferry_migration *m, ferry_throttle *t)
{
	if (t->pct)
		throttle_apply(m, t, 0);
}

/*
 * A cancelled precopy tells the destination (best effort): every cancel
 * check of the sender sits between records, so what is queued ends at a
 * record boundary and the notice can follow. Then the return path thread
 * may let the connections go.
 */
static void say_cancelled(struct ferry_migration *m, ferry_ram_saver *rs, bool stream_open)
{
	ferry_chan *c = &m->chan;
	if (stream_open && c->fd >= 0 && c->obuf && !c->out_err) {
		ferry__ram_put_cancelled(rs);
		if (!ferry__chan_flush(c))
			ferry_info("cancel: the destination was told");
	}
	rp_bye(m);
}

/* After a failure: gives the return path up to 1 s to end (the peer may say why). */
static void rp_settle(struct ferry_migration *m)
{
	if (!m->rp_started)
		return;
	pthread_mutex_lock(&m->rp_lock);
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += 1;
	while (!m->rp_shut && !m->rp_dead)
		if (pthread_cond_timedwait(&m->rp_cond, &m->rp_lock, &dl))
			break;
	pthread_mutex_unlock(&m->rp_lock);
}

static void update_info(struct ferry_migration *m, ferry_ram_saver *rs, uint32_t pass,
			uint64_t dirty_rate, uint64_t bw, bool stalled)
{
	pthread_mutex_lock(&m->stats_lock);
	m->info.pass = pass;
	m->info.dirty_sync_count = pass;
	m->info.dirty_pages_rate = dirty_rate;
	m->info.stalled = stalled;
	if (bw) {
		/* mbps itself is the last 100 ms window (ram.c). */
		m->info.expected_downtime_ms = rs->dirty_pages * FERRY_PAGE_SIZE * 1000 / bw;
		m->info.pages_per_second = bw / FERRY_PAGE_SIZE;
	}
	pthread_mutex_unlock(&m->stats_lock);
}

void *ferry__source_thread(void *arg)
{
	struct ferry_migration *m = arg;
	ferry_vm_t *vm = m->vm;
	ferry_chan *c = &m->chan;
	ferry_ram_saver rs = { .m = m, .vm = vm, .c = c };
	bool stopped_by_us = false, committed = false;
	bool stream_open = false; /* the header is out, EOF is not: a cancel notice may follow */
	ferry_mf_sender mf = { .inited = false };
	ferry_mf_job *mf_job = NULL;
	ferry_throttle thr = { .pct = 0 };
	char err[256];
	int fd = -1, r;

	pthread_setname_np(pthread_self(), "mig/src/main");

	r = ferry__sock_connect(m->uri, &fd, &m->cancel, err, sizeof(err));
	if (r) {
		if (r != -ECANCELED)
			ferry__mig_set_error(m, r, "%s", err);
		goto out;
	}
	r = ferry__chan_init(c, fd);
	if (r) {
		close(fd);
		fd = -1;
		goto out;
	}
	atomic_store(&m->chan_fd, fd);
	c->rl = &m->rl; /* every byte of the main connection counts against max-bandwidth */
	c->peer = "destination";
	if (ferry__mig_cancelled(m)) { /* a cancel that raced with connect */
		r = -ECANCELED;
		goto out;
	}
	ferry_mig_params p0;
	ferry__mig_params(m, &p0);
	if (p0.postcopy) {
		/* Before the return path thread starts: it reads m->pc_src. */
		ferry_pc_src *pc = calloc(1, sizeof(*pc));
		if (!pc) {
			r = -ENOMEM;
			goto out;
		}
		pthread_mutex_init(&pc->lock, NULL);
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_REALTIME);
		pthread_cond_init(&pc->cond, &ca);
		pthread_condattr_destroy(&ca);
		pc->pre.fd = -1;
		pc->preempt = p0.postcopy_preempt;
		m->pc_src = pc;
	}
	if ((r = start_rp(m)))
		goto out;

	/* Header. */
	ferry__wire_put_header(c, vm->uuid);
	stream_open = true;

	/*
	 * Multifd and postcopy settings are fixed for the whole migration
	 * (later migrate-set-parameters calls change only the live ones).
	 */
	if (p0.multifd) {
		ferry__wire_put_cmd_multifd(c, p0.multifd_channels, (uint8_t)p0.multifd_compression);
		if ((r = ferry__chan_flush(c)))
			goto out;
		mf_job = calloc(1, sizeof(*mf_job));
		if (!mf_job) {
			r = -ENOMEM;
			goto out;
		}
		r = ferry__mf_send_start(&mf, m, p0.multifd_channels, p0.multifd_compression,
					 p0.multifd_zstd_level, p0.send_splice);
		if (r) {
			if (!ferry__mig_cancelled(m))
				ferry__mig_set_error(m, r, "%s", mf.errmsg[0] ? mf.errmsg : ferry_strerror(r));
			goto out;
		}
		/* Published only now: cancel may shut the channels down from here on. */
		pthread_mutex_lock(&vm->mig_lock);
		m->mf_send = &mf;
		pthread_mutex_unlock(&vm->mig_lock);
		if (ferry__mig_cancelled(m)) {
			r = -ECANCELED;
			goto out;
		}
		rs.mf = &mf;
		rs.job = mf_job;
	}

	if (p0.postcopy) {
		ferry__wire_put_cmd_be32(c, FERRY_CMD_POSTCOPY_ADVISE,
					 p0.postcopy_preempt ? FERRY_PC_PREEMPT : 0);
		if ((r = ferry__chan_flush(c)))
			goto out;
		if (p0.postcopy_preempt && (r = pc_connect_preempt(m, m->uri))) {
			ferry__mig_set_error(m, r, "cannot open the postcopy preempt channel: %s",
					     ferry_strerror(r));
			goto out;
		}
	}
	if (p0.postcopy)
		rs.pc_start = &m->pc_start;
	ferry__ram_hints_setup(&rs, &p0);
	if ((r = ferry__ram_save_setup(&rs)))
		goto out;
	pthread_mutex_lock(&m->stats_lock);
	m->info.setup_time_ms = (ferry__now_ns() - m->start_ns) / 1000000;
	pthread_mutex_unlock(&m->stats_lock);
	ferry__mig_set_status(m, FERRY_MIG_ACTIVE);

	uint32_t pass = 0;
	bool stalled = false, postcopy = false;
	uint64_t last_sync = ferry__now_ns();
	ferry__throttle_init(&thr, last_sync, rs.sent_bytes);
	for (;;) {
		pass++;
		ferry__mig_event(m, FERRY_EVENT_PASS, pass);
		update_info(m, &rs, pass, m->info.dirty_pages_rate, 0, stalled);
		ferry__ram_hints_begin(&rs); /* a new command id, after the last sync */
		r = ferry__ram_save_pass(&rs, FERRY_REC_SECTION_PART);
		ferry__ram_hints_end(&rs); /* before the sync: that id's hints expire */
		if (r)
			goto out;
		uint64_t newly;
		if ((r = ferry__ram_sync(&rs, &newly)))
			goto out;
		uint64_t now = ferry__now_ns();
		uint64_t rate = newly * 1000000000ull / (now - last_sync ? now - last_sync : 1);
		last_sync = now;
		/* Bandwidth over all passes so far (bytes/s), including rate-limit naps. */
		uint64_t bw = rs.send_ns ? (uint64_t)((double)rs.sent_bytes * 1e9 / (double)rs.send_ns) : 0;
		uint64_t remaining = rs.dirty_pages * FERRY_PAGE_SIZE;
		ferry_mig_params params;
		ferry__mig_params(m, &params);
		/* A cap lowered since (migrate-set-parameters) is what the rest goes at. */
		if (params.max_bandwidth && bw > params.max_bandwidth)
			bw = params.max_bandwidth;
		double threshold = (double)bw * (double)params.downtime_limit_ms / 1000.0;
		if (!stalled && params.max_passes && pass >= params.max_passes &&
		    (double)remaining > threshold) {
			stalled = true;
			ferry_warn("migration does not converge after %u passes: %llu bytes dirty, "
				   "%.0f can be sent within the downtime limit; still trying",
				   pass, (unsigned long long)remaining, threshold);
		}
		update_info(m, &rs, pass, rate, bw, stalled);
		/* A requested switch wins over convergence (as QEMU's). */
		if (p0.postcopy && (atomic_load(&m->pc_start) || (params.postcopy_after_passes &&
								   pass >= params.postcopy_after_passes))) {
			postcopy = true;
			break;
		}
		if ((double)remaining <= threshold)
			break;
		if (p0.auto_converge) {
			int pct = ferry__throttle_sync(&thr, &params, now, newly * FERRY_PAGE_SIZE,
						       rs.sent_bytes);
			if (pct >= 0)
				throttle_apply(m, &thr, (unsigned)pct);
		}
	}

	if (postcopy && (r = pc_prediscard(m, &rs)))
		goto out;

	/* Switchover. */
	pthread_mutex_lock(&vm->run_lock);
	uint64_t stop_ns = ferry__now_ns();
	ferry_dbg("switchover: stopping vCPUs");
	if (vm->running) {
		r = vm->vcpu_ops.stop ? vm->vcpu_ops.stop(vm->vcpu_opaque) : 0;
		if (r) {
			pthread_mutex_unlock(&vm->run_lock);
			ferry__mig_set_error(m, r, "cannot stop vCPUs: %s", ferry_strerror(r));
			goto out;
		}
		vm->running = false;
		stopped_by_us = true;
	}
	/* From here on the run state is ours: ferry_vm_start() says -EBUSY. */
	vm->run_owned = true;
	pthread_mutex_unlock(&vm->run_lock);
	if (stopped_by_us)
		ferry__mig_event(m, FERRY_EVENT_STOP, 0);
	ferry__mig_set_status(m, FERRY_MIG_DEVICE);
	ferry__wire_put_cmd(c, FERRY_CMD_SWITCHOVER, NULL, 0);
	if (postcopy) {
		/* Pages now go on the main (and preempt) channel only, unlimited (as QEMU's). */
		rs.mf = NULL;
		ferry__rl_set_off(&m->rl, true);
		stream_open = false; /* no cancel from here on */
		if ((r = pc_switch(m, &rs, stopped_by_us)))
			goto out;
		/* Point of no return: the destination may run the guest now. */
		committed = true;
		rs.postcopy = true;
		pthread_mutex_lock(&m->pc_src->lock);
		m->pc_src->phase = true;
		pthread_mutex_unlock(&m->pc_src->lock);
		pthread_mutex_lock(&m->stats_lock);
		m->info.postcopy = true;
		pthread_mutex_unlock(&m->stats_lock);
		pc_set_timeouts(m);
		ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_ACTIVE);
		uint64_t b0 = c->out_bytes + m->pc_src->pre.out_bytes;
		if ((r = pc_run(m, &rs)))
			goto out;
		pthread_mutex_lock(&m->pc_src->lock);
		uint64_t run_ns = m->pc_src->running_ns, reqs = m->pc_src->requests;
		pthread_mutex_unlock(&m->pc_src->lock);
		pthread_mutex_lock(&m->stats_lock);
		m->info.downtime_ms = run_ns > stop_ns ? (run_ns - stop_ns) / 1000000 : 0;
		m->info.postcopy_requests = reqs;
		/* Every connection after the switch, main and preempt, across recoveries. */
		m->info.postcopy_bytes = m->pc_src->closed_bytes + c->out_bytes +
					 m->pc_src->pre.out_bytes - b0;
		pthread_mutex_unlock(&m->stats_lock);
		goto completed;
	}
	if ((r = ferry__ram_sync(&rs, NULL)))
		goto out;
	update_info(m, &rs, pass + 1, m->info.dirty_pages_rate, 0, stalled);
	/* As QEMU: every dirty sync is a MIGRATION_PASS, the switchover one too. */
	ferry__mig_event(m, FERRY_EVENT_PASS, pass + 1);
	if ((r = ferry__ram_save_pass(&rs, FERRY_REC_SECTION_END)))
		goto out;
	if ((r = save_devices(m, c)))
		goto out;
	uint8_t running = stopped_by_us;
	ferry__wire_put_cmd_u8(c, FERRY_CMD_VM_STATE, running);
	ferry__wire_put_record(c, FERRY_REC_EOF);
	stream_open = false;
	if ((r = ferry__chan_flush(c)))
		goto out;
	int status = 0;
	if ((r = wait_shut(m, &status)))
		goto out;
	if (status) {
		r = FERRY_EPEER;
		ferry__mig_set_error(m, status, "destination failed: %s", m->rp_msg);
		goto out;
	}
	pthread_mutex_lock(&m->stats_lock);
	m->info.downtime_ms = (m->rp_shut_ns - stop_ns) / 1000000;
	pthread_mutex_unlock(&m->stats_lock);
completed:
	pthread_mutex_lock(&m->stats_lock);
	uint64_t total_ns = ferry__now_ns() - m->start_ns;
	uint64_t wire = c->out_bytes + (mf.inited ? m->info.multifd_bytes : 0);
	if (m->pc_src) /* connections closed by pauses, and the preempt channel */
		wire += m->pc_src->closed_bytes + m->pc_src->pre.out_bytes;
	m->info.transferred = wire;
	m->info.throughput_bps = (uint64_t)((double)wire * 1e9 / (double)total_ns);
	m->info.mbps = (double)m->info.throughput_bps * 8 / 1e6;
	m->info.remaining = 0;
	pthread_mutex_unlock(&m->stats_lock);
	throttle_end(m, &thr);
	ferry__vm_own_run(vm, false);
	ferry__mig_set_status(m, FERRY_MIG_COMPLETED);
	/* Housekeeping after completion: unprotecting RAM takes ~10 ms per GiB. */
	ferry__ram_save_cleanup(&rs);
	goto done;

out:
	if (ferry__mig_cancelled(m))
		say_cancelled(m, &rs, stream_open);
	ferry__ram_save_cleanup(&rs);
	if (r && !ferry__mig_cancelled(m)) {
		/* Sent to a monitor by mistake: say so rather than "Broken pipe". */
		rp_settle(m);
		pthread_mutex_lock(&m->rp_lock);
		bool qmp = m->rp_qmp;
		pthread_mutex_unlock(&m->rp_lock);
		if (qmp)
			ferry__mig_set_error(m, -EPROTO,
					     "the peer at '%s' is a QMP monitor, not a migration destination",
					     m->uri);
	}
	if (r && mf.inited && !ferry__mig_cancelled(m)) {
		/* A channel failure shuts the main connection down: prefer its message. */
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_nsec += 200000000L;
		dl.tv_sec += dl.tv_nsec / 1000000000L;
		dl.tv_nsec %= 1000000000L;
		pthread_mutex_lock(&mf.lock);
		while (!mf.err && pthread_cond_timedwait(&mf.cond, &mf.lock, &dl) == 0)
			;
		int merr = mf.err;
		pthread_mutex_unlock(&mf.lock);
		if (merr)
			ferry__mig_set_error(m, merr, "%s", mf.errmsg);
	}
	if (ferry__mig_cancelled(m)) {
		r = -ECANCELED;
	} else if (r && r != FERRY_EPEER) {
		/*
		 * An I/O error on the channel: the destination may have failed
		 * first and said why on the return path; give it a moment.
		 */
		if (m->rp_started) {
			rp_settle(m);
			pthread_mutex_lock(&m->rp_lock);
			bool shut = m->rp_shut && m->rp_status;
			pthread_mutex_unlock(&m->rp_lock);
			if (shut)
				ferry__mig_set_error(m, m->rp_status, "destination failed: %s",
						     m->rp_msg);
		}
		if (r == -EPIPE || r == -ECONNRESET)
			ferry__mig_set_error(m, r, "lost the connection to the destination: %s",
					     ferry_strerror(r));
		else
			ferry__mig_set_error(m, r, "%s", ferry_strerror(r));
	}
	throttle_end(m, &thr);
	ferry__vm_own_run(vm, false);
	if (committed) {
		/*
		 * The destination ran the guest: starting it here too would fork
		 * it. It stays stopped; the destination's copy is the guest.
		 */
		ferry_warn("postcopy failed after the switch: the source guest stays stopped");
	} else if (stopped_by_us) {
		/* Precopy failed: the source guest runs on as if nothing happened. */
		if (ferry_vm_start(vm) == 0)
			ferry__mig_event(m, FERRY_EVENT_RESUME, 0);
	}
	ferry__mig_set_status(m, r == -ECANCELED ? FERRY_MIG_CANCELLED : FERRY_MIG_FAILED);
done:
	pthread_mutex_lock(&vm->mig_lock);
	m->mf_send = NULL;
	pthread_mutex_unlock(&vm->mig_lock);
	ferry__mf_send_stop(&mf);
	free(mf_job);
	if (m->pc_src) {
		rp_bye(m);
		pc_disconnect(m);
		for (unsigned i = 0; i < vm->nblocks; i++)
			free(m->pc_src->prediscarded[i]);
		pthread_mutex_destroy(&m->pc_src->lock);
		pthread_cond_destroy(&m->pc_src->cond);
		free(m->pc_src);
		m->pc_src = NULL;
	} else if (fd >= 0) {
		atomic_store(&m->chan_fd, -1);
		ferry__chan_shutdown(c);
		rp_bye(m); /* a cancel that came after the end: the rp thread need not wait */
		if (m->rp_started)
			pthread_join(m->rp_thread, NULL);
		ferry__chan_close(c);
	}
	ferry__mig_thread_done(m);
	return NULL;
}
