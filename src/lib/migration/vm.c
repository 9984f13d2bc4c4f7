/* SPDX-License-Identifier: MIT */
/*
 * The VM handle: what an embedder registers (RAM blocks, devices, vCPU ops)
 * and the run state libferry changes through the vCPU ops.
 *
 * DESIGN: registration happens before migrations and is refused (-EBUSY)
 * while one runs, so migration threads read the block and device tables
 * without locks. The run state is serialised by run_lock so that the
 * migration thread's stop at switchover and a control thread's stop/cont
 * never interleave.
 *
 * Thread: each function below says who may call it. Registration
 * (ferry_vm_set_vcpu_ops, ferry_vm_set_hint_ops, ferry_ram_block_add,
 * ferry_device_register, ferry_live_device_register) runs on the
 * embedder's control thread, one call
 * at a time and not concurrently with ferry_migration_start() /
 * ferry_migration_incoming() on the same VM (ferry/vm.h: one thread at a
 * time). It checks for a running migration and writes the tables under
 * vm->mig_lock (reg_lock), the lock mig_launch (migration.c) holds while
 * it installs a migration and starts its thread: a migration thread thus
 * either sees the whole registration or makes it fail with -EBUSY. Lock
 * order: vm->mig_lock, then vm->run_lock (internal.h).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void gen_uuid(uint8_t uuid[16])
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, uuid, 16) : -1;
	if (fd >= 0)
		close(fd);
	if (n != 16) {
		uint64_t t = ferry__now_ns() ^ (uint64_t)getpid();
		memcpy(uuid, &t, 8);
		t = t * 0x9e3779b97f4a7c15ull;
		memcpy(uuid + 8, &t, 8);
	}
	uuid[6] = (uuid[6] & 0x0f) | 0x40; /* version 4 */
	uuid[8] = (uuid[8] & 0x3f) | 0x80; /* RFC 4122 variant */
}

/* Thread: any. */
int ferry_vm_create(const ferry_vm_options *opts, ferry_vm_t **out)
{
	ferry_vm_options def = { 0 };
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!opts)
		opts = &def;
	if (opts->flags || opts->dirty_mode > FERRY_DIRTY_EXPLICIT)
		return -EINVAL;
	ferry_vm_t *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	int r = ferry__dirty_tracker_init(&vm->dirty, opts->dirty_mode);
	if (r < 0) {
		free(vm);
		return r;
	}
	vm->dirty_mode = vm->dirty.mode;
	static const uint8_t zero[16];
	if (memcmp(opts->uuid, zero, 16))
		memcpy(vm->uuid, opts->uuid, 16);
	else
		gen_uuid(vm->uuid);
	pthread_mutex_init(&vm->run_lock, NULL);
	pthread_mutex_init(&vm->mig_lock, NULL);
	ferry__cond_init_monotonic(&vm->mig_cond);
	ferry_migration_params_init(&vm->in_params);
	vm->place_uffd = -1;
	*out = vm;
	return 0;
}

/*
 * Thread: the embedder's control thread; never a libferry callback (vCPU
 * ops, the event callback): it joins the migration threads that run them.
 */
void ferry_vm_destroy(ferry_vm_t *vm)
{
	if (!vm)
		return;
	ferry__migration_abort(vm);
	ferry_migration_wait(vm, -1);
	pthread_mutex_lock(&vm->mig_lock);
	struct ferry_migration *m = vm->mig;
	vm->mig = NULL;
	pthread_mutex_unlock(&vm->mig_lock);
	ferry__migration_free(m);
	ferry_tls_creds_unref(vm->in_params.tls_creds); /* ferry_migration_set_incoming_params's */
	ferry_tls_authz_unref(vm->in_params.tls_authz);
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		free((void *)rb->mark_log);
		free(rb->dirty);
		free(rb->received);
		free(rb);
	}
	free(vm->devices);
	free(vm->live);
	ferry__dirty_tracker_fini(&vm->dirty);
	pthread_mutex_destroy(&vm->run_lock);
	pthread_mutex_destroy(&vm->mig_lock);
	pthread_cond_destroy(&vm->mig_cond);
	free(vm);
}

/*
 * Registration: takes vm->mig_lock and returns 0 with it held, or -EBUSY
 * (not held) while a migration runs. Caller must not hold mig_lock; it
 * writes the registration tables, then unlocks.
 */
static int reg_lock(ferry_vm_t *vm)
{
	pthread_mutex_lock(&vm->mig_lock);
	if (!ferry__migration_busy(vm))
		return 0;
	pthread_mutex_unlock(&vm->mig_lock);
	return -EBUSY;
}

/* Thread: the embedder's control thread (registration). */
int ferry_vm_set_vcpu_ops(ferry_vm_t *vm, const ferry_vcpu_ops *ops, void *opaque)
{
	if (!vm || !ops || !ops->stop || !ops->start)
		return -EINVAL;
	if (reg_lock(vm))
		return -EBUSY;
	vm->vcpu_ops = *ops;
	vm->vcpu_opaque = opaque;
	pthread_mutex_unlock(&vm->mig_lock);
	return 0;
}

/* Thread: the embedder's control thread (registration). */
int ferry_vm_set_vcpu_threads(ferry_vm_t *vm, const pid_t *tids, unsigned n)
{
	if (!vm || (n && !tids) || n > FERRY_POSTCOPY_MAX_VCPUS)
		return -EINVAL;
	if (reg_lock(vm))
		return -EBUSY;
	memcpy(vm->vcpu_tids, tids, n * sizeof(tids[0]));
	vm->nvcpu_tids = n;
	pthread_mutex_unlock(&vm->mig_lock);
	return 0;
}

/* Thread: the embedder's control thread (registration). */
int ferry_vm_set_hint_ops(ferry_vm_t *vm, const ferry_hint_ops *ops, void *opaque)
{
	static const ferry_hint_ops none;
	if (!vm || (ops && (!ops->start || !ops->poll || !ops->complete || !ops->stop)))
		return -EINVAL;
	if (reg_lock(vm))
		return -EBUSY;
	vm->hint_ops = ops ? *ops : none;
	vm->hint_opaque = ops ? opaque : NULL;
	pthread_mutex_unlock(&vm->mig_lock);
	return 0;
}

/*
 * The embedder's way into run_lock (ferry_vm_stop/start/is_running): a
 * caller that finds it taken counts itself in run_waiters while it waits,
 * so that the destination's next device apply lets it in first
 * (ferry__vm_run_lock_polite). This is what keeps the promise of
 * ferry/vm.h: such a call waits for at most one apply.
 */
static void run_lock_embedder(ferry_vm_t *vm)
{
	if (!pthread_mutex_trylock(&vm->run_lock))
		return;
	atomic_fetch_add(&vm->run_waiters, 1);
	pthread_mutex_lock(&vm->run_lock);
	atomic_fetch_sub(&vm->run_waiters, 1);
}

/* How long an apply lets waiting embedder calls go first, at most. */
#define RUN_POLITE_NS 5000000ull

void ferry__vm_run_lock_polite(ferry_vm_t *vm)
{
	uint64_t t0 = ferry__now_ns();
	while (atomic_load(&vm->run_waiters) && ferry__now_ns() - t0 < RUN_POLITE_NS)
		sched_yield(); /* a woken waiter needs a CPU to take the lock and count itself out */
	pthread_mutex_lock(&vm->run_lock);
}

/*
 * Thread: any (control threads, and the migration threads at switchover
 * or on failure); takes run_lock and calls the vCPU ops under it, so never
 * from inside a vCPU op.
 */
int ferry_vm_stop(ferry_vm_t *vm)
{
	int r = 0;
	run_lock_embedder(vm);
	if (vm->running) {
		r = vm->vcpu_ops.stop ? vm->vcpu_ops.stop(vm->vcpu_opaque) : 0;
		if (r == 0)
			vm->running = false;
	}
	pthread_mutex_unlock(&vm->run_lock);
	return r;
}

/* Thread: mig/src/main, mig/dst/main. Caller does not hold run_lock. */
void ferry__vm_own_run(ferry_vm_t *vm, bool owned)
{
	pthread_mutex_lock(&vm->run_lock);
	vm->run_owned = owned;
	pthread_mutex_unlock(&vm->run_lock);
}

/* Thread: any, as ferry_vm_stop(); -EBUSY while a migration owns the run state. */
int ferry_vm_start(ferry_vm_t *vm)
{
	int r = 0;
	run_lock_embedder(vm);
	if (vm->run_owned) {
		pthread_mutex_unlock(&vm->run_lock);
		return -EBUSY;
	}
	if (!vm->running) {
		r = vm->vcpu_ops.start ? vm->vcpu_ops.start(vm->vcpu_opaque) : 0;
		if (r == 0)
			vm->running = true;
	}
	pthread_mutex_unlock(&vm->run_lock);
	return r;
}

/* Thread: any (takes run_lock). */
bool ferry_vm_is_running(const ferry_vm_t *vm)
{
	ferry_vm_t *v = (ferry_vm_t *)vm;
	run_lock_embedder(v);
	bool r = v->running;
	pthread_mutex_unlock(&v->run_lock);
	return r;
}

/* Thread: any (immutable after create). */
const uint8_t *ferry_vm_uuid(const ferry_vm_t *vm)
{
	return vm->uuid;
}

/* Thread: any (immutable after create). */
ferry_dirty_mode ferry_vm_dirty_mode(const ferry_vm_t *vm)
{
	return vm->dirty_mode;
}

static bool name_ok(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	return n >= 1 && n <= FERRY_NAME_MAX;
}

/* ferry_ram_block_add with valid arguments. Caller holds reg_lock. */
static int block_add(ferry_vm_t *vm, const char *name, void *host, uint64_t size, int fd,
		     ferry_ram_block_t **out)
{
	if (ferry_ram_block_find(vm, name))
		return -EEXIST;
	if (vm->nblocks == FERRY_MAX_RAM_BLOCKS)
		return -ENOSPC;
	if (fd >= 0) {
		/*
		 * The destination writes pages through the file (pwrite,
		 * fallocate) and the mapping: past the file's end the mapping
		 * faults (SIGBUS, or "Bad address" from a recv() into it).
		 */
		struct stat st;
		if (fstat(fd, &st))
			return -EBADF;
		if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < size)
			return -EINVAL;
	}
	struct ferry_ram_block *rb = calloc(1, sizeof(*rb));
	if (!rb)
		return -ENOMEM;
	rb->vm = vm;
	strcpy(rb->name, name);
	rb->host = host;
	rb->size = size;
	rb->npages = size / FERRY_PAGE_SIZE;
	rb->fd = fd;
	rb->mark_log = (_Atomic unsigned long *)ferry__bitmap_new(rb->npages);
	rb->dirty = ferry__bitmap_new(rb->npages);
	rb->received = ferry__bitmap_new(rb->npages);
	if (!rb->mark_log || !rb->dirty || !rb->received) {
		free((void *)rb->mark_log);
		free(rb->dirty);
		free(rb->received);
		free(rb);
		return -ENOMEM;
	}
	vm->blocks[vm->nblocks++] = rb;
	if (out)
		*out = rb;
	return 0;
}

/* Thread: the embedder's control thread (registration). */
int ferry_ram_block_add(ferry_vm_t *vm, const char *name, void *host, uint64_t size,
			int fd, ferry_ram_block_t **out)
{
	if (out)
		*out = NULL;
	if (!vm || !name_ok(name) || !host || !size || size % FERRY_PAGE_SIZE ||
	    (uintptr_t)host % FERRY_PAGE_SIZE)
		return -EINVAL;
	if (reg_lock(vm))
		return -EBUSY;
	int r = block_add(vm, name, host, size, fd, out);
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}

/*
 * Thread: any, as long as no registration runs at the same time (the
 * tables do not change while a migration runs).
 */
ferry_ram_block_t *ferry_ram_block_find(ferry_vm_t *vm, const char *name)
{
	for (unsigned i = 0; vm && name && i < vm->nblocks; i++)
		if (!strcmp(vm->blocks[i]->name, name))
			return vm->blocks[i];
	return NULL;
}

/* Thread: any (a block's name, host and size never change). */
const char *ferry_ram_block_name(const ferry_ram_block_t *rb)
{
	return rb->name;
}

void *ferry_ram_block_host(const ferry_ram_block_t *rb)
{
	return rb->host;
}

uint64_t ferry_ram_block_size(const ferry_ram_block_t *rb)
{
	return rb->size;
}

/* Thread: any (vCPU threads); lock-free. */
void ferry_ram_mark_dirty(ferry_ram_block_t *rb, uint64_t offset, uint64_t len)
{
	/*
	 * Relaxed: `marking` only gates the cost; the log itself carries the
	 * ordering (release in set_range_atomic). Marks made while marking is
	 * off are not needed: tracking starts with every page dirty.
	 */
	if (!len || !atomic_load_explicit(&rb->marking, memory_order_relaxed))
		return;
	if (offset >= rb->size || len > rb->size - offset)
		return; /* outside the block: nothing of ours was written */
	uint64_t first = offset >> FERRY_PAGE_SHIFT;
	uint64_t last = (offset + len - 1) >> FERRY_PAGE_SHIFT;
	ferry__bitmap_set_range_atomic(rb->mark_log, first, last - first + 1);
}

/* ferry_device_register with valid arguments. Caller holds reg_lock. */
static int device_add(ferry_vm_t *vm, const char *id, uint32_t instance, const ferry_vmsd *vmsd,
		      void *opaque)
{
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (!strcmp(vm->devices[i].id, id) && vm->devices[i].instance == instance)
			return -EEXIST;
	if (vm->ndevices == vm->devices_cap) {
		unsigned cap = vm->devices_cap ? vm->devices_cap * 2 : 8;
		struct ferry_device *d = realloc(vm->devices, cap * sizeof(*d));
		if (!d)
			return -ENOMEM;
		vm->devices = d;
		vm->devices_cap = cap;
	}
	struct ferry_device *d = &vm->devices[vm->ndevices++];
	memset(d, 0, sizeof(*d));
	strcpy(d->id, id);
	d->instance = instance;
	d->vmsd = vmsd;
	d->opaque = opaque;
	return 0;
}

/* Thread: the embedder's control thread (registration). */
int ferry_device_register(ferry_vm_t *vm, const char *id, uint32_t instance,
			  const ferry_vmsd *vmsd, void *opaque)
{
	if (!vm || !name_ok(id) || !vmsd)
		return -EINVAL;
	int r = ferry__vmsd_validate(vmsd);
	if (r < 0)
		return r;
	if (reg_lock(vm))
		return -EBUSY;
	r = device_add(vm, id, instance, vmsd, opaque);
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}

/* The ops a live device must have (ferry/device.h). */
static bool live_ops_ok(const ferry_live_device_ops *ops)
{
	if (!ops || !ops->set_state || !ops->read || !ops->write)
		return false;
	if (ops->flags & ~FERRY_LIVE_PRE_COPY_FLAG)
		return false;
	return !(ops->flags & FERRY_LIVE_PRE_COPY_FLAG) || ops->precopy_info;
}

/* ferry_live_device_register with valid arguments. Caller holds reg_lock. */
static int live_add(ferry_vm_t *vm, const char *id, uint32_t instance,
		    const ferry_live_device_ops *ops, const ferry_vmsd *config, void *opaque)
{
	for (unsigned i = 0; i < vm->nlive; i++)
		if (!strcmp(vm->live[i].id, id) && vm->live[i].instance == instance)
			return -EEXIST;
	if (vm->nlive == FERRY_LIVE_DEVICES_MAX)
		return -ENOSPC;
	if (!vm->live && !(vm->live = calloc(FERRY_LIVE_DEVICES_MAX, sizeof(*vm->live))))
		return -ENOMEM;
	struct ferry_live_device *d = &vm->live[vm->nlive++];
	strcpy(d->id, id);
	d->instance = instance;
	d->ops = *ops;
	d->config = config;
	d->opaque = opaque;
	atomic_init(&d->state, FERRY_LIVE_RUNNING);
	return 0;
}

/* Thread: the embedder's control thread (registration). */
int ferry_live_device_register(ferry_vm_t *vm, const char *id, uint32_t instance,
			       const ferry_live_device_ops *ops, const ferry_vmsd *config,
			       void *opaque)
{
	if (!vm || !name_ok(id) || !live_ops_ok(ops))
		return -EINVAL;
	int r = config ? ferry__vmsd_validate(config) : 0;
	if (r < 0)
		return r;
	if (reg_lock(vm))
		return -EBUSY;
	r = live_add(vm, id, instance, ops, config, opaque);
	pthread_mutex_unlock(&vm->mig_lock);
	return r;
}

/* Thread: any (the table does not change while a migration runs; state is atomic). */
int ferry_live_device_state(ferry_vm_t *vm, const char *id, uint32_t instance)
{
	for (unsigned i = 0; vm && id && i < vm->nlive; i++)
		if (!strcmp(vm->live[i].id, id) && vm->live[i].instance == instance)
			return atomic_load(&vm->live[i].state);
	return -ENOENT;
}
