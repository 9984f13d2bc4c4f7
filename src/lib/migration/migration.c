/* SPDX-License-Identifier: MIT */
/*
 * Migration control: start (outgoing and incoming), status and events,
 * query, cancel and wait. The work itself runs in source.c and dest.c.
 *
 * DESIGN: every public call here is short and non-blocking (except
 * ferry_migration_wait), so an event loop can call them. Status lives under
 * vm->mig_lock with a condition variable for waiters; progress counters
 * live under the migration's stats_lock, held only to copy them. Cancel
 * sets a flag and shuts the socket down, which wakes whatever the
 * migration thread is blocked on; the thread then cleans up and reports
 * CANCELLED. A source's socket is shut for reading only, so that the
 * cancel notice can still go out (source.c, say_cancelled/await_bye).
 * max-bandwidth changes reach the running migration's limiter (m->rl) at
 * once.
 *
 * Thread: the public ferry_migrat* functions may be called from any thread
 * (the embedder's control threads); each takes vm->mig_lock, and
 * stats_lock inside it only to copy figures. The ferry__mig_* helpers are
 * called by the migration's threads (mig/src/main, mig/src/rp, mig/dst/main
 * and its helpers): set_status and event take vm->mig_lock, set_error and
 * params stats_lock, so none may be called with stats_lock held. What each lock protects and
 * the lock order are in mig.h. The event callback runs under vm->mig_lock,
 * on whichever thread changed the status.
 */
#include "migration/mig.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/multifd.h"
#include "stream/format.h"
#include "transport/transport.h"

static const char *const status_names[] = {
	[FERRY_MIGRATION_NONE] = "none",
	[FERRY_MIGRATION_SETUP] = "setup",
	[FERRY_MIGRATION_ACTIVE] = "active",
	[FERRY_MIGRATION_DEVICE] = "device",
	[FERRY_MIGRATION_COMPLETED] = "completed",
	[FERRY_MIGRATION_FAILED] = "failed",
	[FERRY_MIGRATION_CANCELLING] = "cancelling",
	[FERRY_MIGRATION_CANCELLED] = "cancelled",
	[FERRY_MIGRATION_POSTCOPY_ACTIVE] = "postcopy-active",
	[FERRY_MIGRATION_POSTCOPY_PAUSED] = "postcopy-paused",
	[FERRY_MIGRATION_POSTCOPY_RECOVER] = "postcopy-recover",
};

const char *ferry_migration_status_name(ferry_migration_status s)
{
	if ((unsigned)s < sizeof(status_names) / sizeof(status_names[0]))
		return status_names[s];
	return "unknown";
}

void ferry_migration_params_init(ferry_migration_params *p)
{
	memset(p, 0, sizeof(*p));
	p->downtime_limit_ms = 300;
	p->max_bandwidth = 0;
	p->max_passes = 30;
	p->multifd = false;
	p->multifd_channels = 2;
	p->multifd_compression = FERRY_COMPRESS_NONE;
	p->multifd_zstd_level = 1;
	p->postcopy = false;
	p->postcopy_preempt = false;
	p->postcopy_after_passes = 0;
	p->link_timeout_ms = 10000;
	p->postcopy_cpu = -1;
	p->free_page_hints = true;
	p->hint_wait_ms = 100;
	p->placement = FERRY_PLACE_AUTO;
	p->send_splice = false;
	p->auto_converge = false;
	p->switchover_ack = false;
	p->throttle_trigger_threshold = 50;
	p->cpu_throttle_initial = 20;
	p->cpu_throttle_increment = 10;
	p->cpu_throttle_tailslow = false;
	p->max_cpu_throttle = 99;
	p->device_state_max_queued = 64;
	p->checksum = true;
}

static bool is_final(ferry_migration_status s)
{
	return s == FERRY_MIGRATION_COMPLETED || s == FERRY_MIGRATION_FAILED || s == FERRY_MIGRATION_CANCELLED;
}

static bool is_postcopy(ferry_migration_status s)
{
	return s == FERRY_MIGRATION_POSTCOPY_ACTIVE || s == FERRY_MIGRATION_POSTCOPY_PAUSED ||
	       s == FERRY_MIGRATION_POSTCOPY_RECOVER;
}

bool ferry__migration_busy(const ferry_vm_t *vm)
{
	return vm->mig && !vm->mig->thread_done;
}

/*
 * Delivers an event with the status it is about. Caller holds vm->mig_lock:
 * status changes and their events happen in one critical section, so
 * every client sees every status exactly once and in order.
 */
static void emit_locked(struct ferry_migration *m, ferry_event_type type, ferry_migration_status st,
			uint32_t pass)
{
	ferry_vm_t *vm = m->vm;
	ferry_event ev = { .type = type, .status = st, .pass = pass,
			   .timestamp_us = ferry__wall_us() };
	if (vm->event_cb)
		vm->event_cb(vm->event_opaque, &ev);
}

void ferry__mig_event(struct ferry_migration *m, ferry_event_type type, uint32_t pass)
{
	pthread_mutex_lock(&m->vm->mig_lock);
	emit_locked(m, type, m->status, pass);
	pthread_mutex_unlock(&m->vm->mig_lock);
}

void ferry__mig_set_status(struct ferry_migration *m, ferry_migration_status s)
{
	ferry_vm_t *vm = m->vm;
	pthread_mutex_lock(&vm->mig_lock);
	if (m->status == FERRY_MIGRATION_CANCELLING && !is_final(s)) {
		/* A cancel is under way: only its outcome may follow. */
		pthread_mutex_unlock(&vm->mig_lock);
		return;
	}
	bool changed = m->status != s;
	m->status = s;
	pthread_mutex_lock(&m->stats_lock); /* leaf lock, inside mig_lock */
	m->info.status = s;
	if (is_final(s) && !m->end_ns)
		m->end_ns = ferry__now_ns();
	pthread_mutex_unlock(&m->stats_lock);
	if (changed)
		emit_locked(m, FERRY_EVENT_STATUS, s, 0);
	pthread_cond_broadcast(&vm->mig_cond);
	pthread_mutex_unlock(&vm->mig_lock);
	ferry_info("migration %s", ferry_migration_status_name(s));
}

/* The only writer of info.error / info.error_desc: every error arrives here. */
void ferry__mig_set_error_from(struct ferry_migration *m, const ferry_error *e)
{
	if (!e->code)
		return;
	pthread_mutex_lock(&m->stats_lock);
	if (!m->info.error) {
		m->info.error = e->code;
		snprintf(m->info.error_desc, sizeof(m->info.error_desc), "%s", e->msg);
		ferry_warn("migration failed: %s", m->info.error_desc);
	}
	pthread_mutex_unlock(&m->stats_lock);
}

void ferry__mig_pause_reason(struct ferry_migration *m, const char *fmt, ...)
{
	char msg[sizeof(m->info.error_desc)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ferry_warn("%s", msg);
	pthread_mutex_lock(&m->stats_lock);
	if (!m->info.error)
		snprintf(m->info.error_desc, sizeof(m->info.error_desc), "%s", msg);
	pthread_mutex_unlock(&m->stats_lock);
}

void ferry__mig_paused(struct ferry_migration *m, const char *link)
{
	char why[sizeof(m->pause_why)];
	pthread_mutex_lock(&m->stats_lock);
	snprintf(why, sizeof(why), "%s", m->pause_why[0] ? m->pause_why : link);
	m->pause_why[0] = '\0'; /* the next pause has its own */
	pthread_mutex_unlock(&m->stats_lock);
	ferry__mig_pause_reason(m, "postcopy paused: %s", why);
}

void ferry__mig_cut(struct ferry_migration *m, const char *why)
{
	pthread_mutex_lock(&m->stats_lock);
	if (why && !m->pause_why[0])
		snprintf(m->pause_why, sizeof(m->pause_why), "%s", why);
	pthread_mutex_unlock(&m->stats_lock);
	int fd = atomic_load(&m->chan_fd);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
	fd = atomic_load(&m->preempt_fd);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

void ferry__mig_set_error(struct ferry_migration *m, int err, const char *fmt, ...)
{
	ferry_error e = { 0 };
	va_list ap;
	va_start(ap, fmt);
	ferry__error_setv(&e, err, fmt, ap);
	va_end(ap);
	ferry__mig_set_error_from(m, &e);
}

/*
 * Caller holds vm->mig_lock (which keeps mf_send/mf_recv alive); takes
 * their locks inside it. Control threads (mig_cancel).
 */
void ferry__mf_cancel(struct ferry_migration *m, bool shut)
{
	if (m->mf_send) {
		if (shut)
			ferry__mf_send_shutdown(m->mf_send);
		pthread_mutex_lock(&m->mf_send->lock);
		pthread_cond_broadcast(&m->mf_send->cond);
		pthread_mutex_unlock(&m->mf_send->lock);
	}
	if (m->mf_recv && m->mf_recv->inited) {
		for (unsigned i = 0; i < m->mf_recv->n; i++)
			if (m->mf_recv->ch[i].started)
				ferry__chan_shutdown(&m->mf_recv->ch[i].in);
		pthread_mutex_lock(&m->mf_recv->lock);
		pthread_cond_broadcast(&m->mf_recv->cond);
		pthread_mutex_unlock(&m->mf_recv->lock);
	}
}

int ferry_migration_set_event_cb(ferry_vm_t *vm, ferry_event_cb cb, void *opaque)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->mig_lock);
	vm->event_cb = cb;
	vm->event_opaque = opaque;
	pthread_mutex_unlock(&vm->mig_lock);
	return 0;
}

void ferry__migration_free(struct ferry_migration *m)
{
	if (!m)
		return;
	if (m->thread_started)
		pthread_join(m->thread, NULL);
	if (m->listen_fd >= 0)
		close(m->listen_fd);
	if (m->recover_fd >= 0)
		close(m->recover_fd);
	ferry__rl_destroy(&m->rl);
	ferry__tls_cfg_drop(&m->tls);
	ferry__bufpool_destroy(m->bufs);
	pthread_mutex_destroy(&m->stats_lock);
	pthread_mutex_destroy(&m->rp_lock);
	pthread_cond_destroy(&m->rp_cond);
	free(m);
}

static struct ferry_migration *mig_new(ferry_vm_t *vm, bool incoming, const char *uri)
{
	struct ferry_migration *m = calloc(1, sizeof(*m));
	if (!m || !(m->bufs = ferry__bufpool_create(FERRY_DEV_BUF_MAX))) {
		free(m);
		return NULL;
	}
	m->vm = vm;
	m->incoming = incoming;
	if (uri)
		snprintf(m->uri, sizeof(m->uri), "%s", uri);
	ferry_migration_params_init(&m->params);
	m->listen_fd = -1;
	m->recover_fd = -1;
	atomic_init(&m->chan_fd, -1);
	atomic_init(&m->preempt_fd, -1);
	if (incoming) {
		pthread_mutex_lock(&vm->mig_lock);
		m->params = vm->in_params;
		ferry__tls_cfg_take(&m->tls, &m->params, NULL);
		pthread_mutex_unlock(&vm->mig_lock);
	}
	m->chan.fd = -1;
	ferry__rl_init(&m->rl, 0, &m->cancel, NULL);
	pthread_mutex_init(&m->stats_lock, NULL);
	pthread_mutex_init(&m->rp_lock, NULL);
	ferry__cond_init_monotonic(&m->rp_cond);
	m->start_ns = ferry__now_ns();
	m->info.incoming = incoming;
	uint64_t total = 0;
	for (unsigned i = 0; i < vm->nblocks; i++)
		total += vm->blocks[i]->size;
	m->info.total = total;
	return m;
}

/*
 * Installs m as the VM's migration (freeing a finished predecessor) and
 * starts its thread. Returns 0, -EBUSY or a pthread error.
 */
static int mig_launch(ferry_vm_t *vm, struct ferry_migration *m, void *(*fn)(void *))
{
	pthread_mutex_lock(&vm->mig_lock);
	if (ferry__migration_busy(vm)) {
		pthread_mutex_unlock(&vm->mig_lock);
		return -EBUSY;
	}
	struct ferry_migration *old = vm->mig;
	vm->mig = m;
	m->status = FERRY_MIGRATION_SETUP;
	m->info.status = FERRY_MIGRATION_SETUP;
	int r = pthread_create(&m->thread, NULL, fn, m);
	if (r) {
		vm->mig = old;
		pthread_mutex_unlock(&vm->mig_lock);
		return -r;
	}
	m->thread_started = true;
	/* Before unlocking: the new thread's first status change waits for it. */
	emit_locked(m, FERRY_EVENT_STATUS, FERRY_MIGRATION_SETUP, 0);
	pthread_mutex_unlock(&vm->mig_lock);
	ferry__migration_free(old);
	return 0;
}

int ferry_uri_validate(const char *uri, char *err, size_t err_len)
{
	ferry_error e = { 0 };
	return ferry__error_out(ferry__uri_check(uri, &e), &e, err, err_len);
}

/* The limits live in params.c, shared with control planes. */
static int params_check(const ferry_migration_params *p)
{
	return ferry_migration_params_check(p, NULL, 0);
}

/* Starts a source on uri, or on fd (>= 0: uri is "fd"); closes fd on failure. */
static int start_common(ferry_vm_t *vm, const char *uri, int fd,
			const ferry_migration_params *params)
{
	int r = 0;
	if (!vm->nblocks || (params && params_check(params)))
		r = -EINVAL;
	else if (params && params->auto_converge && !vm->vcpu_ops.set_throttle)
		r = -EOPNOTSUPP;
	struct ferry_migration *m = r ? NULL : mig_new(vm, false, uri);
	if (!r && !m)
		r = -ENOMEM;
	if (r) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	if (params)
		m->params = *params;
	ferry__tls_cfg_take(&m->tls, &m->params, uri);
	m->chan.fd = fd; /* phase_connect() takes it instead of connecting */
	ferry__rl_set_rate(&m->rl, m->params.max_bandwidth);
	r = mig_launch(vm, m, ferry__source_thread);
	if (r) {
		if (fd >= 0)
			close(fd);
		ferry__migration_free(m);
	}
	return r;
}

int ferry_migration_start(ferry_vm_t *vm, const char *uri, const ferry_migration_params *params)
{
	ferry_error err = { 0 };
	if (!vm || ferry__uri_check(uri, &err))
		return -EINVAL;
	return start_common(vm, uri, -1, params);
}

/* The migration's socket blocks, as the ones libferry opens do. */
static int fd_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int ferry_migration_start_fd(ferry_vm_t *vm, int fd, const ferry_migration_params *params)
{
	if (fd < 0)
		return -EINVAL;
	int r = vm ? fd_blocking(fd) : -EINVAL;
	if (!r && params && (params->multifd || params->postcopy_preempt))
		r = -EINVAL; /* more connections than the one fd */
	if (r) {
		close(fd);
		return r;
	}
	return start_common(vm, "fd", fd, params);
}

static int incoming_common(ferry_vm_t *vm, struct ferry_migration *m)
{
	int r = mig_launch(vm, m, ferry__dest_thread);
	if (r) {
		if (m->chan.fd >= 0)
			close(m->chan.fd);
		ferry__migration_free(m);
	}
	return r;
}

int ferry_migration_incoming(ferry_vm_t *vm, const char *uri)
{
	ferry_error err = { 0 };
	if (!vm)
		return -EINVAL;
	int r = ferry__uri_check(uri, &err);
	if (r)
		return r;
	pthread_mutex_lock(&vm->mig_lock);
	bool busy = ferry__migration_busy(vm);
	pthread_mutex_unlock(&vm->mig_lock);
	if (busy)
		return -EBUSY;
	struct ferry_migration *m = mig_new(vm, true, uri);
	if (!m)
		return -ENOMEM;
	r = ferry__sock_listen(uri, &m->listen_fd, &err);
	if (r) {
		ferry_warn("%s", err.msg);
		ferry__migration_free(m);
		return r;
	}
	/* A destination never connects to its uri: keep the bound address. */
	ferry__sock_bound(m->listen_fd, m->uri, sizeof(m->uri));
	return incoming_common(vm, m);
}

int ferry_migration_incoming_address(ferry_vm_t *vm, char *buf, size_t len)
{
	if (!vm || !buf || !len)
		return -EINVAL;
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	int r = -ENOENT;
	if (m && m->incoming && strcmp(m->uri, "fd")) {
		snprintf(buf, len, "%s", m->uri);
		r = 0;
	}
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}

int ferry_migration_incoming_fd(ferry_vm_t *vm, int fd)
{
	if (!vm || fd < 0)
		return -EINVAL;
	int listening = 0;
	socklen_t len = sizeof(listening);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
		listening = 0; /* not a socket: a stream all the same */
	int r = fd_blocking(fd);
	pthread_mutex_lock(&vm->mig_lock);
	if (!r && ferry__migration_busy(vm))
		r = -EBUSY;
	pthread_mutex_unlock(&vm->mig_lock);
	struct ferry_migration *m = r ? NULL : mig_new(vm, true, "fd");
	if (!m) {
		close(fd);
		return r ? r : -ENOMEM;
	}
	if (!listening) {
		m->chan.fd = fd; /* picked up by the dest thread */
		return incoming_common(vm, m);
	}
	/* A listener: the main, multifd and preempt connections are accepted on it. */
	m->listen_fd = fd;
	ferry__sock_bound(fd, m->uri, sizeof(m->uri));
	return incoming_common(vm, m);
}

int ferry_migration_set_params(ferry_vm_t *vm, const ferry_migration_params *params)
{
	if (!vm || !params || params_check(params))
		return -EINVAL;
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	int r = -ENOENT;
	if (m && !m->incoming && !m->thread_done && !is_final(m->status)) {
		pthread_mutex_lock(&m->stats_lock);
		m->params = *params;
		pthread_mutex_unlock(&m->stats_lock);
		ferry__rl_set_rate(&m->rl, params->max_bandwidth); /* waits under way too */
		r = 0;
	}
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}

/* Snapshot of the parameters the migration thread uses now. */
void ferry__mig_params(struct ferry_migration *m, ferry_migration_params *out)
{
	pthread_mutex_lock(&m->stats_lock);
	*out = m->params;
	pthread_mutex_unlock(&m->stats_lock);
}

uint32_t ferry__mig_link_timeout_ms(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->stats_lock);
	uint32_t ms = m->params.link_timeout_ms;
	pthread_mutex_unlock(&m->stats_lock);
	return ms;
}

void ferry__mig_watch_peer(struct ferry_migration *m, int fd)
{
	ferry__sock_set_peer_timeout(fd, ferry__mig_link_timeout_ms(m));
}

/*
 * precopy/downtime/postcopy bytes from the switchover marks (under
 * stats_lock): they add up to transferred, a mark not reached yet counting
 * as now.
 */
static void bytes_split(const struct ferry_migration *m, ferry_migration_info *i)
{
	uint64_t t = i->transferred;
	uint64_t sw = m->sw_bytes && m->sw_bytes < t ? m->sw_bytes : t;
	uint64_t pc = m->pc_bytes && m->pc_bytes < t ? m->pc_bytes : t;
	if (pc < sw)
		pc = sw;
	i->precopy_bytes = sw;
	i->downtime_bytes = pc - sw;
	i->postcopy_bytes = t - pc;
}

int ferry_migration_query(ferry_vm_t *vm, ferry_migration_info *info)
{
	if (!vm || !info)
		return -EINVAL;
	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	if (!m) {
		pthread_mutex_unlock(&vm->mig_lock);
		info->status = FERRY_MIGRATION_NONE;
		return 0;
	}
	pthread_mutex_lock(&m->stats_lock);
	*info = m->info;
	info->bandwidth_peak_window_bytes = ferry__rl_peak(&m->rl); /* leaf lock */
	if (!m->incoming && info->status == FERRY_MIGRATION_ACTIVE) {
		/*
		 * Live: the limiter grants every byte of the main connection and
		 * the channels just before it is written (the same bytes as
		 * `transferred`), also while mig/src/main waits for a channel and
		 * so does not refresh the counters.
		 */
		uint64_t granted, waited;
		ferry__rl_stats(&m->rl, &granted, &waited);
		if (granted > info->transferred)
			info->transferred = granted;
	}
	bytes_split(m, info);
	uint64_t end = m->end_ns ? m->end_ns : ferry__now_ns();
	info->total_time_ms = (end - m->start_ns) / 1000000;
	ferry__pc_dst_query(m, info);
	pthread_mutex_unlock(&m->stats_lock);
	pthread_mutex_unlock(&vm->mig_lock);
	return 0;
}

/*
 * force: also in postcopy (only ferry_vm_destroy: the VM goes away, and
 * with it the half of the guest this side holds).
 */
static int mig_cancel(ferry_vm_t *vm, bool force)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	if (!m || m->thread_done || is_final(m->status)) {
		pthread_mutex_unlock(&vm->mig_lock);
		return -ENOENT;
	}
	if (is_postcopy(m->status) && !force) {
		pthread_mutex_unlock(&vm->mig_lock);
		return -EBUSY;
	}
	atomic_store(&m->cancel, true);
	if (force) {
		int pfd = atomic_load(&m->preempt_fd);
		if (pfd >= 0)
			shutdown(pfd, SHUT_RDWR);
		if (m->recover_fd >= 0)
			shutdown(m->recover_fd, SHUT_RDWR);
		pthread_cond_broadcast(&vm->mig_cond); /* a paused postcopy waits there */
	}
	/* Wake the thread wherever it blocks: accept, connect, read or write. */
	if (m->listen_fd >= 0)
		shutdown(m->listen_fd, SHUT_RDWR);
	int fd = atomic_load(&m->chan_fd);
	/*
	 * Both sides only stop reading at first. The destination still tells
	 * the source why (SHUT "cancelled on the destination") before it
	 * closes. On the source this wakes the return path thread, which gives
	 * the main thread a moment to finish its write and send the cancel
	 * notice (FERRY_REC_CANCELLED) before it cuts every connection
	 * (source.c, await_bye); the multifd channels finish their packet.
	 */
	bool cut = force && !m->incoming;
	if (fd >= 0)
		shutdown(fd, cut ? SHUT_RDWR : SHUT_RD);
	ferry__mf_cancel(m, cut || m->incoming);
	if (m->status != FERRY_MIGRATION_CANCELLING) {
		m->status = FERRY_MIGRATION_CANCELLING;
		pthread_mutex_lock(&m->stats_lock);
		m->info.status = FERRY_MIGRATION_CANCELLING;
		pthread_mutex_unlock(&m->stats_lock);
		emit_locked(m, FERRY_EVENT_STATUS, FERRY_MIGRATION_CANCELLING, 0);
	}
	pthread_mutex_unlock(&vm->mig_lock);
	pthread_mutex_lock(&m->rp_lock);
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
	return 0;
}

int ferry_migration_cancel(ferry_vm_t *vm)
{
	return mig_cancel(vm, false);
}

void ferry__migration_abort(ferry_vm_t *vm)
{
	mig_cancel(vm, true);
}

int ferry_migration_wait(ferry_vm_t *vm, int timeout_ms)
{
	if (!vm)
		return -EINVAL;
	struct timespec dl = ferry__deadline_ms(timeout_ms >= 0 ? (uint64_t)timeout_ms : 0);
	pthread_mutex_lock(&vm->mig_lock);
	int r;
	for (;;) {
		struct ferry_migration *m = vm->mig;
		if (!m) {
			r = FERRY_MIGRATION_NONE;
			break;
		}
		if (m->thread_done) {
			r = (int)m->status;
			break;
		}
		if (timeout_ms < 0) {
			pthread_cond_wait(&vm->mig_cond, &vm->mig_lock);
		} else if (pthread_cond_timedwait(&vm->mig_cond, &vm->mig_lock, &dl) == ETIMEDOUT) {
			r = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}

void ferry__mig_thread_done(struct ferry_migration *m)
{
	ferry_vm_t *vm = m->vm;
	ferry__bufpool_trim(m->bufs); /* every buffer is back: the participants cleaned up */
	pthread_mutex_lock(&vm->mig_lock);
	m->thread_done = true;
	pthread_cond_broadcast(&vm->mig_cond);
	pthread_mutex_unlock(&vm->mig_lock);
}

int ferry_migration_start_postcopy(ferry_vm_t *vm)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	int r = -ENOENT;
	if (m && !m->incoming && !m->thread_done && !is_final(m->status)) {
		pthread_mutex_lock(&m->stats_lock);
		bool on = m->params.postcopy;
		pthread_mutex_unlock(&m->stats_lock);
		r = on ? 0 : -EINVAL;
		if (on)
			atomic_store(&m->pc_start, true);
	}
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}

int ferry_migration_set_incoming_params(ferry_vm_t *vm, const ferry_migration_params *params)
{
	if (!vm || !params || params_check(params))
		return -EINVAL;
	/* The VM keeps references until the next call (or its end): the caller may drop its own. */
	ferry_tls_creds_ref(params->tls_creds);
	ferry_tls_authz_ref(params->tls_authz);
	pthread_mutex_lock(&vm->mig_lock);
	ferry_migration_params old = vm->in_params;
	vm->in_params = *params;
	pthread_mutex_unlock(&vm->mig_lock);
	ferry_tls_creds_unref(old.tls_creds);
	ferry_tls_authz_unref(old.tls_authz);
	return 0;
}

int ferry_migration_set_autostart(ferry_vm_t *vm, bool on)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->mig_lock);
	vm->no_autostart = !on;
	pthread_mutex_unlock(&vm->mig_lock);
	return 0;
}

bool ferry__vm_autostart(ferry_vm_t *vm)
{
	pthread_mutex_lock(&vm->mig_lock);
	bool on = !vm->no_autostart;
	pthread_mutex_unlock(&vm->mig_lock);
	return on;
}

int ferry_migration_pause(ferry_vm_t *vm)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	int r = -ENOENT;
	if (m && !m->thread_done && m->status == FERRY_MIGRATION_POSTCOPY_ACTIVE) {
		ferry__mig_cut(m, FERRY_PAUSE_ASKED_MSG);
		r = 0;
	}
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}

/* The listener a paused destination waits on: listens on uri, or takes fd (>= 0). */
static int recover_listen(ferry_vm_t *vm, const char *uri, int fd)
{
	ferry_error err = { 0 };
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	if (!m || !m->incoming || m->thread_done || m->status != FERRY_MIGRATION_POSTCOPY_PAUSED ||
	    m->recover_fd >= 0) {
		pthread_mutex_unlock(&vm->mig_lock);
		if (fd >= 0)
			close(fd);
		return -ENOENT;
	}
	int r = fd >= 0 ? 0 : ferry__sock_listen(uri, &fd, &err);
	if (r) {
		pthread_mutex_unlock(&vm->mig_lock);
		ferry_warn("%s", err.msg);
		return r;
	}
	m->recover_fd = fd;
	pthread_cond_broadcast(&vm->mig_cond);
	pthread_mutex_unlock(&vm->mig_lock);
	return 0;
}

int ferry_migration_recover(ferry_vm_t *vm, const char *uri)
{
	ferry_error err = { 0 };
	if (!vm || ferry__uri_check(uri, &err))
		return -EINVAL;
	return recover_listen(vm, uri, -1);
}

int ferry_migration_recover_fd(ferry_vm_t *vm, int fd)
{
	if (fd < 0)
		return -EINVAL;
	int listening = 0;
	socklen_t len = sizeof(listening);
	int r = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ? -errno : 0;
	if (!r && !listening)
		r = -EINVAL;
	if (!r)
		r = vm ? fd_blocking(fd) : -EINVAL;
	if (r) {
		close(fd);
		return r;
	}
	return recover_listen(vm, NULL, fd);
}

int ferry_migration_resume(ferry_vm_t *vm, const char *uri)
{
	ferry_error err = { 0 };
	if (!vm || ferry__uri_check(uri, &err))
		return -EINVAL;
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	int r = -ENOENT;
	if (m && !m->incoming && !m->thread_done && m->status == FERRY_MIGRATION_POSTCOPY_PAUSED &&
	    !m->resume_req) {
		snprintf(m->resume_uri, sizeof(m->resume_uri), "%s", uri);
		m->resume_req = true;
		pthread_cond_broadcast(&vm->mig_cond);
		r = 0;
	}
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}
