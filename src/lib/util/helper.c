/* SPDX-License-Identifier: MIT */
/* A helper thread for split work (see helper.h). */
#include "util/helper.h"
#include "util/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static void *helper_main(void *arg)
{
	ferry_helper *h = arg;
	pthread_setname_np(pthread_self(), h->name);
	pthread_mutex_lock(&h->lock);
	for (;;) {
		while (!h->fn && !h->quit)
			pthread_cond_wait(&h->cond, &h->lock);
		if (h->quit)
			break;
		void (*fn)(void *) = h->fn;
		void *a = h->arg;
		pthread_mutex_unlock(&h->lock);
		fn(a);
		pthread_mutex_lock(&h->lock);
		h->fn = NULL;
		pthread_cond_broadcast(&h->cond);
	}
	pthread_mutex_unlock(&h->lock);
	ferry__log_thread_cpu();
	return NULL;
}

int ferry__helper_start(ferry_helper *h, const char *name)
{
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", name);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	/* Helpers never handle signals: block them all in the new thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&h->thread, NULL, helper_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		pthread_mutex_destroy(&h->lock);
		pthread_cond_destroy(&h->cond);
		return -r;
	}
	h->started = true;
	return 0;
}

void ferry__helper_submit(ferry_helper *h, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&h->lock);
	h->fn = fn;
	h->arg = arg;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

void ferry__helper_wait(ferry_helper *h)
{
	pthread_mutex_lock(&h->lock);
	while (h->fn)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
}

void ferry__helper_stop(ferry_helper *h)
{
	if (!h->started)
		return;
	ferry__helper_wait(h);
	pthread_mutex_lock(&h->lock);
	h->quit = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	h->started = false;
}
