/* SPDX-License-Identifier: MIT */
/*
 * The `ferry host` daemon: a synthetic guest (src/guest) run by libferry,
 * controlled over QMP on an epoll loop. This folder is built against the
 * public headers only (include/ferry.h, the guest's headers), as any VMM
 * that embeds libferry would be:
 *
 *   host.c      options, the loop's wiring, signals, the worker thread
 *   host-qmp.c  the QMP commands (migrate, query-migrate, parameters, ...)
 *   qmp.c       the QMP server: listeners, connections, framing, dispatch
 *   loop.c      the epoll loop: fd watches and timers
 *
 * Its one entry point is for the `ferry` command line (src/cli/main.c).
 */
#ifndef FERRY_DAEMON_H
#define FERRY_DAEMON_H

/*
 * `ferry host ARGS`: argv[0] is "host". Runs until `quit`, SIGINT or
 * SIGTERM; returns the process exit status (0, 1 at run time, 2 for a
 * usage error). Thread: the process's main thread.
 */
int ferry_host_main(int argc, char **argv);

#endif
