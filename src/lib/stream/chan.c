/* SPDX-License-Identifier: MIT */
/*
 * Migration channel I/O (see chan.h for the design).
 */
#include "stream/chan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ferry/common.h"
#include "transport/tls.h"
#include "transport/transport.h"

int ferry__chan_init(ferry_chan *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->obuf = malloc(FERRY_CHAN_OBUF);
	c->ibuf = malloc(FERRY_CHAN_IBUF);
	c->iahead = FERRY_CHAN_IBUF;
	if (!c->obuf || !c->ibuf) {
		free(c->obuf);
		free(c->ibuf);
		c->obuf = c->ibuf = NULL;
		return -ENOMEM;
	}
	return 0;
}

void ferry__chan_read_ahead(ferry_chan *c, size_t n)
{
	c->iahead = n < 1 ? 1 : n > FERRY_CHAN_IBUF ? FERRY_CHAN_IBUF : n;
}

int ferry__chan_stage(ferry_chan *c)
{
	if (!c->stage && !(c->stage = malloc(FERRY_SEND_STAGE)))
		return -ENOMEM;
	return 0;
}

int ferry__chan_tls_open(ferry_chan *c, const ferry_tls_cfg *cfg, ferry_error *err)
{
	if (!cfg->creds || c->tls)
		return 0;
	return ferry__tls_open(cfg, c->fd, c->peer ? c->peer : "peer", &c->tls, err);
}

void ferry__chan_ctl_start(ferry_chan *c)
{
	if (c->ctl)
		return;
	c->ctl = true;
	XXH3_64bits_reset(&c->ctl_out);
	XXH3_64bits_reset(&c->ctl_in);
	c->ohashed = c->olen;
	c->ihashed = c->ipos;
}

/* Folds obuf's bytes not hashed yet into ctl_out. */
static void hash_out(ferry_chan *c)
{
	if (c->ctl && c->olen > c->ohashed)
		XXH3_64bits_update(&c->ctl_out, c->obuf + c->ohashed, c->olen - c->ohashed);
	c->ohashed = c->olen;
}

/* Folds the ibuf bytes consumed by buffered reads and not hashed yet into ctl_in. */
static void hash_in(ferry_chan *c)
{
	if (c->ctl && c->ipos > c->ihashed)
		XXH3_64bits_update(&c->ctl_in, c->ibuf + c->ihashed, c->ipos - c->ihashed);
	c->ihashed = c->ipos;
}

uint64_t ferry__chan_ctl_out(ferry_chan *c)
{
	hash_out(c);
	return c->ctl ? XXH3_64bits_digest(&c->ctl_out) : 0;
}

uint64_t ferry__chan_ctl_in(ferry_chan *c)
{
	hash_in(c);
	return c->ctl ? XXH3_64bits_digest(&c->ctl_in) : 0;
}

void ferry__chan_close(ferry_chan *c)
{
	ferry__tls_close(c->tls);
	c->tls = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->obuf);
	free(c->ibuf);
	free(c->stage);
	c->obuf = c->ibuf = c->stage = NULL;
}

void ferry__chan_shutdown(ferry_chan *c)
{
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
}

/* ---- output ---- */

/* Moves the obuf bytes not yet described by an iovec into one. */
static void seal_segment(ferry_chan *c)
{
	hash_out(c);
	if (c->olen > c->oseg) {
		c->iov[c->iovcnt].iov_base = c->obuf + c->oseg;
		c->iov[c->iovcnt].iov_len = c->olen - c->oseg;
		c->iov_bytes += c->olen - c->oseg;
		c->iovcnt++;
		c->oseg = c->olen;
	}
}

/* One grant's worth of the queued iovecs (ferry__rl_send). */
static int send_piece(void *ctx, struct iovec *iov, int cnt, int first)
{
	ferry_chan *c = ctx;
	(void)first;
	int r = c->tls	  ? ferry__tls_send_all(c->tls, iov, cnt, &c->out_bytes)
		: c->stage ? ferry__sock_send_staged(c->fd, iov, cnt, c->stage, FERRY_SEND_STAGE,
						     &c->out_bytes)
			   : ferry__sock_send_all(c->fd, iov, cnt, &c->out_bytes);
	if (!r && c->on_write)
		c->on_write(c->on_write_opaque);
	return r;
}

int ferry__chan_flush(ferry_chan *c)
{
	if (c->out_err)
		goto drop;
	seal_segment(c);
	int r = ferry__rl_send(c->rl, c->iov, c->iovcnt, send_piece, c);
	if (r)
		c->out_err = r;
drop:
	c->iovcnt = 0;
	c->iov_bytes = 0;
	c->olen = c->oseg = c->ohashed = 0;
	return c->out_err;
}

size_t ferry__chan_pending(const ferry_chan *c)
{
	return c->iov_bytes + (c->olen - c->oseg);
}

void ferry__chan_put(ferry_chan *c, const void *p, size_t n)
{
	const uint8_t *s = p;
	while (n) {
		/* Room for one more iovec is kept so seal_segment never overflows. */
		if (c->olen == FERRY_CHAN_OBUF || c->iovcnt >= FERRY_CHAN_IOV - 1)
			ferry__chan_flush(c);
		size_t k = FERRY_CHAN_OBUF - c->olen;
		if (k > n)
			k = n;
		memcpy(c->obuf + c->olen, s, k);
		c->olen += k;
		s += k;
		n -= k;
	}
}

void ferry__chan_put_u8(ferry_chan *c, uint8_t v)
{
	ferry__chan_put(c, &v, 1);
}

void ferry__chan_put_be16(ferry_chan *c, uint16_t v)
{
	uint8_t b[2];
	ferry__st_be16(b, v);
	ferry__chan_put(c, b, 2);
}

void ferry__chan_put_be32(ferry_chan *c, uint32_t v)
{
	uint8_t b[4];
	ferry__st_be32(b, v);
	ferry__chan_put(c, b, 4);
}

void ferry__chan_put_be64(ferry_chan *c, uint64_t v)
{
	uint8_t b[8];
	ferry__st_be64(b, v);
	ferry__chan_put(c, b, 8);
}

void ferry__chan_put_external(ferry_chan *c, const void *p, size_t n)
{
	if (!n)
		return;
	if (c->iovcnt >= FERRY_CHAN_IOV - 2)
		ferry__chan_flush(c);
	seal_segment(c);
	c->iov[c->iovcnt].iov_base = (void *)p;
	c->iov[c->iovcnt].iov_len = n;
	c->iov_bytes += n;
	c->iovcnt++;
}

/* ---- input ---- */

int ferry__chan_fail(ferry_chan *c, int err, const char *fmt, ...)
{
	if (c->in_err.code)
		return c->in_err.code;
	char msg[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->in_ctx)
		return ferry__error_set(&c->in_err, err, "%s (%s at offset %llu)", msg, c->in_ctx,
					(unsigned long long)c->in_rec);
	return ferry__error_set(&c->in_err, err, "%s (at offset %llu)", msg,
				(unsigned long long)c->in_offset);
}

int ferry__chan_fail_msg(ferry_chan *c, int err, const char *msg)
{
	return ferry__error_set(&c->in_err, err, "%s", msg);
}

static int io_fail(ferry_chan *c, ssize_t n, size_t want)
{
	if (n == 0 && c->in_ctx && c->in_offset == c->in_rec) /* between records: a close, not damage */
		return ferry__chan_fail(c, -EPIPE, "the %s closed the connection before the migration completed",
					c->peer ? c->peer : "peer");
	if (n == 0)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"truncated stream: end of data with %zu bytes missing", want);
	int e = errno;
	if (e == EAGAIN || e == EWOULDBLOCK) /* SO_RCVTIMEO: see ferry__sock_set_link_timeout */
		return ferry__chan_fail(c, -ETIMEDOUT, "link silent: no data within the link timeout");
	if (ferry__error_link_dead(-e))
		return ferry__chan_fail(c, -e, FERRY_LINK_DEAD_FMT, c->peer ? c->peer : "peer");
	if (e == EPROTO && c->tls)
		return ferry__chan_fail(c, -EPROTO, "%s", ferry__tls_error(c->tls));
	return ferry__chan_fail(c, -e, "read error: %s", strerror(e));
}

/* Refills ibuf (which must be empty) with whatever the socket has. */
static int refill(ferry_chan *c, size_t want)
{
	hash_in(c);
	for (;;) {
		ssize_t n = c->tls ? ferry__tls_recv(c->tls, c->ibuf, c->iahead)
				   : recv(c->fd, c->ibuf, c->iahead, 0);
		if (n < 0 && errno == ENOTSOCK) /* a file: postcopy's device package */
			n = read(c->fd, c->ibuf, c->iahead);
		if (n > 0) {
			c->ipos = c->ihashed = 0;
			c->ilen = (size_t)n;
			return 0;
		}
		if (n < 0 && errno == EINTR)
			continue;
		return io_fail(c, n, want);
	}
}

int ferry__chan_read(ferry_chan *c, void *p, size_t n)
{
	uint8_t *d = p;
	if (c->in_err.code)
		return c->in_err.code;
	while (n) {
		if (c->ipos == c->ilen) {
			int r = refill(c, n);
			if (r)
				return r;
		}
		size_t k = c->ilen - c->ipos;
		if (k > n)
			k = n;
		memcpy(d, c->ibuf + c->ipos, k);
		c->ipos += k;
		c->in_offset += k;
		d += k;
		n -= k;
	}
	return 0;
}

int ferry__chan_read_direct(ferry_chan *c, void *p, size_t n)
{
	uint8_t *d = p;
	if (c->in_err.code)
		return c->in_err.code;
	hash_in(c);
	size_t k = c->ilen - c->ipos;
	if (k > n)
		k = n;
	memcpy(d, c->ibuf + c->ipos, k);
	c->ipos += k;
	c->ihashed = c->ipos; /* payload: not control bytes */
	c->in_offset += k;
	d += k;
	n -= k;
	while (n) {
		ssize_t r = c->tls ? ferry__tls_recv(c->tls, d, n) : recv(c->fd, d, n, MSG_WAITALL);
		if (r < 0 && errno == ENOTSOCK)
			r = read(c->fd, d, n);
		if (r > 0) {
			c->in_offset += (uint64_t)r;
			d += r;
			n -= (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		return io_fail(c, r, n);
	}
	return 0;
}

int ferry__chan_skip(ferry_chan *c, size_t n)
{
	uint8_t tmp[4096];
	while (n) {
		size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
		int r = ferry__chan_read(c, tmp, k);
		if (r)
			return r;
		n -= k;
	}
	return 0;
}

int ferry__chan_get_u8(ferry_chan *c, uint8_t *v)
{
	if (c->ipos < c->ilen && !c->in_err.code) { /* the fast path keeps errors sticky too */
		*v = c->ibuf[c->ipos++];
		c->in_offset++;
		return 0;
	}
	return ferry__chan_read(c, v, 1);
}

int ferry__chan_get_be16(ferry_chan *c, uint16_t *v)
{
	uint8_t b[2];
	int r = ferry__chan_read(c, b, 2);
	if (!r)
		*v = ferry__ld_be16(b);
	return r;
}

int ferry__chan_get_be32(ferry_chan *c, uint32_t *v)
{
	uint8_t b[4];
	int r = ferry__chan_read(c, b, 4);
	if (!r)
		*v = ferry__ld_be32(b);
	return r;
}

int ferry__chan_get_be64(ferry_chan *c, uint64_t *v)
{
	uint8_t b[8];
	int r = ferry__chan_read(c, b, 8);
	if (!r)
		*v = ferry__ld_be64(b);
	return r;
}
