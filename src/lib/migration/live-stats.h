/* SPDX-License-Identifier: MIT */
/*
 * What an operator sees of live devices (ferry_migration_info's live_*,
 * device_* and downtime split figures, ferry_live_device_stats_get()):
 * the hooks the live-devices participant and the drivers call, kept out
 * of live-dev.c so that its carriers stay about moving data.
 *
 * Thread: each hook takes m->stats_lock only to add or copy figures (a
 * leaf: never call one with it held); the sw_* marks are the main
 * thread's own (mig.h).
 */
#ifndef FERRY_MIGRATION_LIVE_STATS_H
#define FERRY_MIGRATION_LIVE_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct ferry_migration;

enum ferry_live_stat_time { FERRY_LIVE_SAVE, FERRY_LIVE_LOAD, FERRY_LIVE_APPLY };

/* Setup (either side): n live devices take part; clears their figures. */
void ferry__live_stat_setup(struct ferry_migration *m, unsigned n);
/*
 * Device dev moved one buffer of len bytes (save or load thread; the
 * source's mig/src/main in precopy), read in PRE_COPY or in STOP_COPY.
 */
void ferry__live_stat_buf(struct ferry_migration *m, unsigned dev, uint64_t len, bool precopy);
/* Device dev finished its save, load or apply, begun at t0_ns. */
void ferry__live_stat_time(struct ferry_migration *m, unsigned dev, enum ferry_live_stat_time w,
			   uint64_t t0_ns);
/* Destination: device dev's last write returned (load begun at t0_ns); early buffers had come ahead of a missing one. */
void ferry__live_stat_loaded(struct ferry_migration *m, unsigned dev, uint64_t t0_ns, uint64_t early);
/* Source, precopy completed: the downtime split, the destination running at run_ns. */
void ferry__live_stat_split(struct ferry_migration *m, uint64_t run_ns);
/* Destination: the last config applied now (downtime_device_ms). */
void ferry__live_stat_applied(struct ferry_migration *m);

#endif
