/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the source as a hostile destination drives it:
 * what a real source does with the return path's messages once decoded
 * (fuzz-rp.c fuzzes their decoders): SHUT at any time, PONGs to its PINGs
 * (the pre-discard round trip before a postcopy switch), LOAD reports
 * (the downtime estimate), SWITCHOVER_ACK, RUNNING, REQ_PAGES (postcopy-
 * src.c's bounds, and the pages they make it send), MISSING bitmaps
 * outside a recovery, HEARTBEAT, and the return path's end.
 *
 * Entry point: the public one. A source (fuzz-vm.h's VM, running)
 * migrates over a socketpair (ferry_migration_start_fd); the target reads
 * and drops what it sends, and writes the input back as the return path,
 * each chunk once the source has sent as many bytes as the chunk says,
 * or has sent nothing for IDLE_MS (a destination answers what it
 * received, and the source may be waiting for the answer); after the
 * last chunk it shuts its side down. With SRC_PREEMPT (postcopy-preempt)
 * the source migrates to a listening socket of the target's instead and
 * connects its preempt connection there too: the target plays the input's
 * next part on it the same way (page requests, mig/src/preq's input; the
 * chunks stamped with the bytes the source sent on that connection), and
 * reads and drops the pages the source sends there. With SRC_RESUME, a
 * source that paused is resumed to a listening socket of the target's,
 * whose accepted connections play the input's next parts the same way.
 * Each input gets a new source VM.
 *
 * Oracles, beyond the sanitizers: the migration ends COMPLETED with the
 * source's guest stopped; FAILED with an error code and a message, the
 * guest running again unless the migration had switched to postcopy
 * (a precopy migration that fails must leave the source guest running),
 * and after the switch running only if the target sent a SHUT reporting
 * a failure with no RUNNING before it (else two guests could run: the
 * target frames what it sent as the source reads it); or
 * POSTCOPY_PAUSED, where cancel is refused. None hangs (libFuzzer's
 * -timeout; the source's x-link-timeout is 200 ms).
 *
 * Input layout: a config byte (SRC_SUMS: checksums, SRC_POSTCOPY:
 * postcopy after the first pass, SRC_SWACK: switchover-ack, SRC_RESUME:
 * resume a pause, SRC_PREEMPT: postcopy-preempt), then parts of chunks:
 * be32 bytes the source must have sent first, be16 length, the bytes; a
 * chunk stamped 0xffffffff of no bytes ends a part. The parts: the main
 * connection's (its return path), with preempt the preempt connection's,
 * then the same for the recovered connections. Seeds: the return paths
 * of real migrations of the same VM, as the destination sent them
 * (gen-corpus.py src, through tests/fuzz/capture.c and the proxy's
 * stamped backward record), three of them recovered, two with preempt.
 *
 * Built by tests/fuzz/run.sh with every library source. Thread:
 * libFuzzer's one thread, with the source's own threads.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fuzz-check.h"
#include "fuzz-vm.h"
#include "stream/format.h"
#include "util/bufpool.h"

enum { SRC_SUMS = 0x1, SRC_POSTCOPY = 0x2, SRC_SWACK = 0x4, SRC_RESUME = 0x8, SRC_PREEMPT = 0x10,
       IDLE_MS = 5 };
#define END_OF_CONN 0xffffffffu

static struct sockaddr_un listen_addr; /* where a source connects: resumed, or with preempt */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	ferry__bufpool_reserve_on = false; /* a migration per input: see bufpool.h */
	listen_addr.sun_family = AF_UNIX;
	snprintf(listen_addr.sun_path, sizeof(listen_addr.sun_path), "/tmp/ferry-fuzz-src-%d.sock",
		 (int)getpid());
	return 0;
}

/*
 * The input's next chunk from *off: its stamp, bytes and length; false at
 * the end of the input or of the connection's part (*off then after it).
 */
static bool next_chunk(const uint8_t *data, size_t size, size_t *off, uint32_t *after,
		       const uint8_t **p, size_t *len)
{
	if (size - *off < 6)
		return false;
	const uint8_t *h = data + *off;
	*after = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	size_t n = (size_t)h[4] << 8 | h[5];
	*off += 6;
	if (*after == END_OF_CONN && !n)
		return false;
	if (n > size - *off)
		n = size - *off;
	*p = data + *off;
	*len = n;
	*off += n;
	return true;
}

/*
 * What the target has sent on the return path, framed as the source reads
 * it (docs/wire-format.md, "Return path"), for the oracle: did a RUNNING
 * come before the SHUT that reported a failure? Messages after a
 * connection's SHUT are never read.
 */
static struct {
	uint8_t h[8];   /* the message's header, then a SHUT's status */
	unsigned have;
	size_t skip;    /* the current message's bytes left to pass */
	bool shut;      /* this connection's SHUT came */
	bool running;   /* a RUNNING came (any connection) */
	bool shut_err;  /* a SHUT reported a failure, with no RUNNING before it */
} seen;

static void seen_feed(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && !seen.shut;) {
		if (seen.skip) {
			size_t k = seen.skip < n - i ? seen.skip : n - i;
			seen.skip -= k;
			i += k;
			continue;
		}
		seen.h[seen.have++] = p[i++];
		uint16_t raw = (uint16_t)(seen.h[0] << 8 | seen.h[1]);
		uint16_t len = (uint16_t)(seen.h[2] << 8 | seen.h[3]);
		uint16_t type = raw & (uint16_t)~FERRY_RP_F_SUM;
		if (seen.have == 4) {
			seen.running |= type == FERRY_RP_RUNNING;
			if (type == FERRY_RP_SHUT && len >= 4)
				continue; /* its status next */
			seen.skip = len + (raw & FERRY_RP_F_SUM ? 8u : 0u);
			seen.have = 0;
		} else if (seen.have == 8) {
			seen.shut = true;
			seen.shut_err |= (seen.h[4] | seen.h[5] | seen.h[6] | seen.h[7]) && !seen.running;
		}
	}
}

/* The input's parts: where the part at *off ends (*off then at the next one's start). */
static void skip_part(const uint8_t *data, size_t size, size_t *off)
{
	uint32_t after;
	const uint8_t *chunk;
	size_t len;
	while (next_chunk(data, size, off, &after, &chunk, &len))
		;
}

/* A connection the target plays the destination on: its fd and its part of the input. */
struct conn {
	int fd;             /* -1: not connected (yet), or done */
	const uint8_t *data;
	size_t size, off;   /* the input; the part's next chunk */
	bool have, shut;    /* a chunk to send; our side shut down */
	const uint8_t *chunk;
	size_t len, sent;
	uint32_t after;     /* the chunk goes once got reaches it */
	uint64_t got;       /* bytes the source sent on this connection */
};

static void conn_start(struct conn *c, int fd, const uint8_t *data, size_t size, size_t off)
{
	*c = (struct conn){ .fd = fd, .data = data, .size = size, .off = off };
	c->have = next_chunk(data, size, &c->off, &c->after, &c->chunk, &c->len);
}

/* The next chunk once this one is out; our side shut down after the last. */
static void conn_advance(struct conn *c)
{
	if (c->have && c->sent == c->len) {
		c->have = next_chunk(c->data, c->size, &c->off, &c->after, &c->chunk, &c->len);
		c->sent = 0;
	}
	if (!c->have && !c->shut) {
		shutdown(c->fd, SHUT_WR);
		c->shut = true;
	}
}

static bool conn_due(const struct conn *c)
{
	return c->fd >= 0 && c->have && c->got >= c->after;
}

/*
 * Serves c's poll events: its chunk's bytes out (framed for the oracle on
 * the return path, main), what the source sent read and dropped. False
 * once the source closed it.
 */
static bool conn_serve(struct conn *c, short revents, bool main)
{
	if (revents & POLLOUT) {
		ssize_t w = send(c->fd, c->chunk + c->sent, c->len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			if (main)
				seen_feed(c->chunk + c->sent, (size_t)w);
			c->sent += (size_t)w;
		} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
			c->shut = true; /* the source is gone: the part's rest goes unsent */
			c->have = false;
		}
	}
	if (revents & (POLLIN | POLLHUP | POLLERR)) {
		char buf[65536];
		ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			return false;
		if (r > 0)
			c->got += (size_t)r;
	}
	return true;
}

/* A connection the source made to lfd (libFuzzer's timer signal may interrupt the wait). */
static int accept_one(int lfd)
{
	int fd;
	while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0)
		CHECK(errno == EINTR || errno == ECONNABORTED);
	return fd;
}

/*
 * Plays the destination on mn (the main connection) until the source
 * closed it; with preempt, on the preempt connection too, which the
 * source connects to lfd (pre's fd -1 until then).
 */
static void play(struct conn *mn, struct conn *pre, int lfd)
{
	seen.have = 0; /* a new connection: its own framing */
	seen.skip = 0;
	seen.shut = false;
	for (;;) {
		conn_advance(mn);
		if (pre && pre->fd >= 0)
			conn_advance(pre);
		struct pollfd p[2] = { { .fd = mn->fd, .events = POLLIN | (conn_due(mn) ? POLLOUT : 0) },
				       { .fd = -1 } };
		if (pre && pre->fd >= 0)
			p[1] = (struct pollfd){ .fd = pre->fd, .events = POLLIN | (conn_due(pre) ? POLLOUT : 0) };
		else if (pre && lfd >= 0)
			p[1] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		bool waiting = (mn->have && !conn_due(mn)) || (pre && pre->fd >= 0 && pre->have && !conn_due(pre));
		int n = poll(p, 2, waiting ? IDLE_MS : -1);
		if (n < 0)
			CHECK(errno == EINTR);
		if (n == 0) { /* the source is quiet: it may wait for these chunks */
			mn->after = 0;
			if (pre)
				pre->after = 0;
			continue;
		}
		if (n > 0 && pre && pre->fd < 0 && lfd >= 0 && (p[1].revents & POLLIN)) {
			int fd = accept_one(lfd);
			conn_start(pre, fd, pre->data, pre->size, pre->off);
			lfd = -1; /* one preempt connection per main */
		} else if (n > 0 && pre && pre->fd >= 0 && !conn_serve(pre, p[1].revents, false)) {
			close(pre->fd);
			pre->fd = -1;
			lfd = -1;
		}
		if (n > 0 && !conn_serve(mn, p[0].revents, true))
			break;
	}
	if (pre && pre->fd >= 0)
		close(pre->fd);
}

/* The migration's end: its status, or POSTCOPY_PAUSED (polled: it never ends by itself). */
static int wait_end(ferry_vm_t *vm)
{
	for (;;) {
		int st = ferry_migration_wait(vm, 1);
		if (st != -ETIMEDOUT)
			return st;
		ferry_migration_info i;
		CHECK(ferry_migration_query(vm, &i) == 0);
		if (i.status == FERRY_MIGRATION_POSTCOPY_PAUSED)
			return FERRY_MIGRATION_POSTCOPY_PAUSED;
	}
}

/* A listening socket of the target's (its URI in uri), where a source connects. */
static int listen_here(char *uri, size_t len)
{
	unlink(listen_addr.sun_path);
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(l >= 0 && bind(l, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) == 0 &&
	      listen(l, 2) == 0);
	snprintf(uri, len, "unix:%s", listen_addr.sun_path);
	return l;
}

/*
 * Plays one migration's connections from the input's part at *off, with
 * preempt the part after it on the preempt connection: on fd, or with
 * lfd >= 0 on the first connection accepted there (the preempt one is
 * the second). *off ends after the parts.
 */
static void play_parts(int fd, int lfd, bool preempt, const uint8_t *data, size_t size, size_t *off)
{
	struct conn mn, pre;
	size_t main_off = *off;
	skip_part(data, size, off);
	pre = (struct conn){ .fd = -1, .data = data, .size = size, .off = *off };
	if (preempt)
		skip_part(data, size, off);
	if (lfd >= 0)
		fd = accept_one(lfd);
	conn_start(&mn, fd, data, size, main_off);
	play(&mn, preempt ? &pre : NULL, lfd);
	if (lfd >= 0)
		close(fd);
}

/* A paused source resumed to our listener; plays the input's rest on it. Returns the new end. */
static int resume(ferry_vm_t *vm, bool preempt, const uint8_t *data, size_t size, size_t *off)
{
	char uri[120];
	int l = listen_here(uri, sizeof(uri));
	CHECK(ferry_migration_resume(vm, uri) == 0);
	play_parts(-1, l, preempt, data, size, off);
	close(l);
	unlink(listen_addr.sun_path);
	return wait_end(vm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	fuzz_vm v;
	CHECK(fuzz_vm_create(&v, true) == 0);
	CHECK(ferry_vm_start(v.vm) == 0);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.checksum = data[0] & SRC_SUMS;
	p.postcopy = data[0] & SRC_POSTCOPY;
	p.postcopy_preempt = p.postcopy && (data[0] & SRC_PREEMPT);
	p.postcopy_after_passes = p.postcopy;
	p.switchover_ack = data[0] & SRC_SWACK;
	p.link_timeout_ms = 200;
	size_t off = 1;
	memset(&seen, 0, sizeof(seen));
	if (p.postcopy_preempt) { /* the preempt connection goes to the migration's URI */
		char uri[120];
		int l = listen_here(uri, sizeof(uri));
		CHECK(ferry_migration_start(v.vm, uri, &p) == 0);
		play_parts(-1, l, true, data, size, &off);
		close(l);
		unlink(listen_addr.sun_path);
	} else {
		int sv[2];
		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
		CHECK(ferry_migration_start_fd(v.vm, sv[1], &p) == 0); /* takes sv[1] */
		play_parts(sv[0], -1, false, data, size, &off);
		close(sv[0]);
	}
	int st = wait_end(v.vm);
	if (st == FERRY_MIGRATION_POSTCOPY_PAUSED && (data[0] & SRC_RESUME))
		st = resume(v.vm, p.postcopy_preempt, data, size, &off);
	ferry_migration_info i;
	CHECK(ferry_migration_query(v.vm, &i) == 0);
	bool running = ferry_vm_is_running(v.vm);
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "%s%s: %d %s\n", ferry_migration_status_name(i.status),
			i.postcopy ? " (postcopy)" : "", i.error, i.error_desc);
	if (st == FERRY_MIGRATION_POSTCOPY_PAUSED) {
		CHECK(ferry_migration_cancel(v.vm) == -EBUSY);
	} else if (st == FERRY_MIGRATION_COMPLETED) {
		CHECK(!running);
	} else {
		CHECK(st == FERRY_MIGRATION_FAILED && i.error < 0 && i.error_desc[0]);
		CHECK(running || i.postcopy);
		/* After the switch it resumes only on the destination's word that it never ran. */
		CHECK(!running || !i.postcopy || seen.shut_err);
	}
	fuzz_vm_destroy(&v);
	return 0;
}
