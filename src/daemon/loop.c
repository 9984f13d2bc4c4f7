/* SPDX-License-Identifier: MIT */
/*
 * The control plane's event loop (see loop.h): epoll for file descriptors,
 * a sorted list for timers.
 *
 * DESIGN: one epoll instance, level-triggered, whose epoll_event.data.ptr
 * is the watch. Callbacks may remove any watch, including ones with events
 * still pending in the current batch: removal marks the watch `dead`,
 * deletes it from epoll at once and parks it on a graveyard list that is
 * freed only after the whole batch was dispatched, so a stale pointer in
 * the batch is still valid memory and is skipped because it is dead.
 * Timers are few (a handful per host), kept in a singly linked list sorted
 * by due time; due timers fire one at a time, re-reading the list head
 * after each callback, so a callback may start or stop any timer.
 *
 * Thread: loop thread only (loop.h).
 */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define LOOP_BATCH 64

struct ferry_loop_watch {
	ferry_loop *loop;
	int fd;
	uint32_t events;
	ferry_loop_io_fn fn;
	void *opaque;
	bool dead;
	ferry_loop_watch *next_dead;
};

struct ferry_loop {
	int epfd;
	bool stop;
	ferry_loop_timer *timers;   /* sorted by due_ms */
	ferry_loop_watch *graveyard; /* removed watches, freed after each batch */
};

uint64_t ferry_loop_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int ferry_loop_create(ferry_loop **out)
{
	*out = NULL;
	ferry_loop *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		int r = -errno;
		free(l);
		return r;
	}
	*out = l;
	return 0;
}

static void free_graveyard(ferry_loop *l)
{
	while (l->graveyard) {
		ferry_loop_watch *w = l->graveyard;
		l->graveyard = w->next_dead;
		free(w);
	}
}

void ferry_loop_destroy(ferry_loop *l)
{
	if (!l)
		return;
	free_graveyard(l);
	close(l->epfd);
	free(l);
}

void ferry_loop_stop(ferry_loop *l)
{
	l->stop = true;
}

int ferry_loop_watch_add(ferry_loop *l, int fd, uint32_t events, ferry_loop_io_fn fn,
			 void *opaque, ferry_loop_watch **out)
{
	ferry_loop_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->loop = l;
	w->fd = fd;
	w->events = events;
	w->fn = fn;
	w->opaque = opaque;
	struct epoll_event ev = { .events = events, .data.ptr = w };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = -errno;
		free(w);
		return r;
	}
	if (out)
		*out = w;
	return 0;
}

int ferry_loop_watch_set(ferry_loop_watch *w, uint32_t events)
{
	if (w->dead)
		return -EBADF;
	if (w->events == events)
		return 0;
	struct epoll_event ev = { .events = events, .data.ptr = w };
	if (epoll_ctl(w->loop->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

void ferry_loop_watch_remove(ferry_loop_watch *w)
{
	if (!w || w->dead)
		return;
	/* Failure means the fd is already gone from the set: nothing to undo. */
	epoll_ctl(w->loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->dead = true;
	w->next_dead = w->loop->graveyard;
	w->loop->graveyard = w;
}

void ferry_loop_timer_stop(ferry_loop *l, ferry_loop_timer *t)
{
	if (!t->active)
		return;
	for (ferry_loop_timer **p = &l->timers; *p; p = &(*p)->next)
		if (*p == t) {
			*p = t->next;
			break;
		}
	t->active = false;
	t->next = NULL;
}

void ferry_loop_timer_start(ferry_loop *l, ferry_loop_timer *t, uint64_t delay_ms,
			    ferry_loop_timer_fn fn, void *opaque)
{
	ferry_loop_timer_stop(l, t);
	t->due_ms = ferry_loop_now_ms() + delay_ms;
	t->fn = fn;
	t->opaque = opaque;
	t->active = true;
	ferry_loop_timer **p = &l->timers;
	while (*p && (*p)->due_ms <= t->due_ms)
		p = &(*p)->next;
	t->next = *p;
	*p = t;
}

/*
 * Fires every due timer (counting them in *fired); returns the epoll
 * timeout until the next one.
 */
static int run_timers(ferry_loop *l, unsigned *fired)
{
	for (;;) {
		ferry_loop_timer *t = l->timers;
		if (!t)
			return -1;
		uint64_t now = ferry_loop_now_ms();
		if (t->due_ms > now) {
			uint64_t d = t->due_ms - now;
			return d > 60000 ? 60000 : (int)d;
		}
		l->timers = t->next;
		t->active = false;
		t->next = NULL;
		t->fn(t->opaque);
		(*fired)++;
		if (l->stop)
			return 0;
	}
}

/* Dispatches one epoll batch (waiting at most timeout ms); returns the events or -errno. */
static int run_batch(ferry_loop *l, int timeout)
{
	struct epoll_event evs[LOOP_BATCH];
	int n = epoll_wait(l->epfd, evs, LOOP_BATCH, timeout);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n && !l->stop; i++) {
		ferry_loop_watch *w = evs[i].data.ptr;
		if (!w->dead) /* removed by an earlier callback of this batch */
			w->fn(w->opaque, evs[i].events);
	}
	free_graveyard(l);
	return n;
}

int ferry_loop_run(ferry_loop *l)
{
	unsigned fired = 0;
	l->stop = false;
	while (!l->stop) {
		int timeout = run_timers(l, &fired);
		if (l->stop)
			break;
		int n = run_batch(l, timeout);
		if (n < 0)
			return n;
	}
	free_graveyard(l);
	return 0;
}

int ferry_loop_run_once(ferry_loop *l, int timeout_ms)
{
	unsigned fired = 0;
	l->stop = false;
	int next = run_timers(l, &fired);
	if (l->stop)
		return (int)fired;
	int timeout = next >= 0 && next < timeout_ms ? next : timeout_ms;
	int n = run_batch(l, fired ? 0 : timeout);
	return n < 0 ? n : (int)fired + n;
}
