/* SPDX-License-Identifier: MIT */
/*
 * A small epoll event loop for the `ferry host` control plane: file
 * descriptor watches and one-shot timers, nothing else.
 *
 * Interface:
 *   ferry_loop_create / _destroy, ferry_loop_run / _stop
 *   ferry_loop_watch_add / _set / _remove   fd readiness (level-triggered)
 *   ferry_loop_timer_start / _stop          one-shot timers, caller-owned
 *
 * Ownership rules:
 *  1. ferry_loop_create() success => the caller calls ferry_loop_destroy();
 *     failure => nothing to free.
 *  2. A watch is owned by the loop from ferry_loop_watch_add() until
 *     ferry_loop_watch_remove(); the fd stays the caller's (close it after
 *     removing the watch). Removing a watch from inside any callback is
 *     safe: an event of the same batch for a removed watch is never
 *     dispatched, and the memory is freed after the batch.
 *  3. Timers are caller-owned structs (not movable while started); a
 *     started timer must be stopped before its memory is reused.
 *
 * Thread: everything here is loop-thread only (the thread that calls
 * ferry_loop_run()). Other threads wake the loop through an eventfd they
 * write to, watched like any other fd.
 */
#ifndef FERRY_DAEMON_LOOP_H
#define FERRY_DAEMON_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

typedef struct ferry_loop ferry_loop;
typedef struct ferry_loop_watch ferry_loop_watch;

/* events: EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP as epoll reports them. */
typedef void (*ferry_loop_io_fn)(void *opaque, uint32_t events);
typedef void (*ferry_loop_timer_fn)(void *opaque);

typedef struct ferry_loop_timer {
	/* Private: set by ferry_loop_timer_start(). */
	struct ferry_loop_timer *next;
	uint64_t due_ms;
	ferry_loop_timer_fn fn;
	void *opaque;
	bool active;
} ferry_loop_timer;

/* Returns 0 or a negative errno (-EMFILE, -ENOMEM). */
int ferry_loop_create(ferry_loop **out);

/* Frees the loop; every watch must have been removed. NULL is a no-op. */
void ferry_loop_destroy(ferry_loop *l);

/*
 * Dispatches events until ferry_loop_stop(). Returns 0, or a negative
 * errno if epoll_wait failed (other than EINTR).
 */
int ferry_loop_run(ferry_loop *l);

/*
 * One turn of the loop: fires the due timers, waits at most timeout_ms
 * (0: not at all; never past the next timer) for fd events and dispatches
 * them. For embedders and tests that drive the loop themselves (the QMP
 * fuzz target runs it until nothing is left to do). Returns how many
 * timers and events it dispatched, or a negative errno if epoll_wait
 * failed (EINTR counts as nothing dispatched).
 */
int ferry_loop_run_once(ferry_loop *l, int timeout_ms);

/* Makes ferry_loop_run() return after the current callback. */
void ferry_loop_stop(ferry_loop *l);

/* Monotonic milliseconds, the clock timers use. Thread: any. */
uint64_t ferry_loop_now_ms(void);

/*
 * Watches fd for events (EPOLLIN and/or EPOLLOUT; errors and hang-ups are
 * always reported). Returns 0 (and *out) or a negative errno from epoll_ctl.
 */
int ferry_loop_watch_add(ferry_loop *l, int fd, uint32_t events, ferry_loop_io_fn fn,
			 void *opaque, ferry_loop_watch **out);

/* Changes the events of interest. Returns 0 or a negative errno. */
int ferry_loop_watch_set(ferry_loop_watch *w, uint32_t events);

/* Stops watching (see rule 2). NULL is a no-op. */
void ferry_loop_watch_remove(ferry_loop_watch *w);

/* (Re)starts t to fire once, delay_ms from now. */
void ferry_loop_timer_start(ferry_loop *l, ferry_loop_timer *t, uint64_t delay_ms,
			    ferry_loop_timer_fn fn, void *opaque);

/* Stops t if started; a no-op otherwise. */
void ferry_loop_timer_stop(ferry_loop *l, ferry_loop_timer *t);

#endif
