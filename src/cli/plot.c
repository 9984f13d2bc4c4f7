/* SPDX-License-Identifier: MIT */
/*
 * `ferry plot FILE.jsonl -o FILE.svg`: draws a migration's time series, as
 * written by `ferry migrate --stats` (one query-migrate reply per line with
 * a "timestamp" in seconds), into a standalone SVG.
 *
 * Three panels share the time axis: throughput (MB/s, from the change of
 * ram.transferred between samples), dirty rate (MB/s, ram.dirty-pages-rate
 * times the page size) and remaining dirty RAM (MiB). Dashed grey lines
 * mark where each pass starts (ram.dirty-sync-count grows), a red line the
 * switchover (first "device" sample). The SVG is written by hand: a few
 * fixed-size elements, no library.
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
#define TOP 60
#define GAP 50
#define PANELS 3

typedef struct sample {
	double t;          /* seconds since the first sample */
	double thr;        /* MB/s */
	double xfer;       /* ram.transferred, bytes */
	double dirty;      /* MB/s */
	double remaining;  /* MiB */
	long long pass;
	char status[16];
} sample;

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

/* Reads the samples; returns the count (or -1 with a message printed). */
static long read_samples(const char *path, sample **out)
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
	double t0 = 0;
	long lineno = 0;
	while (s && getline(&line, &lcap, f) > 0) {
		lineno++;
		json_error_t je;
		json_t *o = json_loads(line, 0, &je);
		json_t *ram = json_object_get(o, "ram");
		json_t *ts = json_object_get(o, "timestamp");
		if (!json_is_object(o) || !json_is_number(ts)) {
			if (o || line[strspn(line, " \t\r\n")])
				fprintf(stderr, "ferry plot: %s:%ld: not a stats sample, skipped\n", path,
					lineno);
			json_decref(o);
			continue;
		}
		if (n == cap) {
			sample *b = realloc(s, (cap *= 2) * sizeof(*s));
			if (!b) {
				json_decref(o);
				break;
			}
			s = b;
		}
		sample *x = &s[n];
		double t = json_number_value(ts);
		double xf = (double)json_integer_value(json_object_get(ram, "transferred"));
		if (!n)
			t0 = t;
		x->t = t - t0;
		x->xfer = xf;
		x->dirty = (double)json_integer_value(json_object_get(ram, "dirty-pages-rate")) * 4096 / 1e6;
		x->remaining = (double)json_integer_value(json_object_get(ram, "remaining")) / 1048576.0;
		x->pass = json_integer_value(json_object_get(ram, "dirty-sync-count"));
		snprintf(x->status, sizeof(x->status), "%s",
			 json_string_value(json_object_get(o, "status")) ?: "?");
		n++;
		json_decref(o);
	}
	free(line);
	fclose(f);
	if (!s) {
		fprintf(stderr, "ferry plot: out of memory\n");
		return -1;
	}
	/*
	 * libferry updates ram.transferred in steps (once per scan batch), so
	 * the rate between two 100 ms samples is mostly 0 or a spike. Spread
	 * each step over the time since the previous one instead.
	 */
	size_t last = 0;
	for (size_t i = 1; i < n; i++) {
		if (s[i].xfer == s[last].xfer && i + 1 < n)
			continue;
		double dt = s[i].t - s[last].t;
		double r = dt > 0 && s[i].xfer > s[last].xfer ? (s[i].xfer - s[last].xfer) / dt / 1e6 : 0;
		for (size_t k = last + 1; k <= i; k++)
			s[k].thr = r;
		last = i;
	}
	*out = s;
	return (long)n;
}

static void panel(FILE *o, int idx, const char *title, const char *unit, const sample *s, long n,
		  size_t field, double tmax, const char *color)
{
	int y0 = TOP + idx * (PANEL_H + GAP), pw = W - LEFT - RIGHT;
	double vmax = 0;
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
	while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'h':
			printf("usage: ferry plot FILE.jsonl -o FILE.svg\n"
			       "Draws throughput, dirty rate and remaining RAM over time, with pass\n"
			       "boundaries, from the samples `ferry migrate --stats FILE.jsonl` wrote.\n");
			return 0;
		default: return 2;
		}
	}
	if (!out || optind != argc - 1) {
		fprintf(stderr, "usage: ferry plot FILE.jsonl -o FILE.svg\n");
		return 2;
	}
	sample *s;
	long n = read_samples(argv[optind], &s);
	if (n < 0)
		return 1;
	if (n < 2) {
		fprintf(stderr, "ferry plot: %s: need at least 2 samples, found %ld\n", argv[optind], n);
		free(s);
		return 1;
	}
	FILE *o = fopen(out, "w");
	if (!o) {
		fprintf(stderr, "ferry plot: %s: %s\n", out, strerror(errno));
		free(s);
		return 1;
	}
	double tmax = s[n - 1].t > 0 ? s[n - 1].t : 1;
	int pw = W - LEFT - RIGHT, H = TOP + PANELS * (PANEL_H + GAP) + 10;
	fprintf(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		   "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
		   "<style>.title{font-size:14px;font-weight:bold;fill:#222}"
		   ".tick{font-size:11px;fill:#444}.frame{fill:#fcfcfc;stroke:#888}"
		   ".grid{stroke:#e2e2e2}.pass{stroke:#999;stroke-dasharray:4,3}"
		   ".switch{stroke:#d62728;stroke-width:1.5}.label{font-size:10px;fill:#777}</style>\n"
		   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
		W, H, W, H);
	long long passes = s[n - 1].pass;
	fprintf(o, "<text x=\"%d\" y=\"24\" class=\"title\" font-size=\"16\">Migration: %s after "
		   "%.2f s, %lld passes</text>\n",
		LEFT, s[n - 1].status, s[n - 1].t, passes);
	panel(o, 0, "Throughput", "MB/s", s, n, offsetof(sample, thr), tmax, "#1f77b4");
	panel(o, 1, "Dirty rate (last pass)", "MB/s", s, n, offsetof(sample, dirty), tmax, "#ff7f0e");
	panel(o, 2, "Remaining dirty RAM", "MiB", s, n, offsetof(sample, remaining), tmax, "#2ca02c");
	/* Pass boundaries and switchover, across all panels. */
	int ytop = TOP, ybot = TOP + PANELS * (PANEL_H + GAP) - GAP;
	bool switched = false;
	for (long i = 0; i < n; i++) {
		double x = LEFT + s[i].t / tmax * pw;
		if (s[i].pass > (i ? s[i - 1].pass : 0)) {
			fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"pass\"/>\n", x,
				ytop, x, ybot);
			fprintf(o, "<text x=\"%.1f\" y=\"%d\" class=\"label\">%lld</text>\n", x + 2,
				ytop + 11, s[i].pass);
		}
		if (i && !switched && !strcmp(s[i].status, "device")) {
			switched = true;
			fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"switch\"/>\n",
				x, ytop, x, ybot);
			bool right = x > LEFT + pw * 0.85; /* keep the label inside the frame */
			fprintf(o, "<text x=\"%.1f\" y=\"%d\" class=\"label\" fill=\"#d62728\" "
				   "text-anchor=\"%s\">switchover</text>\n",
				right ? x - 3 : x + 3, ybot - 4, right ? "end" : "start");
		}
	}
	/* Time axis under the last panel. */
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
	fprintf(o, "</svg>\n");
	free(s);
	if (fclose(o)) {
		fprintf(stderr, "ferry plot: %s: %s\n", out, strerror(errno));
		return 1;
	}
	return 0;
}
