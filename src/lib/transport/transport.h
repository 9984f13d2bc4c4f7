/* SPDX-License-Identifier: MIT */
/*
 * Socket transports for migration URIs: "tcp:HOST:PORT" (HOST may be a name,
 * an IPv4 address or a bracketed IPv6 address) and "unix:PATH".
 * Each function returns 0 or a negative errno and, on failure, writes a
 * message into err. Thread: any.
 */
#ifndef FERRY_TRANSPORT_H
#define FERRY_TRANSPORT_H

#include <stdatomic.h>
#include <stddef.h>

/* Checks the syntax only. */
int ferry__uri_check(const char *uri, char *err, size_t err_len);
/* Binds and listens; *fd is the listening socket (CLOEXEC). */
int ferry__sock_listen(const char *uri, int *fd, char *err, size_t err_len);
/*
 * Connects; *fd is the connected (blocking) socket. A set *cancel (may be
 * NULL) interrupts the connect within 100 ms: -ECANCELED.
 */
int ferry__sock_connect(const char *uri, int *fd, const atomic_bool *cancel, char *err,
			size_t err_len);
/*
 * Accepts one connection on a listening socket; -EINVAL once the listening
 * socket was shut down (how a pending accept is cancelled).
 */
int ferry__sock_accept(int lfd, int *fd);
/*
 * Writes all of iov[0..cnt) to a socket, retrying partial writes; the iovecs
 * are consumed (modified). sendmsg with MSG_NOSIGNAL, so a dead peer is
 * -EPIPE, not a signal. *sent (if not NULL) grows by the bytes written,
 * also on failure. Returns 0 or a negative errno.
 */
struct iovec;
#include <stdint.h>
int ferry__sock_send_all(int fd, struct iovec *iov, int cnt, uint64_t *sent);
/* Options for a migration data socket (no delay for the return path). */
void ferry__sock_tune(int fd);
/*
 * Postcopy link supervision: a read or write that makes no progress for
 * ms / 2 fails (SO_RCVTIMEO/SO_SNDTIMEO, -EAGAIN); on TCP also
 * TCP_USER_TIMEOUT and keepalive probes. ms = 0 clears the timeouts.
 */
void ferry__sock_set_link_timeout(int fd, unsigned ms);

#endif
