/* SPDX-License-Identifier: MIT */
/*
 * Socket transports for migration URIs: "tcp:HOST:PORT" (HOST may be a name,
 * an IPv4 address or a bracketed IPv6 address) and "unix:PATH".
 * Each function returns 0 or a negative errno and, on failure, sets *err
 * (util/error.h) with a message; the public wrappers copy it into their
 * char buffer. Thread: any. The public face of these, for control
 * planes (listen, connect, bound, socket files), is ferry/transport.h.
 */
#ifndef FERRY_LIB_TRANSPORT_H
#define FERRY_LIB_TRANSPORT_H

#include <stdatomic.h>
#include <stddef.h>

#include "ferry/transport.h"
#include "util/error.h"

/* Checks the syntax only. */
int ferry__uri_check(const char *uri, ferry_error *err);
/* The HOST of a tcp: URI (IPv6 without brackets), "" for unix:. 0 or -EINVAL. */
int ferry__uri_host(const char *uri, char *buf, size_t len);
/*
 * Binds and listens; *fd is the listening socket (CLOEXEC). A unix: path
 * that is a live server's socket (-EADDRINUSE) or not a socket at all
 * (-ENOTSOCK) is refused; a stale socket file (connect: ECONNREFUSED) is
 * replaced. The caller removes the file it created (ferry_sock_file_note).
 */
int ferry__sock_listen(const char *uri, int *fd, ferry_error *err);
/*
 * The address a listening socket is bound to, as a URI: "tcp:HOST:PORT"
 * with the port the kernel chose for port 0 (IPv6 hosts bracketed), or
 * "unix:PATH". Returns 0 or a negative errno.
 */
int ferry__sock_bound(int fd, char *buf, size_t len);
/*
 * Connects; *fd is the connected (blocking) socket. A set *cancel (may be
 * NULL) interrupts the connect within 100 ms: -ECANCELED.
 */
int ferry__sock_connect(const char *uri, int *fd, const atomic_bool *cancel,
			ferry_error *err);
/*
 * Accepts one connection on a listening socket; -EINVAL once the listening
 * socket was shut down (how a pending accept is cancelled).
 */
int ferry__sock_accept(int lfd, int *fd);
/*
 * Accepts one connection on lfd before deadline_ns (ferry__now_ns's clock)
 * while peer_fd (-1: none), an open connection of the same migration,
 * stays up: -ETIMEDOUT past the deadline, -EPIPE once peer_fd's peer has
 * hung up or shut its sending side (it will not connect what it was to),
 * -EINVAL once lfd was shut down (a cancel).
 */
int ferry__sock_accept_by(int lfd, uint64_t deadline_ns, int peer_fd, int *fd);
/*
 * Writes all of iov[0..cnt) to a socket, retrying partial writes; the iovecs
 * are consumed (modified). sendmsg with MSG_NOSIGNAL, so a dead peer is
 * -EPIPE, not a signal. *sent (if not NULL) grows by the bytes written,
 * also on failure. Returns 0 or a negative errno.
 */
struct iovec;
#include <stdint.h>
int ferry__sock_send_all(int fd, struct iovec *iov, int cnt, uint64_t *sent);
/*
 * The same bytes through stage (cap bytes, the caller's, reused): copied
 * there in pieces of up to cap and each piece sent, so that the kernel
 * reads only stage's pages, never guest RAM (x-user-copy, util/kcopy.h).
 * iov is not modified.
 */
int ferry__sock_send_staged(int fd, const struct iovec *iov, int cnt, uint8_t *stage, size_t cap,
			    uint64_t *sent);
/*
 * The size of the staging buffers the senders keep, reused: as the bare
 * program's (bench/bare-copy.c), and this machine's L2. 256 KiB before:
 * four times the sendmsg() calls, each pushing its segments through the
 * loopback; A/B in one run (bench/vs-qemu --base, random-1 preallocated):
 * the source's CPU 0.63-0.86 s for 2 GiB against 0.95-1.09.
 */
#define FERRY_SEND_STAGE (1024u << 10)

/*
 * Sending guest RAM by reference. ferry__sock_send_ref() writes iov[0..cnt)
 * like ferry__sock_send_all(), except that the iovecs with ref[i] set (guest
 * pages) are not copied into socket buffers: vmsplice() puts references to
 * their pages into pipefd, splice() moves them into the socket, and the
 * peer's recv() copies straight out of guest RAM. The others (headers,
 * buffers the caller reuses) are sent with sendmsg(MSG_MORE) as usual.
 *
 * Callers must accept that a referenced page is read when it leaves, not
 * when it was queued: a write to it in between shows in the data. Precopy
 * accepts that: the page was harvested before it was queued, so the write
 * marks it dirty again and a later pass (with the vCPUs stopped at the
 * last) sends it again. Memory must stay mapped only until the call
 * returns (the pipe and the socket hold page references).
 *
 * pipefd: ferry__pipe_open(); after an error it may hold data: close it.
 * Returns 0 or a negative errno (-EINVAL: this fd cannot be spliced to).
 */
int ferry__pipe_open(int pipefd[2]);
int ferry__sock_send_ref(int fd, const int pipefd[2], struct iovec *iov, const uint8_t *ref,
			 int cnt, uint64_t *sent);
/* Options for a migration data socket (no delay for the return path). */
void ferry__sock_tune(int fd);
/*
 * Dead peer detection (every migration connection, x-link-timeout): on
 * TCP, TCP_USER_TIMEOUT and keepalive probes, so that a peer host that
 * stops answering (down, cut off) fails reads and writes with -ETIMEDOUT
 * within about ms plus a few seconds of probes. A peer that answers but
 * sends nothing is not detected. Nothing on other sockets; ms = 0 clears.
 */
void ferry__sock_set_peer_timeout(int fd, unsigned ms);
/*
 * Postcopy link supervision: ferry__sock_set_peer_timeout, and a read or
 * write that makes no progress for ms / 2 fails (SO_RCVTIMEO/SO_SNDTIMEO,
 * -EAGAIN): postcopy's heartbeats keep a live link busy. ms = 0 clears.
 */
void ferry__sock_set_link_timeout(int fd, unsigned ms);
/* Reads only: a read that makes no progress for ms fails (SO_RCVTIMEO, -EAGAIN); 0 clears. */
void ferry__sock_set_read_timeout(int fd, unsigned ms);

/* Bytes written to fd that the peer has not taken yet (SIOCOUTQ); 0 if unknown. */
uint64_t ferry__sock_outq(int fd);

#endif
