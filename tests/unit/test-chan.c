/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the channel layer: big-endian round trips, zero-copy
 * external buffers, direct reads, truncation and sticky errors.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "ferry/common.h"
#include "stream/chan.h"

static void pair(ferry_chan *w, ferry_chan *r)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(ferry__chan_init(w, sv[0]), 0);
	assert_int_equal(ferry__chan_init(r, sv[1]), 0);
}

struct big {
	ferry_chan *w;
	uint8_t *data;
	size_t len;
};

static void *writer(void *arg)
{
	struct big *b = arg;
	ferry__chan_put_be64(b->w, 0x0102030405060708ull);
	/* External buffers interleaved with small items, beyond the iov limit. */
	for (size_t off = 0; off < b->len; off += 4096) {
		ferry__chan_put_be32(b->w, (uint32_t)off);
		ferry__chan_put_external(b->w, b->data + off, 4096);
	}
	ferry__chan_put_u8(b->w, 0xee);
	ferry__chan_flush(b->w);
	return NULL;
}

static void t_roundtrip(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	struct big b = { &w, malloc(8u << 20), 8u << 20 };
	for (size_t i = 0; i < b.len; i++)
		b.data[i] = (uint8_t)(i * 7 + (i >> 12));
	pthread_t t;
	pthread_create(&t, NULL, writer, &b);
	uint64_t v64;
	assert_int_equal(ferry__chan_get_be64(&r, &v64), 0);
	assert_true(v64 == 0x0102030405060708ull);
	uint8_t *dst = malloc(b.len);
	for (size_t off = 0; off < b.len; off += 4096) {
		uint32_t v;
		assert_int_equal(ferry__chan_get_be32(&r, &v), 0);
		assert_int_equal(v, off);
		assert_int_equal(ferry__chan_read_direct(&r, dst + off, 4096), 0);
	}
	uint8_t e;
	assert_int_equal(ferry__chan_get_u8(&r, &e), 0);
	assert_int_equal(e, 0xee);
	assert_memory_equal(dst, b.data, b.len);
	pthread_join(t, NULL);
	assert_int_equal(w.out_bytes, 8 + b.len + b.len / 4096 * 4 + 1);
	assert_int_equal(ferry__chan_offset(&r), w.out_bytes);
	free(dst);
	free(b.data);
	ferry__chan_close(&w);
	ferry__chan_close(&r);
}

/*
 * A read-ahead bound: a buffered read of a 32-byte header takes at most
 * 100 bytes from the socket, so the payload after it stays there for
 * read_direct (not copied through ibuf), and the round trip is exact.
 */
static void t_read_ahead(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	ferry__chan_read_ahead(&r, 100);
	uint8_t hdr[32], payload[8192], got[sizeof(payload)];
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 13 + 1);
	memset(hdr, 0x5a, sizeof(hdr));
	ferry__chan_put(&w, hdr, sizeof(hdr));
	ferry__chan_put_external(&w, payload, sizeof(payload));
	assert_int_equal(ferry__chan_flush(&w), 0);
	uint8_t h[sizeof(hdr)];
	assert_int_equal(ferry__chan_read(&r, h, sizeof(h)), 0);
	assert_memory_equal(h, hdr, sizeof(hdr));
	assert_int_equal(r.ilen, 100); /* the bound, not all 8224 bytes queued */
	assert_int_equal(ferry__chan_read_direct(&r, got, sizeof(got)), 0);
	assert_memory_equal(got, payload, sizeof(payload));
	assert_int_equal(ferry__chan_offset(&r), sizeof(hdr) + sizeof(payload));
	/* Out of range: 0 reads a byte at a time, beyond the buffer its size. */
	ferry__chan_read_ahead(&r, 0);
	assert_int_equal(r.iahead, 1);
	ferry__chan_read_ahead(&r, FERRY_CHAN_IBUF + 1);
	assert_int_equal(r.iahead, FERRY_CHAN_IBUF);
	ferry__chan_close(&w);
	ferry__chan_close(&r);
}

static void t_truncated_and_sticky(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	ferry__chan_put_be16(&w, 0xabcd);
	ferry__chan_put_u8(&w, 1);
	assert_int_equal(ferry__chan_flush(&w), 0);
	shutdown(w.fd, SHUT_WR);
	uint16_t v16;
	uint32_t v32;
	assert_int_equal(ferry__chan_get_be16(&r, &v16), 0);
	assert_int_equal(v16, 0xabcd);
	ferry__chan_ctx(&r, "test record");
	assert_int_equal(ferry__chan_get_be32(&r, &v32), FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg,
			    "truncated stream: end of data with 3 bytes missing (test record at offset 2)");
	/* Sticky: later reads fail the same way and the message stays the first. */
	assert_int_equal(ferry__chan_get_be16(&r, &v16), FERRY_EBADSTREAM);
	assert_int_equal(ferry__chan_fail(&r, -EINVAL, "other"), FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg,
			    "truncated stream: end of data with 3 bytes missing (test record at offset 2)");
	ferry__chan_close(&w);
	ferry__chan_close(&r);
}

/* A protocol error with bytes still buffered: get_u8's fast path fails too (found by fuzz-devstate). */
static void t_sticky_with_buffered_bytes(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	ferry__chan_put_be32(&w, 7);
	ferry__chan_put_u8(&w, 9);
	assert_int_equal(ferry__chan_flush(&w), 0);
	uint32_t v32;
	uint8_t v8 = 0;
	assert_int_equal(ferry__chan_get_be32(&r, &v32), 0);
	assert_int_equal(ferry__chan_fail(&r, FERRY_EBADSTREAM, "bad %u", v32), FERRY_EBADSTREAM);
	assert_int_equal(ferry__chan_get_u8(&r, &v8), FERRY_EBADSTREAM);
	assert_int_equal(v8, 0);
	assert_int_equal(ferry__chan_offset(&r), 4);
	ferry__chan_close(&w);
	ferry__chan_close(&r);
}

/* EOF before a record's first byte is a close by the peer, named as set; no record named: truncated. */
static void t_closed_between_records(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	r.peer = "source";
	ferry__chan_put_u8(&w, 7);
	assert_int_equal(ferry__chan_flush(&w), 0);
	shutdown(w.fd, SHUT_WR);
	uint8_t v;
	ferry__chan_ctx(&r, "record");
	assert_int_equal(ferry__chan_get_u8(&r, &v), 0);
	ferry__chan_ctx(&r, "record");
	assert_int_equal(ferry__chan_get_u8(&r, &v), -EPIPE);
	assert_string_equal(r.in_err.msg, "the source closed the connection before the migration "
					 "completed (record at offset 1)");
	ferry__chan_close(&w);
	ferry__chan_close(&r);
	pair(&w, &r);
	shutdown(w.fd, SHUT_WR);
	assert_int_equal(ferry__chan_get_u8(&r, &v), FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg, "truncated stream: end of data with 1 bytes missing (at offset 0)");
	/* A message taken whole. */
	assert_int_equal(ferry__chan_fail_msg(&w, FERRY_EPEER, "as is"), FERRY_EPEER);
	assert_string_equal(w.in_err.msg, "as is");
	ferry__chan_close(&w);
	ferry__chan_close(&r);
}

static void t_write_to_closed_peer(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	ferry__chan_close(&r);
	static uint8_t page[4096];
	ferry__chan_put_external(&w, page, sizeof(page));
	assert_int_equal(ferry__chan_flush(&w), -EPIPE);
	/* Sticky, and queued data is dropped rather than kept forever. */
	ferry__chan_put_u8(&w, 1);
	assert_int_equal(ferry__chan_flush(&w), -EPIPE);
	assert_int_equal(ferry__chan_pending(&w), 0);
	ferry__chan_close(&w);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_roundtrip),
		cmocka_unit_test(t_read_ahead),
		cmocka_unit_test(t_truncated_and_sticky),
		cmocka_unit_test(t_sticky_with_buffered_bytes),
		cmocka_unit_test(t_closed_between_records),
		cmocka_unit_test(t_write_to_closed_peer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
