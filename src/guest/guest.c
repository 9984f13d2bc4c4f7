/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest: RAM blocks backed by memfds, vCPU threads running
 * deterministic workloads, and its registration with libferry (public API
 * only: this file must never include src/lib internals).
 *
 * What:
 *  - RAM: "pc.ram" (cfg.mem_size) and "vga.vram" (cfg.vram_size, absent
 *    when 0), each a memfd mapped MAP_SHARED. The initial fill (skipped for
 *    an incoming guest) is a pure function of (fill, seed, block, 2 MiB
 *    chunk index), so it can be done by several threads and still be
 *    identical in the oracle's twin.
 *  - vCPU i owns the pc.ram slice [i * slice, (i + 1) * slice) with
 *    slice = (mem pages / vcpus) pages; the last vCPU also gets the
 *    remainder. Its working set is the first min(wss, slice) pages of the
 *    slice (wss 0 = the whole slice).
 *  - A step k of vCPU i (k = steps done before it) writes RAM as a function
 *    of (seed, i, k) and the vCPU's xoshiro256** state, which is seeded from
 *    (seed, i), advanced only by steps, and migrated as device state:
 *      stride: page p = k % wss; byte ((k / wss) * 64) % 4096 of page p is
 *              incremented (QEMU's migration test guest sweeps the same way).
 *      random: p = prng() % wss; off = (prng() % 512) * 8; the 8 bytes at
 *              (p, off) become prng() ^ k (three PRNG calls, in that order).
 *      hotset: r = prng(); if r % 100 < 80, p = prng() % hot, else
 *              p = hot + prng() % (wss - hot), hot = max(1, wss / 5); then
 *              off and the value as for random.
 *      idle:   writes nothing. Idle vCPU threads never step: they stay
 *              parked (blocked on a condition variable) even while the
 *              guest runs, so their step count stays 0.
 *      churn:  the working set is managed by a free-page list kept in
 *              guest RAM at its start (struct churn_meta: header, then a
 *              permutation of the n managed pages whose first nalloc
 *              entries are allocated). op = prng() % 8: 0-1 allocate (free
 *              if none is free), 2-3 free (allocate if none is allocated),
 *              4-7 write (allocate if none is). Allocate: j = nalloc +
 *              prng() % (n - nalloc), swap entries nalloc and j, and write
 *              the whole page (word i = (k + 1) * phi ^ i * c), so a freed
 *              page's old contents are never read. Free: j = prng() %
 *              nalloc, swap with the last allocated entry. Write: page
 *              perm[prng() % nalloc], then off and value as for random.
 *              Each step holds the vCPU's allocator lock (host memory),
 *              so the balloon driver can snapshot the free list while the
 *              vCPUs run.
 *    Explicit dirty tracking: when the VM the guest is attached to tracks
 *    dirty pages explicitly, each write is followed by
 *    ferry_ram_mark_dirty() (after the data is written).
 *  - Live devices (cfg.devices, devices.c): memory of their own, outside
 *    guest RAM; every step of vCPU i also writes 8 bytes of device (k mod
 *    N) in vCPU i's slice of it, derived from the PRNG state after the
 *    step (the same step loop for the vCPU threads and the twin).
 *  - cfg.virtio reserves the last FERRY_GUEST_VIRTIO_SIZE bytes of pc.ram
 *    (zeroed at create) for the virtio driver; the vCPU slices are cut
 *    from the pages before it. Off, the layout is exactly as without it.
 *
 * DESIGN:
 *  - One step function (exec_steps) is used both by the vCPU threads and by
 *    ferry_guest_vcpu_exec() (the oracle's twin): that sharing is what makes
 *    the oracle meaningful.
 *  - Run control. vCPU threads park between steps on g->cond_run. Stop sets
 *    the atomic g->stop_req, which a running vCPU checks before every step
 *    (a relaxed load of a line nobody writes while running), then waits on
 *    g->cond_ack until every vCPU has parked; parking takes g->lock, so the
 *    stopper sees all RAM writes (happens-before through the mutex). Naps
 *    (rate pacing, throttling) are timed waits on g->cond_wake, which stop
 *    broadcasts, so a stop never waits out a throttle sleep.
 *  - ferry_guest_run_until() gives each vCPU a target; a vCPU parks by
 *    itself when it reaches its target, so step counts are exact. Its
 *    _ex form also ends when a cancel flag is set: the flag is read under
 *    g->lock and ferry_guest_kick() broadcasts cond_ack under it, so a
 *    cancel is never missed; the vCPUs then stop where they are.
 *  - A guest activity (ferry_guest_add_activity(), e.g. the balloon
 *    driver) is one more thread under the same run control: it runs rounds
 *    while want_run is set, and counts as parked between rounds, so a stop
 *    also waits for its round in progress. Its writes to RAM, like the
 *    vCPUs', are therefore all done before a stop returns.
 *  - Pacing (cfg.rate, bytes/s per vCPU, one 4 KiB page per step): a token
 *    bucket with 10 ms of credit, checked every ~1 ms worth of steps
 *    against CLOCK_MONOTONIC. Throttle p%: run 10 ms, then sleep
 *    10 * p / (100 - p) ms.
 *  - The migrated vCPU fields (steps, prng, workload, seed, slice_offset,
 *    slice_pages, wss_pages) live in struct guest_vcpu, the opaque of the
 *    "cpu" vmsd. A running vCPU keeps its state in locals and writes it back
 *    when it parks, so libferry must read or write it only while the vCPUs
 *    are stopped (it does: device state is saved after the stop op and
 *    loaded before the start op). The step code uses private copies of the
 *    layout (base, wss) computed from the local config, never the migrated
 *    ones, so a bad stream cannot make a vCPU write outside its slice; the
 *    post_load hook refuses a stream whose layout differs from the local
 *    config (FERRY_EMISMATCH: start the destination with the same --guest).
 *
 * Threads: "guest/vcpu%u" per vCPU (created at ferry_guest_create, parked
 * until started, joined at destroy), "guest/fill" helpers during the
 * initial fill only, "guest/activity" if one was added (joined at destroy). Control functions are serialised by g->ctl; they may be
 * called from the embedder's control thread or libferry's migration threads
 * (through the vCPU ops). g->ctl is always the innermost lock of any
 * libferry lock: the guest never calls libferry while holding it.
 * Lock order: g->ctl, then g->lock. A vCPU's churn_lock is a leaf (held
 * for one step, or for one free-list snapshot).
 */
#include "guest.h"
#include "devices.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE FERRY_PAGE_SIZE
#define FILL_CHUNK (2u << 20)     /* fill work unit; the fill is a function of it */
#define FILL_MAX_THREADS 8
#define STEP_CHUNK 4096           /* steps between pacing checks, unthrottled */
#define THROTTLE_CHUNK 256        /* steps between clock checks when throttled */
#define THROTTLE_RUN_NS 10000000ull /* throttle: run 10 ms, then sleep */
#define PACE_BURST_NS 10000000ull   /* rate: at most 10 ms of credit */
#define NS_PER_S 1000000000ull

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define CHURN_MAGIC 0x316e726863797272ull /* "rrychrn1" */

/* The churn workload's free-page list, at the start of a vCPU's slice. */
struct churn_meta {
	uint64_t magic;
	uint64_t npages; /* n: managed pages, following the meta pages */
	uint64_t first;  /* slice page of managed page 0 (= meta pages) */
	uint64_t nalloc; /* perm[0, nalloc) are allocated, the rest free */
	uint32_t perm[];
};

/* PRNG stream ids (so no two users of the seed share a sequence). */
#define STREAM_FILL 0x100 /* + block index; sub = fill chunk index */
#define STREAM_VCPU 0x200 /* sub = vCPU index */

/* ------------------------------------------------------------------ */
/* PRNG: splitmix64 for seeding, xoshiro256** for the streams.         */

static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t splitmix64(uint64_t *x)
{
	*x += 0x9e3779b97f4a7c15ull;
	return mix64(*x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t prng_next(uint64_t s[4])
{
	const uint64_t result = rotl(s[1] * 5, 7) * 9;
	const uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

static void prng_seed(uint64_t s[4], uint64_t seed, uint64_t stream, uint64_t sub)
{
	uint64_t x = mix64(seed) ^ mix64(stream * 0xd1b54a32d192ed03ull + 1) ^
		     mix64(sub * 0x8cb92ba72f3d8dd7ull + 2);
	for (int i = 0; i < 4; i++)
		s[i] = splitmix64(&x);
	if (!(s[0] | s[1] | s[2] | s[3])) /* the one state xoshiro must avoid */
		s[0] = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Objects.                                                            */

struct guest_ram {
	const char *name;
	int fd;
	uint8_t *host;
	uint64_t size;
	ferry_ram_block_t *rb; /* once attached */
};

/* One per vCPU, cache-line aligned so vCPUs do not share lines. */
typedef struct guest_vcpu {
	/*
	 * Migrated state (the "cpu" vmsd fields). Owned by the vCPU thread
	 * while it runs; read/written by libferry only while stopped.
	 * steps is also read (atomically, approximately) by
	 * ferry_guest_steps() while running.
	 */
	uint64_t steps;
	uint64_t prng[4];
	uint32_t workload;
	uint64_t seed;
	uint64_t slice_offset;
	uint64_t slice_pages;
	uint64_t wss_pages;

	/* Local, immutable after create (except rb, set at attach). */
	ferry_guest_t *g;
	unsigned index;
	uint8_t *base;             /* pc.ram host + slice offset */
	uint64_t l_slice_offset;   /* local layout, used by the step code */
	uint64_t l_slice_pages;
	uint64_t l_wss_pages;
	ferry_ram_block_t *rb;     /* pc.ram if explicit dirty tracking, else NULL */
	uint64_t churn_first;      /* churn: meta pages at the slice start */
	uint64_t churn_n;          /* churn: managed pages after them (>= 1) */
	pthread_mutex_t churn_lock; /* the free list in RAM (leaf lock) */

	/* Run control, under g->lock. */
	uint64_t target;           /* stop by itself at this step count */
	bool parked;
	bool thread_ok;
	pthread_t thread;
	pid_t tid;                 /* the thread's id, once it started (0 before) */
} __attribute__((aligned(64))) guest_vcpu;

struct ferry_guest {
	ferry_guest_config cfg;
	bool incoming;
	unsigned nram;
	struct guest_ram ram[2];
	unsigned nvcpus;
	guest_vcpu *vcpus;
	ferry_vm_t *vm;
	uint64_t usable_pages;     /* pc.ram pages before the virtio area */
	guest_devs *devs;          /* live devices (devices.c), NULL if none */

	/* The guest activity; under lock but act_fn/act_opaque (immutable). */
	ferry_guest_activity_fn act_fn;
	void *act_opaque;
	bool act_ok;
	bool act_parked;
	pthread_t act_thread;

	pthread_mutex_t ctl;       /* serialises the control functions */
	pthread_mutex_t lock;      /* run state below */
	pthread_cond_t cond_run;   /* vCPUs wait here while parked */
	pthread_cond_t cond_ack;   /* controllers wait here for parking */
	pthread_cond_t cond_wake;  /* naps (CLOCK_MONOTONIC) */
	bool want_run;             /* written under lock; read atomically */
	bool quit;
	unsigned wake_gen;         /* bumped to end naps early */
	_Atomic unsigned throttle;     /* the user's (config, ferry_guest_set_throttle) */
	_Atomic unsigned mig_throttle; /* auto-converge's (vcpu_ops.set_throttle); the higher wins */

	/* Read by every vCPU before every step: keep it on its own line. */
	_Alignas(64) atomic_int stop_req;
	char pad_[64 - sizeof(atomic_int)];
};

/* ------------------------------------------------------------------ */
/* Config.                                                             */

void ferry_guest_config_init(ferry_guest_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mem_size = 1ull << 30;
	cfg->vram_size = 16ull << 20;
	cfg->vcpus = 2;
	cfg->workload = FERRY_WL_RANDOM;
	cfg->rate = 0;
	cfg->wss = 0;
	cfg->fill = FERRY_FILL_RANDOM;
	cfg->seed = 1;
	cfg->throttle = 0;
	cfg->paused = false;
	cfg->prealloc = false;
	cfg->virtio = false;
	cfg->devices = 0;
	cfg->devmem = 64ull << 20;
	cfg->devrate = 500ull << 20;
	cfg->devprecopy = false;
}

static int fail(char *err, size_t err_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_len, const char *fmt, ...)
{
	if (err && err_len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int ferry_guest_config_check(const ferry_guest_config *cfg, char *err, size_t err_len)
{
	if (!cfg)
		return fail(err, err_len, "no guest config");
	if (!cfg->mem_size || cfg->mem_size % PAGE)
		return fail(err, err_len, "mem must be a non-zero multiple of 4096 bytes (got %llu)",
			    (unsigned long long)cfg->mem_size);
	if (cfg->vram_size % PAGE)
		return fail(err, err_len, "vram must be a multiple of 4096 bytes (got %llu)",
			    (unsigned long long)cfg->vram_size);
	if (cfg->wss % PAGE)
		return fail(err, err_len, "wss must be a multiple of 4096 bytes (got %llu)",
			    (unsigned long long)cfg->wss);
	if (cfg->vcpus < 1 || cfg->vcpus > FERRY_GUEST_MAX_VCPUS)
		return fail(err, err_len, "vcpus must be 1..%d (got %u)", FERRY_GUEST_MAX_VCPUS,
			    cfg->vcpus);
	if (cfg->mem_size / PAGE < cfg->vcpus)
		return fail(err, err_len,
			    "mem (%llu pages) is too small for %u vcpus (at least one page each)",
			    (unsigned long long)(cfg->mem_size / PAGE), cfg->vcpus);
	const uint64_t vpages = cfg->virtio ? FERRY_GUEST_VIRTIO_SIZE / PAGE : 0;
	if (cfg->virtio && cfg->mem_size / PAGE < vpages + cfg->vcpus)
		return fail(err, err_len,
			    "mem (%llu pages) is too small for %u vcpus and the virtio area (%llu "
			    "pages)",
			    (unsigned long long)(cfg->mem_size / PAGE), cfg->vcpus,
			    (unsigned long long)vpages);
	if (cfg->workload == FERRY_WL_CHURN &&
	    ((cfg->mem_size / PAGE - vpages) / cfg->vcpus < 2 || (cfg->wss && cfg->wss < 2 * PAGE)))
		return fail(err, err_len, "churn needs a working set of at least 2 pages per vcpu");
	if ((unsigned)cfg->workload > FERRY_WL_CHURN)
		return fail(err, err_len, "unknown workload %u", (unsigned)cfg->workload);
	if ((unsigned)cfg->fill > FERRY_FILL_TEXT)
		return fail(err, err_len, "unknown fill %u", (unsigned)cfg->fill);
	if (cfg->throttle > 99)
		return fail(err, err_len, "throttle must be 0..99 (got %u)", cfg->throttle);
	if (cfg->devices > 16)
		return fail(err, err_len, "devices must be 0..16 (got %u)", cfg->devices);
	if (cfg->devices && (!cfg->devmem || cfg->devmem % PAGE || cfg->devmem / cfg->vcpus < 64))
		return fail(err, err_len,
			    "devmem must be a non-zero multiple of 4096 bytes with at least 64 per "
			    "vcpu (got %llu)", (unsigned long long)cfg->devmem);
	return 0;
}

/* Decimal, or hex with 0x. Digits only: no sign, no spaces. */
static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	unsigned base = 10;
	if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		len -= 2;
	}
	if (!len)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned d;
		char c = s[i];
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return false;
		if (v > (UINT64_MAX - d) / base)
			return false;
		v = v * base + d;
	}
	*out = v;
	return true;
}

/* Number with an optional K, M or G suffix (powers of 1024). */
static bool parse_size(const char *s, size_t len, uint64_t *out)
{
	unsigned shift = 0;
	if (len) {
		switch (s[len - 1]) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		default: break;
		}
		if (shift)
			len--;
	}
	uint64_t v;
	if (!parse_u64(s, len, &v))
		return false;
	if (shift && v > (UINT64_MAX >> shift))
		return false;
	*out = v << shift;
	return true;
}

static bool key_is(const char *k, size_t klen, const char *name)
{
	return strlen(name) == klen && !memcmp(k, name, klen);
}

/* devices=N, devmem=SIZE, devrate=RATE|max. */
static int parse_dev_item(ferry_guest_config *c, const char *k, size_t klen, const char *v,
			  size_t vlen, char *err, size_t el)
{
	const int ki = (int)klen, vi = (int)vlen;
	uint64_t n;
	if (key_is(k, klen, "devices")) {
		if (!parse_u64(v, vlen, &n) || n > 16)
			return fail(err, el, "devices must be 0..16 (got %.*s)", vi, v);
		c->devices = (unsigned)n;
		return 0;
	}
	if (key_is(k, klen, "devrate") && key_is(v, vlen, "max")) {
		c->devrate = 0;
		return 0;
	}
	if (!parse_size(v, vlen, &n))
		return fail(err, el, "bad size '%.*s' for %.*s (expected bytes with an optional K, M "
			    "or G suffix%s)", vi, v, ki, k, k[3] == 'r' ? ", or max" : "");
	if (k[3] == 'r')
		c->devrate = n;
	else
		c->devmem = n;
	return 0;
}

static int parse_item(ferry_guest_config *c, const char *k, size_t klen, const char *v,
		      size_t vlen, bool has_v, char *err, size_t el)
{
	static const char *const workloads[] = { "idle", "stride", "random", "hotset", "churn" };
	static const char *const fills[] = { "none", "zero", "random", "text" };
	const int ki = (int)klen, vi = (int)vlen;
	uint64_t n;

	bool *flag = key_is(k, klen, "paused")     ? &c->paused
		     : key_is(k, klen, "prealloc") ? &c->prealloc
		     : key_is(k, klen, "virtio")   ? &c->virtio
		     : key_is(k, klen, "balloon")  ? &c->balloon
		     : key_is(k, klen, "devprecopy") ? &c->devprecopy
						   : NULL;
	if (flag) {
		static const char *const on[] = { "on", "yes", "true", "1" };
		static const char *const off[] = { "off", "no", "false", "0" };
		if (!has_v) {
			*flag = true;
			return 0;
		}
		for (unsigned i = 0; i < 4; i++) {
			if (key_is(v, vlen, on[i])) {
				*flag = true;
				return 0;
			}
			if (key_is(v, vlen, off[i])) {
				*flag = false;
				return 0;
			}
		}
		return fail(err, el, "bad value '%.*s' for %.*s (expected on or off)", vi, v, ki, k);
	}
	if (!key_is(k, klen, "mem") && !key_is(k, klen, "vram") && !key_is(k, klen, "vcpus") &&
	    !key_is(k, klen, "workload") && !key_is(k, klen, "rate") && !key_is(k, klen, "wss") &&
	    !key_is(k, klen, "fill") && !key_is(k, klen, "seed") && !key_is(k, klen, "throttle") &&
	    !key_is(k, klen, "alloc") && !key_is(k, klen, "devices") &&
	    !key_is(k, klen, "devmem") && !key_is(k, klen, "devrate"))
		return fail(err, el,
			    "unknown key '%.*s' (expected mem, vram, vcpus, workload, rate, wss, "
			    "fill, seed, throttle, alloc, paused, prealloc, virtio, balloon, "
			    "devices, devmem, devrate, devprecopy)",
			    ki, k);
	if (!has_v || !vlen)
		return fail(err, el, "missing value for '%.*s'", ki, k);

	if (key_is(k, klen, "devices") || key_is(k, klen, "devmem") || key_is(k, klen, "devrate"))
		return parse_dev_item(c, k, klen, v, vlen, err, el);
	if (key_is(k, klen, "mem") || key_is(k, klen, "vram") || key_is(k, klen, "wss")) {
		if (!parse_size(v, vlen, &n))
			return fail(err, el,
				    "bad size '%.*s' for %.*s (expected bytes with an optional K, M "
				    "or G suffix)",
				    vi, v, ki, k);
		if (k[0] == 'm')
			c->mem_size = n;
		else if (k[0] == 'v')
			c->vram_size = n;
		else
			c->wss = n;
		return 0;
	}
	if (key_is(k, klen, "rate")) {
		if (key_is(v, vlen, "max")) {
			c->rate = 0;
			return 0;
		}
		if (!parse_size(v, vlen, &n))
			return fail(err, el,
				    "bad rate '%.*s' (expected bytes/s with an optional K, M or G "
				    "suffix, or max)",
				    vi, v);
		c->rate = n;
		return 0;
	}
	if (key_is(k, klen, "vcpus")) {
		if (!parse_u64(v, vlen, &n))
			return fail(err, el, "bad number '%.*s' for vcpus", vi, v);
		if (n < 1 || n > FERRY_GUEST_MAX_VCPUS)
			return fail(err, el, "vcpus must be 1..%d (got %.*s)",
				    FERRY_GUEST_MAX_VCPUS, vi, v);
		c->vcpus = (unsigned)n;
		return 0;
	}
	if (key_is(k, klen, "alloc")) {
		if (!parse_u64(v, vlen, &n) || n > 100)
			return fail(err, el, "alloc must be a percentage 0..100 (got %.*s)", vi, v);
		c->alloc = (unsigned)n;
		return 0;
	}
	if (key_is(k, klen, "throttle")) {
		if (!parse_u64(v, vlen, &n))
			return fail(err, el, "bad number '%.*s' for throttle", vi, v);
		if (n > 99)
			return fail(err, el, "throttle must be 0..99 (got %.*s)", vi, v);
		c->throttle = (unsigned)n;
		return 0;
	}
	if (key_is(k, klen, "seed")) {
		if (!parse_u64(v, vlen, &n))
			return fail(err, el, "bad number '%.*s' for seed", vi, v);
		c->seed = n;
		return 0;
	}
	if (key_is(k, klen, "workload")) {
		for (unsigned i = 0; i < 5; i++) {
			if (key_is(v, vlen, workloads[i])) {
				c->workload = (ferry_workload)i;
				return 0;
			}
		}
		return fail(err, el,
			    "unknown workload '%.*s' (expected idle, stride, random, hotset, churn)",
			    vi, v);
	}
	/* fill */
	for (unsigned i = 0; i < 4; i++) {
		if (key_is(v, vlen, fills[i])) {
			c->fill = (ferry_fill)i;
			return 0;
		}
	}
	return fail(err, el, "unknown fill '%.*s' (expected none, zero, random, text)", vi, v);
}

int ferry_guest_config_parse(ferry_guest_config *cfg, const char *spec, char *err,
			     size_t err_len)
{
	if (err && err_len)
		err[0] = '\0';
	if (!cfg || !spec)
		return fail(err, err_len, "no guest spec");
	ferry_guest_config c = *cfg;
	const char *p = spec;
	while (*p) {
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));
		size_t klen = (size_t)((eq ? eq : end) - p);
		if (klen || eq) {
			if (!klen)
				return fail(err, err_len, "missing key before '=' in '%.*s'",
					    (int)(end - p), p);
			const char *v = eq ? eq + 1 : end;
			int r = parse_item(&c, p, klen, v, (size_t)(end - v), eq != NULL, err,
					   err_len);
			if (r < 0)
				return r;
		}
		p = *end ? end + 1 : end;
	}
	if (c.balloon)
		c.virtio = true; /* the driver's rings live in the virtio area */
	int r = ferry_guest_config_check(&c, err, err_len);
	if (r < 0)
		return r;
	*cfg = c;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Initial fill.                                                       */

/*
 * Text fill: lines of C-like code from small token tables. Tokens sit in
 * fixed 24-byte slots so that copying one is a constant-size memcpy (the
 * bytes past its length land in the slack and are overwritten next); one
 * PRNG call chooses a whole line. zstd -1 compresses it ~3.3x.
 */
struct tok {
	char s[24];
	uint32_t len;
};
#define T(str) { str, sizeof(str) - 1 }
static const struct tok text_words[64] = {
	T("page"),   T("block"),  T("offset"), T("len"),    T("buf"),    T("ret"),
	T("err"),    T("vm"),     T("ctx"),    T("node"),   T("list"),   T("count"),
	T("index"),  T("value"),  T("state"),  T("flags"),  T("lock"),   T("data"),
	T("ptr"),    T("next"),   T("prev"),   T("head"),   T("tail"),   T("size"),
	T("mask"),   T("addr"),   T("host"),   T("guest"),  T("ram"),    T("dirty"),
	T("bitmap"), T("chan"),   T("stream"), T("dev"),    T("vcpu"),   T("pass"),
	T("total"),  T("bytes"),  T("start"),  T("end"),    T("cur"),    T("entry"),
	T("key"),    T("name"),   T("fd"),     T("opaque"), T("status"), T("info"),
	T("src"),    T("dst"),    T("tmp"),    T("pos"),    T("nr"),     T("shift"),
	T("limit"),  T("timeout"), T("queue"), T("work"),   T("owner"),  T("ref"),
	T("slot"),   T("base"),   T("mig"),    T("rb"),
};
static const struct tok text_types[8] = {
	T("int"), T("uint64_t"), T("size_t"), T("char *"),
	T("bool"), T("struct page *"), T("unsigned"), T("void *"),
};
static const struct tok text_ops[8] = {
	T("=="), T("!="), T("<"), T(">"), T("<="), T(">="), T("&"), T("+"),
};
static const struct tok text_assign[8] = {
	T("="), T("+="), T("-="), T("|="), T("&="), T("^="), T("<<="), T(">>="),
};
static const struct tok text_calls[8] = {
	T("memcpy"), T("ferry_ram_mark_dirty"), T("list_add"), T("bitmap_set"),
	T("pthread_mutex_lock"), T("kfree"), T("update_stats"), T("chan_write"),
};
#undef T
#define TEXT_LINE_MAX 256 /* a line is < 150 bytes, plus 24 bytes of overwrite */

static inline char *put_num(char *p, unsigned v)
{
	char t[8];
	int i = 0;
	do {
		t[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (i)
		*p++ = t[--i];
	return p;
}

static inline char *put_tok(char *p, const struct tok *t)
{
	memcpy(p, t->s, sizeof(t->s));
	return p + t->len;
}

/*
 * Writes one line chosen by the 64 random bits r at p, which must have
 * TEXT_LINE_MAX bytes of room. Returns the end of the line.
 */
static char *text_line(char *p, uint64_t r)
{
#define PUTS(lit) (memcpy(p, lit, sizeof(lit) - 1), p += sizeof(lit) - 1)
#define PUTT(t) p = put_tok(p, &(t)) /* t evaluated once */
#define BITS(n) (r >>= (n), (unsigned)(r & ((1u << (n)) - 1)))
#define W() PUTT(text_words[BITS(6)])
	unsigned kind = (unsigned)(r & 15);
	unsigned indent = 1 + BITS(4) % 3;
	if (kind == 15) {
		*p++ = '\n';
		return p;
	}
	memcpy(p, "\t\t\t", 4);
	p += indent;
	switch (kind) {
	case 0: case 1:
		PUTT(text_types[BITS(3)]);
		PUTS(" ");
		W();
		PUTS(" = ");
		W();
		PUTS("(");
		W();
		PUTS(", ");
		W();
		PUTS(");\n");
		break;
	case 2: case 3:
		PUTS("if (");
		W();
		PUTS(" ");
		PUTT(text_ops[BITS(3)]);
		PUTS(" ");
		W();
		PUTS(")\n");
		break;
	case 4: case 5:
		W();
		PUTS("->");
		W();
		PUTS(" = ");
		p = put_num(p, BITS(12));
		PUTS(";\n");
		break;
	case 6:
		PUTS("return ");
		W();
		PUTS(";\n");
		break;
	case 7:
		PUTS("/* ");
		W();
		PUTS(" ");
		W();
		PUTS(" the ");
		W();
		PUTS(" of ");
		W();
		PUTS(". */\n");
		break;
	case 8:
		PUTS("for (");
		W();
		PUTS(" = 0; ");
		W();
		PUTS(" < ");
		p = put_num(p, BITS(8));
		PUTS("; ");
		W();
		PUTS("++) {\n");
		break;
	case 9: case 10:
		PUTT(text_calls[BITS(3)]);
		PUTS("(");
		W();
		PUTS(", ");
		W();
		PUTS(");\n");
		break;
	case 11:
		W();
		PUTS(" ");
		PUTT(text_assign[BITS(3)]);
		PUTS(" ");
		W();
		PUTS(";\n");
		break;
	case 12:
		PUTS("goto out;\n");
		break;
	default:
		PUTS("}\n");
		break;
	}
	return p;
#undef W
#undef BITS
#undef PUTT
#undef PUTS
}

static void fill_chunk(ferry_fill kind, uint64_t seed, unsigned block, uint64_t chunk,
		       uint8_t *p, size_t len)
{
	uint64_t s[4];
	switch (kind) {
	case FERRY_FILL_NONE:
		return;
	case FERRY_FILL_ZERO:
		/* Populate without writing twice; memset on old kernels. */
		if (madvise(p, len, MADV_POPULATE_WRITE) < 0)
			memset(p, 0, len);
		return;
	case FERRY_FILL_RANDOM: {
		prng_seed(s, seed, STREAM_FILL + block, chunk);
		uint64_t *q = (uint64_t *)(void *)p;
		for (size_t i = 0; i < len / 8; i++)
			q[i] = prng_next(s);
		return;
	}
	case FERRY_FILL_TEXT: {
		/* Lines run on across pages; the last one is cut at the chunk end. */
		prng_seed(s, seed, STREAM_FILL + block, chunk);
		char *o = (char *)p, *end = (char *)p + len;
		while (end - o >= TEXT_LINE_MAX)
			o = text_line(o, prng_next(s));
		char tail[2 * TEXT_LINE_MAX];
		char *t = tail;
		while (t - tail < end - o)
			t = text_line(t, prng_next(s));
		memcpy(o, tail, (size_t)(end - o));
		return;
	}
	}
}

struct fill_job {
	ferry_guest_t *g;
	uint64_t nchunks[2];
	uint64_t total;
	atomic_uint_fast64_t next;
};

static void *fill_worker(void *arg)
{
	struct fill_job *j = arg;
	ferry_guest_t *g = j->g;
	for (;;) {
		uint64_t c = atomic_fetch_add(&j->next, 1);
		if (c >= j->total)
			return NULL;
		unsigned b = 0;
		if (c >= j->nchunks[0]) {
			c -= j->nchunks[0];
			b = 1;
		}
		struct guest_ram *r = &g->ram[b];
		uint64_t off = c * FILL_CHUNK;
		uint64_t len = r->size - off < FILL_CHUNK ? r->size - off : FILL_CHUNK;
		fill_chunk(g->cfg.fill, g->cfg.seed, b, c, r->host + off, len);
	}
}

/*
 * Fills every block. The result does not depend on the thread count: each
 * 2 MiB chunk is a function of (fill, seed, block, chunk index).
 */
static void guest_fill(ferry_guest_t *g)
{
	if (g->cfg.fill == FERRY_FILL_NONE)
		return;
	struct fill_job j = { .g = g };
	for (unsigned b = 0; b < g->nram; b++) {
		j.nchunks[b] = (g->ram[b].size + FILL_CHUNK - 1) / FILL_CHUNK;
		j.total += j.nchunks[b];
	}
	atomic_init(&j.next, 0);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t nthr = ncpu > 1 ? (uint64_t)ncpu : 1;
	if (nthr > FILL_MAX_THREADS)
		nthr = FILL_MAX_THREADS;
	if (nthr > j.total)
		nthr = j.total;
	pthread_t th[FILL_MAX_THREADS];
	unsigned started = 0;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (uint64_t i = 1; i < nthr; i++) {
		if (pthread_create(&th[started], NULL, fill_worker, &j))
			break; /* the calling thread does the remaining chunks */
		pthread_setname_np(th[started], "guest/fill");
		started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	fill_worker(&j);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
}

/*
 * Pages of meta needed at the start of a working set of w pages: the
 * header and one u32 per managed page, n = w - meta.
 */
static uint64_t churn_meta_pages(uint64_t w)
{
	return (sizeof(struct churn_meta) + 4 * w + PAGE + 4 - 1) / (PAGE + 4);
}

/*
 * The initial state that is part of the guest's definition (not for an
 * incoming guest: it arrives by migration): every churn page free, in
 * order; the virtio area zeroed.
 */
static void guest_init_state(ferry_guest_t *g)
{
	if (g->cfg.workload == FERRY_WL_CHURN) {
		for (unsigned i = 0; i < g->nvcpus; i++) {
			guest_vcpu *v = &g->vcpus[i];
			struct churn_meta *m = (void *)v->base;
			m->magic = CHURN_MAGIC;
			m->npages = v->churn_n;
			m->first = v->churn_first;
			/* cfg.alloc percent start allocated, holding the initial fill. */
			m->nalloc = v->churn_n * g->cfg.alloc / 100;
			for (uint64_t p = 0; p < v->churn_n; p++)
				m->perm[p] = (uint32_t)p;
		}
	}
	if (g->cfg.virtio)
		memset(g->ram[0].host + g->usable_pages * PAGE, 0, FERRY_GUEST_VIRTIO_SIZE);
}

/* ------------------------------------------------------------------ */
/* The step function: shared by the vCPU threads and the oracle.       */

struct step_ctx {
	uint8_t *base;       /* slice start */
	uint64_t slice_off;  /* slice offset in pc.ram, for mark_dirty */
	uint64_t wss;        /* working set pages, >= 1 */
	uint64_t hot;        /* hotset: hot pages, >= 1 */
	ferry_ram_block_t *rb;
	uint64_t churn_n;    /* churn: managed pages, >= 1 */
	uint8_t *churn_pages; /* churn: managed page 0 */
	pthread_mutex_t *churn_lock;
};

/*
 * Stride step k: page p = k % wss, byte ((k / wss) * 64) % 4096 of it. The
 * caller passes p and q = k / wss, kept incrementally (no divisions).
 */
static inline void step_stride(const struct step_ctx *c, uint64_t p, uint64_t q)
{
	uint64_t off = p * PAGE + (q * 64) % PAGE;
	c->base[off]++;
	if (c->rb)
		ferry_ram_mark_dirty(c->rb, c->slice_off + off, 1);
}

static inline void step_write8(const struct step_ctx *c, uint64_t s[4], uint64_t k, uint64_t p)
{
	uint64_t off = p * PAGE + (prng_next(s) % 512) * 8;
	uint64_t val = prng_next(s) ^ k;
	memcpy(c->base + off, &val, 8);
	if (c->rb)
		ferry_ram_mark_dirty(c->rb, c->slice_off + off, 8);
}

static inline void step_random(const struct step_ctx *c, uint64_t s[4], uint64_t k)
{
	step_write8(c, s, k, prng_next(s) % c->wss);
}

static inline void step_hotset(const struct step_ctx *c, uint64_t s[4], uint64_t k)
{
	uint64_t p;
	if (prng_next(s) % 100 < 80 || c->hot >= c->wss)
		p = prng_next(s) % c->hot;
	else
		p = c->hot + prng_next(s) % (c->wss - c->hot);
	step_write8(c, s, k, p);
}

static inline void mark(const struct step_ctx *c, const void *p, uint64_t len)
{
	if (c->rb)
		ferry_ram_mark_dirty(c->rb, c->slice_off + (uint64_t)((const uint8_t *)p - c->base),
				     len);
}

static inline void swap_u32(uint32_t *a, uint32_t *b)
{
	uint32_t t = *a;
	*a = *b;
	*b = t;
}

/*
 * Churn step k. Page numbers read from RAM are reduced modulo n: a bad
 * migration stream must not make a vCPU write outside its working set.
 */
static inline void step_churn(const struct step_ctx *c, uint64_t s[4], uint64_t k)
{
	struct churn_meta *m = (void *)c->base;
	const uint64_t n = c->churn_n;
	pthread_mutex_lock(c->churn_lock);
	const uint64_t na = m->nalloc < n ? m->nalloc : n;
	unsigned op = (unsigned)(prng_next(s) % 8);
	if (op < 2)
		op = na < n ? 0 : 1;
	else if (op < 4)
		op = na ? 1 : 0;
	else
		op = na ? 2 : 0;
	if (op == 0) { /* allocate, then initialise the whole page */
		uint64_t j = na + prng_next(s) % (n - na);
		swap_u32(&m->perm[na], &m->perm[j]);
		uint64_t *q = (void *)(c->churn_pages + (m->perm[na] % n) * PAGE);
		const uint64_t v = (k + 1) * 0x9e3779b97f4a7c15ull;
		for (unsigned i = 0; i < PAGE / 8; i++)
			q[i] = v ^ (i * 0xd1b54a32d192ed03ull);
		m->nalloc = na + 1;
		mark(c, q, PAGE);
		mark(c, &m->perm[na], 4);
		mark(c, &m->perm[j], 4);
	} else if (op == 1) { /* free: contents left as they are */
		uint64_t j = prng_next(s) % na;
		swap_u32(&m->perm[j], &m->perm[na - 1]);
		m->nalloc = na - 1;
		mark(c, &m->perm[j], 4);
		mark(c, &m->perm[na - 1], 4);
	} else { /* write 8 bytes of an allocated page */
		uint8_t *pg = c->churn_pages + (m->perm[prng_next(s) % na] % n) * PAGE;
		uint64_t off = (prng_next(s) % 512) * 8;
		uint64_t val = prng_next(s) ^ k;
		memcpy(pg + off, &val, 8);
		mark(c, pg + off, 8);
	}
	mark(c, m, sizeof(*m));
	pthread_mutex_unlock(c->churn_lock);
}

#define STEP_LOOP(body)                                                              \
	for (i = 0; i < n; i++) {                                                    \
		if (stop && atomic_load_explicit(stop, memory_order_relaxed))        \
			break;                                                       \
		body;                                                                \
		if (devs)                                                            \
			ferry_guest_devs_step(devs, v->index, k0 + i, st[0]);        \
	}

/*
 * Runs up to n steps of v starting at step k0 with PRNG state s (updated),
 * each followed by the live devices' step when devs is not NULL. Checks
 * *stop (if not NULL) before every step. Returns the steps done. Always
 * inlined, so that exec_steps' devs == NULL copy has neither the branch
 * nor the call in its loops: a guest without devices steps as fast as
 * before they existed.
 */
static inline __attribute__((always_inline)) uint64_t
run_steps(guest_vcpu *v, uint64_t s[4], uint64_t k0, uint64_t n, const atomic_int *stop,
	  guest_devs *devs)
{
	const struct step_ctx c = {
		.base = v->base,
		.slice_off = v->l_slice_offset,
		.wss = v->l_wss_pages,
		.hot = v->l_wss_pages / 5 ? v->l_wss_pages / 5 : 1,
		.rb = v->rb,
		.churn_n = v->churn_n,
		.churn_pages = v->base + v->churn_first * PAGE,
		.churn_lock = &v->churn_lock,
	};
	uint64_t st[4] = { s[0], s[1], s[2], s[3] };
	uint64_t i;
	switch ((ferry_workload)v->g->cfg.workload) {
	case FERRY_WL_STRIDE: {
		uint64_t p = k0 % c.wss, q = k0 / c.wss;
		STEP_LOOP(step_stride(&c, p, q); if (++p == c.wss) { p = 0; q++; });
		break;
	}
	case FERRY_WL_RANDOM:
		STEP_LOOP(step_random(&c, st, k0 + i));
		break;
	case FERRY_WL_HOTSET:
		STEP_LOOP(step_hotset(&c, st, k0 + i));
		break;
	case FERRY_WL_CHURN:
		STEP_LOOP(step_churn(&c, st, k0 + i));
		break;
	case FERRY_WL_IDLE:
	default:
		STEP_LOOP((void)0);
		break;
	}
	memcpy(s, st, sizeof(st));
	return i;
}

static uint64_t exec_steps(guest_vcpu *v, uint64_t s[4], uint64_t k0, uint64_t n,
			   const atomic_int *stop)
{
	guest_devs *devs = v->g->devs;
	return devs ? run_steps(v, s, k0, n, stop, devs) : run_steps(v, s, k0, n, stop, NULL);
}

/* ------------------------------------------------------------------ */
/* vCPU threads.                                                       */

/* Sleeps until deadline (CLOCK_MONOTONIC ns), a stop, or a wake. */
static void nap_until(ferry_guest_t *g, uint64_t deadline)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline / NS_PER_S),
			       .tv_nsec = (long)(deadline % NS_PER_S) };
	pthread_mutex_lock(&g->lock);
	unsigned gen = g->wake_gen;
	while (!atomic_load_explicit(&g->stop_req, memory_order_relaxed) && gen == g->wake_gen) {
		if (pthread_cond_timedwait(&g->cond_wake, &g->lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&g->lock);
}

static inline bool stop_requested(ferry_guest_t *g)
{
	return atomic_load_explicit(&g->stop_req, memory_order_relaxed);
}

/* Runs v until its target or a stop; the state is in locals meanwhile. */
static void vcpu_run(guest_vcpu *v, uint64_t target)
{
	ferry_guest_t *g = v->g;
	uint64_t s[4];
	memcpy(s, v->prng, sizeof(s));
	uint64_t k = v->steps;
	/* ns per step at cfg.rate bytes/s, one page per step; 0 = unpaced. */
	uint64_t ns_per_step = 0;
	if (g->cfg.rate)
		ns_per_step = (uint64_t)((double)PAGE * (double)NS_PER_S / (double)g->cfg.rate);
	uint64_t pace_chunk = STEP_CHUNK;
	if (ns_per_step) {
		pace_chunk = 1000000 / ns_per_step; /* ~1 ms of steps */
		pace_chunk = pace_chunk < 1 ? 1 : pace_chunk > STEP_CHUNK ? STEP_CHUNK : pace_chunk;
	}
	uint64_t t = now_ns(), pace = t, period = t;

	while (k < target) {
		unsigned thr = atomic_load_explicit(&g->throttle, memory_order_relaxed);
		unsigned mthr = atomic_load_explicit(&g->mig_throttle, memory_order_relaxed);
		if (mthr > thr)
			thr = mthr;
		uint64_t chunk = pace_chunk;
		if (thr && chunk > THROTTLE_CHUNK)
			chunk = THROTTLE_CHUNK;
		uint64_t n = target - k < chunk ? target - k : chunk;
		uint64_t done = exec_steps(v, s, k, n, &g->stop_req);
		k += done;
		__atomic_store_n(&v->steps, k, __ATOMIC_RELAXED);
		if (done < n)
			break; /* stop requested */
		if (!ns_per_step && !thr)
			continue;
		t = now_ns();
		if (thr) {
			if (t - period >= THROTTLE_RUN_NS) {
				nap_until(g, t + THROTTLE_RUN_NS * thr / (100 - thr));
				t = now_ns();
				period = t;
			}
		} else {
			period = t;
		}
		if (ns_per_step) {
			pace += done * ns_per_step;
			while (pace > t && !stop_requested(g)) {
				nap_until(g, pace);
				t = now_ns();
			}
			if (t - pace > PACE_BURST_NS)
				pace = t - PACE_BURST_NS;
		}
		if (stop_requested(g))
			break;
	}
	memcpy(v->prng, s, sizeof(s));
	__atomic_store_n(&v->steps, k, __ATOMIC_RELAXED);
}

static bool vcpu_may_run(const ferry_guest_t *g, const guest_vcpu *v)
{
	return g->want_run && v->steps < v->target && g->cfg.workload != FERRY_WL_IDLE;
}

int ferry_guest_vcpu_tid(ferry_guest_t *g, unsigned i)
{
	if (i >= g->nvcpus || !g->vcpus[i].thread_ok)
		return -1;
	pthread_mutex_lock(&g->lock);
	while (!g->vcpus[i].tid)
		pthread_cond_wait(&g->cond_ack, &g->lock);
	pid_t tid = g->vcpus[i].tid;
	pthread_mutex_unlock(&g->lock);
	return tid;
}

static void *vcpu_thread(void *arg)
{
	guest_vcpu *v = arg;
	ferry_guest_t *g = v->g;
	pthread_mutex_lock(&g->lock);
	v->tid = gettid();
	pthread_cond_broadcast(&g->cond_ack);
	for (;;) {
		while (!g->quit && !vcpu_may_run(g, v))
			pthread_cond_wait(&g->cond_run, &g->lock);
		if (g->quit)
			break;
		v->parked = false;
		uint64_t target = v->target;
		pthread_mutex_unlock(&g->lock);
		vcpu_run(v, target);
		pthread_mutex_lock(&g->lock);
		v->parked = true;
		pthread_cond_broadcast(&g->cond_ack);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Run control.                                                        */

static bool all_parked(const ferry_guest_t *g)
{
	for (unsigned i = 0; i < g->nvcpus; i++)
		if (!g->vcpus[i].parked)
			return false;
	return !g->act_ok || g->act_parked;
}

/* Caller holds g->ctl and g->lock. */
static void stop_locked(ferry_guest_t *g)
{
	__atomic_store_n(&g->want_run, false, __ATOMIC_RELAXED);
	atomic_store(&g->stop_req, 1);
	pthread_cond_broadcast(&g->cond_wake);
	while (!all_parked(g))
		pthread_cond_wait(&g->cond_ack, &g->lock);
	for (unsigned i = 0; i < g->nvcpus; i++)
		g->vcpus[i].target = UINT64_MAX;
}

int ferry_guest_stop(ferry_guest_t *g)
{
	if (!g)
		return -EINVAL;
	pthread_mutex_lock(&g->ctl);
	pthread_mutex_lock(&g->lock);
	stop_locked(g);
	pthread_mutex_unlock(&g->lock);
	pthread_mutex_unlock(&g->ctl);
	return 0;
}

int ferry_guest_start(ferry_guest_t *g)
{
	if (!g)
		return -EINVAL;
	pthread_mutex_lock(&g->ctl);
	pthread_mutex_lock(&g->lock);
	if (!g->want_run) {
		for (unsigned i = 0; i < g->nvcpus; i++)
			g->vcpus[i].target = UINT64_MAX;
		atomic_store(&g->stop_req, 0);
		__atomic_store_n(&g->want_run, true, __ATOMIC_RELAXED);
		pthread_cond_broadcast(&g->cond_run);
	}
	pthread_mutex_unlock(&g->lock);
	pthread_mutex_unlock(&g->ctl);
	return 0;
}

bool ferry_guest_running(const ferry_guest_t *g)
{
	return g && __atomic_load_n(&g->want_run, __ATOMIC_RELAXED);
}

int ferry_guest_run_until(ferry_guest_t *g, const uint64_t *targets)
{
	return ferry_guest_run_until_ex(g, targets, NULL);
}

int ferry_guest_run_until_ex(ferry_guest_t *g, const uint64_t *targets, const atomic_bool *cancel)
{
	if (!g || !targets)
		return -EINVAL;
	int r = 0;
	pthread_mutex_lock(&g->ctl);
	pthread_mutex_lock(&g->lock);
	stop_locked(g);
	if (cancel && atomic_load(cancel)) {
		r = -EINTR;
		goto out;
	}
	if (g->cfg.workload == FERRY_WL_IDLE) {
		for (unsigned i = 0; i < g->nvcpus; i++)
			if (targets[i] > g->vcpus[i].steps)
				r = -EINVAL; /* idle vCPUs never step */
		goto out;
	}
	bool any = false;
	for (unsigned i = 0; i < g->nvcpus; i++) {
		g->vcpus[i].target = targets[i];
		any |= targets[i] > g->vcpus[i].steps;
	}
	if (!any)
		goto out;
	atomic_store(&g->stop_req, 0);
	__atomic_store_n(&g->want_run, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&g->cond_run);
	for (;;) {
		bool done = true;
		for (unsigned i = 0; i < g->nvcpus && done; i++) {
			guest_vcpu *v = &g->vcpus[i];
			done = v->parked && v->steps >= v->target;
		}
		if (done)
			break;
		/* Read under g->lock: ferry_guest_kick() takes it after the store. */
		if (cancel && atomic_load(cancel)) {
			r = -EINTR;
			break;
		}
		pthread_cond_wait(&g->cond_ack, &g->lock);
	}
	stop_locked(g);
out:
	pthread_mutex_unlock(&g->lock);
	pthread_mutex_unlock(&g->ctl);
	return r;
}

void ferry_guest_kick(ferry_guest_t *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	pthread_cond_broadcast(&g->cond_ack);
	pthread_mutex_unlock(&g->lock);
}

static int set_throttle(ferry_guest_t *g, _Atomic unsigned *which, unsigned percent)
{
	if (!g || percent > 99)
		return -EINVAL;
	pthread_mutex_lock(&g->lock);
	atomic_store(which, percent);
	g->wake_gen++;
	pthread_cond_broadcast(&g->cond_wake);
	pthread_mutex_unlock(&g->lock);
	return 0;
}

int ferry_guest_set_throttle(ferry_guest_t *g, unsigned percent)
{
	return g ? set_throttle(g, &g->throttle, percent) : -EINVAL;
}

int ferry_guest_set_mig_throttle(ferry_guest_t *g, unsigned percent)
{
	return g ? set_throttle(g, &g->mig_throttle, percent) : -EINVAL;
}

unsigned ferry_guest_mig_throttle(const ferry_guest_t *g)
{
	return atomic_load(&g->mig_throttle);
}

void ferry_guest_steps(const ferry_guest_t *g, uint64_t *steps)
{
	for (unsigned i = 0; i < g->nvcpus; i++)
		steps[i] = __atomic_load_n(&g->vcpus[i].steps, __ATOMIC_RELAXED);
}

unsigned ferry_guest_vcpus(const ferry_guest_t *g)
{
	return g->nvcpus;
}

const ferry_guest_config *ferry_guest_get_config(const ferry_guest_t *g)
{
	return &g->cfg;
}

int ferry_guest_vcpu_exec(ferry_guest_t *g, unsigned i, uint64_t n)
{
	if (!g || i >= g->nvcpus)
		return -EINVAL;
	int r = 0;
	pthread_mutex_lock(&g->ctl);
	if (ferry_guest_running(g)) {
		r = -EBUSY;
	} else {
		guest_vcpu *v = &g->vcpus[i];
		uint64_t done = exec_steps(v, v->prng, v->steps, n, NULL);
		__atomic_store_n(&v->steps, v->steps + done, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&g->ctl);
	return r;
}

void ferry_guest_vcpu_state(const ferry_guest_t *g, unsigned i, uint64_t *steps,
			    uint64_t prng[4])
{
	const guest_vcpu *v = &g->vcpus[i];
	if (steps)
		*steps = __atomic_load_n(&v->steps, __ATOMIC_RELAXED);
	if (prng)
		memcpy(prng, v->prng, sizeof(v->prng));
}

/* ------------------------------------------------------------------ */
/* RAM.                                                                */

unsigned ferry_guest_ram_count(const ferry_guest_t *g)
{
	return g->nram;
}

void ferry_guest_ram(const ferry_guest_t *g, unsigned i, const char **name, uint8_t **host,
		     uint64_t *size)
{
	const struct guest_ram *r = i < g->nram ? &g->ram[i] : NULL;
	if (name)
		*name = r ? r->name : NULL;
	if (host)
		*host = r ? r->host : NULL;
	if (size)
		*size = r ? r->size : 0;
}

int ferry_guest_ram_fd(const ferry_guest_t *g, unsigned i)
{
	return i < g->nram ? g->ram[i].fd : -1;
}

static int ram_create(struct guest_ram *r, const char *name, uint64_t size)
{
	char fdname[64];
	r->name = name;
	r->size = size;
	r->fd = -1;
	r->host = NULL;
	if ((uint64_t)(size_t)size != size || (uint64_t)(off_t)size != size)
		return -ENOMEM;
	snprintf(fdname, sizeof(fdname), "ferry-guest:%s", name);
	r->fd = memfd_create(fdname, MFD_CLOEXEC);
	if (r->fd < 0)
		return -errno;
	if (ftruncate(r->fd, (off_t)size) < 0)
		return -errno;
	void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	r->host = p;
	/*
	 * Transparent huge pages where the host allows them for shmem
	 * (shmem_enabled=advise): a first touch then costs one fault per 2 MiB
	 * instead of 512, which is what limits an incoming migration here.
	 * Without that setting the advice is ignored.
	 */
	madvise(p, (size_t)size, MADV_HUGEPAGE);
	return 0;
}

struct prealloc_job {
	uint8_t *p;
	size_t len;
};

static void *prealloc_worker(void *arg)
{
	struct prealloc_job *j = arg;
	pthread_setname_np(pthread_self(), "guest/prealloc");
	/*
	 * A write to each page from user space, not MADV_POPULATE_WRITE: on a
	 * machine that is itself a VM with shadow paging, the kernel's populate
	 * leaves the user mapping to be built at the first user access, so
	 * the migration would still pay it (measured: POPULATE_WRITE 0.35 s
	 * per GiB, then writes into those pages at 0.6 GB/s; user writes 3.9 s
	 * per GiB, then 16 GB/s). Elsewhere both cost about the same.
	 */
	for (size_t o = 0; o < j->len; o += 4096)
		((volatile uint8_t *)j->p)[o] = 0;
	return NULL;
}

/*
 * Populates every RAM page now (QEMU's prealloc=on), split over two
 * threads: an incoming guest then receives pages into memory that is
 * already allocated instead of faulting each page in during migration.
 */
static void ram_prealloc(ferry_guest_t *g)
{
	for (unsigned i = 0; i < g->nram; i++) {
		struct guest_ram *r = &g->ram[i];
		size_t half = (size_t)(r->size / 2) & ~(size_t)4095;
		struct prealloc_job a = { r->host, half }, b = { r->host + half, (size_t)r->size - half };
		pthread_t t;
		bool threaded = half && pthread_create(&t, NULL, prealloc_worker, &b) == 0;
		prealloc_worker(&a);
		if (threaded)
			pthread_join(t, NULL);
		else
			prealloc_worker(&b);
	}
}

int ferry_guest_reset(ferry_guest_t *g)
{
	if (!g)
		return -EINVAL;
	int r = 0;
	pthread_mutex_lock(&g->ctl);
	if (ferry_guest_running(g)) {
		r = -EBUSY;
		goto out;
	}
	for (unsigned i = 0; i < g->nram && r == 0; i++) {
		struct guest_ram *ram = &g->ram[i];
		/* Frees the pages; the mapping stays and reads zeros from now on. */
		if (fallocate(ram->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			      (off_t)ram->size) < 0)
			r = -errno;
	}
	if (r)
		goto out;
	if (!g->incoming) {
		guest_fill(g);
		guest_init_state(g);
	} else if (g->cfg.prealloc) {
		ram_prealloc(g);
	}
	ferry_guest_devs_reset(g->devs, g->incoming);
	pthread_mutex_lock(&g->lock);
	for (unsigned i = 0; i < g->nvcpus; i++) {
		guest_vcpu *v = &g->vcpus[i];
		__atomic_store_n(&v->steps, 0, __ATOMIC_RELAXED);
		prng_seed(v->prng, g->cfg.seed, STREAM_VCPU, i);
		v->workload = (uint32_t)g->cfg.workload;
		v->seed = g->cfg.seed;
		v->slice_offset = v->l_slice_offset;
		v->slice_pages = v->l_slice_pages;
		v->wss_pages = v->l_wss_pages;
		v->target = UINT64_MAX;
	}
	pthread_mutex_unlock(&g->lock);
out:
	pthread_mutex_unlock(&g->ctl);
	return r;
}

/* ------------------------------------------------------------------ */
/* Create / destroy.                                                   */

void ferry_guest_destroy(ferry_guest_t *g)
{
	if (!g)
		return;
	if (g->vcpus) {
		pthread_mutex_lock(&g->lock);
		g->quit = true;
		atomic_store(&g->stop_req, 1);
		pthread_cond_broadcast(&g->cond_run);
		pthread_cond_broadcast(&g->cond_wake);
		pthread_mutex_unlock(&g->lock);
		for (unsigned i = 0; i < g->nvcpus; i++)
			if (g->vcpus[i].thread_ok)
				pthread_join(g->vcpus[i].thread, NULL);
		if (g->act_ok)
			pthread_join(g->act_thread, NULL);
		for (unsigned i = 0; i < g->nvcpus; i++)
			pthread_mutex_destroy(&g->vcpus[i].churn_lock);
		free(g->vcpus);
	}
	ferry_guest_devs_destroy(g->devs);
	for (unsigned i = 0; i < g->nram; i++) {
		if (g->ram[i].host)
			munmap(g->ram[i].host, (size_t)g->ram[i].size);
		if (g->ram[i].fd >= 0)
			close(g->ram[i].fd);
	}
	pthread_cond_destroy(&g->cond_run);
	pthread_cond_destroy(&g->cond_ack);
	pthread_cond_destroy(&g->cond_wake);
	pthread_mutex_destroy(&g->lock);
	pthread_mutex_destroy(&g->ctl);
	free(g);
}

int ferry_guest_create(const ferry_guest_config *cfg, bool incoming, ferry_guest_t **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (ferry_guest_config_check(cfg, NULL, 0) < 0)
		return -EINVAL;
	ferry_guest_t *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->cfg = *cfg;
	g->incoming = incoming;
	pthread_mutex_init(&g->ctl, NULL);
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond_run, NULL);
	pthread_cond_init(&g->cond_ack, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond_wake, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&g->stop_req, 1);
	atomic_init(&g->throttle, cfg->throttle);
	atomic_init(&g->mig_throttle, 0);

	int r = ram_create(&g->ram[g->nram++], "pc.ram", cfg->mem_size);
	if (r == 0 && cfg->vram_size)
		r = ram_create(&g->ram[g->nram++], "vga.vram", cfg->vram_size);
	if (r < 0)
		goto fail;
	if (!incoming)
		guest_fill(g);
	else if (cfg->prealloc)
		ram_prealloc(g);
	if ((r = ferry_guest_devs_create(cfg, incoming, &g->devs)) < 0)
		goto fail;

	void *mem = NULL;
	if (posix_memalign(&mem, 64, sizeof(guest_vcpu) * cfg->vcpus)) {
		r = -ENOMEM;
		goto fail;
	}
	memset(mem, 0, sizeof(guest_vcpu) * cfg->vcpus);
	g->vcpus = mem;
	g->nvcpus = cfg->vcpus;
	g->usable_pages = cfg->mem_size / PAGE - (cfg->virtio ? FERRY_GUEST_VIRTIO_SIZE / PAGE : 0);
	const uint64_t pages = g->usable_pages;
	const uint64_t slice = pages / cfg->vcpus;
	for (unsigned i = 0; i < g->nvcpus; i++) {
		guest_vcpu *v = &g->vcpus[i];
		v->g = g;
		v->index = i;
		v->l_slice_offset = (uint64_t)i * slice * PAGE;
		v->l_slice_pages = i + 1 == g->nvcpus ? pages - (uint64_t)i * slice : slice;
		v->l_wss_pages = v->l_slice_pages;
		if (cfg->wss && cfg->wss / PAGE < v->l_wss_pages)
			v->l_wss_pages = cfg->wss / PAGE;
		v->base = g->ram[0].host + v->l_slice_offset;
		v->steps = 0;
		prng_seed(v->prng, cfg->seed, STREAM_VCPU, i);
		v->workload = (uint32_t)cfg->workload;
		v->seed = cfg->seed;
		v->slice_offset = v->l_slice_offset;
		v->slice_pages = v->l_slice_pages;
		v->wss_pages = v->l_wss_pages;
		v->target = UINT64_MAX;
		v->parked = true;
		if (cfg->workload == FERRY_WL_CHURN) {
			v->churn_first = churn_meta_pages(v->l_wss_pages);
			v->churn_n = v->l_wss_pages - v->churn_first;
		}
		pthread_mutex_init(&v->churn_lock, NULL);
	}
	if (!incoming)
		guest_init_state(g);

	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < g->nvcpus && r == 0; i++) {
		guest_vcpu *v = &g->vcpus[i];
		r = -pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (r == 0) {
			char name[24]; /* "guest/vcpu63" fits the 16 bytes of a thread name */
			v->thread_ok = true;
			snprintf(name, sizeof(name), "guest/vcpu%u", i);
			pthread_setname_np(v->thread, name);
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0)
		goto fail;
	*out = g;
	return 0;
fail:
	ferry_guest_destroy(g);
	return r;
}

/* ------------------------------------------------------------------ */
/* libferry registration.                                              */

/* Thread: a migration thread, while the vCPUs are stopped. */
static int vcpu_post_load(void *opaque, uint32_t version)
{
	guest_vcpu *v = opaque;
	const ferry_guest_t *g = v->g;
	(void)version;
	bool ok = v->workload == (uint32_t)g->cfg.workload && v->seed == g->cfg.seed &&
		  v->slice_offset == v->l_slice_offset && v->slice_pages == v->l_slice_pages &&
		  v->wss_pages == v->l_wss_pages;
	if (ok)
		return 0;
	/* Keep the local layout; the migration fails. */
	v->workload = (uint32_t)g->cfg.workload;
	v->seed = g->cfg.seed;
	v->slice_offset = v->l_slice_offset;
	v->slice_pages = v->l_slice_pages;
	v->wss_pages = v->l_wss_pages;
	return FERRY_EMISMATCH; /* already negative */
}

static const ferry_field vcpu_fields[] = {
	FERRY_FIELD_U64(guest_vcpu, steps),
	FERRY_FIELD_U64_ARRAY(guest_vcpu, prng),
	FERRY_FIELD_U32(guest_vcpu, workload),
	FERRY_FIELD_U64(guest_vcpu, seed),
	FERRY_FIELD_U64(guest_vcpu, slice_offset),
	FERRY_FIELD_U64(guest_vcpu, slice_pages),
	FERRY_FIELD_U64(guest_vcpu, wss_pages),
	FERRY_FIELD_END,
};

static const ferry_vmsd vcpu_vmsd = {
	.name = "cpu",
	.version = 1,
	.min_version = 1,
	.fields = vcpu_fields,
	.post_load = vcpu_post_load,
};

const ferry_vmsd *ferry_guest_vcpu_vmsd(void)
{
	return &vcpu_vmsd;
}

void *ferry_guest_vcpu_opaque(ferry_guest_t *g, unsigned i)
{
	return i < g->nvcpus ? &g->vcpus[i] : NULL;
}

static int op_stop(void *opaque)
{
	return ferry_guest_stop(opaque);
}

static int op_start(void *opaque)
{
	return ferry_guest_start(opaque);
}

static int op_set_throttle(void *opaque, int percent)
{
	if (percent < 0)
		return -EINVAL;
	return ferry_guest_set_mig_throttle(opaque, (unsigned)percent);
}

static const ferry_vcpu_ops guest_vcpu_ops = {
	.stop = op_stop,
	.start = op_start,
	.set_throttle = op_set_throttle,
};

/* The vCPU threads' ids, for libferry's per-vCPU postcopy statistics. */
static int register_vcpu_threads(ferry_guest_t *g, ferry_vm_t *vm)
{
	pid_t tids[FERRY_POSTCOPY_MAX_VCPUS];
	unsigned n = g->nvcpus < FERRY_POSTCOPY_MAX_VCPUS ? g->nvcpus : FERRY_POSTCOPY_MAX_VCPUS;
	for (unsigned i = 0; i < n; i++) {
		int tid = ferry_guest_vcpu_tid(g, i);
		if (tid < 0)
			return 0; /* no thread (yet): every fault counts as a non-vCPU one */
		tids[i] = tid;
	}
	return ferry_vm_set_vcpu_threads(vm, tids, n);
}

/*
 * Thread: the control thread, with the guest stopped and no migration
 * running. libferry is called without g->ctl held (its locks are outer).
 * On failure the VM holds a partial registration: destroy it.
 */
int ferry_guest_attach(ferry_guest_t *g, ferry_vm_t *vm)
{
	if (!g || !vm)
		return -EINVAL;
	pthread_mutex_lock(&g->ctl);
	int r = g->vm ? -EALREADY : ferry_guest_running(g) ? -EBUSY : 0;
	pthread_mutex_unlock(&g->ctl);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < g->nram; i++) {
		struct guest_ram *ram = &g->ram[i];
		r = ferry_ram_block_add(vm, ram->name, ram->host, ram->size, ram->fd, &ram->rb);
		if (r < 0)
			return r;
	}
	for (unsigned i = 0; i < g->nvcpus; i++) {
		r = ferry_device_register(vm, "cpu", i, &vcpu_vmsd, &g->vcpus[i]);
		if (r < 0)
			return r;
	}
	if ((r = ferry_guest_devs_attach(g->devs, vm)) < 0)
		return r;
	r = ferry_vm_set_vcpu_ops(vm, &guest_vcpu_ops, g);
	if (r < 0)
		return r;
	if ((r = register_vcpu_threads(g, vm)) < 0)
		return r;
	bool explicit_dirty = ferry_vm_dirty_mode(vm) == FERRY_DIRTY_EXPLICIT;
	pthread_mutex_lock(&g->ctl);
	pthread_mutex_lock(&g->lock);
	for (unsigned i = 0; i < g->nvcpus; i++)
		g->vcpus[i].rb = explicit_dirty ? g->ram[0].rb : NULL;
	g->vm = vm;
	pthread_mutex_unlock(&g->lock);
	pthread_mutex_unlock(&g->ctl);
	return 0;
}

unsigned ferry_guest_dev_count(const ferry_guest_t *g)
{
	return ferry_guest_devs_count(g->devs);
}

void ferry_guest_dev_mem(const ferry_guest_t *g, unsigned i, uint8_t **host, uint64_t *size)
{
	ferry_guest_devs_mem(g->devs, i, host, size);
}

int ferry_guest_dev_state(const ferry_guest_t *g, unsigned i)
{
	return ferry_guest_devs_state(g->devs, i);
}

ferry_vm_t *ferry_guest_vm(const ferry_guest_t *g)
{
	return g ? g->vm : NULL;
}

ferry_ram_block_t *ferry_guest_ram_block(const ferry_guest_t *g, unsigned i)
{
	return g && i < g->nram ? g->ram[i].rb : NULL;
}

/* ------------------------------------------------------------------ */
/* Guest-physical layout, the virtio area, free pages.                 */

int ferry_guest_gpa_regions(const ferry_guest_t *g, ferry_gpa_region *out, unsigned cap)
{
	if (!g || !g->vm || (cap && !out))
		return -EINVAL;
	uint64_t gpa = 0;
	for (unsigned i = 0; i < g->nram; i++) {
		if (i < cap) {
			out[i].rb = g->ram[i].rb;
			out[i].gpa = gpa;
		}
		gpa += g->ram[i].size;
	}
	return (int)g->nram;
}

void ferry_guest_virtio_area(const ferry_guest_t *g, uint8_t **host, uint64_t *gpa,
			     uint64_t *size)
{
	const bool on = g && g->cfg.virtio;
	if (host)
		*host = on ? g->ram[0].host + g->usable_pages * PAGE : NULL;
	if (gpa)
		*gpa = on ? g->usable_pages * PAGE : 0; /* pc.ram is at gpa 0 */
	if (size)
		*size = on ? FERRY_GUEST_VIRTIO_SIZE : 0;
}

/* Reads exactly len bytes at off of a memfd (holes read as zeros). */
static bool pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return true;
}

#define PERM_CHUNK 16384 /* u32 entries read at a time */

uint64_t ferry_guest_undefined_pages(const ferry_guest_t *g, unsigned i, uint64_t *bits)
{
	if (!g || i != 0 || !bits) /* only pc.ram holds such pages */
		return 0;
	uint64_t count = 0;
	if (g->cfg.virtio) {
		for (uint64_t p = g->usable_pages; p < g->cfg.mem_size / PAGE; p++)
			bits[p / 64] |= 1ull << (p % 64);
		count += FERRY_GUEST_VIRTIO_SIZE / PAGE;
	}
	if (g->cfg.workload != FERRY_WL_CHURN)
		return count;
	uint32_t *perm = malloc(PERM_CHUNK * sizeof(uint32_t));
	if (!perm)
		return count;
	const int fd = g->ram[0].fd;
	for (unsigned c = 0; c < g->nvcpus; c++) {
		const guest_vcpu *v = &g->vcpus[c];
		struct churn_meta m;
		if (!pread_all(fd, &m, sizeof(m), v->l_slice_offset) || m.magic != CHURN_MAGIC ||
		    m.npages != v->churn_n || m.first != v->churn_first || m.nalloc > m.npages)
			continue; /* not a free list we know: exclude nothing */
		const uint64_t page0 = v->l_slice_offset / PAGE + v->churn_first;
		for (uint64_t j = m.nalloc; j < m.npages;) {
			uint64_t k = m.npages - j < PERM_CHUNK ? m.npages - j : PERM_CHUNK;
			if (!pread_all(fd, perm, k * 4, v->l_slice_offset + sizeof(m) + j * 4))
				break;
			for (uint64_t e = 0; e < k; e++) {
				if (perm[e] >= m.npages)
					continue;
				uint64_t p = page0 + perm[e];
				if (!(bits[p / 64] >> (p % 64) & 1)) {
					bits[p / 64] |= 1ull << (p % 64);
					count++;
				}
			}
			j += k;
		}
	}
	free(perm);
	return count;
}

int64_t ferry_guest_free_ranges(ferry_guest_t *g, ferry_guest_free_fn fn, void *opaque)
{
	if (!g || !fn)
		return -EINVAL;
	if (g->cfg.workload != FERRY_WL_CHURN)
		return 0;
	int64_t total = 0;
	for (unsigned c = 0; c < g->nvcpus; c++) {
		guest_vcpu *v = &g->vcpus[c];
		const uint64_t n = v->churn_n;
		uint64_t *free_bits = calloc((n + 63) / 64, sizeof(uint64_t));
		if (!free_bits)
			return -ENOMEM;
		/* The snapshot: free entries of the permutation, under the lock. */
		const struct churn_meta *m = (const void *)v->base;
		pthread_mutex_lock(&v->churn_lock);
		for (uint64_t j = m->nalloc < n ? m->nalloc : n; j < n; j++) {
			uint32_t p = m->perm[j];
			if (p < n)
				free_bits[p / 64] |= 1ull << (p % 64);
		}
		pthread_mutex_unlock(&v->churn_lock);
		/* Runs of free pages, in guest-physical terms (pc.ram is at 0). */
		const uint64_t gpa0 = v->l_slice_offset + v->churn_first * PAGE;
		int r = 0;
		for (uint64_t p = 0; p < n && r == 0;) {
			if (!(free_bits[p / 64] >> (p % 64) & 1)) {
				p++;
				continue;
			}
			uint64_t e = p + 1;
			while (e < n && (free_bits[e / 64] >> (e % 64) & 1))
				e++;
			r = fn(opaque, gpa0 + p * PAGE, (e - p) * PAGE);
			total += (int64_t)(e - p);
			p = e;
		}
		free(free_bits);
		if (r < 0)
			return r;
	}
	return total;
}

/* ------------------------------------------------------------------ */
/* Guest activity.                                                     */

static void *activity_thread(void *arg)
{
	ferry_guest_t *g = arg;
	pthread_mutex_lock(&g->lock);
	for (;;) {
		while (!g->quit && !g->want_run)
			pthread_cond_wait(&g->cond_run, &g->lock);
		if (g->quit)
			break;
		g->act_parked = false;
		pthread_mutex_unlock(&g->lock);
		g->act_fn(g->act_opaque, &g->stop_req);
		pthread_mutex_lock(&g->lock);
		g->act_parked = true;
		pthread_cond_broadcast(&g->cond_ack);
		if (!g->quit && g->want_run) {
			/* About 1 ms between rounds; a stop broadcasts cond_wake. */
			uint64_t t = now_ns() + 1000000;
			struct timespec ts = { .tv_sec = (time_t)(t / NS_PER_S),
					       .tv_nsec = (long)(t % NS_PER_S) };
			pthread_cond_timedwait(&g->cond_wake, &g->lock, &ts);
		}
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int ferry_guest_add_activity(ferry_guest_t *g, ferry_guest_activity_fn fn, void *opaque)
{
	if (!g || !fn)
		return -EINVAL;
	int r = 0;
	pthread_mutex_lock(&g->ctl);
	pthread_mutex_lock(&g->lock);
	if (g->want_run) {
		r = -EBUSY;
	} else if (g->act_ok) {
		r = -EEXIST;
	} else {
		g->act_fn = fn;
		g->act_opaque = opaque;
		g->act_parked = true;
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		r = -pthread_create(&g->act_thread, NULL, activity_thread, g);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (r == 0) {
			g->act_ok = true;
			pthread_setname_np(g->act_thread, "guest/activity");
		}
	}
	pthread_mutex_unlock(&g->lock);
	pthread_mutex_unlock(&g->ctl);
	return r;
}
