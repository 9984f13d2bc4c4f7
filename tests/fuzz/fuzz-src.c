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
 * last chunk it shuts its side down. Each input gets a new source VM.
 *
 * Oracles, beyond the sanitizers: the migration ends COMPLETED with the
 * source's guest stopped; FAILED with an error code and a message, the
 * guest running again unless the migration had switched to postcopy
 * (a precopy migration that fails must leave the source guest running);
 * or POSTCOPY_PAUSED, where cancel is refused. None hangs (libFuzzer's
 * -timeout; the source's x-link-timeout is 200 ms).
 *
 * Input layout: a config byte (SRC_SUMS: checksums, SRC_POSTCOPY:
 * postcopy after the first pass, SRC_SWACK: switchover-ack), then
 * chunks: be32 bytes the source must have sent first, be16 length, the
 * bytes. Seeds: the return paths of real migrations of the same VM, as
 * the destination sent them (gen-corpus.py src, through
 * tests/fuzz/capture.c and the proxy's stamped backward record).
 *
 * Built by tests/fuzz/run.sh with every library source. Thread:
 * libFuzzer's one thread, with the source's own threads.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "fuzz-check.h"
#include "fuzz-vm.h"
#include "util/bufpool.h"

enum { SRC_SUMS = 0x1, SRC_POSTCOPY = 0x2, SRC_SWACK = 0x4, IDLE_MS = 5 };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	ferry__bufpool_reserve_on = false; /* a migration per input: see bufpool.h */
	return 0;
}

/* The input's next chunk from *off: its stamp, bytes and length; false at the end. */
static bool next_chunk(const uint8_t *data, size_t size, size_t *off, uint32_t *after,
		       const uint8_t **p, size_t *len)
{
	if (size - *off < 6)
		return false;
	const uint8_t *h = data + *off;
	*after = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	size_t n = (size_t)h[4] << 8 | h[5];
	*off += 6;
	if (n > size - *off)
		n = size - *off;
	*p = data + *off;
	*len = n;
	*off += n;
	return true;
}

/* Plays the destination on fd until the source closed its side. */
static void play(int fd, const uint8_t *data, size_t size)
{
	size_t off = 1, len = 0, sent = 0;
	const uint8_t *chunk = NULL;
	uint32_t after = 0;
	uint64_t got = 0;
	bool have = next_chunk(data, size, &off, &after, &chunk, &len), shut = false;
	for (;;) {
		if (have && sent == len) {
			have = next_chunk(data, size, &off, &after, &chunk, &len);
			sent = 0;
		}
		if (!have && !shut) {
			shutdown(fd, SHUT_WR);
			shut = true;
		}
		bool due = have && got >= after;
		struct pollfd p = { .fd = fd, .events = POLLIN | (due ? POLLOUT : 0) };
		int n = poll(&p, 1, have && !due ? IDLE_MS : -1);
		if (n < 0)
			CHECK(errno == EINTR);
		if (n == 0) { /* the source is quiet: it may wait for this chunk */
			after = 0;
			continue;
		}
		if (p.revents & POLLOUT) {
			ssize_t w = send(fd, chunk + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w > 0)
				sent += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				have = false, shut = true; /* the source is gone */
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			char buf[65536];
			ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				return;
			if (r > 0)
				got += (size_t)r;
		}
	}
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
	p.postcopy_after_passes = p.postcopy;
	p.switchover_ack = data[0] & SRC_SWACK;
	p.link_timeout_ms = 200;
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK(ferry_migration_start_fd(v.vm, sv[1], &p) == 0); /* takes sv[1] */
	play(sv[0], data, size);
	close(sv[0]);
	int st = wait_end(v.vm);
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
	}
	fuzz_vm_destroy(&v);
	return 0;
}
