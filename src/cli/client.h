/* SPDX-License-Identifier: MIT */
/*
 * A small blocking QMP client for the `ferry` subcommands that drive hosts
 * (migrate, qmp, demo): connect, read the greeting, negotiate, execute
 * commands, collect events. Works with any QMP server that ends each
 * message with a newline (Ferry and QEMU do).
 *
 * Ownership: ferry_qmp_client_open() success => ferry_qmp_client_close().
 * Thread: one thread per client object.
 */
#ifndef FERRY_CLI_CLIENT_H
#define FERRY_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct ferry_qmp_conn ferry_qmp_conn;

/*
 * Connects to "unix:PATH", "tcp:HOST:PORT" or a plain socket path, reads
 * the greeting and runs qmp_capabilities, all within timeout_ms. Returns 0
 * or a negative errno with a message in err.
 */
int ferry_qmp_client_open(const char *addr, int timeout_ms, ferry_qmp_conn **out, char *err,
			  size_t err_len);
void ferry_qmp_client_close(ferry_qmp_conn *c);

/*
 * Sends one message (text, sent as is plus a newline) and returns the next
 * reply that is not an event (events are kept for ferry_qmp_client_event),
 * or NULL on timeout or a broken connection (message in err).
 */
json_t *ferry_qmp_client_raw(ferry_qmp_conn *c, const char *text, int timeout_ms, char *err,
			     size_t err_len);

/*
 * Executes a command (args may be NULL; it is stolen). Returns the
 * "return" value (a new reference), or NULL with the error's desc (or the
 * transport failure) in err. *is_error tells the two apart if not NULL.
 */
json_t *ferry_qmp_client_exec(ferry_qmp_conn *c, const char *cmd, json_t *args, int timeout_ms,
			      char *err, size_t err_len, bool *is_error);

/* The next event received, waiting up to timeout_ms; NULL if none. */
json_t *ferry_qmp_client_event(ferry_qmp_conn *c, int timeout_ms);

#endif
