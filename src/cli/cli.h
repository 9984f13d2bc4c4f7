/* SPDX-License-Identifier: MIT */
/* The `ferry` command line: subcommands and shared helpers. */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "client.h"
#include "ferry.h"

int ferry_cli_host(int argc, char **argv);
int ferry_cli_demo(int argc, char **argv);
int ferry_cli_migrate(int argc, char **argv);
int ferry_cli_qmp(int argc, char **argv);
int ferry_cli_plot(int argc, char **argv);

/* Parses "300", "4K", "1M", "2G" (powers of 1024); -EINVAL on junk. */
int ferry_cli_parse_size(const char *s, uint64_t *out);

/* How a driven migration shows its progress on stderr. */
typedef enum ferry_progress {
	FERRY_PROGRESS_NONE = 0,
	FERRY_PROGRESS_LINES, /* one plain line per second (not a TTY) */
	FERRY_PROGRESS_BAR,   /* a bar redrawn in place (a TTY) */
} ferry_progress;

typedef struct ferry_cli_drive {
	const char *uri;
	ferry_progress progress;
	FILE *stats;                /* one JSON line per sample, or NULL */
	unsigned interval_ms;       /* sampling period; 0: 100 */
	volatile sig_atomic_t *interrupted; /* when set: migrate_cancel, then follow it */
} ferry_cli_drive;

/*
 * Runs `migrate` on a connected source host and follows the migration with
 * query-migrate until it ends. Returns the final query-migrate reply (a new
 * reference) or NULL with a message in err (the command was refused or the
 * connection failed).
 */
json_t *ferry_cli_migration_drive(ferry_qmp_conn *c, const ferry_cli_drive *d, char *err,
				  size_t err_len);

/*
 * Turns "name=value" into a QMP argument: a size ("300", "100M") becomes
 * an integer, on/off/true/false a boolean, anything else a string.
 * Returns 0, or -EINVAL ("name=value" without '=').
 */
int ferry_cli_parse_kv(const char *kv, char *name, size_t name_len, json_t **value);

/* Prints the end-of-migration summary of a query-migrate reply. */
void ferry_cli_summary_print(FILE *f, json_t *info);

#endif
