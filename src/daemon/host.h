/* SPDX-License-Identifier: MIT */
/*
 * `ferry host` internals shared by host.c (process, event loop, event
 * queue, guest operations) and host-qmp.c (the QMP commands).
 *
 * Threads and ownership:
 *  - main (the loop thread) owns struct host and everything in it that is
 *    not marked otherwise; it is the only thread that calls ferry_migration_*
 *    and the QMP server.
 *  - libferry's migration threads call on_ferry_event() (through
 *    ferry_migration_set_event_cb), with libferry's mig_lock held: they only
 *    append to the event ring (ev_lock) and write the eventfd.
 *  - "host/worker" runs the slow guest operations (RAM hash, twin
 *    verification, run-until, reset) one at a time; it touches only the op
 *    it was handed and the guest, and hands the op back through done_ops
 *    (ev_lock) and the same eventfd.
 * Lock order: libferry's locks, then ev_lock (a leaf).
 */
#ifndef FERRY_DAEMON_HOST_H
#define FERRY_DAEMON_HOST_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon.h"
#include "ferry.h"
#include "guest.h"
#include "loop.h"
#include "qmp.h"

#define HOST_EVENT_RING 4096

typedef struct host host;
typedef struct host_op host_op;
typedef void (*host_op_fn)(host *h, host_op *op);

/*
 * A guest operation. Every command that changes or inspects the guest
 * (stop, cont, migrate, migrate-incoming, query-guest-hash, x-run-until)
 * and the internal reset of a destination go through one FIFO queue, so
 * they run in order and never overlap: `work` (optional) runs on the
 * worker thread, then `done` on the loop thread, which completes req.
 */
struct host_op {
	host_op *next;
	const char *what;
	/*
	 * Loop thread, when the op reaches the head of the queue: checks the
	 * state at that moment. Returning false means it completed req with
	 * an error and the op ends there (no work, no done).
	 */
	bool (*check)(host *h, host_op *op);
	host_op_fn work;  /* worker thread; NULL: nothing to do there */
	host_op_fn done;  /* loop thread; always called, then op is freed */
	/*
	 * Loop thread, optional: makes a long `work` end early (x-run-until);
	 * called after `cancel` is set, whether work runs, is queued or done.
	 */
	host_op_fn interrupt;
	atomic_bool cancel; /* set by host_ops_interrupt(); work reads it */
	const char *cancelled_by; /* loop: "stop", or NULL (the host is quitting) */
	ferry_qmp_req *req; /* NULL for internal operations */
	json_t *args;     /* the command's arguments (a reference), or NULL */
	/* Results of work (worker writes, loop reads after the hand-back). */
	int result;
	bool verify;
	bool was_running;
	uint64_t hash;
	uint64_t steps[FERRY_GUEST_MAX_VCPUS];
	ferry_verify_result vr;
};

typedef enum host_incoming {
	HOST_INCOMING_NONE = 0, /* a source: the guest starts with its initial fill */
	HOST_INCOMING_URI,      /* --incoming URI: listen at start, and again after a failure */
	HOST_INCOMING_DEFER,    /* --incoming defer: wait for migrate-incoming */
} host_incoming;

typedef enum host_dir { HOST_DIR_NONE = 0, HOST_DIR_OUT, HOST_DIR_IN } host_dir;

struct host {
	ferry_loop *loop;
	ferry_qmp_server *qmp;
	ferry_vm_t *vm;
	ferry_guest_t *g;
	ferry_guest_config cfg;
	/* cfg.balloon: a virtio-balloon (free page hints) and, on a source, the guest's driver. */
	ferry_gpa_map_t *gpa;
	ferry_balloon_t *balloon;
	struct ferry_guest_balloon *bdrv;

	/* Control-plane settings (migrate-set-parameters / -capabilities). */
	ferry_migration_params params;
	const char *tls_dir; /* ferry_host_config's, or NULL */
	bool tls_psk;        /* ferry_host_config's */
	bool cap_events;
	bool cap_blocktime; /* postcopy-blocktime: query-migrate's per-vCPU postcopy figures */

	/* Run state as the control plane sees it. */
	host_incoming incoming;
	char incoming_uri[FERRY_HOST_ADDR_MAX];
	bool exit_on_error;     /* a failed incoming migration ends the process */
	bool exit_on_error_flag; /* --exit-on-error: the default for migrate-incoming */
	bool no_autostart;      /* -S with --incoming: ferry_migration_set_autostart(false) at setup */
	bool inmigrate;         /* waiting for, or receiving, an incoming migration */
	bool incoming_started;  /* ferry_migration_incoming() called for this wait */
	host_dir dir;           /* direction of the current (or last) migration */
	bool postmigrate;       /* the guest left by migration and was not resumed */
	bool ever_ran;          /* false: "prelaunch" */
	bool run_job;           /* x-run-until is running the vCPUs */
	bool quitting;          /* host_quit() was called */
	bool in_ran;            /* the incoming guest runs here ("guest running" logged) */
	/* Migration socket files this host bound (removed when done with). */
	ferry_sock_file in_sock, recover_sock;
	json_t *prev_incoming;  /* query-migrate of the last failed incoming (x-previous) */
	json_t *version;        /* QMP greeting and query-version (host_version()) */

	/* Event ring: producers on any thread, consumer the loop. */
	pthread_mutex_t ev_lock;
	ferry_event ring[HOST_EVENT_RING]; /* protected by ev_lock */
	unsigned ring_head, ring_len;      /* protected by ev_lock */
	uint64_t ring_dropped;             /* protected by ev_lock */
	host_op *done_ops;                 /* protected by ev_lock: the op the worker finished */
	int wake_fd;                       /* eventfd; wake-ups coalesce */
	ferry_loop_watch *wake_w;
	ferry_migration_status ev_last;          /* loop: last MIGRATION status sent */

	/* Guest operations: queue owned by the loop; head is the current one. */
	host_op *ops_head, *ops_tail;
	bool op_on_worker;                 /* head was handed to the worker */
	pthread_t worker;
	bool worker_ok;
	pthread_cond_t work_cond;          /* with ev_lock */
	host_op *work_item;                /* protected by ev_lock */
	bool worker_quit;                  /* protected by ev_lock */

	int sig_fd;
	ferry_loop_watch *sig_w;
	int exit_code;
};

/* host.c */

/* Queues an event as if libferry had sent it (stop/cont). Thread: any. */
void host_post_event(host *h, ferry_event_type type);

/* Delivers every queued event to the QMP clients now. Loop thread. */
void host_drain_events(host *h);

/*
 * Queues a guest operation (takes ownership of op); it starts at once if
 * the queue was empty. Loop thread.
 */
void host_op_submit(host *h, host_op *op);

/* Same, ahead of every queued operation not yet started. Loop thread. */
void host_op_submit_urgent(host *h, host_op *op);

/* A zeroed op, or NULL (then req, if any, was completed with an error). */
host_op *host_op_new(const char *what, ferry_qmp_req *req, json_t *args,
		     bool (*check)(host *h, host_op *op), host_op_fn work, host_op_fn done);

/*
 * Sets `cancel` on every queued operation (the one on the worker too) and
 * calls their interrupt hooks; by is what the reply names ("stop"), or
 * NULL when the host is quitting. Loop thread.
 */
void host_ops_interrupt(host *h, const char *by);

/*
 * Ends the process after the current callback, with this exit status;
 * interrupts the guest operations first. Loop thread.
 */
void host_quit(host *h, int code);

/* host-qmp.c */

/* The command table (args and replies: see host-schema.c). */
extern const ferry_qmp_command host_commands[];

/* Fills the table's rows taken from libferry (the parameters); once, before serving. */
void host_qmp_init(void);

/* Reacts to a MIGRATION status the loop just broadcast. Loop thread. */
void host_on_status(host *h, ferry_migration_status s);

/* Starts listening for an incoming migration on uri. Loop thread. */
int host_incoming_start(host *h, const char *uri, char *err, size_t err_len);

/*
 * Starts an incoming migration on fd (a connected or a listening socket,
 * taken also on failure: ferry_migration_incoming_fd()). Loop thread.
 */
int host_incoming_start_fd(host *h, int fd, char *err, size_t err_len);

/* Removes the migration socket files this host bound. Loop thread. */
void host_incoming_release(host *h);

/* Logs that the incoming guest runs here (once per migration). Loop thread. */
void host_on_resume(host *h);

/* query-migrate's reply for the current state. Loop thread. */
json_t *host_query_migrate(host *h);

/*
 * QEMU's VersionInfo for the greeting and query-version: the QEMU release
 * whose migration QMP Ferry implements (HOST_QEMU_*), and "ferry-VERSION"
 * (ferry_version_string()) as the package. A new reference.
 */
json_t *host_version(void);

/*
 * The URI of migrate/migrate-incoming (cmd) from its arguments: "uri", or
 * QEMU 8.2's "channels" (exactly one main socket channel). Returns 0, or
 * -EINVAL with QEMU's message (or Ferry's, for what it lacks) in err.
 */
int host_migration_uri(json_t *args, const char *cmd, char *uri, size_t ulen, char *err, size_t elen);

/* host-schema.c: the types of the replies and events (QEMU's names). */

extern const ferry_qmp_event host_events[];
extern const ferry_qmp_arg host_migration_channel; /* MigrationChannel */
extern const ferry_qmp_arg host_socket_address;    /* SocketAddress */
extern const ferry_qmp_arg host_ret_migration_info, host_ret_status, host_ret_steps,
	host_ret_guest_hash, host_ret_version, host_ret_name, host_ret_uuid, host_ret_kvm,
	host_ret_cpus, host_ret_machines, host_ret_target, host_ret_empty_list;
/* host-fds.c: getfd, closefd, add-fd, remove-fd, query-fdsets (QEMU's). Loop thread. */
void host_cmd_getfd(void *opaque, ferry_qmp_req *req, json_t *args);
void host_cmd_closefd(void *opaque, ferry_qmp_req *req, json_t *args);
void host_cmd_add_fd(void *opaque, ferry_qmp_req *req, json_t *args);
void host_cmd_remove_fd(void *opaque, ferry_qmp_req *req, json_t *args);
void host_cmd_query_fdsets(void *opaque, ferry_qmp_req *req, json_t *args);
extern const ferry_qmp_arg host_getfd_args[], host_add_fd_args[], host_remove_fd_args[];
extern const ferry_qmp_arg host_ret_add_fd, host_ret_fdsets;

/*
 * host-tls.c: object-add (tls-creds-x509, tls-creds-psk, authz-simple), object-del, and
 * the parameters tls-creds, tls-hostname, tls-authz. Loop thread.
 */
void host_cmd_object_add(void *opaque, ferry_qmp_req *req, json_t *args);
void host_cmd_object_del(void *opaque, ferry_qmp_req *req, json_t *args);
extern const ferry_qmp_arg host_object_add_args_t, host_object_del_args[];
/* migrate-set-parameters: refuses over-long values (false: replied). */
bool host_tls_params_check(ferry_qmp_req *req, json_t *args);
/* ... and keeps the given ones (tls-hostname in p). */
void host_tls_params_set(json_t *args, ferry_migration_params *p);
/* query-migrate-parameters' members, "" when unset. */
void host_tls_params_query(json_t *o, const ferry_migration_params *p);
/*
 * Points p's tls_creds/tls_authz at the objects the parameters name (for
 * a migration starting now: libferry takes its own references), or fails
 * with QEMU's message in err ("No TLS credentials with id 'x'").
 */
int host_tls_resolve(ferry_migration_params *p, bool server, char *err, size_t len);
/*
 * --tls DIR (psk false: tls-creds-x509) or --tls-psk DIR (tls-creds-psk,
 * username "qemu"): object tls0 from dir (server: a server endpoint) and
 * tls-creds tls0.
 */
int host_tls_from_dir(const char *dir, bool psk, bool server, char *err, size_t len);

/* Whether a migration URI is "fd:NAME". Thread: any. */
bool host_uri_is_fd(const char *uri);

/*
 * The socket of a migration to/from "fd:NAME": takes the fd getfd named
 * NAME on req's connection (the caller owns it). outgoing: refuses
 * (before taking it) the capabilities that need more connections than
 * one. Returns the fd, or a negative errno with QEMU's message ("File
 * descriptor named 'NAME' has not been found") or Ferry's in err.
 * Loop thread.
 */
int host_fd_for_migration(host *h, ferry_qmp_req *req, const char *uri, bool outgoing, char *err,
			  size_t err_len);

#endif
