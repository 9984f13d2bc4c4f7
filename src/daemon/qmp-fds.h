/* SPDX-License-Identifier: MIT */
/*
 * File descriptors a QMP client passes with SCM_RIGHTS over a unix socket,
 * kept per connection by the QMP server (qmp.c); private to it.
 *
 * DESIGN: as QEMU's socket chardev and monitor do it:
 *  - Received. The fds of the client's last read that carried any, until
 *    a command takes one (getfd, add-fd take the first and close the
 *    rest) or the next read with fds replaces them (the unclaimed ones
 *    are closed). A read takes at most QMP_FDS_PER_READ: the kernel
 *    closes the ones that do not fit (MSG_CTRUNC).
 *  - Named. getfd's fds by name, until closefd, a migration's fd:NAME
 *    (which takes it) or the end of the connection; at most QMP_FDS_NAMED
 *    per connection. A name given again replaces (and closes) the fd it
 *    named.
 *
 * Thread: loop thread only.
 */
#ifndef FERRY_DAEMON_QMP_FDS_H
#define FERRY_DAEMON_QMP_FDS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "qmp.h"

#define QMP_FDS_PER_READ 16
#define QMP_FDS_NAMED FERRY_QMP_FDS_NAMED

typedef struct qmp_named_fd {
	char *name;
	int fd;
} qmp_named_fd;

typedef struct qmp_fdtab {
	int recv[QMP_FDS_PER_READ]; /* the last batch, unclaimed */
	unsigned nrecv;
	qmp_named_fd named[QMP_FDS_NAMED];
	unsigned nnamed;
} qmp_fdtab;

/*
 * recv() on sock that also takes SCM_RIGHTS fds (CLOEXEC) into t; *got
 * tells whether this read carried any. Returns as recv(), errno set.
 */
ssize_t qmp_fds_recv(qmp_fdtab *t, int sock, void *buf, size_t len, bool *got);

/* Closes every fd of t and frees the names. */
void qmp_fds_clear(qmp_fdtab *t);

/* Takes the first received fd (the caller owns it), closes the rest; or -ENOENT. */
int qmp_fds_take_received(qmp_fdtab *t);

/* Names fd (taken, also on failure). Returns 0, -E2BIG (table full) or -ENOMEM. */
int qmp_fds_name(qmp_fdtab *t, const char *name, int fd);

/* Takes the fd named name out of t (the caller owns it); or -ENOENT. */
int qmp_fds_take_named(qmp_fdtab *t, const char *name);

#endif
