/* SPDX-License-Identifier: MIT */
/*
 * `ferry`: the command line. Subcommands:
 *   ferry host ...     run the synthetic guest and serve QMP (host.c)
 *   ferry migrate ...  drive a migration of a host through QMP (migrate.c)
 *   ferry qmp ...      send one QMP command to a host (migrate.c)
 *   ferry plot ...     draw a migration's --stats time series as SVG (plot.c)
 *   ferry demo ...     a live migration between two local hosts, verified (demo.c)
 *
 * Thread: main only; no subcommand calls exit() (main returns their status).
 */
#include <errno.h>
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
		"  version\n");
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

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "host"))
		return ferry_cli_host(argc - 1, argv + 1);
	if (!strcmp(cmd, "demo"))
		return ferry_cli_demo(argc - 1, argv + 1);
	if (!strcmp(cmd, "migrate"))
		return ferry_cli_migrate(argc - 1, argv + 1);
	if (!strcmp(cmd, "qmp"))
		return ferry_cli_qmp(argc - 1, argv + 1);
	if (!strcmp(cmd, "plot"))
		return ferry_cli_plot(argc - 1, argv + 1);
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("ferry %s\n", ferry_version_string());
		return 0;
	}
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "ferry: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
