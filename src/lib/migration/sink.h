/* SPDX-License-Identifier: MIT */
/*
 * Page sinks: where the RAM saver's pages go. The saver (ram.c) decides
 * which pages to send and classifies them; a sink carries them, one
 * implementation per carrier:
 *   - the main channel: PAGES/ZEROS records in the RAM section (ram.c);
 *   - multifd: jobs for the channel threads, a SYNC per pass (multifd.c);
 *   - the postcopy preempt channel: requested pages (postcopy-src.c).
 *
 * DESIGN: put() queues a run of pages of one block; pass_end() closes the
 * saver's pass on the carrier (everything queued is out, and the
 * destination can tell the pass's pages apart from the next one's). A
 * sink with finds_zero set tells zero pages apart itself, so the saver
 * hands it every page as data. on_sent, when set by the saver, is called
 * each time a batch left for the carrier (for progress figures).
 *
 * Thread: a sink is used by one thread at a time, the one that owns it
 * (mig/src/main for the main channel and multifd, mig/src/rp for the
 * preempt channel); stats() and bytes() may take the carrier's lock.
 */
#ifndef FERRY_MIGRATION_SINK_H
#define FERRY_MIGRATION_SINK_H

#include <stddef.h>

#include "internal.h"
#include "stream/chan.h"

/* The struct of type `type` whose member `member` p points at. */
#define ferry_container_of(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

typedef struct ferry_page_sink ferry_page_sink;

typedef struct ferry_page_sink_ops {
	/*
	 * Queues pages [first, first + n) of rb as kind (FERRY_RAM_PAGES/ZEROS);
	 * sums: their checksums (stream/sum.h) if computed already, else NULL
	 * (a sink that carries checksums computes them). 0 or -errno.
	 */
	int (*put)(ferry_page_sink *s, const struct ferry_ram_block *rb, uint64_t kind,
		   uint64_t first, uint32_t n, const uint64_t *sums);
	/* The end of a pass (NULL: nothing to do). 0 or -errno. */
	int (*pass_end)(ferry_page_sink *s);
	/* Adds the carrier's own counters to info (caller holds stats_lock); NULL: none. */
	void (*stats)(ferry_page_sink *s, ferry_migration_info *info);
	/* Bytes the carrier wrote beyond the main channel (NULL: none). */
	uint64_t (*bytes)(ferry_page_sink *s);
} ferry_page_sink_ops;

struct ferry_page_sink {
	const ferry_page_sink_ops *ops;
	bool finds_zero;
	void (*on_sent)(void *opaque);
	void *on_sent_opaque;
};

#endif
