/* SPDX-License-Identifier: MIT */
/*
 * Helpers for in-process migration tests: a "side" is a libferry VM with the
 * synthetic guest attached; migrations run over real sockets between two
 * sides of the same test process.
 */
#ifndef FERRY_TEST_HARNESS_H
#define FERRY_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry.h"
#include "guest.h"
#include "proxy.h"

typedef struct side {
	ferry_vm_t *vm;
	ferry_guest_t *g;
} side;

/* Creates a side; aborts the test on failure. */
void side_create(side *s, const char *spec, ferry_dirty_mode mode, bool incoming);
void side_destroy(side *s);
/* A fresh unix: URI for this process (any stale socket at its path removed). */
const char *test_uri(void);
/* A TCP port nothing listens on now (the kernel's pick for 127.0.0.1). */
unsigned free_port(void);
/*
 * Moves the calling thread into a new network namespace with its loopback
 * up (threads it starts from then on, and the sockets they open, follow).
 * Returns a handle for net_ns_leave, or -1 when the process may not
 * (unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN): the caller skips.
 */
int net_ns_enter(void);
/* Takes the namespace's loopback down (up): its TCP peers stop hearing each other. */
void net_ns_loopback(bool up);
/* Back to the namespace net_ns_enter left; the new one goes with its last socket. */
void net_ns_leave(int home);
/* Stops the guest and checks it against its twin; returns matches. */
bool side_verify(side *s);
/* Destination: runs each vCPU n more steps, then verifies. */
bool side_run_and_verify(side *s, uint64_t n);
/* Waits for a final status with a generous timeout; fails the test on hang. */
int wait_final(ferry_vm_t *vm);
/* wait_final on src then dst, which must both say want; their final figures in *si, *di. */
void wait_both_final(side *src, side *dst, int want, ferry_migration_info *si,
		     ferry_migration_info *di);
/* wait_final, which must say FAILED; returns the error message (static buffer). */
const char *wait_failed(ferry_vm_t *vm);
/*
 * Source side of a migration whose guest runs: waits for a final status
 * like wait_final, but once the migration has passed pass after_pass
 * without switching over, raises its downtime limit to 30 s (and lifts
 * max-bandwidth) so that it converges, as QEMU's tests do
 * (migrate_ensure_converge). Tests whose subject is not convergence use
 * it: whether a guest that dirties RAM converges under a tight limit is
 * a matter of the machine's speed (ASan, a loaded CI host). p: the
 * parameters the migration started with (NULL = defaults). Says so on
 * stderr when it raises the limit.
 */
int wait_src_converge(ferry_vm_t *vm, const ferry_migration_params *p, uint32_t after_pass);
/*
 * Feeds a hand-made stream to a fresh destination (guest DST_SPEC of
 * sbuf.h) and returns its error message (static buffer). Checks that the
 * migration FAILED, that the return path said the same, and that guest RAM
 * was not touched. postcopy: the destination allows postcopy.
 */
const char *feed_stream(const void *data, size_t len, bool postcopy);
/* The same, to a destination whose guest is spec (its RAM as DST_SPEC's). */
const char *feed_stream_spec(const char *spec, const void *data, size_t len, bool postcopy);
/*
 * Waits until every vCPU of s's guest has done n steps more than when
 * called: the guest ran (and dirtied RAM) meanwhile. Returns at once for
 * an idle workload, whose vCPUs never step. Fails the test after 60 s.
 */
void side_wait_steps(side *s, uint64_t n);
/*
 * Waits until vm's migration is ACTIVE with at least bytes on the wire,
 * i.e. mid-stream; fails the test if it leaves ACTIVE first, or after
 * 60 s. *i: the snapshot that met the condition.
 */
void wait_transferred(ferry_vm_t *vm, uint64_t bytes, ferry_migration_info *i);
/*
 * Polls until vm's migration shows status st; fails the test if it ends
 * (COMPLETED, FAILED) first, or after 60 s.
 */
void wait_status(ferry_vm_t *vm, ferry_migration_status st);
/*
 * Polls until this process's thread named comm (e.g. "mig/dst/main") is
 * blocked in system call nr (e.g. SYS_accept4), read from
 * /proc/self/task/TID/syscall; fails the test after 60 s.
 */
void wait_thread_in_syscall(const char *comm, long nr);
/* The same, and still (or again) there 200 ms later: it waits there, not passing through. */
void wait_thread_stays_in_syscall(const char *comm, long nr);
/*
 * Cancels src's migration while dst waits at a multifd sync whose channels
 * are frozen: src CANCELLED with its guest running; dst FAILED within 3 s
 * (the source's close, then one look at it) with the source's cancel
 * notice or FERRY_MF_ORPHANED_MSG, depending on what followed the sync.
 */
void cancel_at_orphaned_sync(side *src, side *dst);
/*
 * Postcopy paused: s's migration shows a reason starting with want within
 * 5 s (error_desc, as QEMU's error-desc in postcopy-paused), with error 0:
 * nothing failed.
 */
void expect_pause_reason(side *s, const char *want);
/*
 * Two sides of spec with WP-async tracking: the destination listens on the
 * returned URI, the source guest runs.
 */
const char *running_pair(side *src, side *dst, const char *spec);
/*
 * The same with the fault-injecting proxy (proxy.h) in front of the
 * destination: the source migrates to puri (filled in); connection 0 is
 * then the main one, 1.. the multifd channels. proxy_stop it at the end.
 */
proxy *running_pair_proxied(side *src, side *dst, const char *spec, char puri[120]);
/*
 * A migration's return path rewritten in flight (proxy_rewrite_back with
 * rp_filter_chunk and a struct rp_filter as its opaque): the chunks are
 * reassembled into whole messages (be16 type, be16 length, payload, and a
 * be64 checksum when the type has FERRY_RP_F_SUM; docs/wire-format.md)
 * and each goes through fn(opaque, msg, len, cap), which may rewrite it in
 * place and returns its new length (at most cap).
 */
typedef size_t rp_msg_fn(void *opaque, uint8_t *msg, size_t len, size_t cap);
struct rp_filter {
	rp_msg_fn *fn;
	void *opaque;
	size_t have;             /* bytes of the current message held */
	uint8_t msg[4 + 65535 + 8];
	uint8_t in[65536];       /* the chunk being read */
};
size_t rp_filter_chunk(void *opaque, uint8_t *buf, size_t n, size_t cap);
/* Sleeps ms milliseconds: for pacing a poll, never to wait for an event. */
void msleep(unsigned ms);
/* CLOCK_MONOTONIC in milliseconds: for measuring how long something took. */
uint64_t now_ms(void);

#endif
