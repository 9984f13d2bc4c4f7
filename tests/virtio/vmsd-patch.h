/* SPDX-License-Identifier: MIT */
/*
 * Test helper: edits a field of an encoded device state (ferry_vmsd_encode
 * output), to feed loaders state that cannot be right. Include after
 * <cmocka.h>.
 */
#ifndef FERRY_TEST_VMSD_PATCH_H
#define FERRY_TEST_VMSD_PATCH_H

#include <stdint.h>
#include <string.h>

/*
 * Rewrites the data of field `name` in an encoded state (tag 0x01, type,
 * name length, name, be32 size, big-endian data).
 */
static inline void patch_field(uint8_t *buf, size_t len, const char *name, uint64_t value)
{
	size_t nl = strlen(name);
	for (size_t i = 0; i + 3 + nl + 4 <= len; i++) {
		if (buf[i] != 0x01 || buf[i + 2] != nl || memcmp(buf + i + 3, name, nl))
			continue;
		uint8_t *sz = buf + i + 3 + nl;
		uint32_t size = (uint32_t)sz[0] << 24 | sz[1] << 16 | sz[2] << 8 | sz[3];
		assert_true(size <= 8 && i + 3 + nl + 4 + size <= len);
		for (uint32_t k = 0; k < size; k++)
			sz[4 + k] = (uint8_t)(value >> (8 * (size - 1 - k)));
		return;
	}
	fail_msg("field %s not found", name);
}

#endif
