/* SPDX-License-Identifier: MIT */
/*
 * Private declarations shared inside libferry: the VM, RAM block and device
 * structures, and the entry points of the migration code.
 *
 * Lock order (outer first): vm->mig_lock, then vm->run_lock. The migration
 * threads take run_lock only to stop/start vCPUs and to apply device state.
 *
 * Thread: every field of struct ferry_vm and struct ferry_ram_block says
 * what protects it. "Registration" means: written by the embedder's
 * control thread under vm->mig_lock while no migration runs (vm.c,
 * reg_lock), read without a lock by the migration threads, which only
 * exist when no registration can happen.
 */
#ifndef FERRY_INTERNAL_H
#define FERRY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

/* Not ferry.h: the core never sees a device (ferry/virtio.h is virtio/'s). */
#include "ferry/version.h"
#include "ferry/common.h"
#include "ferry/vm.h"
#include "ferry/vmstate.h"
#include "ferry/device.h"
#include "ferry/migration.h"
#include "ferry/hint.h"
#include "ferry/transport.h"
#include "dirty/dirty.h"
#include "util/bitmap.h"
#include "util/clock.h"
#include "util/log.h"

#define FERRY_MAX_RAM_BLOCKS 64
#define FERRY_NAME_MAX 255

struct ferry_ram_block {
	/* Immutable after ferry_ram_block_add(): any thread. */
	ferry_vm_t *vm;
	char name[FERRY_NAME_MAX + 1];
	uint8_t *host;
	uint64_t size;
	uint64_t npages;
	int fd;
	/*
	 * Explicit dirty log: bit per page, set by vCPU threads with release
	 * ordering, drained by the migration thread (ferry__dirty_harvest).
	 */
	_Atomic unsigned long *mark_log;
	/* Whether ferry_ram_mark_dirty() records anything (explicit mode). */
	atomic_bool marking;
	/*
	 * Owned by the migration thread while one runs (source: mig/src/main;
	 * in postcopy mig/src/rp clears bits too, under the postcopy lock).
	 */
	unsigned long *dirty;
	/*
	 * Destination: pages written by the incoming migration. Set with
	 * atomic bit operations by whichever destination thread places a page
	 * (main, receive, placing or postcopy threads; one writer per page at
	 * a time); zeroed and cleared by mig/dst/main while no other thread
	 * places pages.
	 */
	unsigned long *received;
	/*
	 * Destination: how precopy pages are written (FERRY_PLACE_UFFD,
	 * _PWRITE, _MAPPING or _COPY; see ferry__place_setup, place.c), and
	 * whether every page of the block is there already (a fully allocated
	 * file: writes take no fault, so no placing thread is worth a handoff).
	 * Set by mig/dst/main before any receive thread starts; read-only after.
	 */
	uint8_t place;
	bool place_filled;
};

struct ferry_device {
	char id[FERRY_NAME_MAX + 1];
	uint32_t instance;
	const ferry_vmsd *vmsd;
	void *opaque;
};

/* A live device (ferry/device.h); migration/live-dev.c drives it. */
struct ferry_live_device {
	char id[FERRY_NAME_MAX + 1];
	uint32_t instance;
	ferry_live_device_ops ops;
	const ferry_vmsd *config; /* NULL: none */
	void *opaque;
	/*
	 * The state libferry last moved it to (ferry_live_state): written by
	 * the one migration thread driving it at a time, read by
	 * ferry_live_device_state() from any thread.
	 */
	atomic_int state;
};

struct ferry_migration;

struct ferry_vm {
	/* Immutable after ferry_vm_create(): any thread. */
	uint8_t uuid[16];
	ferry_dirty_mode dirty_mode; /* resolved at create */
	/* Used by the running migration's threads only (dirty.h says which). */
	ferry_dirty_tracker dirty;

	/* Registration (see above). */
	struct ferry_ram_block *blocks[FERRY_MAX_RAM_BLOCKS];
	unsigned nblocks;
	struct ferry_device *devices;
	unsigned ndevices, devices_cap;
	struct ferry_live_device *live; /* FERRY_LIVE_DEVICES_MAX, allocated on first use */
	unsigned nlive;
	ferry_vcpu_ops vcpu_ops; /* called under run_lock (vm.c) */
	void *vcpu_opaque;
	pid_t vcpu_tids[FERRY_POSTCOPY_MAX_VCPUS]; /* ferry_vm_set_vcpu_threads */
	unsigned nvcpu_tids;

	pthread_mutex_t run_lock;
	/* Embedder calls waiting for run_lock (vm.c, ferry__vm_run_lock_polite). */
	atomic_uint run_waiters;
	bool running; /* protected by run_lock */
	/*
	 * Protected by run_lock: a migration owns the run state (source from
	 * switchover to its end; destination while loading), so
	 * ferry_vm_start() refuses with -EBUSY: vCPUs running then would write
	 * RAM that was already sent, or that is still arriving.
	 */
	bool run_owned;

	pthread_mutex_t mig_lock;
	pthread_cond_t mig_cond;     /* signalled on every status change */
	struct ferry_migration *mig; /* protected by mig_lock; NULL if none ever ran */
	ferry_event_cb event_cb;     /* protected by mig_lock (called with it held) */
	void *event_opaque;          /* protected by mig_lock */
	/* Destination parameters (postcopy, link timeout); protected by mig_lock. */
	ferry_migration_params in_params;
	/* Destination: ferry_migration_set_autostart(false) was the last call; protected by mig_lock. */
	bool no_autostart;
	/*
	 * Destination: the userfaultfd that blocks placed with UFFDIO_COPY are
	 * registered with (MISSING) during an incoming precopy, or -1. Owned by
	 * mig/dst/main: opened before the receive threads start, closed after
	 * they were joined.
	 */
	int place_uffd;
	bool place_registered; /* mig/dst/main only */
	/*
	 * Free page hint provider for outgoing migrations
	 * (ferry_vm_set_hint_ops; hint_ops.start NULL: none). Registration;
	 * mig/src/main calls the ops (migration/hints.c).
	 */
	ferry_hint_ops hint_ops;
	void *hint_opaque;
};

/*
 * Frees a finished migration object (vm.c / migration code). Thread: the
 * one that took it out of vm->mig, after its threads were joined.
 */
void ferry__migration_free(struct ferry_migration *m);
/* True while a migration thread runs. Caller holds vm->mig_lock. */
bool ferry__migration_busy(const ferry_vm_t *vm);

/* Cancels the VM's migration whatever its state, postcopy too (destroy). Thread: control. */
void ferry__migration_abort(ferry_vm_t *vm);

/* Whether a destination starts the vCPUs it may start (migration.c). Takes mig_lock; any thread. */
bool ferry__vm_autostart(ferry_vm_t *vm);
/* Sets or clears vm->run_owned (vm.c). Thread: mig/src/main, mig/dst/main. */
void ferry__vm_own_run(ferry_vm_t *vm, bool owned);
/*
 * Takes run_lock for one apply of device state on the destination, after
 * letting the embedder calls that wait for it go first (at most
 * RUN_POLITE_NS): a mutex is not fair, so a thread that unlocks after one
 * device and locks again for the next would otherwise keep the embedder
 * out across every apply. Thread: mig/dst/main.
 */
void ferry__vm_run_lock_polite(ferry_vm_t *vm);

/* vmstate.c: validates a vmsd table at registration (0 or -EINVAL). Thread: any. */
int ferry__vmsd_validate(const ferry_vmsd *vmsd);

#endif /* FERRY_INTERNAL_H */
