/* SPDX-License-Identifier: MIT */
/*
 * The embedder's side of libferry: a VM handle, its RAM blocks and its vCPU
 * run/stop callbacks.
 *
 * A VMM (or Ferry's own synthetic guest) creates one ferry_vm_t per guest,
 * registers every RAM block that must migrate, registers its devices
 * (ferry/vmstate.h) and the callbacks that stop and start its vCPUs. libferry
 * never knows what the guest is; it only moves registered RAM and device
 * state.
 *
 * Ownership rules:
 *  1. If ferry_vm_create() succeeds, the caller must call ferry_vm_destroy();
 *     if it fails, there is nothing to free.
 *  2. RAM stays owned by the embedder: libferry reads and writes it but never
 *     maps or unmaps it. It must stay mapped until ferry_vm_destroy().
 *  3. Registration (RAM blocks, devices, vCPU ops) happens before any
 *     migration starts; it returns -EBUSY while one runs.
 *
 * Threads: unless a function says otherwise, call it from one thread at a
 * time (the embedder's control thread). libferry runs its own migration
 * threads and calls the vCPU ops from them.
 */
#ifndef FERRY_VM_H
#define FERRY_VM_H

#include <sys/types.h>

#include "ferry/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ferry_vm ferry_vm_t;
typedef struct ferry_ram_block ferry_ram_block_t;

/* Target page size: the granule of dirty tracking and of the RAM stream. */
#define FERRY_PAGE_SIZE 4096u
#define FERRY_PAGE_SHIFT 12

/* How guest writes are found. */
typedef enum ferry_dirty_mode {
	/* userfaultfd WP-async where the kernel has it, else explicit. */
	FERRY_DIRTY_AUTO = 0,
	/* userfaultfd write-protect (async) harvested with PAGEMAP_SCAN. */
	FERRY_DIRTY_WP_ASYNC = 1,
	/* The embedder calls ferry_ram_mark_dirty() after each guest write. */
	FERRY_DIRTY_EXPLICIT = 2,
} ferry_dirty_mode;

typedef struct ferry_vm_options {
	uint32_t flags; /* none defined yet; must be 0 */
	/* Identity carried in the stream header; all zero means "generate". */
	uint8_t uuid[16];
	ferry_dirty_mode dirty_mode;
	/* More fields may be added at any time. */
} ferry_vm_options;

/*
 * Stops and starts the guest's vCPUs. Called from migration threads.
 *  stop:  returns once every vCPU has stopped and its writes to RAM are
 *         visible to the caller (a step boundary for the synthetic guest).
 *  start: resumes the vCPUs.
 *  set_throttle: optional (NULL allowed); percentage 0..99 of time the vCPUs
 *         should sleep, used by auto-converge.
 * Each returns 0 or a negative errno.
 */
typedef struct ferry_vcpu_ops {
	int (*stop)(void *opaque);
	int (*start)(void *opaque);
	int (*set_throttle)(void *opaque, int percent);
} ferry_vcpu_ops;

/* Thread: any. Returns 0 or -EINVAL / -ENOMEM. */
FERRY_EXTERN int ferry_vm_create(const ferry_vm_options *opts, ferry_vm_t **out);

/* Cancels any migration, waits for its threads, frees. NULL is a no-op. */
FERRY_EXTERN void ferry_vm_destroy(ferry_vm_t *vm);

FERRY_EXTERN int ferry_vm_set_vcpu_ops(ferry_vm_t *vm, const ferry_vcpu_ops *ops,
				       void *opaque);

/*
 * Optional: the vCPU threads' ids (gettid()), tids[i] for vCPU i, so that
 * an incoming postcopy migration can tell which vCPU waits on a missing
 * page (ferry_migration_info's postcopy_vcpu_* statistics, QEMU's
 * postcopy-blocktime); without them every fault counts as a non-vCPU
 * one. Copied. Registration: not during a migration (-EBUSY); -EINVAL if
 * n > FERRY_POSTCOPY_MAX_VCPUS.
 */
FERRY_EXTERN int ferry_vm_set_vcpu_threads(ferry_vm_t *vm, const pid_t *tids, unsigned n);

/*
 * Run state as libferry sees it (it changes it only through the vCPU ops).
 * ferry_vm_stop()/ferry_vm_start() call the ops and record the state.
 * Thread: any; serialised internally by the VM's run lock, which these
 * three take, and under which the vCPU ops run (so never call them from
 * a vCPU op). libferry's own threads hold the run lock only briefly:
 *  - source: to stop the vCPUs at switchover (and to restart them after a
 *    failed or cancelled one);
 *  - destination: to apply one device's state at a time (a vmsd device's,
 *    or a live device's config: its post_load runs under it) and to start
 *    the vCPUs; never while RAM or live device data loads (ferry/device.h,
 *    "The loader never blocks the VMM"). A call that waits for the lock
 *    goes before the next device's apply, so it waits at most one apply.
 */
FERRY_EXTERN int ferry_vm_stop(ferry_vm_t *vm);
FERRY_EXTERN int ferry_vm_start(ferry_vm_t *vm);
FERRY_EXTERN bool ferry_vm_is_running(const ferry_vm_t *vm);

/* The VM's uuid (16 bytes). */
FERRY_EXTERN const uint8_t *ferry_vm_uuid(const ferry_vm_t *vm);

/* The dirty-tracking mode actually in use (AUTO resolved). */
FERRY_EXTERN ferry_dirty_mode ferry_vm_dirty_mode(const ferry_vm_t *vm);

/*
 * Registers guest RAM. host must be page aligned, size a multiple of
 * FERRY_PAGE_SIZE; name unique, 1..255 bytes. fd is the backing file (memfd),
 * mapped at host from offset 0 and at least size bytes long, or -1; libferry
 * uses it to find never-populated pages faster and, on the destination, to
 * place pages. On the destination, RAM must be zero-filled at registration
 * (fresh memory). Returns 0 (and *out if out != NULL), -EINVAL (also: a
 * regular file shorter than size), -EBADF (fd is not open), -EEXIST, -EBUSY,
 * -ENOSPC, -ENOMEM.
 */
FERRY_EXTERN int ferry_ram_block_add(ferry_vm_t *vm, const char *name, void *host,
				     uint64_t size, int fd, ferry_ram_block_t **out);

FERRY_EXTERN ferry_ram_block_t *ferry_ram_block_find(ferry_vm_t *vm, const char *name);
FERRY_EXTERN const char *ferry_ram_block_name(const ferry_ram_block_t *rb);
FERRY_EXTERN void *ferry_ram_block_host(const ferry_ram_block_t *rb);
FERRY_EXTERN uint64_t ferry_ram_block_size(const ferry_ram_block_t *rb);

/*
 * Explicit dirty logging (FERRY_DIRTY_EXPLICIT): the embedder calls this
 * after it wrote guest RAM [offset, offset + len). The data written must be
 * complete before the call (the call publishes it with release semantics).
 * Cheap and lock-free; a no-op in other modes.
 * Thread: any (vCPU threads).
 */
FERRY_EXTERN void ferry_ram_mark_dirty(ferry_ram_block_t *rb, uint64_t offset,
				       uint64_t len);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_VM_H */
