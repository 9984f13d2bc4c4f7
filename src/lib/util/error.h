/* SPDX-License-Identifier: MIT */
/*
 * An error that carries its text: a negative errno (or FERRY_E* code) and
 * the message query-migrate will show as error-desc.
 *
 * DESIGN: one type for every place an error's text travels inside the
 * library: a channel's sticky input error (chan.h), a multifd sender's or
 * receiver's first error (multifd.h), and the out-parameter of internal
 * functions that explain their failure (transport.h, place.h,
 * postcopy-dst.h). Setting is sticky: the first error wins and later ones
 * are dropped, so whoever fails first names the cause. A migration takes an
 * error into what it reports only through ferry__mig_set_error_from (mig.h).
 *
 * Thread: a ferry_error has no lock of its own; its owner says what
 * protects it (the channel's reader, the multifd lock, the caller's stack).
 */
#ifndef FERRY_UTIL_ERROR_H
#define FERRY_UTIL_ERROR_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct ferry_error {
	int code;      /* 0: no error; else a negative errno or FERRY_E* code */
	char msg[256]; /* the message; set whenever code is */
} ferry_error;

/*
 * Records code (negative) and the formatted message unless e already holds
 * an error. Returns e->code: code, or the error that was there first.
 */
int ferry__error_set(ferry_error *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int ferry__error_setv(ferry_error *e, int code, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
/* Copies src into dst the same way (sticky; nothing if src holds none). Returns dst->code. */
int ferry__error_copy(ferry_error *dst, const ferry_error *src);
/*
 * A public function's out-parameter: on failure (r != 0) copies e's message
 * into buf (len bytes; nothing when buf is NULL or len 0). Returns r.
 */
int ferry__error_out(int r, const ferry_error *e, char *buf, size_t len);
/* e's message, or, when e holds none, the text of code (ferry_strerror). */
const char *ferry__error_text(const ferry_error *e, int code);

/* True for the errors of a connection the peer closed or reset: a symptom, often of the peer's own error. */
static inline bool ferry__error_lost_conn(int code)
{
	return code == -EPIPE || code == -ECONNRESET;
}

/*
 * A connection whose peer host stopped answering: TCP gave up on an
 * acknowledgement or on keepalive probes (ferry__sock_set_peer_timeout).
 * FERRY_LINK_DEAD_FMT takes the peer's name.
 */
static inline bool ferry__error_link_dead(int code)
{
	return code == -ETIMEDOUT;
}
#define FERRY_LINK_DEAD_FMT "link dead: the %s stopped answering within the link timeout"

#endif /* FERRY_UTIL_ERROR_H */
