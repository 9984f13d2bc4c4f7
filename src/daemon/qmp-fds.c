/* SPDX-License-Identifier: MIT */
/*
 * Per-connection file descriptors of the QMP server (see qmp-fds.h):
 * receiving them with a client's bytes, naming them, taking them.
 *
 * DESIGN: a client is hostile: it may send fds with any read, many at
 * once, never claim them, or name fd after fd. Every fd it passes is
 * either in its table (bounded) or closed at once, and the table is
 * closed with the connection, so a client can never make the daemon hold
 * more than QMP_FDS_PER_READ + QMP_FDS_NAMED of its fds.
 *
 * Thread: loop thread only.
 */
#include "qmp-fds.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void close_received(qmp_fdtab *t)
{
	for (unsigned i = 0; i < t->nrecv; i++)
		close(t->recv[i]);
	t->nrecv = 0;
}

/* The fds of one control message into t (replacing the last batch), or closed. */
static void take_cmsg(qmp_fdtab *t, struct cmsghdr *cm, bool *got)
{
	if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
		return;
	size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	const unsigned char *data = CMSG_DATA(cm);
	if (!*got)
		close_received(t); /* QEMU's chardev: a new batch replaces the unclaimed one */
	*got = true;
	for (size_t i = 0; i < n; i++) {
		int fd;
		memcpy(&fd, data + i * sizeof(int), sizeof(int));
		if (t->nrecv < QMP_FDS_PER_READ)
			t->recv[t->nrecv++] = fd;
		else
			close(fd);
	}
}

ssize_t qmp_fds_recv(qmp_fdtab *t, int sock, void *buf, size_t len, bool *got)
{
	union {
		char buf[CMSG_SPACE(QMP_FDS_PER_READ * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	*got = false;
	ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return n;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		take_cmsg(t, cm, got);
	return n;
}

void qmp_fds_clear(qmp_fdtab *t)
{
	close_received(t);
	for (unsigned i = 0; i < t->nnamed; i++) {
		close(t->named[i].fd);
		free(t->named[i].name);
	}
	t->nnamed = 0;
}

int qmp_fds_take_received(qmp_fdtab *t)
{
	if (!t->nrecv)
		return -ENOENT;
	int fd = t->recv[0];
	for (unsigned i = 1; i < t->nrecv; i++)
		close(t->recv[i]);
	t->nrecv = 0;
	return fd;
}

static qmp_named_fd *find_named(qmp_fdtab *t, const char *name)
{
	for (unsigned i = 0; i < t->nnamed; i++)
		if (!strcmp(t->named[i].name, name))
			return &t->named[i];
	return NULL;
}

int qmp_fds_name(qmp_fdtab *t, const char *name, int fd)
{
	qmp_named_fd *e = find_named(t, name);
	if (e) {
		close(e->fd);
		e->fd = fd;
		return 0;
	}
	char *nm = t->nnamed < QMP_FDS_NAMED ? strdup(name) : NULL;
	if (!nm) {
		close(fd);
		return t->nnamed < QMP_FDS_NAMED ? -ENOMEM : -E2BIG;
	}
	t->named[t->nnamed++] = (qmp_named_fd){ .name = nm, .fd = fd };
	return 0;
}

int qmp_fds_take_named(qmp_fdtab *t, const char *name)
{
	qmp_named_fd *e = find_named(t, name);
	if (!e)
		return -ENOENT;
	int fd = e->fd;
	free(e->name);
	*e = t->named[--t->nnamed];
	return fd;
}
