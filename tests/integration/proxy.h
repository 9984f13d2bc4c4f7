/* SPDX-License-Identifier: MIT */
/*
 * A fault-injecting forwarder for tests: listens on a unix socket, forwards
 * each accepted connection to a target unix socket, and can cut a given
 * connection (by accept order), slow it down or flip bits in it, and can
 * record what each connection forwards.
 */
#ifndef FERRY_TEST_PROXY_H
#define FERRY_TEST_PROXY_H

#include <stddef.h>
#include <stdint.h>

typedef struct proxy proxy;

/* Starts forwarding listen_path -> target_path (unix socket paths). */
proxy *proxy_start(const char *listen_path, const char *target_path);
/* Connection k (0 = first accepted) sleeps delay_us after each chunk forwarded. */
void proxy_set_delay(proxy *p, unsigned k, unsigned delay_us);
/* Cuts connection k (both directions) once it has forwarded `after` bytes. */
void proxy_cut_after(proxy *p, unsigned k, uint64_t after);
/*
 * Connection k XORs mask into the byte at forward offset `at` (0 = its first
 * byte toward the target), once. One flip per connection.
 */
void proxy_flip_at(proxy *p, unsigned k, uint64_t at, uint8_t mask);
/* Connection k stops forwarding in both directions but stays open (a silent link). */
void proxy_freeze(proxy *p, unsigned k);
/* Connection k stops forwarding toward the target only (its return direction flows). */
void proxy_freeze_forward(proxy *p, unsigned k);
/* Connection k forwards again what it held and what comes (the link is back). */
void proxy_thaw(proxy *p, unsigned k);
/* Cuts connection k (both directions) now. */
void proxy_cut_now(proxy *p, unsigned k);
/* Bytes connection k has forwarded toward the target so far. */
uint64_t proxy_forwarded(proxy *p, unsigned k);
/*
 * Connections accepted from now on append what they forward toward the
 * target to the file PREFIX-K (K: accept order), e.g. to record the
 * streams a source sends (tests/fuzz/capture.c), and what they forward
 * back to PREFIX-K.back, each chunk as be32 bytes forwarded toward the
 * target so far, be16 length, the bytes (a return path, with when the
 * destination sent it).
 */
void proxy_record(proxy *p, const char *prefix);
/*
 * Connection k's backward direction (target -> accepted side: a
 * migration's return path) passes each chunk through fn(opaque, buf, n,
 * cap) before forwarding it; fn rewrites buf (which can hold cap >= n +
 * PROXY_BACK_SLACK bytes) and returns how many bytes to forward, so it
 * may change, drop or hold back bytes (chunks split messages anywhere: fn
 * keeps its own state; rp_filter_chunk, harness.h, reassembles return path
 * messages). Set it before the bytes to change arrive; it runs on that
 * direction's pump thread.
 */
#define PROXY_BACK_SLACK 131072u
typedef size_t proxy_back_fn(void *opaque, uint8_t *buf, size_t n, size_t cap);
void proxy_rewrite_back(proxy *p, unsigned k, proxy_back_fn *fn, void *opaque);
/* Number of connections accepted so far. */
unsigned proxy_connections(proxy *p);
void proxy_stop(proxy *p);

#endif
