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
 *    offset. read yields one frame per call, of at most devrate / 100
 *    bytes (10 ms of data; at least 4 KiB, at most what fits in the
 *    buffer), sleeping so that it never produces more than devrate bytes/s
 *    since STOP_COPY began (devrate 0: unlimited).
 *  - write treats its buffer as hostile: every frame's header, length and
 *    offset are checked against the buffer and the device before a byte is
 *    copied; a bad one is -EINVAL and nothing of it is written.
 *  - set_state accepts only the arcs of the VFIO uAPI (without P2P), so a
 *    libferry that asked for another would fail the migration.
 *  - Config vmsd "gdev": index, size and seed, refused (FERRY_EMISMATCH) by
 *    a destination configured otherwise.
 *
 * Thread: the ops run on libferry's migration threads (one at a time per
 * device); the vCPUs are stopped whenever read or write run, so memory
 * needs no lock. PRE_COPY (FERRY_LIVE_PRE_COPY_FLAG) is not offered yet.
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
	uint64_t pos;       /* read: next offset */
	uint64_t t0, sent;  /* read: pacing since STOP_COPY */
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
		if (d->mem == MAP_FAILED) {
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
	for (unsigned i = 0; ds && i < ds->n; i++)
		if (ds->dev[i].mem)
			munmap(ds->dev[i].mem, ds->dev[i].l_size);
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
	}
}

void ferry_guest_devs_step(guest_devs *ds, unsigned vcpu, uint64_t k, uint64_t s0)
{
	struct guest_dev *d = &ds->dev[k % ds->n];
	uint64_t val = s0 ^ k;
	uint64_t off = vcpu * ds->slice + mix(val) % (ds->slice / 8) * 8;
	memcpy(d->mem + off, &val, 8);
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
	case FERRY_LIVE_RUNNING: return to == FERRY_LIVE_STOP;
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
	if (!arc_ok(d->state, (int)to))
		return -EINVAL;
	if (to == FERRY_LIVE_STOP_COPY) {
		d->pos = 0;
		d->sent = 0;
		d->t0 = now_ns();
	}
	__atomic_store_n(&d->state, (int)to, __ATOMIC_RELAXED);
	return 0;
}

/* Sleeps until `bytes` more keep the device within its rate. */
static void pace(struct guest_dev *d, uint64_t bytes)
{
	if (!d->rate)
		return;
	uint64_t due = d->t0 + (uint64_t)((double)(d->sent + bytes) * 1e9 / (double)d->rate);
	uint64_t t = now_ns();
	if (due > t) {
		struct timespec ts = { (time_t)((due - t) / 1000000000ull),
				       (long)((due - t) % 1000000000ull) };
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
}

static ssize_t op_read(void *opaque, void *buf, size_t len)
{
	struct guest_dev *d = opaque;
	if (d->state != FERRY_LIVE_STOP_COPY || len <= FRAME_HDR)
		return -EINVAL;
	if (d->pos == d->l_size)
		return 0;
	uint64_t chunk = d->rate ? d->rate / 100 : CHUNK_MAX;
	chunk = chunk < CHUNK_MIN ? CHUNK_MIN : chunk > CHUNK_MAX ? CHUNK_MAX : chunk;
	if (chunk > len - FRAME_HDR)
		chunk = len - FRAME_HDR;
	if (chunk > d->l_size - d->pos)
		chunk = d->l_size - d->pos;
	pace(d, chunk);
	uint8_t *p = buf;
	be32_st(p, FRAME_MAGIC);
	be32_st(p + 4, (uint32_t)chunk);
	be32_st(p + 8, (uint32_t)(d->pos >> 32));
	be32_st(p + 12, (uint32_t)d->pos);
	memcpy(p + FRAME_HDR, d->mem + d->pos, chunk);
	d->pos += chunk;
	d->sent += chunk;
	return (ssize_t)(FRAME_HDR + chunk);
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

static int op_stop_copy_size(void *opaque, uint64_t *bytes)
{
	struct guest_dev *d = opaque;
	uint64_t chunk = d->rate && d->rate / 100 < CHUNK_MAX ? d->rate / 100 : CHUNK_MAX;
	chunk = chunk < CHUNK_MIN ? CHUNK_MIN : chunk;
	*bytes = d->l_size + (d->l_size + chunk - 1) / chunk * FRAME_HDR;
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

int ferry_guest_devs_attach(guest_devs *ds, ferry_vm_t *vm)
{
	for (unsigned i = 0; ds && i < ds->n; i++) {
		int r = ferry_live_device_register(vm, "gdev", i, &dev_ops, &config_vmsd, &ds->dev[i]);
		if (r < 0)
			return r;
	}
	return 0;
}
