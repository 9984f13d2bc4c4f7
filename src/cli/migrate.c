/* SPDX-License-Identifier: MIT */
/*
 * QMP clients of `ferry host`:
 *   ferry migrate --qmp ADDR URI [--set NAME=VALUE]... [--cap NAME=on|off]...
 *                 [--json] [--stats FILE.jsonl]
 *       drives a source host: sets parameters and capabilities, starts the
 *       migration, follows it with query-migrate every 100 ms (a progress
 *       bar on a TTY, plain lines otherwise), cancels it on Ctrl-C, prints
 *       a summary (or, with --json, the final query-migrate reply). Exit
 *       status 0 only if the migration completed.
 *   ferry qmp --qmp ADDR '{"execute": ...}' | COMMAND ['{ARGS}']
 *       sends one command (after negotiation) and prints the reply.
 *
 * Throughput is computed here from `ram.transferred` between samples
 * (libferry's `mbps` is an average updated once per pass).
 *
 * Thread: main only. The first SIGINT sets a flag (no SA_RESTART); a
 * second one gets the default action.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define MAX_KV 32
#define CALL_TIMEOUT_MS 10000

static volatile sig_atomic_t interrupted;

/* Installed with SA_RESETHAND: a second Ctrl-C gets the default action. */
static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static double wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static json_int_t jint(json_t *o, const char *k1, const char *k2)
{
	json_t *v = json_object_get(o, k1);
	if (k2)
		v = json_object_get(v, k2);
	return json_is_integer(v) ? json_integer_value(v) : 0;
}

int ferry_cli_parse_kv(const char *kv, char *name, size_t nlen, json_t **value)
{
	const char *eq = strchr(kv, '=');
	if (!eq || eq == kv || (size_t)(eq - kv) >= nlen)
		return -EINVAL;
	memcpy(name, kv, (size_t)(eq - kv));
	name[eq - kv] = 0;
	const char *v = eq + 1;
	uint64_t x;
	if (!ferry_cli_parse_size(v, &x) && x <= (uint64_t)INT64_MAX)
		*value = json_integer((json_int_t)x);
	else if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes"))
		*value = json_true();
	else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no"))
		*value = json_false();
	else
		*value = json_string(v);
	return 0;
}

/* "1.5 GiB", "512.0 MiB" */
static const char *fmt_bytes(char *buf, size_t n, double b)
{
	if (b >= 1024.0 * 1024 * 1024)
		snprintf(buf, n, "%.2f GiB", b / (1024.0 * 1024 * 1024));
	else
		snprintf(buf, n, "%.1f MiB", b / (1024.0 * 1024));
	return buf;
}

/* "1.9 GB/s", "120 MB/s" (decimal, as network rates are) */
static const char *fmt_rate(char *buf, size_t n, double bps)
{
	if (bps >= 1e9)
		snprintf(buf, n, "%.2f GB/s", bps / 1e9);
	else
		snprintf(buf, n, "%.0f MB/s", bps / 1e6);
	return buf;
}

static void show_progress(ferry_progress mode, json_t *info, double thr, bool cancelling)
{
	json_t *ram = json_object_get(info, "ram");
	const char *st = json_string_value(json_object_get(info, "status"));
	double remaining = (double)jint(ram, "remaining", NULL);
	double done = (double)(jint(ram, "normal", NULL) + jint(ram, "duplicate", NULL) +
			       jint(ram, "x-skipped", NULL)) * 4096.0;
	double pct = done + remaining > 0 ? 100.0 * done / (done + remaining) : 0;
	double dirty = (double)jint(ram, "dirty-pages-rate", NULL) * 4096.0;
	json_int_t pass = jint(ram, "dirty-sync-count", NULL);
	char b1[32], b2[32], b3[32], eta[32] = "-";
	if (thr > 0 && remaining > 0)
		snprintf(eta, sizeof(eta), "%.1f s", remaining / thr);
	else if (st && !strcmp(st, "completed"))
		snprintf(eta, sizeof(eta), "0.0 s");
	if (mode == FERRY_PROGRESS_BAR) {
		char bar[31];
		int fill = (int)(pct * 30 / 100);
		for (int i = 0; i < 30; i++)
			bar[i] = i < fill ? '#' : '-';
		bar[30] = 0;
		fprintf(stderr, "\r[%s] %5.1f%%  pass %-3lld %10s  dirty %9s  remaining %10s  ETA %-7s %s%s\033[K",
			bar, pct, (long long)pass, fmt_rate(b1, sizeof(b1), thr),
			fmt_rate(b2, sizeof(b2), dirty), fmt_bytes(b3, sizeof(b3), remaining), eta,
			st ? st : "?", cancelling ? " (cancelling)" : "");
	} else {
		fprintf(stderr, "migrate: %-10s pass %lld  %5.1f%%  %s  dirty %s  remaining %s  ETA %s%s\n",
			st ? st : "?", (long long)pass, pct, fmt_rate(b1, sizeof(b1), thr),
			fmt_rate(b2, sizeof(b2), dirty), fmt_bytes(b3, sizeof(b3), remaining), eta,
			cancelling ? "  (cancelling)" : "");
	}
	fflush(stderr);
}

static bool final_status(const char *s)
{
	return s && (!strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled"));
}

json_t *ferry_cli_migration_drive(ferry_qmp_conn *c, const ferry_cli_drive *d, char *err,
				  size_t elen)
{
	unsigned interval = d->interval_ms ? d->interval_ms : 100;
	json_t *r = ferry_qmp_client_exec(c, "migrate", json_pack("{s:s}", "uri", d->uri),
					  CALL_TIMEOUT_MS, err, elen, NULL);
	if (!r)
		return NULL;
	json_decref(r);
	bool cancelling = false;
	double prev_t = 0, thr = 0, last_line = 0;
	json_int_t prev_x = 0;
	for (unsigned tick = 0;; tick++) {
		if (d->interrupted && *d->interrupted && !cancelling) {
			cancelling = true;
			r = ferry_qmp_client_exec(c, "migrate_cancel", NULL, CALL_TIMEOUT_MS, err, elen, NULL);
			if (!r)
				return NULL;
			json_decref(r);
		}
		json_t *info = ferry_qmp_client_exec(c, "query-migrate", NULL, CALL_TIMEOUT_MS, err,
						     elen, NULL);
		if (!info)
			return NULL;
		double t = wall_s();
		json_int_t x = jint(info, "ram", "transferred");
		/*
		 * libferry updates `transferred` in steps (once per scan batch):
		 * measure the rate from one change to the next, not per sample.
		 */
		if (prev_t == 0) {
			prev_t = t;
			prev_x = x;
		} else if (x != prev_x && t > prev_t) {
			thr = (double)(x - prev_x) / (t - prev_t);
			prev_t = t;
			prev_x = x;
		}
		if (d->stats) {
			json_t *s = json_deep_copy(info);
			json_object_set_new(s, "timestamp", json_real(t));
			char *line = json_dumps(s, JSON_COMPACT);
			json_decref(s);
			if (line) {
				fprintf(d->stats, "%s\n", line);
				free(line);
			}
		}
		const char *st = json_string_value(json_object_get(info, "status"));
		bool fin = final_status(st);
		if (d->progress == FERRY_PROGRESS_BAR ||
		    (d->progress == FERRY_PROGRESS_LINES && (t - last_line >= 1.0 || fin))) {
			show_progress(d->progress, info, thr, cancelling);
			last_line = t;
		}
		if (fin) {
			if (d->progress == FERRY_PROGRESS_BAR)
				fputc('\n', stderr);
			if (d->stats)
				fflush(d->stats);
			return info;
		}
		json_decref(info);
		struct timespec ts = { .tv_sec = interval / 1000,
				       .tv_nsec = (long)(interval % 1000) * 1000000L };
		nanosleep(&ts, NULL); /* Ctrl-C cuts it short: cancel sooner */
		(void)tick;
	}
}

void ferry_cli_summary_print(FILE *f, json_t *info)
{
	const char *st = json_string_value(json_object_get(info, "status"));
	json_t *ram = json_object_get(info, "ram");
	json_int_t total = jint(info, "total-time", NULL), xfer = jint(ram, "transferred", NULL);
	char b[32];
	if (st && !strcmp(st, "completed")) {
		fprintf(f, "migration completed: %s in %lld ms (%.0f Mbit/s), %lld passes, downtime %lld ms\n",
			fmt_bytes(b, sizeof(b), (double)xfer), (long long)total,
			total ? (double)xfer * 8 / 1e3 / (double)total : 0.0,
			(long long)jint(ram, "dirty-sync-count", NULL),
			(long long)jint(info, "downtime", NULL));
		fprintf(f, "  pages: %lld with data, %lld zero, %lld never populated (skipped)\n",
			(long long)jint(ram, "normal", NULL), (long long)jint(ram, "duplicate", NULL),
			(long long)jint(ram, "x-skipped", NULL));
	} else if (st && !strcmp(st, "failed")) {
		fprintf(f, "migration failed after %lld ms: %s\n", (long long)total,
			json_string_value(json_object_get(info, "error-desc")));
	} else {
		fprintf(f, "migration %s after %lld ms; the guest runs on here\n", st ? st : "?",
			(long long)total);
	}
}

/* Applies --set (parameters) and --cap (capabilities). Returns 0 or 2. */
static int apply_settings(ferry_qmp_conn *c, const char *who, char **sets, int nsets, char **caps,
			  int ncaps)
{
	char err[512], name[128];
	if (nsets) {
		json_t *args = json_object();
		for (int i = 0; i < nsets; i++) {
			json_t *v;
			if (ferry_cli_parse_kv(sets[i], name, sizeof(name), &v)) {
				fprintf(stderr, "ferry %s: --set '%s': expected NAME=VALUE\n", who, sets[i]);
				json_decref(args);
				return 2;
			}
			json_object_set_new(args, name, v);
		}
		json_t *r = ferry_qmp_client_exec(c, "migrate-set-parameters", args, CALL_TIMEOUT_MS,
						  err, sizeof(err), NULL);
		if (!r) {
			fprintf(stderr, "ferry %s: migrate-set-parameters: %s\n", who, err);
			return 2;
		}
		json_decref(r);
	}
	if (ncaps) {
		json_t *list = json_array();
		for (int i = 0; i < ncaps; i++) {
			json_t *v = NULL;
			if (ferry_cli_parse_kv(caps[i], name, sizeof(name), &v) || !json_is_boolean(v)) {
				fprintf(stderr, "ferry %s: --cap '%s': expected NAME=on or NAME=off\n", who,
					caps[i]);
				json_decref(list);
				json_decref(v);
				return 2;
			}
			json_array_append_new(list, json_pack("{s:s,s:o}", "capability", name, "state", v));
		}
		json_t *r = ferry_qmp_client_exec(c, "migrate-set-capabilities",
						  json_pack("{s:o}", "capabilities", list),
						  CALL_TIMEOUT_MS, err, sizeof(err), NULL);
		if (!r) {
			fprintf(stderr, "ferry %s: migrate-set-capabilities: %s\n", who, err);
			return 2;
		}
		json_decref(r);
	}
	return 0;
}

static void migrate_usage(FILE *f)
{
	fprintf(f,
		"usage: ferry migrate --qmp ADDRESS URI [options]\n"
		"  --qmp ADDRESS      the source host's QMP socket (unix:PATH, PATH or tcp:HOST:PORT)\n"
		"  URI                where to: tcp:HOST:PORT or unix:PATH (a destination host)\n"
		"  --set NAME=VALUE   migration parameter before starting: downtime-limit (ms),\n"
		"                     max-bandwidth (bytes/s, K/M/G), x-max-passes\n"
		"  --cap NAME=on|off  migration capability before starting\n"
		"  --stats FILE       write one query-migrate sample per line (JSON) every 100 ms\n"
		"                     (`ferry plot FILE -o FILE.svg` draws them)\n"
		"  --json             print the final query-migrate reply on stdout\n"
		"Ctrl-C cancels the migration (the guest runs on here). Exit status 0 only if\n"
		"the migration completed.\n");
}

int ferry_cli_migrate(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "qmp", required_argument, 0, 'q' },
		{ "set", required_argument, 0, 's' },
		{ "cap", required_argument, 0, 'c' },
		{ "stats", required_argument, 0, 'S' },
		{ "json", no_argument, 0, 'j' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *qmp = NULL, *stats_path = NULL;
	char *sets[MAX_KV], *caps[MAX_KV];
	int nsets = 0, ncaps = 0, c;
	bool json = false;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'q': qmp = optarg; break;
		case 's':
		case 'c':
			if ((c == 's' ? nsets : ncaps) == MAX_KV) {
				fprintf(stderr, "ferry migrate: too many --%s\n", c == 's' ? "set" : "cap");
				return 2;
			}
			if (c == 's')
				sets[nsets++] = optarg;
			else
				caps[ncaps++] = optarg;
			break;
		case 'S': stats_path = optarg; break;
		case 'j': json = true; break;
		case 'h': migrate_usage(stdout); return 0;
		default: migrate_usage(stderr); return 2;
		}
	}
	if (!qmp || optind != argc - 1) {
		migrate_usage(stderr);
		return 2;
	}
	const char *uri = argv[optind];
	char err[512];
	if (ferry_uri_validate(uri, err, sizeof(err))) {
		fprintf(stderr, "ferry migrate: %s\n", err);
		return 2;
	}
	FILE *stats = NULL;
	if (stats_path && !(stats = fopen(stats_path, "w"))) {
		fprintf(stderr, "ferry migrate: %s: %s\n", stats_path, strerror(errno));
		return 2;
	}
	ferry_qmp_conn *conn;
	if (ferry_qmp_client_open(qmp, CALL_TIMEOUT_MS, &conn, err, sizeof(err))) {
		fprintf(stderr, "ferry migrate: %s\n", err);
		if (stats)
			fclose(stats);
		return 1;
	}
	int rc = apply_settings(conn, "migrate", sets, nsets, caps, ncaps);
	if (rc)
		goto out;
	/* No SA_RESTART: sleeps end early. SA_RESETHAND: a second Ctrl-C ends the client. */
	struct sigaction sa = { .sa_handler = on_sigint, .sa_flags = SA_RESETHAND };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	ferry_cli_drive d = {
		.uri = uri,
		.progress = json ? FERRY_PROGRESS_NONE
			    : isatty(2) ? FERRY_PROGRESS_BAR
					: FERRY_PROGRESS_LINES,
		.stats = stats,
		.interrupted = &interrupted,
	};
	json_t *info = ferry_cli_migration_drive(conn, &d, err, sizeof(err));
	if (!info) {
		fprintf(stderr, "ferry migrate: %s\n", err);
		rc = 1;
		goto out;
	}
	const char *st = json_string_value(json_object_get(info, "status"));
	rc = st && !strcmp(st, "completed") ? 0 : 1;
	if (json) {
		char *s = json_dumps(info, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
	} else {
		ferry_cli_summary_print(stdout, info);
	}
	json_decref(info);
out:
	ferry_qmp_client_close(conn);
	if (stats && fclose(stats)) {
		fprintf(stderr, "ferry migrate: %s: %s\n", stats_path, strerror(errno));
		rc = rc ? rc : 1;
	}
	return rc;
}

static void qmp_usage(FILE *f)
{
	fprintf(f,
		"usage: ferry qmp --qmp ADDRESS [--timeout S] '{\"execute\": ...}'\n"
		"       ferry qmp --qmp ADDRESS [--timeout S] COMMAND ['{ARGUMENTS}']\n"
		"Sends one QMP command (after capabilities negotiation) and prints the reply.\n"
		"Exit status 0 for a \"return\", 1 for an \"error\" or a failure.\n");
}

int ferry_cli_qmp(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "qmp", required_argument, 0, 'q' },
		{ "timeout", required_argument, 0, 't' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *qmp = NULL;
	uint64_t timeout_s = 300;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'q': qmp = optarg; break;
		case 't':
			if (ferry_cli_parse_size(optarg, &timeout_s) || !timeout_s || timeout_s > 86400) {
				fprintf(stderr, "ferry qmp: invalid --timeout '%s'\n", optarg);
				return 2;
			}
			break;
		case 'h': qmp_usage(stdout); return 0;
		default: qmp_usage(stderr); return 2;
		}
	}
	int left = argc - optind;
	if (!qmp || left < 1 || left > 2) {
		qmp_usage(stderr);
		return 2;
	}
	char *text;
	const char *first = argv[optind];
	while (*first == ' ' || *first == '\t' || *first == '\n')
		first++;
	if (*first == '{') {
		if (left != 1) {
			qmp_usage(stderr);
			return 2;
		}
		text = strdup(first);
	} else {
		json_t *o = json_pack("{s:s}", "execute", first);
		if (left == 2) {
			json_error_t je;
			json_t *a = json_loads(argv[optind + 1], 0, &je);
			if (!json_is_object(a)) {
				fprintf(stderr, "ferry qmp: arguments must be a JSON object%s%s\n",
					a ? "" : ": ", a ? "" : je.text);
				json_decref(a);
				json_decref(o);
				return 2;
			}
			json_object_set_new(o, "arguments", a);
		}
		text = json_dumps(o, JSON_COMPACT);
		json_decref(o);
	}
	char err[512];
	ferry_qmp_conn *conn;
	if (ferry_qmp_client_open(qmp, CALL_TIMEOUT_MS, &conn, err, sizeof(err))) {
		fprintf(stderr, "ferry qmp: %s\n", err);
		free(text);
		return 1;
	}
	json_t *reply = ferry_qmp_client_raw(conn, text, (int)(timeout_s * 1000), err, sizeof(err));
	free(text);
	ferry_qmp_client_close(conn);
	if (!reply) {
		fprintf(stderr, "ferry qmp: %s\n", err);
		return 1;
	}
	char *s = json_dumps(reply, JSON_COMPACT);
	printf("%s\n", s);
	free(s);
	int rc = json_object_get(reply, "return") ? 0 : 1;
	json_decref(reply);
	return rc;
}
