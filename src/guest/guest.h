/* SPDX-License-Identifier: MIT */
/*
 * Ferry's synthetic guest: the default VM that Ferry migrates, built as an
 * embedder of libferry that uses only the public API (include/ferry/).
 *
 * RAM blocks are memfds mapped MAP_SHARED. Each vCPU is a thread running a
 * deterministic workload inside its own disjoint slice of the "pc.ram"
 * block; the small "vga.vram" block is written only by the initial fill.
 * Because a vCPU's writes depend only on (config, vcpu index, steps done),
 * RAM after vCPU i ran S_i steps is a pure function of the config and the
 * S_i: a never-migrated twin run to the same step counts must be
 * byte-identical. That is Ferry's oracle of correctness (oracle.c).
 *
 * Thread: the guest object is driven from one control thread; vCPU threads
 * are internal. ferry_guest_stop()/start() may be called from libferry's
 * migration threads through the registered vCPU ops.
 */
#ifndef FERRY_GUEST_H
#define FERRY_GUEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry.h"

#define FERRY_GUEST_MAX_VCPUS 64

typedef enum ferry_workload {
	FERRY_WL_IDLE = 0,   /* a step writes nothing */
	FERRY_WL_STRIDE = 1, /* step k: page k % wss, byte ((k / wss) * 64) % 4096 += 1 */
	FERRY_WL_RANDOM = 2, /* seeded PRNG page over the working set */
	FERRY_WL_HOTSET = 3, /* 80% of steps hit the first 20% of the working set */
	/*
	 * Pages come from a free-page list kept in guest RAM: a step allocates
	 * a page (and writes all of it), frees one, or writes 8 bytes of an
	 * allocated one. A free page's contents are never read: they are
	 * undefined, and the oracle skips them. cfg.alloc percent of the pages
	 * start allocated (holding the initial fill), the rest free.
	 */
	FERRY_WL_CHURN = 4,
} ferry_workload;

/*
 * With cfg.virtio, the last FERRY_GUEST_VIRTIO_SIZE bytes of "pc.ram" are
 * the virtio area: the guest's virtio driver keeps its rings and buffers
 * there, workloads never touch it, and the oracle skips it (its contents
 * depend on timing).
 */
#define FERRY_GUEST_VIRTIO_SIZE (256u << 10)

typedef enum ferry_fill {
	FERRY_FILL_NONE = 0,   /* never touched: RAM stays unpopulated */
	FERRY_FILL_ZERO = 1,   /* every page written with zeros (populated) */
	FERRY_FILL_RANDOM = 2, /* seeded random bytes */
	FERRY_FILL_TEXT = 3,   /* compressible, source-code-like text */
} ferry_fill;

typedef struct ferry_guest_config {
	uint64_t mem_size;    /* "pc.ram" bytes; default 1 GiB */
	uint64_t vram_size;   /* "vga.vram" bytes; default 16 MiB, 0 = none */
	unsigned vcpus;       /* default 2 */
	ferry_workload workload; /* default random */
	uint64_t rate;        /* dirty bytes/s per vCPU; 0 = unthrottled (default) */
	uint64_t wss;         /* working set bytes per vCPU; 0 = whole slice */
	ferry_fill fill;      /* default random */
	uint64_t seed;        /* default 1 */
	unsigned throttle;    /* percent of time vCPUs sleep, 0..99 */
	bool paused;          /* start with vCPUs stopped (like QEMU -S) */
	/*
	 * Incoming guest: allocate all RAM at creation (QEMU's prealloc=on),
	 * before the migration starts, instead of page by page while it runs.
	 */
	bool prealloc;
	/* Reserve the virtio area (see FERRY_GUEST_VIRTIO_SIZE). Default off. */
	bool virtio;
	/*
	 * Spec key "balloon": tells the embedder to attach a virtio-balloon
	 * with free page hints and the guest's driver (balloon-drv.h); it
	 * implies virtio. The guest itself only records it.
	 */
	bool balloon;
	/* churn: percent of the managed pages allocated at creation (0..100). */
	unsigned alloc;
	/*
	 * Live devices (devices.c; ferry/device.h): `devices` (0..16, default
	 * 0) devices "gdev" instance 0..N-1, each with devmem bytes of its own
	 * memory (default 64 MiB; a multiple of 4096, at least 64 bytes per
	 * vCPU) that the vCPU steps change and the oracle compares, read out
	 * at no more than devrate bytes/s (default 500M; 0 = unlimited).
	 * devprecopy (default off): the devices offer PRE_COPY, with dirty
	 * tracking of their memory in 64 KiB granules.
	 */
	unsigned devices;
	uint64_t devmem;
	uint64_t devrate;
	bool devprecopy;
} ferry_guest_config;

typedef struct ferry_guest ferry_guest_t;

/* Fills cfg with the defaults above. */
void ferry_guest_config_init(ferry_guest_config *cfg);

/*
 * Checks a whole config (sizes page multiples, vcpus 1..64, at least one
 * pc.ram page per vCPU, throttle 0..99, known enums). Returns 0, or -EINVAL
 * with a message in err (if err_len > 0). Thread: any.
 */
int ferry_guest_config_check(const ferry_guest_config *cfg, char *err, size_t err_len);

/*
 * Parses "mem=1G,vcpus=2,workload=random,rate=200M,wss=64M,fill=random,
 * seed=7,throttle=0,vram=16M,paused,devices=2,devmem=64M,devrate=500M"
 * over the defaults already in cfg.
 * Sizes take K/M/G suffixes (powers of 1024); rate takes the same suffixes
 * (bytes/s) or "max" for unthrottled; so does devrate. Returns 0, or -EINVAL with a message
 * in err (e.g. "unknown workload 'foo' (expected idle, stride, random,
 * hotset, churn)"). Also: alloc=PERCENT, virtio, balloon, devprecopy. "paused" alone means paused=on (on/off, yes/no, true/false,
 * 1/0 are accepted). Empty items (",,", trailing comma) are ignored; a key
 * given twice takes the last value. The result is checked as a whole with
 * ferry_guest_config_check(); on error cfg is left unchanged.
 * `paused` does not change the guest itself (it is always created stopped):
 * it only tells the embedder (the CLI) not to start it.
 */
int ferry_guest_config_parse(ferry_guest_config *cfg, const char *spec, char *err,
			     size_t err_len);

/*
 * Creates the guest: memfds, mappings, initial fill, vCPU threads (stopped).
 * Returns 0 or a negative errno (and *out = NULL).
 * `incoming`: skip the initial fill (the RAM will arrive by migration).
 */
int ferry_guest_create(const ferry_guest_config *cfg, bool incoming, ferry_guest_t **out);
void ferry_guest_destroy(ferry_guest_t *g);

/*
 * Registers the guest with a libferry VM: its RAM blocks, one device per
 * vCPU ("cpu", instance i: step counter, PRNG state, workload parameters)
 * the live devices ("gdev", instance i, ferry_live_device_register, with
 * a config vmsd "gdev") and the vCPU ops. If the VM tracks dirty pages explicitly
 * (ferry_vm_dirty_mode() == FERRY_DIRTY_EXPLICIT), the vCPUs call
 * ferry_ram_mark_dirty() after each write. Returns 0 or a negative errno.
 */
int ferry_guest_attach(ferry_guest_t *g, ferry_vm_t *vm);

/*
 * Puts a stopped guest back where ferry_guest_create() left it: every RAM
 * page a hole again (read as zeros, never populated; memfd punch-hole),
 * then the initial fill (not for an incoming guest) or, with prealloc, the
 * RAM populated again; every vCPU at step 0 with its initial PRNG state.
 * For a destination whose incoming migration failed or was cancelled:
 * libferry expects fresh, zero-filled RAM for the next one.
 * Returns 0, -EBUSY (vCPUs running) or a negative errno from fallocate.
 * Thread: the control thread (or a worker it hands the guest to).
 */
int ferry_guest_reset(ferry_guest_t *g);

/* Starts/stops all vCPUs; stop returns when all are at a step boundary. */
int ferry_guest_start(ferry_guest_t *g);
int ferry_guest_stop(ferry_guest_t *g);
bool ferry_guest_running(const ferry_guest_t *g);

/*
 * Runs the vCPUs until each vCPU i has done targets[i] steps in total
 * (vCPUs already past their target just stop), then leaves them stopped.
 * Blocks. Returns 0 or a negative errno.
 */
int ferry_guest_run_until(ferry_guest_t *g, const uint64_t *targets);

/*
 * Same, interruptible: once *cancel (may be NULL) is set and
 * ferry_guest_kick() called, the vCPUs stop where they are and it returns
 * -EINTR (also at once if *cancel is already set).
 */
int ferry_guest_run_until_ex(ferry_guest_t *g, const uint64_t *targets,
			     const atomic_bool *cancel);

/*
 * Wakes a ferry_guest_run_until_ex() to look at its cancel flag; call it
 * after setting the flag. Never blocks on a running run-until.
 * Thread: any.
 */
void ferry_guest_kick(ferry_guest_t *g);

/* Steps done so far by each vCPU (read while stopped for exact values). */
void ferry_guest_steps(const ferry_guest_t *g, uint64_t *steps);
unsigned ferry_guest_vcpus(const ferry_guest_t *g);

/*
 * The thread id (gettid()) of vCPU i's thread, waiting for the thread to
 * have started if it just was created; -1 if there is no such vCPU.
 * Thread: any.
 */
int ferry_guest_vcpu_tid(ferry_guest_t *g, unsigned i);
const ferry_guest_config *ferry_guest_get_config(const ferry_guest_t *g);

/*
 * Sets the throttle percentage (0..99) at run time. The migration's own
 * throttle (auto-converge, through ferry_vcpu_ops.set_throttle) is kept
 * apart, ferry_guest_set_mig_throttle(): the vCPUs follow the higher of
 * the two, and the migration setting its throttle back to 0 leaves the
 * user's in place. ferry_guest_mig_throttle() reads the migration's.
 */
int ferry_guest_set_throttle(ferry_guest_t *g, unsigned percent);
int ferry_guest_set_mig_throttle(ferry_guest_t *g, unsigned percent);
unsigned ferry_guest_mig_throttle(const ferry_guest_t *g);

/*
 * Live device i's memory (for the oracle and tests; read it while the
 * guest is stopped), and the state the device was last moved to
 * (ferry_live_state, as the device itself saw the set_state calls).
 */
unsigned ferry_guest_dev_count(const ferry_guest_t *g);
void ferry_guest_dev_mem(const ferry_guest_t *g, unsigned i, uint8_t **host, uint64_t *size);
int ferry_guest_dev_state(const ferry_guest_t *g, unsigned i);

/* RAM blocks, for the oracle and tests. */
unsigned ferry_guest_ram_count(const ferry_guest_t *g);
void ferry_guest_ram(const ferry_guest_t *g, unsigned i, const char **name, uint8_t **host,
		     uint64_t *size);

/* --- oracle.c --- */

/* XXH3-64 over every page of every block, in order; guest must be stopped. */
uint64_t ferry_guest_hash(const ferry_guest_t *g);

typedef struct ferry_verify_result {
	bool matches;
	/*
	 * Pages skipped because their contents are undefined (free pages of
	 * the churn workload, the virtio area), per the twin's free lists.
	 * Not included in pages_compared.
	 */
	uint64_t pages_excluded;
	uint64_t hash;       /* this guest's RAM hash */
	uint64_t twin_hash;  /* the never-migrated twin's */
	/* First differing page when !matches. */
	char block[256];
	uint64_t page;       /* page index in that block */
	uint64_t pages_compared;
	uint64_t pages_differing; /* all pages that differ (RAM and device memory) */
} ferry_verify_result;

/*
 * The oracle: builds a never-migrated twin with the same config, runs each
 * of its vCPUs (synchronously, in the calling thread) to this guest's
 * current step counts, and compares every page. The guest must be stopped.
 * Returns 0 (result in *res, matching or not) or a negative errno (-EBUSY
 * if the guest runs).
 * If RAM matches but a vCPU's PRNG state differs from the twin's (the
 * device state was not migrated faithfully), matches is false with block
 * "cpu" and page = the vCPU index.
 */
int ferry_guest_verify(const ferry_guest_t *g, ferry_verify_result *res);

/* --- internal: shared by guest.c, oracle.c and the tests --- */

/*
 * Executes n steps of vCPU i directly in the calling thread, with the same
 * step function the vCPU threads use (the oracle's twin runs this way).
 * The guest must be stopped (-EBUSY otherwise). Returns 0 or -EINVAL.
 */
int ferry_guest_vcpu_exec(ferry_guest_t *g, unsigned i, uint64_t n);

/* vCPU i's migrated state: step count and PRNG state (guest stopped). */
void ferry_guest_vcpu_state(const ferry_guest_t *g, unsigned i, uint64_t *steps,
			    uint64_t prng[4]);

/*
 * vCPU i's device description and the opaque it applies to, as registered
 * by ferry_guest_attach() (for ferry_vmsd_encode/decode in tests). Read or
 * write that state only while the guest is stopped.
 */
const ferry_vmsd *ferry_guest_vcpu_vmsd(void);
void *ferry_guest_vcpu_opaque(ferry_guest_t *g, unsigned i);

/* The memfd backing RAM block i (owned by the guest), or -1. */
int ferry_guest_ram_fd(const ferry_guest_t *g, unsigned i);

/*
 * Pages of RAM block i whose contents are undefined: free pages of the
 * churn workload (read from the free lists in this guest's RAM, through
 * the memfd so that no hole gets allocated; a list that does not look
 * right excludes nothing) and the virtio area. Sets their bits in `bits`
 * (one per page of the block, zeroed by the caller) and returns their
 * count. The guest should be stopped for an exact answer.
 */
uint64_t ferry_guest_undefined_pages(const ferry_guest_t *g, unsigned i, uint64_t *bits);

/*
 * Guest-physical layout: "pc.ram" at 0, "vga.vram" right after it (at
 * cfg.mem_size). Fills up to cap regions (needs ferry_guest_attach()
 * first) and returns how many there are, or -EINVAL.
 */
int ferry_guest_gpa_regions(const ferry_guest_t *g, ferry_gpa_region *out, unsigned cap);

/* The virtio area: host address, guest-physical address, size (0 if none). */
void ferry_guest_virtio_area(const ferry_guest_t *g, uint8_t **host, uint64_t *gpa,
			     uint64_t *size);

/*
 * Calls fn for each run of free pages of the churn workload, in
 * guest-physical terms, from a snapshot of each vCPU's free list taken
 * under that vCPU's allocator lock (so the vCPUs may run). Returns the
 * number of pages reported or a negative errno. Pages free at the
 * snapshot may be allocated again right after it.
 */
typedef int (*ferry_guest_free_fn)(void *opaque, uint64_t gpa, uint64_t len);
int64_t ferry_guest_free_ranges(ferry_guest_t *g, ferry_guest_free_fn fn, void *opaque);

/*
 * A guest activity (a guest "kernel thread", e.g. the balloon driver):
 * fn(opaque, stop) runs over and over, about every millisecond, on its own
 * thread while the guest runs, and never while it is stopped (ferry_guest_
 * stop() waits for the round in progress, which must return soon after
 * *stop becomes non-zero). One per guest; add it while stopped. Returns 0,
 * -EBUSY (running), -EEXIST or a negative errno from pthread_create.
 */
typedef void (*ferry_guest_activity_fn)(void *opaque, const atomic_int *stop);
int ferry_guest_add_activity(ferry_guest_t *g, ferry_guest_activity_fn fn, void *opaque);

/* The VM the guest is attached to (NULL before ferry_guest_attach()). */
ferry_vm_t *ferry_guest_vm(const ferry_guest_t *g);
/* RAM block i as registered with the VM (NULL before attach). */
ferry_ram_block_t *ferry_guest_ram_block(const ferry_guest_t *g, unsigned i);

#endif /* FERRY_GUEST_H */
