/* SPDX-License-Identifier: MIT */
/*
 * A migration channel: buffered, big-endian reads and writes over one
 * connected socket, with zero-copy paths for guest pages.
 *
 * DESIGN: output collects small items (headers) in a fixed buffer and guest
 * pages as iovecs that point straight at guest RAM; ferry__chan_flush()
 * hands both to writev() in order, so a page is copied only once, by the
 * kernel. Input reads ahead into a buffer for small items;
 * ferry__chan_read_direct() drains what is buffered and then recv()s the
 * rest straight into its destination (guest RAM on the destination).
 *
 * Errors are sticky: the first failure (I/O error, EOF, or a protocol error
 * reported by the parser with ferry__chan_fail) is kept in in_err, a
 * ferry_error (util/error.h) whose message names the stream offset, and
 * every later call fails with it. The migration drivers hand in_err on to
 * what query-migrate reports (mig.h: ferry__mig_set_error_from). Reads
 * never write past the buffer they were given.
 *
 * Rate limit: with `rl` set, every write to the kernel (each flush, also
 * the ones the channel does by itself when its iovec array or buffer is
 * full) goes out in grants of the migration's limiter (ratelimit.h), so a
 * writev never carries more than the limiter allows at that moment.
 * `on_write`, if set, runs on the writer thread after each piece written
 * (progress counters move while a long flush is throttled).
 *
 * Control hash: with ferry__chan_ctl_start(), each direction keeps an
 * XXH3-64 of its "control bytes": everything written with put (not
 * put_external) and everything read with read/get/skip (not read_direct).
 * Payloads go external/direct on both sides and carry their own
 * checksums, so the two ends' hashes agree exactly when every other byte
 * arrived as sent (stream/sum.h: DIGEST compares them). Hashing is lazy:
 * obuf's bytes when a segment is sealed, ibuf's before a refill or a
 * direct read, so a be32 costs no call.
 *
 * Thread: one reader and one writer at a time; they may be different
 * threads (the return path writes on the destination while its main thread
 * reads) because input and output state are disjoint. Cancel from any
 * thread with ferry__chan_shutdown().
 */
#ifndef FERRY_STREAM_CHAN_H
#define FERRY_STREAM_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t inline: nothing to allocate */
#include <xxhash.h>

#include "stream/ratelimit.h"
#include "util/error.h"

#define FERRY_CHAN_OBUF 65536
#define FERRY_CHAN_IBUF 65536
#define FERRY_CHAN_IOV 64

typedef struct ferry_chan {
	int fd;
	/*
	 * TLS (transport/tls.h): NULL for plaintext; else every read and
	 * write goes through the session, which the channel owns.
	 */
	struct ferry_tls *tls;

	/* Output side (the writer thread). */
	uint8_t *obuf;
	size_t olen;      /* bytes used in obuf */
	size_t oseg;      /* start of the obuf segment not yet in iov */
	struct iovec iov[FERRY_CHAN_IOV];
	int iovcnt;
	size_t iov_bytes; /* bytes queued in iov */
	uint64_t out_bytes; /* bytes handed to the kernel so far */
	int out_err;      /* sticky output error (negative errno) */
	ferry_ratelimit *rl; /* NULL: not limited; set by the writer before use */
	uint8_t *stage;   /* sends copy through it (ferry__chan_stage), or NULL */
	void (*on_write)(void *opaque); /* after each piece written, or NULL */
	void *on_write_opaque;

	/* Input side (the reader thread). */
	uint8_t *ibuf;
	size_t ipos, ilen;
	size_t iahead;      /* a refill reads at most this (ferry__chan_read_ahead) */
	uint64_t in_offset; /* stream offset of ibuf[ipos] */
	ferry_error in_err; /* sticky input error (error.h), with its message */
	const char *in_ctx; /* record being parsed, for messages */
	const char *peer;   /* who writes to us, for messages ("source"); NULL: "peer" */
	uint64_t in_rec;    /* stream offset where that record starts */

	/*
	 * Integrity (stream/sum.h): NULL when the stream carries no
	 * checksums. Set before the channel's first record; sum_seq counts
	 * the guest-data records of the channel's one data direction
	 * (written by the source, read by the destination).
	 */
	struct ferry_sums *sums;
	uint32_t sum_carrier;
	uint64_t sum_seq;
	/*
	 * Control hashes (ctl false: off): ctl_out by the writer, over obuf up to
	 * ohashed; ctl_in by the reader, over ibuf up to ihashed (bytes before
	 * ihashed were hashed or went to a direct read).
	 */
	bool ctl;
	XXH3_state_t ctl_out, ctl_in;
	size_t ohashed, ihashed;
} ferry_chan;

/* Takes ownership of fd. Returns 0 or -ENOMEM. */
int ferry__chan_init(ferry_chan *c, int fd);
/*
 * Buffered reads (read/get/skip) take at most n bytes from the socket at a
 * time (1..FERRY_CHAN_IBUF; the default is FERRY_CHAN_IBUF). For a stream
 * whose records are a bounded header and then a payload read with
 * read_direct: what a refill takes beyond the header is payload copied
 * twice (socket to ibuf, ibuf to its place). Reader thread.
 */
void ferry__chan_read_ahead(ferry_chan *c, size_t n);
/*
 * From now on, plaintext sends copy the queued bytes through a staging
 * buffer instead of the kernel reading them where they are (guest RAM
 * queued with put_external): x-user-copy, util/kcopy.h. Writer thread,
 * before the first flush. Returns 0 or -ENOMEM.
 */
int ferry__chan_stage(ferry_chan *c);
/*
 * Starts TLS on the channel's connection when cfg has creds (as the
 * endpoint they are; peer names the other side), before anything else
 * was read or written. 0 or a negative errno with *err set.
 */
struct ferry_tls_cfg;
int ferry__chan_tls_open(ferry_chan *c, const struct ferry_tls_cfg *cfg, ferry_error *err);
/* Starts both directions' control hashes (see the top), from the next byte. */
void ferry__chan_ctl_start(ferry_chan *c);
/* The control hash of the bytes written so far (writer) / read so far (reader). */
uint64_t ferry__chan_ctl_out(ferry_chan *c);
uint64_t ferry__chan_ctl_in(ferry_chan *c);
/* Closes fd and frees buffers. */
void ferry__chan_close(ferry_chan *c);
/* Wakes any blocked read/write (shutdown(2)); any thread. */
void ferry__chan_shutdown(ferry_chan *c);

/* Output. Items are queued; flush writes them. */
void ferry__chan_put(ferry_chan *c, const void *p, size_t n);
void ferry__chan_put_u8(ferry_chan *c, uint8_t v);
void ferry__chan_put_be16(ferry_chan *c, uint16_t v);
void ferry__chan_put_be32(ferry_chan *c, uint32_t v);
void ferry__chan_put_be64(ferry_chan *c, uint64_t v);
/* Queues n bytes at p without copying; p must stay valid until flush. */
void ferry__chan_put_external(ferry_chan *c, const void *p, size_t n);
/* Writes everything queued. Returns 0 or the sticky negative errno. */
int ferry__chan_flush(ferry_chan *c);
/* Bytes queued but not yet flushed. */
size_t ferry__chan_pending(const ferry_chan *c);

/*
 * Input. Each returns 0 or the sticky negative errno; on EOF in the middle
 * of an item the error is FERRY_EBADSTREAM with "truncated"; on EOF before
 * the first byte of the record named by ferry__chan_ctx(), -EPIPE with
 * "the PEER closed the connection before the migration completed".
 */
int ferry__chan_read(ferry_chan *c, void *p, size_t n);
int ferry__chan_read_direct(ferry_chan *c, void *p, size_t n);
int ferry__chan_skip(ferry_chan *c, size_t n);
int ferry__chan_get_u8(ferry_chan *c, uint8_t *v);
int ferry__chan_get_be16(ferry_chan *c, uint16_t *v);
int ferry__chan_get_be32(ferry_chan *c, uint32_t *v);
int ferry__chan_get_be64(ferry_chan *c, uint64_t *v);
/* Stream offset of the next byte to be read. */
static inline uint64_t ferry__chan_offset(const ferry_chan *c)
{
	return c->in_offset;
}
/* Names the record about to be parsed (for error messages) and notes its offset. */
static inline void ferry__chan_ctx(ferry_chan *c, const char *what)
{
	c->in_ctx = what;
	c->in_rec = c->in_offset;
}
/* Renames the current record once its kind is known; keeps its offset. */
static inline void ferry__chan_ctx_name(ferry_chan *c, const char *what)
{
	c->in_ctx = what;
}
/*
 * Marks the input broken with a protocol error: err (negative) and a
 * message that gets " (RECORD at offset N)" appended, N being where the
 * record named by ferry__chan_ctx() starts. Returns err.
 */
int ferry__chan_fail(ferry_chan *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The same with msg as the whole message (no record or offset appended). */
int ferry__chan_fail_msg(ferry_chan *c, int err, const char *msg);

/* Big-endian helpers for buffers. */
static inline void ferry__st_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void ferry__st_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void ferry__st_be64(uint8_t *p, uint64_t v)
{
	ferry__st_be32(p, (uint32_t)(v >> 32));
	ferry__st_be32(p + 4, (uint32_t)v);
}
static inline uint16_t ferry__ld_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t ferry__ld_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t ferry__ld_be64(const uint8_t *p)
{
	return (uint64_t)ferry__ld_be32(p) << 32 | ferry__ld_be32(p + 4);
}

#endif /* FERRY_STREAM_CHAN_H */
