/* SPDX-License-Identifier: MIT */
/*
 * QMP client (see client.h).
 *
 * DESIGN: a blocking socket read through poll() with deadlines; messages
 * are newline-delimited (bounded at 16 MiB), each parsed with jansson.
 * Events that arrive while a reply is awaited go to a FIFO (bounded: the
 * oldest are dropped past 4096), so a caller that waits for an event after
 * a command sees the ones the command caused.
 *
 * The socket is libferry's (ferry/transport.h): the same address syntax
 * and connect as the migration channels.
 *
 * Thread: the caller's.
 */
#include "client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ferry/transport.h"

#define LINE_MAX_BYTES (16u << 20)
#define EVENTS_MAX 4096

struct ferry_qmp_conn {
	int fd;
	char *buf;
	size_t len, cap;
	json_t *events; /* array, oldest first */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * Connects with libferry's ferry_sock_connect(). A bare PATH (no "unix:")
 * is a unix socket too; unix messages name the address as given.
 */
static int connect_addr(const char *addr, char *err, size_t elen)
{
	int fd, r;
	if (!strncmp(addr, "tcp:", 4)) {
		r = ferry_sock_connect(addr, &fd, err, elen);
		return r ? r : fd;
	}
	const char *path = !strncmp(addr, "unix:", 5) ? addr + 5 : addr;
	char uri[sizeof("unix:") + 108];
	if (!*path || strlen(path) >= sizeof(uri) - 6) {
		snprintf(err, elen, "invalid unix socket path '%s'", path);
		return -EINVAL;
	}
	snprintf(uri, sizeof(uri), "unix:%s", path);
	if ((r = ferry_sock_connect(uri, &fd, err, elen))) {
		snprintf(err, elen, "cannot connect to '%s': %s", addr, strerror(-r));
		return r;
	}
	return fd;
}

/* Reads the next message before deadline; NULL on timeout, EOF or junk. */
static json_t *read_msg(ferry_qmp_conn *c, uint64_t deadline, char *err, size_t elen)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		if (nl) {
			size_t n = (size_t)(nl - c->buf) + 1;
			json_error_t je;
			json_t *m = json_loadb(c->buf, n, 0, &je);
			memmove(c->buf, c->buf + n, c->len - n);
			c->len -= n;
			if (!m) {
				snprintf(err, elen, "bad message from the server: %s", je.text);
				return NULL;
			}
			return m;
		}
		if (c->len == LINE_MAX_BYTES) {
			snprintf(err, elen, "message from the server exceeds %u bytes", LINE_MAX_BYTES);
			return NULL;
		}
		uint64_t now = now_ms();
		if (now >= deadline) {
			snprintf(err, elen, "timed out waiting for the server");
			return NULL;
		}
		struct pollfd pf = { .fd = c->fd, .events = POLLIN };
		/* EINTR (Ctrl-C): keep waiting; callers check their flag between calls. */
		if (poll(&pf, 1, (int)(deadline - now)) <= 0)
			continue;
		if (c->cap - c->len < 65536 && c->cap < LINE_MAX_BYTES) {
			size_t cap = c->cap ? c->cap * 2 : 65536;
			char *b = realloc(c->buf, cap > LINE_MAX_BYTES ? LINE_MAX_BYTES : cap);
			if (!b) {
				snprintf(err, elen, "out of memory");
				return NULL;
			}
			c->buf = b;
			c->cap = cap > LINE_MAX_BYTES ? LINE_MAX_BYTES : cap;
		}
		ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, elen, "the server closed the connection%s%s", n < 0 ? ": " : "",
				 n < 0 ? strerror(errno) : "");
			return NULL;
		}
		c->len += (size_t)n;
	}
}

static void keep_event(ferry_qmp_conn *c, json_t *ev)
{
	if (json_array_size(c->events) >= EVENTS_MAX)
		json_array_remove(c->events, 0);
	json_array_append_new(c->events, ev);
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

json_t *ferry_qmp_client_raw(ferry_qmp_conn *c, const char *text, int timeout_ms, char *err,
			     size_t elen)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	/* One write: a server may act on the value (quit) before a separate newline. */
	size_t n = strlen(text);
	char *line = malloc(n + 2);
	if (!line) {
		snprintf(err, elen, "out of memory");
		return NULL;
	}
	memcpy(line, text, n);
	line[n] = '\n';
	int r = send_all(c->fd, line, n + 1);
	free(line);
	if (r) {
		snprintf(err, elen, "cannot send to the server: %s", strerror(-r));
		return NULL;
	}
	for (;;) {
		json_t *m = read_msg(c, deadline, err, elen);
		if (!m)
			return NULL;
		if (json_object_get(m, "event")) {
			keep_event(c, m);
			continue;
		}
		return m;
	}
}

json_t *ferry_qmp_client_exec(ferry_qmp_conn *c, const char *cmd, json_t *args, int timeout_ms,
			      char *err, size_t elen, bool *is_error)
{
	if (is_error)
		*is_error = false;
	json_t *o = json_pack("{s:s}", "execute", cmd);
	if (args)
		json_object_set_new(o, "arguments", args);
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text) {
		snprintf(err, elen, "out of memory");
		return NULL;
	}
	json_t *m = ferry_qmp_client_raw(c, text, timeout_ms, err, elen);
	free(text);
	if (!m)
		return NULL;
	json_t *ret = json_object_get(m, "return");
	if (ret) {
		json_incref(ret);
		json_decref(m);
		return ret;
	}
	json_t *e = json_object_get(m, "error");
	const char *desc = json_string_value(json_object_get(e, "desc"));
	snprintf(err, elen, "%s", desc ? desc : "malformed reply");
	if (is_error)
		*is_error = e != NULL;
	json_decref(m);
	return NULL;
}

json_t *ferry_qmp_client_event(ferry_qmp_conn *c, int timeout_ms)
{
	if (!json_array_size(c->events)) {
		char err[256];
		json_t *m = read_msg(c, now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0), err,
				     sizeof(err));
		if (!m)
			return NULL;
		if (!json_object_get(m, "event")) { /* a stray reply: not ours to keep */
			json_decref(m);
			return NULL;
		}
		return m;
	}
	json_t *ev = json_incref(json_array_get(c->events, 0));
	json_array_remove(c->events, 0);
	return ev;
}

int ferry_qmp_client_open(const char *addr, int timeout_ms, ferry_qmp_conn **out, char *err,
			  size_t elen)
{
	*out = NULL;
	int fd = connect_addr(addr, err, elen);
	if (fd < 0)
		return fd;
	ferry_qmp_conn *c = calloc(1, sizeof(*c));
	if (!c || !(c->events = json_array())) {
		free(c);
		close(fd);
		snprintf(err, elen, "out of memory");
		return -ENOMEM;
	}
	c->fd = fd;
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	json_t *g = read_msg(c, deadline, err, elen);
	if (!g || !json_object_get(g, "QMP")) {
		if (g)
			snprintf(err, elen, "'%s' did not greet with QMP", addr);
		json_decref(g);
		ferry_qmp_client_close(c);
		return -EPROTO;
	}
	json_decref(g);
	json_t *r = ferry_qmp_client_exec(c, "qmp_capabilities", NULL, timeout_ms, err, elen, NULL);
	if (!r) {
		ferry_qmp_client_close(c);
		return -EPROTO;
	}
	json_decref(r);
	*out = c;
	return 0;
}

void ferry_qmp_client_close(ferry_qmp_conn *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c->buf);
	json_decref(c->events);
	free(c);
}
