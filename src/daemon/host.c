/* SPDX-License-Identifier: MIT */
/*
 * `ferry host`: runs the synthetic guest, embedded through libferry's
 * public API, and serves QMP on one or more sockets. Every migration is
 * driven through QMP (`migrate`, `migrate-incoming`, ...; see docs/qmp.md).
 *
 * Its configuration (ferry_host_config, daemon.h; on the command line the
 * flags of src/cli/host-cmd.c) decides what the host is at start:
 *   (no --incoming)      a source: the guest is created with its initial
 *                        fill and starts running (unless the guest spec
 *                        says `paused`: QEMU's -S, status "prelaunch").
 *   --incoming URI       a destination listening on URI at once. When the
 *                        migration completes the host runs the guest and
 *                        can migrate it on; when it fails or is cancelled
 *                        the received state is discarded (RAM and vCPUs
 *                        reset) and it listens on URI again, or exits
 *                        with status 1 under --exit-on-error.
 *   --incoming defer     a destination waiting for `migrate-incoming`;
 *                        after a failure it waits for a new one.
 * `quit` (or SIGINT/SIGTERM) ends the process with status 0, at once: it
 * interrupts the guest operation the worker runs (x-run-until: a cancel
 * flag the guest's run loop checks, host_ops_interrupt) before joining it,
 * and removes the unix socket files the host bound if they are still its
 * own (ferry_sock_file, ferry/transport.h); a live server's socket or any
 * other file at a --qmp or --incoming path is refused, never replaced.
 *
 * DESIGN: everything happens on the main thread's event loop (loop.c):
 * QMP connections (qmp.c), one eventfd for the two kinds of hand-back
 * from other threads, and a signalfd. libferry's event callback runs on
 * migration threads with libferry's lock held, so it only appends the
 * event to a bounded ring and writes the eventfd; the loop drains the
 * ring, turns each event into QMP (MIGRATION, MIGRATION_PASS, STOP,
 * RESUME) and updates the host's state. Slow guest work (hashing GiBs,
 * running the oracle's twin, run-until, reset) goes to one worker thread
 * through the guest-operation queue (host.h), so a `query-migrate` is
 * never stuck behind it. The ring drops MIGRATION_PASS events first when
 * it is three quarters full (a loop that far behind has worse problems);
 * status events always fit.
 *
 * Thread: main (the loop) unless a function says otherwise; see host.h.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "daemon.h"
#include "host.h"
#include "balloon-drv.h"

#define HOST_ADDR_MAX FERRY_HOST_ADDR_MAX

/* ------------------------------------------------------------------ */
/* Hand-back from other threads.                                       */

/* Thread: any. Wake-ups coalesce: one read drains any number of writes. */
static void wake(host *h)
{
	uint64_t one = 1;
	while (write(h->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	/* EAGAIN would mean 2^64-1 pending wake-ups: the loop wakes anyway. */
}

static void post(host *h, const ferry_event *ev)
{
	pthread_mutex_lock(&h->ev_lock);
	bool full = h->ring_len == HOST_EVENT_RING ||
		    (ev->type == FERRY_EVENT_PASS && h->ring_len >= HOST_EVENT_RING * 3 / 4);
	if (full) {
		h->ring_dropped++;
	} else {
		h->ring[(h->ring_head + h->ring_len) % HOST_EVENT_RING] = *ev;
		h->ring_len++;
	}
	pthread_mutex_unlock(&h->ev_lock);
	wake(h);
}

/*
 * libferry's event callback. Thread: a migration thread (or whichever
 * thread called ferry_migration_start/_cancel), with libferry's mig_lock
 * held: no blocking, no libferry calls.
 */
static void on_ferry_event(void *opaque, const ferry_event *ev)
{
	post(opaque, ev);
}

void host_post_event(host *h, ferry_event_type type)
{
	ferry_event ev = { .type = type, .timestamp_us = ferry_qmp_wall_us() };
	post(h, &ev);
}

/* As QEMU's, MIGRATION and MIGRATION_PASS go out only with the "events" capability on. */
static void send_status(host *h, ferry_migration_status s, uint64_t ts)
{
	if (h->cap_events)
		ferry_qmp_server_event(h->qmp, "MIGRATION",
				       json_pack("{s:s}", "status", ferry_migration_status_name(s)), ts);
}

static void deliver(host *h, const ferry_event *ev)
{
	switch (ev->type) {
	case FERRY_EVENT_STATUS: {
		ferry_migration_status s = ev->status;
		/*
		 * libferry reads the status when it sends the event, so a status
		 * that changed quickly can arrive twice, and the first one of a
		 * migration (sent by the starting thread after the migration
		 * thread runs) or the cancel's "cancelling" can be overtaken.
		 * Clients get QEMU's sequence: each status once, setup first,
		 * cancelling before cancelled.
		 */
		if (s == h->ev_last)
			return;
		if (h->ev_last == FERRY_MIGRATION_NONE && s != FERRY_MIGRATION_SETUP)
			send_status(h, FERRY_MIGRATION_SETUP, ev->timestamp_us);
		if (s == FERRY_MIGRATION_CANCELLED && h->ev_last != FERRY_MIGRATION_CANCELLING)
			send_status(h, FERRY_MIGRATION_CANCELLING, ev->timestamp_us);
		send_status(h, s, ev->timestamp_us);
		h->ev_last = s;
		host_on_status(h, s);
		return;
	}
	case FERRY_EVENT_PASS:
		if (h->cap_events)
			ferry_qmp_server_event(h->qmp, "MIGRATION_PASS",
					       json_pack("{s:I}", "pass", (json_int_t)ev->pass),
					       ev->timestamp_us);
		return;
	case FERRY_EVENT_STOP:
		ferry_qmp_server_event(h->qmp, "STOP", NULL, ev->timestamp_us);
		return;
	case FERRY_EVENT_RESUME:
		ferry_qmp_server_event(h->qmp, "RESUME", NULL, ev->timestamp_us);
		host_on_resume(h);
		return;
	}
}

void host_drain_events(host *h)
{
	for (;;) {
		pthread_mutex_lock(&h->ev_lock);
		if (!h->ring_len) {
			uint64_t dropped = h->ring_dropped;
			h->ring_dropped = 0;
			pthread_mutex_unlock(&h->ev_lock);
			if (dropped)
				fprintf(stderr, "ferry host: %llu MIGRATION_PASS events dropped (loop too slow)\n",
					(unsigned long long)dropped);
			return;
		}
		ferry_event ev = h->ring[h->ring_head];
		h->ring_head = (h->ring_head + 1) % HOST_EVENT_RING;
		h->ring_len--;
		pthread_mutex_unlock(&h->ev_lock);
		deliver(h, &ev);
	}
}

/* ------------------------------------------------------------------ */
/* Guest operations.                                                   */

host_op *host_op_new(const char *what, ferry_qmp_req *req, json_t *args,
		     bool (*check)(host *h, host_op *op), host_op_fn work, host_op_fn done)
{
	host_op *op = calloc(1, sizeof(*op));
	if (!op) {
		if (req)
			ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "Out of memory");
		return NULL;
	}
	op->what = what;
	op->req = req;
	op->args = args ? json_incref(args) : NULL;
	op->check = check;
	op->work = work;
	op->done = done;
	return op;
}

static void op_free(host_op *op)
{
	json_decref(op->args);
	free(op);
}

/* Runs the queue until its head needs the worker (or it is empty). */
static void ops_pump(host *h)
{
	static bool pumping; /* the loop thread is the only caller */
	if (pumping)
		return;
	pumping = true;
	while (h->ops_head && !h->op_on_worker) {
		/*
		 * Bring the state up to date with what libferry reported before
		 * judging the head: a failed incoming migration reported just now
		 * queues its reset in front of it.
		 */
		host_drain_events(h);
		host_op *op = h->ops_head;
		if (op->check && !op->check(h, op)) {
			h->ops_head = op->next;
			if (!h->ops_head)
				h->ops_tail = NULL;
			op_free(op);
			continue;
		}
		if (op->work) {
			pthread_mutex_lock(&h->ev_lock);
			h->work_item = op;
			pthread_cond_signal(&h->work_cond);
			pthread_mutex_unlock(&h->ev_lock);
			h->op_on_worker = true;
			break;
		}
		h->ops_head = op->next;
		if (!h->ops_head)
			h->ops_tail = NULL;
		op->done(h, op);
		op_free(op);
	}
	pumping = false;
}

void host_op_submit_urgent(host *h, host_op *op)
{
	if (!op)
		return;
	/* After the op the worker runs (it cannot be taken back), else first. */
	host_op **at = h->op_on_worker ? &h->ops_head->next : &h->ops_head;
	op->next = *at;
	*at = op;
	if (!op->next)
		h->ops_tail = op;
	ops_pump(h);
}

void host_op_submit(host *h, host_op *op)
{
	if (!op)
		return;
	op->next = NULL;
	if (h->ops_tail)
		h->ops_tail->next = op;
	else
		h->ops_head = op;
	h->ops_tail = op;
	ops_pump(h);
}

static void *worker_main(void *arg)
{
	host *h = arg;
	pthread_setname_np(pthread_self(), "host/worker");
	pthread_mutex_lock(&h->ev_lock);
	for (;;) {
		while (!h->work_item && !h->worker_quit)
			pthread_cond_wait(&h->work_cond, &h->ev_lock);
		host_op *op = h->work_item;
		if (!op)
			break;
		h->work_item = NULL;
		pthread_mutex_unlock(&h->ev_lock);
		op->work(h, op);
		pthread_mutex_lock(&h->ev_lock);
		/*
		 * Not through op->next: op is still the queue's head, and next
		 * links the operations queued behind it.
		 */
		h->done_ops = op;
		pthread_mutex_unlock(&h->ev_lock);
		wake(h);
		pthread_mutex_lock(&h->ev_lock);
	}
	pthread_mutex_unlock(&h->ev_lock);
	return NULL;
}

static void on_wake(void *opaque, uint32_t events)
{
	host *h = opaque;
	uint64_t n;
	(void)events;
	while (read(h->wake_fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
	/* Events first: a STOP the worker caused goes out before its reply. */
	host_drain_events(h);
	pthread_mutex_lock(&h->ev_lock);
	host_op *back = h->done_ops;
	h->done_ops = NULL;
	pthread_mutex_unlock(&h->ev_lock);
	if (back) {
		/* Only the queue's head is ever on the worker. */
		host_op *op = h->ops_head;
		h->ops_head = op->next;
		if (!h->ops_head)
			h->ops_tail = NULL;
		h->op_on_worker = false;
		host_drain_events(h);
		op->done(h, op);
		op_free(op);
		ops_pump(h);
	}
}

/* Completes every queued operation with an error (the host is stopping). */
static void ops_abort(host *h)
{
	while (h->ops_head) {
		host_op *op = h->ops_head;
		h->ops_head = op->next;
		if (op->req)
			ferry_qmp_req_error(op->req, FERRY_QMP_GENERIC, "The host is shutting down");
		op_free(op);
	}
	h->ops_tail = NULL;
}

/* ------------------------------------------------------------------ */
/* Process.                                                            */

void host_ops_interrupt(host *h, const char *by)
{
	for (host_op *op = h->ops_head; op; op = op->next) {
		if (!op->interrupt || atomic_load(&op->cancel))
			continue;
		op->cancelled_by = by;
		atomic_store(&op->cancel, true);
		op->interrupt(h, op);
	}
}

void host_quit(host *h, int code)
{
	h->exit_code = code;
	h->quitting = true;
	host_ops_interrupt(h, NULL); /* teardown joins the worker */
	ferry_loop_stop(h->loop);
}

static void on_signal(void *opaque, uint32_t events)
{
	host *h = opaque;
	struct signalfd_siginfo si;
	(void)events;
	ssize_t n = read(h->sig_fd, &si, sizeof(si));
	if (n == (ssize_t)sizeof(si)) {
		fprintf(stderr, "ferry host: %s, exiting\n", strsignal((int)si.ssi_signo));
		host_quit(h, 0);
	}
}

static void print_ready(const host *h, char (*qmp)[HOST_ADDR_MAX], int nqmp)
{
	json_t *a = json_array();
	for (int i = 0; i < nqmp; i++)
		json_array_append_new(a, json_string(qmp[i]));
	json_t *o = json_pack("{s:o,s:o,s:I}", "listening",
			      h->incoming == HOST_INCOMING_URI ? json_string(h->incoming_uri)
			      : h->incoming == HOST_INCOMING_DEFER ? json_string("defer")
								   : json_null(),
			      "qmp", a, "pid", (json_int_t)getpid());
	char *s = json_dumps(o, JSON_COMPACT);
	printf("%s\n", s);
	fflush(stdout);
	free(s);
	json_decref(o);
}

/*
 * A virtio-balloon with free page hints over the guest's physical layout:
 * its state and its free page queue's are device state (both sides
 * register them, so they migrate), it is attached to the VM (outgoing
 * migrations ask it for hints), and the guest gets its driver, answering
 * in the background. An incoming guest's driver attaches in its first
 * round, once the guest runs on the destination: its rings arrive with its
 * RAM, so it can answer hints when the guest migrates on.
 */
static int balloon_setup(host *h)
{
	ferry_gpa_region reg[4];
	int n = ferry_guest_gpa_regions(h->g, reg, 4), r;
	if (n < 0 || (r = ferry_gpa_map_create(reg, (unsigned)n, &h->gpa)) ||
	    (r = ferry_balloon_create(h->gpa, &h->balloon)) ||
	    (r = ferry_device_register(h->vm, "virtio-balloon", 0, ferry_balloon_vmsd(),
				       h->balloon)) ||
	    (r = ferry_device_register(h->vm, "virtio-balloon-fpq", 0, ferry_vq_vmsd(),
				       ferry_balloon_free_page_vq(h->balloon))) ||
	    (r = ferry_vm_set_hint_ops(h->vm, ferry_balloon_hint_ops(), h->balloon))) {
		r = n < 0 ? n : r;
		fprintf(stderr, "ferry host: cannot set up the balloon: %s\n", ferry_strerror(r));
		return r;
	}
	ferry_guest_balloon_opts bo = { .background = true,
					.deferred = h->incoming != HOST_INCOMING_NONE };
	if ((r = ferry_guest_balloon_create(h->g, h->balloon, &bo, &h->bdrv)))
		fprintf(stderr, "ferry host: cannot start the guest's balloon driver: %s\n",
			ferry_strerror(r));
	return r;
}

/* qmp[i] is replaced by the address bound (the port chosen for port 0). */
static int host_setup(host *h, char (*qmp)[HOST_ADDR_MAX], int nqmp, ferry_dirty_mode dmode)
{
	char err[512];
	int r;
	ferry_vm_options vo = { .dirty_mode = dmode };
	if ((r = ferry_vm_create(&vo, &h->vm))) {
		fprintf(stderr, "ferry host: cannot create VM: %s\n", ferry_strerror(r));
		return r;
	}
	r = ferry_guest_create(&h->cfg, h->incoming != HOST_INCOMING_NONE, &h->g);
	if (!r)
		r = ferry_guest_attach(h->g, h->vm);
	if (r) {
		fprintf(stderr, "ferry host: cannot create guest: %s\n", ferry_strerror(r));
		return r;
	}
	if (h->cfg.balloon && (r = balloon_setup(h)))
		return r;
	if ((r = ferry_loop_create(&h->loop))) {
		fprintf(stderr, "ferry host: cannot create event loop: %s\n", strerror(-r));
		return r;
	}
	h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (h->wake_fd < 0) {
		r = -errno;
		fprintf(stderr, "ferry host: eventfd: %s\n", strerror(-r));
		return r;
	}
	if ((r = ferry_loop_watch_add(h->loop, h->wake_fd, EPOLLIN, on_wake, h, &h->wake_w)) ||
	    (r = ferry_loop_watch_add(h->loop, h->sig_fd, EPOLLIN, on_signal, h, &h->sig_w))) {
		fprintf(stderr, "ferry host: epoll: %s\n", strerror(-r));
		return r;
	}
	if ((r = -pthread_create(&h->worker, NULL, worker_main, h))) {
		fprintf(stderr, "ferry host: cannot start the worker: %s\n", strerror(-r));
		return r;
	}
	h->worker_ok = true;
	if (!(h->version = host_version()))
		return -ENOMEM;
	host_qmp_init();
	ferry_qmp_config qc = { .commands = host_commands,
				.events = host_events,
				.opaque = h,
				.version = h->version };
	if ((r = ferry_qmp_server_create(h->loop, &qc, &h->qmp))) {
		fprintf(stderr, "ferry host: %s\n", strerror(-r));
		return r;
	}
	for (int i = 0; i < nqmp; i++) {
		if ((r = ferry_qmp_server_listen(h->qmp, qmp[i], qmp[i], HOST_ADDR_MAX, err,
						 sizeof(err)))) {
			fprintf(stderr, "ferry host: --qmp: %s\n", err);
			return r;
		}
	}
	ferry_migration_set_event_cb(h->vm, on_ferry_event, h);
	h->inmigrate = h->incoming != HOST_INCOMING_NONE;
	if (h->inmigrate && h->no_autostart) /* QEMU's -S on a destination; `cont` undoes it */
		ferry_migration_set_autostart(h->vm, false);
	if (h->tls_dir &&
	    (r = host_tls_from_dir(h->tls_dir, h->tls_psk, h->inmigrate, err, sizeof(err)))) {
		fprintf(stderr, "ferry host: --tls%s: %s\n", h->tls_psk ? "-psk" : "", err);
		return r;
	}
	if (h->incoming == HOST_INCOMING_URI &&
	    (r = host_incoming_start(h, h->incoming_uri, err, sizeof(err)))) {
		fprintf(stderr, "ferry host: --incoming: %s\n", err);
		return r;
	}
	if (h->incoming == HOST_INCOMING_NONE && !h->cfg.paused) {
		if ((r = ferry_vm_start(h->vm))) {
			fprintf(stderr, "ferry host: cannot start the guest: %s\n", ferry_strerror(r));
			return r;
		}
		h->ever_ran = true;
	}
	return 0;
}

static void host_teardown(host *h)
{
	if (h->vm)
		ferry_migration_set_event_cb(h->vm, NULL, NULL);
	if (h->worker_ok) {
		host_ops_interrupt(h, NULL);
		pthread_mutex_lock(&h->ev_lock);
		h->worker_quit = true;
		pthread_cond_signal(&h->work_cond);
		pthread_mutex_unlock(&h->ev_lock);
		pthread_join(h->worker, NULL); /* finishes the operation it runs */
		/* An operation it handed back is still the queue's head: freed below. */
		h->done_ops = NULL;
	}
	ops_abort(h);
	if (h->vm)
		host_incoming_release(h);
	if (h->qmp) {
		ferry_qmp_server_flush(h->qmp, 1000);
		ferry_qmp_server_destroy(h->qmp);
	}
	ferry_loop_watch_remove(h->wake_w);
	ferry_loop_watch_remove(h->sig_w);
	ferry_loop_destroy(h->loop);
	ferry_vm_destroy(h->vm); /* cancels a migration and joins its threads */
	ferry_guest_destroy(h->g);
	if (h->bdrv) /* after the guest: its activity thread used the driver */
		ferry_guest_balloon_destroy(h->bdrv);
	ferry_balloon_destroy(h->balloon);
	ferry_gpa_map_destroy(h->gpa);
	if (h->wake_fd >= 0)
		close(h->wake_fd);
	if (h->sig_fd >= 0)
		close(h->sig_fd);
	json_decref(h->prev_incoming);
	json_decref(h->version);
	pthread_mutex_destroy(&h->ev_lock);
	pthread_cond_destroy(&h->work_cond);
}

/* A host in its initial state, from cfg; NULL if out of memory. */
static host *host_new(const ferry_host_config *cfg)
{
	host *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->cfg = cfg->guest;
	h->wake_fd = h->sig_fd = -1;
	h->cap_events = false; /* QEMU's default */
	ferry_migration_params_init(&h->params);
	h->exit_on_error = h->exit_on_error_flag = cfg->exit_on_error;
	h->no_autostart = cfg->no_autostart;
	h->tls_dir = cfg->tls_dir;
	h->tls_psk = cfg->tls_psk;
	if (cfg->incoming && !strcmp(cfg->incoming, "defer")) {
		h->incoming = HOST_INCOMING_DEFER;
	} else if (cfg->incoming) {
		h->incoming = HOST_INCOMING_URI;
		snprintf(h->incoming_uri, sizeof(h->incoming_uri), "%s", cfg->incoming);
	}
	pthread_mutex_init(&h->ev_lock, NULL);
	pthread_cond_init(&h->work_cond, NULL);
	return h;
}

/*
 * Signals are read from a signalfd by the loop. They are blocked before any
 * thread exists (guest vCPUs, libferry, the worker inherit the mask), so
 * none of those threads is ever interrupted by one. Returns the signalfd
 * or a negative errno.
 */
static int signals_take(void)
{
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	int fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* The line on stderr once the host listens (without --json). */
static void print_start(const host *h, const char *qmp0, int nqmp)
{
	fprintf(stderr, "ferry host: QMP on %s%s; %s%s\n", qmp0, nqmp > 1 ? " (and more)" : "",
		h->incoming == HOST_INCOMING_URI     ? "waiting for a migration on "
		: h->incoming == HOST_INCOMING_DEFER ? "waiting for migrate-incoming"
		: h->cfg.paused			     ? "guest stopped (prelaunch)"
						     : "guest running",
		h->incoming == HOST_INCOMING_URI ? h->incoming_uri : "");
}

int ferry_host_run(const ferry_host_config *cfg)
{
	char qmp[FERRY_HOST_MAX_QMP][HOST_ADDR_MAX]; /* bound addresses replace them */
	int nqmp = cfg->nqmp, rc = 1;
	for (int i = 0; i < nqmp; i++)
		snprintf(qmp[i], sizeof(qmp[i]), "%s", cfg->qmp[i]);
	host *h = host_new(cfg);
	if (!h) {
		fprintf(stderr, "ferry host: out of memory\n");
		return 1;
	}
	if ((h->sig_fd = signals_take()) < 0) {
		fprintf(stderr, "ferry host: signalfd: %s\n", strerror(-h->sig_fd));
		goto out;
	}
	if (host_setup(h, qmp, nqmp, cfg->dirty))
		goto out;
	if (cfg->json)
		print_ready(h, qmp, nqmp);
	else
		print_start(h, qmp[0], nqmp);
	int r = ferry_loop_run(h->loop);
	if (r) {
		fprintf(stderr, "ferry host: event loop: %s\n", strerror(-r));
		h->exit_code = 1;
	}
	rc = h->exit_code;
out:
	host_teardown(h);
	free(h);
	return rc;
}
