/* SPDX-License-Identifier: MIT */
/*
 * Postcopy: the destination runs the guest before all of its RAM arrived.
 * This header holds what both sides share (postcopy.c): the decoding of
 * a page bitmap message, the fault-path threads' CPU and priority, the end
 * of a recovery, and a block's index. The destination's postcopy is in postcopy-dst.h (its
 * DESIGN there), the source's in postcopy-src.h.
 *
 * Thread: any; none of these keeps state.
 */
#ifndef FERRY_MIGRATION_POSTCOPY_H
#define FERRY_MIGRATION_POSTCOPY_H

#include "migration/mig.h"

/*
 * Bitmap messages (DISCARD and MISSING) are encoded by the wire codec
 * (stream/wire.h: ferry__wire_bitmap_each).
 * Decodes one: checks name, alignment and bounds (messages into c's error
 * on failure) and ORs the bits into maps[block] (the block's index in the
 * VM). Returns 0 or a negative errno.
 */
int ferry__pc_bitmap_decode(ferry_vm_t *vm, ferry_chan *c, const uint8_t *p, size_t len,
			    unsigned long **maps, unsigned *block, uint64_t *first,
			    uint64_t *npages);

/*
 * Fault-path threads of m: pins the caller to m's x-postcopy-cpu (if set)
 * and raises its priority, if allowed.
 */
void ferry__pc_boost_thread(struct ferry_migration *m);

/* A recovery succeeded (either side): counts it; postcopy is active again. */
void ferry__pc_recovered(struct ferry_migration *m);

/* Block index of rb in vm (rb must be registered). */
unsigned ferry__block_index(const ferry_vm_t *vm, const struct ferry_ram_block *rb);

#endif
