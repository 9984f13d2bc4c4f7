/* SPDX-License-Identifier: MIT */
/*
 * Live devices: devices whose state is read from the device itself while
 * the guest is stopped (a VFIO-passed-through GPU, NIC or NVMe controller),
 * too large or too slow for a ferry_vmsd.
 *
 * The interface follows the VFIO migration uAPI v2 (<linux/vfio.h>), so a
 * VMM with a real VFIO device maps its calls one to one:
 *   set_state       VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE (SET)
 *   read / write    read(2) / write(2) on the data fd that SET returned
 *   precopy_info    VFIO_MIG_GET_PRECOPY_INFO
 *   stop_copy_size  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
 * and the values of ferry_live_state are those of enum
 * vfio_device_mig_state (libferry checks this at build time).
 *
 * State arcs. libferry requests only the arcs the uAPI allows, stepping
 * through the intermediate states itself (set_state is always asked for
 * one arc): RUNNING -> STOP -> STOP_COPY -> STOP on the source, or RUNNING
 * -> PRE_COPY (at the migration's start) -> STOP_COPY (after the vCPUs
 * stop) -> STOP for a PRE_COPY device; STOP -> RESUMING -> STOP on the
 * destination; and back to RUNNING (STOP_COPY -> STOP -> RUNNING, or
 * PRE_COPY -> RUNNING) when a migration fails or is cancelled on the
 * source (the guest keeps running). A registered device is taken to be RUNNING. When
 * set_state fails, libferry considers the device to be in ERROR, fails the
 * migration with a message naming the device, and asks for nothing more
 * of it in that migration. The P2P states are not used.
 *
 * Source, PRE_COPY devices (FERRY_LIVE_PRE_COPY_FLAG): right after the
 * migration's setup the device goes to PRE_COPY, and in each precopy pass,
 * with the guest running, libferry's migration thread (mig/src/main) calls
 * read() for up to 100 ms per pass, the devices in turn: as VFIO's
 * PRE_COPY, read yields the initial data, then data the guest dirtied
 * since, and returns 0 when there is nothing more for now (libferry asks
 * again in the next pass). precopy_info is asked after each read and at
 * every pass: its initial_bytes + dirty_bytes count as precopy bytes in
 * the convergence estimate, and when initial_bytes reaches 0 the
 * destination is told (switchover-ack waits for that, ferry/migration.h).
 * Source, all devices: after the vCPUs stop, each device goes to STOP_COPY
 * (from PRE_COPY directly) and one thread of libferry's per device
 * (mig/src/dev_N) calls read() until it returns 0 (end of the device's
 * data); the buffers travel in the migration stream, indexed per device
 * with one index across PRE_COPY and STOP_COPY. Then the optional config
 * vmsd is saved, and the device goes to STOP (the destination runs the
 * guest now). stop_copy_size is asked at every pass, so that the
 * convergence estimate counts the device's data (for a PRE_COPY device,
 * what it exceeds initial_bytes + dirty_bytes by).
 * Destination: on the first data of a device (precopy data, or the
 * switchover), one thread of libferry's (mig/dst/devl_N: "devload"
 * would not fit a thread name's 15 bytes) moves it to RESUMING and calls write() with each
 * buffer, strictly in the source's order, each buffer exactly as read()
 * produced it; at the end of the stream, every device goes to STOP and
 * its config vmsd is applied. It goes to RUNNING once the migration
 * completed with the destination's vCPUs running.
 *
 * Postcopy: a device's state cannot be fetched on demand, so it is
 * complete on the destination before the guest runs there. At the
 * postcopy switch (vCPUs stopped) every device is read and written as
 * above, before the destination may run the guest; its config is applied
 * and it goes to STOP before the vCPUs start there, then to RUNNING when
 * the migration completes. The downtime (query-migrate's downtime and
 * x-downtime-split) includes the devices' data. A failure before that
 * point (a read or write error, a broken link) fails the migration as in
 * precopy: the source guest runs on, its devices RUNNING again. After it,
 * a broken link pauses postcopy as usual; no device is involved in the
 * recovery, and if postcopy fails for good the source's devices stay in
 * STOP with its guest (the destination may have run the guest).
 *
 * Thread contract:
 *   - read is called only from libferry's threads, never the caller's:
 *     mig/src/main in PRE_COPY (while the guest's vCPUs run: the device
 *     must cope with the guest changing its state meanwhile, as a real one
 *     does), mig/src/dev_N in STOP_COPY; write only from
 *     mig/dst/devl_N. No libferry lock is held during
 *     either, so a slow device never blocks the embedder's control thread.
 *     A read should return within a short chunk time (e.g. 10 ms of data):
 *     a cancel is seen between two reads.
 *   - set_state, precopy_info and stop_copy_size are called from
 *     libferry's migration threads (mig/src/main, mig/src/dev_N,
 *     mig/dst/main, mig/dst/devl_N), never two at once for one device,
 *     with no libferry lock held.
 *   - The config vmsd is saved on mig/src/main with the vCPUs stopped,
 *     and applied on mig/dst/main under the VM's run lock (the lock of
 *     ferry_vm_stop/start), one device at a time, in registration order,
 *     after every device's data was written and before the vCPUs start.
 *
 * The loader never blocks the VMM. On the destination, RAM and live device
 * data load without any lock the embedder's calls need: mig/dst/main
 * receives, mig/dst/devl_N call write() with no libferry lock held.
 * The run lock (ferry/vm.h) is taken by libferry only to apply one
 * device's state (a vmsd device's, or one live device's config, its
 * post_load included), released between two devices, and to start the
 * vCPUs; an embedder call waiting for it goes before the next device's
 * apply. So ferry_vm_stop(), ferry_vm_start() and ferry_vm_is_running()
 * wait for at most one apply (plus the vCPU start op), and a config whose
 * post_load is slow delays them by that much only (test-devices:
 * t_loader_never_blocks). Corollary: a device op or post_load must never
 * call those functions (they would deadlock), nor wait for a thread that
 * does.
 */
#ifndef FERRY_DEVICE_H
#define FERRY_DEVICE_H

#include <sys/types.h>

#include "ferry/vmstate.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Values of enum vfio_device_mig_state (linux/vfio.h). */
typedef enum ferry_live_state {
	FERRY_LIVE_ERROR = 0,
	FERRY_LIVE_STOP = 1,
	FERRY_LIVE_RUNNING = 2,
	FERRY_LIVE_STOP_COPY = 3,
	FERRY_LIVE_RESUMING = 4,
	FERRY_LIVE_RUNNING_P2P = 5, /* declared for the mapping; never used */
	FERRY_LIVE_PRE_COPY = 6,
	FERRY_LIVE_PRE_COPY_P2P = 7, /* declared for the mapping; never used */
} ferry_live_state;

/*
 * The device supports PRE_COPY (initial data while the guest runs; see
 * above). Requires precopy_info. Both sides must register the device
 * with the same flag (else the destination refuses it: "PRE_COPY in the
 * stream, not here").
 */
#define FERRY_LIVE_PRE_COPY_FLAG 0x1u

typedef struct ferry_live_device_ops {
	uint32_t flags; /* FERRY_LIVE_*_FLAG; unknown bits are refused */
	/* One arc of the uAPI (see above). 0 or a negative errno. Required. */
	int (*set_state)(void *opaque, ferry_live_state to);
	/*
	 * In STOP_COPY (and PRE_COPY): up to len bytes of the device's data
	 * into buf. Returns the bytes (> 0), 0 at the end of the data (in
	 * PRE_COPY: nothing more for now), or a negative errno. Required.
	 */
	ssize_t (*read)(void *opaque, void *buf, size_t len);
	/*
	 * In RESUMING: one buffer as read() produced it on the source. Returns
	 * len, or a negative errno (fails the migration). Treat buf as hostile.
	 * Required.
	 */
	ssize_t (*write)(void *opaque, const void *buf, size_t len);
	/*
	 * PRE_COPY devices, in PRE_COPY: bytes of initial data left, and
	 * dirtied since it was read (VFIO_MIG_GET_PRECOPY_INFO). 0 or a
	 * negative errno (fails the migration).
	 */
	int (*precopy_info)(void *opaque, uint64_t *initial_bytes, uint64_t *dirty_bytes);
	/* Estimate of the bytes read() will yield in STOP_COPY. Optional. */
	int (*stop_copy_size)(void *opaque, uint64_t *bytes);
	/* More fields may be added at any time. */
} ferry_live_device_ops;

/*
 * Registers a live device: (id, instance) names it in the stream and must
 * be registered on both sides, with the same config vmsd (config: a small
 * final state saved after the data, may be NULL). ops is copied; opaque is
 * passed to every op and is the struct config's field offsets apply to.
 * Live devices and ferry_device_register()'s vmsd devices can be
 * registered on one VM (ids are separate name spaces).
 * Returns 0, -EINVAL (NULL vm, id not 1..255 bytes, a required op missing,
 * unknown flags, PRE_COPY without precopy_info, a bad config table),
 * -EEXIST (id and instance registered as a live device already), -EBUSY (a
 * migration runs), -ENOSPC (more than FERRY_LIVE_DEVICES_MAX), -ENOMEM.
 * Thread: the embedder's control thread, like every registration.
 */
#define FERRY_LIVE_DEVICES_MAX 64
FERRY_EXTERN int ferry_live_device_register(ferry_vm_t *vm, const char *id, uint32_t instance,
					    const ferry_live_device_ops *ops,
					    const ferry_vmsd *config, void *opaque);

/*
 * The state libferry last moved a live device to (or FERRY_LIVE_RUNNING
 * if it never did), -ENOENT if no such device is registered.
 * Thread: any, but not concurrently with a registration on the same VM;
 * the answer may be stale while a migration runs.
 */
FERRY_EXTERN int ferry_live_device_state(ferry_vm_t *vm, const char *id, uint32_t instance);

/*
 * One live device's figures for the VM's current (or last) migration.
 * Source: bytes and buffers read() returned (PRE_COPY and STOP_COPY); save_ms from the device's
 * save thread start (right after STOP_COPY) until its end marker was handed
 * on. Destination: bytes and buffers write() took; load_ms from its load
 * thread start (the first buffer arrived) until its last write returned.
 * apply_ms: destination, the time its config vmsd took to apply (under the
 * run lock). A figure still running reads 0 until the device is done.
 */
typedef struct ferry_live_device_stats {
	const char *id;          /* the registered id; valid until ferry_vm_destroy() */
	uint32_t instance;
	ferry_live_state state;  /* as ferry_live_device_state() */
	uint64_t bytes;
	uint64_t buffers;
	uint64_t save_ms;
	uint64_t load_ms;
	uint64_t apply_ms;
	/*
	 * Destination: buffers that arrived before one of a lower index (the
	 * multifd channels reorder them; the load thread put them back in order).
	 */
	uint64_t reordered;
	/* More fields may be added at any time. */
} ferry_live_device_stats;

/*
 * The figures of the index-th live device in registration order (0-based),
 * zeros but for id, instance and state before any migration. Returns 0,
 * -EINVAL (NULL vm or out), -ENOENT (index >= the number registered).
 * Thread: any, like ferry_migration_query() (takes vm's migration lock and
 * the migration's statistics lock, only to copy).
 */
FERRY_EXTERN int ferry_live_device_stats_get(ferry_vm_t *vm, unsigned index,
					     ferry_live_device_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_DEVICE_H */
