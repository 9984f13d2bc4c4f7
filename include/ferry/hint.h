/* SPDX-License-Identifier: MIT */
/*
 * Free page hints: a provider tells outgoing migrations which guest pages
 * are free, and those pages are not sent.
 *
 * libferry does not know where hints come from. Ferry's virtio-balloon is
 * one provider (ferry_balloon_hint_ops() in ferry/virtio.h, opaque the
 * ferry_balloon_t); any embedder may register its own, e.g. a VMM whose
 * guest agent reports free memory another way.
 *
 * Rounds. The migration drives the provider in rounds, one per precopy
 * pass:
 *  1. start, right after a dirty-log sync: a new round begins, and
 *     everything reported from now on belongs to it;
 *  2. poll: first in a loop, until complete() says the guest's report is
 *     whole or ferry_migration_params.hint_wait_ms passed, then between chunks
 *     of the pass; the provider calls fn for each range reported free
 *     since its last poll, and the pass skips those pages;
 *  3. stop, right before the next sync: the round's reports expire.
 * The last pass (at switchover) polls too, outside any round: the provider
 * may take what its guest sent then, but passes nothing to fn.
 * When the migration ends, however it ends, it calls stop and then done.
 *
 * The one rule a provider must keep: a range reported in a round was free
 * in the guest (held nothing the guest reads before writing it) at some
 * moment after that round's start returned. A page reported free and then
 * written is dirty at the next sync and sent then. A report of an older
 * round, or one that comes after stop, may name a page written since
 * (a write the last sync already harvested): it must never reach fn.
 *
 * A provider that cannot go on (a broken queue, a hostile guest) returns a
 * negative errno from start or poll: the migration then stops asking it
 * for this migration (stop and done are still called), says why in its
 * log (error(), if given), and sends every page as without hints.
 *
 * Threads: the migration calls the ops from its own thread (mig/src/main),
 * one at a time, while the guest runs. fn runs only inside poll, on the
 * caller's thread; it must not call any op of the provider.
 */
#ifndef FERRY_HINT_H
#define FERRY_HINT_H

#include "ferry/vm.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Pages [first_page, first_page + npages) of rb (FERRY_PAGE_SIZE units,
 * block-relative) are free in the guest. A range outside rb, or a block of
 * another VM, is ignored.
 */
typedef void (*ferry_hint_fn)(void *fn_opaque, ferry_ram_block_t *rb, uint64_t first_page,
			      uint64_t npages);

/*
 * What a provider implements; opaque is what it registered with. start,
 * poll, complete and stop are required, done and error may be NULL.
 */
typedef struct ferry_hint_ops {
	/* Begins a new round. 0, or a negative errno: no more hints. */
	int (*start)(void *opaque);
	/*
	 * Calls fn(fn_opaque, ...) for the ranges reported free in the
	 * current round since the last poll (none between stop and the next
	 * start). Returns 0 or a positive count on success, a negative errno
	 * when it cannot go on: no more hints.
	 */
	int (*poll)(void *opaque, ferry_hint_fn fn, void *fn_opaque);
	/* Whether the guest's report for the current round is complete. */
	bool (*complete)(void *opaque);
	/* Ends the round: nothing reaches fn any more until the next start. */
	void (*stop)(void *opaque);
	/* The migration is over: the guest may reuse what it held for reports. */
	void (*done)(void *opaque);
	/* Why start or poll failed, for the log (never NULL when given). */
	const char *(*error)(void *opaque);
} ferry_hint_ops;

/*
 * Registers the VM's free page hint provider (ops NULL: none); ops is
 * copied, opaque must stay valid while registered. Outgoing migrations
 * use it unless ferry_migration_params.free_page_hints is off. Returns 0,
 * -EINVAL (vm NULL, or a required op missing) or -EBUSY (a migration
 * runs). Thread: the embedder's (registration, see ferry/vm.h).
 */
FERRY_EXTERN int ferry_vm_set_hint_ops(ferry_vm_t *vm, const ferry_hint_ops *ops, void *opaque);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_HINT_H */
