/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the placement queue's ordering rule
 * (src/lib/migration/placeq.h): slots are taken oldest first; a slot whose
 * pages overlap an older slot still being placed waits for it, one of
 * distinct pages (or of another block) does not; slots done out of order
 * free the ring only from its head; the ring holds FERRY_PLACEQ_SLOTS and
 * keeps working when its counters wrap. Then a model check: two simulated
 * placing threads in random interleavings never write a page out of stream
 * order.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "migration/placeq.h"

static const char blk_a = 'a', blk_b = 'b';

static int push(struct ferry_placeq *q, const void *blk, uint64_t first, uint32_t n)
{
	int i = ferry__placeq_free_slot(q);
	assert_true(i >= 0);
	ferry__placeq_push(q, blk, first, n);
	return i;
}

static void t_order_and_overlap(void **s)
{
	(void)s;
	struct ferry_placeq q = {0};
	assert_int_equal(ferry__placeq_take(&q), -1); /* empty */
	int a = push(&q, &blk_a, 0, 10);   /* pages 0..9 */
	int b = push(&q, &blk_a, 10, 10);  /* 10..19: distinct */
	int c = push(&q, &blk_a, 9, 2);    /* 9..10: overlaps a and b */
	int d = push(&q, &blk_b, 0, 10);   /* same pages, other block */
	assert_int_equal(ferry__placeq_take(&q), a);
	assert_int_equal(ferry__placeq_take(&q), b);
	/* c overlaps slots being placed: not taken, and d behind it waits too. */
	assert_int_equal(ferry__placeq_take(&q), -1);
	ferry__placeq_done(&q, a);
	assert_int_equal(ferry__placeq_take(&q), -1); /* still overlaps b */
	ferry__placeq_done(&q, b);
	assert_int_equal(ferry__placeq_take(&q), c);
	assert_int_equal(ferry__placeq_take(&q), d); /* other block: no overlap */
	assert_true(ferry__placeq_none_queued(&q));
	assert_int_equal(q.used, 2);
	ferry__placeq_done(&q, c);
	ferry__placeq_done(&q, d);
	assert_int_equal(q.used, 0);
}

static void t_adjacent_runs_do_not_overlap(void **s)
{
	(void)s;
	struct ferry_placeq q = {0};
	int a = push(&q, &blk_a, 100, 1);
	int b = push(&q, &blk_a, 101, 1);
	int c = push(&q, &blk_a, 99, 1);
	assert_int_equal(ferry__placeq_take(&q), a);
	assert_int_equal(ferry__placeq_take(&q), b);
	assert_int_equal(ferry__placeq_take(&q), c);
	int d = push(&q, &blk_a, 101, 1); /* b's page again */
	assert_int_equal(ferry__placeq_take(&q), -1);
	ferry__placeq_done(&q, b);
	assert_int_equal(ferry__placeq_take(&q), d);
}

static void t_full_ring_and_out_of_order_done(void **s)
{
	(void)s;
	struct ferry_placeq q = {0};
	int idx[FERRY_PLACEQ_SLOTS];
	for (unsigned i = 0; i < FERRY_PLACEQ_SLOTS; i++)
		idx[i] = push(&q, &blk_a, i * 256, 256);
	assert_int_equal(ferry__placeq_free_slot(&q), -1);
	for (unsigned i = 0; i < FERRY_PLACEQ_SLOTS; i++)
		assert_int_equal(ferry__placeq_take(&q), idx[i]);
	/* The newest is done first: the ring stays full until the oldest is. */
	ferry__placeq_done(&q, idx[FERRY_PLACEQ_SLOTS - 1]);
	assert_int_equal(ferry__placeq_free_slot(&q), -1);
	ferry__placeq_done(&q, idx[1]);
	assert_int_equal(ferry__placeq_free_slot(&q), -1);
	ferry__placeq_done(&q, idx[0]); /* frees 0 and 1 */
	assert_int_equal(q.used, FERRY_PLACEQ_SLOTS - 2);
	assert_int_equal(ferry__placeq_free_slot(&q), idx[0]);
}

static void t_counters_wrap(void **s)
{
	(void)s;
	struct ferry_placeq q = {.head = UINT32_MAX - 2, .next = UINT32_MAX - 2};
	for (unsigned k = 0; k < 20; k++) {
		int a = push(&q, &blk_a, k, 1);
		int b = push(&q, &blk_a, k, 1); /* same page: waits for a */
		assert_int_equal(ferry__placeq_take(&q), a);
		assert_int_equal(ferry__placeq_take(&q), -1);
		ferry__placeq_done(&q, a);
		assert_int_equal(ferry__placeq_take(&q), b);
		ferry__placeq_done(&q, b);
		assert_int_equal(q.used, 0);
	}
}

/* ferry__placeq_holds: queued and placing slots hold their pages, done ones none. */
static void t_holds(void **s)
{
	(void)s;
	struct ferry_placeq q = {0};
	assert_false(ferry__placeq_holds(&q, &blk_a, 0, 100));
	int a = push(&q, &blk_a, 10, 5); /* 10..14 */
	push(&q, &blk_a, 20, 1);
	assert_true(ferry__placeq_holds(&q, &blk_a, 14, 1));
	assert_true(ferry__placeq_holds(&q, &blk_a, 0, 11));
	assert_true(ferry__placeq_holds(&q, &blk_a, 20, 1));
	assert_false(ferry__placeq_holds(&q, &blk_a, 15, 5)); /* 15..19: between */
	assert_false(ferry__placeq_holds(&q, &blk_b, 10, 5)); /* other block */
	assert_int_equal(ferry__placeq_take(&q), a);
	assert_true(ferry__placeq_holds(&q, &blk_a, 12, 1)); /* being placed */
	ferry__placeq_done(&q, a);
	assert_false(ferry__placeq_holds(&q, &blk_a, 10, 5));
	assert_true(ferry__placeq_holds(&q, &blk_a, 19, 2));
}

/*
 * Model: 3000 runs over 64 pages, two placing threads, each step chosen at
 * random (fill, take by thread 0 or 1, finish thread 0's or 1's slot). A
 * "write" happens when a slot is finished; each page must see the runs that
 * name it in stream order. The filler writes some runs itself instead of
 * queueing them, as ram-load.c's place_here does, when no slot holds their
 * pages.
 */
static void t_model_two_threads(void **s)
{
	(void)s;
	struct ferry_placeq q = {0};
	uint32_t seq[FERRY_PLACEQ_SLOTS]; /* slot -> run number */
	uint32_t last[64];                /* page -> last run written (+1) */
	memset(last, 0, sizeof(last));
	int held[2] = {-1, -1};
	uint32_t x = 7, pushed = 0, written = 0;
	while (written < 3000) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		unsigned op = x % 5;
		if (op == 0) {
			if (pushed == 3000 || ferry__placeq_free_slot(&q) < 0)
				continue;
			uint64_t first = (x >> 8) % 64;
			uint32_t n = 1 + (x >> 16) % 8;
			if (first + n > 64)
				n = (uint32_t)(64 - first);
			if ((x >> 24) % 3 == 0 && !ferry__placeq_holds(&q, &blk_a, first, n)) {
				++pushed; /* written here, now */
				for (uint64_t p = first; p < first + n; p++) {
					assert_true(last[p] < pushed);
					last[p] = pushed;
				}
				written++;
				continue;
			}
			seq[push(&q, &blk_a, first, n)] = ++pushed;
		} else if (op <= 2 && held[op - 1] < 0) {
			held[op - 1] = ferry__placeq_take(&q);
		} else if (op >= 3 && held[op - 3] >= 0) {
			int i = held[op - 3];
			for (uint64_t p = q.slot[i].first; p < q.slot[i].first + q.slot[i].n; p++) {
				assert_true(last[p] < seq[i]); /* never an older run over a newer */
				last[p] = seq[i];
			}
			ferry__placeq_done(&q, i);
			held[op - 3] = -1;
			written++;
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_order_and_overlap),
		cmocka_unit_test(t_adjacent_runs_do_not_overlap),
		cmocka_unit_test(t_full_ring_and_out_of_order_done),
		cmocka_unit_test(t_counters_wrap),
		cmocka_unit_test(t_holds),
		cmocka_unit_test(t_model_two_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
