/* SPDX-License-Identifier: MIT */
/*
 * What the targets that drive the real destination share (stream,
 * pcstream, multifd): the VM of fuzz-vm.h as a destination, and one
 * incoming migration into it, through the public API
 * (ferry_migration_incoming_fd), whose peer is the target: it writes the
 * bytes a hostile source would send on each connection, reads and drops
 * whatever the destination writes back (the return path), and waits for
 * the migration's end.
 *
 * The oracle for a refusal: a migration that did not complete FAILED with
 * an error code and a message (query-migrate's error and error-desc),
 * never CANCELLED (nobody cancels), and the next migration can start (the
 * VM is stopped again if the stream ran it). With postcopy allowed
 * (pcstream), a stream that breaks after RUN may also leave the
 * destination POSTCOPY_PAUSED, as a broken link does: it waits for a
 * recovery that never comes, so fuzz_dest_renew() destroys the VM (the
 * one public way to end a paused migration: ferry_migration_cancel
 * refuses postcopy) and makes a new one.
 *
 * Device buffers are not reserved ahead (ferry__bufpool_reserve_on, the
 * one hook of the library for these targets: 20x faster runs).
 *
 * Pages are placed with pwrite or into the mapping. Without postcopy
 * (stream, multifd) its commands are refused and a run registers no
 * userfaultfd; with it (pcstream), LISTEN registers the RAM blocks for
 * missing-page faults. Thread: libFuzzer's one thread, while libferry's
 * destination threads (mig/dst/main and its helpers) run the loader.
 */
#ifndef FERRY_FUZZ_DEST_H
#define FERRY_FUZZ_DEST_H

#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fuzz-check.h"
#include "fuzz-vm.h"
#include "util/bufpool.h"

/* One connection to the destination: our end, and what we still have to send on it. */
typedef struct fuzz_conn {
	int fd;
	const uint8_t *data;
	size_t len, off;
	bool shut;   /* all sent: our write side shut down */
	bool closed; /* the destination closed it (EOF or reset) */
	/*
	 * Never shut by us: it stays open (all sent) until the connections
	 * without hold are closed, as a source keeps its preempt connection
	 * open while the main one runs (fuzz-pcconn.c).
	 */
	bool hold;
} fuzz_conn;

static fuzz_vm fuzz_dst;
static bool fuzz_dst_postcopy; /* postcopy-ram on the destination (pcstream, pcconn) */
static uint32_t fuzz_dst_link_timeout_ms; /* x-link-timeout, 0: the default */
/* Called by fuzz_dest_renew between the VM's end and its RAM's (pcconn: joins its vCPU). */
static void (*fuzz_dst_vm_gone)(void);

/* The destination VM and its incoming parameters. */
static inline void fuzz_dest_create(void)
{
	CHECK(fuzz_vm_create(&fuzz_dst, false) == 0);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.placement = FERRY_PLACE_PWRITE;
	p.switchover_ack = true; /* as the recorded sources may ask */
	p.postcopy = fuzz_dst_postcopy;
	if (fuzz_dst_link_timeout_ms)
		p.link_timeout_ms = fuzz_dst_link_timeout_ms;
	CHECK(ferry_migration_set_incoming_params(fuzz_dst.vm, &p) == 0);
}

/*
 * Unix socket addresses in the abstract namespace (nothing to unlink):
 * "ferry-fuzz-TARGET-PID-K", K telling a target's listeners apart.
 */
static inline socklen_t fuzz_sock_addr(struct sockaddr_un *a, const char *target, unsigned k)
{
	*a = (struct sockaddr_un){ .sun_family = AF_UNIX };
	int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "ferry-fuzz-%s-%d-%u", target,
			 (int)getpid(), k);
	CHECK(n > 0 && (size_t)n < sizeof(a->sun_path) - 1);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* A listening socket at fuzz_sock_addr(target, k). */
static inline int fuzz_listen(const char *target, unsigned k)
{
	struct sockaddr_un a;
	socklen_t al = fuzz_sock_addr(&a, target, k);
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(l >= 0 && bind(l, (struct sockaddr *)&a, al) == 0 && listen(l, 4) == 0);
	return l;
}

/* A connection to fuzz_listen(target, k)'s socket (queued until accepted). */
static inline int fuzz_connect(const char *target, unsigned k)
{
	struct sockaddr_un a;
	socklen_t al = fuzz_sock_addr(&a, target, k);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(s >= 0 && connect(s, (struct sockaddr *)&a, al) == 0);
	return s;
}

/* Once per process: the destination VM, with postcopy allowed or not. */
static inline void fuzz_dest_init(bool postcopy)
{
	ferry__bufpool_reserve_on = false; /* a migration per input: see bufpool.h */
	fuzz_dst_postcopy = postcopy;
	fuzz_dest_create();
}

/*
 * Sends each connection's data (then shuts its write side, but a held
 * one's) while reading what the destination writes, until the destination
 * closed every connection without hold.
 */
static inline void fuzz_dest_pump(fuzz_conn *cs, unsigned n)
{
	for (;;) {
		struct pollfd p[4];
		unsigned open = 0;
		for (unsigned i = 0; i < n; i++) {
			fuzz_conn *c = &cs[i];
			if (!c->shut && !c->hold && c->off == c->len) {
				shutdown(c->fd, SHUT_WR);
				c->shut = true;
			}
			p[i] = (struct pollfd){ .fd = c->closed ? -1 : c->fd,
						.events = POLLIN | (c->off < c->len ? POLLOUT : 0) };
			open += !c->closed && !c->hold;
		}
		if (!open)
			return;
		int np = poll(p, n, -1);
		if (np < 0 && errno == EINTR)
			continue;
		if (np < 0)
			fprintf(stderr, "poll: %s\n", strerror(errno));
		CHECK(np > 0);
		for (unsigned i = 0; i < n; i++) {
			fuzz_conn *c = &cs[i];
			if (p[i].revents & POLLOUT) {
				ssize_t w = send(c->fd, c->data + c->off, c->len - c->off,
						 MSG_NOSIGNAL | MSG_DONTWAIT);
				if (w > 0)
					c->off += (size_t)w;
				else if (w < 0 && errno != EAGAIN && errno != EINTR)
					c->off = c->len; /* the destination is gone */
			}
			if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				char buf[4096];
				ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
				if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
					c->closed = true;
					c->off = c->len;
				}
			}
		}
	}
}

/*
 * Waits for the end of the migration the target fed: its final status, or
 * POSTCOPY_PAUSED, which only a destination that allows postcopy reaches
 * and never leaves by itself (ferry_migration_wait returns at the end
 * only: polled).
 */
static inline int fuzz_dest_wait(void)
{
	if (!fuzz_dst_postcopy)
		return ferry_migration_wait(fuzz_dst.vm, -1);
	for (;;) {
		int st = ferry_migration_wait(fuzz_dst.vm, 1);
		if (st != -ETIMEDOUT)
			return st;
		ferry_migration_info info;
		CHECK(ferry_migration_query(fuzz_dst.vm, &info) == 0);
		if (info.status == FERRY_MIGRATION_POSTCOPY_PAUSED)
			return FERRY_MIGRATION_POSTCOPY_PAUSED;
	}
}

/*
 * Waits for the end of the migration the target fed, and judges it.
 * Returns the status: COMPLETED, FAILED, or (postcopy allowed) PAUSED,
 * which only fuzz_dest_renew() ends.
 */
static inline int fuzz_dest_finish(void)
{
	int st = fuzz_dest_wait();
	ferry_migration_info info;
	CHECK(ferry_migration_query(fuzz_dst.vm, &info) == 0);
	if (st == FERRY_MIGRATION_POSTCOPY_PAUSED) {
		if (getenv("FUZZ_VERBOSE"))
			fprintf(stderr, "paused: %d %s\n", info.error, info.error_desc);
		/* As documented: the guest runs here, nothing to go back to. */
		CHECK(fuzz_dst_postcopy && ferry_migration_cancel(fuzz_dst.vm) == -EBUSY);
		return st;
	}
	CHECK(st == FERRY_MIGRATION_COMPLETED || st == FERRY_MIGRATION_FAILED);
	if (st == FERRY_MIGRATION_FAILED) {
		if (getenv("FUZZ_VERBOSE"))
			fprintf(stderr, "refused: %d %s\n", info.error, info.error_desc);
		CHECK(info.error < 0 && info.error_desc[0]);
	} else if (getenv("FUZZ_VERBOSE")) {
		fprintf(stderr, "completed%s (%llu faults)\n", info.postcopy ? " in postcopy" : "",
			(unsigned long long)info.postcopy_faults);
	}
	if (ferry_vm_is_running(fuzz_dst.vm))
		CHECK(ferry_vm_stop(fuzz_dst.vm) == 0);
	return st;
}

/* One migration whose main connection carries data (stream, pcstream): fed, then judged. */
static inline void fuzz_dest_feed_main(const uint8_t *data, size_t size)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK(ferry_migration_incoming_fd(fuzz_dst.vm, sv[1]) == 0); /* takes sv[1] */
	fuzz_conn c = { .fd = sv[0], .data = data, .len = size };
	fuzz_dest_pump(&c, 1);
	close(sv[0]);
	fuzz_dest_finish();
}

/*
 * A new destination VM, with fresh (zero) RAM as a destination's must be
 * at registration; destroying the old one ends its migration, also a
 * paused one (the one public way: see above).
 */
static inline void fuzz_dest_renew(void)
{
	ferry_vm_destroy(fuzz_dst.vm);
	if (fuzz_dst_vm_gone)
		fuzz_dst_vm_gone();
	fuzz_vm_free_ram(&fuzz_dst);
	fuzz_dest_create();
}

#endif
