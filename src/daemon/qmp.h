/* SPDX-License-Identifier: MIT */
/*
 * A QMP server (QEMU Machine Protocol, as QEMU speaks it) on a ferry_loop:
 * listening sockets, client connections, message framing, capabilities
 * negotiation, command dispatch, replies and events. It knows no command
 * except the protocol's own (qmp_capabilities, query-commands,
 * query-qmp-schema); the
 * embedder (`ferry host`) supplies a command table.
 *
 * Protocol, per connection: the server sends the greeting
 *   {"QMP": {"version": VERSION, "capabilities": ["oob"]}}
 * with the embedder's VERSION (QEMU's VersionInfo: {"qemu": {"major",
 * "minor", "micro"}, "package"}),
 * and accepts only qmp_capabilities until negotiation completes. A
 * command is a JSON object {"execute": NAME, "arguments": {...}, "id": ANY};
 * the reply is {"return": VALUE} or {"error": {"class": ..., "desc": ...}},
 * with "id" echoed. Replies come in command order, except that once the
 * client enabled "oob" ({"execute": "qmp_capabilities", "arguments":
 * {"enable": ["oob"]}}), a command sent as {"exec-oob": NAME, ...} runs at
 * once, even while in-band commands wait, and its reply may overtake
 * theirs; only commands flagged FERRY_QMP_ALLOW_OOB may. Events
 * {"event": NAME, "data": {...}, "timestamp": {"seconds", "microseconds"}}
 * go to every negotiated client, interleaved with replies.
 *
 * Ownership rules:
 *  1. ferry_qmp_server_create() success => the caller calls
 *     ferry_qmp_server_destroy() (before destroying the loop); failure =>
 *     nothing to free.
 *  2. A request (ferry_qmp_req) is created by the server for each command
 *     and handed to the command's handler, which must complete it exactly
 *     once with ferry_qmp_req_return() or ferry_qmp_req_error(); that frees
 *     it. Completing may happen after the handler returned (a deferred
 *     reply); meanwhile the client's later in-band commands wait (out-of-band
 *     ones do not). If the client
 *     disconnects first, the request stays valid and its reply is dropped.
 *     ferry_qmp_server_destroy() does not free outstanding requests.
 *
 * Thread: loop thread only.
 */
#ifndef FERRY_DAEMON_QMP_H
#define FERRY_DAEMON_QMP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

typedef struct ferry_qmp_server ferry_qmp_server;
typedef struct ferry_qmp_req ferry_qmp_req;

/* Error classes QEMU still uses. */
#define FERRY_QMP_GENERIC "GenericError"
#define FERRY_QMP_NOT_FOUND "CommandNotFound"

/*
 * The schema. One table of commands (and one of events) is what the
 * server validates arguments against, dispatches by, lists in
 * query-commands and describes in query-qmp-schema (QEMU's introspection
 * format): a command is documented, checked and introspected from one
 * place.
 *
 * Types, with the names QEMU's errors use. In the introspection every
 * integer type is QEMU's builtin "int", ENUM and OBJECT get a numbered
 * type of their own, ARRAY "[element]".
 */
typedef enum ferry_qmp_type {
	FERRY_QMP_STR,    /* "string" */
	FERRY_QMP_BOOL,   /* "boolean" */
	FERRY_QMP_INT,    /* "integer" (int64) */
	FERRY_QMP_UINT64, /* "uint64" (non-negative integer) */
	FERRY_QMP_UINT32, /* "uint32_t" */
	FERRY_QMP_SIZE,   /* "size" (bytes, non-negative integer) */
	FERRY_QMP_ARRAY,  /* "array" */
	FERRY_QMP_OBJECT, /* "object" */
	FERRY_QMP_ENUM,   /* a string, one of `values` */
	FERRY_QMP_ANY,    /* any JSON value ("any") */
	FERRY_QMP_NUMBER, /* "number" (a double) */
} ferry_qmp_type;

typedef struct ferry_qmp_arg ferry_qmp_arg;

/* One case of a union: when the tag member has `value`, `type` (an OBJECT) adds its members. */
typedef struct ferry_qmp_variant {
	const char *value;
	const ferry_qmp_arg *type;
} ferry_qmp_variant;

/*
 * A member of an object (an argument, a member of a reply or of an
 * event's data), or, with name NULL, a type on its own (an array's
 * element, a command's reply). Tables of members end with { NULL }.
 */
struct ferry_qmp_arg {
	const char *name;
	ferry_qmp_type type;
	bool optional;
	const ferry_qmp_arg *members;      /* OBJECT: its members; NULL: any object */
	const ferry_qmp_arg *elem;         /* ARRAY: its elements' type; NULL: any values */
	const char *const *values;         /* ENUM: the accepted strings, NULL-terminated */
	const char *tag;                   /* OBJECT union: the ENUM member that picks a variant */
	const ferry_qmp_variant *variants; /* ... by its value, { NULL }-terminated; a value
					    * without a variant is left to the handler */
};

/*
 * args is the command's "arguments" object ({} when absent), borrowed for
 * the duration of the call (take a reference to keep it), and already
 * checked against the command's `args` (ferry_qmp_check_args).
 */
typedef void (*ferry_qmp_handler)(void *opaque, ferry_qmp_req *req, json_t *args);

/* ferry_qmp_command.flags */
#define FERRY_QMP_ALLOW_OOB 0x1u /* may run out of band (exec-oob): QEMU's allow-oob */

typedef struct ferry_qmp_command {
	const char *name;
	ferry_qmp_handler fn;
	const ferry_qmp_arg *args; /* its arguments ({ NULL }-terminated); NULL: none */
	const ferry_qmp_arg *ret;  /* what it returns (name NULL); NULL: {} */
	/*
	 * FERRY_QMP_ALLOW_OOB: the handler completes its request before it
	 * returns and never waits for the guest operations' queue, so running
	 * it while an in-band reply is deferred is safe.
	 */
	unsigned flags;
	/*
	 * Arguments that are a union (an OBJECT with tag and variants, as
	 * QEMU's object-add's ObjectOptions), instead of args; NULL: args.
	 */
	const ferry_qmp_arg *args_union;
} ferry_qmp_command;

typedef struct ferry_qmp_event {
	const char *name;
	const ferry_qmp_arg *data; /* its data's members; NULL: no data */
} ferry_qmp_event;

typedef struct ferry_qmp_config {
	const ferry_qmp_command *commands; /* ends with { NULL } */
	const ferry_qmp_event *events;     /* the events it may send; ends with { NULL } */
	void *opaque;                      /* passed to every handler */
	json_t *version;                   /* the greeting's "version"; borrowed, outlives the server */
	unsigned max_clients;              /* 0: 16; more are refused */
	size_t in_max;                     /* per-client input bound; 0: 64 KiB */
	size_t out_max;                    /* per-client output bound; 0: 256 KiB */
} ferry_qmp_config;

/* Returns 0 or -ENOMEM. cfg->commands and cfg->events must outlive the server. */
int ferry_qmp_server_create(ferry_loop *loop, const ferry_qmp_config *cfg,
			    ferry_qmp_server **out);

/* Closes every listener and connection (pending output is dropped). */
void ferry_qmp_server_destroy(ferry_qmp_server *s);

/*
 * Listens on "unix:PATH" or "tcp:HOST:PORT" with libferry's
 * ferry_sock_listen() (a live server's unix socket or another kind of file
 * is refused), and removes the socket file at destroy if it is still the
 * one bound (ferry_sock_file). bound (may be NULL) gets the address listened on, with the
 * port the kernel chose for "tcp:HOST:0". Returns 0 or a negative errno
 * with a message in err.
 */
int ferry_qmp_server_listen(ferry_qmp_server *s, const char *addr, char *bound, size_t bound_len,
			    char *err, size_t err_len);

/*
 * Takes fd, an already connected stream socket (one end of a
 * socketpair, a connection the embedder accepted itself), as a client:
 * made non-blocking and close-on-exec, greeted, served like an accepted
 * one. The server owns fd from the call on, also on failure (then it is
 * closed). Returns 0, -EBUSY (max_clients reached: the client gets a
 * GenericError first), -ENOMEM or a negative errno from fcntl/epoll.
 */
int ferry_qmp_server_adopt(ferry_qmp_server *s, int fd);

/*
 * Sends an event to every negotiated client. data (may be NULL: no "data"
 * member, as QEMU's STOP) is stolen. timestamp_us: CLOCK_REALTIME. name
 * must be one of cfg->events (asserted).
 */
void ferry_qmp_server_event(ferry_qmp_server *s, const char *name, json_t *data,
			    uint64_t timestamp_us);

/*
 * Tries to write every client's pending output, waiting at most
 * timeout_ms (for a reply to `quit` before the process exits).
 */
void ferry_qmp_server_flush(ferry_qmp_server *s, int timeout_ms);

/* Completes req with {"return": ret}; ret (NULL means {}) is stolen. */
void ferry_qmp_req_return(ferry_qmp_req *req, json_t *ret);

/* Completes req with {"error": {"class": cls, "desc": ...}}. */
void ferry_qmp_req_error(ferry_qmp_req *req, const char *cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The command's name ("migrate"). */
const char *ferry_qmp_req_command(const ferry_qmp_req *req);

/*
 * File descriptors the client passed with SCM_RIGHTS (unix sockets), kept
 * by its connection (qmp-fds.h) and closed with it: the fds that came
 * with its last read that carried any, and the ones getfd named.
 * ferry_qmp_req_take_received_fd() takes the first that came (closing
 * the others): the fd, which the caller owns, or -ENOENT.
 * ferry_qmp_req_name_fd() gives fd a name on the connection (replacing,
 * and closing, the fd of the same name); it takes fd, also on failure;
 * 0, -E2BIG (too many names), -ENOMEM or -ENOENT (the client is gone).
 * ferry_qmp_req_take_fd() takes the fd named name: the fd, or -ENOENT.
 */
#define FERRY_QMP_FDS_NAMED 32 /* named fds per connection, at most */
int ferry_qmp_req_take_received_fd(ferry_qmp_req *req);
int ferry_qmp_req_name_fd(ferry_qmp_req *req, const char *name, int fd);
int ferry_qmp_req_take_fd(ferry_qmp_req *req, const char *name);

/*
 * Checks obj's members against spec (ends with { NULL }) in QEMU's order
 * and words, as QEMU's input visitor does: each declared member in turn
 * ("Parameter 'uri' is missing", "Invalid parameter type for 'uri',
 * expected: string", "Parameter 'downtime-limit' expects uint64",
 * "Parameter 'capability' does not accept value 'x'"), nested objects and
 * arrays by path ("capabilities[0].state"), a union's variant after its
 * base, then any undeclared member ("Parameter 'foo' is unexpected").
 * prefix names a nested object in messages ("" at the top). Returns 0, or
 * -EINVAL with the message in err.
 */
int ferry_qmp_check_args(json_t *obj, const ferry_qmp_arg *spec, const char *prefix, char *err,
			 size_t err_len);
/* The same against a whole OBJECT type (a union's base and variant). */
int ferry_qmp_check_type(json_t *obj, const ferry_qmp_arg *type, const char *prefix, char *err,
			 size_t err_len);

/*
 * The server's own: QEMU's introspection (query-qmp-schema's reply) of the
 * command tables (a NULL-terminated list) and the events. NULL: no memory.
 */
json_t *ferry_qmp_schema(const ferry_qmp_command *const *tables, const ferry_qmp_event *events);

/* CLOCK_REALTIME in microseconds (event timestamps). Thread: any. */
uint64_t ferry_qmp_wall_us(void);

#endif
