/* SPDX-License-Identifier: MIT */
/* Logging (see log.h). */
#include "util/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "util/clock.h"

static int level = -1;

int ferry__log_level(void)
{
	/* Benign race: every thread computes the same value. */
	int l = __atomic_load_n(&level, __ATOMIC_RELAXED);
	if (l >= 0)
		return l;
	const char *e = getenv("FERRY_LOG");
	l = FERRY_LOG_WARN;
	if (e) {
		if (!strcmp(e, "error"))
			l = FERRY_LOG_ERROR;
		else if (!strcmp(e, "info"))
			l = FERRY_LOG_INFO;
		else if (!strcmp(e, "debug"))
			l = FERRY_LOG_DEBUG;
	}
	__atomic_store_n(&level, l, __ATOMIC_RELAXED);
	return l;
}

void ferry__log(int lvl, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	if (lvl > ferry__log_level())
		return;
	char thr[16] = "?";
	pthread_getname_np(pthread_self(), thr, sizeof(thr));
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ferry[%s] %s: %s\n", thr, names[lvl], msg);
}

void ferry__log_thread_cpu(void)
{
	if (ferry__log_level() < FERRY_LOG_DEBUG) /* nothing to measure for */
		return;
	/* Context switches: a thread that waits on others (locks, queues, sockets) switches often. */
	struct rusage ru = { 0 };
	getrusage(RUSAGE_THREAD, &ru);
	ferry_dbg("thread done: %.1f ms of CPU, %ld voluntary and %ld involuntary switches",
		  (double)ferry__thread_cpu_ns(pthread_self()) / 1e6, ru.ru_nvcsw, ru.ru_nivcsw);
}
