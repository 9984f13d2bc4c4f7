/* SPDX-License-Identifier: MIT */
/*
 * Buffers that keep their pages (bufpool.h says why). Each buffer is a
 * malloc'd block: a 16-byte header (its pool or NULL) then the data. The
 * pool keeps the buffers given back on a free list threaded through their
 * data, so a cached buffer costs no memory beyond itself.
 *
 * Thread: any. struct ferry_bufpool's free list and counters are protected
 * by its lock.
 */
#include "util/bufpool.h"

#include <assert.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct buf_hdr {
	alignas(16) ferry_bufpool *pool; /* NULL: a plain buffer */
};
static_assert(sizeof(struct buf_hdr) == 16, "data stays 16-byte aligned");

struct free_buf {
	struct free_buf *next;
};

struct ferry_bufpool {
	size_t cap;
	pthread_mutex_t lock;
	struct free_buf *free; /* protected by lock */
	size_t total;          /* buffers allocated and not freed; protected by lock */
};

ferry_bufpool *ferry__bufpool_create(size_t cap)
{
	ferry_bufpool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->cap = cap < sizeof(struct free_buf) ? sizeof(struct free_buf) : cap;
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

void ferry__bufpool_trim(ferry_bufpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	struct free_buf *f = p->free;
	p->free = NULL;
	while (f) {
		struct free_buf *next = f->next;
		free((struct buf_hdr *)f - 1);
		p->total--;
		f = next;
	}
	pthread_mutex_unlock(&p->lock);
}

void ferry__bufpool_destroy(ferry_bufpool *p)
{
	if (!p)
		return;
	ferry__bufpool_trim(p);
	assert(p->total == 0);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static void *plain(ferry_bufpool *pool, size_t len)
{
	struct buf_hdr *h = malloc(sizeof(*h) + (len ? len : 1));
	if (!h)
		return NULL;
	h->pool = pool;
	return h + 1;
}

void *ferry__buf_get(ferry_bufpool *p, size_t len)
{
	if (!p || len > p->cap || len < p->cap / 4)
		return plain(NULL, len);
	pthread_mutex_lock(&p->lock);
	struct free_buf *f = p->free;
	if (f)
		p->free = f->next;
	else
		p->total++; /* counted before the allocation: undone below on ENOMEM */
	pthread_mutex_unlock(&p->lock);
	if (f)
		return f;
	void *d = plain(p, p->cap);
	if (!d) {
		pthread_mutex_lock(&p->lock);
		p->total--;
		pthread_mutex_unlock(&p->lock);
	}
	return d;
}

void ferry__buf_put(void *data)
{
	if (!data)
		return;
	struct buf_hdr *h = (struct buf_hdr *)data - 1;
	ferry_bufpool *p = h->pool;
	if (!p) {
		free(h);
		return;
	}
	struct free_buf *f = data;
	pthread_mutex_lock(&p->lock);
	f->next = p->free;
	p->free = f;
	pthread_mutex_unlock(&p->lock);
}

bool ferry__bufpool_reserve_on = true;

int ferry__bufpool_reserve(ferry_bufpool *p, size_t n)
{
	if (!ferry__bufpool_reserve_on)
		return 0;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		bool enough = p->total >= n;
		if (!enough)
			p->total++;
		pthread_mutex_unlock(&p->lock);
		if (enough)
			return 0;
		struct free_buf *f = plain(p, p->cap);
		if (f)
			memset(f, 0, p->cap); /* the first touch (see bufpool.h) */
		pthread_mutex_lock(&p->lock);
		if (f) {
			f->next = p->free;
			p->free = f;
		} else {
			p->total--;
		}
		pthread_mutex_unlock(&p->lock);
		if (!f)
			return -ENOMEM;
	}
}

size_t ferry__bufpool_bytes(ferry_bufpool *p)
{
	if (!p)
		return 0;
	pthread_mutex_lock(&p->lock);
	size_t n = p->total * p->cap;
	pthread_mutex_unlock(&p->lock);
	return n;
}
