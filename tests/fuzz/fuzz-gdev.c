/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the synthetic guest's live device frame parser
 * (src/guest/devices.c, the `write` op): an incoming guest
 * ("mem=64K,vram=0,vcpus=1,devices=1,devmem=64K", ferry_guest_config_parse
 * and ferry_guest_create) attached to a stand-in VM, its device moved to
 * RESUMING, and every input handed whole to write(), as libferry hands it
 * a buffer the source sent.
 *
 * Oracles, beyond the sanitizers: the device memory has PROT_NONE guard
 * pages on both sides (__wrap_mmap below: a write outside it crashes); write returns the
 * input's length or -EINVAL, as a model of the frame format (be32 "FDEV",
 * be32 length, be64 offset, the bytes; every frame inside the buffer and
 * the memory, or nothing is written) predicts; after each call the device
 * memory equals the model's copy.
 *
 * The libferry calls the guest makes in ferry_guest_attach are defined
 * here (public API, include/ferry/): they accept everything, and
 * ferry_live_device_register keeps the device's ops. Built by
 * tests/fuzz/run.sh with only guest.c and devices.c.
 * Thread: libFuzzer's one thread (the guest's vCPU threads stay stopped).
 */
#include "guest.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fuzz-check.h"

static const ferry_live_device_ops *dev_ops;
static void *dev_opaque;
static uint8_t *mem, *model;
static uint64_t mem_size;

/* ---- the stand-in VM: libferry's public calls that ferry_guest_attach makes ---- */

int ferry_ram_block_add(ferry_vm_t *vm, const char *name, void *host, uint64_t size, int fd,
			ferry_ram_block_t **out)
{
	(void)vm, (void)name, (void)host, (void)size, (void)fd;
	if (out)
		*out = NULL;
	return 0;
}

void ferry_ram_mark_dirty(ferry_ram_block_t *rb, uint64_t offset, uint64_t len)
{
	(void)rb, (void)offset, (void)len;
}

int ferry_device_register(ferry_vm_t *vm, const char *id, uint32_t instance,
			  const ferry_vmsd *vmsd, void *opaque)
{
	(void)vm, (void)id, (void)instance, (void)vmsd, (void)opaque;
	return 0;
}

int ferry_live_device_register(ferry_vm_t *vm, const char *id, uint32_t instance,
			       const ferry_live_device_ops *ops, const ferry_vmsd *config,
			       void *opaque)
{
	(void)vm, (void)id, (void)instance, (void)config;
	dev_ops = ops;
	dev_opaque = opaque;
	return 0;
}

int ferry_vm_set_vcpu_ops(ferry_vm_t *vm, const ferry_vcpu_ops *ops, void *opaque)
{
	(void)vm, (void)ops, (void)opaque;
	return 0;
}

int ferry_vm_set_vcpu_threads(ferry_vm_t *vm, const pid_t *tids, unsigned n)
{
	(void)vm, (void)tids, (void)n;
	return 0;
}

ferry_dirty_mode ferry_vm_dirty_mode(const ferry_vm_t *vm)
{
	(void)vm;
	return FERRY_DIRTY_AUTO;
}

/* ---- the target ---- */

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);

/*
 * The guest's mmap calls (run.sh links with -Wl,--wrap=mmap): a private
 * anonymous mapping gets a PROT_NONE guard page on each side, so that a
 * stray write next to the device memory crashes (ASan does not see into
 * mappings).
 */
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (addr || !(flags & MAP_ANONYMOUS) || !(flags & MAP_PRIVATE))
		return __real_mmap(addr, len, prot, flags, fd, off);
	uint8_t *r = __real_mmap(NULL, len + 8192, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		return r;
	return __real_mmap(r + 4096, len, prot, flags | MAP_FIXED, fd, off);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	ferry_guest_config cfg;
	char err[256];
	ferry_guest_config_init(&cfg);
	CHECK(!ferry_guest_config_parse(&cfg, "mem=64K,vram=0,vcpus=1,devices=1,devmem=64K", err,
					sizeof(err)));
	ferry_guest_t *g;
	static uint64_t vm_stand_in;
	CHECK(!ferry_guest_create(&cfg, true, &g));
	CHECK(!ferry_guest_attach(g, (ferry_vm_t *)&vm_stand_in) && dev_ops && dev_ops->write);
	ferry_guest_dev_mem(g, 0, &mem, &mem_size);
	CHECK(mem_size == 64 << 10);
	CHECK(!dev_ops->set_state(dev_opaque, FERRY_LIVE_STOP));
	CHECK(!dev_ops->set_state(dev_opaque, FERRY_LIVE_RESUMING));
	CHECK((model = malloc(mem_size)));
	memcpy(model, mem, mem_size);
	return 0;
}

/* The frame format applied to `model`: false (model untouched) for a bad buffer. */
static bool model_write(const uint8_t *p, size_t len)
{
	size_t off = 0;
	while (off < len) {
		uint32_t magic, flen;
		uint64_t at;
		if (off + 16 > len)
			return false;
		memcpy(&magic, p + off, 4);
		memcpy(&flen, p + off + 4, 4);
		memcpy(&at, p + off + 8, 8);
		flen = be32toh(flen);
		at = be64toh(at);
		if (be32toh(magic) != 0x46444556u || off + 16 + flen > len ||
		    at >= mem_size + 1 || at + flen > mem_size)
			return false;
		off += 16 + flen;
	}
	for (off = 0; off < len;) {
		uint32_t flen;
		uint64_t at;
		memcpy(&flen, p + off + 4, 4);
		memcpy(&at, p + off + 8, 8);
		memcpy(model + be64toh(at), p + off + 16, be32toh(flen));
		off += 16 + be32toh(flen);
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ssize_t r = dev_ops->write(dev_opaque, data, size);
	bool ok = model_write(data, size);
	CHECK(ok ? r == (ssize_t)size : r == -EINVAL);
	CHECK(!memcmp(mem, model, mem_size));
	return 0;
}
