/* SPDX-License-Identifier: MIT */
/*
 * The QMP server (see qmp.h): listeners, connections, framing, negotiation,
 * dispatch, replies and events.
 *
 * DESIGN:
 *  - Framing. QMP has no length prefix: a command is one JSON object, with
 *    any whitespace around it. Each connection has a bounded input buffer
 *    (in_max). jansson parses one value from its start
 *    (json_loadb with JSON_DISABLE_EOF_CHECK); error.position then says how
 *    many bytes the value used, and they are consumed. A value cut short by
 *    the end of the buffer (jansson's "premature end of input", or a token
 *    or escape that reaches the end, or a partial UTF-8 sequence) waits for
 *    more bytes, and is parsed again only once bytes arrive that can end a
 *    value ('}', ']') or a line. Anything else is garbage: the client gets
 *    one GenericError "JSON parse error, ..." and the rest of that line is
 *    discarded (`skipping`), so a flood of garbage costs one error per
 *    line, not one per read. A value that does not fit in in_max is
 *    treated as garbage.
 *  - Dispatch. A command is looked up in the protocol's own table
 *    (qmp_capabilities, query-commands, query-qmp-schema) and then the
 *    embedder's; its arguments are checked against its row
 *    (qmp-schema.c) before its handler runs, so a handler sees only
 *    arguments of the declared types. Events must be in the event table.
 *  - Order. One in-band command runs at a time per connection: while its
 *    reply is deferred (the request is pending), later in-band commands
 *    wait, so replies keep command order, as QEMU's do. Without "oob" the
 *    input is then not read or parsed at all. With "oob" (QEMU's monitor
 *    I/O thread) parsing goes on: in-band commands, and the errors of
 *    input that is no command, queue in order (at most QUEUE_MAX; a full
 *    queue stops reading, as QEMU suspends the monitor, so a client can
 *    never grow it), and an exec-oob command is dispatched at once; its
 *    handler completes before it returns (FERRY_QMP_ALLOW_OOB), so its
 *    reply overtakes the in-band ones still waiting. Events are written
 *    immediately to every negotiated connection. A deferred completion
 *    does not re-enter the connection's parser: it marks the connection
 *    and a zero-delay timer resumes it (the queue first) from the loop.
 *  - File descriptors. Every read is a recvmsg() that also takes the fds
 *    a client passes with SCM_RIGHTS (qmp-fds.h keeps them, bounded, and
 *    closes them with the connection); a read that brought fds ends the
 *    batch of reads, so the command they came with is parsed before a
 *    later read's fds can replace them.
 *  - Output. Each connection writes straight to its non-blocking socket
 *    and keeps what did not fit in a buffer drained on EPOLLOUT. A client
 *    whose buffered output would exceed out_max (it stopped reading) is
 *    dropped, so a slow client can never block the loop or grow memory.
 *  - Lifetime. A connection closed while its own code is on the stack
 *    (depth > 0) is only marked dead (fd closed, watch removed) and freed
 *    by the outermost frame; a pending request is detached (its reply is
 *    dropped when it completes).
 *
 * Thread: loop thread only.
 */
#include "qmp.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"
#include "qmp-fds.h"

#define DEFAULT_MAX_CLIENTS 16
#define DEFAULT_IN_MAX (64u << 10)
#define DEFAULT_OUT_MAX (256u << 10)
#define READS_PER_WAKE 4
#define ACCEPTS_PER_WAKE 16
#define ACCEPT_BACKOFF_MS 100
#define QUEUE_MAX 8 /* in-band commands waiting behind a deferred one (QEMU's QMP_REQ_QUEUE_LEN_MAX) */

typedef struct qmp_client qmp_client;
typedef struct qmp_listener qmp_listener;

/* An in-band command waiting for its turn, or the error of input that was none. */
typedef struct qmp_queued {
	json_t *v;  /* the parsed value, or NULL */
	char *err;  /* NULL, or a "JSON parse error, ..." to send in its turn */
} qmp_queued;

struct qmp_listener {
	ferry_qmp_server *s;
	qmp_listener *next;
	int fd;
	ferry_loop_watch *w;
	ferry_sock_file file; /* unix: the socket file it bound, removed at destroy */
	char addr[300];       /* the bound address: tcp:127.0.0.1:41234 */
	ferry_loop_timer backoff; /* accept paused after EMFILE and the like */
};

struct qmp_client {
	ferry_qmp_server *s;
	qmp_client *prev, *next;
	unsigned id;
	int fd;
	ferry_loop_watch *w;
	bool negotiated;
	bool oob;        /* "oob" enabled at negotiation: exec-oob, queued input */
	bool skipping;   /* discarding input up to the next newline */
	bool dead;       /* closed; freed when depth drops to 0 */
	bool resume;     /* a deferred reply completed: parse buffered input */
	unsigned depth;  /* frames of this connection's code on the stack */
	ferry_qmp_req *pending; /* command whose reply is deferred */
	ferry_qmp_req *oob_req; /* the exec-oob command whose handler runs */
	qmp_queued queue[QUEUE_MAX]; /* ring: [queue_head, +nqueued) */
	unsigned queue_head, nqueued;
	qmp_fdtab fds;   /* passed with SCM_RIGHTS (qmp-fds.h) */
	char *in;        /* in_max bytes; unparsed input is [in_off, in_len) */
	size_t in_off, in_len;
	bool may_parse;  /* the input may hold a complete value (see client_io) */
	char *out;
	size_t out_off, out_len, out_cap;
};

struct ferry_qmp_req {
	ferry_qmp_server *s;
	qmp_client *c; /* NULL once the client is gone */
	json_t *id;    /* echoed; may be NULL */
	char *name;
};

struct ferry_qmp_server {
	ferry_loop *loop;
	ferry_qmp_config cfg;
	qmp_listener *listeners;
	qmp_client *clients;
	unsigned nclients;
	unsigned next_id;
	ferry_loop_timer resume_timer;
};

static void client_leave(qmp_client *c);
static void client_process(qmp_client *c);

uint64_t ferry_qmp_wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ------------------------------------------------------------------ */
/* Connections: output.                                                */

static void client_close(qmp_client *c, const char *why)
{
	if (c->dead)
		return;
	if (why)
		fprintf(stderr, "ferry host: QMP client %u dropped: %s\n", c->id, why);
	c->dead = true;
	ferry_loop_watch_remove(c->w);
	c->w = NULL;
	close(c->fd);
	c->fd = -1;
	if (c->pending) {
		c->pending->c = NULL;
		c->pending = NULL;
	}
	if (c->oob_req) {
		c->oob_req->c = NULL;
		c->oob_req = NULL;
	}
	qmp_fds_clear(&c->fds);
	for (; c->nqueued; c->nqueued--) {
		qmp_queued *q = &c->queue[c->queue_head++ % QUEUE_MAX];
		json_decref(q->v);
		free(q->err);
	}
	c->s->nclients--;
}

static void client_free(qmp_client *c)
{
	ferry_qmp_server *s = c->s;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->in);
	free(c->out);
	free(c);
}

/* Whether input may be read and parsed now (see DESIGN, Order). */
static bool client_may_parse(const qmp_client *c)
{
	return c->oob ? c->nqueued < QUEUE_MAX : !c->pending;
}

static void client_update_interest(qmp_client *c)
{
	if (c->dead)
		return;
	uint32_t ev = EPOLLRDHUP;
	if (client_may_parse(c))
		ev |= EPOLLIN;
	if (c->out_len > c->out_off)
		ev |= EPOLLOUT;
	int r = ferry_loop_watch_set(c->w, ev);
	if (r < 0)
		client_close(c, strerror(-r));
}

/* Writes buffered output. Returns 0, or -1 if the client was closed. */
static int client_flush(qmp_client *c)
{
	while (!c->dead && c->out_len > c->out_off) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		client_close(c, NULL); /* the peer went away: nothing worth a message */
		return -1;
	}
	if (c->dead)
		return -1;
	c->out_off = c->out_len = 0;
	return 0;
}

/* Queues len bytes; drops the client if its backlog would exceed out_max. */
static void client_write(qmp_client *c, const char *buf, size_t len)
{
	if (c->dead)
		return;
	if (c->out_len == c->out_off) {
		c->out_off = c->out_len = 0;
		while (len) {
			ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				buf += n;
				len -= (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			client_close(c, NULL);
			return;
		}
		if (!len)
			return;
	}
	size_t backlog = c->out_len - c->out_off;
	if (backlog + len > c->s->cfg.out_max) {
		char why[96];
		snprintf(why, sizeof(why), "it stopped reading (more than %zu bytes of output pending)",
			 c->s->cfg.out_max);
		client_close(c, why);
		return;
	}
	if (c->out_off && c->out_len + len > c->out_cap) {
		memmove(c->out, c->out + c->out_off, backlog);
		c->out_off = 0;
		c->out_len = backlog;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + len)
			cap *= 2;
		char *p = realloc(c->out, cap);
		if (!p) {
			client_close(c, "out of memory");
			return;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
	if (c->depth == 0)
		client_update_interest(c);
}

/* Sends one JSON message (QEMU's separators, CRLF-terminated); steals msg. */
static void client_send(qmp_client *c, json_t *msg)
{
	/* 12 significant digits print mbps as 7853.49068800, not 7853.4906879999999. */
	char *s = json_dumps(msg, JSON_ENCODE_ANY | JSON_REAL_PRECISION(12));
	json_decref(msg);
	if (!s) {
		client_close(c, "out of memory");
		return;
	}
	size_t n = strlen(s);
	char *line = realloc(s, n + 3);
	if (!line) {
		free(s);
		client_close(c, "out of memory");
		return;
	}
	memcpy(line + n, "\r\n", 3);
	client_write(c, line, n + 2);
	free(line);
}

static bool partial_utf8_tail(const unsigned char *buf, size_t len);

/*
 * An error reply. desc was cut to its buffer, maybe inside a UTF-8
 * sequence of a name the client sent ("Parameter 'ééé..."): the cut
 * sequence goes, else jansson refuses the string and the client would be
 * dropped instead of answered.
 */
static json_t *error_obj(const char *cls, char *desc)
{
	size_t n = strlen(desc);
	if (partial_utf8_tail((const unsigned char *)desc, n)) {
		while (n && ((unsigned char)desc[n - 1] & 0xc0) == 0x80)
			n--;
		desc[n ? n - 1 : 0] = '\0'; /* the sequence's lead byte */
	}
	json_t *m = json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", desc);
	if (!m) /* not UTF-8 for another reason: still an answer */
		m = json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc",
			      "(error message not valid UTF-8)");
	return m;
}

/* An error reply outside any request (bad framing), with id if known. */
static void client_error(qmp_client *c, json_t *id, const char *cls, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void client_error(qmp_client *c, json_t *id, const char *cls, const char *fmt, ...)
{
	char desc[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	json_t *m = error_obj(cls, desc);
	if (id)
		json_object_set(m, "id", id);
	client_send(c, m);
}

/* ------------------------------------------------------------------ */
/* Requests.                                                           */

const char *ferry_qmp_req_command(const ferry_qmp_req *req)
{
	return req->name;
}

int ferry_qmp_req_take_received_fd(ferry_qmp_req *req)
{
	return req->c && !req->c->dead ? qmp_fds_take_received(&req->c->fds) : -ENOENT;
}

int ferry_qmp_req_name_fd(ferry_qmp_req *req, const char *name, int fd)
{
	if (req->c && !req->c->dead)
		return qmp_fds_name(&req->c->fds, name, fd);
	close(fd);
	return -ENOENT;
}

int ferry_qmp_req_take_fd(ferry_qmp_req *req, const char *name)
{
	return req->c && !req->c->dead ? qmp_fds_take_named(&req->c->fds, name) : -ENOENT;
}

static void resume_clients(void *opaque)
{
	ferry_qmp_server *s = opaque;
	/*
	 * A command of one client can drop another (an event it causes may
	 * overflow that client's output): rescan from the head after each.
	 */
	for (bool again = true; again;) {
		again = false;
		for (qmp_client *c = s->clients; c; c = c->next) {
			if (c->dead || !c->resume)
				continue;
			c->resume = false;
			c->may_parse = true;
			c->depth++;
			client_process(c);
			client_leave(c);
			again = true;
			break;
		}
	}
}

static void req_complete(ferry_qmp_req *req, json_t *msg)
{
	qmp_client *c = req->c;
	if (c && !c->dead) {
		if (req->id)
			json_object_set(msg, "id", req->id);
		bool inband = c->oob_req != req; /* out of band: no turn to give back */
		if (inband)
			c->pending = NULL;
		else
			c->oob_req = NULL;
		client_send(c, msg);
		if (inband && !c->dead && c->depth == 0) {
			/* Deferred completion: resume parsing from the loop. */
			c->resume = true;
			client_update_interest(c);
			ferry_loop_timer_start(req->s->loop, &req->s->resume_timer, 0, resume_clients,
					       req->s);
		}
	} else {
		json_decref(msg);
	}
	json_decref(req->id);
	free(req->name);
	free(req);
}

void ferry_qmp_req_return(ferry_qmp_req *req, json_t *ret)
{
	req_complete(req, json_pack("{s:o}", "return", ret ? ret : json_object()));
}

void ferry_qmp_req_error(ferry_qmp_req *req, const char *cls, const char *fmt, ...)
{
	char desc[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	req_complete(req, error_obj(cls, desc));
}

/* ------------------------------------------------------------------ */
/* Built-in commands and dispatch.                                     */

static void cmd_capabilities(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	size_t i;
	json_t *v;
	bool oob = false;
	json_array_foreach(json_object_get(args, "enable"), i, v) {
		/* QMPCapability has one member; QEMU 7.2's visitor names a list element 'null'. */
		if (strcmp(json_string_value(v), "oob")) {
			ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
					    "Parameter 'null' does not accept value '%s'",
					    json_string_value(v));
			return;
		}
		oob = true;
	}
	req->c->negotiated = true;
	req->c->oob = oob;
	ferry_qmp_req_return(req, NULL);
}

static const ferry_qmp_command builtin_commands[];

/*
 * The server's command tables: the protocol's own (their handlers get the
 * server), then the embedder's (they get cfg.opaque); NULL-terminated, the
 * form ferry_qmp_schema takes.
 */
enum { TABLE_BUILTIN, TABLE_EMBEDDER, TABLES };
static void command_tables(const ferry_qmp_server *s, const ferry_qmp_command *out[TABLES + 1])
{
	out[TABLE_BUILTIN] = builtin_commands;
	out[TABLE_EMBEDDER] = s->cfg.commands;
	out[TABLES] = NULL;
}

static void cmd_query_commands(void *opaque, ferry_qmp_req *req, json_t *args)
{
	ferry_qmp_server *s = opaque;
	(void)args;
	json_t *a = json_array();
	const ferry_qmp_command *tables[TABLES + 1];
	command_tables(s, tables);
	for (size_t t = 0; tables[t]; t++)
		for (const ferry_qmp_command *cmd = tables[t]; cmd->name; cmd++)
			json_array_append_new(a, json_pack("{s:s}", "name", cmd->name));
	ferry_qmp_req_return(req, a);
}

static void cmd_query_qmp_schema(void *opaque, ferry_qmp_req *req, json_t *args)
{
	ferry_qmp_server *s = opaque;
	(void)args;
	const ferry_qmp_command *tables[TABLES + 1];
	command_tables(s, tables);
	json_t *schema = ferry_qmp_schema(tables, s->cfg.events);
	if (schema)
		ferry_qmp_req_return(req, schema);
	else
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "Out of memory");
}

/* The protocol's own commands, QEMU's types. */
static const ferry_qmp_arg cap_enable_elem = { NULL, FERRY_QMP_STR };
static const ferry_qmp_arg cap_args[] = {
	{ "enable", FERRY_QMP_ARRAY, true, .elem = &cap_enable_elem },
	{ NULL },
};
static const ferry_qmp_arg command_info[] = { { "name", FERRY_QMP_STR }, { NULL } };
static const ferry_qmp_arg command_info_t = { NULL, FERRY_QMP_OBJECT, .members = command_info };
static const ferry_qmp_arg command_list = { NULL, FERRY_QMP_ARRAY, .elem = &command_info_t };
/* SchemaInfo is a union of eight kinds: described as values here. */
static const ferry_qmp_arg schema_list = { NULL, FERRY_QMP_ARRAY, .elem = NULL };

static const ferry_qmp_command builtin_commands[] = {
	{ "qmp_capabilities", cmd_capabilities, cap_args, NULL },
	{ "query-commands", cmd_query_commands, NULL, &command_list },
	{ "query-qmp-schema", cmd_query_qmp_schema, NULL, &schema_list },
	{ NULL },
};

/* name's row, and the opaque its handler gets (the server for the built-in ones); or NULL. */
static const ferry_qmp_command *find_command(ferry_qmp_server *s, const char *name, void **opaque)
{
	const ferry_qmp_command *tables[TABLES + 1];
	command_tables(s, tables);
	for (size_t t = 0; tables[t]; t++)
		for (const ferry_qmp_command *cmd = tables[t]; cmd->name; cmd++)
			if (!strcmp(cmd->name, name)) {
				*opaque = t == TABLE_BUILTIN ? (void *)s : s->cfg.opaque;
				return cmd;
			}
	return NULL;
}

/* Whether v is an out-of-band command (QEMU's qmp_is_oob). */
static bool is_oob(json_t *v)
{
	return json_object_get(v, "exec-oob") && !json_object_get(v, "execute");
}

/*
 * Checks the envelope as QEMU's qmp_dispatch_check_obj does; "exec-oob"
 * is a member only when oob is enabled.
 */
static const char *check_envelope(json_t *v, bool oob, char *err, size_t elen)
{
	const char *key, *name = NULL;
	json_t *m;
	json_object_foreach(v, key, m) {
		if (!strcmp(key, "execute") || (oob && !strcmp(key, "exec-oob"))) {
			if (!json_is_string(m)) {
				snprintf(err, elen, "QMP input member '%s' must be a string", key);
				return NULL;
			}
			if (name) {
				/* QEMU's dict order meets "exec-oob" first, whatever the input's. */
				snprintf(err, elen, "QMP input member 'execute' clashes with 'exec-oob'");
				return NULL;
			}
			name = json_string_value(m);
		} else if (!strcmp(key, "arguments")) {
			if (!json_is_object(m)) {
				snprintf(err, elen, "QMP input member 'arguments' must be an object");
				return NULL;
			}
		} else if (strcmp(key, "id")) {
			snprintf(err, elen, "QMP input member '%s' is unexpected", key);
			return NULL;
		}
	}
	if (!name)
		snprintf(err, elen, "QMP input lacks member 'execute'");
	return name;
}

/* Who may run what: only qmp_capabilities before negotiation, never after. NULL: refused. */
static const ferry_qmp_command *admit(qmp_client *c, json_t *id, const char *name, void **opaque)
{
	bool caps = !strcmp(name, "qmp_capabilities");
	if (!c->negotiated && !caps) {
		client_error(c, id, FERRY_QMP_NOT_FOUND,
			     "Expecting capabilities negotiation with 'qmp_capabilities'");
		return NULL;
	}
	if (c->negotiated && caps) {
		client_error(c, id, FERRY_QMP_NOT_FOUND,
			     "Capabilities negotiation is already complete, command ignored");
		return NULL;
	}
	const ferry_qmp_command *cmd = find_command(c->s, name, opaque);
	if (!cmd)
		client_error(c, id, FERRY_QMP_NOT_FOUND, "The command %s has not been found", name);
	return cmd;
}

static ferry_qmp_req *req_new(qmp_client *c, json_t *id, const char *name)
{
	ferry_qmp_req *req = calloc(1, sizeof(*req));
	char *nm = strdup(name);
	if (!req || !nm) {
		free(req);
		free(nm);
		client_error(c, id, FERRY_QMP_GENERIC, "Out of memory");
		return NULL;
	}
	req->s = c->s;
	req->c = c;
	req->id = id ? json_incref(id) : NULL;
	req->name = nm;
	return req;
}

/* Runs an admitted command whose arguments were checked. */
static void run(qmp_client *c, const ferry_qmp_command *cmd, void *opaque, json_t *id,
		const char *name, json_t *args, bool oob)
{
	ferry_qmp_req *req = req_new(c, id, name);
	if (!req)
		return;
	if (oob)
		c->oob_req = req;
	else
		c->pending = req;
	cmd->fn(opaque, req, args);
	if (oob && c->oob_req == req) {
		/* A handler broke FERRY_QMP_ALLOW_OOB's promise: its reply will be dropped. */
		fprintf(stderr, "ferry host: BUG: out-of-band %s did not complete at once\n", name);
		req->c = NULL;
		c->oob_req = NULL;
	}
}

/* One command: the envelope, admission, the arguments against the table, then the handler. */
static void dispatch(qmp_client *c, json_t *v)
{
	char err[512];
	if (!json_is_object(v)) {
		client_error(c, NULL, FERRY_QMP_GENERIC, "QMP input must be a JSON object");
		return;
	}
	json_t *id = json_object_get(v, "id");
	const char *name = check_envelope(v, c->oob, err, sizeof(err));
	if (!name) {
		client_error(c, id, FERRY_QMP_GENERIC, "%s", err);
		return;
	}
	void *opaque;
	const ferry_qmp_command *cmd = admit(c, id, name, &opaque);
	if (!cmd)
		return;
	bool oob = is_oob(v);
	if (oob && !(cmd->flags & FERRY_QMP_ALLOW_OOB)) {
		client_error(c, id, FERRY_QMP_GENERIC, "The command %s does not support OOB", name);
		return;
	}
	json_t *args = json_object_get(v, "arguments");
	json_t *empty = args ? NULL : json_object();
	if (cmd->args_union ? ferry_qmp_check_type(args ? args : empty, cmd->args_union, "", err, sizeof(err))
			    : ferry_qmp_check_args(args ? args : empty, cmd->args, "", err, sizeof(err)))
		client_error(c, id, FERRY_QMP_GENERIC, "%s", err);
	else
		run(c, cmd, opaque, id, name, args ? args : empty, oob);
	json_decref(empty);
}

/* Whether the client has in-band work that must go before new input's. */
static bool client_busy(const qmp_client *c)
{
	return c->pending || c->nqueued;
}

/*
 * Input that is no command (error, non-NULL) or a parsed value (v): an
 * exec-oob command runs at once; the rest runs, or waits its turn.
 */
static void client_deliver(qmp_client *c, json_t *v, const char *error)
{
	if (v && json_is_object(v) && is_oob(v)) {
		dispatch(c, v);
		return;
	}
	if (!client_busy(c)) {
		if (v)
			dispatch(c, v);
		else
			client_error(c, NULL, FERRY_QMP_GENERIC, "%s", error);
		return;
	}
	/* client_may_parse() kept the queue from being full. */
	qmp_queued *q = &c->queue[(c->queue_head + c->nqueued) % QUEUE_MAX];
	q->v = v ? json_incref(v) : NULL;
	q->err = error ? strdup(error) : NULL;
	if (!v && !q->err) {
		client_close(c, "out of memory");
		return;
	}
	c->nqueued++;
}

/* Runs the queued in-band input while no reply is deferred. */
static void client_run_queue(qmp_client *c)
{
	while (!c->dead && !c->pending && c->nqueued) {
		qmp_queued q = c->queue[c->queue_head];
		c->queue_head = (c->queue_head + 1) % QUEUE_MAX;
		c->nqueued--;
		if (q.v)
			dispatch(c, q.v);
		else
			client_error(c, NULL, FERRY_QMP_GENERIC, "%s", q.err);
		json_decref(q.v);
		free(q.err);
	}
}

/* ------------------------------------------------------------------ */
/* Connections: input.                                                 */

static void consume(qmp_client *c, size_t n)
{
	c->in_off += n < c->in_len - c->in_off ? n : c->in_len - c->in_off;
}

/* Moves the unparsed input to the start of the buffer (once per batch). */
static void compact(qmp_client *c)
{
	if (!c->in_off)
		return;
	memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
	c->in_len -= c->in_off;
	c->in_off = 0;
}

/* Whether buf ends inside a UTF-8 sequence (more bytes may complete it). */
static bool partial_utf8_tail(const unsigned char *buf, size_t len)
{
	for (size_t k = 1; k <= 3 && k <= len; k++) {
		unsigned char b = buf[len - k];
		if ((b & 0xc0) == 0x80)
			continue; /* continuation byte: look further back */
		size_t need = (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 1;
		return need > k;
	}
	return false;
}

/* Whether a parse error may only mean "the value is not complete yet". */
static bool maybe_incomplete(const json_error_t *e, const char *buf, size_t len)
{
	enum json_error_code code = json_error_code(e);
	if (code == json_error_premature_end_of_input)
		return true;
	if (code == json_error_invalid_utf8)
		return partial_utf8_tail((const unsigned char *)buf, len);
	if (e->position < 0 || (size_t)e->position < len || !len)
		return false;
	/* The lexer stopped at the end inside a token ("tru", "1e", "\u00"). */
	char last = buf[len - 1];
	return (last >= 'a' && last <= 'z') || (last >= 'A' && last <= 'Z') ||
	       (last >= '0' && last <= '9') || last == '-' || last == '+' || last == '.' ||
	       last == '\\';
}

/*
 * Runs the queue, then parses and delivers complete commands while
 * client_may_parse().
 * A value that is not complete yet is parsed again only when more input
 * could complete it (may_parse), so a client dripping a long value byte by
 * byte costs one parse per brace or newline, not one per byte.
 */
static void client_process(qmp_client *c)
{
	size_t in_max = c->s->cfg.in_max;
	for (;;) {
		client_run_queue(c); /* a command may have completed the deferred one */
		if (c->dead || !client_may_parse(c) || c->in_off >= c->in_len)
			break;
		char *p = c->in + c->in_off;
		size_t len = c->in_len - c->in_off;
		if (c->skipping) {
			char *nl = memchr(p, '\n', len);
			consume(c, nl ? (size_t)(nl - p) + 1 : len);
			if (nl)
				c->skipping = false;
			continue;
		}
		size_t ws = 0;
		while (ws < len && (p[ws] == ' ' || p[ws] == '\t' || p[ws] == '\r' || p[ws] == '\n'))
			ws++;
		if (ws) {
			consume(c, ws);
			continue;
		}
		bool full = c->in_off == 0 && c->in_len == in_max;
		if (!c->may_parse && !full)
			break;
		json_error_t e;
		json_t *v = json_loadb(p, len, JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &e);
		if (v) {
			consume(c, e.position > 0 ? (size_t)e.position : len);
			client_deliver(c, v, NULL);
			json_decref(v);
			continue;
		}
		char msg[256];
		if (maybe_incomplete(&e, p, len)) {
			if (!full) {
				c->may_parse = false; /* wait for bytes that can complete it */
				break;
			}
			snprintf(msg, sizeof(msg),
				 "JSON parse error, input exceeds %zu bytes without a complete value",
				 in_max);
			consume(c, len);
		} else {
			snprintf(msg, sizeof(msg), "JSON parse error, %s", e.text);
			consume(c, e.position > 0 ? (size_t)e.position : 1);
		}
		client_deliver(c, NULL, msg);
		c->skipping = true;
	}
	compact(c);
}

/* Drops one frame; frees c if it was the last one of a dead client. */
static void client_leave(qmp_client *c)
{
	if (--c->depth)
		return;
	if (c->dead)
		client_free(c);
	else
		client_update_interest(c);
}

static void client_io(void *opaque, uint32_t events)
{
	qmp_client *c = opaque;
	c->depth++;
	if ((events & EPOLLOUT) && client_flush(c) < 0)
		goto out;
	bool eof = false;
	if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && client_may_parse(c)) {
		for (int i = 0; i < READS_PER_WAKE && !c->dead; i++) {
			size_t room = c->s->cfg.in_max - c->in_len;
			if (!room) {
				client_process(c); /* makes room, or reports the oversized value */
				room = c->s->cfg.in_max - c->in_len;
				if (!room || !client_may_parse(c))
					break;
			}
			bool got_fds;
			ssize_t n = qmp_fds_recv(&c->fds, c->fd, c->in + c->in_len, room, &got_fds);
			if (n > 0 && got_fds) {
				/* Parse the command these fds came with before a read brings more. */
				c->in_len += (size_t)n;
				c->may_parse = true;
				break;
			}
			if (n > 0) {
				/* Only these bytes can end a JSON object or array, or a garbage line. */
				const char *b = c->in + c->in_len;
				for (ssize_t k = 0; k < n && !c->may_parse; k++)
					c->may_parse = b[k] == '}' || b[k] == ']' || b[k] == '\n';
				c->in_len += (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			eof = true; /* 0 = orderly EOF; other errors end the connection too */
			break;
		}
		client_process(c);
	} else if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		eof = true; /* gone while its reply is deferred */
	}
	if (eof && !c->dead) {
		client_flush(c);
		client_close(c, NULL);
	}
out:
	client_leave(c);
}

/* ------------------------------------------------------------------ */
/* Listeners.                                                          */

static void listener_accept(void *opaque, uint32_t events);

static void listener_resume(void *opaque)
{
	qmp_listener *L = opaque;
	ferry_loop_watch_set(L->w, EPOLLIN);
}

/* Takes fd as a client and greets it; closes it if refused. Returns 0 or a negative errno. */
static int client_add(ferry_qmp_server *s, int fd)
{
	if (s->nclients >= s->cfg.max_clients) {
		char msg[160];
		int n = snprintf(msg, sizeof(msg),
				 "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Too many QMP "
				 "connections (at most %u)\"}}\r\n",
				 s->cfg.max_clients);
		if (send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* Nothing more to do for a client we refuse anyway. */
		}
		close(fd);
		return -EBUSY;
	}
	qmp_client *c = calloc(1, sizeof(*c));
	char *in = malloc(s->cfg.in_max);
	if (!c || !in) {
		free(c);
		free(in);
		close(fd);
		return -ENOMEM;
	}
	c->s = s;
	c->fd = fd;
	c->in = in;
	c->id = ++s->next_id;
	int r = ferry_loop_watch_add(s->loop, fd, EPOLLIN | EPOLLRDHUP, client_io, c, &c->w);
	if (r < 0) {
		fprintf(stderr, "ferry host: QMP: cannot watch a client: %s\n", strerror(-r));
		free(in);
		free(c);
		close(fd);
		return r;
	}
	c->next = s->clients;
	if (s->clients)
		s->clients->prev = c;
	s->clients = c;
	s->nclients++;
	json_t *g = json_pack("{s:{s:O,s:[s]}}", "QMP", "version", s->cfg.version, "capabilities",
			      "oob");
	c->depth++;
	client_send(c, g);
	client_leave(c);
	return 0;
}

int ferry_qmp_server_adopt(ferry_qmp_server *s, int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	return client_add(s, fd);
}

static void listener_accept(void *opaque, uint32_t events)
{
	qmp_listener *L = opaque;
	(void)events;
	for (int i = 0; i < ACCEPTS_PER_WAKE; i++) {
		int fd = accept4(L->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			client_add(L->s, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* EMFILE, ENFILE, ENOBUFS, ENOMEM: back off instead of spinning. */
		fprintf(stderr, "ferry host: QMP accept: %s\n", strerror(errno));
		ferry_loop_watch_set(L->w, 0);
		ferry_loop_timer_start(L->s->loop, &L->backoff, ACCEPT_BACKOFF_MS, listener_resume, L);
		return;
	}
}

int ferry_qmp_server_listen(ferry_qmp_server *s, const char *addr, char *bound, size_t bound_len,
			    char *err, size_t elen)
{
	qmp_listener *L = calloc(1, sizeof(*L));
	if (!L) {
		snprintf(err, elen, "out of memory");
		return -ENOMEM;
	}
	L->s = s;
	L->fd = -1;
	int r;
	if (strncmp(addr, "unix:", 5) && strncmp(addr, "tcp:", 4)) {
		snprintf(err, elen, "unsupported QMP address '%s' (expected unix:PATH or tcp:HOST:PORT)",
			 addr);
		r = -EINVAL;
	} else if (!(r = ferry_sock_listen(addr, FERRY_SOCK_NONBLOCK, &L->fd, err, elen))) {
		ferry_sock_file_note(&L->file, addr);
		ferry_sock_bound(L->fd, L->addr, sizeof(L->addr));
		r = ferry_loop_watch_add(s->loop, L->fd, EPOLLIN, listener_accept, L, &L->w);
		if (r < 0) {
			snprintf(err, elen, "cannot watch '%s': %s", addr, strerror(-r));
			close(L->fd);
			ferry_sock_file_remove(&L->file);
		}
	}
	if (r < 0) {
		free(L);
		return r;
	}
	if (bound)
		snprintf(bound, bound_len, "%s", L->addr[0] ? L->addr : addr);
	L->next = s->listeners;
	s->listeners = L;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Server.                                                             */

int ferry_qmp_server_create(ferry_loop *loop, const ferry_qmp_config *cfg, ferry_qmp_server **out)
{
	*out = NULL;
	ferry_qmp_server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->cfg = *cfg;
	if (!s->cfg.max_clients)
		s->cfg.max_clients = DEFAULT_MAX_CLIENTS;
	if (!s->cfg.in_max)
		s->cfg.in_max = DEFAULT_IN_MAX;
	if (!s->cfg.out_max)
		s->cfg.out_max = DEFAULT_OUT_MAX;
	*out = s;
	return 0;
}

void ferry_qmp_server_destroy(ferry_qmp_server *s)
{
	if (!s)
		return;
	while (s->listeners) {
		qmp_listener *L = s->listeners;
		s->listeners = L->next;
		ferry_loop_timer_stop(s->loop, &L->backoff);
		ferry_loop_watch_remove(L->w);
		close(L->fd);
		ferry_sock_file_remove(&L->file);
		free(L);
	}
	while (s->clients) {
		qmp_client *c = s->clients;
		client_close(c, NULL);
		client_free(c);
	}
	ferry_loop_timer_stop(s->loop, &s->resume_timer);
	free(s);
}

void ferry_qmp_server_event(ferry_qmp_server *s, const char *name, json_t *data,
			    uint64_t timestamp_us)
{
	const ferry_qmp_event *e = s->cfg.events;
	while (e && e->name && strcmp(e->name, name))
		e++;
	assert(e && e->name); /* every event is in the table query-qmp-schema describes */
	json_t *ev = json_pack("{s:s}", "event", name);
	if (data)
		json_object_set_new(ev, "data", data);
	json_object_set_new(ev, "timestamp",
			    json_pack("{s:I,s:I}", "seconds", (json_int_t)(timestamp_us / 1000000u),
				      "microseconds", (json_int_t)(timestamp_us % 1000000u)));
	for (qmp_client *c = s->clients, *next; c; c = next) {
		next = c->next;
		if (c->dead || !c->negotiated)
			continue;
		c->depth++;
		client_send(c, json_incref(ev));
		client_leave(c);
	}
	json_decref(ev);
}

void ferry_qmp_server_flush(ferry_qmp_server *s, int timeout_ms)
{
	uint64_t end = ferry_loop_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	for (;;) {
		struct pollfd pf[64];
		nfds_t n = 0;
		for (qmp_client *c = s->clients; c && n < 64; c = c->next)
			if (!c->dead && c->out_len > c->out_off)
				pf[n++] = (struct pollfd){ .fd = c->fd, .events = POLLOUT };
		uint64_t now = ferry_loop_now_ms();
		if (!n || now >= end)
			return;
		if (poll(pf, n, (int)(end - now)) <= 0)
			return;
		for (qmp_client *c = s->clients, *next; c; c = next) {
			next = c->next;
			if (c->dead || c->out_len == c->out_off)
				continue;
			c->depth++;
			client_flush(c);
			client_leave(c);
		}
	}
}
