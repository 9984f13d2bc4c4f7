/* SPDX-License-Identifier: MIT */
/*
 * Sockets on Ferry addresses, for control planes that embed libferry: the
 * same "tcp:HOST:PORT" (HOST a name, an IPv4 address or a bracketed IPv6
 * address; an empty HOST listens on every address) and "unix:PATH" syntax,
 * and the same rules, as the migration channels use (ferry_uri_validate()
 * checks the syntax alone).
 *
 * Unix socket files: a listener never takes over a path. Nothing there is
 * fine; a socket that no server answers on (connect: ECONNREFUSED) is stale
 * and replaced; a live server's socket (-EADDRINUSE, "PATH is in use by
 * another server") and any other kind of file (-ENOTSOCK, "PATH exists and
 * is not a socket") are refused and left alone. Removing the file when the
 * listener's life ends is the caller's: ferry_sock_file_note() right after
 * the listen, ferry_sock_file_remove() at the end, which removes it only
 * if the path still is that file (not a successor's).
 *
 * Every function returns 0 or a negative errno; those with an err buffer
 * write a message there on failure ("cannot listen on 'unix:/x': /x is in
 * use by another server", "cannot connect to 'tcp:h:1': Connection
 * refused"). Thread: any (the objects are the caller's).
 */
#ifndef FERRY_TRANSPORT_H
#define FERRY_TRANSPORT_H

#include "ferry/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ferry_sock_listen() flags. */
#define FERRY_SOCK_NONBLOCK 0x1u /* the listening socket is non-blocking */

/*
 * Binds and listens on addr (backlog 16; tcp: with SO_REUSEADDR); *fd is
 * the listening socket, CLOEXEC. Returns 0, -EINVAL (syntax, or flags not
 * known), -EHOSTUNREACH (HOST does not resolve), -EADDRINUSE, -ENOTSOCK or
 * the bind/listen error.
 */
FERRY_EXTERN int ferry_sock_listen(const char *addr, unsigned flags, int *fd, char *err,
				   size_t err_len);

/*
 * Connects to addr; *fd is the connected socket, blocking and CLOEXEC (tcp:
 * with TCP_NODELAY). A unix listener whose backlog is full is retried
 * every 10 ms. Returns 0, -EINVAL, -EHOSTUNREACH or the connect error.
 */
FERRY_EXTERN int ferry_sock_connect(const char *addr, int *fd, char *err, size_t err_len);

/*
 * The address a listening socket is bound to: "tcp:HOST:PORT" with the
 * port the kernel chose for port 0 (IPv6 hosts bracketed), or "unix:PATH".
 * Returns 0 or a negative errno.
 */
FERRY_EXTERN int ferry_sock_bound(int fd, char *buf, size_t len);

/* A unix socket file a listener created (zeroed: none). */
typedef struct ferry_sock_file {
	char path[108];
	unsigned long long dev, ino;
} ferry_sock_file;

/*
 * Records the socket file now at a "unix:PATH" addr (call it right after
 * the listen); any other addr, or a path that is not a socket, records
 * nothing. f's previous contents are forgotten, not removed.
 */
FERRY_EXTERN void ferry_sock_file_note(ferry_sock_file *f, const char *addr);

/* Removes the recorded file if the path still is that file, then forgets it. */
FERRY_EXTERN void ferry_sock_file_remove(ferry_sock_file *f);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_TRANSPORT_H */
