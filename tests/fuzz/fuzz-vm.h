/* SPDX-License-Identifier: MIT */
/*
 * The small VM of the stream, pcstream and multifd targets (fuzz-stream.c,
 * fuzz-pcstream.c, fuzz-multifd.c) and of the tool that records their
 * seeds (capture.c): a
 * real source of this VM migrates to a real destination of it, so the
 * recorded streams are what a destination of this VM accepts. Registered
 * through the public API only (ferry/vm.h, vmstate.h, device.h).
 *
 * The VM: three RAM blocks ("ram0", 4 pages, anonymous; "ram1", 3 pages
 * on a memfd; "rom", 1 page), a vmsd device ("dev", version 2, with a
 * subsection), and a live device ("live") with a config vmsd, whose
 * source read() yields FUZZ_LIVE_BYTES bytes in two buffers and whose
 * destination write() takes anything. The uuid is fixed, so that a
 * recorded stream names the VM the targets load into.
 *
 * Thread: the vCPU and device ops run on libferry's threads; they only
 * touch the live device's counter (an atomic).
 */
#ifndef FERRY_FUZZ_VM_H
#define FERRY_FUZZ_VM_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ferry/device.h"
#include "ferry/migration.h"
#include "ferry/vm.h"
#include "ferry/vmstate.h"

#define FUZZ_PAGE 4096u
#define FUZZ_LIVE_BYTES 96u
/* fuzz-multifd.c's config byte: the main stream has checksums; zstd. */
#define FUZZ_MF_SUMS 0x1
#define FUZZ_MF_ZSTD 0x2
#define FUZZ_MF_TWO 0x4 /* two channels: be32 length of channel 0's bytes, then both */

static const uint8_t fuzz_vm_uuid[16] = { 'f', 'e', 'r', 'r', 'y', '-', 'f', 'u',
					  'z', 'z', '-', 'v', 'm', 0, 0, 1 };

typedef struct fuzz_dev {
	uint32_t a;
	uint64_t b;
	bool c;
	uint8_t bytes[16];
	uint64_t sub;
} fuzz_dev;

typedef struct fuzz_live {
	atomic_uint left; /* source: bytes read() still yields */
	uint32_t cfg;
} fuzz_live;

static const ferry_field fuzz_dev_sub_fields[] = { FERRY_FIELD_U64(fuzz_dev, sub), FERRY_FIELD_END };
static const ferry_vmsd fuzz_dev_sub_vmsd = { .name = "dev/sub", .version = 1,
					      .fields = fuzz_dev_sub_fields };
static const ferry_vmsd_sub fuzz_dev_subs[] = { { &fuzz_dev_sub_vmsd, NULL }, { NULL, NULL } };
static const ferry_field fuzz_dev_fields[] = {
	FERRY_FIELD_U32(fuzz_dev, a), FERRY_FIELD_U64(fuzz_dev, b), FERRY_FIELD_BOOL(fuzz_dev, c),
	FERRY_FIELD_BYTES(fuzz_dev, bytes), FERRY_FIELD_END
};
static const ferry_vmsd fuzz_dev_vmsd = { .name = "dev", .version = 2, .min_version = 1,
					  .fields = fuzz_dev_fields, .subsections = fuzz_dev_subs };
static const ferry_field fuzz_live_fields[] = { FERRY_FIELD_U32(fuzz_live, cfg), FERRY_FIELD_END };
static const ferry_vmsd fuzz_live_vmsd = { .name = "live", .version = 1, .fields = fuzz_live_fields };

static int fuzz_vcpu_nop(void *opaque)
{
	(void)opaque;
	return 0;
}

static int fuzz_live_set_state(void *opaque, ferry_live_state to)
{
	fuzz_live *d = opaque;
	if (to == FERRY_LIVE_STOP_COPY)
		atomic_store(&d->left, FUZZ_LIVE_BYTES);
	return 0;
}

/* Source: FUZZ_LIVE_BYTES bytes, in buffers of at most half of them. */
static ssize_t fuzz_live_read(void *opaque, void *buf, size_t len)
{
	fuzz_live *d = opaque;
	unsigned n = atomic_load(&d->left);
	if (n > FUZZ_LIVE_BYTES / 2)
		n = FUZZ_LIVE_BYTES / 2;
	if (n > len)
		n = (unsigned)len;
	memset(buf, 0x5a, n);
	atomic_fetch_sub(&d->left, n);
	return n;
}

/* Destination: any buffer is taken (what the loader checks is the target). */
static ssize_t fuzz_live_write(void *opaque, const void *buf, size_t len)
{
	(void)opaque;
	(void)buf;
	return (ssize_t)len;
}

static const ferry_live_device_ops fuzz_live_ops = {
	.set_state = fuzz_live_set_state, .read = fuzz_live_read, .write = fuzz_live_write,
};
static const ferry_vcpu_ops fuzz_vcpu_ops = { .stop = fuzz_vcpu_nop, .start = fuzz_vcpu_nop };

typedef struct fuzz_vm {
	ferry_vm_t *vm;
	uint8_t *ram0, *ram1, *rom;
	int mfd; /* ram1's memfd */
	fuzz_dev dev;
	fuzz_live live;
} fuzz_vm;

/*
 * Creates v's VM; a source's RAM and device state get contents (some
 * pages left zero). Returns 0 or a negative errno (v is then not usable;
 * the callers exit).
 */
static inline int fuzz_vm_create(fuzz_vm *v, bool source)
{
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	memcpy(o.uuid, fuzz_vm_uuid, sizeof(o.uuid));
	memset(v, 0, sizeof(*v));
	int r = ferry_vm_create(&o, &v->vm);
	if (r)
		return r;
	int mfd = v->mfd = memfd_create("fuzz-ram1", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, 3 * FUZZ_PAGE))
		return -errno;
	v->ram0 = mmap(NULL, 4 * FUZZ_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	v->ram1 = mmap(NULL, 3 * FUZZ_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	v->rom = mmap(NULL, FUZZ_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (v->ram0 == MAP_FAILED || v->ram1 == MAP_FAILED || v->rom == MAP_FAILED)
		return -ENOMEM;
	if (source) {
		for (unsigned i = 0; i < 2 * FUZZ_PAGE; i++) /* pages 2 and 3 stay zero */
			v->ram0[i] = (uint8_t)(i * 7);
		memset(v->ram1 + FUZZ_PAGE, 0xa5, FUZZ_PAGE);
		memset(v->rom, 'r', 64);
		v->dev = (fuzz_dev){ .a = 7, .b = 1ull << 40, .c = true, .bytes = "sixteen bytes!!", .sub = 9 };
		v->live.cfg = 42;
	}
	if ((r = ferry_vm_set_vcpu_ops(v->vm, &fuzz_vcpu_ops, NULL)) ||
	    (r = ferry_ram_block_add(v->vm, "ram0", v->ram0, 4 * FUZZ_PAGE, -1, NULL)) ||
	    (r = ferry_ram_block_add(v->vm, "ram1", v->ram1, 3 * FUZZ_PAGE, mfd, NULL)) ||
	    (r = ferry_ram_block_add(v->vm, "rom", v->rom, FUZZ_PAGE, -1, NULL)) ||
	    (r = ferry_device_register(v->vm, "dev", 0, &fuzz_dev_vmsd, &v->dev)) ||
	    (r = ferry_live_device_register(v->vm, "live", 0, &fuzz_live_ops, &fuzz_live_vmsd,
					    &v->live)))
		return r;
	return 0;
}

/* Frees v's RAM, its VM destroyed. */
static inline void fuzz_vm_free_ram(fuzz_vm *v)
{
	munmap(v->ram0, 4 * FUZZ_PAGE);
	munmap(v->ram1, 3 * FUZZ_PAGE);
	munmap(v->rom, FUZZ_PAGE);
	close(v->mfd);
	memset(v, 0, sizeof(*v));
}

/* Destroys v's VM (ending its migration, if one runs) and frees its RAM. */
static inline void fuzz_vm_destroy(fuzz_vm *v)
{
	ferry_vm_destroy(v->vm);
	fuzz_vm_free_ram(v);
}

#endif
