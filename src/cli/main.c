/* SPDX-License-Identifier: MIT */
/*
 * `ferry`: the command line. Subcommands:
 *   ferry host ...   run the synthetic guest; migrate it out or in
 *   ferry demo ...   a live migration between two local processes, verified
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
		"  host   run a synthetic guest (--guest SPEC) and migrate it (--migrate URI)\n"
		"         or receive one (--incoming URI); see 'ferry host --help'\n"
		"  demo   live-migrate the default guest between two processes on loopback\n"
		"         and verify it bit-exact against a never-migrated twin\n"
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

int ferry_cli_set_param(ferry_mig_params *p, const char *kv, char *err, size_t elen)
{
	const char *eq = strchr(kv, '=');
	if (!eq) {
		snprintf(err, elen, "parameter '%s' needs a value (name=value)", kv);
		return -EINVAL;
	}
	size_t nl = (size_t)(eq - kv);
	const char *v = eq + 1;
	uint64_t x;
	if (ferry_cli_parse_size(v, &x)) {
		snprintf(err, elen, "parameter '%.*s': invalid value '%s'", (int)nl, kv, v);
		return -EINVAL;
	}
	if (nl == 14 && !strncmp(kv, "downtime-limit", nl))
		p->downtime_limit_ms = x;
	else if (nl == 13 && !strncmp(kv, "max-bandwidth", nl))
		p->max_bandwidth = x;
	else if (nl == 12 && !strncmp(kv, "x-max-passes", nl))
		p->max_passes = (uint32_t)x;
	else {
		snprintf(err, elen,
			 "unknown parameter '%.*s' (expected downtime-limit, max-bandwidth, x-max-passes)",
			 (int)nl, kv);
		return -EINVAL;
	}
	return 0;
}

json_t *ferry_cli_info_json(const ferry_mig_info *i)
{
	json_t *ram = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I}",
				"transferred", (json_int_t)i->transferred,
				"remaining", (json_int_t)i->remaining,
				"total", (json_int_t)i->total,
				"duplicate", (json_int_t)i->duplicate,
				"normal", (json_int_t)i->normal,
				"normal-bytes", (json_int_t)i->normal_bytes,
				"skipped", (json_int_t)i->skipped,
				"dirty-pages-rate", (json_int_t)i->dirty_pages_rate,
				"dirty-sync-count", (json_int_t)i->dirty_sync_count,
				"mbps", i->mbps,
				"pages-per-second", (json_int_t)i->pages_per_second);
	json_t *o = json_pack("{s:s,s:I,s:I,s:I,s:I,s:o}",
			      "status", ferry_migration_status_name(i->status),
			      "total-time", (json_int_t)i->total_time_ms,
			      "setup-time", (json_int_t)i->setup_time_ms,
			      "downtime", (json_int_t)i->downtime_ms,
			      "expected-downtime", (json_int_t)i->expected_downtime_ms,
			      "ram", ram);
	if (i->status == FERRY_MIG_FAILED && i->error_desc[0])
		json_object_set_new(o, "error-desc", json_string(i->error_desc));
	if (i->stalled)
		json_object_set_new(o, "x-stalled", json_true());
	return o;
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
