/* SPDX-License-Identifier: MIT */
/* A byte buffer for hand-made (often hostile) streams in tests. Include after cmocka.h. */
#ifndef FERRY_TEST_SBUF_H
#define FERRY_TEST_SBUF_H

#include <stdint.h>
#include <string.h>

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


#endif
