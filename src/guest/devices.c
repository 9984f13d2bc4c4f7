/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest's live devices: each a block of device memory (not
 * guest RAM, not a RAM block) that the vCPU workload changes, migrated
 * through libferry's public live device interface (ferry/device.h).
 *
 * What:
 *  - Device d holds cfg.devmem bytes, filled at create as a function of
 *    (seed, d); an incoming guest's are zeroed at create instead, so that
 *    they are resident like a real device's memory (a first touch of fresh
 *    memory during the load would cost 0.3-0.6 GB/s here: not the
 *    device's cost but the host's). Each vCPU owns the slice
 *    [i * slice, (i + 1) * slice) of every device, slice = devmem / vcpus
 *    rounded down to 8 bytes. Step k of vCPU i also writes the 8 bytes at
 *    slice offset (mix(s0 ^ k) mod (slice / 8)) * 8 of device k mod N with
 *    s0 ^ k, s0 being the first word of the vCPU's PRNG state after the
 *    step: a pure function of (config, i, steps), so the oracle's twin
 *    predicts device memory as it predicts RAM.
 *  - Data format (what read yields and write takes): frames of be32 magic
 *    "FDEV", be32 length L, be64 offset, then L bytes of memory at that
 *    offset. read yields about devrate / 100 bytes per call (10 ms of
 *    data; at least 4 KiB, at most what fits in the buffer), sleeping so
 *    that it never produces more than devrate bytes/s since STOP_COPY or
 *    PRE_COPY began, or since a PRE_COPY read last said 0 (devrate 0:
 *    unlimited): first the memory from `pos` on, one frame per call (the
 *    initial data), then, with devprecopy, one frame per dirty granule.
 *  - devprecopy: the devices offer PRE_COPY. Each step also marks its
 *    64 KiB granule in the device's dirty bitmap. RUNNING -> PRE_COPY
 *    starts the initial data at 0; PRE_COPY -> STOP_COPY goes on where
 *    precopy stopped (the rest of the initial data, then what is still
 *    dirty); STOP -> STOP_COPY (no precopy) reads it all from 0. In
 *    PRE_COPY read says 0 when nothing is left for now; precopy_info
 *    reports the initial bytes left and the dirty granules' bytes behind
 *    pos.
 *  - write treats its buffer as hostile: every frame's header, length and
 *    offset are checked against the buffer and the device before a byte is
 *    copied; a bad one is -EINVAL and nothing of it is written.
 *  - set_state accepts only the arcs of the VFIO uAPI (without P2P), so a
 *    libferry that asked for another would fail the migration.
 *  - Config vmsd "gdev": index, size and seed, refused (FERRY_EMISMATCH) by
 *    a destination configured otherwise.
 *
 * Thread: the ops run on libferry's migration threads (one at a time per
 * device; pos, t0 and sent are theirs). write and STOP_COPY reads run with
 * the vCPUs stopped. PRE_COPY reads run while the vCPUs step: memory is
 * then protected by the dirty bitmap's protocol, not a lock: a step
 * stores its 8 bytes, then sets its granule's bit (an atomic RMW,
 * release); read clears a granule's bit (atomic exchange, acquire) before
 * it copies the granule, and the initial pass clears the bit of each
 * granule it starts. A store the copy may have missed is thus always
 * followed by a set bit, so the granule goes again; a torn 8-byte copy
 * is re-sent the same way.
 */
#include "devices.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define FRAME_MAGIC 0x46444556u /* "FDEV" */
#define FRAME_HDR 16u
#define CHUNK_MIN 4096u
#define CHUNK_MAX (1u << 20)
#define GRAN (64u << 10) /* dirty tracking granule */

struct guest_dev {
	/* The config vmsd's fields, fixed at create. */
	uint32_t index;
	uint64_t size;
	uint64_t seed;
	/* Local copies the ops use (never the loaded ones). */
	uint32_t l_index;
	uint64_t l_size, l_seed;
	uint8_t *mem;
	uint64_t rate;
	/* Streaming, on libferry's threads. */
	int state;
	uint64_t pos;       /* read: next offset of the initial data */
	uint64_t t0, sent;  /* read: pacing since t0 (0: restart at the next read) */
	uint64_t *dirty;    /* devprecopy: a bit per granule, atomics (see Thread) */
	uint64_t ngran;
};

struct guest_devs {
	unsigned n;
	uint64_t slice;     /* bytes of each device per vCPU, multiple of 8 */
	struct guest_dev dev[];
};

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void be32_st(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static uint32_t be32_ld(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void fill(struct guest_dev *d)
{
	uint64_t *w = (uint64_t *)d->mem;
	uint64_t x = mix(d->seed ^ mix(d->index + 0x5eed));
	for (uint64_t i = 0; i < d->size / 8; i++)
		w[i] = mix(x + i);
}

int ferry_guest_devs_create(const ferry_guest_config *cfg, bool incoming, guest_devs **out)
{
	*out = NULL;
	if (!cfg->devices)
		return 0;
	guest_devs *ds = calloc(1, sizeof(*ds) + cfg->devices * sizeof(ds->dev[0]));
	if (!ds)
		return -ENOMEM;
	ds->n = cfg->devices;
	ds->slice = cfg->devmem / cfg->vcpus / 8 * 8;
	for (unsigned i = 0; i < ds->n; i++) {
		struct guest_dev *d = &ds->dev[i];
		*d = (struct guest_dev){ .index = i, .size = cfg->devmem, .seed = cfg->seed,
					 .l_index = i, .l_size = cfg->devmem, .l_seed = cfg->seed,
					 .rate = cfg->devrate, .state = FERRY_LIVE_RUNNING };
		d->mem = mmap(NULL, d->size, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		d->ngran = (d->size + GRAN - 1) / GRAN;
		if (cfg->devprecopy)
			d->dirty = calloc((d->ngran + 63) / 64, sizeof(uint64_t));
		if (d->mem == MAP_FAILED || (cfg->devprecopy && !d->dirty)) {
			if (d->mem == MAP_FAILED)
				d->mem = NULL;
			ferry_guest_devs_destroy(ds);
			return -ENOMEM;
		}
		if (!incoming)
			fill(d);
		else /* a device's memory exists before a migration writes it */
			memset(d->mem, 0, d->size);
	}
	*out = ds;
	return 0;
}

void ferry_guest_devs_destroy(guest_devs *ds)
{
	for (unsigned i = 0; ds && i < ds->n; i++) {
		if (ds->dev[i].mem)
			munmap(ds->dev[i].mem, ds->dev[i].l_size);
		free(ds->dev[i].dirty);
	}
	free(ds);
}

void ferry_guest_devs_reset(guest_devs *ds, bool incoming)
{
	for (unsigned i = 0; ds && i < ds->n; i++) {
		struct guest_dev *d = &ds->dev[i];
		if (incoming)
			memset(d->mem, 0, d->l_size);
		else
			fill(d);
		if (d->dirty)
			memset(d->dirty, 0, (d->ngran + 63) / 64 * sizeof(uint64_t));
	}
}

void ferry_guest_devs_step(guest_devs *ds, unsigned vcpu, uint64_t k, uint64_t s0)
{
	struct guest_dev *d = &ds->dev[k % ds->n];
	uint64_t val = s0 ^ k;
	uint64_t off = vcpu * ds->slice + mix(val) % (ds->slice / 8) * 8;
	memcpy(d->mem + off, &val, 8);
	if (d->dirty) /* after the store: see Thread */
		__atomic_fetch_or(&d->dirty[off / GRAN / 64], 1ull << (off / GRAN % 64),
				  __ATOMIC_RELEASE);
}

unsigned ferry_guest_devs_count(const guest_devs *ds)
{
	return ds ? ds->n : 0;
}

void ferry_guest_devs_mem(const guest_devs *ds, unsigned i, uint8_t **host, uint64_t *size)
{
	*host = ds->dev[i].mem;
	*size = ds->dev[i].l_size;
}

int ferry_guest_devs_state(const guest_devs *ds, unsigned i)
{
	return __atomic_load_n(&ds->dev[i].state, __ATOMIC_RELAXED);
}

/* ---- the live device ops (libferry's threads) ---- */

/* The uAPI's arcs without P2P (ferry/device.h). */
static bool arc_ok(int from, int to)
{
	switch (from) {
	case FERRY_LIVE_RUNNING: return to == FERRY_LIVE_STOP || to == FERRY_LIVE_PRE_COPY;
	case FERRY_LIVE_PRE_COPY: return to == FERRY_LIVE_RUNNING || to == FERRY_LIVE_STOP_COPY;
	case FERRY_LIVE_STOP:
		return to == FERRY_LIVE_RUNNING || to == FERRY_LIVE_STOP_COPY ||
		       to == FERRY_LIVE_RESUMING;
	case FERRY_LIVE_STOP_COPY:
	case FERRY_LIVE_RESUMING: return to == FERRY_LIVE_STOP;
	default: return false;
	}
}

static int op_set_state(void *opaque, ferry_live_state to)
{
	struct guest_dev *d = opaque;
	if (!arc_ok(d->state, (int)to) || (to == FERRY_LIVE_PRE_COPY && !d->dirty))
		return -EINVAL;
	if (to == FERRY_LIVE_PRE_COPY || (to == FERRY_LIVE_STOP_COPY && d->state == FERRY_LIVE_STOP)) {
		d->pos = 0; /* all of it again; what was dirty is in it */
		for (uint64_t w = 0; d->dirty && w < (d->ngran + 63) / 64; w++)
			__atomic_store_n(&d->dirty[w], 0, __ATOMIC_RELAXED);
	}
	if (to == FERRY_LIVE_PRE_COPY || to == FERRY_LIVE_STOP_COPY)
		d->t0 = 0;
	__atomic_store_n(&d->state, (int)to, __ATOMIC_RELAXED);
	return 0;
}

/* Sleeps until `bytes` more keep the device within its rate. */
static void pace(struct guest_dev *d, uint64_t bytes)
{
	if (!d->t0) {
		d->t0 = now_ns();
		d->sent = 0;
	}
	d->sent += bytes;
	if (!d->rate)
		return;
	uint64_t due = d->t0 + (uint64_t)((double)d->sent * 1e9 / (double)d->rate);
	uint64_t t = now_ns();
	if (due > t) {
		struct timespec ts = { (time_t)((due - t) / 1000000000ull),
				       (long)((due - t) % 1000000000ull) };
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
}

/* The payload bytes of one read: devrate / 100, within CHUNK_MIN..CHUNK_MAX. */
static uint64_t chunk_of(const struct guest_dev *d)
{
	uint64_t chunk = d->rate ? d->rate / 100 : CHUNK_MAX;
	return chunk < CHUNK_MIN ? CHUNK_MIN : chunk > CHUNK_MAX ? CHUNK_MAX : chunk;
}

/* One frame of n bytes at `at` into p; returns its size. */
static size_t put_frame(const struct guest_dev *d, uint8_t *p, uint64_t at, uint64_t n)
{
	be32_st(p, FRAME_MAGIC);
	be32_st(p + 4, (uint32_t)n);
	be32_st(p + 8, (uint32_t)(at >> 32));
	be32_st(p + 12, (uint32_t)at);
	memcpy(p + FRAME_HDR, d->mem + at, n);
	return FRAME_HDR + n;
}

/* Clears granule g's dirty bit; whether it was set (acquire: see Thread). */
static bool take_dirty(struct guest_dev *d, uint64_t g)
{
	uint64_t bit = 1ull << (g % 64);
	if (!(__atomic_load_n(&d->dirty[g / 64], __ATOMIC_RELAXED) & bit))
		return false;
	return __atomic_fetch_and(&d->dirty[g / 64], ~bit, __ATOMIC_ACQUIRE) & bit;
}

static uint64_t gran_len(const struct guest_dev *d, uint64_t g)
{
	return g == d->ngran - 1 ? d->l_size - g * GRAN : GRAN;
}

/* The initial data: the next frame from pos, clearing the bits of the granules it starts. */
static ssize_t read_initial(struct guest_dev *d, uint8_t *p, size_t len)
{
	uint64_t n = chunk_of(d);
	if (n > len - FRAME_HDR)
		n = len - FRAME_HDR;
	if (n > d->l_size - d->pos)
		n = d->l_size - d->pos;
	for (uint64_t g = (d->pos + GRAN - 1) / GRAN; d->dirty && g * GRAN < d->pos + n; g++)
		take_dirty(d, g);
	pace(d, n);
	size_t r = put_frame(d, p, d->pos, n);
	d->pos += n;
	return (ssize_t)r;
}

/* Dirty granules, one frame each, up to a chunk (at least one granule); 0: none. */
static ssize_t read_dirty(struct guest_dev *d, uint8_t *p, size_t len)
{
	size_t used = 0;
	uint64_t payload = 0, chunk = chunk_of(d);
	for (uint64_t g = 0; d->dirty && g < d->ngran && payload < chunk; g++) {
		uint64_t n = gran_len(d, g);
		if (used + FRAME_HDR + n > len)
			break;
		if (!take_dirty(d, g))
			continue;
		used += put_frame(d, p + used, g * GRAN, n);
		payload += n;
	}
	if (payload)
		pace(d, payload);
	else if (d->state == FERRY_LIVE_PRE_COPY)
		d->t0 = 0; /* idle: the rate counts again from the next read */
	return (ssize_t)used;
}

static ssize_t op_read(void *opaque, void *buf, size_t len)
{
	struct guest_dev *d = opaque;
	if ((d->state != FERRY_LIVE_STOP_COPY && d->state != FERRY_LIVE_PRE_COPY) ||
	    len <= FRAME_HDR + GRAN)
		return -EINVAL;
	return d->pos < d->l_size ? read_initial(d, buf, len) : read_dirty(d, buf, len);
}

/* The dirty granules' bytes behind pos (the initial data covers the rest). */
static uint64_t dirty_bytes(const struct guest_dev *d, uint64_t *frames)
{
	uint64_t b = 0;
	*frames = 0;
	for (uint64_t g = 0; d->dirty && g < d->ngran && g * GRAN < d->pos; g++)
		if (__atomic_load_n(&d->dirty[g / 64], __ATOMIC_RELAXED) & (1ull << (g % 64))) {
			b += gran_len(d, g);
			++*frames;
		}
	return b;
}

static int op_precopy_info(void *opaque, uint64_t *initial, uint64_t *dirty)
{
	struct guest_dev *d = opaque;
	uint64_t frames;
	if (d->state != FERRY_LIVE_PRE_COPY)
		return -EINVAL;
	*initial = d->l_size - d->pos;
	*dirty = dirty_bytes(d, &frames);
	return 0;
}

/* Checks every frame of a hostile buffer; copies only if all are good. */
static int frames_check(const struct guest_dev *d, const uint8_t *p, size_t len)
{
	for (size_t off = 0; off < len;) {
		if (len - off < FRAME_HDR || be32_ld(p + off) != FRAME_MAGIC)
			return -EINVAL;
		uint64_t flen = be32_ld(p + off + 4);
		uint64_t at = (uint64_t)be32_ld(p + off + 8) << 32 | be32_ld(p + off + 12);
		if (flen > len - off - FRAME_HDR || at > d->l_size || flen > d->l_size - at)
			return -EINVAL;
		off += FRAME_HDR + flen;
	}
	return 0;
}

static ssize_t op_write(void *opaque, const void *buf, size_t len)
{
	struct guest_dev *d = opaque;
	const uint8_t *p = buf;
	if (d->state != FERRY_LIVE_RESUMING || frames_check(d, p, len))
		return -EINVAL;
	for (size_t off = 0; off < len;) {
		uint32_t flen = be32_ld(p + off + 4);
		uint64_t at = (uint64_t)be32_ld(p + off + 8) << 32 | be32_ld(p + off + 12);
		memcpy(d->mem + at, p + off + FRAME_HDR, flen);
		off += FRAME_HDR + flen;
	}
	return (ssize_t)len;
}

/* What STOP_COPY would read now: all of it, or (from PRE_COPY) what is left. */
static int op_stop_copy_size(void *opaque, uint64_t *bytes)
{
	struct guest_dev *d = opaque;
	uint64_t chunk = chunk_of(d), frames = 0;
	bool going = d->state == FERRY_LIVE_PRE_COPY || d->state == FERRY_LIVE_STOP_COPY;
	uint64_t left = going ? d->l_size - d->pos : d->l_size;
	uint64_t dirty = going ? dirty_bytes(d, &frames) : 0;
	*bytes = left + (left + chunk - 1) / chunk * FRAME_HDR + dirty + frames * FRAME_HDR;
	return 0;
}

static int config_post_load(void *opaque, uint32_t version)
{
	struct guest_dev *d = opaque;
	(void)version;
	bool ok = d->index == d->l_index && d->size == d->l_size && d->seed == d->l_seed;
	d->index = d->l_index;
	d->size = d->l_size;
	d->seed = d->l_seed;
	return ok ? 0 : FERRY_EMISMATCH;
}

static const ferry_field config_fields[] = {
	FERRY_FIELD_U32(struct guest_dev, index),
	FERRY_FIELD_U64(struct guest_dev, size),
	FERRY_FIELD_U64(struct guest_dev, seed),
	FERRY_FIELD_END,
};

static const ferry_vmsd config_vmsd = {
	.name = "gdev",
	.version = 1,
	.min_version = 1,
	.fields = config_fields,
	.post_load = config_post_load,
};

static const ferry_live_device_ops dev_ops = {
	.set_state = op_set_state,
	.read = op_read,
	.write = op_write,
	.stop_copy_size = op_stop_copy_size,
};

static const ferry_live_device_ops dev_precopy_ops = {
	.flags = FERRY_LIVE_PRE_COPY_FLAG,
	.set_state = op_set_state,
	.read = op_read,
	.write = op_write,
	.precopy_info = op_precopy_info,
	.stop_copy_size = op_stop_copy_size,
};

int ferry_guest_devs_attach(guest_devs *ds, ferry_vm_t *vm)
{
	for (unsigned i = 0; ds && i < ds->n; i++) {
		const ferry_live_device_ops *ops = ds->dev[i].dirty ? &dev_precopy_ops : &dev_ops;
		int r = ferry_live_device_register(vm, "gdev", i, ops, &config_vmsd, &ds->dev[i]);
		if (r < 0)
			return r;
	}
	return 0;
}
