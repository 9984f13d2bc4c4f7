/* SPDX-License-Identifier: MIT */
/*
 * `ferry`: the command line. Subcommands:
 *   ferry host ...     run the synthetic guest and serve QMP (host-cmd.c, src/daemon/)
 *   ferry migrate ...  drive a migration of a host through QMP (migrate.c)
 *   ferry qmp ...      send one QMP command to a host (migrate.c)
 *   ferry plot ...     draw a migration's --stats time series as SVG (plot.c)
 *   ferry demo ...     a live migration between two local hosts, verified (demo.c)
 *
 * Thread: main only; no subcommand calls exit() (main returns their status).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry <command> [options]\n"
		"\n"
		"commands:\n"
		"  host      run a synthetic guest (--guest SPEC) controlled over QMP (--qmp ADDRESS);\n"
		"            a destination with --incoming URI|defer; see 'ferry host --help'\n"
		"  migrate   migrate a host's guest: ferry migrate --qmp ADDRESS URI, with live\n"
		"            progress, Ctrl-C to cancel, --stats FILE.jsonl for a time series\n"
		"  qmp       send one QMP command: ferry qmp --qmp ADDRESS '{\"execute\": ...}'\n"
		"  plot      draw a --stats time series: ferry plot FILE.jsonl -o FILE.svg\n"
		"  demo      live-migrate the default guest between two processes on loopback\n"
		"            and verify it bit-exact against a never-migrated twin\n"
		"  help CMD  the same as 'ferry CMD --help'\n"
		"  version\n"
		"\n"
		"Every command takes -h/--help. Exit status: 0 success, 1 failure, 2 usage error\n"
		"(unknown option, bad or missing value, malformed address); `ferry migrate`\n"
		"also 3 (--timeout expired, migration cancelled).\n"
		"Units for people: sizes in MiB/GiB, rates in MiB/s (powers of 1024), times in s,\n"
		"downtime in ms. Sizes given on the command line take K/M/G/T (powers of 1024).\n");
}

int ferry_cli_usage_error(const char *cmd, void (*usage)(FILE *), const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "ferry %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage(stderr);
	return 2;
}

int ferry_cli_bad_option(const char *cmd, int c, char **argv, void (*usage)(FILE *))
{
	const char *arg = optind > 0 ? argv[optind - 1] : "?";
	char shortopt[3] = { '-', (char)optopt, 0 };
	/* An unknown short option (optopt set) may sit inside a bundle ("-xq"). */
	if (c == '?' && optopt)
		arg = shortopt;
	int len = (int)strcspn(arg, "=");
	if (c == ':')
		return ferry_cli_usage_error(cmd, usage, "option '%.*s' needs a value", len, arg);
	return ferry_cli_usage_error(cmd, usage, "unknown option '%.*s'", len, arg);
}

int ferry_cli_parse_seconds(const char *s, double max_s, double *out)
{
	char *end;
	errno = 0;
	if (!s || !*s)
		return -EINVAL;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || !(v > 0) || v > max_s)
		return -EINVAL;
	*out = v;
	return 0;
}

const char *ferry_cli_fmt_bytes(char *buf, size_t n, double b)
{
	if (b >= 1024.0 * FERRY_CLI_MIB)
		snprintf(buf, n, "%.2f GiB", b / (1024.0 * FERRY_CLI_MIB));
	else
		snprintf(buf, n, "%.1f MiB", b / FERRY_CLI_MIB);
	return buf;
}

const char *ferry_cli_fmt_rate(char *buf, size_t n, double bps)
{
	snprintf(buf, n, "%.1f MiB/s", bps / FERRY_CLI_MIB);
	return buf;
}

int ferry_cli_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		return -EINVAL;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	uint64_t mul = 1;
	switch (*end) {
	case 0: break;
	case 'k': case 'K': mul = 1ull << 10; end++; break;
	case 'm': case 'M': mul = 1ull << 20; end++; break;
	case 'g': case 'G': mul = 1ull << 30; end++; break;
	case 't': case 'T': mul = 1ull << 40; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'i' || *end == 'B')
		end++;
	if (*end == 'B')
		end++;
	if (*end || (v && mul > UINT64_MAX / v))
		return -EINVAL;
	*out = v * mul;
	return 0;
}

static int unknown_command(const char *cmd)
{
	fprintf(stderr, "ferry: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}

/* Runs subcommand cmd; -1 if there is none of that name (nothing printed). */
static int dispatch(const char *cmd, int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(int, char **);
	} cmds[] = {
		{ "host", ferry_cli_host },       { "demo", ferry_cli_demo },
		{ "migrate", ferry_cli_migrate }, { "qmp", ferry_cli_qmp },
		{ "plot", ferry_cli_plot },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i].name))
			return cmds[i].run(argc, argv);
	return -1;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	int rc = dispatch(cmd, argc - 1, argv + 1);
	if (rc != -1)
		return rc;
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("ferry %s\n", ferry_version_string());
		return 0;
	}
	if (!strcmp(cmd, "help") && argc > 2) {
		if (argc > 3) {
			fprintf(stderr, "ferry help: expected one command, got %d\n", argc - 2);
			usage(stderr);
			return 2;
		}
		if (!strcmp(argv[2], "help") || !strcmp(argv[2], "version")) {
			usage(stdout);
			return 0;
		}
		/* `ferry help CMD` is `ferry CMD --help`. */
		char *hargv[] = { argv[2], "--help", NULL };
		int r = dispatch(argv[2], 2, hargv);
		return r != -1 ? r : unknown_command(argv[2]);
	}
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		usage(stdout);
		return 0;
	}
	return unknown_command(cmd);
}
