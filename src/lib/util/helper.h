/* SPDX-License-Identifier: MIT */
/*
 * A helper thread that runs one job at a time for its owner, so the owner
 * can split a CPU-bound step (zero-page detection, setting up dirty
 * tracking) in two and do one half itself.
 *
 * DESIGN: one job slot under a mutex; submit fills it and signals, wait
 * blocks until the helper cleared it. The job's writes happen before the
 * helper clears the slot under the mutex, so after wait() returns the owner
 * sees them (the mutex orders both). No queue: the owner always waits for a
 * job before submitting the next.
 *
 * Thread: start/submit/wait/stop are called by the owner thread only.
 */
#ifndef FERRY_UTIL_HELPER_H
#define FERRY_UTIL_HELPER_H

#include <pthread.h>
#include <stdbool.h>

typedef struct ferry_helper {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	void (*fn)(void *arg); /* protected by lock; NULL when idle */
	void *arg;             /* protected by lock */
	bool quit;             /* protected by lock */
	bool started;          /* owner only */
	char name[16];
} ferry_helper;

/* Starts the thread (named `name`). Returns 0 or a negative errno. */
int ferry__helper_start(ferry_helper *h, const char *name);
/* Runs fn(arg) on the helper; the previous job must have been waited for. */
void ferry__helper_submit(ferry_helper *h, void (*fn)(void *), void *arg);
/* Waits until the submitted job finished. */
void ferry__helper_wait(ferry_helper *h);
/* Stops and joins the thread. Idempotent; safe on a never-started helper. */
void ferry__helper_stop(ferry_helper *h);

#endif
