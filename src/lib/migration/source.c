/* SPDX-License-Identifier: MIT */
/*
 * The outgoing (source) side of a migration: the driver and the return path.
 *
 * DESIGN: ferry__source_thread (mig/src/main) runs the phases in order over
 * one struct src_ctx (source.h): connect; negotiate (return path, stream
 * header, multifd and postcopy commands); setup (the RAM setup section);
 * iterate: send every dirty page (one PART section per pass), log sync, and
 * estimate whether what is still dirty can be sent within downtime-limit at
 * the bandwidth measured so far. When it can, switchover stops the vCPUs and
 * complete sends the last dirty pages in the END section, every device's
 * state (FULL sections), the run state and EOF. The destination answers SHUT
 * on the return path once its vCPUs run (or it failed); the time from our
 * stop to that answer is the downtime. With auto-converge, each log sync also
 * feeds the throttle decision (throttle.h), which may slow the guest's vCPUs
 * down; they run at full speed again when the migration ends. When the
 * iteration ends with a switch to postcopy, postcopy-src.c runs from the
 * stop to the end instead of complete.
 *
 * Thread: mig/src/main runs the phases; mig/src/rp (rp_thread) reads the
 * return path and hands postcopy's messages to postcopy-src.c. The two share
 * the rp_* fields of struct ferry_migration under rp_lock, and postcopy's
 * state under its own lock; statistics go to m->info under stats_lock.
 *
 * Failure or cancel at any point: tracking stops, and if this thread
 * stopped the vCPUs it starts them again, so the source guest keeps running
 * with nothing lost (unless a postcopy switch let the destination run it).
 */
#include "migration/source.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration/estimate.h"
#include "migration/live-stats.h"
#include "migration/postcopy-src.h"
#include "migration/swack.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "transport/transport.h"
#include "util/kcopy.h"

/* How long a cancelled source waits to write its cancel notice before it cuts the links. */
#define CANCEL_GRACE_S 1

/*
 * A QMP monitor greets first, {"QMP": {...; read as a return path message
 * that is type '{"', length 'QM', then 'P"'. mig/src/rp.
 */
static bool qmp_greeting(ferry_chan *c, uint16_t type, uint16_t len)
{
	uint8_t b[2];
	return type == ('{' << 8 | '"') && len == ('Q' << 8 | 'M') && !ferry__chan_read(c, b, 2) &&
	       b[0] == 'P' && b[1] == '"';
}

/* The main thread has written all it will after a cancel (the notice, or nothing); mig/src/main. */
void ferry__src_rp_bye(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->rp_lock);
	m->rp_bye = true;
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
}

/* Cuts every connection (main, multifd): any blocked write fails. Thread: mig/src/rp. */
static void cut_all(struct ferry_migration *m)
{
	ferry__chan_shutdown(&m->chan);
	pthread_mutex_lock(&m->vm->mig_lock); /* keeps mf_send alive */
	if (m->mf_send)
		ferry__mf_send_shutdown(m->mf_send);
	pthread_mutex_unlock(&m->vm->mig_lock);
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
	cut_all(m);
}

/* SHUT (payload buf of len bytes): the destination's status and message, under rp_lock. */
static void rp_got_shut(struct ferry_migration *m, const uint8_t *buf, uint16_t len)
{
	const uint8_t *msg;
	size_t ml;
	int status;
	ferry__wire_rp_shut_decode(buf, len, &status, &msg, &ml);
	/* A failure is a negative errno with a reason: a hostile peer's other values are made so. */
	if (status > 0)
		status = -EPROTO;
	if (status && !ml) {
		msg = (const uint8_t *)"no reason given";
		ml = strlen("no reason given");
	}
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
}

/* RP LOAD: keeps the last two reports (downtime_estimate_ns). mig/src/rp. */
static int rp_load(struct ferry_migration *m, const uint8_t *b, size_t len)
{
	ferry_wire_load l;
	if (ferry__wire_rp_load_decode(b, len, &l))
		return ferry__chan_fail(&m->chan, FERRY_EBADSTREAM,
					"return path LOAD of %zu bytes (expected %u)", len,
					(unsigned)FERRY_RP_LOAD_LEN);
	pthread_mutex_lock(&m->rp_lock);
	m->rp_load[0] = m->rp_load[1];
	m->rp_load[1] = (struct ferry_load_report){ .bytes = l.bytes, .cpu_ns = l.cpu_ns,
						    .at_ns = ferry__now_ns(),
						    .pass = l.value & ~FERRY_PING_TAG_MASK };
	m->rp_loads++;
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
	return 0;
}

/* A PONG to a PING that asked for LOAD: an older destination, which never reports. mig/src/rp. */
static bool rp_load_refused(struct ferry_migration *m, uint16_t type, const uint8_t *b, size_t len)
{
	if (type != FERRY_RP_PONG || len != FERRY_RP_PONG_LEN ||
	    (ferry__wire_rp_pong_decode(b) & FERRY_PING_TAG_MASK) != FERRY_PING_LOAD)
		return false;
	pthread_mutex_lock(&m->rp_lock);
	m->rp_load_none = true;
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
	return true;
}

/*
 * Reads and handles one return path message (buf: cap bytes). Returns true
 * to read on, false at SHUT, EOF, an error or a QMP greeting.
 */
static bool rp_message(struct ferry_migration *m, uint8_t *buf, size_t cap, bool first)
{
	ferry_chan *c = &m->chan;
	uint16_t type, len;
	ferry__chan_ctx(c, "return path message");
	if (ferry__wire_get_rp(c, &type, &len))
		return false;
	if (first && qmp_greeting(c, type, len)) {
		pthread_mutex_lock(&m->rp_lock);
		m->rp_qmp = true;
		pthread_mutex_unlock(&m->rp_lock);
		ferry__chan_shutdown(c); /* the main thread's next write fails */
		return false;
	}
	if (len > cap) {
		ferry__chan_fail(c, FERRY_EBADSTREAM, "return path message of %u bytes", len);
		return false;
	}
	bool summed;
	if (ferry__chan_read(c, buf, len) || ferry__wire_get_rp_sum(c, type, len, buf, &type, &summed))
		return false;
	/*
	 * With checksums every message has one, but a destination that failed
	 * before it read the stream header sends its SHUT without: only a
	 * failure may come so, never the success that lets the guest go.
	 */
	bool shut = type == FERRY_RP_SHUT && len >= FERRY_RP_SHUT_STATUS_LEN;
	if (c->sums && !summed && (!shut || !ferry__ld_be32(buf))) {
		ferry__chan_fail(c, FERRY_EBADSTREAM, "return path message %u without its checksum",
				 type);
		return false;
	}
	if (shut) {
		rp_got_shut(m, buf, len);
		return false;
	}
	int r = type == FERRY_RP_LOAD		       ? rp_load(m, buf, len)
		: rp_load_refused(m, type, buf, len) ? 0
						     : ferry__pc_src_rp_msg(m, c, type, buf, len);
	if (r == -ENOMSG)
		r = ferry__swack_src_rp_msg(m, type, len);
	if (r == -ENOMSG)
		ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown return path message %u (len %u)", type,
				 len);
	return r == 0;
}

/*
 * The return path ended: after a postcopy switch a silent or broken one
 * stops the sender too; a cancelled precopy waits for the main thread's
 * bye. Then rp_dead, under rp_lock.
 */
static void rp_end(struct ferry_migration *m)
{
	bool phase = ferry__pc_src_switched(m);
	pthread_mutex_lock(&m->rp_lock);
	bool shut = m->rp_shut, failed = m->rp_shut && m->rp_status;
	pthread_mutex_unlock(&m->rp_lock);
	if (phase && !shut)
		ferry__chan_shutdown(&m->chan);
	/*
	 * Before the switch, a destination that failed reads no more: cut
	 * every connection so that the main thread, maybe blocked on a full
	 * multifd channel the destination refused, fails now with its word.
	 */
	if (!phase && failed)
		cut_all(m);
	if (!phase && ferry__mig_cancelled(m))
		await_bye(m);
	pthread_mutex_lock(&m->rp_lock);
	m->rp_dead = true;
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
}

/*
 * mig/src/rp: reads return path messages until SHUT, EOF or an error.
 * SHUT and the QMP check are its own (results under rp_lock); postcopy's
 * messages go to postcopy-src.c. It writes only on the preempt channel.
 */
static void *rp_thread(void *arg)
{
	struct ferry_migration *m = arg;
	pthread_setname_np(pthread_self(), "mig/src/rp");
	ferry__pc_src_rp_begin(m);
	uint8_t *buf = malloc(FERRY_RP_PAYLOAD_MAX);
	for (bool first = true; buf && rp_message(m, buf, FERRY_RP_PAYLOAD_MAX, first); first = false)
		;
	free(buf);
	rp_end(m);
	ferry__pc_src_rp_end(m);
	ferry__log_thread_cpu();
	return NULL;
}

/* Waits for SHUT. Returns 0 (and the destination's status) or an error. */
int ferry__src_rp_wait_shut(struct ferry_migration *m, struct ferry_rp_shut *out)
{
	return ferry__src_rp_wait_shut_ms(m, out, 0);
}

int ferry__src_rp_wait_shut_ms(struct ferry_migration *m, struct ferry_rp_shut *out,
			       uint32_t timeout_ms)
{
	struct timespec dl = ferry__deadline_ms(timeout_ms); /* rp_cond is monotonic */
	pthread_mutex_lock(&m->rp_lock);
	bool late = false;
	while (!m->rp_shut && !m->rp_dead && !ferry__mig_cancelled(m) && !late) {
		if (!timeout_ms)
			pthread_cond_wait(&m->rp_cond, &m->rp_lock);
		else
			late = pthread_cond_timedwait(&m->rp_cond, &m->rp_lock, &dl) == ETIMEDOUT;
	}
	int r = 0;
	if (m->rp_shut) {
		out->status = m->rp_status;
		out->ns = m->rp_shut_ns;
		snprintf(out->msg, sizeof(out->msg), "%s", m->rp_msg);
	} else if (ferry__mig_cancelled(m))
		r = -ECANCELED;
	else if (late)
		r = -ETIMEDOUT;
	else
		r = m->chan.in_err.code ? m->chan.in_err.code : -EPIPE;
	pthread_mutex_unlock(&m->rp_lock);
	return r;
}

int ferry__src_rp_start(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->rp_lock);
	m->rp_shut = m->rp_dead = false;
	m->rp_loads = 0;
	m->rp_load_none = false;
	pthread_mutex_unlock(&m->rp_lock);
	int r = -pthread_create(&m->rp_thread, NULL, rp_thread, m);
	m->rp_started = !r;
	return r;
}
/* ---- everything below runs on mig/src/main ---- */

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
static void say_cancelled(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	ferry_ram_saver *rs = &x->rs;
	bool stream_open = x->stream_open;
	ferry_chan *c = &m->chan;
	if (stream_open && c->fd >= 0 && c->obuf && !c->out_err) {
		ferry__ram_put_cancelled(rs);
		if (!ferry__chan_flush(c))
			ferry_info("cancel: the destination was told");
	}
	ferry__src_rp_bye(m);
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

/* query-migrate's pass figures (bw 0: at a pass's start, the estimate stays). */
static void update_info(struct src_ctx *x, uint32_t pass, uint64_t bw, uint64_t expected_ms)
{
	struct ferry_migration *m = x->m;
	pthread_mutex_lock(&m->stats_lock);
	m->info.pass = pass;
	m->info.dirty_sync_count = pass;
	m->info.dirty_pages_rate = x->dirty_rate;
	m->info.stalled = x->stalled;
	if (bw) {
		/* mbps itself is the last 100 ms window (ram.c). */
		m->info.expected_downtime_ms = expected_ms;
		m->info.pages_per_second = bw / FERRY_PAGE_SIZE;
		m->info.dest_load_bps = x->dest_bps;
	}
	pthread_mutex_unlock(&m->stats_lock);
}

/* ---- phases (mig/src/main) ---- */

/* Connect: the main connection to m->uri, or the fd of ferry_migration_start_fd(). */
static int phase_connect(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	ferry_error err = { 0 };
	ferry_migration_params p;
	ferry__mig_params(m, &p);
	int r = ferry__tls_cfg_check(&m->tls, &p, false, &err);
	if (r) {
		ferry__mig_set_error_from(m, &err);
		if (m->chan.fd >= 0)
			close(m->chan.fd);
		m->chan.fd = x->fd = -1;
		return r;
	}
	if (m->chan.fd >= 0)
		x->fd = m->chan.fd; /* ferry__chan_init() below takes it over */
	else
		r = ferry__sock_connect(m->uri, &x->fd, &m->cancel, &err);
	if (r) {
		if (r != -ECANCELED)
			ferry__mig_set_error_from(m, &err);
		x->fd = -1;
		return r;
	}
	if ((r = ferry__chan_init(x->c, x->fd))) {
		close(x->fd);
		x->fd = -1;
		return r;
	}
	ferry__mig_watch_peer(m, x->fd);
	atomic_store(&m->chan_fd, x->fd);
	m->stage_sends = ferry__kcopy_use(p.user_copy);
	if (m->stage_sends && (r = ferry__chan_stage(x->c)))
		return r;
	pthread_mutex_lock(&m->stats_lock);
	m->info.user_copy = x->c->stage && !m->tls.creds; /* TLS sends from its own buffers */
	pthread_mutex_unlock(&m->stats_lock);
	x->c->rl = &m->rl; /* every byte of the main connection counts against max-bandwidth */
	x->c->peer = "destination";
	if ((r = ferry__chan_tls_open(x->c, &m->tls, &err))) {
		if (!ferry__mig_cancelled(m))
			ferry__mig_set_error_from(m, &err);
		return r;
	}
	/* A cancel that raced with connect. */
	return ferry__mig_cancelled(m) ? -ECANCELED : 0;
}

/* Negotiate, multifd: MULTIFD, then the channels (published for cancel), the saver's sink. */
static int mf_open(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	const ferry_migration_params *p = &x->p0;
	int r;
	if (!p->multifd)
		return 0;
	ferry__wire_put_cmd_multifd(x->c, p->multifd_channels, (uint8_t)p->multifd_compression);
	if ((r = ferry__chan_flush(x->c)))
		return r;
	ferry_error e = { 0 };
	r = ferry__mf_send_start(&x->mf, m, p->multifd_channels, p->multifd_compression,
				 p->multifd_zstd_level, p->send_splice, m->stage_sends,
				 &e);
	if (r) {
		ferry__error_set(&e, r, "%s", ferry_strerror(r)); /* when it had no message */
		if (ferry__error_lost_conn(r))
			/* Likely the destination refused the stream: its SHUT may say why. */
			ferry__error_copy(&x->mf_open_err, &e);
		else if (!ferry__mig_cancelled(m))
			ferry__mig_set_error_from(m, &e);
		return r;
	}
	/* Published only now: cancel may shut the channels down from here on. */
	pthread_mutex_lock(&x->vm->mig_lock);
	m->mf_send = &x->mf;
	pthread_mutex_unlock(&x->vm->mig_lock);
	if (ferry__mig_cancelled(m))
		return -ECANCELED;
	ferry_page_sink *sink;
	if ((r = ferry__mf_sink_init(&x->mf, x->c, &sink)))
		return r;
	ferry__ram_set_sink(&x->rs, sink);
	return 0;
}

/*
 * Negotiate: the return path, the stream header and the capabilities.
 * Multifd and postcopy settings are fixed for the whole migration (later
 * migrate-set-parameters calls change only the live ones).
 */
static int phase_negotiate(struct src_ctx *x)
{
	int r;
	ferry__mig_params(x->m, &x->p0);
	if ((r = ferry__pc_src_open(x)) || (r = ferry__src_rp_start(x->m)))
		return r;
	/*
	 * No checksums under TLS: the AEAD authenticates already. With free
	 * page hints they stay on: a hinted page whose copy may be torn goes
	 * as a FREE record (hints.c).
	 */
	x->m->sums_on = x->p0.checksum && !x->m->tls.creds;
	if (x->m->sums_on) { /* before the header, whose version says so */
		ferry__sums_init(&x->m->sums, NULL);
		ferry__sums_attach(x->c, &x->m->sums, FERRY_SUM_MAIN);
	}
	ferry__wire_put_header(x->c, x->vm->uuid);
	if (x->m->sums_on) /* from the first byte after the header, as the destination */
		ferry__chan_ctl_start(x->c);
	x->stream_open = true;
	/* Now, not after setup: the destination waits for it for x-link-timeout only. */
	if ((r = ferry__chan_flush(x->c)) || (r = mf_open(x)))
		return r;
	return ferry__pc_src_advise(x);
}

/* Setup: everything that migrates registers and sets up; the migration is active from here. */
static int phase_setup(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	int r;
	/*
	 * Hints first: their setup decides how RAM's setup protects memory.
	 * switchover-ack's section before any device's. Live devices before
	 * RAM: their save threads start at save_complete, so their state
	 * streams while the final RAM pass runs.
	 */
	if ((r = ferry__parts_add(&x->parts, &ferry__hints_participant, &x->rs)) ||
	    (r = ferry__parts_add(&x->parts, &ferry__swack_participant, m)) ||
	    (r = ferry__parts_add(&x->parts, &ferry__live_participant, m)) ||
	    (r = ferry__parts_add(&x->parts, &ferry__ram_participant, &x->rs)) ||
	    (r = ferry__parts_add(&x->parts, &ferry__vmsd_participant, m)) ||
	    (r = ferry__parts_save_setup(&x->parts, x->c)))
		return r;
	pthread_mutex_lock(&m->stats_lock);
	m->info.setup_time_ms = (ferry__now_ns() - m->start_ns) / 1000000;
	pthread_mutex_unlock(&m->stats_lock);
	ferry__mig_set_status(m, FERRY_MIGRATION_ACTIVE);
	x->last_sync_ns = ferry__now_ns();
	ferry__throttle_init(&x->thr, x->last_sync_ns, x->rs.sent_bytes);
	return 0;
}

/* The last pass's rate (bytes/s), leaving out what mig/src/main waited for a CPU. */
static uint64_t pass_rate(const ferry_ram_saver *rs)
{
	uint64_t ran = ferry__ran_ns(rs->pass_ns, rs->pass_wait_ns);
	return ran ? (uint64_t)((double)rs->pass_bytes * 1e9 / (double)ran) : 0;
}

/* One precopy pass and its log sync; *dirtied: bytes dirtied since the last sync. */
static int pass_run(struct src_ctx *x, uint64_t *dirtied)
{
	x->pass++;
	x->pass_start_ns = ferry__now_ns();
	ferry__mig_event(x->m, FERRY_EVENT_PASS, x->pass);
	update_info(x, x->pass, 0, 0);
	int r = ferry__parts_pass(&x->parts, x->c);
	if (r)
		return r;
	/*
	 * The destination reports its load rate (downtime_estimate_ns); after
	 * the pass, so with multifd after its sync, when the channels' share
	 * is loaded.
	 */
	ferry__wire_put_cmd_be32(x->c, FERRY_CMD_PING,
				 FERRY_PING_LOAD | (x->pass & ~FERRY_PING_TAG_MASK));
	if ((r = ferry__chan_flush(x->c)))
		return r;
	uint64_t t0 = ferry__now_ns(), w0 = ferry__thread_wait_ns();
	r = ferry__parts_sync(&x->parts, dirtied);
	/* Less the wait for a CPU: the final sync's bound (final_sync_peek). */
	x->sync_ns = ferry__ran_ns(ferry__now_ns() - t0, ferry__thread_wait_ns() - w0);
	return r;
}

/*
 * Waits up to REPORT_WAIT_MS for the destination's report of this pass
 * (the pass-th), which comes once it has loaded the pass: usually during
 * the log sync already. Without it the estimate would take the previous
 * pass's figures, or none after the second pass.
 */
#define REPORT_WAIT_MS 50
static void dest_report_wait(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	struct timespec dl = ferry__deadline_ms(REPORT_WAIT_MS); /* rp_cond is monotonic */
	pthread_mutex_lock(&m->rp_lock);
	while (m->rp_loads < x->pass && !m->rp_load_none && !m->rp_dead && !m->rp_shut)
		if (pthread_cond_timedwait(&m->rp_cond, &m->rp_lock, &dl))
			break;
	pthread_mutex_unlock(&m->rp_lock);
}

/* The destination's last two load reports (r[1] the newer); false: fewer than two. */
static bool load_reports(struct ferry_migration *m, struct ferry_load_report r[2])
{
	pthread_mutex_lock(&m->rp_lock);
	bool two = m->rp_loads >= 2;
	r[0] = m->rp_load[0];
	r[1] = m->rp_load[1];
	pthread_mutex_unlock(&m->rp_lock);
	return two;
}

/* The bytes between two reports per second of dt (0: under 1 ms, or no bytes). */
static uint64_t load_rate(const struct ferry_load_report r[2], uint64_t dt)
{
	bool ok = r[1].bytes > r[0].bytes && dt >= 1000000u;
	return ok ? (uint64_t)((double)(r[1].bytes - r[0].bytes) * 1e9 / (double)dt) : 0;
}

/*
 * The destination's load rate between its last two reports (bytes per
 * second of its loading threads' CPU time; 0: under 1 ms of CPU between
 * them): dest.c, put_load_report.
 */
static uint64_t dest_load_bps(const struct ferry_load_report r[2])
{
	return r[1].cpu_ns > r[0].cpu_ns ? load_rate(r, r[1].cpu_ns - r[0].cpu_ns) : 0;
}

/*
 * The last pass's rate end to end (bytes/s; 0: not known): the stream
 * bytes the destination loaded between its reports of the pass before and
 * of this one, over the time from this pass's start (or that earlier
 * report's arrival, when later) to this report's arrival here. Unlike the
 * pass's own rate it counts what the sockets still held when the pass
 * ended: on a machine where the vCPUs do not slow the passes (kernel 6.18
 * here), the own rate came out 1.14x the stop-copy's, and two
 * switchovers took 308 and 342 ms for a 300 ms limit.
 */
static uint64_t dest_pass_rate(const struct src_ctx *x, const struct ferry_load_report r[2])
{
	uint64_t start = x->pass_start_ns > r[0].at_ns ? x->pass_start_ns : r[0].at_ns;
	bool ours = r[1].pass == x->pass && r[0].pass + 1 == x->pass &&
		    r[1].at_ns > start + 1000000u;
	return ours ? load_rate(r, r[1].at_ns - start) : 0;
}

/*
 * The final log sync, in the downtime, from a peek at what it would find
 * now (*pages, whose bytes the stop-copy sends too): the peek's walk (its
 * ran time), plus FINAL_WP_NS per page found for re-protecting it with the
 * vCPUs stopped (measured 0.2-0.8 us; 4 us with them running), at most the
 * last sync's own time. The last sync itself overstated it: it took 12-50
 * ms where the final one took 0.3-11 (bench/precopy.py --downtime-grid),
 * as it re-protects a whole pass's pages against running vCPUs. A failed
 * peek leaves the last sync's time.
 */
#define FINAL_WP_NS 1000u
static uint64_t final_sync_peek(struct src_ctx *x, uint64_t *pages)
{
	uint64_t t0 = ferry__now_ns(), w0 = ferry__thread_wait_ns();
	*pages = 0;
	if (ferry__ram_peek(&x->rs, pages))
		return x->sync_ns;
	uint64_t ns = ferry__ran_ns(ferry__now_ns() - t0, ferry__thread_wait_ns() - w0) +
		      *pages * FINAL_WP_NS;
	return ns < x->sync_ns ? ns : x->sync_ns;
}

/*
 * The downtime if the switchover came now (ns): what is left to send
 * (dirty pages, devices' stop-copy data, the pages written since the last
 * sync) plus what the sockets and the multifd queues still hold, at the
 * switchover's rate, plus the final log sync (final_sync_peek). A lower
 * max-bandwidth caps the rate. *bw: that rate (bytes/s; 0: nothing
 * measured yet, and UINT64_MAX is returned).
 *
 * The switchover's rate: ferry__switch_rate (estimate.h), from the pass's
 * own rate and its end to end rate (dest_pass_rate). The destination's
 * rate per CPU second (dest_load_bps) is reported, not used (estimate.h).
 */
static uint64_t downtime_estimate_ns(struct src_ctx *x, const ferry_migration_params *p,
				     uint64_t remaining, uint64_t *bw)
{
	const ferry_ram_saver *rs = &x->rs;
	ferry_rate_evidence ev = { .max_bandwidth = p->max_bandwidth };
	ev.pass_bps = rs->send_ns ? (uint64_t)((double)rs->sent_bytes * 1e9 / (double)rs->send_ns) : 0;
	if (x->pass >= 2 && rs->pass_ns >= 10000000u && rs->pass_bytes)
		ev.pass_bps = pass_rate(rs);
	struct ferry_load_report r[2];
	bool reports = load_reports(x->m, r);
	ev.e2e_bps = reports ? dest_pass_rate(x, r) : 0;
	x->dest_bps = reports ? dest_load_bps(r) : 0;
	*bw = ferry__switch_rate(&ev);
	if (!*bw)
		return UINT64_MAX;
	uint64_t written, sync_ns = final_sync_peek(x, &written);
	uint64_t inflight = ferry__sock_outq(x->fd) + ferry__mf_send_inflight(&x->mf);
	uint64_t ns = (uint64_t)((double)(remaining + (written << FERRY_PAGE_SHIFT) + inflight) * 1e9 /
				 (double)*bw) + sync_ns;
	ferry_dbg("estimate after pass %u: %llu + %llu written + %llu in flight bytes at %llu B/s "
		  "(pass %llu, end to end %llu, destination %llu), sync %.1f ms "
		  "(last %.1f): %.1f ms",
		  x->pass, (unsigned long long)remaining, (unsigned long long)written << FERRY_PAGE_SHIFT,
		  (unsigned long long)inflight, (unsigned long long)*bw,
		  (unsigned long long)ev.pass_bps, (unsigned long long)ev.e2e_bps,
		  (unsigned long long)x->dest_bps, sync_ns / 1e6, x->sync_ns / 1e6, ns / 1e6);
	return ns;
}

/*
 * The switch waits for an expected downtime of at most this share of
 * downtime-limit, so that the limit holds: the estimate's error is about
 * +-10% (bench/precopy.py --downtime-grid, 2026-12-07: expected 48 ms,
 * then 52 and 57 ms of downtime against a 50 ms limit, in 2 of 4 runs of
 * that cell, 200 MB/s per vCPU unthrottled).
 */
#define LIMIT_HEADROOM_PCT 90

/*
 * After a pass: estimates whether what is still dirty can be sent within
 * downtime-limit at the bandwidth measured so far. True when the
 * iteration ends (converged, or a switch to postcopy is wanted).
 */
static bool pass_decide(struct src_ctx *x, uint64_t dirtied)
{
	ferry_ram_saver *rs = &x->rs;
	uint64_t now = ferry__now_ns();
	uint64_t dt = now - x->last_sync_ns ? now - x->last_sync_ns : 1;
	x->dirty_rate = dirtied / FERRY_PAGE_SIZE * 1000000000ull / dt;
	x->last_sync_ns = now;
	uint64_t remaining = ferry__parts_pending(&x->parts, NULL, NULL), bw;
	ferry_migration_params p;
	ferry__mig_params(x->m, &p);
	dest_report_wait(x);
	x->expected_ns = downtime_estimate_ns(x, &p, remaining, &bw);
	/*
	 * Not on the first pass's rate alone while something is dirty: its long
	 * runs of pages say little of the scattered ones left. Measured
	 * (--downtime-grid, after one pass): the final pages went at a quarter
	 * of that rate (first user access to each page again: 19 us a page
	 * here), 0.41-0.79 of the actual downtime expected, one cell over its
	 * limit. One more pass measures them.
	 */
	bool fits = x->expected_ns <= p.downtime_limit_ms * (1000000u * LIMIT_HEADROOM_PCT / 100) &&
		    (x->pass >= 2 || !remaining);
	if (!x->stalled && p.max_passes && x->pass >= p.max_passes && !fits) {
		x->stalled = true;
		ferry_warn("migration does not converge after %u passes: %llu bytes dirty, "
			   "%.0f ms expected downtime; still trying",
			   x->pass, (unsigned long long)remaining, (double)x->expected_ns / 1e6);
	}
	update_info(x, x->pass, bw, x->expected_ns / 1000000u);
	if (ferry__pc_src_wanted(x, &p)) {
		x->postcopy = true;
		return true;
	}
	if (fits && ferry__parts_ready(&x->parts))
		return true;
	if (x->p0.auto_converge) {
		unsigned pct;
		if (ferry__throttle_sync(&x->thr, &p, now, dirtied, rs->sent_bytes, &pct))
			throttle_apply(x->m, &x->thr, pct);
	}
	return false;
}

/*
 * Before EOF, a return path that ended can bring neither a switchover-ack
 * nor the final SHUT: the migration cannot succeed, so it fails now
 * (fuzz-src found a source whose return path had ended running passes for
 * good, waiting for a switchover-ack). 0 while it is up; else the error
 * (src_pick_error says why: the destination's SHUT, the return path's own
 * error), or a SHUT that reported success too early, recorded here.
 */
static int rp_lost(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	if (!m->rp_started)
		return 0;
	pthread_mutex_lock(&m->rp_lock);
	bool dead = m->rp_dead, early_ok = m->rp_shut && !m->rp_status;
	int r = 0; /* in_err is mig/src/rp's until rp_dead */
	if (dead)
		r = m->rp_shut ? FERRY_EBADSTREAM : m->chan.in_err.code ? m->chan.in_err.code : -EPIPE;
	pthread_mutex_unlock(&m->rp_lock);
	if (!dead)
		return 0;
	if (early_ok)
		ferry__mig_set_error(m, r, "the destination reported success before the stream ended");
	return r;
}

/* Iterate: passes while the guest runs, until converged or switching to postcopy. */
static int phase_iterate(struct src_ctx *x)
{
	for (;;) {
		uint64_t dirtied;
		int r = rp_lost(x);
		if (r)
			return r;
		r = pass_run(x, &dirtied);
		if (r)
			return r;
		if (pass_decide(x, dirtied))
			return 0;
	}
}

uint64_t ferry__src_wire_bytes(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	if (x->mf.inited) /* the channels' counters as of now, not the last refresh */
		ferry__mf_send_stats(&x->mf, &m->info);
	return x->c->out_bytes + (x->mf.inited ? m->info.multifd_bytes : 0) + ferry__pc_src_extra_bytes(m);
}

void ferry__src_set_downtime(struct src_ctx *x, uint64_t end_ns)
{
	ferry_migration_info *i = &x->m->info;
	i->downtime_us = end_ns > x->stop_ns ? (end_ns - x->stop_ns) / 1000u : 0;
	i->downtime_ms = i->downtime_us / 1000u;
}

/* Switchover: stops the vCPUs (the run state is ours from here on). */
static int phase_switchover(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	ferry_vm_t *vm = x->vm;
	pthread_mutex_lock(&vm->run_lock);
	x->stop_ns = ferry__now_ns();
	m->sw_stop_ns = x->stop_ns;
	ferry_dbg("switchover: stopping vCPUs");
	if (vm->running) {
		int r = vm->vcpu_ops.stop ? vm->vcpu_ops.stop(vm->vcpu_opaque) : 0;
		if (r) {
			pthread_mutex_unlock(&vm->run_lock);
			ferry__mig_set_error(m, r, "cannot stop vCPUs: %s", ferry_strerror(r));
			return r;
		}
		vm->running = false;
		x->stopped_by_us = true;
	}
	/* From here on the run state is ours: ferry_vm_start() says -EBUSY. */
	vm->run_owned = true;
	pthread_mutex_unlock(&vm->run_lock);
	pthread_mutex_lock(&m->stats_lock);
	m->sw_bytes = ferry__src_wire_bytes(x); /* what went while the guest ran */
	m->info.downtime_expected_us = x->expected_ns == UINT64_MAX ? 0 : x->expected_ns / 1000u;
	m->info.downtime_expected_ms = m->info.downtime_expected_us / 1000u;
	pthread_mutex_unlock(&m->stats_lock);
	if (x->stopped_by_us)
		ferry__mig_event(m, FERRY_EVENT_STOP, 0);
	ferry__mig_set_status(m, FERRY_MIGRATION_DEVICE);
	ferry__wire_put_cmd(x->c, FERRY_CMD_SWITCHOVER, NULL, 0);
	return 0;
}

/* Complete (precopy): the last sync, every participant's rest, EOF; waits for SHUT. */
static int phase_complete(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	ferry_chan *c = x->c;
	struct ferry_rp_shut shut;
	int r;
	uint64_t t0 = ferry__now_ns(), found = 0;
	if ((r = ferry__parts_sync(&x->parts, &found)))
		return r;
	uint64_t t1 = ferry__now_ns();
	update_info(x, x->pass + 1, 0, 0);
	/* As QEMU: every dirty sync is a MIGRATION_PASS, the switchover one too. */
	ferry__mig_event(m, FERRY_EVENT_PASS, x->pass + 1);
	if ((r = ferry__parts_save_complete(&x->parts, c, FERRY_WALK_ALL)))
		return r;
	uint64_t t2 = ferry__now_ns();
	ferry__wire_put_cmd_u8(c, FERRY_CMD_VM_STATE, (uint8_t)x->stopped_by_us);
	if (c->sums) /* every guest-data record is out (multifd's: the last sync), and every command */
		ferry__wire_put_cmd_digest(c, (ferry_wire_digest){ atomic_load(&c->sums->records),
								   atomic_load(&c->sums->digest) });
	ferry__wire_put_record(c, FERRY_REC_EOF);
	x->stream_open = false;
	if ((r = ferry__chan_flush(c)) || (r = ferry__src_rp_wait_shut(m, &shut)))
		return r;
	if (shut.status) {
		ferry__mig_set_error(m, shut.status, "destination failed: %s", shut.msg);
		return FERRY_EPEER;
	}
	pthread_mutex_lock(&m->stats_lock);
	ferry__src_set_downtime(x, shut.ns);
	uint64_t sent = ferry__src_wire_bytes(x) - m->sw_bytes;
	pthread_mutex_unlock(&m->stats_lock);
	ferry_dbg("stop-copy: final sync %.1f ms (%llu bytes found), %llu bytes in %.1f ms after it "
		  "(written in %.2f, then %.2f to the destination's SHUT), downtime %.1f ms",
		  (t1 - t0) / 1e6, (unsigned long long)found, (unsigned long long)sent,
		  (shut.ns - t1) / 1e6, (t2 - t1) / 1e6, (shut.ns - t2) / 1e6,
		  (shut.ns - x->stop_ns) / 1e6);
	ferry__live_stat_split(m, shut.ns);
	return 0;
}

/* Completed (any mode): the final figures; the guest is the destination's now. */
static void phase_completed(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	pthread_mutex_lock(&m->stats_lock);
	uint64_t total_ns = ferry__now_ns() - m->start_ns;
	uint64_t wire = ferry__src_wire_bytes(x);
	m->info.transferred = wire;
	m->info.throughput_bps = (uint64_t)((double)wire * 1e9 / (double)total_ns);
	m->info.mbps = (double)m->info.throughput_bps * 8 / 1e6;
	m->info.remaining = 0;
	pthread_mutex_unlock(&m->stats_lock);
	throttle_end(m, &x->thr);
	ferry__vm_own_run(x->vm, false);
	ferry__mig_set_status(m, FERRY_MIGRATION_COMPLETED);
	/* Housekeeping after completion: unprotecting RAM takes ~10 ms per GiB. */
	ferry__parts_save_cleanup(&x->parts);
}

/* Grace for a failed multifd channel's own error after the main connection broke. */
#define MF_GRACE_MS 200

/* Did the peer greet like a QMP monitor? (after rp_settle) */
static bool src_peer_is_qmp(struct ferry_migration *m)
{
	rp_settle(m);
	pthread_mutex_lock(&m->rp_lock);
	bool qmp = m->rp_qmp;
	pthread_mutex_unlock(&m->rp_lock);
	return qmp;
}

/*
 * The return path's own error (a bad message, a checksum), when r is it:
 * into *e. A lost connection says so in src_pick_error's words instead,
 * unless the return path saw the link die.
 */
static void src_rp_error(struct ferry_migration *m, int r, ferry_error *e)
{
	if (!m->rp_started)
		return;
	pthread_mutex_lock(&m->rp_lock);
	int rp = m->rp_dead ? m->chan.in_err.code : 0;
	/*
	 * A dead link's error goes to whichever call on the socket comes first:
	 * when the return path took it, a write saw only the closed socket.
	 */
	if (ferry__error_lost_conn(r) && ferry__error_link_dead(rp))
		ferry__error_set(e, rp, FERRY_LINK_DEAD_FMT, "destination");
	else if (!ferry__error_lost_conn(r) && rp == r && m->chan.in_err.msg[0])
		ferry__error_set(e, r, "%s", m->chan.in_err.msg);
	pthread_mutex_unlock(&m->rp_lock);
}

/* The destination's SHUT(error), if it said why within rp_settle's second: into *e. */
static void src_shut_error(struct ferry_migration *m, ferry_error *e)
{
	if (!m->rp_started)
		return;
	rp_settle(m);
	pthread_mutex_lock(&m->rp_lock);
	if (m->rp_shut && m->rp_status)
		ferry__error_set(e, m->rp_status, "destination failed: %s", m->rp_msg);
	pthread_mutex_unlock(&m->rp_lock);
}

/*
 * Which error the source reports for a failure r that was not a cancel.
 * Candidates, best first (the first one found is recorded):
 *   1. the peer greeted like a QMP monitor: it is no destination;
 *   2. a multifd channel's own error (or the one starting the channels
 *      met), waited for up to MF_GRACE_MS: a
 *      failing channel shuts the main connection down, so the main
 *      connection's EPIPE is only a symptom; but when that error is
 *      itself a lost connection, the destination's SHUT(error), if one
 *      came (4.), says why and goes first;
 *   3. r == FERRY_EPEER: the destination's word was recorded where it
 *      arrived; nothing further;
 *   4. the destination's SHUT(error) message (given up to 1 s to arrive);
 *   5. the return path's own error, when r is it (a bad message);
 *   6. r itself: "lost the connection to the destination: ..." for
 *      EPIPE/ECONNRESET, else its bare text.
 * An error a phase recorded itself before (ferry__mig_set_error) wins over
 * all of these.
 */
static void src_pick_error(struct src_ctx *x, int r)
{
	struct ferry_migration *m = x->m;
	ferry_error e = { 0 };
	if (src_peer_is_qmp(m))
		ferry__error_set(&e, -EPROTO, "the peer at '%s' is a QMP monitor, not a migration destination",
				 m->uri);
	ferry_error mfe = { 0 };
	if (x->mf.inited)
		ferry__mf_send_wait_error(&x->mf, MF_GRACE_MS, &mfe);
	ferry__error_copy(&mfe, &x->mf_open_err);
	if (ferry__error_lost_conn(mfe.code) && r != FERRY_EPEER)
		src_shut_error(m, &e);
	ferry__error_copy(&e, &mfe);
	if (r != FERRY_EPEER) {
		src_shut_error(m, &e);
		src_rp_error(m, r, &e);
		if (ferry__error_lost_conn(r))
			ferry__error_set(&e, r, "lost the connection to the destination: %s",
					 ferry_strerror(r));
		else if (ferry__error_link_dead(r))
			ferry__error_set(&e, r, FERRY_LINK_DEAD_FMT, "destination");
		else
			ferry__error_set(&e, r, "%s", ferry_strerror(r));
	}
	ferry__mig_set_error_from(m, &e);
}

/*
 * Fail (error or cancel): tracking stops, and a guest that this migration
 * stopped runs again, unless the destination may already run it.
 */
static void phase_fail(struct src_ctx *x, int r)
{
	struct ferry_migration *m = x->m;
	if (ferry__mig_cancelled(m))
		say_cancelled(x);
	ferry__parts_save_cleanup(&x->parts);
	if (ferry__mig_cancelled(m))
		r = -ECANCELED;
	else
		src_pick_error(x, r);
	throttle_end(m, &x->thr);
	ferry__vm_own_run(x->vm, false);
	if (x->committed) {
		/*
		 * The destination ran the guest: starting it here too would fork
		 * it. It stays stopped; the destination's copy is the guest.
		 */
		ferry_warn("postcopy failed after the switch: the source guest stays stopped");
	} else if (x->stopped_by_us) {
		/* Precopy failed: the source guest runs on as if nothing happened. */
		if (ferry_vm_start(x->vm) == 0)
			ferry__mig_event(m, FERRY_EVENT_RESUME, 0);
	}
	ferry__mig_set_status(m, r == -ECANCELED ? FERRY_MIGRATION_CANCELLED : FERRY_MIGRATION_FAILED);
}

/* Cleanup (any outcome): the channels and the return path go. */
static void phase_cleanup(struct src_ctx *x)
{
	struct ferry_migration *m = x->m;
	pthread_mutex_lock(&x->vm->mig_lock);
	m->mf_send = NULL;
	pthread_mutex_unlock(&x->vm->mig_lock);
	ferry__mf_send_stop(&x->mf);
	if (ferry__pc_src_close(x) || x->fd < 0)
		return;
	atomic_store(&m->chan_fd, -1);
	ferry__chan_shutdown(x->c);
	ferry__src_rp_bye(m); /* a cancel that came after the end: the rp thread need not wait */
	if (m->rp_started)
		pthread_join(m->rp_thread, NULL);
	ferry__chan_close(x->c);
	if (m->sums_on)
		ferry__sums_fini(&m->sums);
}

void *ferry__source_thread(void *arg)
{
	struct ferry_migration *m = arg;
	struct src_ctx x = { .m = m, .vm = m->vm, .c = &m->chan, .fd = -1 };
	x.rs = (ferry_ram_saver){ .m = m, .vm = m->vm, .c = &m->chan };
	pthread_setname_np(pthread_self(), "mig/src/main");

	int r = phase_connect(&x);
	if (!r)
		r = phase_negotiate(&x);
	if (!r)
		r = phase_setup(&x);
	if (!r)
		r = phase_iterate(&x);
	if (!r && x.postcopy)
		r = ferry__pc_src_prediscard(&x);
	if (!r)
		r = phase_switchover(&x);
	if (!r)
		r = x.postcopy ? ferry__pc_src_run(&x) : phase_complete(&x);
	if (!r)
		phase_completed(&x);
	else
		phase_fail(&x, r);
	phase_cleanup(&x);
	ferry__log_thread_cpu();
	ferry__mig_thread_done(m);
	return NULL;
}
