/* SPDX-License-Identifier: MIT */
/*
 * Buffers that keep their pages. A migration hands live device state along
 * in buffers of up to FERRY_DEV_BUF_MAX bytes: read on one thread, sent by
 * another, received into a fresh buffer and written to the device by a
 * third. With malloc and free, glibc returns such buffers' pages to the
 * kernel (an mmap'd chunk, or a per-thread arena's heap trimmed on free),
 * and every buffer pays the first touch of fresh memory again: on this
 * project's reference machine 0.27-0.6 GB/s, against a 16 GB/s copy into
 * memory already touched (measured: bench/devices.py went from about 2 s to
 * 0.8 s of downtime for 1 GiB of device state when the pages stayed).
 *
 * A pool hands out buffers of one capacity and keeps the ones given back,
 * so a migration touches at most the peak number in flight (which the
 * queues bound) once. A request larger than the capacity, or so small that
 * a full buffer would waste most of it (a slow device reading 4 KiB
 * chunks), gets a plain allocation of its own size instead. Either kind is
 * given back with ferry__buf_put(), which needs no pool: a hidden header
 * before the data says where the buffer came from.
 *
 * Lifetime: the pool must outlive every buffer it handed out (the
 * migration that owns it frees every buffer in its cleanup, before
 * ferry__bufpool_destroy()). ferry__bufpool_trim() frees what is cached
 * (the migration ended; its memory goes back).
 *
 * Thread: any; the pool's free list is protected by its lock, which is a
 * leaf (held only to push or pop).
 */
#ifndef FERRY_UTIL_BUFPOOL_H
#define FERRY_UTIL_BUFPOOL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ferry_bufpool ferry_bufpool;

/* A pool of buffers of cap bytes; NULL on ENOMEM. */
ferry_bufpool *ferry__bufpool_create(size_t cap);
/* Frees what is cached; every buffer must have been put back. NULL: no-op. */
void ferry__bufpool_destroy(ferry_bufpool *p);
/* Frees what is cached now (buffers still out come back to the cache). */
void ferry__bufpool_trim(ferry_bufpool *p);
/*
 * A buffer for len bytes: a pooled one when len is between a quarter of the
 * pool's capacity and the capacity, else a plain one of len bytes (p may
 * be NULL: always plain). NULL on ENOMEM. Give it back with ferry__buf_put.
 */
void *ferry__buf_get(ferry_bufpool *p, size_t len);
/*
 * Makes sure n buffers exist (handed out or cached), touching every page of
 * the new ones, so that their first touch happens now rather than when a
 * migration's downtime needs them. -ENOMEM if one could not be allocated
 * (those made so far stay).
 */
int ferry__bufpool_reserve(ferry_bufpool *p, size_t n);
/*
 * Test hook, never set by the library: when false, ferry__bufpool_reserve
 * makes nothing and returns 0 (buffers are then made on demand, which
 * only costs time). The fuzz targets that run a whole migration per input
 * (tests/fuzz/fuzz-stream.c, fuzz-multifd.c) clear it: the destination's
 * reserve for one live device (8 MiB, touched) cost them 95% of each run.
 * Default true; set before any migration starts.
 */
extern bool ferry__bufpool_reserve_on;
/* Gives a buffer of ferry__buf_get() back (to its pool, or frees it). NULL: no-op. */
void ferry__buf_put(void *data);
/* Bytes the pool holds: cached and handed out (for statistics and tests). */
size_t ferry__bufpool_bytes(ferry_bufpool *p);

#endif
