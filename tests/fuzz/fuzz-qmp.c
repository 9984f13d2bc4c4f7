/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the QMP server (src/daemon/qmp.c, qmp-schema.c):
 * framing (values cut anywhere, garbage lines, UTF-8, in_max), the
 * envelope checks, capabilities negotiation, out-of-band commands, the
 * argument checks against a command table (ferry_qmp_check_args: nested
 * objects, arrays, enums, unions) and dispatch, as a hostile client sends
 * them. The client is one end of a socketpair the server adopts
 * (ferry_qmp_server_adopt); the loop is driven by ferry_loop_run_once()
 * until it is idle. SCM_RIGHTS is out of scope.
 *
 * The command table is this target's own, built on the real host
 * schema's nested types (host_migration_channel, host_socket_address,
 * host_events from host-schema.c): a handler that replies at once, one
 * that defers (the target completes it later, by a return or an error),
 * an allow-oob one, one that raises an event and one that fails.
 *
 * Oracles, beyond the sanitizers and LeakSanitizer: every line the
 * server writes ends with CRLF and is a JSON object that is exactly one
 * of the greeting (first line only), a reply {"return": ...} or
 * {"error": {"class": STRING, "desc": STRING}} with at most an "id"
 * besides, or an event {"event", "data"?, "timestamp"}; the output is
 * bounded (lines: at most two per input byte, plus the greeting and the
 * deferred replies); the server never drops the client before its EOF.
 *
 * Input layout: byte 0 picks in_max (256 << (b % 5)), byte 1 the size of
 * the writes (1 + b % 64 bytes, the loop runs between writes; 0 means
 * all at once); the rest is what the client sends. The client then
 * half-closes its end (EOF) and the loop runs until the server is idle.
 *
 * FUZZ_QMP_ECHO=1 in the environment prints what the server wrote.
 *
 * Built by tests/fuzz/run.sh with the QMP server's sources, the loop,
 * host-schema.c and libferry's socket code. Thread: libFuzzer's one
 * thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-check.h"
#include "host.h"
#include "loop.h"
#include "qmp.h"

enum { DEFER_MAX = 64, OUT_MAX = 1 << 20 };

static ferry_loop *loop;
static ferry_qmp_server *server;
static json_t *version;
static ferry_qmp_req *deferred[DEFER_MAX];
static unsigned ndeferred, completions;

/* ---- the command table ---- */

static const char *const cap_names[] = { "xbzrle", "postcopy-ram", "multifd", NULL };
static const ferry_qmp_arg cap_status[] = {
	{ "capability", FERRY_QMP_ENUM, .values = cap_names },
	{ "state", FERRY_QMP_BOOL },
	{ NULL },
};
static const ferry_qmp_arg cap_status_t = { NULL, FERRY_QMP_OBJECT, .members = cap_status };
static const ferry_qmp_arg str_t = { NULL, FERRY_QMP_STR };
static const ferry_qmp_arg str_list_t = { NULL, FERRY_QMP_ARRAY, .elem = &str_t };
static const ferry_qmp_arg nested[] = {
	{ "n", FERRY_QMP_UINT32 },
	{ "tags", FERRY_QMP_ARRAY, true, .elem = &str_list_t },
	{ "addr", FERRY_QMP_OBJECT, true, .members = NULL },
	{ NULL },
};
static const ferry_qmp_arg now_args[] = {
	{ "uri", FERRY_QMP_STR, true },
	{ "channels", FERRY_QMP_ARRAY, true, .elem = &host_migration_channel },
	{ "capabilities", FERRY_QMP_ARRAY, true, .elem = &cap_status_t },
	{ "detach", FERRY_QMP_BOOL, true },
	{ "i", FERRY_QMP_INT, true },
	{ "u", FERRY_QMP_UINT64, true },
	{ "size", FERRY_QMP_SIZE, true },
	{ "f", FERRY_QMP_NUMBER, true },
	{ "any", FERRY_QMP_ANY, true },
	{ "nested", FERRY_QMP_OBJECT, true, .members = nested },
	{ NULL },
};
static const ferry_qmp_arg defer_args[] = {
	{ "addrs", FERRY_QMP_ARRAY, true, .elem = &host_socket_address },
	{ "fail", FERRY_QMP_BOOL, true },
	{ NULL },
};
static const ferry_qmp_arg oob_args[] = { { "value", FERRY_QMP_INT, true }, { NULL } };
static const ferry_qmp_arg int_ret = { NULL, FERRY_QMP_INT };

static void cmd_now(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	(void)args;
	ferry_qmp_req_return(req, NULL);
}

/* Replies later: settle() completes it once the loop is idle. */
static void cmd_defer(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	(void)args;
	if (ndeferred == DEFER_MAX) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "too many deferred");
		return;
	}
	deferred[ndeferred++] = req;
}

static void cmd_oob(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	json_int_t v = json_integer_value(json_object_get(args, "value"));
	ferry_qmp_req_return(req, json_integer(v));
}

static void cmd_event(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	(void)args;
	ferry_qmp_server_event(server, "MIGRATION", json_pack("{s:s}", "status", "active"),
			       ferry_qmp_wall_us());
	ferry_qmp_server_event(server, "STOP", NULL, ferry_qmp_wall_us());
	ferry_qmp_req_return(req, NULL);
}

static void cmd_fail(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	(void)args;
	ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "refused: %s", ferry_qmp_req_command(req));
}

static const ferry_qmp_command commands[] = {
	{ "x-now", cmd_now, now_args, NULL },
	{ "x-defer", cmd_defer, defer_args, NULL },
	{ "x-oob", cmd_oob, oob_args, &int_ret, FERRY_QMP_ALLOW_OOB },
	{ "x-event", cmd_event, NULL, NULL },
	{ "x-fail", cmd_fail, NULL, NULL, FERRY_QMP_ALLOW_OOB },
	{ NULL },
};

/* ---- driving the loop ---- */

/* Completes the oldest deferred request (alternately a return and an error). */
static void complete_one(void)
{
	ferry_qmp_req *req = deferred[0];
	memmove(deferred, deferred + 1, --ndeferred * sizeof(deferred[0]));
	if (completions++ % 2)
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "deferred failure");
	else
		ferry_qmp_req_return(req, json_pack("{s:b}", "done", 1));
}

struct out {
	char *buf;
	size_t len;
};
static char out_buf[OUT_MAX];

static void drain(int fd, struct out *o)
{
	for (;;) {
		CHECK(o->len < OUT_MAX);
		ssize_t n = recv(fd, o->buf + o->len, OUT_MAX - o->len, MSG_DONTWAIT);
		if (n <= 0)
			return;
		o->len += (size_t)n;
	}
}

/* Runs the loop until it has nothing to do, completing deferred requests one by one. */
static void settle(int peer, struct out *o)
{
	for (;;) {
		int n = ferry_loop_run_once(loop, 0);
		CHECK(n >= 0);
		drain(peer, o);
		if (n)
			continue;
		if (!ndeferred)
			return;
		complete_one();
	}
}

/* ---- the oracle ---- */

static bool only_keys(json_t *m, const char *a, const char *b, const char *c)
{
	const char *k;
	json_t *v;
	json_object_foreach(m, k, v) {
		if (strcmp(k, a) && (!b || strcmp(k, b)) && (!c || strcmp(k, c)))
			return false;
	}
	return true;
}

static void check_line(json_t *m, bool first)
{
	CHECK(json_is_object(m));
	if (first) {
		CHECK(json_is_object(json_object_get(m, "QMP")) && json_object_size(m) == 1);
		return;
	}
	json_t *err = json_object_get(m, "error");
	if (json_object_get(m, "return")) {
		CHECK(only_keys(m, "return", "id", NULL));
	} else if (err) {
		CHECK(only_keys(m, "error", "id", NULL));
		CHECK(json_is_string(json_object_get(err, "class")));
		CHECK(json_string_length(json_object_get(err, "desc")) > 0);
		CHECK(json_object_size(err) == 2);
	} else {
		CHECK(json_is_string(json_object_get(m, "event")));
		CHECK(json_is_object(json_object_get(m, "timestamp")));
		CHECK(only_keys(m, "event", "data", "timestamp"));
	}
}

/*
 * The server closes a client only at its EOF (or when it stops reading
 * its output, which this client never does): never for what it sent.
 */
static void check_open(int peer)
{
	char b;
	ssize_t n = recv(peer, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	CHECK(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

static void check_output(const struct out *o, size_t in_len)
{
	size_t lines = 0;
	for (size_t at = 0; at < o->len; lines++) {
		const char *nl = memchr(o->buf + at, '\n', o->len - at);
		CHECK(nl && nl > o->buf + at && nl[-1] == '\r');
		size_t n = (size_t)(nl - (o->buf + at)) - 1;
		json_error_t e;
		json_t *m = json_loadb(o->buf + at, n, 0, &e);
		CHECK(m);
		check_line(m, lines == 0);
		json_decref(m);
		at += n + 2;
	}
	CHECK(lines >= 1 && lines <= 2 * in_len + 1 + completions);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	CHECK(ferry_loop_create(&loop) == 0);
	version = json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "major", 7, "minor", 2, "micro", 0,
			    "package", "ferry-fuzz");
	CHECK(version);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	ferry_qmp_config cfg = {
		.commands = commands,
		.events = host_events,
		.version = version,
		.in_max = (size_t)256 << (data[0] % 5),
		.out_max = 64 << 10,
	};
	size_t chunk = data[1] ? 1 + data[1] % 64 : size;
	data += 2;
	size -= 2;
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
	CHECK(ferry_qmp_server_create(loop, &cfg, &server) == 0);
	CHECK(ferry_qmp_server_adopt(server, sv[0]) == 0);
	struct out o = { out_buf, 0 };
	completions = 0;
	settle(sv[1], &o);
	for (size_t at = 0, stuck = 0; at < size && stuck < 100;) {
		size_t n = size - at < chunk ? size - at : chunk;
		ssize_t w = send(sv[1], data + at, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		CHECK(w >= 0 || errno == EAGAIN); /* not dropped (check_open) */
		at += w > 0 ? (size_t)w : 0;
		stuck = w > 0 ? 0 : stuck + 1; /* the server reads no more: it waits for nothing */
		settle(sv[1], &o);
	}
	check_open(sv[1]);
	shutdown(sv[1], SHUT_WR);
	settle(sv[1], &o);
	ferry_qmp_server_destroy(server);
	server = NULL;
	drain(sv[1], &o);
	close(sv[1]);
	if (getenv("FUZZ_QMP_ECHO")) /* to see a seed's session */
		fwrite(o.buf, 1, o.len, stderr);
	check_output(&o, size);
	return 0;
}
