/* SPDX-License-Identifier: MIT */
/*
 * The first-kernel-access probe (kcopy.h).
 * Thread: any; the figures are written once under pthread_once.
 */
#include "util/kcopy.h"

#include <errno.h>
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
#define PROBE_TRIALS 6u

static pthread_once_t once = PTHREAD_ONCE_INIT;
static uint64_t first_ns, warm_ns; /* written once, in probe() */
static bool slow;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* write() or read() of all len bytes, again after a signal. */
static bool all(bool out, int fd, void *b, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = out ? write(fd, (uint8_t *)b + done, len - done)
				: read(fd, (uint8_t *)b + done, len - done);
		if (n <= 0 && !(n < 0 && errno == EINTR))
			return false;
		done += n > 0 ? (size_t)n : 0;
	}
	return true;
}

/* Nanoseconds per page for the kernel to read pages through the pipe; UINT64_MAX on error. */
static uint64_t through_pipe(const int p[2], uint8_t *pages, uint8_t *sink)
{
	uint64_t t0 = now_ns();
	for (size_t off = 0; off < (size_t)PROBE_PAGES * PROBE_PAGE; off += PROBE_PIECE)
		if (!all(true, p[1], pages + off, PROBE_PIECE) || !all(false, p[0], sink, PROBE_PIECE))
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
	/*
	 * Several trials, the fastest of each pass kept: preemption, and a
	 * hypervisor busy with other memory, only ever make a pass slower, and
	 * a slow warm pass would hide a slow first one. Stops early once the
	 * answer is clear (first pass >= 8x the warm one).
	 */
	first_ns = warm_ns = UINT64_MAX;
	for (unsigned t = 0; t < PROBE_TRIALS; t++) {
		uint64_t f, w;
		trial(p, sink, &f, &w);
		first_ns = f < first_ns ? f : first_ns;
		warm_ns = w < warm_ns ? w : warm_ns;
		if (t >= 1 && warm_ns != UINT64_MAX && first_ns >= 8 * warm_ns)
			break;
	}
	close(p[0]);
	close(p[1]);
	if (first_ns == UINT64_MAX || warm_ns == UINT64_MAX) {
		ferry_warn("kernel copy probe failed: x-user-copy auto copies straight");
		return;
	}
	slow = first_ns >= 4 * warm_ns && first_ns >= warm_ns + 2000;
	ferry_info("kernel copy probe: first access %llu ns/page, then %llu: %s",
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
