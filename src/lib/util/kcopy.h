/* SPDX-License-Identifier: MIT */
/*
 * Whether this machine's kernel pays a high price the first time it copies
 * to or from a user page, measured once per process.
 *
 * Some virtual machines (seen here: a guest of a paravirtual nested
 * hypervisor with shadow paging) charge a kernel access to a user page that
 * the kernel has not touched before several microseconds, about ten times
 * the copy itself: a sendmsg() of guest RAM or a recv() into it then moves
 * 0.4 GB/s where the same calls from a buffer the kernel has used before
 * move 3-6 GB/s. On such a machine the page path is faster with one more
 * copy in user space (memcpy through a small reused buffer, 10+ GB/s)
 * than with none, and x-user-copy's "auto" chooses it (stream/chan.c's
 * staging, migration/place.c's FERRY_PLACE_COPY).
 *
 * The probe: 32 freshly written pages go through a pipe twice; the first
 * pass is the kernel's first access, the second its usual cost; up to six
 * trials, the fastest of each pass kept. Slow when the first costs 4x the
 * second and at least 2 us per page more (bare metal: about the same).
 * 1-3 ms once, on the first call; logged at info level.
 * Thread: any (pthread_once).
 */
#ifndef FERRY_UTIL_KCOPY_H
#define FERRY_UTIL_KCOPY_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/migration.h"

bool ferry__kcopy_first_slow(void);
/* x-user-copy's decision: mode is FERRY_USER_COPY_* (ferry/migration.h). */
static inline bool ferry__kcopy_use(uint32_t mode)
{
	return mode == FERRY_USER_COPY_ON ||
	       (mode == FERRY_USER_COPY_AUTO && ferry__kcopy_first_slow());
}
/* The probe's figures, nanoseconds per page (0 before the first call). */
void ferry__kcopy_figures(uint64_t *first_ns, uint64_t *warm_ns);

#endif
