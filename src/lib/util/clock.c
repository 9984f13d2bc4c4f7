/* SPDX-License-Identifier: MIT */
/*
 * The clock functions that are not inline (clock.h): how long the calling
 * thread waited for a CPU, from the scheduler's statistics.
 */
#include "util/clock.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

uint64_t ferry__thread_wait_ns(void)
{
	/* "<ns on a CPU> <ns runnable, waiting for one> <timeslices>" */
	int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[96];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	uint64_t run, wait;
	if (sscanf(buf, "%" SCNu64 " %" SCNu64, &run, &wait) != 2)
		return 0;
	return wait;
}
