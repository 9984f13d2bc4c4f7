/* SPDX-License-Identifier: MIT */
/*
 * Live devices (ferry/device.h) as a participant of both sides
 * (ferry__live_participant, participant.h): the state machine steps and
 * the carrier interface the save threads hand their buffers to.
 *
 * DESIGN: a carrier takes the buffers that the save threads (mig/src/dev_N)
 * read, each with its header (device number, index, flags, length: the
 * DEV_STATE record of docs/wire-format.md). Two carriers: the main
 * channel, a bounded FIFO that mig/src/main drains into DEV_STATE records;
 * with multifd, device-state packets in the channels' bounded job queues
 * (ferry__mf_send_buf), whose end markers mig/src/main sends on the main
 * channel after every channel's SYNC. The destination's receivers hand
 * the packets to the participant's load_buf (ferry__parts_load_buf).
 *
 * Thread: put runs on the save threads; the carrier serialises them.
 */
#ifndef FERRY_MIGRATION_LIVE_DEV_H
#define FERRY_MIGRATION_LIVE_DEV_H

#include "migration/participant.h"

typedef struct ferry_dev_carrier {
	/*
	 * Takes b (b->data malloc'd, or NULL for an end marker) and frees it
	 * once sent, also when it fails. Blocks while the carrier is full.
	 * Returns 0, or -ECANCELED once the migration is aborted.
	 * Thread: mig/src/dev_N.
	 */
	int (*put)(struct ferry_dev_carrier *cr, ferry_part_buf *b);
} ferry_dev_carrier;

/*
 * The next state on the way from `from` to `to` that the VFIO uAPI v2
 * allows as one arc, for a device without the P2P states (the kernel's
 * vfio_mig_get_next_state without P2P): RUNNING <-> STOP, STOP <->
 * STOP_COPY, STOP <-> RESUMING, RUNNING <-> PRE_COPY, PRE_COPY ->
 * STOP_COPY. `to` itself when from == to; FERRY_LIVE_ERROR when no path
 * exists (from or to ERROR or a P2P state). Thread: any.
 */
ferry_live_state ferry__live_next_state(ferry_live_state from, ferry_live_state to);

#endif
