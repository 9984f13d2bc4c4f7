/* SPDX-License-Identifier: MIT */
/*
 * QMP clients of `ferry host`:
 *   ferry migrate --qmp ADDR URI [--set NAME=VALUE]... [--cap NAME=on|off]...
 *                 [--timeout S] [--json] [--stats FILE.jsonl]
 *       drives a source host: sets parameters and capabilities, reads them
 *       back, starts the migration, follows it with query-migrate (every
 *       20 ms for 5 s, then 100 ms; a progress bar on a TTY, a line a
 *       second otherwise), cancels it on Ctrl-C or --timeout, prints a
 *       summary (or, with --json, the final query-migrate reply).
 *   ferry migrate --qmp ADDR --status
 *       one query-migrate, for people (QEMU's `info migrate`).
 *   ferry qmp --qmp ADDR '{"execute": ...}' | COMMAND ['{ARGS}']
 *       sends one command (after negotiation) and prints the reply.
 *
 * One definition of each figure for progress, summary and `ferry plot`:
 * time is the host's total-time; the send rate is ram.transferred's change
 * over the last FERRY_CLI_RATE_WINDOW_MS of it; the average is transferred
 * over total-time; units are MiB and MiB/s (cli.h).
 *
 * Exit status: 0 completed, 1 failed/cancelled/runtime error, 2 usage
 * error, 3 --timeout expired (the migration was cancelled).
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

#define fmt_bytes ferry_cli_fmt_bytes
#define fmt_rate ferry_cli_fmt_rate

static bool is_status(json_t *info, const char *name)
{
	const char *st = json_string_value(json_object_get(info, "status"));
	return st && !strcmp(st, name);
}

static bool final_status(json_t *info)
{
	return is_status(info, "completed") || is_status(info, "failed") ||
	       is_status(info, "cancelled");
}

static bool postcopy_status(json_t *info)
{
	const char *st = json_string_value(json_object_get(info, "status"));
	return st && !strncmp(st, "postcopy-", 9);
}

/* "1 pass", "3 passes" */
static const char *passes(char *buf, size_t n, json_int_t k)
{
	snprintf(buf, n, "%lld pass%s", (long long)k, k == 1 ? "" : "es");
	return buf;
}

/*
 * What the progress display remembers between samples. The send rate is
 * ram.transferred's change over the last FERRY_CLI_RATE_WINDOW_MS of
 * total-time (libferry updates it every ~2 MiB, so one 20 ms step says
 * little); `ferry plot` computes the same. The current pass's dirty set is
 * the pages sent in it so far (pages done since the last sample of the
 * previous pass) plus ram.remaining.
 */
#define RING 64
#define SETS 8 /* passes whose dirty sets are remembered */
typedef struct tracker {
	double ring_t[RING], ring_x[RING]; /* total-time (s), transferred */
	unsigned ring_n;
	double rate;             /* bytes/s */
	json_int_t pass, base_done, last_done;
	double sets[SETS];       /* dirty set of each pass seen (bytes), oldest first */
	unsigned nsets;
	double limit_s;          /* downtime-limit (s), for the convergence estimate */
	double cap;              /* max-bandwidth (bytes/s), 0 unlimited */
	bool stalled_told, postcopy_told, timeout_told, in_postcopy, rate_known;
	double last_line, last_bar;
} tracker;

static json_int_t pages_done(json_t *ram)
{
	return jint(ram, "normal", NULL) + jint(ram, "duplicate", NULL) + jint(ram, "x-skipped", NULL);
}

static void tracker_update(tracker *tr, json_t *info)
{
	json_t *ram = json_object_get(info, "ram");
	if (!ram)
		return;
	double t = (double)jint(info, "total-time", NULL) / 1000.0;
	double x = (double)jint(ram, "transferred", NULL);
	unsigned k = tr->ring_n++ % RING;
	tr->ring_t[k] = t;
	tr->ring_x[k] = x;
	/* The newest sample at least a window old (or the oldest kept). */
	unsigned kept = tr->ring_n < RING ? tr->ring_n : RING, j;
	for (j = 1; j < kept; j++) {
		unsigned o = (tr->ring_n - 1 - j) % RING;
		if (t - tr->ring_t[o] >= FERRY_CLI_RATE_WINDOW_MS / 1000.0 || j == kept - 1) {
			/* Under 100 ms of history (the start) says too little: no rate yet. */
			tr->rate_known = t - tr->ring_t[o] >= 0.1;
			tr->rate = tr->rate_known ? (x - tr->ring_x[o]) / (t - tr->ring_t[o]) : 0;
			break;
		}
	}
	json_int_t pass = jint(ram, "dirty-sync-count", NULL), done = pages_done(ram);
	/* The switch to postcopy starts a phase of its own, as a pass does. */
	bool pc = postcopy_status(info);
	if (pass != tr->pass || pc != tr->in_postcopy) {
		tr->base_done = tr->pass ? tr->last_done : 0;
		tr->pass = pass;
		tr->in_postcopy = pc;
		/* The pass's dirty set: what it has sent (first sample: little) plus what is left. */
		if (pass > 1 && !pc) {
			if (tr->nsets == SETS)
				memmove(tr->sets, tr->sets + 1, sizeof(tr->sets) - sizeof(tr->sets[0]));
			else
				tr->nsets++;
			tr->sets[tr->nsets - 1] = (double)(done - tr->base_done) * 4096.0 +
						  (double)jint(ram, "remaining", NULL);
		}
	}
	tr->last_done = done;
}

/*
 * Precopy's ETA. The migration switches over at the end of a pass whose
 * dirty set fits the downtime limit at the bandwidth (threshold; the
 * library's own pass-measured figure, pages-per-second, capped by
 * max-bandwidth as the library does). Each pass leaves about q times the
 * last one dirty: q = dirty / bandwidth from the last pass, or, once four
 * passes were seen, the mean ratio they actually shrank by per pass (a guest
 * dirtying near the send rate makes one sample's q say little). The ETA is
 * the rest of this pass plus the passes until the threshold; with q >= 1,
 * or passes that shrink by less than 5% each, there is none: the text says
 * why.
 */
static void precopy_eta(char *buf, size_t n, json_t *info, const tracker *tr)
{
	json_t *ram = json_object_get(info, "ram");
	double remaining = (double)jint(ram, "remaining", NULL);
	double dirty = (double)jint(ram, "dirty-pages-rate", NULL) * 4096.0;
	double bw = (double)jint(ram, "pages-per-second", NULL) * 4096.0;
	if (!(bw > 0))
		bw = tr->rate;
	if (tr->cap && tr->cap < bw)
		bw = tr->cap;
	double threshold = bw * tr->limit_s, q = dirty / bw;
	char b1[32], b2[32];
	if (q >= 1) {
		snprintf(buf, n, "not converging (dirtying %s >= sending %s)",
			 fmt_rate(b1, sizeof(b1), dirty), fmt_rate(b2, sizeof(b2), bw));
		return;
	}
	double newest = tr->nsets ? tr->sets[tr->nsets - 1] : remaining;
	if (tr->nsets >= 4) {
		double sum = 0; /* the mean shrink per pass */
		for (unsigned k = 1; k < tr->nsets; k++)
			sum += tr->sets[k - 1] > 0 ? tr->sets[k] / tr->sets[k - 1] : 1;
		q = sum / (double)(tr->nsets - 1);
		if (q >= 0.95 && newest > threshold) {
			snprintf(buf, n, "not converging (passes stay at about %s; the %.0f ms limit allows %s)",
				 fmt_bytes(b1, sizeof(b1), newest), tr->limit_s * 1000.0,
				 fmt_bytes(b2, sizeof(b2), threshold));
			return;
		}
	}
	double t = remaining / bw, set = newest;
	for (int k = 0; k < 1000 && set > threshold; k++) { /* the passes after this one */
		set *= q;
		t += set / bw;
	}
	snprintf(buf, n, "ETA %.1f s", t);
}

/* The ETA, or why there is none: "ETA 1.5 s", "not converging (...)". */
static void eta_text(char *buf, size_t n, json_t *info, const tracker *tr)
{
	json_t *ram = json_object_get(info, "ram");
	double remaining = (double)jint(ram, "remaining", NULL);
	if (is_status(info, "device")) {
		snprintf(buf, n, "switching over (the guest is stopped)");
	} else if (!is_status(info, "active") && !postcopy_status(info)) {
		buf[0] = 0; /* setup or ended: no ETA */
	} else if (!tr->rate_known) {
		snprintf(buf, n, "ETA not known yet");
	} else if (!(tr->rate > 0)) {
		snprintf(buf, n, "ETA unknown (nothing sent in the last %u ms)", FERRY_CLI_RATE_WINDOW_MS);
	} else if (postcopy_status(info)) {
		/* The guest runs on the destination: nothing is dirtied here any more. */
		snprintf(buf, n, "ETA %.1f s", remaining / tr->rate);
	} else if (tr->pass <= 1) {
		/* The dirty rate is measured at the end of pass 1. */
		snprintf(buf, n, "ETA >= %.1f s", remaining / tr->rate);
	} else {
		precopy_eta(buf, n, info, tr);
	}
}

/* "active, pass 3: 42% of 120.0 MiB, sending 85.3 MiB/s, dirtying ..., ETA 1.5 s" */
static void progress_text(char *buf, size_t n, json_t *info, const tracker *tr, double *pct)
{
	json_t *ram = json_object_get(info, "ram");
	const char *st = json_string_value(json_object_get(info, "status"));
	double remaining = (double)jint(ram, "remaining", NULL);
	double dirty = (double)jint(ram, "dirty-pages-rate", NULL) * 4096.0;
	double sent = (double)(pages_done(ram) - tr->base_done) * 4096.0;
	if (!tr->pass) { /* setup: the first pass will send all of it */
		char b[32];
		*pct = 0;
		snprintf(buf, n, "%s, %s to send", st ? st : "?",
			 fmt_bytes(b, sizeof(b), (double)jint(ram, "total", NULL)));
		return;
	}
	double set = sent + remaining;
	*pct = set > 0 ? 100.0 * sent / set : 100.0;
	char b1[32], b2[32], b3[32], eta[160];
	eta_text(eta, sizeof(eta), info, tr);
	size_t l = (size_t)snprintf(buf, n, "%s, pass %lld: %.0f%% of %s, %s left, sending %s",
				    st ? st : "?", (long long)tr->pass, *pct,
				    fmt_bytes(b1, sizeof(b1), set), fmt_bytes(b2, sizeof(b2), remaining),
				    fmt_rate(b3, sizeof(b3), tr->rate));
	if (l < n && tr->pass > 1 && !postcopy_status(info))
		l += (size_t)snprintf(buf + l, n - l, ", dirtying %s", fmt_rate(b1, sizeof(b1), dirty));
	if (l < n && jint(info, "cpu-throttle-percentage", NULL))
		l += (size_t)snprintf(buf + l, n - l, ", throttle %lld%%",
				      (long long)jint(info, "cpu-throttle-percentage", NULL));
	if (l < n && postcopy_status(info))
		l += (size_t)snprintf(buf + l, n - l, ", %lld page requests",
				      (long long)jint(ram, "postcopy-requests", NULL));
	if (l < n && eta[0])
		snprintf(buf + l, n - l, ", %s", eta);
}

static json_int_t param_int(const ferry_cli_drive *d, const char *name, json_int_t dflt)
{
	json_t *v = d ? json_object_get(d->params, name) : NULL;
	return json_is_integer(v) ? json_integer_value(v) : dflt;
}

static bool cap_on(const ferry_cli_drive *d, const char *name)
{
	return d && json_is_true(json_object_get(d->caps, name));
}

/* What the convergence estimate needs of the parameters read at the start. */
static void tracker_settings(tracker *tr, const ferry_cli_drive *d)
{
	tr->limit_s = (double)param_int(d, "downtime-limit", 300) / 1000.0;
	tr->cap = (double)param_int(d, "max-bandwidth", 0);
}

/* The x-stalled line: what it would take, and how to get there. */
static void stall_text(char *buf, size_t n, json_t *info, const ferry_cli_drive *d, double rate)
{
	json_t *ram = json_object_get(info, "ram");
	double remaining = (double)jint(ram, "remaining", NULL);
	json_int_t limit = param_int(d, "downtime-limit", 300);
	json_int_t need = rate > 0 ? (json_int_t)(remaining / rate * 1000.0 + 0.999) : 0;
	const char *addr = d && d->qmp_addr ? d->qmp_addr : "ADDRESS";
	char b1[32], b2[32], b3[32];
	size_t l = (size_t)snprintf(
		buf, n, "stalled: not converging after %s; %s dirty at %s needs %lld ms of "
			"downtime (limit %lld ms). To finish: ",
		passes(b3, sizeof(b3), jint(ram, "dirty-sync-count", NULL)), fmt_bytes(b1, sizeof(b1), remaining),
		fmt_rate(b2, sizeof(b2), rate), (long long)need, (long long)limit);
	if (l < n)
		l += (size_t)snprintf(buf + l, n - l,
				      "raise the limit now (ferry qmp --qmp %s migrate-set-parameters "
				      "'{\"downtime-limit\": %lld}')",
				      addr, (long long)need);
	if (l < n && cap_on(d, "postcopy-ram"))
		l += (size_t)snprintf(buf + l, n - l,
				      ", or switch to postcopy (ferry qmp --qmp %s migrate-start-postcopy)",
				      addr);
	if (l < n && !cap_on(d, "auto-converge"))
		l += (size_t)snprintf(buf + l, n - l, ", or migrate again with --cap auto-converge=on");
	if (l < n && !cap_on(d, "postcopy-ram"))
		snprintf(buf + l, n - l, ", or again with postcopy (--cap postcopy-ram=on here and on "
					 "the destination, then migrate-start-postcopy)");
}

/* Ends a bar being redrawn, so that a message gets its own line. */
static void bar_break(const ferry_cli_drive *d, bool *bar_open)
{
	if (d->progress == FERRY_PROGRESS_BAR && *bar_open)
		fputc('\n', stderr);
	*bar_open = false;
}

/* One sample's output: progress, and once each the stall and the switch to postcopy. */
static void show_progress(ferry_cli_drive *d, tracker *tr, json_t *info, double now,
			  bool cancelling, bool *bar_open)
{
	char line[1024], pct_bar[31];
	double pct;
	bool fin = final_status(info);
	if (postcopy_status(info) && !tr->postcopy_told) {
		tr->postcopy_told = true;
		d->postcopy_after_s = (double)jint(info, "total-time", NULL) / 1000.0;
		if (d->progress != FERRY_PROGRESS_NONE) {
			bar_break(d, bar_open);
			fprintf(stderr, "ferry %s: switched to postcopy after %.2f s (pass %lld): the guest "
					"runs on the destination now\n",
				d->who, d->postcopy_after_s, (long long)tr->pass);
		}
	}
	if (json_is_true(json_object_get(info, "x-stalled")) && !tr->stalled_told && !fin) {
		tr->stalled_told = true;
		if (d->progress != FERRY_PROGRESS_NONE) {
			stall_text(line, sizeof(line), info, d, tr->rate);
			bar_break(d, bar_open);
			fprintf(stderr, "ferry %s: %s\n", d->who, line);
		}
	}
	if (d->progress == FERRY_PROGRESS_NONE || !json_object_get(info, "ram"))
		return;
	bool due = d->progress == FERRY_PROGRESS_BAR ? now - tr->last_bar >= 0.1
						     : now - tr->last_line >= 1.0;
	if (!due && !fin)
		return;
	progress_text(line, sizeof(line), info, tr, &pct);
	if (d->progress == FERRY_PROGRESS_BAR) {
		int fill = (int)(pct * 30 / 100);
		for (int i = 0; i < 30; i++)
			pct_bar[i] = i < fill ? '#' : '-';
		pct_bar[30] = 0;
		fprintf(stderr, "\r[%s] %s%s\033[K", pct_bar, line, cancelling ? " (cancelling)" : "");
		*bar_open = true;
		tr->last_bar = now;
	} else {
		fprintf(stderr, "ferry %s: %s%s\n", d->who, line, cancelling ? " (cancelling)" : "");
		tr->last_line = now;
	}
	fflush(stderr);
}

/* {"name": state} from query-migrate-capabilities' list. */
static json_t *caps_object(json_t *list)
{
	json_t *o = json_object(), *v;
	size_t i;
	json_array_foreach(list, i, v) {
		const char *name = json_string_value(json_object_get(v, "capability"));
		if (name)
			json_object_set(o, name, json_object_get(v, "state"));
	}
	return o;
}

/* Reads what the migration will run with (for the header, the stall hint, the summary). */
static void read_settings(ferry_qmp_conn *c, ferry_cli_drive *d)
{
	char err[256];
	d->params = ferry_qmp_client_exec(c, "query-migrate-parameters", NULL, CALL_TIMEOUT_MS, err,
					  sizeof(err), NULL);
	json_t *caps = ferry_qmp_client_exec(c, "query-migrate-capabilities", NULL, CALL_TIMEOUT_MS,
					     err, sizeof(err), NULL);
	d->caps = caps ? caps_object(caps) : NULL;
	json_decref(caps);
}

static void stats_write(FILE *f, json_t *o)
{
	char *line = json_dumps(o, JSON_COMPACT);
	if (line) {
		fprintf(f, "%s\n", line);
		free(line);
	}
}

/* The stats file's first line: what `ferry plot` puts in its caption. */
static void stats_header(const ferry_cli_drive *d, json_t *info)
{
	json_t *h = json_pack("{s:i,s:s}", "ferry-stats", 1, "uri", d->uri);
	json_t *total = json_object_get(json_object_get(info, "ram"), "total");
	if (total)
		json_object_set(h, "guest-bytes", total);
	if (d->params)
		json_object_set(h, "parameters", d->params);
	if (d->caps)
		json_object_set(h, "capabilities", d->caps);
	stats_write(d->stats, h);
	json_decref(h);
}

static void stats_sample(FILE *f, json_t *info, double t)
{
	json_t *s = json_deep_copy(info);
	json_object_set_new(s, "timestamp", json_real(t));
	stats_write(f, s);
	json_decref(s);
}

/* Sends migrate_cancel (Ctrl-C or --timeout); false with err if the host did not answer. */
static bool cancel(ferry_qmp_conn *c, char *err, size_t elen)
{
	bool is_error;
	json_t *r = ferry_qmp_client_exec(c, "migrate_cancel", NULL, CALL_TIMEOUT_MS, err, elen,
					  &is_error);
	json_decref(r);
	return r || is_error;
}

/*
 * Ctrl-C and --timeout: cancel once. In postcopy there is nothing to
 * cancel (the guest runs on the destination): say so and follow it on.
 */
static bool check_cancel(ferry_qmp_conn *c, ferry_cli_drive *d, tracker *tr, json_t *info,
			 double elapsed, bool *cancelling, bool *bar_open, char *err, size_t elen)
{
	bool timeout = d->timeout_s > 0 && elapsed >= d->timeout_s;
	bool intr = d->interrupted && *d->interrupted;
	if (*cancelling || (!timeout && !intr))
		return true;
	if (postcopy_status(info)) {
		if (!tr->timeout_told && d->progress != FERRY_PROGRESS_NONE) {
			bar_break(d, bar_open);
			fprintf(stderr, "ferry %s: %s during postcopy, which cannot be cancelled (the guest "
					"runs on the destination): following it to the end\n",
				d->who, intr ? "interrupted" : "--timeout expired");
		}
		tr->timeout_told = true;
		return true;
	}
	*cancelling = true;
	d->timed_out = timeout && !intr;
	return cancel(c, err, elen);
}

json_t *ferry_cli_migration_drive(ferry_qmp_conn *c, ferry_cli_drive *d, char *err, size_t elen)
{
	tracker tr = { .last_line = -1e9, .last_bar = -1e9 };
	d->postcopy_after_s = -1;
	d->timed_out = false;
	if (!d->who)
		d->who = "migrate";
	read_settings(c, d);
	tracker_settings(&tr, d);
	json_t *r = ferry_qmp_client_exec(c, "migrate", json_pack("{s:s}", "uri", d->uri),
					  CALL_TIMEOUT_MS, err, elen, NULL);
	if (!r)
		return NULL;
	json_decref(r);
	bool cancelling = false, bar_open = false, header = false;
	double t0 = wall_s();
	for (;;) {
		json_t *info = ferry_qmp_client_exec(c, "query-migrate", NULL, CALL_TIMEOUT_MS, err,
						     elen, NULL);
		if (!info)
			return NULL;
		double t = wall_s();
		if (!check_cancel(c, d, &tr, info, t - t0, &cancelling, &bar_open, err, elen)) {
			json_decref(info);
			return NULL;
		}
		tracker_update(&tr, info);
		if (d->stats) {
			if (!header)
				stats_header(d, info);
			header = true;
			stats_sample(d->stats, info, t);
		}
		show_progress(d, &tr, info, t, cancelling, &bar_open);
		if (final_status(info)) {
			bar_break(d, &bar_open);
			if (d->stats)
				fflush(d->stats);
			return info;
		}
		json_decref(info);
		/* Short migrations get enough points: 20 ms for 5 s, then 100 ms. */
		unsigned ms = d->interval_ms ? d->interval_ms : t - t0 < 5.0 ? 20 : 100;
		struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
		nanosleep(&ts, NULL); /* Ctrl-C cuts it short: cancel sooner */
	}
}

/* "; downtime 110 ms ABOVE the 100 ms limit" or "; downtime 19 ms (limit 300 ms)" */
static void downtime_text(char *buf, size_t n, json_t *info, const ferry_cli_drive *d)
{
	json_int_t down = jint(info, "downtime", NULL), limit = param_int(d, "downtime-limit", -1);
	if (limit < 0)
		snprintf(buf, n, "downtime %lld ms", (long long)down);
	else if (down > limit)
		snprintf(buf, n, "downtime %lld ms ABOVE the %lld ms limit", (long long)down,
			 (long long)limit);
	else
		snprintf(buf, n, "downtime %lld ms (limit %lld ms)", (long long)down, (long long)limit);
}

/* The postcopy line: the switch, the requests, the fault latency where it is measured. */
static void postcopy_print(FILE *f, json_t *info, const ferry_cli_drive *d)
{
	json_t *pc = json_object_get(info, "x-postcopy"), *ram = json_object_get(info, "ram");
	json_t *lat = json_object_get(pc, "fault-latency");
	char b[32];
	fprintf(f, "  postcopy: ");
	if (d && d->postcopy_after_s >= 0)
		fprintf(f, "switched after %.2f s; ", d->postcopy_after_s);
	fprintf(f, "%lld page requests, %lld faults", (long long)jint(ram, "postcopy-requests", NULL),
		(long long)jint(pc, "faults", NULL));
	if (json_object_get(ram, "postcopy-bytes") && !json_is_true(json_object_get(info, "x-incoming")))
		fprintf(f, ", %s sent after the switch",
			fmt_bytes(b, sizeof(b), (double)jint(ram, "postcopy-bytes", NULL)));
	if (jint(lat, "samples", NULL))
		fprintf(f, "; fault latency p50 %lld us, p99 %lld us, max %lld us\n",
			(long long)jint(lat, "p50-us", NULL), (long long)jint(lat, "p99-us", NULL),
			(long long)jint(lat, "max-us", NULL));
	else if (!json_is_true(json_object_get(info, "x-incoming")))
		fprintf(f, "; faults and their latency are counted on the destination "
			   "(ferry migrate --qmp DESTINATION --status)\n");
	else
		fputc('\n', f);
}

bool ferry_cli_device_text(char *buf, size_t n, json_t *info)
{
	json_t *ds = json_object_get(info, "x-device-state"), *split = json_object_get(info, "x-downtime-split");
	if (!ds)
		return false;
	bool incoming = json_is_true(json_object_get(info, "x-incoming"));
	const char *what = incoming ? "load-ms" : "save-ms";
	json_int_t slowest = 0, ndev = jint(ds, "devices", NULL);
	size_t i;
	json_t *dev;
	json_array_foreach(json_object_get(ds, "list"), i, dev)
		if (jint(dev, what, NULL) > slowest)
			slowest = jint(dev, what, NULL);
	char b1[32], b2[32];
	size_t l = (size_t)snprintf(buf, n, "%lld live device%s, %s of device state after the stop (%s before), "
				    "slowest %s %lld ms", (long long)ndev, ndev == 1 ? "" : "s",
				    fmt_bytes(b1, sizeof(b1), (double)jint(ds, "stop-copy-bytes", NULL)),
				    fmt_bytes(b2, sizeof(b2), (double)jint(ds, "precopy-bytes", NULL)),
				    incoming ? "load" : "save", (long long)slowest);
	if (json_object_get(split, "ram") && l < n)
		snprintf(buf + l, n - l, "; downtime: RAM %lld ms, device data %lld ms, other %lld ms",
			 (long long)jint(split, "ram", NULL), (long long)jint(split, "device", NULL),
			 (long long)jint(split, "other", NULL));
	return true;
}

void ferry_cli_summary_print(FILE *f, json_t *info, const ferry_cli_drive *d)
{
	json_t *ram = json_object_get(info, "ram");
	const char *st = json_string_value(json_object_get(info, "status"));
	double total_s = (double)jint(info, "total-time", NULL) / 1000.0;
	double xfer = (double)jint(ram, "transferred", NULL);
	json_int_t npass = jint(ram, "dirty-sync-count", NULL);
	char b1[32], b2[32], b3[32], b4[32], down[96];
	bool pc = json_object_get(info, "x-postcopy") != NULL;
	bool incoming = json_is_true(json_object_get(info, "x-incoming"));
	if (st && !strcmp(st, "completed") && incoming) {
		fprintf(f, "migration completed%s in %.2f s: %s received for a %s guest (average %s)\n",
			pc ? " (postcopy)" : "", total_s, fmt_bytes(b1, sizeof(b1), xfer),
			fmt_bytes(b2, sizeof(b2), (double)jint(ram, "total", NULL)),
			fmt_rate(b3, sizeof(b3), total_s > 0 ? xfer / total_s : 0));
		fprintf(f, "  pages: %lld with data, %lld zero\n", (long long)jint(ram, "normal", NULL),
			(long long)jint(ram, "duplicate", NULL));
	} else if (st && !strcmp(st, "completed")) {
		downtime_text(down, sizeof(down), info, d);
		fprintf(f, "migration completed%s in %.2f s: %s sent for a %s guest (average %s), %s, %s\n",
			pc ? " (postcopy)" : "", total_s, fmt_bytes(b1, sizeof(b1), xfer),
			fmt_bytes(b2, sizeof(b2), (double)jint(ram, "total", NULL)),
			fmt_rate(b3, sizeof(b3), total_s > 0 ? xfer / total_s : 0),
			passes(b4, sizeof(b4), npass), down);
		fprintf(f, "  pages: %lld with data, %lld zero, %lld never populated (skipped)\n",
			(long long)jint(ram, "normal", NULL), (long long)jint(ram, "duplicate", NULL),
			(long long)jint(ram, "x-skipped", NULL));
	} else if (st && !strcmp(st, "failed")) {
		fprintf(f, "migration failed after %.2f s (%s, %s sent): %s\n", total_s,
			passes(b4, sizeof(b4), npass), fmt_bytes(b1, sizeof(b1), xfer),
			json_string_value(json_object_get(info, "error-desc")) ?: "no reason given");
	} else {
		fprintf(f, "migration %s after %.2f s (%s, %s sent); the guest runs on here\n",
			st ? st : "?", total_s, passes(b4, sizeof(b4), npass),
			fmt_bytes(b1, sizeof(b1), xfer));
	}
	char dev[256];
	if (ferry_cli_device_text(dev, sizeof(dev), info))
		fprintf(f, "  devices: %s\n", dev);
	json_t *thr = json_object_get(info, "x-cpu-throttle");
	if (thr)
		fprintf(f, "  throttle: auto-converge slowed the vCPUs, up to %lld%% (%lld raises)\n",
			(long long)jint(thr, "peak", NULL), (long long)jint(thr, "raises", NULL));
	if (pc)
		postcopy_print(f, info, d);
}

#define MIGRATE_TLS_ID "ferry-migrate-tls"

/*
 * --tls/--tls-psk DIR: the source host's credentials object, made anew from
 * DIR (an older one of this name, from a previous run, goes first), and
 * parameter tls-creds naming it. Returns 0 or 1 (the host refused: its
 * message names what is wrong with DIR).
 */
static int apply_tls(ferry_qmp_conn *c, const char *dir, bool psk)
{
	char err[512];
	/* A previous run's object, if any, is let go of and deleted (absent: nothing to do). */
	json_decref(ferry_qmp_client_exec(c, "migrate-set-parameters", json_pack("{s:s}", "tls-creds", ""),
					  CALL_TIMEOUT_MS, err, sizeof(err), NULL));
	json_decref(ferry_qmp_client_exec(c, "object-del", json_pack("{s:s}", "id", MIGRATE_TLS_ID),
					  CALL_TIMEOUT_MS, err, sizeof(err), NULL));
	json_t *r;
	r = ferry_qmp_client_exec(c, "object-add",
				  json_pack("{s:s,s:s,s:s,s:s}", "qom-type",
					    psk ? "tls-creds-psk" : "tls-creds-x509", "id",
					    MIGRATE_TLS_ID, "dir", dir, "endpoint", "client"),
				  CALL_TIMEOUT_MS, err, sizeof(err), NULL);
	if (r) {
		json_decref(r);
		r = ferry_qmp_client_exec(c, "migrate-set-parameters",
					  json_pack("{s:s}", "tls-creds", MIGRATE_TLS_ID),
					  CALL_TIMEOUT_MS, err, sizeof(err), NULL);
	}
	if (!r) {
		fprintf(stderr, "ferry migrate: --tls%s %s: %s\n", psk ? "-psk" : "", dir, err);
		return 1;
	}
	json_decref(r);
	return 0;
}

/*
 * After a --tls migration has ended: tls-creds back to "" and the object
 * deleted (as libvirt does), so that the host's next migration is not
 * silently a TLS one. A failure only warns (unless quiet: the connection
 * already failed): the migration's outcome stands.
 */
static void drop_tls(ferry_qmp_conn *c, bool quiet)
{
	char err[512];
	json_t *r = ferry_qmp_client_exec(c, "migrate-set-parameters", json_pack("{s:s}", "tls-creds", ""),
					  CALL_TIMEOUT_MS, err, sizeof(err), NULL);
	if (r) {
		json_decref(r);
		r = ferry_qmp_client_exec(c, "object-del", json_pack("{s:s}", "id", MIGRATE_TLS_ID),
					  CALL_TIMEOUT_MS, err, sizeof(err), NULL);
	}
	if (!r && !quiet)
		fprintf(stderr, "ferry migrate: warning: cannot drop the TLS credentials '%s': %s\n",
			MIGRATE_TLS_ID, err);
	json_decref(r);
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
		"       ferry migrate --qmp ADDRESS --status\n"
		"  --qmp ADDRESS      the source host's QMP socket (unix:PATH, PATH or tcp:HOST:PORT)\n"
		"  URI                where to: tcp:HOST:PORT or unix:PATH (a destination host)\n"
		"  --set NAME=VALUE   migration parameter before starting: downtime-limit (ms),\n"
		"                     max-bandwidth (bytes/s, K/M/G/T), x-max-passes, ...\n"
		"  --cap NAME=on|off  migration capability before starting (auto-converge,\n"
		"                     postcopy-ram, multifd, ...)\n"
		"  --timeout SECONDS  cancel the migration if it has not ended after this long\n"
		"                     (fractions allowed, e.g. 2.5; default: none, wait for the end)\n"
		"  --stats FILE       write a header line, then one query-migrate sample per line\n"
		"                     (JSON), every 20 ms for 5 s then every 100 ms\n"
		"                     (`ferry plot FILE -o FILE.svg` draws them)\n"
		"  --tls DIR          TLS 1.3 with mutual authentication: the source host's\n"
		"                     tls-creds-x509 object from DIR (ca-cert.pem,\n"
		"                     client-cert.pem, client-key.pem) and parameter tls-creds,\n"
		"                     both dropped when the migration ends; the destination\n"
		"                     host needs its own (ferry host --tls DIR)\n"
		"  --tls-psk DIR      the same with a pre-shared key (DIR/keys.psk)\n"
		"  --json             print the final query-migrate reply on stdout\n"
		"  --status           print the host's current query-migrate for people, and exit\n"
		"Progress on stderr (a bar on a terminal, a line a second otherwise): the pass,\n"
		"how much of its dirty set was sent, the send rate (the last 250 ms), the dirty\n"
		"rate (the last pass), the throttle, and the ETA: the rest of this pass plus the\n"
		"passes until one fits downtime-limit, each dirty / send rate times the last (a\n"
		"lower bound (>=) in pass 1), or 'not converging' when the guest dirties as fast as\n"
		"it is sent or the last passes did not shrink.\n"
		"A stalled migration (x-stalled) is reported once, with what would end it.\n"
		"Units: MiB/GiB and MiB/s (powers of 1024), times in s, downtime in ms.\n"
		"Ctrl-C cancels the migration (the guest runs on here; not in postcopy).\n"
		"Exit status: 0 completed (or --status printed), 1 failed or cancelled,\n"
		"2 usage error, 3 --timeout expired and the migration was cancelled.\n");
}

/* --status: one query-migrate, for people (like QEMU's `info migrate`). */
static int print_status(ferry_qmp_conn *c)
{
	char err[512], line[1024];
	json_t *info = ferry_qmp_client_exec(c, "query-migrate", NULL, CALL_TIMEOUT_MS, err,
					     sizeof(err), NULL);
	if (!info) {
		fprintf(stderr, "ferry migrate: query-migrate: %s\n", err);
		return 1;
	}
	ferry_cli_drive d = { .who = "migrate", .postcopy_after_s = -1 };
	read_settings(c, &d);
	const char *side = json_is_true(json_object_get(info, "x-incoming")) ? "incoming" : "outgoing";
	if (!json_object_get(info, "status")) {
		printf("no migration yet\n");
	} else if (is_status(info, "setup") && json_is_true(json_object_get(info, "x-incoming"))) {
		printf("incoming migration: waiting for the source (setup)\n");
	} else if (final_status(info)) {
		printf("%s ", side);
		ferry_cli_summary_print(stdout, info, &d);
	} else {
		/* One sample: the send rate is the host's (ram.mbps, its last 100 ms). */
		tracker tr = { 0 };
		tracker_settings(&tr, &d);
		tracker_update(&tr, info);
		tr.rate = json_number_value(json_object_get(json_object_get(info, "ram"), "mbps")) * 1e6 / 8;
		tr.rate_known = true;
		double pct;
		progress_text(line, sizeof(line), info, &tr, &pct);
		printf("%s migration %s after %.2f s\n", side, line,
		       (double)jint(info, "total-time", NULL) / 1000.0);
		if (json_object_get(info, "expected-downtime"))
			printf("  expected downtime %lld ms (limit %lld ms)\n",
			       (long long)jint(info, "expected-downtime", NULL),
			       (long long)param_int(&d, "downtime-limit", 300));
		if (json_is_true(json_object_get(info, "x-stalled"))) {
			stall_text(line, sizeof(line), info, &d, tr.rate);
			printf("  %s\n", line);
		}
		if (json_object_get(info, "x-postcopy"))
			postcopy_print(stdout, info, NULL);
	}
	json_t *prev = json_object_get(info, "x-previous");
	if (prev)
		printf("  previous incoming migration: %s%s%s\n",
		       json_string_value(json_object_get(prev, "status")) ?: "?",
		       json_object_get(prev, "error-desc") ? ": " : "",
		       json_string_value(json_object_get(prev, "error-desc")) ?: "");
	json_decref(info);
	json_decref(d.params);
	json_decref(d.caps);
	return 0;
}

/* A QMP address the client can use: a path, unix:PATH or tcp:HOST:PORT. */
static int qmp_addr_check(const char *cmd, const char *addr, void (*usage)(FILE *))
{
	const char *colon = !strncmp(addr, "tcp:", 4) ? strrchr(addr + 4, ':') : NULL;
	if (!*addr || !strcmp(addr, "unix:") ||
	    (!strncmp(addr, "tcp:", 4) && (!colon || colon == addr + 4 || !colon[1])))
		return ferry_cli_usage_error(cmd, usage,
					     "--qmp: invalid QMP address '%s' (expected unix:PATH, "
					     "PATH or tcp:HOST:PORT)",
					     addr);
	return 0;
}

typedef struct migrate_opts {
	const char *qmp, *stats_path, *uri;
	const char *tls_dir; /* --tls / --tls-psk DIR, or NULL */
	bool tls_psk;
	char *sets[MAX_KV], *caps[MAX_KV];
	int nsets, ncaps;
	bool json, status;
	double timeout_s;
} migrate_opts;

/* Parses the command line; returns -1 to go on, else the exit status. */
static int migrate_parse(int argc, char **argv, migrate_opts *o)
{
	static const struct option opts[] = {
		{ "qmp", required_argument, 0, 'q' },
		{ "set", required_argument, 0, 's' },
		{ "cap", required_argument, 0, 'c' },
		{ "stats", required_argument, 0, 'S' },
		{ "timeout", required_argument, 0, 't' },
		{ "json", no_argument, 0, 'j' },
		{ "status", no_argument, 0, 'i' },
		{ "tls", required_argument, 0, 'T' },
		{ "tls-psk", required_argument, 0, 'P' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'q': o->qmp = optarg; break;
		case 's':
		case 'c':
			if ((c == 's' ? o->nsets : o->ncaps) == MAX_KV)
				return ferry_cli_usage_error("migrate", migrate_usage, "too many --%s",
							     c == 's' ? "set" : "cap");
			if (c == 's')
				o->sets[o->nsets++] = optarg;
			else
				o->caps[o->ncaps++] = optarg;
			break;
		case 'S': o->stats_path = optarg; break;
		case 't':
			if (ferry_cli_parse_seconds(optarg, 1e9, &o->timeout_s))
				return ferry_cli_usage_error("migrate", migrate_usage,
							     "--timeout '%s': expected seconds > 0 (e.g. 2.5)",
							     optarg);
			break;
		case 'j': o->json = true; break;
		case 'i': o->status = true; break;
		case 'T':
		case 'P':
			if (o->tls_dir)
				return ferry_cli_usage_error("migrate", migrate_usage,
							     "--tls and --tls-psk are given once, not both");
			o->tls_dir = optarg;
			o->tls_psk = c == 'P';
			break;
		case 'h': migrate_usage(stdout); return 0;
		default: return ferry_cli_bad_option("migrate", c, argv, migrate_usage);
		}
	}
	if (!o->qmp)
		return ferry_cli_usage_error("migrate", migrate_usage, "--qmp ADDRESS is required");
	if (qmp_addr_check("migrate", o->qmp, migrate_usage))
		return 2;
	if (o->status) {
		if (optind != argc || o->nsets || o->ncaps || o->stats_path || o->json || o->timeout_s ||
		    o->tls_dir)
			return ferry_cli_usage_error("migrate", migrate_usage,
						     "--status takes no URI and no other options");
		return -1;
	}
	if (optind != argc - 1)
		return ferry_cli_usage_error("migrate", migrate_usage, "expected one URI, got %d",
					     argc - optind);
	o->uri = argv[optind];
	char err[512];
	if (ferry_uri_validate(o->uri, err, sizeof(err)))
		return ferry_cli_usage_error("migrate", migrate_usage, "%s", err);
	return -1;
}

/* The end of a driven migration: summary or JSON, and the exit status. */
static int migrate_report(json_t *info, const ferry_cli_drive *d, const migrate_opts *o)
{
	if (o->json) {
		char *s = json_dumps(info, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
	} else {
		ferry_cli_summary_print(stdout, info, d);
	}
	if (is_status(info, "completed"))
		return 0;
	if (d->timed_out && is_status(info, "cancelled")) {
		char b[32];
		fprintf(stderr, "ferry migrate: --timeout %g s expired: the migration was cancelled "
				"at pass %lld with %s left; the guest runs on here\n",
			o->timeout_s, (long long)jint(info, "ram", "dirty-sync-count"),
			fmt_bytes(b, sizeof(b), (double)jint(info, "ram", "remaining")));
		return 3;
	}
	return 1;
}

int ferry_cli_migrate(int argc, char **argv)
{
	migrate_opts o = { 0 };
	int rc = migrate_parse(argc, argv, &o);
	if (rc >= 0)
		return rc;
	char err[512];
	FILE *stats = NULL;
	if (o.stats_path && !(stats = fopen(o.stats_path, "w"))) {
		fprintf(stderr, "ferry migrate: %s: %s\n", o.stats_path, strerror(errno));
		return 1;
	}
	ferry_qmp_conn *conn;
	if (ferry_qmp_client_open(o.qmp, CALL_TIMEOUT_MS, &conn, err, sizeof(err))) {
		fprintf(stderr, "ferry migrate: %s\n", err);
		if (stats)
			fclose(stats);
		return 1;
	}
	if (o.status) {
		rc = print_status(conn);
		goto out;
	}
	rc = apply_settings(conn, "migrate", o.sets, o.nsets, o.caps, o.ncaps);
	if (!rc && o.tls_dir)
		rc = apply_tls(conn, o.tls_dir, o.tls_psk);
	if (rc)
		goto out;
	/* No SA_RESTART: sleeps end early. SA_RESETHAND: a second Ctrl-C ends the client. */
	struct sigaction sa = { .sa_handler = on_sigint, .sa_flags = SA_RESETHAND };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	ferry_cli_drive d = {
		.who = "migrate",
		.uri = o.uri,
		.qmp_addr = o.qmp,
		.progress = o.json ? FERRY_PROGRESS_NONE
			    : isatty(2) ? FERRY_PROGRESS_BAR
					: FERRY_PROGRESS_LINES,
		.stats = stats,
		.timeout_s = o.timeout_s,
		.interrupted = &interrupted,
	};
	json_t *info = ferry_cli_migration_drive(conn, &d, err, sizeof(err));
	if (!info) {
		fprintf(stderr, "ferry migrate: %s\n", err);
		rc = 1;
	} else {
		rc = migrate_report(info, &d, &o);
	}
	if (o.tls_dir)
		drop_tls(conn, !info);
	json_decref(info);
	json_decref(d.params);
	json_decref(d.caps);
out:
	ferry_qmp_client_close(conn);
	if (stats && fclose(stats)) {
		fprintf(stderr, "ferry migrate: %s: %s\n", o.stats_path, strerror(errno));
		rc = rc ? rc : 1;
	}
	return rc;
}

static void qmp_usage(FILE *f)
{
	fprintf(f,
		"usage: ferry qmp --qmp ADDRESS [options] '{\"execute\": ...}'\n"
		"       ferry qmp --qmp ADDRESS [options] COMMAND ['{ARGUMENTS}']\n"
		"Sends one QMP command (after capabilities negotiation) and prints the reply.\n"
		"  --timeout SECONDS  how long to wait for the reply (fractions allowed;\n"
		"                     default 300, at most 86400)\n"
		"  --pretty           print the reply indented (the default on a terminal)\n"
		"  --compact          print the reply on one line (the default otherwise)\n"
		"Exit status 0 for a \"return\", 1 for an \"error\" or a failure, 2 usage error.\n");
}

/* The command to send: raw JSON text, or COMMAND ['{ARGS}']. NULL: usage error printed. */
static char *qmp_command(int left, char **args)
{
	const char *first = args[0];
	while (*first == ' ' || *first == '\t' || *first == '\n')
		first++;
	if (*first == '{') {
		if (left != 1) {
			ferry_cli_usage_error("qmp", qmp_usage,
					      "a JSON command takes no further arguments");
			return NULL;
		}
		return strdup(first);
	}
	json_t *o = json_pack("{s:s}", "execute", first);
	if (left == 2) {
		json_error_t je;
		json_t *a = json_loads(args[1], 0, &je);
		if (!json_is_object(a)) {
			ferry_cli_usage_error("qmp", qmp_usage, "arguments must be a JSON object%s%s",
					      a ? "" : ": ", a ? "" : je.text);
			json_decref(a);
			json_decref(o);
			return NULL;
		}
		json_object_set_new(o, "arguments", a);
	}
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}

int ferry_cli_qmp(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "qmp", required_argument, 0, 'q' },
		{ "timeout", required_argument, 0, 't' },
		{ "pretty", no_argument, 0, 'p' },
		{ "compact", no_argument, 0, 'C' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *qmp = NULL;
	double timeout_s = 300;
	int c, pretty = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'q': qmp = optarg; break;
		case 't':
			if (ferry_cli_parse_seconds(optarg, 86400, &timeout_s))
				return ferry_cli_usage_error(
					"qmp", qmp_usage,
					"--timeout '%s': expected seconds > 0 and <= 86400 (e.g. 2.5)", optarg);
			break;
		case 'p': pretty = 1; break;
		case 'C': pretty = 0; break;
		case 'h': qmp_usage(stdout); return 0;
		default: return ferry_cli_bad_option("qmp", c, argv, qmp_usage);
		}
	}
	int left = argc - optind;
	if (!qmp)
		return ferry_cli_usage_error("qmp", qmp_usage, "--qmp ADDRESS is required");
	if (qmp_addr_check("qmp", qmp, qmp_usage))
		return 2;
	if (left < 1 || left > 2)
		return ferry_cli_usage_error("qmp", qmp_usage, "expected a command, got %d arguments",
					     left);
	char *text = qmp_command(left, argv + optind);
	if (!text)
		return 2;
	char err[512];
	ferry_qmp_conn *conn;
	if (ferry_qmp_client_open(qmp, CALL_TIMEOUT_MS, &conn, err, sizeof(err))) {
		fprintf(stderr, "ferry qmp: %s\n", err);
		free(text);
		return 1;
	}
	json_t *reply = ferry_qmp_client_raw(conn, text, (int)(timeout_s * 1000 + 0.5), err,
					     sizeof(err));
	free(text);
	ferry_qmp_client_close(conn);
	if (!reply) {
		fprintf(stderr, "ferry qmp: %s\n", err);
		return 1;
	}
	if (pretty < 0)
		pretty = isatty(1);
	char *s = json_dumps(reply, pretty ? JSON_INDENT(2) | JSON_PRESERVE_ORDER : JSON_COMPACT);
	printf("%s\n", s);
	free(s);
	int rc = json_object_get(reply, "return") ? 0 : 1;
	json_decref(reply);
	return rc;
}
