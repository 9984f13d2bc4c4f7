/* SPDX-License-Identifier: MIT */
/* A byte buffer for hand-made (often hostile) streams in tests. Include after cmocka.h. */
#ifndef FERRY_TEST_SBUF_H
#define FERRY_TEST_SBUF_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

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
	be32(b, FERRY_STREAM_VERSION_PLAIN); /* no checksums: hand-made records */
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

/* ---- hand-made multifd channel traffic ---- */

/* A connection to a unix: URI. */
static inline int uconnect(const char *uri)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", uri + 5);
	assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
	return s;
}

/* Sends b on fd, as far as the peer takes it. */
static inline void sendb(int fd, const sbuf *b)
{
	for (size_t o = 0; o < b->len;) {
		ssize_t n = send(fd, b->p + o, b->len - o, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		o += (size_t)n;
	}
}

static inline void handshake(sbuf *b, const uint8_t uuid[16], uint32_t id, uint32_t n)
{
	be32(b, FERRY_MF_HS_MAGIC);
	be32(b, FERRY_MF_VERSION);
	put(b, uuid, 16);
	be32(b, id);
	be32(b, n);
}

static inline void pkt_header(sbuf *b, uint32_t flags, uint32_t nn, uint32_t nz, uint32_t clen,
			      uint64_t num)
{
	be32(b, FERRY_MF_PKT_MAGIC);
	be32(b, FERRY_MF_VERSION);
	be32(b, flags);
	be32(b, nn);
	be32(b, nz);
	be32(b, clen);
	be64(b, num);
}
#endif
