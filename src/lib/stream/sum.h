/* SPDX-License-Identifier: MIT */
/*
 * End-to-end integrity of the migration stream (docs/wire-format.md,
 * "Checksums"): the XXH3-64 checksum of every guest-data payload and the
 * stream's running digest. The wire codec (wire.h) puts and takes the
 * checksums; this file computes them, folds every guest-data record into
 * the digest and, on the destination, judges what arrived.
 *
 * DESIGN:
 *  - A page's checksum is XXH3-64 of its 4096 bytes seeded with its place
 *    (the block name's hash plus the page index), so a page that lands on
 *    the wrong page fails too. A device buffer's is seeded with its
 *    section id, or its device number and index.
 *  - The digest is a sum (mod 2^64) of XXH3-64(carrier, seq, value), one
 *    term per guest-data record: carrier is the connection (main, multifd
 *    channel i, preempt), seq the record's number on it, value a hash of
 *    what the record says (block, pages, their checksums). A sum does not
 *    care in which order the channels' records were folded, so multifd's
 *    interleaving is fine; a lost, repeated or reordered record changes a
 *    term. Both sides fold the same records; the source sends its digest
 *    (COMMAND DIGEST) before EOF and the destination compares.
 *  - Precopy's source reads guest RAM while the guest runs, so a page may
 *    change between its checksum and its send: its copy then mismatches,
 *    but the write made the page dirty and a later pass (the last one with
 *    the vCPUs stopped) sends it again. The destination therefore marks a
 *    page that fails as bad (one bit per page), clears the bit when a later
 *    copy verifies (or zeros or a discard replace the page) and fails the
 *    migration at the end if any page is still bad, with the message of
 *    the first mismatch that was not made good. Device state and postcopy
 *    pages are read from a stopped source: they fail at once (postcopy:
 *    before UFFDIO_COPY, the link pauses and recovery sends them again).
 *
 * Thread: counters and the digest are atomics, folded by whichever thread
 * reads or writes a carrier; bad-page bits are set and cleared atomically
 * (one writer per page at a time, as for `received`); the report is
 * protected by `lock`.
 */
#ifndef FERRY_STREAM_SUM_H
#define FERRY_STREAM_SUM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <xxhash.h>
#if defined(__x86_64__) && __has_include(<xxh_x86dispatch.h>)
/*
 * libxxhash's runtime dispatch (AVX2/AVX-512 where the CPU has them): the
 * plain entry points are built for SSE2 and hash a 4 KiB page ~4x slower
 * (measured 9.5 vs 39.6 GB/s here).
 */
#include <xxh_x86dispatch.h>
#endif

#include "ferry/migration.h"
#include "internal.h"
#include "stream/chan.h"

/* Carriers, numbered in the digest. */
enum {
	FERRY_SUM_MAIN = 0,
	FERRY_SUM_MULTIFD = 1, /* + channel id */
	FERRY_SUM_PREEMPT = 1 + FERRY_MULTIFD_MAX_CHANNELS,
	FERRY_SUM_PACKAGE,
};

#define FERRY_SUM_LEN 8u /* one be64 checksum on the wire */
#define FERRY_SUM_REPORT_MAX (FERRY_NAME_MAX + 200)

typedef struct ferry_sums {
	_Atomic uint64_t digest;     /* sum of the folded terms */
	_Atomic uint64_t records;    /* terms folded */
	_Atomic uint64_t verified;   /* destination: RAM page bytes whose checksum matched */
	/*
	 * Destination: payloads whose checksum did not match and that were
	 * not made good (a precopy page is counted when it is still bad at
	 * the end or at LISTEN, not when a later pass replaced it).
	 */
	_Atomic uint64_t mismatches;
	_Atomic uint64_t bad;        /* destination: pages whose last copy did not verify */
	bool dst;                    /* destination: bad-page maps allocated */
	unsigned long *bad_map[FERRY_MAX_RAM_BLOCKS];
	ferry_vm_t *vm;
	pthread_mutex_t lock;
	/* Protected by lock: the first mismatch not yet made good. */
	bool has_report;
	unsigned report_block;
	uint64_t report_page;
	char report[FERRY_SUM_REPORT_MAX];
} ferry_sums;

/* Source (vm NULL) or destination (bad-page maps for vm's blocks). 0 or -ENOMEM. */
int ferry__sums_init(ferry_sums *s, ferry_vm_t *vm);
void ferry__sums_fini(ferry_sums *s);
/* Channel c carries checksums; its guest-data records fold into s as carrier. */
void ferry__sums_attach(ferry_chan *c, ferry_sums *s, uint32_t carrier);

/* The seed of a block's pages. */
static inline uint64_t ferry__sum_seed(const char *name)
{
	return XXH3_64bits(name, strlen(name));
}

static inline uint64_t ferry__sum_page(const void *p, uint64_t seed, uint64_t page)
{
	return XXH3_64bits_withSeed(p, FERRY_PAGE_SIZE, seed + page);
}

static inline uint64_t ferry__sum_buf(const void *p, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(p, len, seed);
}

/* The seed of a live device buffer (DEV_STATE, DEV_CONFIG: index 0xffffffff). */
static inline uint64_t ferry__sum_dev_seed(uint32_t dev, uint32_t index)
{
	return (uint64_t)dev << 32 | index;
}

/* Folds the term of record seq of carrier, whose value is v. */
void ferry__sum_fold(ferry_sums *s, uint32_t carrier, uint64_t seq, uint64_t v);

/* Folds the next record of c (no-op without checksums). */
static inline void ferry__sum_fold_chan(ferry_chan *c, uint64_t v)
{
	if (c->sums)
		ferry__sum_fold(c->sums, c->sum_carrier, c->sum_seq++, v);
}

/*
 * The value of a RAM record: kind (PAGES, ZEROS, a multifd packet's
 * flags), the block's seed, where (first page, or a hash of the index
 * list), n pages and their checksums (nsums of them, big-endian bytes).
 */
uint64_t ferry__sum_ram_value(uint64_t kind, uint64_t seed, uint64_t where, uint32_t n,
			      const uint8_t *sums, uint32_t nsums);

/*
 * Destination: n pages of rb just received, in data (contiguous) or, data
 * NULL, in guest RAM at their place; pages idx[i], or first + i when idx
 * is NULL; want: the n big-endian checksums the record carried. A page
 * that fails is counted and marked bad (its report kept when it is the
 * first); with strict (postcopy), it fails c at once instead and the
 * caller must not place the pages. rec: the record's number on c.
 */
int ferry__sum_check_pages(ferry_chan *c, uint64_t rec, struct ferry_ram_block *rb,
			   const uint64_t *idx, uint64_t first, uint32_t n, const uint8_t *data,
			   const uint8_t *want, bool strict);
/* Destination: pages replaced without data (zeros, a discard) are no longer bad. */
void ferry__sum_clear(ferry_sums *s, struct ferry_ram_block *rb, const uint64_t *idx,
		      uint64_t first, uint64_t n);
/* Destination: a device payload against its checksum; fails c on a mismatch. */
int ferry__sum_check_buf(ferry_chan *c, const void *p, size_t len, uint64_t seed, uint64_t want,
			 const char *what);
/* Destination: a computed checksum against the one the record carried (what: the record). */
int ferry__sum_check_value(ferry_chan *c, uint64_t got, uint64_t want, const char *what);
/*
 * Destination, at postcopy's LISTEN (every precopy page placed): bad pages
 * the source sends again (set in pending[block]) are bad no longer; any
 * other fails c as at the end.
 */
int ferry__sum_listen(ferry_chan *c, unsigned long *const *pending);
/*
 * Destination, at DIGEST: with pages (the end of a precopy stream) no page
 * may still be bad; then the source's control hash of the main channel
 * against ours, and its digest of `records` terms against ours. Fails c.
 */
int ferry__sum_finish(ferry_chan *c, uint64_t records, uint64_t digest, uint64_t ctl_sent,
		      uint64_t ctl_here, bool pages);

#endif /* FERRY_STREAM_SUM_H */
