/* SPDX-License-Identifier: MIT */
/*
 * The migration address of `migrate` and `migrate-incoming`: QEMU 7.2's
 * `uri`, or QEMU 8.2's `channels` (a list of MigrationChannel), turned
 * into Ferry's URI by one function with QEMU's messages.
 *
 * DESIGN: the checks follow QEMU's visitor: members by path
 * ("Parameter 'channels[0].addr.host' is missing"), enums by their bare
 * member name ("Parameter 'transport' does not accept value 'x'"). Ferry
 * moves a migration over a socket only: transports and socket types QEMU
 * has and Ferry lacks (exec, rdma, vsock) are refused with a Ferry
 * message; members QEMU's socket addresses have beyond host/port/path/str
 * (numeric, ipv4, keep-alive, abstract, ...) are unexpected, as in a
 * server without them. A socket of type fd ({"str": NAME}) is the URI
 * fd:NAME (host-fds.c).
 *
 * Thread: any (no state).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "host.h"

/* A mandatory string member of obj, checked as QEMU's visitor does. */
static const char *member_str(json_t *obj, const char *key, const char *path, char *err,
			      size_t elen)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		snprintf(err, elen, "Parameter '%s%s' is missing", path, key);
	else if (!json_is_string(v))
		snprintf(err, elen, "Invalid parameter type for '%s%s', expected: string", path, key);
	return json_string_value(v);
}

/* value is one of names (NULL-terminated); else QEMU's enum message. */
static bool enum_ok(const char *key, const char *value, const char *const *names, char *err,
		    size_t elen)
{
	for (; *names; names++)
		if (!strcmp(*names, value))
			return true;
	snprintf(err, elen, "Parameter '%s' does not accept value '%s'", key, value);
	return false;
}

/* A SocketAddress of type inet or unix (path "channels[0].addr.") into uri. */
static int socket_uri(json_t *addr, const char *path, char *uri, size_t ulen, char *err,
		      size_t elen)
{
	static const char *const types[] = { "inet", "unix", "vsock", "fd", NULL };
	static const ferry_qmp_arg inet[] = {
		{ "transport", FERRY_QMP_STR, false }, { "type", FERRY_QMP_STR, false },
		{ "host", FERRY_QMP_STR, false },      { "port", FERRY_QMP_STR, false },
		{ NULL },
	};
	static const ferry_qmp_arg unix_[] = {
		{ "transport", FERRY_QMP_STR, false }, { "type", FERRY_QMP_STR, false },
		{ "path", FERRY_QMP_STR, false },      { NULL },
	};
	static const ferry_qmp_arg fd[] = {
		{ "transport", FERRY_QMP_STR, false }, { "type", FERRY_QMP_STR, false },
		{ "str", FERRY_QMP_STR, false },       { NULL },
	};
	const char *type = member_str(addr, "type", path, err, elen);
	if (!type || !enum_ok("type", type, types, err, elen))
		return -EINVAL;
	bool is_inet = !strcmp(type, "inet"), is_fd = !strcmp(type, "fd");
	if (!is_inet && !is_fd && strcmp(type, "unix")) {
		snprintf(err, elen,
			 "Socket type '%s' is not supported by Ferry (expected inet, unix or fd)", type);
		return -EINVAL;
	}
	if (ferry_qmp_check_args(addr, is_inet ? inet : is_fd ? fd : unix_, path, err, elen))
		return -EINVAL;
	if (!is_inet) {
		snprintf(uri, ulen, is_fd ? "fd:%s" : "unix:%s",
			 json_string_value(json_object_get(addr, is_fd ? "str" : "path")));
		return 0;
	}
	const char *host = json_string_value(json_object_get(addr, "host"));
	const char *port = json_string_value(json_object_get(addr, "port"));
	snprintf(uri, ulen, strchr(host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s", host, port);
	return 0;
}

/* One MigrationChannel (channels[0]) into uri. */
static int channel_uri(json_t *ch, char *uri, size_t ulen, char *err, size_t elen)
{
	static const ferry_qmp_arg spec[] = {
		{ "channel-type", FERRY_QMP_STR, false },
		{ "addr", FERRY_QMP_OBJECT, false },
		{ NULL },
	};
	static const char *const channel_types[] = { "main", NULL };
	static const char *const transports[] = { "socket", "exec", "rdma", NULL };
	if (!json_is_object(ch)) {
		snprintf(err, elen, "Invalid parameter type for 'channels[0]', expected: object");
		return -EINVAL;
	}
	if (ferry_qmp_check_args(ch, spec, "channels[0].", err, elen) ||
	    !enum_ok("channel-type", json_string_value(json_object_get(ch, "channel-type")),
		     channel_types, err, elen))
		return -EINVAL;
	json_t *addr = json_object_get(ch, "addr");
	const char *t = member_str(addr, "transport", "channels[0].addr.", err, elen);
	if (!t || !enum_ok("transport", t, transports, err, elen))
		return -EINVAL;
	if (strcmp(t, "socket")) {
		snprintf(err, elen, "Migration transport '%s' is not supported by Ferry (expected socket)", t);
		return -EINVAL;
	}
	return socket_uri(addr, "channels[0].addr.", uri, ulen, err, elen);
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
