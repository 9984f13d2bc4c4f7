/* SPDX-License-Identifier: MIT */
/*
 * `ferry plot FILE.jsonl -o FILE.svg`: draws a migration's time series, as
 * written by `ferry migrate --stats` (a header line {"ferry-stats": 1,
 * "uri", "guest-bytes", "parameters", "capabilities"}, then one
 * query-migrate reply per line with a "timestamp" in seconds), into a
 * standalone SVG.
 *
 * Three panels share the time axis, the host's total-time (s): send rate
 * (MiB/s: ram.transferred's change over the last FERRY_CLI_RATE_WINDOW_MS,
 * the progress line's definition) with the max-bandwidth cap, dirty rate
 * (MiB/s, ram.dirty-pages-rate times the page size) and remaining dirty RAM
 * (MiB; the whole guest until the first pass starts). Dashed grey lines
 * mark where each pass starts (ram.dirty-sync-count grows), a red line the
 * switchover (first "device" sample) or the switch to postcopy. The title
 * is `ferry migrate`'s summary line of the last sample; the caption the
 * guest and the settings. The SVG is written by hand: a few fixed-size
 * elements, no library.
 *
 * Thread: main only.
 */

#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define W 960
#define PANEL_H 190
#define LEFT 80
#define RIGHT 30
#define TOP 100
#define GAP 50
#define PANELS 3

typedef struct sample {
	double t;          /* total-time, s */
	double thr;        /* MiB/s */
	double xfer;       /* ram.transferred, bytes */
	double dirty;      /* MiB/s */
	double remaining;  /* MiB */
	long long pass;
	char status[24];
} sample;

typedef struct series {
	sample *s;
	long n;
	json_t *header;    /* the --stats header line, or NULL (an older file) */
	json_t *last;      /* the last sample: the final query-migrate reply */
} series;

/* 1, 2 or 5 times a power of ten, at least x (no libm needed). */
static double nice_step(double x)
{
	if (!(x > 0))
		return 1;
	double p = 1;
	while (p * 10 <= x)
		p *= 10;
	while (p > x)
		p /= 10;
	double m = x / p;
	return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

static void fmt_num(char *b, size_t n, double v)
{
	double frac = v - (double)(long long)v;
	if (v < 10 && (frac > 1e-9 || frac < -1e-9))
		snprintf(b, n, "%.1f", v);
	else
		snprintf(b, n, "%.0f", v);
}

/* One query-migrate sample; t0 is the first sample's timestamp (older files lack total-time). */
static void sample_fill(sample *x, json_t *o, double t0, double guest)
{
	json_t *ram = json_object_get(o, "ram"), *tt = json_object_get(o, "total-time");
	x->t = json_is_integer(tt) ? (double)json_integer_value(tt) / 1000.0
				   : json_number_value(json_object_get(o, "timestamp")) - t0;
	x->xfer = (double)json_integer_value(json_object_get(ram, "transferred"));
	x->dirty = (double)json_integer_value(json_object_get(ram, "dirty-pages-rate")) * 4096 /
		   FERRY_CLI_MIB;
	x->pass = json_integer_value(json_object_get(ram, "dirty-sync-count"));
	/* Before the first pass starts everything remains to be sent. */
	x->remaining = x->pass ? (double)json_integer_value(json_object_get(ram, "remaining")) / FERRY_CLI_MIB
			       : guest / FERRY_CLI_MIB;
	snprintf(x->status, sizeof(x->status), "%s",
		 json_string_value(json_object_get(o, "status")) ?: "?");
}

/* The send rate: transferred's change over the last window of total-time. */
static void rates(sample *s, long n)
{
	for (long i = 0, j = 0; i < n; i++) {
		while (j + 1 < i && s[i].t - s[j + 1].t >= FERRY_CLI_RATE_WINDOW_MS / 1000.0)
			j++;
		double dt = s[i].t - s[j].t;
		s[i].thr = dt > 0 && s[i].xfer > s[j].xfer ? (s[i].xfer - s[j].xfer) / dt / FERRY_CLI_MIB : 0;
	}
}

/* Reads the header and the samples; returns 0 or -1 (message printed). */
static int read_series(const char *path, series *out)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "ferry plot: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t cap = 256, n = 0;
	sample *s = malloc(cap * sizeof(*s));
	char *line = NULL;
	size_t lcap = 0;
	double t0 = 0, guest = 0;
	long lineno = 0;
	while (s && getline(&line, &lcap, f) > 0) {
		lineno++;
		json_error_t je;
		json_t *o = json_loads(line, 0, &je);
		if (json_is_object(o) && json_object_get(o, "ferry-stats") && !out->header) {
			out->header = o;
			guest = (double)json_integer_value(json_object_get(o, "guest-bytes"));
			continue;
		}
		if (!json_is_object(o) || !json_is_number(json_object_get(o, "timestamp"))) {
			if (o || line[strspn(line, " \t\r\n")])
				fprintf(stderr, "ferry plot: %s:%ld: not a stats sample, skipped\n", path,
					lineno);
			json_decref(o);
			continue;
		}
		if (n + 1 >= cap) {
			sample *b = realloc(s, (cap *= 2) * sizeof(*s));
			if (!b) {
				json_decref(o);
				break;
			}
			s = b;
		}
		if (!n)
			t0 = json_number_value(json_object_get(o, "timestamp"));
		if (!guest)
			guest = (double)json_integer_value(json_object_get(json_object_get(o, "ram"), "total"));
		sample_fill(&s[n], o, t0, guest);
		/* The migration starts at t = 0 with the whole guest to send. */
		if (!n && s[0].t > 0) {
			s[1] = s[0];
			s[0] = (sample){ .t = 0, .remaining = guest / FERRY_CLI_MIB };
			snprintf(s[0].status, sizeof(s[0].status), "setup");
			n++;
		}
		n++;
		json_decref(out->last);
		out->last = o;
	}
	free(line);
	fclose(f);
	if (!s) {
		fprintf(stderr, "ferry plot: out of memory\n");
		return -1;
	}
	rates(s, (long)n);
	out->s = s;
	out->n = (long)n;
	return 0;
}

/* A panel; limit > 0 draws a dashed horizontal line labelled limit_label. */
static void panel(FILE *o, int idx, const char *title, const char *unit, const sample *s, long n,
		  size_t field, double tmax, const char *color, double limit, const char *limit_label)
{
	int y0 = TOP + idx * (PANEL_H + GAP), pw = W - LEFT - RIGHT;
	double vmax = limit;
	for (long i = 0; i < n; i++) {
		double v = *(const double *)((const char *)&s[i] + field);
		if (v > vmax)
			vmax = v;
	}
	double step = nice_step(vmax / 4);
	double top = step;
	while (top < vmax)
		top += step;
	fprintf(o, "<text x=\"%d\" y=\"%d\" class=\"title\">%s</text>\n", LEFT, y0 - 10, title);
	fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"frame\"/>\n", LEFT, y0,
		pw, PANEL_H);
	for (double v = 0; v <= top + step / 2; v += step) {
		double y = y0 + PANEL_H - v / top * PANEL_H;
		char b[32];
		fmt_num(b, sizeof(b), v);
		fprintf(o, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>\n", LEFT, y,
			LEFT + pw, y);
		fprintf(o, "<text x=\"%d\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%s</text>\n",
			LEFT - 6, y + 4, b);
	}
	fprintf(o, "<text x=\"%d\" y=\"%d\" class=\"tick\" transform=\"rotate(-90 %d %d)\" "
		   "text-anchor=\"middle\">%s</text>\n",
		LEFT - 55, y0 + PANEL_H / 2, LEFT - 55, y0 + PANEL_H / 2, unit);
	fprintf(o, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"", color);
	for (long i = 0; i < n; i++) {
		double v = *(const double *)((const char *)&s[i] + field);
		fprintf(o, "%.1f,%.1f ", LEFT + s[i].t / tmax * pw, y0 + PANEL_H - v / top * PANEL_H);
	}
	fprintf(o, "\"/>\n");
	if (limit > 0) {
		double y = y0 + PANEL_H - limit / top * PANEL_H;
		fprintf(o, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"limit\"/>\n", LEFT, y,
			LEFT + pw, y);
		fprintf(o, "<text x=\"%d\" y=\"%.1f\" class=\"label\" fill=\"#9467bd\" "
			   "text-anchor=\"end\">%s</text>\n",
			LEFT + pw - 4, y - 4, limit_label);
	}
}

/* The title: `ferry migrate`'s summary line of the last sample. */
static void title_text(char *buf, size_t n, const series *ser)
{
	ferry_cli_drive d = { .params = json_object_get(ser->header, "parameters") };
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (m) {
		ferry_cli_summary_print(m, ser->last, ser->header ? &d : NULL);
		fclose(m);
	}
	snprintf(buf, n, "%.*s", text ? (int)strcspn(text, "\n") : 0, text ? text : "");
	free(text);
	if (buf[0] >= 'a' && buf[0] <= 'z')
		buf[0] = (char)(buf[0] - 'a' + 'A');
}

/* The caption: the guest and what the migration ran with. */
static void caption_text(char *buf, size_t n, const series *ser)
{
	json_t *h = ser->header, *p = json_object_get(h, "parameters"), *v;
	char b1[32], b2[32];
	if (!h) {
		snprintf(buf, n, "(no header line: the guest and the settings are unknown)");
		return;
	}
	json_int_t bw = json_integer_value(json_object_get(p, "max-bandwidth"));
	size_t l = (size_t)snprintf(
		buf, n, "guest %s to %s; downtime-limit %lld ms, max-bandwidth %s; capabilities:",
		ferry_cli_fmt_bytes(b1, sizeof(b1), (double)json_integer_value(json_object_get(h, "guest-bytes"))),
		json_string_value(json_object_get(h, "uri")) ?: "?",
		(long long)json_integer_value(json_object_get(p, "downtime-limit")),
		bw ? ferry_cli_fmt_rate(b2, sizeof(b2), (double)bw) : "unlimited");
	const char *name;
	bool any = false;
	json_object_foreach(json_object_get(h, "capabilities"), name, v) {
		if (json_is_true(v) && l < n) {
			l += (size_t)snprintf(buf + l, n - l, "%s %s", any ? "," : "", name);
			any = true;
		}
	}
	if (!any && l < n)
		snprintf(buf + l, n - l, " none");
}

static void plot_usage(FILE *f)
{
	fprintf(f, "usage: ferry plot FILE.jsonl -o FILE.svg\n"
		   "Draws the send rate (with the max-bandwidth cap), the dirty rate and the\n"
		   "remaining RAM over the migration's total time, with pass boundaries, from\n"
		   "what `ferry migrate --stats FILE.jsonl` wrote. The title is the migration's\n"
		   "summary; the caption the guest and the settings. Units: MiB and MiB/s.\n");
}

/* The SVG's prologue: size, styles, white background. */
static void svg_head(FILE *o, int h)
{
	fprintf(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		   "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
		   "<style>.title{font-size:14px;font-weight:bold;fill:#222}"
		   ".tick{font-size:11px;fill:#444}.frame{fill:#fcfcfc;stroke:#888}"
		   ".grid{stroke:#e2e2e2}.pass{stroke:#999;stroke-dasharray:4,3}"
		   ".limit{stroke:#9467bd;stroke-width:1.2;stroke-dasharray:6,3}"
		   ".caption{font-size:12px;fill:#444}"
		   ".switch{stroke:#d62728;stroke-width:1.5}.label{font-size:10px;fill:#777}</style>\n"
		   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
		W, h, W, h);
}

/* "Migration completed in 1.94 s" in bold, the rest of the summary under it. */
static void svg_titles(FILE *o, const series *ser)
{
	char title[512], caption[512];
	title_text(title, sizeof(title), ser);
	caption_text(caption, sizeof(caption), ser);
	int head = (int)strcspn(title, ":");
	fprintf(o, "<text x=\"%d\" y=\"22\" class=\"title\" font-size=\"16\">%.*s</text>\n", 20,
		head, title);
	fprintf(o, "<text x=\"%d\" y=\"42\" class=\"caption\">%s</text>\n", 20,
		title[head] ? title + head + 2 : "");
	fprintf(o, "<text x=\"%d\" y=\"60\" class=\"caption\">%s</text>\n", 20, caption);
}

/* The three panels: send rate (with the cap), dirty rate, remaining dirty RAM. */
static void svg_panels(FILE *o, const series *ser, double tmax)
{
	char cap_label[64], b[32];
	double bw = (double)json_integer_value(
		json_object_get(json_object_get(ser->header, "parameters"), "max-bandwidth"));
	snprintf(cap_label, sizeof(cap_label), "max-bandwidth %s",
		 ferry_cli_fmt_rate(b, sizeof(b), bw));
	panel(o, 0, "Send rate (last 250 ms)", "MiB/s", ser->s, ser->n, offsetof(sample, thr), tmax,
	      "#1f77b4", bw / FERRY_CLI_MIB, cap_label);
	panel(o, 1, "Dirty rate (last pass)", "MiB/s", ser->s, ser->n, offsetof(sample, dirty), tmax,
	      "#ff7f0e", 0, NULL);
	panel(o, 2, "Remaining dirty RAM", "MiB", ser->s, ser->n, offsetof(sample, remaining), tmax,
	      "#2ca02c", 0, NULL);
}

/* Pass boundaries and the switchover (or postcopy switch), across all panels. */
static void svg_marks(FILE *o, const sample *s, long n, double tmax, int ytop, int ybot)
{
	int pw = W - LEFT - RIGHT;
	bool switched = false;
	for (long i = 0; i < n; i++) {
		double x = LEFT + s[i].t / tmax * pw;
		if (s[i].pass > (i ? s[i - 1].pass : 0)) {
			fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"pass\"/>\n", x,
				ytop, x, ybot);
			fprintf(o, "<text x=\"%.1f\" y=\"%d\" class=\"label\">%lld</text>\n", x + 2,
				ytop + 11, s[i].pass);
		}
		if (i && !switched && (!strcmp(s[i].status, "device") ||
				       !strcmp(s[i].status, "postcopy-active"))) {
			switched = true;
			fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"switch\"/>\n",
				x, ytop, x, ybot);
			bool right = x > LEFT + pw * 0.85; /* keep the label inside the frame */
			fprintf(o, "<text x=\"%.1f\" y=\"%d\" class=\"label\" fill=\"#d62728\" "
				   "text-anchor=\"%s\">%s</text>\n",
				right ? x - 3 : x + 3, ybot - 4, right ? "end" : "start",
				strcmp(s[i].status, "device") ? "postcopy" : "switchover");
		}
	}
}

/* The time axis under the last panel. */
static void svg_axis(FILE *o, double tmax, int ybot)
{
	int pw = W - LEFT - RIGHT;
	double step = nice_step(tmax / 8);
	for (double t = 0; t <= tmax + 1e-9; t += step) {
		char b[32];
		fmt_num(b, sizeof(b), t);
		fprintf(o, "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">%s</text>\n",
			LEFT + t / tmax * pw, ybot + 16, b);
	}
	fprintf(o, "<text x=\"%d\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">time (s); "
		   "dashed lines: start of pass N</text>\n",
		LEFT + pw / 2, ybot + 34);
}

/* The whole SVG of a series of at least 2 samples. */
static void svg_write(FILE *o, const series *ser)
{
	const sample *s = ser->s;
	double tmax = s[ser->n - 1].t > 0 ? s[ser->n - 1].t : 1;
	int ytop = TOP, ybot = TOP + PANELS * (PANEL_H + GAP) - GAP;
	svg_head(o, TOP + PANELS * (PANEL_H + GAP) + 10);
	svg_titles(o, ser);
	svg_panels(o, ser, tmax);
	svg_marks(o, s, ser->n, tmax, ytop, ybot);
	svg_axis(o, tmax, ybot);
	fprintf(o, "</svg>\n");
}

/* Reads the series in `in` and writes its SVG to `out`: 0, or 1 with the reason printed. */
static int plot_file(const char *in, const char *out)
{
	series ser = { 0 };
	if (read_series(in, &ser))
		return 1;
	int rc = 1;
	FILE *o = NULL;
	if (ser.n < 2) {
		fprintf(stderr, "ferry plot: %s: need at least 2 samples, found %ld\n", in, ser.n);
		goto out;
	}
	if (!(o = fopen(out, "w"))) {
		fprintf(stderr, "ferry plot: %s: %s\n", out, strerror(errno));
		goto out;
	}
	svg_write(o, &ser);
	rc = 0;
out:
	if (o && fclose(o)) {
		fprintf(stderr, "ferry plot: %s: %s\n", out, strerror(errno));
		rc = 1;
	}
	free(ser.s);
	json_decref(ser.header);
	json_decref(ser.last);
	return rc;
}

int ferry_cli_plot(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, 0, 'o' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *out = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'h': plot_usage(stdout); return 0;
		default: return ferry_cli_bad_option("plot", c, argv, plot_usage);
		}
	}
	if (!out)
		return ferry_cli_usage_error("plot", plot_usage, "-o FILE.svg is required");
	if (optind != argc - 1)
		return ferry_cli_usage_error("plot", plot_usage, "expected one FILE.jsonl, got %d",
					     argc - optind);
	return plot_file(argv[optind], out);
}
