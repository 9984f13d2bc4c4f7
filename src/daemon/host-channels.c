/* SPDX-License-Identifier: MIT */
/*
 * The migration address of `migrate` and `migrate-incoming`: QEMU 7.2's
 * `uri`, or QEMU 8.2's `channels` (a list of MigrationChannel), turned
 * into Ferry's URI by one function with QEMU's messages.
 *
 * DESIGN: the QMP server has already checked `channels` against its
 * type (host-schema.c's MigrationChannel: QEMU's members, enums and
 * messages, by path). What is left is QEMU's rules across members (uri
 * or channels, one channel) and what Ferry lacks: it moves a migration
 * over a socket only, so transports and socket types QEMU has and Ferry
 * lacks (exec, rdma, vsock) are refused with a Ferry message. A socket
 * of type fd ({"str": NAME}) is the URI fd:NAME (host-fds.c).
 *
 * Thread: any (no state).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "host.h"

/* One MigrationChannel (already checked) into uri. */
static int channel_uri(json_t *ch, char *uri, size_t ulen, char *err, size_t elen)
{
	json_t *addr = json_object_get(ch, "addr");
	const char *t = json_string_value(json_object_get(addr, "transport"));
	if (strcmp(t, "socket")) {
		snprintf(err, elen, "Migration transport '%s' is not supported by Ferry (expected socket)", t);
		return -EINVAL;
	}
	const char *type = json_string_value(json_object_get(addr, "type"));
	bool is_fd = !strcmp(type, "fd");
	if (is_fd || !strcmp(type, "unix")) {
		snprintf(uri, ulen, is_fd ? "fd:%s" : "unix:%s",
			 json_string_value(json_object_get(addr, is_fd ? "str" : "path")));
		return 0;
	}
	if (strcmp(type, "inet")) {
		snprintf(err, elen,
			 "Socket type '%s' is not supported by Ferry (expected inet, unix or fd)", type);
		return -EINVAL;
	}
	const char *host = json_string_value(json_object_get(addr, "host"));
	const char *port = json_string_value(json_object_get(addr, "port"));
	snprintf(uri, ulen, strchr(host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s", host, port);
	return 0;
}

int host_migration_uri(json_t *args, const char *cmd, char *uri, size_t ulen, char *err, size_t elen)
{
	const char *u = json_string_value(json_object_get(args, "uri"));
	json_t *chs = json_object_get(args, "channels");
	size_t n = json_array_size(chs); /* QEMU: an empty list is no list */
	if (u && n) {
		snprintf(err, elen, "'uri' and 'channels' arguments are mutually exclusive; exactly one "
			 "of the two should be present in '%s' qmp command ", cmd);
		return -EINVAL;
	}
	if (n > 1) {
		snprintf(err, elen, "Channel list has more than one entries");
		return -EINVAL;
	}
	if (n)
		return channel_uri(json_array_get(chs, 0), uri, ulen, err, elen);
	if (!u) {
		snprintf(err, elen, "neither 'uri' or 'channels' argument are specified in '%s' qmp command ",
			 cmd);
		return -EINVAL;
	}
	snprintf(uri, ulen, "%s", u);
	return 0;
}
