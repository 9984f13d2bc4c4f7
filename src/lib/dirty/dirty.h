/* SPDX-License-Identifier: MIT */
/*
 * Dirty-page tracking for guest RAM: which pages were written since the last
 * harvest.
 *
 * Two mechanisms behind one interface:
 *  - WP_ASYNC: userfaultfd write-protect in async mode
 *    (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED). The kernel clears
 *    a page's protection on the first write without waking anyone; the
 *    PAGEMAP_SCAN ioctl on /proc/self/pagemap reports the written pages
 *    (PAGE_IS_WRITTEN) and write-protects them again in the same walk
 *    (PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC), so no write between
 *    report and re-protect is lost.
 *  - EXPLICIT: the embedder calls ferry_ram_mark_dirty(); the harvest drains
 *    an atomic bitmap.
 *
 * Thread: a tracker is used by one thread at a time (the migration thread);
 * only the explicit log is written concurrently by vCPU threads.
 */
#ifndef FERRY_DIRTY_H
#define FERRY_DIRTY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/vm.h"

typedef struct ferry_dirty_tracker {
	ferry_dirty_mode mode; /* resolved: WP_ASYNC or EXPLICIT */
	int uffd;              /* WP_ASYNC: the userfaultfd, else -1 */
	int pagemap_fd;        /* /proc/self/pagemap, or -1 */
} ferry_dirty_tracker;

/*
 * Resolves the mode (AUTO probes the kernel for WP_ASYNC and PAGEMAP_SCAN)
 * and opens what it needs. Asking for WP_ASYNC on a kernel without it fails
 * with -EOPNOTSUPP. Returns 0 or a negative errno; on failure nothing is left
 * open.
 */
int ferry__dirty_tracker_init(ferry_dirty_tracker *t, ferry_dirty_mode requested);
void ferry__dirty_tracker_fini(ferry_dirty_tracker *t);

/* True if this kernel supports WP_ASYNC + PAGEMAP_SCAN (probed once). */
bool ferry__dirty_wp_async_supported(void);

/*
 * Starts tracking [host, host + size) (page aligned): in WP_ASYNC mode
 * registers the range with the userfaultfd in WP mode and write-protects it
 * all, so every later write shows up in the next harvest. Returns 0 or a
 * negative errno.
 */
int ferry__dirty_track_start(ferry_dirty_tracker *t, void *host, uint64_t size);
/*
 * The two halves of ferry__dirty_track_start, for callers that protect a
 * large range piece by piece (each piece just before they read it):
 * register the whole range first, then protect each piece. Pages of a piece
 * not yet protected are not tracked. In EXPLICIT mode both are no-ops.
 */
int ferry__dirty_track_register(ferry_dirty_tracker *t, void *host, uint64_t size);
int ferry__dirty_track_protect(ferry_dirty_tracker *t, void *host, uint64_t size);
/* Stops tracking (unregisters the range). Idempotent. */
void ferry__dirty_track_stop(ferry_dirty_tracker *t, void *host, uint64_t size);

/*
 * Harvest (a "log sync"): sets in bitmap (bit i = page i of the range) every
 * page written since tracking started or since the previous harvest, and
 * re-arms tracking for those pages atomically. explicit_log is the block's
 * atomic log (EXPLICIT mode; ignored in WP_ASYNC). *newly gets the number of
 * bits that were not already set in bitmap. Returns 0 or a negative errno.
 */
int ferry__dirty_harvest(ferry_dirty_tracker *t, void *host, uint64_t size,
			 _Atomic unsigned long *explicit_log, unsigned long *bitmap,
			 uint64_t *newly);

/*
 * How many pages of [host, host + size) a harvest now would find
 * (*written), without taking them: the harvest's walk, nothing re-armed.
 * Returns 0 or a negative errno.
 */
int ferry__dirty_peek(ferry_dirty_tracker *t, void *host, uint64_t size,
		      _Atomic unsigned long *explicit_log, uint64_t *written);
/*
 * Sets in bitmap every page of [host, host + size) that is populated (has
 * ever been allocated), so never-touched pages can be skipped without being
 * read. Uses PAGEMAP_SCAN (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) where
 * available; for fd-backed RAM (fd >= 0) it also ORs in the file's data
 * extents (SEEK_DATA/SEEK_HOLE; host maps the file at file_off) so pages
 * written through another mapping count. Without either it sets every bit. *count = set bits afterwards.
 */
int ferry__ram_scan_populated(void *host, uint64_t size, int fd, uint64_t file_off,
			      unsigned long *bitmap, uint64_t *count);

/*
 * True when [host, host + size) is a MAP_SHARED mapping of all of fd from
 * offset 0: then a page is populated exactly when the file has it, and
 * ferry__ram_file_fill() answers for the whole range.
 */
bool ferry__ram_maps_file(void *host, uint64_t size, int fd);
/* How much of a file is allocated (ferry__ram_file_fill). */
typedef enum ferry_file_fill {
	FERRY_FILL_SOME, /* some pages, or it cannot tell: scan */
	FERRY_FILL_NONE,
	FERRY_FILL_ALL,
} ferry_file_fill;

/*
 * From the file's allocated block count (one fstat): whether every page of
 * fd (size bytes) is allocated, none is, or some are (or it cannot tell). A
 * page populated after the call is not seen: callers protect first, so
 * later writes are harvested.
 */
ferry_file_fill ferry__ram_file_fill(int fd, uint64_t size);

/*
 * Opens a userfaultfd (O_CLOEXEC | O_NONBLOCK; faults from user mode only
 * where the kernel supports that). Shared with postcopy. Returns the fd or a
 * negative errno.
 */
int ferry__uffd_open(void);

#endif /* FERRY_DIRTY_H */
