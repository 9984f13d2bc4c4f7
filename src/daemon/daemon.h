/* SPDX-License-Identifier: MIT */
/*
 * The `ferry host` daemon: a synthetic guest (src/guest) run by libferry,
 * controlled over QMP on an epoll loop. This folder is built against the
 * public headers only (include/ferry.h, the guest's headers), as any VMM
 * that embeds libferry would be:
 *
 *   host.c      the loop's wiring, signals, the worker thread, events
 *   host-qmp.c  the QMP commands (migrate, query-migrate, parameters, ...)
 *   qmp.c       the QMP server: listeners, connections, framing, dispatch
 *   loop.c      the epoll loop: fd watches and timers
 *
 * Its one entry point, ferry_host_run(), takes a parsed configuration; the
 * command line (`ferry host --qmp ...`) is the CLI's (src/cli/host-cmd.c).
 */
#ifndef FERRY_DAEMON_H
#define FERRY_DAEMON_H

#include <stdbool.h>

#include "ferry.h"
#include "guest.h"

#define FERRY_HOST_MAX_QMP 8    /* QMP listeners */
#define FERRY_HOST_ADDR_MAX 512 /* bytes of an address or URI, with its NUL */

/* What a host is at start (the command line's job to fill and check). */
typedef struct ferry_host_config {
	ferry_guest_config guest;            /* paused: start with the vCPUs stopped */
	ferry_dirty_mode dirty;
	/* 1..FERRY_HOST_MAX_QMP addresses, "unix:PATH" or "tcp:HOST:PORT". */
	const char *qmp[FERRY_HOST_MAX_QMP];
	int nqmp;
	const char *incoming;                /* NULL (a source), "defer" or a migration URI */
	bool exit_on_error;                  /* destination: exit when an incoming one fails */
	bool no_autostart;                   /* destination (-S): the guest arrives stopped */
	bool json;                           /* one JSON line on stdout once listening */
	/*
	 * NULL, or a tls-creds-x509 directory (--tls): object "tls0" from it
	 * (a server endpoint with incoming, else a client one; verify-peer)
	 * and the parameter tls-creds set to it, as if by QMP.
	 */
	const char *tls_dir;
	bool tls_psk; /* tls_dir is a tls-creds-psk one (--tls-psk; username "qemu") */
} ferry_host_config;

/*
 * Runs a host until `quit`, SIGINT or SIGTERM. Returns the process exit
 * status: 0, or 1 (a socket that cannot be listened on, a failed incoming
 * migration under exit_on_error, ...), after the message on stderr.
 * Thread: the process's main thread; it blocks SIGINT, SIGTERM and SIGHUP
 * (read from a signalfd) and ignores SIGPIPE.
 */
int ferry_host_run(const ferry_host_config *cfg);

#endif
