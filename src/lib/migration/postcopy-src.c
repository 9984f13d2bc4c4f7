/* SPDX-License-Identifier: MIT */
/*
 * The postcopy source: everything the source does differently when the
 * postcopy capability is on.
 *
 * DESIGN: negotiation sends POSTCOPY_ADVISE (and opens the preempt channel
 * with postcopy-preempt). Precopy passes run as usual until a switch is
 * wanted (migrate-start-postcopy, or postcopy-after-passes); then, while
 * the guest still runs, pre-discard rounds tell the destination to drop
 * the pages that will be sent again (DISCARD, acknowledged by PING/PONG).
 * After the stop, the switch sends the last DISCARD bitmaps, LISTEN and
 * one PACKAGE holding the device state and RUN: from then on the
 * destination may run the guest (x->committed) and neither side can go
 * back. The background pass then streams every page still dirty while the
 * destination's page requests come first: with preempt, they come on the
 * preempt connection (FERRY_PC_PREEMPT_REQS) and mig/src/preq answers each
 * on it at once (one that comes on the return path, mig/src/rp sends the
 * same way); otherwise mig/src/rp queues them (PC_QUEUE) for mig/src/main,
 * which sends them between runs of the background. Requests keep off the
 * main connection with preempt because mig/src/main holds its socket while
 * it sends the background: a request that arrives then waits for the
 * whole send (measured: 3-7% of them, up to ~0.6 ms).
 * A broken link pauses the migration (POSTCOPY_PAUSED) until
 * ferry_migration_resume(); the reconnect asks the destination which pages
 * it still misses (MISSING bitmaps) and starts the background again.
 *
 * Thread: mig/src/main runs the ferry__pc_src_* phase functions; mig/src/rp
 * runs rp_request/rp_missing and the ferry__pc_src_rp_* hooks, mig/src/preq
 * rp_request. They share ferry_pc_src under its lock, which also protects
 * the RAM dirty bitmaps once in postcopy (every thread clears bits of the
 * pages it sends); the preempt channel's writes take pre_lock.
 */
#include "migration/postcopy-src.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migration/live-stats.h"
#include "migration/postcopy.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "transport/transport.h"

/*
 * Postcopy state of the source (m->pc_src). The return path thread serves
 * page requests: with preempt it sends them itself on the preempt channel,
 * otherwise it queues them for the main thread.
 */
#define PC_QUEUE 4096
/* Pre-discard rounds before the stop, and what is little enough to stop. */
#define PC_PREDISCARD_ROUNDS 6
#define PC_PREDISCARD_ENOUGH 2048
/*
 * Flow control without preempt: a PING every PC_FC_BYTES of the main
 * channel; the background waits while more than PC_FC_AHEAD are
 * unanswered, so at most ~(PC_FC_AHEAD + 1) * PC_FC_BYTES are ahead of a
 * requested page, wherever they are queued (see pc_serve). Tokens: "F" and
 * a 24-bit sequence number.
 */
#define PC_FC_BYTES (128u << 10)
#define PC_FC_AHEAD 3u
#define PC_FC_TOKEN 0x46000000u
#define PC_FC_SEQ 0xffffffu
typedef struct ferry_pc_src {
	pthread_mutex_t lock; /* the dirty bitmaps once in postcopy; all below */
	pthread_cond_t cond;
	struct { const struct ferry_ram_block *rb; uint64_t page; uint32_t n; } q[PC_QUEUE];
	unsigned qhead, qlen;
	bool preempt;
	ferry_chan pre;       /* written under pre_lock once pre_up; read by mig/src/preq */
	pthread_mutex_t pre_lock; /* pre's output: mig/src/preq, mig/src/rp */
	ferry_page_sink pre_sink; /* the preempt writer: requested pages on pre */
	pthread_t preq_thread; /* mig/src/preq: requests on pre (FERRY_PC_PREEMPT_REQS) */
	bool preq_started;    /* main thread only */
	bool pre_up;
	bool missing_end;     /* recovery: the destination's bitmaps are in */
	uint64_t running_ns;  /* RP RUNNING: the destination's vCPUs run */
	bool phase;           /* past the switch: a dead return path pauses */
	uint64_t requests, dropped;
	uint32_t pong;        /* last PONG value seen */
	uint32_t fc_sent, fc_acked; /* flow-control PINGs sent, answered (sequence numbers) */
	uint64_t fc_at;       /* main thread: channel bytes at the last flow-control PING */
	uint64_t closed_bytes; /* main thread: bytes of connections closed after the switch */
	/* Pages discarded on the destination before the stop (main thread only). */
	unsigned long *prediscarded[FERRY_MAX_RAM_BLOCKS];
} ferry_pc_src;

/*
 * The preempt channel's page sink (mig/src/rp): each requested run goes
 * out at once as one PAGES record naming its block.
 */
static int pre_put(ferry_page_sink *s, const struct ferry_ram_block *rb, uint64_t kind,
		   uint64_t first, uint32_t n, const uint64_t *sums)
{
	ferry_pc_src *pc = ferry_container_of(s, ferry_pc_src, pre_sink);
	ferry__wire_put_ram_run(&pc->pre, kind, rb->name, false, first, n,
				rb->host + (first << FERRY_PAGE_SHIFT), sums);
	return ferry__chan_flush(&pc->pre);
}

static const ferry_page_sink_ops pre_sink_ops = {
	.put = pre_put,
};

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
		pthread_mutex_lock(&pc->pre_lock);
		r = pc->pre_sink.ops->put(&pc->pre_sink, rb, FERRY_RAM_PAGES, first, n, NULL);
		pthread_mutex_unlock(&pc->pre_lock);
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
		pthread_cond_broadcast(&pc->cond); /* mig/src/main may wait in pc_serve */
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

/*
 * Reads and handles one message of the preempt connection's input: a page
 * request or a heartbeat, framed as on the return path. 0 to read on.
 */
static int preq_message(struct ferry_migration *m, ferry_chan *c, uint8_t *buf, size_t cap)
{
	uint16_t type, len;
	bool summed;
	ferry__chan_ctx(c, "page request");
	int r = ferry__wire_get_rp(c, &type, &len);
	if (r)
		return r;
	if (len > cap)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "preempt channel message of %u bytes",
					len);
	if ((r = ferry__chan_read(c, buf, len)) ||
	    (r = ferry__wire_get_rp_sum(c, type, len, buf, &type, &summed)))
		return r;
	if (c->sums && !summed)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"preempt channel message %u without its checksum", type);
	if (type != FERRY_RP_REQ_PAGES && type != FERRY_RP_HEARTBEAT)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"return path message %u on the preempt channel", type);
	return ferry__pc_src_rp_msg(m, c, type, buf, len);
}

/*
 * mig/src/preq: the destination's page requests on the preempt connection
 * (FERRY_PC_PREEMPT_REQS), each answered there at once; it sleeps in the
 * socket read between them. Ends with the connection (pc_disconnect shuts
 * it down to stop it). After an error it shuts the connection down, so
 * that the destination's preempt reader notices and both sides pause
 * rather than its requests going unread.
 */
static void *preq_thread(void *arg)
{
	struct ferry_migration *m = arg;
	ferry_pc_src *pc = m->pc_src;
	pthread_setname_np(pthread_self(), "mig/src/preq");
	ferry__pc_boost_thread(m);
	uint8_t buf[FERRY_RP_REQ_MAX];
	int r;
	while (!(r = preq_message(m, &pc->pre, buf, sizeof(buf))))
		;
	if (r != -EPIPE && pc->pre.in_err.msg[0]) {
		char why[300];
		snprintf(why, sizeof(why), "postcopy preempt channel: %s", pc->pre.in_err.msg);
		ferry_warn("%s", why);
		if (pc->pre.in_err.code == FERRY_EBADSTREAM) /* a bad request: the pause says so */
			ferry__mig_cut(m, why);
	}
	ferry__chan_shutdown(&pc->pre);
	ferry__log_thread_cpu();
	return NULL;
}

/* A new connection's sends go through a staging buffer when the migration's do. */
static int pc_chan_stage(struct ferry_migration *m, ferry_chan *c)
{
	return m->stage_sends ? ferry__chan_stage(c) : 0;
}

/* Connects the preempt channel to uri and sends its handshake. */
static int pc_connect_preempt(struct ferry_migration *m, const char *uri)
{
	ferry_pc_src *pc = m->pc_src;
	ferry_error err = { 0 };
	int fd, r = ferry__sock_connect(uri, &fd, &m->cancel, &err);
	if (r) {
		ferry_warn("postcopy preempt channel: %s", err.msg);
		return r;
	}
	if ((r = ferry__chan_init(&pc->pre, fd))) {
		close(fd);
		return r;
	}
	if ((r = pc_chan_stage(m, &pc->pre))) {
		ferry__chan_close(&pc->pre);
		return r;
	}
	pc->pre.peer = "destination";
	uint8_t hs[FERRY_PC_HS_LEN];
	ferry__wire_pc_hs_encode(hs, m->vm->uuid);
	struct iovec iov = {hs, sizeof(hs)};
	if ((r = ferry__chan_tls_open(&pc->pre, &m->tls, &err)))
		ferry_warn("postcopy preempt channel: %s", err.msg);
	if (!r)
		r = pc->pre.tls ? ferry__tls_send_all(pc->pre.tls, &iov, 1, NULL)
				: ferry__sock_send_all(fd, &iov, 1, NULL);
	if (r) {
		ferry__chan_close(&pc->pre);
		return r;
	}
	if (m->sums_on)
		ferry__sums_attach(&pc->pre, &m->sums, FERRY_SUM_PREEMPT);
	atomic_store(&m->preempt_fd, fd);
	pthread_mutex_lock(&pc->lock);
	pc->pre_up = true;
	pthread_mutex_unlock(&pc->lock);
	/* On failure the caller's pc_disconnect closes the connection. */
	if ((r = -pthread_create(&pc->preq_thread, NULL, preq_thread, m)))
		return r;
	pc->preq_started = true;
	return 0;
}

/*
 * Drops both connections (main and preempt) and joins the threads that
 * read them (mig/src/rp, mig/src/preq), the preempt channel's writers.
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
	if (pc->preq_started)
		pthread_join(pc->preq_thread, NULL);
	pc->preq_started = false;
	if (m->chan.fd >= 0 || m->chan.ibuf)
		ferry__chan_close(&m->chan);
	m->chan.fd = -1;
	m->chan.out_bytes = 0;
	if (pc->pre.fd >= 0 || pc->pre.ibuf)
		ferry__chan_close(&pc->pre);
	pc->pre.fd = -1;
	pc->pre.out_bytes = 0;
}

/* Link supervision for the postcopy phase (both connections). */
static void pc_set_timeouts(struct ferry_migration *m)
{
	uint32_t link_ms = ferry__mig_link_timeout_ms(m);
	int fd = atomic_load(&m->chan_fd);
	if (fd >= 0)
		ferry__sock_set_link_timeout(fd, link_ms);
	fd = atomic_load(&m->preempt_fd);
	if (fd >= 0)
		ferry__sock_set_link_timeout(fd, link_ms);
}

/* Reconnects to uri after a pause. 0 once the destination said what it misses. */
/* A recovered connection starts afresh: everything is sent again unless the destination has it. */
static void pc_reset_for_resume(struct ferry_migration *m)
{
	ferry_vm_t *vm = m->vm;
	ferry_pc_src *pc = m->pc_src;
	pthread_mutex_lock(&pc->lock);
	for (unsigned i = 0; i < vm->nblocks; i++)
		ferry__bitmap_zero(vm->blocks[i]->dirty, vm->blocks[i]->npages);
	pc->missing_end = false;
	pc->qlen = 0;
	pc->fc_acked = pc->fc_sent; /* the old connection's PINGs are gone */
	pc->fc_at = 0;
	pthread_mutex_unlock(&pc->lock);
}

/*
 * Under TLS, the name the destination's certificate must carry on uri's
 * connections: tls-hostname, else uri's host, as for the migration's
 * first connection (the resume URI may name another address of the
 * destination). m->tls is mig/src/main's here: paused, the return path
 * thread is joined and no connection is open. 0 or -EINVAL.
 */
static int pc_resume_tls(struct ferry_migration *m, const char *uri)
{
	if (!m->tls.creds)
		return 0;
	ferry_migration_params p;
	ferry__mig_params(m, &p);
	ferry__tls_cfg_host(&m->tls, &p, uri);
	ferry_error err = { 0 };
	int r = ferry__tls_cfg_check(&m->tls, &p, false, &err);
	if (r)
		ferry__mig_pause_reason(m, "postcopy resume failed: %s", err.msg);
	return r;
}

/* Reconnects to uri (main connection, return path, preempt) and resyncs. 0 or a negative errno. */
static int pc_reconnect(struct ferry_migration *m, const char *uri, ferry_ram_saver *rs)
{
	ferry_vm_t *vm = m->vm;
	ferry_pc_src *pc = m->pc_src;
	ferry_chan *c = &m->chan;
	ferry_error err = { 0 };
	int fd, r = pc_resume_tls(m, uri);
	if (r)
		return r;
	r = ferry__sock_connect(uri, &fd, &m->cancel, &err);
	if (r) {
		ferry__mig_pause_reason(m, "postcopy resume failed: %s", err.msg);
		return r;
	}
	if ((r = ferry__chan_init(c, fd))) {
		close(fd);
		return r;
	}
	if ((r = pc_chan_stage(m, c))) {
		ferry__chan_close(c);
		return r;
	}
	c->peer = "destination";
	atomic_store(&m->chan_fd, fd);
	if ((r = ferry__chan_tls_open(c, &m->tls, &err))) {
		ferry__mig_pause_reason(m, "postcopy resume failed: %s", err.msg);
		atomic_store(&m->chan_fd, -1);
		ferry__chan_close(c);
		return r;
	}
	if (m->sums_on)
		ferry__sums_attach(c, &m->sums, FERRY_SUM_MAIN);
	pc_reset_for_resume(m);
	if ((r = ferry__src_rp_start(m)))
		goto fail;
	ferry__wire_put_header(c, vm->uuid);
	ferry__wire_put_cmd(c, FERRY_CMD_POSTCOPY_RESUME, NULL, 0);
	if ((r = ferry__chan_flush(c)))
		goto fail;
	if (pc->preempt && (r = pc_connect_preempt(m, uri)))
		goto fail;
	pc_set_timeouts(m);
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += ferry__mig_link_timeout_ms(m) / 1000 + 1;
	pthread_mutex_lock(&pc->lock);
	while (!pc->missing_end && !r) {
		pthread_mutex_lock(&m->rp_lock);
		bool dead = m->rp_dead;
		pthread_mutex_unlock(&m->rp_lock);
		if (dead)
			r = c->in_err.code ? c->in_err.code : -EPIPE;
		else if (pthread_cond_timedwait(&pc->cond, &pc->lock, &dl) == ETIMEDOUT)
			r = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&pc->lock);
	if (r)
		goto fail;
	rs->last_block = NULL; /* a new stream names its first block */
	return 0;
fail:
	ferry__mig_pause_reason(m, "postcopy resume failed: %s", ferry__error_text(&c->in_err, r));
	pc_disconnect(m);
	return r;
}

/*
 * The link broke in postcopy: neither side can go back. Waits, paused, for
 * ferry_migration_resume() and reconnects; returns once the migration is
 * active again.
 */
static int pc_pause(struct ferry_migration *m, ferry_ram_saver *rs)
{
	ferry_vm_t *vm = m->vm;
	char why[256];
	snprintf(why, sizeof(why), "%s",
		 m->chan.in_err.msg[0] ? m->chan.in_err.msg
		 : m->chan.out_err == -EAGAIN ? "link silent: nothing could be sent within the link timeout"
					      : ferry_strerror(m->chan.out_err));
	pc_disconnect(m);
	ferry__mig_paused(m, why);
	ferry__mig_set_status(m, FERRY_MIGRATION_POSTCOPY_PAUSED);
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
		ferry__mig_set_status(m, FERRY_MIGRATION_POSTCOPY_RECOVER);
		if (pc_reconnect(m, uri, rs) == 0)
			break;
		ferry__mig_set_status(m, FERRY_MIGRATION_POSTCOPY_PAUSED);
	}
	ferry__pc_recovered(m);
	return 0;
}

/*
 * Waits until done(pc, arg) (called under pc->lock, which the return path
 * thread broadcasts on), at most timeout_ms plus a second. 0, or
 * -ECANCELED, the return path's error, or -ETIMEDOUT. Thread: mig/src/main.
 */
static int pc_wait(struct ferry_migration *m, bool (*done)(const ferry_pc_src *pc, uint32_t arg),
		   uint32_t arg, uint32_t timeout_ms)
{
	ferry_pc_src *pc = m->pc_src;
	int r = 0;
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += timeout_ms / 1000 + 1;
	pthread_mutex_lock(&pc->lock);
	while (!r && !done(pc, arg)) {
		pthread_mutex_lock(&m->rp_lock);
		bool dead = m->rp_dead || m->rp_shut;
		pthread_mutex_unlock(&m->rp_lock);
		if (ferry__mig_cancelled(m))
			r = -ECANCELED;
		else if (dead)
			r = m->chan.in_err.code ? m->chan.in_err.code : -EPIPE;
		else if (pthread_cond_timedwait(&pc->cond, &pc->lock, &dl) == ETIMEDOUT)
			r = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&pc->lock);
	return r;
}

/* The PONG of token came: the destination applied everything before its PING. */
static bool pong_is(const ferry_pc_src *pc, uint32_t token)
{
	return pc->pong == token;
}

struct serve_ctx {
	struct ferry_migration *m;
	ferry_ram_saver *rs;
};

/* Without preempt: the queued requests go out, before the next background run. */
static int serve_queued(struct serve_ctx *x)
{
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

static void put_fc_ping(ferry_chan *c, void *opaque)
{
	ferry__wire_put_cmd_be32(c, FERRY_CMD_PING, *(uint32_t *)opaque);
}

/* The background may go on: few enough PINGs unanswered, or a request waits. */
static bool fc_open(const ferry_pc_src *pc, uint32_t ahead)
{
	return pc->qlen || ((pc->fc_sent - pc->fc_acked) & PC_FC_SEQ) <= ahead;
}

/*
 * Between background runs (mig/src/main). Without preempt a requested page
 * waits behind whatever is queued ahead of it, in our buffer, the kernel's
 * send queue and the destination's receive queue (its autotuned buffer
 * alone held tens of ms of background). Bounding the socket buffers drops
 * segments on loopback (200 ms retransmits), so the bound is our own: a
 * PING every PC_FC_BYTES, and no more background while more than
 * PC_FC_AHEAD are unanswered; a request wakes the wait and goes first.
 */
static int pc_serve(void *opaque)
{
	struct serve_ctx *x = opaque;
	ferry_pc_src *pc = x->m->pc_src;
	ferry_chan *c = &x->m->chan;
	int r;
	while (!(r = serve_queued(x)) && !pc->preempt) {
		uint64_t at = c->out_bytes + ferry__chan_pending(c);
		if (at - pc->fc_at >= PC_FC_BYTES) {
			pc->fc_at = at;
			pthread_mutex_lock(&pc->lock);
			uint32_t token = PC_FC_TOKEN | (++pc->fc_sent & PC_FC_SEQ);
			pthread_mutex_unlock(&pc->lock);
			ferry__ram_postcopy_break(x->rs, put_fc_ping, &token);
			if ((r = ferry__chan_flush(c)))
				return r;
		}
		pthread_mutex_lock(&pc->lock);
		bool open = fc_open(pc, PC_FC_AHEAD), queued = pc->qlen;
		pthread_mutex_unlock(&pc->lock);
		if (open && !queued)
			return 0;
		if (!open &&
		    (r = pc_wait(x->m, fc_open, PC_FC_AHEAD, ferry__mig_link_timeout_ms(x->m))))
			return r;
	}
	return r;
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

/* pc->prediscarded, and delta (one round's new bits), for every block. 0 or -ENOMEM. */
static int prediscard_maps(ferry_vm_t *vm, ferry_pc_src *pc, unsigned long **delta)
{
	int r = 0;
	for (unsigned i = 0; i < vm->nblocks && !r; i++) {
		pc->prediscarded[i] = ferry__bitmap_new(vm->blocks[i]->npages);
		delta[i] = ferry__bitmap_new(vm->blocks[i]->npages);
		if (!pc->prediscarded[i] || !delta[i])
			r = -ENOMEM;
	}
	return r;
}

/* delta = dirty pages not discarded yet, per block. Returns how many. */
static uint64_t prediscard_delta(ferry_vm_t *vm, ferry_pc_src *pc, unsigned long **delta)
{
	uint64_t newbits = 0;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		for (uint64_t w = 0; w < FERRY_BITMAP_LONGS(rb->npages); w++) {
			delta[i][w] = rb->dirty[w] & ~pc->prediscarded[i][w];
			newbits += (uint64_t)__builtin_popcountl(delta[i][w]);
		}
	}
	return newbits;
}

/* Marks delta discarded and queues its DISCARD bitmaps on c. 0 or the first error. */
static int prediscard_put(ferry_vm_t *vm, ferry_pc_src *pc, ferry_chan *c,
			  unsigned long **delta)
{
	int r = 0;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		for (uint64_t w = 0; w < FERRY_BITMAP_LONGS(rb->npages); w++)
			pc->prediscarded[i][w] |= delta[i][w];
		if (!r)
			r = put_discard(c, rb, delta[i]);
	}
	return r;
}

/*
 * Rounds, like precopy passes: each discards what was dirtied during the
 * previous one and waits for its PING's PONG, until little is left for
 * the stopped guest. Thread: mig/src/main.
 */
static int pc_prediscard(struct ferry_migration *m, ferry_ram_saver *rs)
{
	ferry_vm_t *vm = m->vm;
	ferry_pc_src *pc = m->pc_src;
	ferry_chan *c = &m->chan;
	unsigned long *delta[FERRY_MAX_RAM_BLOCKS] = { NULL };
	int r = prediscard_maps(vm, pc, delta);
	for (uint32_t round = 1; !r && round <= PC_PREDISCARD_ROUNDS; round++) {
		uint64_t t0 = ferry__now_ns();
		if (round > 1 && (r = ferry__ram_sync(rs, NULL)))
			break;
		uint64_t newbits = prediscard_delta(vm, pc, delta);
		if (round > 1 && newbits <= PC_PREDISCARD_ENOUGH)
			break; /* few enough: the switch discards these */
		r = prediscard_put(vm, pc, c, delta);
		const uint32_t token = 0x50434400u + round; /* "PCD" + round */
		ferry__wire_put_cmd_be32(c, FERRY_CMD_PING, token);
		if (!r)
			r = ferry__chan_flush(c);
		if (!r)
			r = pc_wait(m, pong_is, token, ferry__mig_link_timeout_ms(m));
		ferry_dbg("postcopy: pre-discard round %u: %llu pages, acknowledged in %.2f ms", round,
			  (unsigned long long)newbits, (double)(ferry__now_ns() - t0) / 1e6);
	}
	for (unsigned i = 0; i < vm->nblocks; i++)
		free(delta[i]);
	return r;
}

/*
 * The state that cannot come after the switch and is small (every
 * participant's but RAM's and the FERRY_PART_BEFORE_RUN ones': device
 * vmsds) and RUN as one PACKAGE (see format.h): built in a memfd through a
 * channel of its own, then queued on c straight from its mapping.
 */
static int pc_package(struct src_ctx *x, ferry_chan *c)
{
	struct ferry_migration *m = x->m;
	int pfd = memfd_create("ferry-package", MFD_CLOEXEC), r;
	if (pfd < 0)
		return -errno;
	ferry_chan pk;
	if ((r = ferry__chan_init(&pk, pfd))) {
		close(pfd);
		return r;
	}
	/* DIGEST's records: those before the package (the destination folds its records later). */
	ferry_wire_digest d = { atomic_load(&m->sums.records), atomic_load(&m->sums.digest) };
	if (m->sums_on)
		ferry__sums_attach(&pk, &m->sums, FERRY_SUM_PACKAGE);
	uint8_t run = x->stopped_by_us;
	if (!(r = ferry__parts_save_complete(&x->parts, &pk, FERRY_WALK_PACKAGE))) {
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
	if (!r && m->sums_on) {
		d.package = XXH3_64bits(map, len);
		ferry__wire_put_cmd_digest(c, d);
	}
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
 * DISCARD bitmaps; then the state that must be whole before the
 * destination runs and may be large (FERRY_PART_BEFORE_RUN participants:
 * live devices, their data on the multifd channels when those are on),
 * on the main channel while the multifd channels are still up; then
 * LISTEN, the package and RUN. Up to LISTEN a failure or a cancel is a
 * precopy one: the destination has not run, the source guest resumes.
 * Returns 0 once RUN is flushed: from then on the destination may run the
 * guest.
 */
static int pc_switch(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	ferry_vm_t *vm = m->vm;
	ferry_chan *c = &m->chan;
	int r;
	uint64_t t0 = ferry__now_ns();
	if ((r = ferry__parts_sync(&x->parts, NULL)))
		return r;
	ferry__ram_postcopy_hint_zeros(&x->rs);
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
	m->sw_ram_ns = ferry__now_ns(); /* the downtime split's RAM part (live-stats.c) */
	if ((r = ferry__parts_save_complete(&x->parts, c, FERRY_WALK_BEFORE_RUN)))
		return r;
	x->stream_open = false; /* no cancel notice from here on */
	ferry__wire_put_cmd(c, FERRY_CMD_POSTCOPY_LISTEN, NULL, 0);
	if ((r = pc_package(x, c)))
		return r;
	r = ferry__chan_flush(c);
	ferry_dbg("postcopy switch: sent in %.2f ms", (double)(ferry__now_ns() - t0) / 1e6);
	return r;
}

/*
 * After a failure or a failing SHUT: did the destination fail before its
 * guest could run? It sends RUNNING before its vCPUs may start, so a SHUT
 * with an error and no RUNNING before it means the source's guest is
 * still the only one: the migration fails like a precopy one, and the
 * source guest resumes. Waits for the return path's SHUT or end, at most
 * SHUT_WAIT_MS: a destination that failed sends SHUT and closes at once;
 * a silent link must go on to pause.
 */
#define SHUT_WAIT_MS 1000u
static bool dst_never_ran(struct ferry_migration *m)
{
	struct ferry_rp_shut shut = { .status = 0 };
	if (ferry__src_rp_wait_shut_ms(m, &shut, SHUT_WAIT_MS) || !shut.status)
		return false;
	pthread_mutex_lock(&m->pc_src->lock);
	bool ran = m->pc_src->running_ns != 0;
	pthread_mutex_unlock(&m->pc_src->lock);
	if (ran)
		return false;
	ferry__mig_set_error(m, shut.status, "destination failed before it ran the guest: %s",
			     shut.msg);
	return true;
}

/*
 * After the switch: the background stream, requests, pauses and
 * recoveries until the destination has every page. Returns 0 (completed),
 * the destination's failure, or FERRY_EPEER with *unrun set when the
 * destination failed before its guest could run.
 */
static int pc_run(struct ferry_migration *m, ferry_ram_saver *rs, bool *unrun)
{
	struct serve_ctx x = {m, rs};
	ferry_chan *c = &m->chan;
	for (;;) {
		int r = ferry__ram_postcopy_pass(rs, &m->pc_src->lock, pc_serve, &x);
		if (!r) {
			ferry__wire_put_record(c, FERRY_REC_EOF);
			r = ferry__chan_flush(c);
		}
		struct ferry_rp_shut shut = { .status = 0 };
		if (!r)
			r = ferry__src_rp_wait_shut(m, &shut);
		if ((r || shut.status) && r != -ECANCELED && (*unrun = dst_never_ran(m)))
			return FERRY_EPEER;
		if (!r && shut.status) {
			ferry__mig_set_error(m, shut.status, "destination failed in postcopy: %s",
					     shut.msg);
			return FERRY_EPEER;
		}
		if (!r)
			return 0;
		if (ferry__mig_cancelled(m) || pc_pause(m, rs))
			return -ECANCELED;
	}
}

/* ---- phase entry points (mig/src/main) ---- */

int ferry__pc_src_open(struct src_ctx *x)
{
	if (!x->p0.postcopy)
		return 0;
	ferry_pc_src *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return -ENOMEM;
	/*
	 * Priority inheritance: mig/src/rp (boosted, ferry__pc_src_rp_begin)
	 * takes pc->lock for every request and PONG, and mig/src/main (not
	 * boosted) holds it around its bitmap work; without it a vCPU thread
	 * that preempted mig/src/main kept mig/src/rp waiting 1.2-3.2 ms
	 * (twice in a run, traced). Not visible in bench/postcopy.py's p50
	 * and p99 (5 runs each way, interleaved: 720/1245 against 753/1245
	 * us plain, 43/147 against 43/163 preempt); the inversion is a tail
	 * event.
	 */
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setprotocol(&ma, PTHREAD_PRIO_INHERIT);
	pthread_mutex_init(&pc->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_cond_init(&pc->cond, NULL); /* timed waits: CLOCK_REALTIME deadlines */
	pthread_mutex_init(&pc->pre_lock, NULL);
	pc->pre.fd = -1;
	pc->pre_sink.ops = &pre_sink_ops;
	pc->preempt = x->p0.postcopy_preempt;
	x->m->pc_src = pc;
	return 0;
}

int ferry__pc_src_advise(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	int r;
	if (!x->p0.postcopy)
		return 0;
	ferry__wire_put_cmd_be32(x->c, FERRY_CMD_POSTCOPY_ADVISE,
				 x->p0.postcopy_preempt ? FERRY_PC_PREEMPT | FERRY_PC_PREEMPT_REQS : 0);
	if ((r = ferry__chan_flush(x->c)))
		return r;
	if (x->p0.postcopy_preempt && (r = pc_connect_preempt(m, m->uri))) {
		ferry__mig_set_error(m, r, "cannot open the postcopy preempt channel: %s",
				     ferry_strerror(r));
		return r;
	}
	x->rs.pc_start = &m->pc_start;
	return 0;
}

bool ferry__pc_src_wanted(struct src_ctx *x, const ferry_migration_params *p)
{
	/* A requested switch wins over convergence (as QEMU's). */
	return x->p0.postcopy && (atomic_load(&x->m->pc_start) ||
				  (p->postcopy_after_passes && x->pass >= p->postcopy_after_passes));
}

int ferry__pc_src_prediscard(struct src_ctx *x)
{
	return pc_prediscard(x->m, &x->rs);
}

/* The switch is out: the destination may run the guest from now on. */
static void pc_commit(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	x->committed = true;
	x->rs.postcopy = true;
	pthread_mutex_lock(&m->pc_src->lock);
	m->pc_src->phase = true;
	pthread_mutex_unlock(&m->pc_src->lock);
	pthread_mutex_lock(&m->stats_lock);
	m->info.postcopy = true;
	m->pc_bytes = ferry__src_wire_bytes(x);
	pthread_mutex_unlock(&m->stats_lock);
	pc_set_timeouts(m);
	ferry__mig_set_status(m, FERRY_MIGRATION_POSTCOPY_ACTIVE);
}

int ferry__pc_src_run(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	ferry_pc_src *pc = m->pc_src;
	/* Pages now go on the main (and preempt) channel only, unlimited (as QEMU's). */
	ferry__ram_set_sink(&x->rs, NULL);
	ferry__rl_set_off(&m->rl, true);
	int r = pc_switch(x);
	if (r)
		return r;
	pc_commit(x); /* marks the bytes sent so far: postcopy_bytes are the rest */
	bool unrun = false;
	if ((r = pc_run(m, &x->rs, &unrun))) {
		if (unrun) /* the source's guest is the only one: it resumes (source.c) */
			x->committed = false;
		return r;
	}
	pthread_mutex_lock(&pc->lock);
	uint64_t run_ns = pc->running_ns, reqs = pc->requests;
	pthread_mutex_unlock(&pc->lock);
	pthread_mutex_lock(&m->stats_lock);
	ferry__src_set_downtime(x, run_ns);
	m->info.postcopy_requests = reqs;
	pthread_mutex_unlock(&m->stats_lock);
	ferry__live_stat_split(m, run_ns);
	return 0;
}

uint64_t ferry__pc_src_extra_bytes(struct ferry_migration *m)
{
	/* Connections closed by pauses, and the preempt channel. */
	return m->pc_src ? m->pc_src->closed_bytes + m->pc_src->pre.out_bytes : 0;
}

bool ferry__pc_src_close(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	if (!m->pc_src)
		return false;
	ferry__src_rp_bye(m);
	pc_disconnect(m);
	for (unsigned i = 0; i < x->vm->nblocks; i++)
		free(m->pc_src->prediscarded[i]);
	pthread_mutex_destroy(&m->pc_src->lock);
	pthread_mutex_destroy(&m->pc_src->pre_lock);
	pthread_cond_destroy(&m->pc_src->cond);
	free(m->pc_src);
	m->pc_src = NULL;
	return true;
}

/* ---- return path hooks (mig/src/rp) ---- */

/*
 * The return path is on every page request's path: with preempt it sends
 * the pages itself; without, it queues the requests for mig/src/main and
 * takes the flow control's PONGs, which let the background go on (see
 * pc_serve). So it runs before the busy vCPU threads either way. Without
 * preempt, measured (bench/postcopy.py --modes plain, 4 runs each,
 * interleaved): p99 fault latency 983-1245 us against 1245-1900 us
 * unboosted, background 1125-1322 MB/s against 1043-1237.
 */
void ferry__pc_src_rp_begin(struct ferry_migration *m)
{
	if (m->pc_src)
		ferry__pc_boost_thread(m);
}

/* Sets a flag of pc (under its lock) and wakes the main thread. */
static void pc_note(ferry_pc_src *pc, bool *flag, uint64_t *ns)
{
	pthread_mutex_lock(&pc->lock);
	if (flag)
		*flag = true;
	if (ns)
		*ns = ferry__now_ns();
	pthread_cond_broadcast(&pc->cond);
	pthread_mutex_unlock(&pc->lock);
}

int ferry__pc_src_rp_msg(struct ferry_migration *m, ferry_chan *c, uint16_t type,
			 const uint8_t *b, size_t len)
{
	ferry_pc_src *pc = m->pc_src;
	switch (type) {
	case FERRY_RP_PONG:
		if (len != FERRY_RP_PONG_LEN)
			return -ENOMSG;
		if (pc) {
			pthread_mutex_lock(&pc->lock);
			pc->pong = ferry__wire_rp_pong_decode(b);
			if ((pc->pong & ~PC_FC_SEQ) == PC_FC_TOKEN)
				pc->fc_acked = pc->pong & PC_FC_SEQ;
			pthread_cond_broadcast(&pc->cond);
			pthread_mutex_unlock(&pc->lock);
		}
		return 0;
	case FERRY_RP_REQ_PAGES:
		return rp_request(m, c, b, len);
	case FERRY_RP_MISSING:
		return rp_missing(m, c, b, len);
	case FERRY_RP_HEARTBEAT:
	case FERRY_RP_RUNNING:
	case FERRY_RP_MISSING_END:
		if (len || !pc)
			return -ENOMSG;
		if (type == FERRY_RP_RUNNING)
			pc_note(pc, NULL, &pc->running_ns);
		else if (type == FERRY_RP_MISSING_END)
			pc_note(pc, &pc->missing_end, NULL);
		return 0;
	}
	return -ENOMSG;
}

bool ferry__pc_src_switched(struct ferry_migration *m)
{
	if (!m->pc_src)
		return false;
	pthread_mutex_lock(&m->pc_src->lock);
	bool phase = m->pc_src->phase;
	pthread_mutex_unlock(&m->pc_src->lock);
	return phase;
}

void ferry__pc_src_rp_end(struct ferry_migration *m)
{
	if (m->pc_src)
		pc_note(m->pc_src, NULL, NULL);
}
