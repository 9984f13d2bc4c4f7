/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the buffer pool (src/lib/util/bufpool.c): a buffer given
 * back is the next one handed out (its pages stay), sizes outside
 * [cap / 4, cap] get plain buffers that are never cached, the pool counts
 * exactly the buffers it made, reserve makes only what is missing, trim
 * frees the cached ones, and two
 * threads passing buffers to each other (a save thread and a sender) end
 * with as many buffers as were ever in flight at once.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util/bufpool.h"

#define CAP 4096u

static void test_reuse(void **state)
{
	(void)state;
	ferry_bufpool *p = ferry__bufpool_create(CAP);
	assert_non_null(p);
	uint8_t *a = ferry__buf_get(p, CAP);
	uint8_t *b = ferry__buf_get(p, CAP / 4);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal((uintptr_t)a % 16, 0);
	memset(a, 0xa5, CAP); /* the whole capacity is usable */
	memset(b, 0x5a, CAP);
	assert_int_equal(ferry__bufpool_bytes(p), 2 * CAP);
	ferry__buf_put(a);
	assert_ptr_equal(ferry__buf_get(p, CAP - 1), a); /* the cached one, not a new one */
	ferry__buf_put(b);
	ferry__buf_put(a);
	assert_int_equal(ferry__bufpool_bytes(p), 2 * CAP);
	ferry__bufpool_trim(p);
	assert_int_equal(ferry__bufpool_bytes(p), 0);
	ferry__bufpool_destroy(p);
}

static void test_plain(void **state)
{
	(void)state;
	ferry_bufpool *p = ferry__bufpool_create(CAP);
	uint8_t *small = ferry__buf_get(p, CAP / 4 - 1);
	uint8_t *big = ferry__buf_get(p, CAP + 1);
	uint8_t *none = ferry__buf_get(NULL, CAP);
	uint8_t *empty = ferry__buf_get(p, 0);
	assert_non_null(small);
	assert_non_null(big);
	assert_non_null(none);
	assert_non_null(empty);
	memset(big, 1, CAP + 1);
	assert_int_equal(ferry__bufpool_bytes(p), 0); /* none of them is the pool's */
	ferry__buf_put(small);
	ferry__buf_put(big);
	ferry__buf_put(none);
	ferry__buf_put(empty);
	ferry__buf_put(NULL);
	assert_int_equal(ferry__bufpool_bytes(p), 0);
	ferry__bufpool_destroy(p);
	ferry__bufpool_destroy(NULL);
}

static void test_reserve(void **state)
{
	(void)state;
	ferry_bufpool *p = ferry__bufpool_create(CAP);
	void *out = ferry__buf_get(p, CAP);
	assert_int_equal(ferry__bufpool_reserve(p, 3), 0);
	assert_int_equal(ferry__bufpool_bytes(p), 3 * CAP); /* the one out counts */
	assert_int_equal(ferry__bufpool_reserve(p, 2), 0);   /* enough already: nothing made */
	assert_int_equal(ferry__bufpool_bytes(p), 3 * CAP);
	void *a = ferry__buf_get(p, CAP), *b = ferry__buf_get(p, CAP);
	assert_int_equal(ferry__bufpool_bytes(p), 3 * CAP); /* both from the reserve */
	const uint8_t zero[CAP] = { 0 };
	assert_memory_equal((uint8_t *)a + sizeof(void *), zero, CAP - sizeof(void *)); /* touched */
	ferry__buf_put(a);
	ferry__buf_put(b);
	ferry__buf_put(out);
	ferry__bufpool_destroy(p);
}

/* A one-slot hand-off: the producer gets, the consumer puts. */
struct handoff {
	ferry_bufpool *p;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	void *slot;
	unsigned n;
};

static void *consumer(void *arg)
{
	struct handoff *h = arg;
	for (unsigned i = 0; i < h->n; i++) {
		pthread_mutex_lock(&h->lock);
		while (!h->slot)
			pthread_cond_wait(&h->cond, &h->lock);
		void *b = h->slot;
		h->slot = NULL;
		pthread_cond_broadcast(&h->cond);
		pthread_mutex_unlock(&h->lock);
		ferry__buf_put(b);
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	struct handoff h = { .p = ferry__bufpool_create(CAP), .n = 10000 };
	pthread_mutex_init(&h.lock, NULL);
	pthread_cond_init(&h.cond, NULL);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, consumer, &h), 0);
	for (unsigned i = 0; i < h.n; i++) {
		void *b = ferry__buf_get(h.p, CAP);
		assert_non_null(b);
		pthread_mutex_lock(&h.lock);
		while (h.slot)
			pthread_cond_wait(&h.cond, &h.lock);
		h.slot = b;
		pthread_cond_broadcast(&h.cond);
		pthread_mutex_unlock(&h.lock);
	}
	pthread_join(t, NULL);
	/* At most one in the slot, one with the consumer, one being filled. */
	assert_in_range(ferry__bufpool_bytes(h.p), CAP, 3 * CAP);
	ferry__bufpool_destroy(h.p);
	pthread_mutex_destroy(&h.lock);
	pthread_cond_destroy(&h.cond);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reuse),
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
