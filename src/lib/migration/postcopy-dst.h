/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination, as the driver (dest.c) sees it: the
 * commands that its record loader dispatches here, and the phases it calls
 * in order. Everything postcopy of the destination is in postcopy-dst.c;
 * the page state it keeps (ferry_pc_dst) is declared in postcopy.h.
 *
 * Phases, after the precopy stream (ferry__dst_* in dest.h) returned:
 *   ferry__postcopy_package   device state from PACKAGE, with mig/dst/listen
 *                             already reading the background pages
 *   (the driver starts the vCPUs)
 *   ferry__postcopy_incoming  the guest runs; pages fault in until all are
 *                             placed, pausing and recovering on a broken link
 *   ferry__postcopy_fail      on failure: stops postcopy and the guest
 *
 * Thread: every function here is called on mig/dst/main, except the
 * commands, which run on whichever thread reads the record (mig/dst/main,
 * or mig/dst/listen after RUN). Each returns 0 or a negative errno.
 */
#ifndef FERRY_MIGRATION_POSTCOPY_DST_H
#define FERRY_MIGRATION_POSTCOPY_DST_H

#include "migration/dest.h"
#include "migration/postcopy.h"

/* Commands: payload not read yet, except run's (run state). */
int ferry__postcopy_advise(ferry_dst *d, uint32_t flags);
int ferry__postcopy_discard(ferry_dst *d, uint16_t len);
int ferry__postcopy_listen(ferry_dst *d);
int ferry__postcopy_package_read(ferry_dst *d, uint32_t len);
int ferry__postcopy_run(ferry_dst *d, uint8_t run);

/* Phases. Each is a no-op when its part of postcopy did not happen. */
int ferry__postcopy_package(ferry_dst *d);
int ferry__postcopy_incoming(ferry_dst *d);
void ferry__postcopy_fail(ferry_dst *d);

#endif
