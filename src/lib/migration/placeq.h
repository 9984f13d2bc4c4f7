/* SPDX-License-Identifier: MIT */
/*
 * The placement queue's bookkeeping (the placer in place.c): a ring of
 * FERRY_PLACEQ_SLOTS slots that mig/dst/main fills in stream order and
 * several placing threads empty. Pure logic, no locks and no I/O, so that
 * its ordering rule is unit-tested (tests/unit/test-placeq.c):
 *
 *   slots are taken oldest first, and a slot whose pages overlap those of
 *   an older slot still being placed is not taken until that one is done.
 *
 * So writes to the same page keep the stream's order (a later pass's copy
 * lands after the earlier one) while runs of distinct pages are placed in
 * parallel. A slot done out of order stays in the ring (FREE) until the
 * older ones are done, so the filler always gets the slot after the newest.
 *
 * Thread: none of its own; the caller serialises every call (place.c: under
 * the placer's lock).
 */
#ifndef FERRY_MIGRATION_PLACEQ_H
#define FERRY_MIGRATION_PLACEQ_H

#include <stdbool.h>
#include <stdint.h>

/* A power of two, so that the unsigned counters may wrap. */
#define FERRY_PLACEQ_SLOTS 8u

enum { FERRY_PLACEQ_FREE, FERRY_PLACEQ_QUEUED, FERRY_PLACEQ_PLACING };

struct ferry_placeq_slot {
	const void *block; /* pages overlap only within one block */
	uint64_t first;
	uint32_t n;
	uint8_t state; /* FERRY_PLACEQ_* */
};

/*
 * The ring is slots head .. head + used - 1 (counters mod SLOTS), oldest
 * first; next is the oldest QUEUED one (head + used when none is). All
 * zero is an empty queue.
 */
struct ferry_placeq {
	struct ferry_placeq_slot slot[FERRY_PLACEQ_SLOTS];
	unsigned head, used, next;
};

/* The slot to fill next, or -1 if the ring is full. */
static inline int ferry__placeq_free_slot(const struct ferry_placeq *q)
{
	return q->used == FERRY_PLACEQ_SLOTS ? -1 : (int)((q->head + q->used) % FERRY_PLACEQ_SLOTS);
}

/* Queues the slot ferry__placeq_free_slot named (which must not be -1). */
static inline void ferry__placeq_push(struct ferry_placeq *q, const void *block, uint64_t first,
				      uint32_t n)
{
	q->slot[(q->head + q->used) % FERRY_PLACEQ_SLOTS] = (struct ferry_placeq_slot){
		.block = block, .first = first, .n = n, .state = FERRY_PLACEQ_QUEUED};
	q->used++;
}

static inline bool ferry__placeq_overlap(const struct ferry_placeq_slot *a,
					 const struct ferry_placeq_slot *b)
{
	return a->block == b->block && a->first < b->first + b->n && b->first < a->first + a->n;
}

/* The oldest queued slot, now PLACING, if it may be placed now; else -1. */
static inline int ferry__placeq_take(struct ferry_placeq *q)
{
	if (q->next == q->head + q->used)
		return -1;
	struct ferry_placeq_slot *s = &q->slot[q->next % FERRY_PLACEQ_SLOTS];
	for (unsigned i = q->head; i != q->next; i++) {
		const struct ferry_placeq_slot *o = &q->slot[i % FERRY_PLACEQ_SLOTS];
		if (o->state == FERRY_PLACEQ_PLACING && ferry__placeq_overlap(o, s))
			return -1;
	}
	s->state = FERRY_PLACEQ_PLACING;
	return (int)(q->next++ % FERRY_PLACEQ_SLOTS);
}

/* Slot i (taken) is placed: frees it and every done slot at the ring's head. */
static inline void ferry__placeq_done(struct ferry_placeq *q, int i)
{
	q->slot[i].state = FERRY_PLACEQ_FREE;
	while (q->used && q->slot[q->head % FERRY_PLACEQ_SLOTS].state == FERRY_PLACEQ_FREE) {
		q->head++;
		q->used--;
	}
}

/*
 * Whether a queued or placing slot holds any of pages [first, first + n)
 * of block: if not, the filler may write them itself now (nothing for
 * them can be placed after that write, as only the filler queues).
 */
static inline bool ferry__placeq_holds(const struct ferry_placeq *q, const void *block,
				       uint64_t first, uint32_t n)
{
	struct ferry_placeq_slot s = { .block = block, .first = first, .n = n };
	for (unsigned i = q->head; i != q->head + q->used; i++) {
		const struct ferry_placeq_slot *o = &q->slot[i % FERRY_PLACEQ_SLOTS];
		if (o->state != FERRY_PLACEQ_FREE && ferry__placeq_overlap(o, &s))
			return true;
	}
	return false;
}

/* Nothing queued (slots may still be being placed). */
static inline bool ferry__placeq_none_queued(const struct ferry_placeq *q)
{
	return q->next == q->head + q->used;
}

#endif
