/* SPDX-License-Identifier: MIT */
/*
 * `ferry host`: runs the synthetic guest embedded through libferry's public
 * API, and migrates it out (--migrate) or in (--incoming). With --json the
 * outcome is one JSON object per line on stdout (the demo and the tests read
 * it); humans get messages on stderr.
 *
 * Thread: main thread only; libferry runs the migration in its own threads
 * and this loop polls ferry_migration_query() for progress.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "guest.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void host_usage(FILE *f)
{
	fprintf(f,
		"usage: ferry host [options]\n"
		"  --guest SPEC        guest config, e.g. mem=1G,vcpus=2,workload=random,rate=200M,\n"
		"                      fill=random,wss=0,seed=1,throttle=0,vram=16M,paused\n"
		"  --dirty MODE        dirty tracking: auto (default), wp, explicit\n"
		"  --incoming URI      receive a migration (tcp:HOST:PORT or unix:PATH)\n"
		"  --migrate URI       send the guest to URI\n"
		"  --migrate-after MS  let the guest run MS before migrating (default 0)\n"
		"  --cancel-after MS   cancel the migration after MS (testing)\n"
		"  --set NAME=VALUE    migration parameter: downtime-limit (ms),\n"
		"                      max-bandwidth (bytes/s, K/M/G), x-max-passes\n"
		"  --verify-after N    destination: after arrival run N more steps per vCPU,\n"
		"                      stop, and verify RAM against the never-migrated twin\n"
		"  --verify            source: when the guest is still here at the end (no\n"
		"                      migration, or it failed), stop it and verify it\n"
		"  --run-for MS        without --migrate/--incoming: run this long, then exit\n"
		"  --progress          progress line on stderr while migrating\n"
		"  --json              print results as JSON lines on stdout\n");
}

static void progress_line(const ferry_mig_info *i, bool tty)
{
	double pct = i->total ? 100.0 * (double)(i->total - (i->remaining < i->total ? i->remaining : i->total)) /
					(double)i->total
			      : 0;
	fprintf(stderr,
		"%s%-10s pass %-3u %5.1f%%  %8.1f MB/s  remaining %7.1f MiB  dirty %7.1f MB/s  sent %7.1f MiB%s",
		tty ? "\r" : "", ferry_migration_status_name(i->status), i->pass, pct,
		i->mbps / 8, (double)i->remaining / 1048576.0,
		(double)i->dirty_pages_rate * 4096 / 1e6, (double)i->transferred / 1048576.0,
		tty ? "\033[K" : "\n");
	fflush(stderr);
}

static json_t *verify_json(ferry_guest_t *g, const ferry_verify_result *v)
{
	unsigned n = ferry_guest_vcpus(g);
	uint64_t steps[FERRY_GUEST_MAX_VCPUS];
	ferry_guest_steps(g, steps);
	json_t *a = json_array();
	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_integer((json_int_t)steps[i]));
	char h[32], th[32];
	snprintf(h, sizeof(h), "%016" PRIx64, v->hash);
	snprintf(th, sizeof(th), "%016" PRIx64, v->twin_hash);
	json_t *o = json_pack("{s:b,s:s,s:s,s:I,s:o}", "matches", v->matches, "hash", h,
			      "twin-hash", th, "pages-compared", (json_int_t)v->pages_compared,
			      "steps", a);
	if (!v->matches)
		json_object_set_new(o, "first-difference",
				    json_pack("{s:s,s:I}", "block", v->block, "page",
					      (json_int_t)v->page));
	return o;
}

static void emit(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	printf("%s\n", s);
	fflush(stdout);
	free(s);
	json_decref(o);
}

static int do_verify(ferry_guest_t *g, bool json, json_t *result)
{
	ferry_verify_result v;
	int r = ferry_guest_verify(g, &v);
	if (r) {
		fprintf(stderr, "ferry: verify failed: %s\n", ferry_strerror(r));
		return 1;
	}
	if (!json) {
		if (v.matches)
			fprintf(stderr, "verified: RAM matches the never-migrated twin (%" PRIu64
					" pages, hash %016" PRIx64 ")\n",
				v.pages_compared, v.hash);
		else
			fprintf(stderr, "MISMATCH: block %s page %" PRIu64 " differs from the twin\n",
				v.block, v.page);
	}
	json_object_set_new(result, "verify", verify_json(g, &v));
	return v.matches ? 0 : 1;
}

int ferry_cli_host(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "guest", required_argument, 0, 'g' },
		{ "dirty", required_argument, 0, 'd' },
		{ "incoming", required_argument, 0, 'i' },
		{ "migrate", required_argument, 0, 'm' },
		{ "migrate-after", required_argument, 0, 'a' },
		{ "cancel-after", required_argument, 0, 'c' },
		{ "set", required_argument, 0, 's' },
		{ "verify-after", required_argument, 0, 'V' },
		{ "verify", no_argument, 0, 'v' },
		{ "run-for", required_argument, 0, 'r' },
		{ "progress", no_argument, 0, 'p' },
		{ "json", no_argument, 0, 'j' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *spec = "", *incoming = NULL, *migrate = NULL;
	ferry_dirty_mode dmode = FERRY_DIRTY_AUTO;
	ferry_mig_params params;
	ferry_mig_params_init(&params);
	uint64_t migrate_after = 0, cancel_after = 0, verify_after = 0, run_for = 0;
	bool has_verify_after = false, verify = false, progress = false, json = false;
	char err[256];
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'g': spec = optarg; break;
		case 'd':
			if (!strcmp(optarg, "auto")) dmode = FERRY_DIRTY_AUTO;
			else if (!strcmp(optarg, "wp")) dmode = FERRY_DIRTY_WP_ASYNC;
			else if (!strcmp(optarg, "explicit")) dmode = FERRY_DIRTY_EXPLICIT;
			else {
				fprintf(stderr, "ferry host: unknown dirty mode '%s' (expected auto, wp, explicit)\n", optarg);
				return 2;
			}
			break;
		case 'i': incoming = optarg; break;
		case 'm': migrate = optarg; break;
		case 'a': case 'c': case 'V': case 'r': {
			uint64_t x;
			if (ferry_cli_parse_size(optarg, &x)) {
				fprintf(stderr, "ferry host: invalid number '%s'\n", optarg);
				return 2;
			}
			if (c == 'a') migrate_after = x;
			else if (c == 'c') cancel_after = x;
			else if (c == 'r') run_for = x;
			else { verify_after = x; has_verify_after = true; }
			break;
		}
		case 's':
			if (ferry_cli_set_param(&params, optarg, err, sizeof(err))) {
				fprintf(stderr, "ferry host: %s\n", err);
				return 2;
			}
			break;
		case 'v': verify = true; break;
		case 'p': progress = true; break;
		case 'j': json = true; break;
		case 'h': host_usage(stdout); return 0;
		default: host_usage(stderr); return 2;
		}
	}
	if (optind < argc || (incoming && migrate)) {
		host_usage(stderr);
		return 2;
	}
	if ((incoming && ferry_uri_validate(incoming, err, sizeof(err))) ||
	    (migrate && ferry_uri_validate(migrate, err, sizeof(err)))) {
		fprintf(stderr, "ferry host: %s\n", err);
		return 2;
	}

	ferry_guest_config cfg;
	ferry_guest_config_init(&cfg);
	if (ferry_guest_config_parse(&cfg, spec, err, sizeof(err))) {
		fprintf(stderr, "ferry host: --guest: %s\n", err);
		return 2;
	}
	ferry_vm_options vo = { .dirty_mode = dmode };
	ferry_vm_t *vm = NULL;
	ferry_guest_t *g = NULL;
	int r = ferry_vm_create(&vo, &vm);
	if (r) {
		fprintf(stderr, "ferry host: cannot create VM: %s\n", ferry_strerror(r));
		return 1;
	}
	r = ferry_guest_create(&cfg, incoming != NULL, &g);
	if (!r)
		r = ferry_guest_attach(g, vm);
	if (r) {
		fprintf(stderr, "ferry host: cannot create guest: %s\n", ferry_strerror(r));
		ferry_guest_destroy(g);
		ferry_vm_destroy(vm);
		return 1;
	}
	signal(SIGINT, on_sigint);
	signal(SIGTERM, on_sigint);
	signal(SIGPIPE, SIG_IGN);

	json_t *result = json_object();
	int rc = 0;
	bool tty = isatty(2);

	if (incoming) {
		json_object_set_new(result, "role", json_string("destination"));
		r = ferry_migrate_incoming(vm, incoming);
		if (r) {
			fprintf(stderr, "ferry host: cannot listen on '%s': %s\n", incoming, ferry_strerror(r));
			rc = 1;
			goto out;
		}
		if (json)
			emit(json_pack("{s:s}", "listening", incoming));
		else
			fprintf(stderr, "waiting for a migration on %s\n", incoming);
		int st;
		while ((st = ferry_migration_wait(vm, 200)) == -ETIMEDOUT)
			if (interrupted)
				ferry_migration_cancel(vm);
		ferry_mig_info info;
		ferry_migration_query(vm, &info);
		json_object_set_new(result, "migration", ferry_cli_info_json(&info));
		if (st != FERRY_MIG_COMPLETED) {
			fprintf(stderr, "ferry host: incoming migration %s: %s\n",
				ferry_migration_status_name(info.status), info.error_desc);
			rc = 1;
			goto out;
		}
		if (has_verify_after) {
			unsigned n = ferry_guest_vcpus(g);
			uint64_t t[FERRY_GUEST_MAX_VCPUS];
			ferry_guest_steps(g, t);
			for (unsigned i = 0; i < n; i++)
				t[i] += cfg.workload == FERRY_WL_IDLE ? 0 : verify_after;
			ferry_vm_stop(vm);
			ferry_guest_run_until(g, t);
			rc = do_verify(g, json, result);
		}
		goto out;
	}

	json_object_set_new(result, "role", json_string("source"));
	if (!cfg.paused)
		ferry_vm_start(vm);
	if (!migrate) {
		uint64_t end = run_for;
		for (uint64_t t = 0; t < end && !interrupted; t += 10)
			usleep(10000);
		ferry_vm_stop(vm);
		if (verify)
			rc = do_verify(g, json, result);
		goto out;
	}
	for (uint64_t t = 0; t < migrate_after && !interrupted; t += 10)
		usleep(10000);
	r = ferry_migrate_start(vm, migrate, &params);
	if (r) {
		fprintf(stderr, "ferry host: cannot start migration: %s\n", ferry_strerror(r));
		rc = 1;
		goto out;
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int st;
	uint64_t ticks = 0;
	bool cancelled = false;
	while ((st = ferry_migration_wait(vm, 100)) == -ETIMEDOUT) {
		ticks++;
		if ((interrupted || (cancel_after && ticks * 100 >= cancel_after)) && !cancelled) {
			ferry_migration_cancel(vm);
			cancelled = true;
		}
		if (progress && (tty || ticks % 10 == 0)) {
			ferry_mig_info i;
			ferry_migration_query(vm, &i);
			progress_line(&i, tty);
		}
	}
	ferry_mig_info info;
	ferry_migration_query(vm, &info);
	if (progress) {
		progress_line(&info, tty);
		if (tty)
			fputc('\n', stderr);
	}
	json_object_set_new(result, "migration", ferry_cli_info_json(&info));
	if (st != FERRY_MIG_COMPLETED) {
		fprintf(stderr, "ferry host: migration %s%s%s\n", ferry_migration_status_name(info.status),
			info.error_desc[0] ? ": " : "", info.error_desc);
		rc = 1;
		json_object_set_new(result, "guest-running", json_boolean(ferry_vm_is_running(vm)));
		if (verify) {
			ferry_vm_stop(vm);
			if (do_verify(g, json, result))
				rc = 3;
		}
	}
out:
	if (json)
		emit(result);
	else
		json_decref(result);
	ferry_vm_destroy(vm);
	ferry_guest_destroy(g);
	return rc;
}
