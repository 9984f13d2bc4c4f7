/* SPDX-License-Identifier: MIT */
/*
 * max-bandwidth benchmark: how close to the cap, and never above it, a
 * migration runs, over 100 ms windows, on the main connection and with
 * multifd. In-process (two VMs of this process over a unix socket, the
 * synthetic guest running its random workload so that pages are
 * scattered), so it needs no CLI support for the new counters.
 *
 * Two measures per run: the source's own (bandwidth_peak_window_bytes,
 * taken where bytes are written, 1 ms resolution), and a client's view:
 * query-migrate sampled every 10 ms, the largest growth of `transferred`
 * over any 100 ms span of samples. Prints one JSON object.
 *
 * Usage: build/bench/bench-bandwidth [MEM_MIB_AT_100M [MEM_MIB_AT_1G]]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"
#include "guest.h"

#define MAX_SAMPLES 200000

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int side(const char *spec, bool incoming, ferry_vm_t **vm, ferry_guest_t **g)
{
	ferry_guest_config cfg;
	char err[256];
	ferry_guest_config_init(&cfg);
	if (ferry_guest_config_parse(&cfg, spec, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return -EINVAL;
	}
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_WP_ASYNC };
	int r = ferry_vm_create(&o, vm);
	if (!r)
		r = ferry_guest_create(&cfg, incoming, g);
	if (!r)
		r = ferry_guest_attach(*g, *vm);
	return r;
}

static uint64_t st[MAX_SAMPLES], sb[MAX_SAMPLES];

/* One migration; prints its JSON member. Returns 0 or a negative errno. */
static int run(const char *name, unsigned mem_mib, uint64_t cap, unsigned channels, bool comma)
{
	char spec[160];
	snprintf(spec, sizeof(spec), "mem=%uM,vram=4M,vcpus=2,rate=4M,wss=8M,workload=random", mem_mib);
	ferry_vm_t *svm, *dvm;
	ferry_guest_t *sg, *dg;
	int r = side(spec, false, &svm, &sg);
	if (!r)
		r = side(spec, true, &dvm, &dg);
	if (r)
		return r;
	char uri[128];
	snprintf(uri, sizeof(uri), "unix:/tmp/ferry-bench-bw-%d-%s.sock", (int)getpid(), name);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.max_bandwidth = cap;
	p.multifd = channels > 0;
	if (channels)
		p.multifd_channels = channels;
	if ((r = ferry_migration_incoming(dvm, uri)) || (r = ferry_vm_start(svm)) ||
	    (r = ferry_migration_start(svm, uri, &p)))
		return r;
	size_t n = 0;
	ferry_migration_info i;
	while (ferry_migration_wait(svm, 10) == -ETIMEDOUT) {
		ferry_migration_query(svm, &i);
		if (i.status == FERRY_MIGRATION_ACTIVE && n < MAX_SAMPLES) {
			st[n] = now_ns();
			sb[n++] = i.transferred;
		}
	}
	ferry_migration_query(svm, &i);
	int ok = ferry_migration_wait(dvm, 60000) == FERRY_MIGRATION_COMPLETED && i.status == FERRY_MIGRATION_COMPLETED;
	/* Client view: the most `transferred` grew within 100 ms of samples. */
	uint64_t client = 0;
	for (size_t a = 0, b = 0; b < n; b++) {
		while (st[b] - st[a] > 100000000ull)
			a++;
		if (sb[b] - sb[a] > client)
			client = sb[b] - sb[a];
	}
	double win = (double)cap / 10;
	printf("%s  \"%s\": {\"cap_bytes_per_s\": %llu, \"mem_mib\": %u, \"multifd_channels\": %u, "
	       "\"completed\": %s, \"peak_window_bytes\": %llu, \"peak_window_over_cap\": %.3f, "
	       "\"client_peak_window_over_cap\": %.3f, \"average_over_cap\": %.3f, "
	       "\"total_time_ms\": %llu, \"passes\": %llu, \"samples\": %zu}",
	       comma ? ",\n" : "", name, (unsigned long long)cap, mem_mib, channels, ok ? "true" : "false",
	       (unsigned long long)i.bandwidth_peak_window_bytes,
	       (double)i.bandwidth_peak_window_bytes / win, (double)client / win,
	       (double)i.transferred * 1000 / (double)(i.total_time_ms ? i.total_time_ms : 1) / (double)cap,
	       (unsigned long long)i.total_time_ms, (unsigned long long)i.dirty_sync_count, n);
	fflush(stdout);
	ferry_vm_destroy(svm);
	ferry_guest_destroy(sg);
	ferry_vm_destroy(dvm);
	ferry_guest_destroy(dg);
	return ok ? 0 : -EIO;
}

int main(int argc, char **argv)
{
	unsigned m100 = argc > 1 ? (unsigned)atoi(argv[1]) : 256;
	unsigned m1g = argc > 2 ? (unsigned)atoi(argv[2]) : 1024;
	printf("{\n");
	int r = run("main_100M", m100, 100000000ull, 0, false);
	r = r ? r : run("multifd2_100M", m100, 100000000ull, 2, true);
	r = r ? r : run("main_1G", m1g, 1000000000ull, 0, true);
	r = r ? r : run("multifd2_1G", m1g, 1000000000ull, 2, true);
	printf("\n}\n");
	return r ? 1 : 0;
}
