/* SPDX-License-Identifier: MIT */
/* Monotonic and wall clocks in ns/us/ms. Thread: any. */
#ifndef FERRY_UTIL_CLOCK_H
#define FERRY_UTIL_CLOCK_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t ferry__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t ferry__now_ms(void)
{
	return ferry__now_ns() / 1000000ull;
}

static inline uint64_t ferry__wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

/*
 * How long the calling thread has been runnable but waiting for a CPU since
 * it started, in ns (/proc/thread-self/schedstat); 0 where the kernel does
 * not say (CONFIG_SCHED_INFO off). A difference of two readings is the time
 * other threads held the CPUs this one wanted.
 */
uint64_t ferry__thread_wait_ns(void);

/* The CPU time thread t has used (ns; 0 if it cannot be read). */
static inline uint64_t ferry__thread_cpu_ns(pthread_t t)
{
	clockid_t id;
	struct timespec ts;
	if (pthread_getcpuclockid(t, &id) || clock_gettime(id, &ts))
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The time a thread ran of an interval took ns long in which it waited
 * waited ns for a CPU: took - waited, but at least took / 10, so that a
 * reading gone wrong (the counters are sampled, not exact) changes a rate
 * measured over the interval by 10x at most.
 */
static inline uint64_t ferry__ran_ns(uint64_t took, uint64_t waited)
{
	uint64_t floor = took / 10;
	return waited < took && took - waited > floor ? took - waited : floor;
}

/* Sleeps ns, the rest again after a signal (only then: any other failure returns). */
static inline void ferry__sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* The CLOCK_MONOTONIC deadline ms from now, for a ferry__cond_init_monotonic wait. */
static inline struct timespec ferry__deadline_ms(uint64_t ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += (time_t)(ms / 1000);
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	return dl;
}

/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines. */
static inline void ferry__cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cond, &ca);
	pthread_condattr_destroy(&ca);
}

#endif
