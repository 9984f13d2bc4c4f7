/* SPDX-License-Identifier: MIT */
/* A byte buffer for hand-made (often hostile) streams in tests. Include after cmocka.h. */
#ifndef FERRY_TEST_SBUF_H
#define FERRY_TEST_SBUF_H

#include <stdint.h>
#include <string.h>

#include "stream/format.h"

typedef struct sbuf {
	uint8_t p[1 << 16];
	size_t len;
} sbuf;

static inline void put(sbuf *b, const void *p, size_t n)
{
	assert_true(b->len + n <= sizeof(b->p));
	memcpy(b->p + b->len, p, n);
	b->len += n;
}
static inline void u8(sbuf *b, uint8_t v) { put(b, &v, 1); }
static inline void be16(sbuf *b, uint16_t v) { uint8_t x[2] = { v >> 8, (uint8_t)v }; put(b, x, 2); }
static inline void be32(sbuf *b, uint32_t v) { be16(b, v >> 16); be16(b, (uint16_t)v); }
static inline void be64(sbuf *b, uint64_t v) { be32(b, (uint32_t)(v >> 32)); be32(b, (uint32_t)v); }
static inline void str8(sbuf *b, const char *s) { u8(b, (uint8_t)strlen(s)); put(b, s, strlen(s)); }


static inline void header(sbuf *b)
{
	be32(b, FERRY_STREAM_MAGIC);
	be32(b, FERRY_STREAM_VERSION);
	uint8_t uuid[16] = { 1 };
	put(b, uuid, 16);
	be32(b, 4096);
}


/* The guest spec of hand-made-stream destinations, and its RAM setup section. */
#define DST_SPEC "mem=16M,vram=4M,vcpus=1,workload=random"

static inline void ram_setup(sbuf *b)
{
	u8(b, FERRY_REC_SECTION_START);
	be32(b, 1);
	str8(b, "ram");
	be32(b, 0);
	be32(b, 1);
	be64(b, (20ull << 20) | FERRY_RAM_MEM_SIZE);
	be32(b, 2);
	str8(b, "pc.ram");
	be64(b, 16ull << 20);
	str8(b, "vga.vram");
	be64(b, 4ull << 20);
	be64(b, FERRY_RAM_EOS);
	u8(b, FERRY_REC_FOOTER);
	be32(b, 1);
}
#endif
