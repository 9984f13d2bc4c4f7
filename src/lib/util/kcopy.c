/* SPDX-License-Identifier: MIT */
/*
 * The first-kernel-access probe (kcopy.h).
 * Thread: any; the figures are written once under pthread_once.
 */
#include "util/kcopy.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

#define PROBE_PAGES 32u
#define PROBE_PAGE 4096u
#define PROBE_PIECE (8u * PROBE_PAGE) /* fits the smallest pipe (64 KiB) twice over */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static uint64_t first_ns, warm_ns; /* written once, in probe() */
static bool slow;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Nanoseconds per page for the kernel to read pages through the pipe; UINT64_MAX on error. */
static uint64_t through_pipe(const int p[2], const uint8_t *pages, uint8_t *sink)
{
	uint64_t t0 = now_ns();
	for (size_t off = 0; off < (size_t)PROBE_PAGES * PROBE_PAGE; off += PROBE_PIECE)
		if (write(p[1], pages + off, PROBE_PIECE) != PROBE_PIECE ||
		    read(p[0], sink, PROBE_PIECE) != PROBE_PIECE)
			return UINT64_MAX;
	return (now_ns() - t0) / PROBE_PAGES;
}

/* One trial on fresh pages: the kernel's first access, then its second. */
static void trial(const int p[2], uint8_t *sink, uint64_t *first, uint64_t *warm)
{
	size_t len = (size_t)PROBE_PAGES * PROBE_PAGE;
	uint8_t *pages = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	*first = *warm = UINT64_MAX;
	if (pages == MAP_FAILED)
		return;
	memset(pages, 0x5a, len); /* written from user space, as guest RAM is */
	*first = through_pipe(p, pages, sink);
	*warm = through_pipe(p, pages, sink);
	munmap(pages, len);
}

static void probe(void)
{
	int p[2];
	static uint8_t sink[PROBE_PIECE];
	if (pipe2(p, O_CLOEXEC))
		return;
	uint64_t f[2], w[2];
	/* Two trials, the faster kept: preemption only ever makes one slower. */
	trial(p, sink, &f[0], &w[0]);
	trial(p, sink, &f[1], &w[1]);
	close(p[0]);
	close(p[1]);
	first_ns = f[0] < f[1] ? f[0] : f[1];
	warm_ns = w[0] < w[1] ? w[0] : w[1];
	if (first_ns == UINT64_MAX || warm_ns == UINT64_MAX)
		return;
	slow = first_ns >= 4 * warm_ns && first_ns >= warm_ns + 2000;
	ferry_dbg("kernel copy probe: first access %llu ns/page, then %llu: %s",
		  (unsigned long long)first_ns, (unsigned long long)warm_ns,
		  slow ? "user-space copies pay" : "direct");
}

bool ferry__kcopy_first_slow(void)
{
	pthread_once(&once, probe);
	return slow;
}

void ferry__kcopy_figures(uint64_t *first, uint64_t *warm)
{
	pthread_once(&once, probe);
	*first = first_ns;
	*warm = warm_ns;
}
