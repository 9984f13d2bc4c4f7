/* SPDX-License-Identifier: MIT */
/*
 * Free page hints in the RAM saver (hints.c): the saver's side of the
 * provider interface of ferry/hint.h.
 *
 * Thread: mig/src/main only, like the rest of the saver (the provider's
 * callback runs inside its poll, on that thread).
 */
#ifndef FERRY_MIGRATION_HINTS_H
#define FERRY_MIGRATION_HINTS_H

#include "internal.h"

typedef struct ferry_ram_saver ferry_ram_saver;

/* The saver's hint state (ferry_ram_saver.hints); owned by mig/src/main. */
struct ferry_ram_hints {
	const ferry_hint_ops *ops; /* the VM's provider; NULL: no hints */
	void *opaque;
	uint32_t wait_ms;          /* ferry_migration_params.hint_wait_ms */
	bool broken;               /* the provider failed: no more hints */
	/* Pages of block i reported free for the current round: not sent. */
	unsigned long *hinted[FERRY_MAX_RAM_BLOCKS];
	/*
	 * The last expired round's hinted pages; at a postcopy switch, those
	 * not dirty since: sent as ZEROS after the background pages, so the
	 * destination places them without a fault.
	 */
	unsigned long *hinted_last[FERRY_MAX_RAM_BLOCKS];
	/* ferry__ram_hints_next_zeros: hinted_last[] is clear before this page. */
	unsigned zeros_block;
	uint64_t zeros_page;
	uint64_t cmds, skipped, wait_ns; /* for query-migrate */
	/*
	 * With checksums: runs of pages whose dirty bit a hint cleared,
	 * waiting to go as FREE records. Such a page's copy at the destination
	 * may be a torn one (the guest wrote it while it was sent) that no
	 * later pass replaces; FREE tells the destination not to judge it.
	 */
	struct ferry_free_run {
		unsigned block;
		uint64_t first;
		uint32_t n;
	} *freed;
	size_t nfreed, freed_cap;
};

/*
 * Before ferry__ram_save_setup: takes the VM's provider if p asks for
 * hints. Then all RAM is write-protected at setup (rs->protect_all), so
 * tracking covers every page before the first round starts.
 */
void ferry__ram_hints_setup(ferry_ram_saver *rs, const ferry_migration_params *p);
/* In ferry__ram_save_setup: the hinted bitmaps. 0 or -ENOMEM. */
int ferry__ram_hints_alloc(ferry_ram_saver *rs);
/*
 * begin starts a new round (right after a log sync) and waits, bounded,
 * for the guest's report; end stops it (right before the next sync: the
 * round's hints are only valid until then).
 */
void ferry__ram_hints_begin(ferry_ram_saver *rs);
void ferry__ram_hints_end(ferry_ram_saver *rs);
/*
 * Between chunks of a pass: takes what the guest reported since (may clear
 * dirty bits), and in a section queues the FREE records of the pages it
 * cleared.
 */
void ferry__ram_hints_poll(ferry_ram_saver *rs);
/* At a pass's section start: queues the FREE records of begin's polls. */
void ferry__ram_hints_put_freed(ferry_ram_saver *rs);
/*
 * At the postcopy switch, after the final sync: keeps of the last round's
 * pages those not dirty since (the background sends them as zeros).
 */
void ferry__ram_postcopy_hint_zeros(ferry_ram_saver *rs);
/*
 * The postcopy background's next run of those pages (block order, at most
 * FERRY_RAM_MAX_RUN), taken off the set. False when none is left.
 */
bool ferry__ram_hints_next_zeros(ferry_ram_saver *rs, struct ferry_ram_block **rb,
				 uint64_t *first, uint64_t *n);
/* The hint counters of query-migrate. Caller holds m->stats_lock. */
void ferry__ram_hints_stats(const ferry_ram_saver *rs, ferry_migration_info *info);
/* End of the migration: stops the provider, tells it done, frees. Idempotent. */
void ferry__ram_hints_cleanup(ferry_ram_saver *rs);

#endif
