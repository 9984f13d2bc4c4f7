/* SPDX-License-Identifier: MIT */
/*
 * File descriptor passing, as QEMU's monitor does it: getfd/closefd name
 * an fd the client passed with SCM_RIGHTS on its own connection (the QMP
 * server keeps them: qmp.h), add-fd/remove-fd/query-fdsets keep fds in
 * numbered sets shared by every connection, and a migration's "fd:NAME"
 * URI takes the named fd as its socket.
 *
 * DESIGN:
 *  - The fd sets are process-wide, as QEMU's mon_fdsets, in a fixed table
 *    of FDSET_FDS slots (one host per process; nothing to free at exit).
 *    A client is hostile: a full table refuses add-fd (the fd is closed),
 *    opaque strings are bounded. Ferry opens no path, so nothing uses a
 *    set's fds (QEMU's /dev/fdset/ID): remove-fd closes an fd at once and
 *    a set without fds is gone, where QEMU keeps removed fds listed while
 *    a monitor is connected.
 *  - fd:NAME takes the named fd off the connection (QEMU's
 *    monitor_get_fd); libferry owns it from then on. One fd is one
 *    connection: an outgoing migration with multifd or postcopy-preempt
 *    (more connections) is refused before the fd is taken.
 *
 * Thread: loop thread only.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "host.h"

#define FDSET_FDS 64       /* fds in all sets together, at most */
#define FD_NAME_MAX 255    /* getfd's fdname, bytes */
#define FD_OPAQUE_MAX 255  /* add-fd's opaque, bytes */

typedef struct fdset_fd {
	bool used;
	int64_t set;
	int fd;
	uint64_t seq; /* order of arrival within the set */
	bool has_opaque;
	char opaque[FD_OPAQUE_MAX + 1];
} fdset_fd;

static fdset_fd fdsets[FDSET_FDS];
static uint64_t fdset_seq;

static bool set_exists(int64_t id)
{
	for (int i = 0; i < FDSET_FDS; i++)
		if (fdsets[i].used && fdsets[i].set == id)
			return true;
	return false;
}

/* The commands' arguments and replies, for host_commands (QEMU's types). */
const ferry_qmp_arg host_getfd_args[] = { { "fdname", FERRY_QMP_STR }, { NULL } };
const ferry_qmp_arg host_add_fd_args[] = {
	{ "fdset-id", FERRY_QMP_INT, true },
	{ "opaque", FERRY_QMP_STR, true },
	{ NULL },
};
const ferry_qmp_arg host_remove_fd_args[] = {
	{ "fdset-id", FERRY_QMP_INT },
	{ "fd", FERRY_QMP_INT, true },
	{ NULL },
};
static const ferry_qmp_arg add_fd_info[] = {
	{ "fdset-id", FERRY_QMP_INT },
	{ "fd", FERRY_QMP_INT },
	{ NULL },
};
const ferry_qmp_arg host_ret_add_fd = { NULL, FERRY_QMP_OBJECT, .members = add_fd_info };
static const ferry_qmp_arg fdset_fd_info[] = {
	{ "fd", FERRY_QMP_INT },
	{ "opaque", FERRY_QMP_STR, true },
	{ NULL },
};
static const ferry_qmp_arg fdset_fd_t = { NULL, FERRY_QMP_OBJECT, .members = fdset_fd_info };
static const ferry_qmp_arg fdset_info[] = {
	{ "fdset-id", FERRY_QMP_INT },
	{ "fds", FERRY_QMP_ARRAY, .elem = &fdset_fd_t },
	{ NULL },
};
static const ferry_qmp_arg fdset_t = { NULL, FERRY_QMP_OBJECT, .members = fdset_info };
const ferry_qmp_arg host_ret_fdsets = { NULL, FERRY_QMP_ARRAY, .elem = &fdset_t };

void host_cmd_getfd(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	const char *name = json_string_value(json_object_get(args, "fdname"));
	int fd = ferry_qmp_req_take_received_fd(req);
	if (fd < 0) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "No file descriptor supplied via SCM_RIGHTS");
		return;
	}
	int r = isdigit((unsigned char)name[0]) || strlen(name) > FD_NAME_MAX ? -EINVAL : 0;
	if (r)
		close(fd);
	else
		r = ferry_qmp_req_name_fd(req, name, fd);
	if (r == -EINVAL && strlen(name) > FD_NAME_MAX)
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Parameter 'fdname' expects a name of at most %d bytes", FD_NAME_MAX);
	else if (r == -EINVAL)
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Parameter 'fdname' expects a name not starting with a digit");
	else if (r == -E2BIG)
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Too many file descriptors named on this connection (at most %d)",
				    FERRY_QMP_FDS_NAMED);
	else if (r)
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "Cannot keep the file descriptor: %s",
				    strerror(-r));
	else
		ferry_qmp_req_return(req, NULL);
}

void host_cmd_closefd(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	const char *name = json_string_value(json_object_get(args, "fdname"));
	int fd = ferry_qmp_req_take_fd(req, name);
	if (fd < 0) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "File descriptor named '%s' not found", name);
		return;
	}
	close(fd);
	ferry_qmp_req_return(req, NULL);
}

/* add-fd's set: the one asked for (>= 0, created if new), or the lowest id free. */
static int64_t add_fd_set(json_t *args)
{
	json_t *v = json_object_get(args, "fdset-id");
	if (v)
		return json_integer_value(v);
	int64_t id = 0;
	while (set_exists(id))
		id++; /* at most FDSET_FDS sets exist: this ends */
	return id;
}

void host_cmd_add_fd(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	const char *op = json_string_value(json_object_get(args, "opaque"));
	int fd = ferry_qmp_req_take_received_fd(req);
	if (fd < 0) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "No file descriptor supplied via SCM_RIGHTS");
		return;
	}
	int64_t set = add_fd_set(args);
	int slot = 0;
	while (slot < FDSET_FDS && fdsets[slot].used)
		slot++;
	const char *why = set < 0 ? "Parameter 'fdset-id' expects a non-negative value"
			  : op && strlen(op) > FD_OPAQUE_MAX ? "Parameter 'opaque' is too long"
			  : slot == FDSET_FDS ? "Too many file descriptors in fd sets"
					      : NULL;
	if (why) {
		close(fd);
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", why);
		return;
	}
	fdsets[slot] = (fdset_fd){ .used = true, .set = set, .fd = fd, .seq = ++fdset_seq };
	if (op) {
		fdsets[slot].has_opaque = true;
		snprintf(fdsets[slot].opaque, sizeof(fdsets[slot].opaque), "%s", op);
	}
	ferry_qmp_req_return(req, json_pack("{s:I,s:i}", "fdset-id", (json_int_t)set, "fd", fd));
}

void host_cmd_remove_fd(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	json_int_t set = json_integer_value(json_object_get(args, "fdset-id"));
	json_t *fdv = json_object_get(args, "fd");
	unsigned removed = 0;
	for (int i = 0; i < FDSET_FDS; i++) {
		fdset_fd *e = &fdsets[i];
		if (!e->used || e->set != set || (fdv && e->fd != json_integer_value(fdv)))
			continue;
		close(e->fd);
		e->used = false;
		removed++;
	}
	if (removed)
		ferry_qmp_req_return(req, NULL);
	else if (fdv)
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "File descriptor named 'fdset-id:%" JSON_INTEGER_FORMAT
				    ", fd:%" JSON_INTEGER_FORMAT "' not found",
				    set, json_integer_value(fdv));
	else
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "File descriptor named 'fdset-id:%" JSON_INTEGER_FORMAT "' not found",
				    set);
}

/* One set of query-fdsets: its fds in the order they came. */
static json_t *fdset_json(int64_t set)
{
	json_t *fds = json_array();
	for (uint64_t after = 0;;) {
		const fdset_fd *next = NULL;
		for (int i = 0; i < FDSET_FDS; i++) {
			const fdset_fd *e = &fdsets[i];
			if (e->used && e->set == set && e->seq > after && (!next || e->seq < next->seq))
				next = e;
		}
		if (!next)
			break;
		json_t *o = json_pack("{s:i}", "fd", next->fd);
		if (next->has_opaque)
			json_object_set_new(o, "opaque", json_string(next->opaque));
		json_array_append_new(fds, o);
		after = next->seq;
	}
	return json_pack("{s:I,s:o}", "fdset-id", (json_int_t)set, "fds", fds);
}

/* QEMU lists the sets from the highest id down. */
void host_cmd_query_fdsets(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	(void)args;
	json_t *a = json_array();
	for (int64_t below = INT64_MAX;;) {
		int64_t set = -1;
		for (int i = 0; i < FDSET_FDS; i++)
			if (fdsets[i].used && fdsets[i].set < below && fdsets[i].set > set)
				set = fdsets[i].set;
		if (set < 0)
			break;
		json_array_append_new(a, fdset_json(set));
		below = set;
	}
	ferry_qmp_req_return(req, a);
}

bool host_uri_is_fd(const char *uri)
{
	return !strncmp(uri, "fd:", 3);
}

int host_fd_for_migration(host *h, ferry_qmp_req *req, const char *uri, bool outgoing, char *err,
			  size_t elen)
{
	const char *name = uri + 3;
	const char *cap = !outgoing ? NULL
			  : h->params.multifd ? "multifd"
			  : h->params.postcopy_preempt ? "postcopy-preempt"
						      : NULL;
	if (cap) {
		snprintf(err, elen,
			 "Capability %s needs more connections than one: migrate to 'fd:%s' without it, "
			 "or to a tcp: or unix: URI", cap, name);
		return -EINVAL;
	}
	int fd = req ? ferry_qmp_req_take_fd(req, name) : -ENOENT;
	if (fd < 0)
		snprintf(err, elen, "File descriptor named '%s' has not been found", name);
	return fd;
}
