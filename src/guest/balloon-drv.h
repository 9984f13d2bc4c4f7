/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest's virtio-balloon driver, free page hints only: it
 * answers each command id the device publishes with the id, buffers
 * covering the guest's free pages (the churn workload's free lists), then
 * VIRTIO_BALLOON_CMD_ID_STOP, on a split ring in the guest's virtio area
 * (cfg.virtio), as Linux's virtio_balloon driver does.
 *
 * Ownership: ferry_guest_balloon_create() succeeded => the caller calls
 * ferry_guest_balloon_destroy(), after ferry_guest_destroy() if the driver
 * runs in the background (the guest's activity thread uses it). The
 * balloon device must outlive the driver.
 *
 * Thread: service rounds are serialised by the driver's lock; the
 * background round runs on the guest's activity thread while the guest
 * runs. Public API only.
 */
#ifndef FERRY_GUEST_BALLOON_DRV_H
#define FERRY_GUEST_BALLOON_DRV_H

#include "guest.h"

typedef struct ferry_guest_balloon ferry_guest_balloon_t;

typedef struct ferry_guest_balloon_opts {
	/* Called after buffers were posted (the guest's kick); NULL: none. */
	void (*kick)(void *opaque);
	void *opaque;
	/* Service the device from a guest activity while the guest runs. */
	bool background;
	/* Give up a report when the ring stays full this long; 0 = 1000 ms. */
	unsigned wait_ms;
	/*
	 * Lay out (or re-attach to) the rings in the first round instead of
	 * now: for an incoming guest, whose rings and driver state arrive with
	 * its RAM and whose device state (queue enabled or not) is not loaded
	 * yet. The first round runs once the guest runs on the destination.
	 */
	bool deferred;
} ferry_guest_balloon_opts;

typedef struct ferry_guest_balloon_stats {
	uint64_t reports;           /* command ids answered through to STOP */
	uint64_t reports_abandoned; /* cut short: new id, host STOP, guest stop, ring full */
	uint64_t buffers;           /* free page buffers posted */
	uint64_t pages;             /* pages in them */
	uint32_t last_id;           /* last command id seen */
} ferry_guest_balloon_stats;

/*
 * Attaches a driver to balloon device `dev` (created over the guest's
 * ferry_guest_gpa_regions()). If the device's free page queue is already
 * enabled (its state was migrated), the driver re-attaches to its rings in
 * guest RAM; otherwise it lays them out afresh and enables the queue.
 * With opts->deferred that choice is made in the first round instead.
 * Needs cfg.virtio and an attached guest, stopped. Returns 0, -EINVAL
 * (no virtio area, not attached, no valid rings to re-attach to), -EBUSY,
 * -ENOMEM or an error from the device.
 */
int ferry_guest_balloon_create(ferry_guest_t *g, ferry_balloon_t *dev,
			       const ferry_guest_balloon_opts *opts, ferry_guest_balloon_t **out);
void ferry_guest_balloon_destroy(ferry_guest_balloon_t *d);

/*
 * One round: reaps used buffers and, if the device published a command id
 * not answered yet, reports. Returns the pages reported (0 if nothing was
 * asked), -ECANCELED (the id changed or the guest is stopping: the report
 * was cut short), -ETIMEDOUT (the ring stayed full: nobody polls the
 * device) or a negative errno.
 */
int64_t ferry_guest_balloon_service(ferry_guest_balloon_t *d);

void ferry_guest_balloon_get_stats(ferry_guest_balloon_t *d, ferry_guest_balloon_stats *st);

#endif /* FERRY_GUEST_BALLOON_DRV_H */
