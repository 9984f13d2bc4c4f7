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

/* Parses seconds, fractions allowed ("2.5"), > 0 and <= max_s; -EINVAL else. */
int ferry_cli_parse_seconds(const char *s, double max_s, double *out);

/*
 * The command-line grammar's errors, for getopt_long() run with a leading
 * ':' in its optstring: prints "ferry CMD: unknown option '--x'" (c '?') or
 * "ferry CMD: option '--x' needs a value" (c ':'), then the usage, to
 * stderr. Returns 2 (the usage-error exit status).
 */
int ferry_cli_bad_option(const char *cmd, int c, char **argv, void (*usage)(FILE *));

/* Prints "ferry CMD: MESSAGE" and the usage to stderr; returns 2. */
int ferry_cli_usage_error(const char *cmd, void (*usage)(FILE *), const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Units for people, everywhere (progress, summaries, plot): sizes in MiB
 * or GiB, rates in MiB/s (powers of 1024), times in s (downtime in ms).
 */
const char *ferry_cli_fmt_bytes(char *buf, size_t n, double bytes);
const char *ferry_cli_fmt_rate(char *buf, size_t n, double bytes_per_s);
#define FERRY_CLI_MIB (1024.0 * 1024.0)
/* The send rate is ram.transferred's change over this much total-time. */
#define FERRY_CLI_RATE_WINDOW_MS 250

/* How a driven migration shows its progress on stderr. */
typedef enum ferry_progress {
	FERRY_PROGRESS_NONE = 0,
	FERRY_PROGRESS_LINES, /* one plain line per second (not a TTY) */
	FERRY_PROGRESS_BAR,   /* a bar redrawn in place (a TTY) */
} ferry_progress;

typedef struct ferry_cli_drive {
	/* In: */
	const char *who;            /* "migrate", "demo": messages start "ferry WHO: " */
	const char *uri;
	const char *qmp_addr;       /* the source's, for the hints of a stall; may be NULL */
	ferry_progress progress;
	FILE *stats;                /* a header line, then one JSON line per sample, or NULL */
	unsigned interval_ms;       /* sampling period; 0: 20 ms for 5 s, then 100 ms */
	double timeout_s;           /* > 0: migrate_cancel after this long */
	volatile sig_atomic_t *interrupted; /* when set: migrate_cancel, then follow it */
	/* Out (the caller json_decref()s params and caps): */
	json_t *params;             /* query-migrate-parameters before the start, or NULL */
	json_t *caps;               /* {"name": bool} from query-migrate-capabilities, or NULL */
	bool timed_out;             /* the timeout cancelled the migration */
	double postcopy_after_s;    /* total-time at the switch to postcopy; < 0: none seen */
} ferry_cli_drive;

/*
 * Runs `migrate` on a connected source host and follows the migration with
 * query-migrate until it ends. Returns the final query-migrate reply (a new
 * reference) or NULL with a message in err (the command was refused or the
 * connection failed).
 */
json_t *ferry_cli_migration_drive(ferry_qmp_conn *c, ferry_cli_drive *d, char *err,
				  size_t err_len);

/*
 * Turns "name=value" into a QMP argument: a size ("300", "100M") becomes
 * an integer, on/off/true/false a boolean, anything else a string.
 * Returns 0, or -EINVAL ("name=value" without '=').
 */
int ferry_cli_parse_kv(const char *kv, char *name, size_t name_len, json_t **value);

/*
 * Prints the end-of-migration summary of a query-migrate reply; d (may be
 * NULL) gives the downtime limit and the switch to postcopy.
 */
void ferry_cli_summary_print(FILE *f, json_t *info, const ferry_cli_drive *d);

/*
 * The live devices of a query-migrate reply in one line ("3 live devices,
 * 12.0 MiB of device state after the stop (0 B before), slowest save 331 ms;
 * downtime: RAM 21 ms, device data 395 ms, other 9 ms"); false (buf
 * untouched) when it has no x-device-state.
 */
bool ferry_cli_device_text(char *buf, size_t n, json_t *info);

#endif
