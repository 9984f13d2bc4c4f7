/* SPDX-License-Identifier: MIT */
/*
 * `ferry demo`: a live migration between two local `ferry host` processes,
 * driven entirely through QMP, and verified.
 *
 * It starts a destination (`--incoming tcp:127.0.0.1:PORT`) and a source
 * host, each with a QMP socket in a private temporary directory; lets the
 * source guest run for 300 ms; applies --set parameters (to both sides); runs `migrate`
 * and follows it (ferry_cli_migration_drive, the same code as `ferry
 * migrate`); then, on the destination, lets the guest run on for 20000 more
 * steps per vCPU (x-run-until, which leaves it stopped) and asks the
 * oracle (query-guest-hash with "verify": true) whether its RAM matches a
 * never-migrated twin bit for bit. Both hosts get `quit`. Prints a summary
 * (or one JSON object) and exits non-zero unless the migration completed
 * and verified.
 *
 * Thread: main only.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "guest.h"

#define RUN_ON_STEPS 20000
#define VERIFY_TIMEOUT_MS 600000

extern char **environ;

static int free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || getsockname(s, (struct sockaddr *)&a, &l)) {
		if (s >= 0)
			close(s);
		return -1;
	}
	close(s);
	return ntohs(a.sin_port);
}

typedef struct child {
	pid_t pid;
	FILE *out;
	ferry_qmp_conn *qmp;
	char sock[256];
} child;

/*
 * Spawns `ferry host ARGS... --qmp unix:SOCK --json` and waits for its
 * ready line. Returns 0 or -1 (message printed).
 */
static int host_spawn(child *ch, const char *self, const char *dir, const char *name,
		      char *const extra[])
{
	char qmp_addr[300];
	snprintf(ch->sock, sizeof(ch->sock), "%s/%s.qmp", dir, name);
	snprintf(qmp_addr, sizeof(qmp_addr), "unix:%s", ch->sock);
	char *argv[32];
	int n = 0;
	argv[n++] = (char *)self;
	argv[n++] = "host";
	for (int i = 0; extra[i] && n < 26; i++)
		argv[n++] = extra[i];
	argv[n++] = "--qmp";
	argv[n++] = qmp_addr;
	argv[n++] = "--json";
	argv[n] = NULL;
	int p[2];
	if (pipe(p)) {
		perror("ferry demo: pipe");
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addclose(&fa, p[0]);
	int r = posix_spawn(&ch->pid, self, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (r) {
		close(p[0]);
		ch->pid = 0;
		fprintf(stderr, "ferry demo: cannot start the %s: %s\n", name, strerror(r));
		return -1;
	}
	ch->out = fdopen(p[0], "r");
	char line[4096];
	if (!ch->out || !fgets(line, sizeof(line), ch->out) || !strstr(line, "\"listening\"")) {
		fprintf(stderr, "ferry demo: the %s host did not start\n", name);
		return -1;
	}
	char err[512];
	if (ferry_qmp_client_open(qmp_addr, 10000, &ch->qmp, err, sizeof(err))) {
		fprintf(stderr, "ferry demo: %s: %s\n", name, err);
		return -1;
	}
	return 0;
}

/* Asks the host to quit (kills it if that fails) and reaps it. */
static void host_end(child *ch)
{
	bool quit = false;
	if (ch->qmp) {
		char err[256];
		json_t *r = ferry_qmp_client_exec(ch->qmp, "quit", NULL, 5000, err, sizeof(err), NULL);
		quit = r != NULL;
		json_decref(r);
		ferry_qmp_client_close(ch->qmp);
		ch->qmp = NULL;
	}
	if (ch->pid > 0) {
		if (!quit)
			kill(ch->pid, SIGTERM);
		waitpid(ch->pid, NULL, 0);
		ch->pid = 0;
	}
	if (ch->out)
		fclose(ch->out);
	ch->out = NULL;
}

static json_int_t jint(json_t *o, const char *k1, const char *k2)
{
	json_t *v = json_object_get(o, k1);
	if (v && k2)
		v = json_object_get(v, k2);
	return json_is_integer(v) ? json_integer_value(v) : 0;
}

/* Destination: waits until its incoming migration completed (or ended). */
static json_t *wait_incoming(child *dst, char *err, size_t elen)
{
	for (int i = 0; i < 1000; i++) {
		json_t *info = ferry_qmp_client_exec(dst->qmp, "query-migrate", NULL, 10000, err, elen, NULL);
		if (!info)
			return NULL;
		const char *st = json_string_value(json_object_get(info, "status"));
		if (st && (!strcmp(st, "completed") || json_object_get(info, "x-previous")))
			return info;
		json_decref(info);
		usleep(10000);
	}
	snprintf(err, elen, "the destination did not finish the incoming migration");
	return NULL;
}

static void demo_usage(FILE *f)
{
	fprintf(f,
		"usage: ferry demo [--mem 1G] [--vcpus 2] [--workload random|stride|hotset|churn|idle]\n"
		"                  [--rate 200M|max] [--fill random|text|zero|none]\n"
		"                  [--dirty auto|wp|explicit] [--set NAME=VALUE]... [--json]\n"
		"                  [--postcopy [--preempt]] [--no-auto-converge]\n"
		"  --postcopy  switch to postcopy after the first pass (capability postcopy-ram\n"
		"              on both hosts); --preempt (only with --postcopy) adds the\n"
		"              postcopy-preempt channel\n"
		"  auto-converge is on (the source's vCPUs are throttled if the guest dirties\n"
		"  RAM faster than it is sent, so the demo ends on any machine);\n"
		"  --no-auto-converge turns it off\n"
		"Progress as `ferry migrate` shows it, on stderr (not with --json).\n"
		"Units: MiB/GiB and MiB/s (powers of 1024), times in s, downtime in ms.\n"
		"Exit status: 0 migrated and verified, 1 not, 2 usage error.\n");
}

typedef struct demo_opts {
	const char *mem, *vcpus, *workload, *rate, *fill, *dirty;
	char *sets[16];
	int nsets;
	bool json, postcopy, preempt, auto_converge;
} demo_opts;

/* Checks one guest option through the guest's own parser ("mem=abc"). */
static int check_guest_opt(const char *opt, const char *key, const char *value)
{
	char item[256], err[256];
	ferry_guest_config cfg;
	ferry_guest_config_init(&cfg);
	snprintf(item, sizeof(item), "%s=%s", key, value);
	if (!strchr(value, ',') && !ferry_guest_config_parse(&cfg, item, err, sizeof(err)))
		return 0;
	if (strchr(value, ','))
		snprintf(err, sizeof(err), "a single value expected");
	return ferry_cli_usage_error("demo", demo_usage, "%s '%s': %s", opt, value, err);
}

/* Everything is checked before a host is spawned; returns -1 to go on, else the exit status. */
static int demo_check(const demo_opts *o)
{
	static const char *const dirty[] = { "auto", "wp", "explicit" };
	if (check_guest_opt("--mem", "mem", o->mem) || check_guest_opt("--vcpus", "vcpus", o->vcpus) ||
	    check_guest_opt("--workload", "workload", o->workload) ||
	    check_guest_opt("--rate", "rate", o->rate) || check_guest_opt("--fill", "fill", o->fill))
		return 2;
	char spec[512], err[256];
	ferry_guest_config cfg;
	ferry_guest_config_init(&cfg);
	snprintf(spec, sizeof(spec), "mem=%s,vcpus=%s", o->mem, o->vcpus);
	if (ferry_guest_config_parse(&cfg, spec, err, sizeof(err)))
		return ferry_cli_usage_error("demo", demo_usage, "--mem %s with --vcpus %s: %s", o->mem,
					     o->vcpus, err);
	size_t k;
	for (k = 0; k < 3 && strcmp(o->dirty, dirty[k]); k++)
		;
	if (k == 3)
		return ferry_cli_usage_error("demo", demo_usage,
					     "--dirty '%s': expected auto, wp or explicit", o->dirty);
	for (int i = 0; i < o->nsets; i++) {
		char name[128];
		json_t *v;
		if (ferry_cli_parse_kv(o->sets[i], name, sizeof(name), &v))
			return ferry_cli_usage_error("demo", demo_usage,
						     "--set '%s': expected NAME=VALUE", o->sets[i]);
		json_decref(v);
	}
	if (o->preempt && !o->postcopy)
		return ferry_cli_usage_error("demo", demo_usage,
					     "--preempt needs --postcopy (postcopy-preempt requires "
					     "postcopy-ram)");
	return -1;
}

static int demo_parse(int argc, char **argv, demo_opts *o)
{
	static const struct option opts[] = {
		{ "mem", required_argument, 0, 'm' },
		{ "vcpus", required_argument, 0, 'c' },
		{ "workload", required_argument, 0, 'w' },
		{ "rate", required_argument, 0, 'r' },
		{ "fill", required_argument, 0, 'f' },
		{ "dirty", required_argument, 0, 'd' },
		{ "set", required_argument, 0, 's' },
		{ "json", no_argument, 0, 'j' },
		{ "postcopy", no_argument, 0, 'p' },
		{ "preempt", no_argument, 0, 'P' },
		{ "no-auto-converge", no_argument, 0, 'A' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	*o = (demo_opts){ .mem = "1G", .vcpus = "2", .workload = "random", .rate = "200M",
			  .fill = "random", .dirty = "auto", .auto_converge = true };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': o->mem = optarg; break;
		case 'c': o->vcpus = optarg; break;
		case 'w': o->workload = optarg; break;
		case 'r': o->rate = optarg; break;
		case 'f': o->fill = optarg; break;
		case 'd': o->dirty = optarg; break;
		case 's':
			if (o->nsets == 16)
				return ferry_cli_usage_error("demo", demo_usage, "too many --set (at most 16)");
			o->sets[o->nsets++] = optarg;
			break;
		case 'j': o->json = true; break;
		case 'p': o->postcopy = true; break;
		case 'P': o->preempt = true; break;
		case 'A': o->auto_converge = false; break;
		case 'h': demo_usage(stdout); return 0;
		default: return ferry_cli_bad_option("demo", c, argv, demo_usage);
		}
	}
	if (optind != argc)
		return ferry_cli_usage_error("demo", demo_usage, "unexpected argument '%s'",
					     argv[optind]);
	return demo_check(o);
}

int ferry_cli_demo(int argc, char **argv)
{
	demo_opts o;
	int prc = demo_parse(argc, argv, &o);
	if (prc >= 0)
		return prc;
	const char *mem = o.mem, *vcpus = o.vcpus, *workload = o.workload, *rate = o.rate,
		   *fill = o.fill, *dirty = o.dirty;
	char **sets = o.sets;
	int nsets = o.nsets;
	bool json = o.json, postcopy = o.postcopy, preempt = o.preempt,
	     auto_converge = o.auto_converge;
	char spec[512], uri[64], self[4096], dir[] = "/tmp/ferry-demo.XXXXXX";
	snprintf(spec, sizeof(spec), "mem=%s,vcpus=%s,workload=%s,rate=%s,fill=%s", mem, vcpus,
		 workload, rate, fill);
	ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (sl < 0) {
		perror("ferry demo: /proc/self/exe");
		return 1;
	}
	self[sl] = 0;
	int port = free_port();
	if (port < 0) {
		perror("ferry demo: no free port");
		return 1;
	}
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", port);
	if (!mkdtemp(dir)) {
		perror("ferry demo: mkdtemp");
		return 1;
	}

	child dst = { 0 }, src = { 0 };
	ferry_cli_drive d = { 0 };
	json_t *info = NULL, *ver = NULL, *dpc = NULL;
	char err[512] = "";
	bool failed_setup = true;
	char *dargs[] = { "--guest", spec, "--dirty", (char *)dirty, "--incoming", uri, NULL };
	char *sargs[] = { "--guest", spec, "--dirty", (char *)dirty, NULL };
	if (host_spawn(&dst, self, dir, "destination", dargs) ||
	    host_spawn(&src, self, dir, "source", sargs))
		goto out;
	if (postcopy) {
		json_t *caps = json_pack("[{s:s,s:b},{s:s,s:b}]", "capability", "postcopy-ram", "state", 1,
					 "capability", "postcopy-preempt", "state", preempt);
		json_t *r1 = ferry_qmp_client_exec(dst.qmp, "migrate-set-capabilities",
						   json_pack("{s:O}", "capabilities", caps), 10000, err,
						   sizeof(err), NULL);
		json_t *r2 = r1 ? ferry_qmp_client_exec(src.qmp, "migrate-set-capabilities",
							json_pack("{s:O}", "capabilities", caps), 10000,
							err, sizeof(err), NULL)
				: NULL;
		json_t *r3 = r2 ? ferry_qmp_client_exec(src.qmp, "migrate-set-parameters",
							json_pack("{s:i}", "x-postcopy-after-passes", 1),
							10000, err, sizeof(err), NULL)
				: NULL;
		json_decref(caps);
		json_decref(r1);
		json_decref(r2);
		if (!r3) {
			fprintf(stderr, "ferry demo: enabling postcopy: %s\n", err);
			goto out;
		}
		json_decref(r3);
	}
	if (auto_converge) {
		json_t *r = ferry_qmp_client_exec(
			src.qmp, "migrate-set-capabilities",
			json_pack("{s:[{s:s,s:b}]}", "capabilities", "capability", "auto-converge", "state", 1),
			10000, err, sizeof(err), NULL);
		if (!r) {
			fprintf(stderr, "ferry demo: enabling auto-converge: %s\n", err);
			goto out;
		}
		json_decref(r);
	}
	if (nsets) {
		json_t *args = json_object();
		for (int i = 0; i < nsets; i++) {
			char name[128];
			json_t *v;
			if (ferry_cli_parse_kv(sets[i], name, sizeof(name), &v)) {
				fprintf(stderr, "ferry demo: --set '%s': expected NAME=VALUE\n", sets[i]);
				json_decref(args);
				goto out;
			}
			json_object_set_new(args, name, v);
		}
		/* Both sides: some parameters are the destination's (x-placement, x-postcopy-cpu). */
		json_t *r = ferry_qmp_client_exec(dst.qmp, "migrate-set-parameters", json_incref(args),
						  10000, err, sizeof(err), NULL);
		json_t *r2 = r ? ferry_qmp_client_exec(src.qmp, "migrate-set-parameters", args, 10000,
						       err, sizeof(err), NULL)
			       : (json_decref(args), NULL);
		json_decref(r);
		if (!r2) {
			fprintf(stderr, "ferry demo: migrate-set-parameters: %s\n", err);
			goto out;
		}
		json_decref(r2);
	}
	failed_setup = false;
	if (!json)
		fprintf(stderr, "ferry demo: migrating a running %s guest (%s vCPUs, %s workload at %s/s per vCPU) to %s\n",
			mem, vcpus, workload, rate, uri);
	usleep(300000); /* let the source guest run and dirty its RAM */
	d = (ferry_cli_drive){
		.who = "demo",
		.uri = uri,
		.qmp_addr = src.sock,
		.progress = json ? FERRY_PROGRESS_NONE
			    : isatty(2) ? FERRY_PROGRESS_BAR
					: FERRY_PROGRESS_LINES,
	};
	info = ferry_cli_migration_drive(src.qmp, &d, err, sizeof(err));
	if (!info) {
		fprintf(stderr, "ferry demo: migrate: %s\n", err);
		goto out;
	}
	const char *st = json_string_value(json_object_get(info, "status"));
	if (st && !strcmp(st, "completed")) {
		json_t *din = wait_incoming(&dst, err, sizeof(err));
		const char *ds = din ? json_string_value(json_object_get(din, "status")) : NULL;
		if (!ds || strcmp(ds, "completed")) {
			fprintf(stderr, "ferry demo: destination: %s\n", din ? "incoming migration failed" : err);
			json_decref(din);
			goto out;
		}
		if (json_object_get(din, "x-postcopy")) {
			dpc = json_deep_copy(json_object_get(din, "x-postcopy"));
			json_object_set(dpc, "blocktime-ms", json_object_get(din, "postcopy-blocktime"));
		}
		json_decref(din);
		json_t *r = NULL;
		if (strcmp(workload, "idle")) {
			r = ferry_qmp_client_exec(dst.qmp, "x-run-until",
						  json_pack("{s:i}", "advance", RUN_ON_STEPS),
						  VERIFY_TIMEOUT_MS, err, sizeof(err), NULL);
		} else {
			r = ferry_qmp_client_exec(dst.qmp, "stop", NULL, 10000, err, sizeof(err), NULL);
		}
		if (!r) {
			fprintf(stderr, "ferry demo: destination: %s\n", err);
			goto out;
		}
		json_decref(r);
		ver = ferry_qmp_client_exec(dst.qmp, "query-guest-hash", json_pack("{s:b}", "verify", 1),
					    VERIFY_TIMEOUT_MS, err, sizeof(err), NULL);
		if (!ver)
			fprintf(stderr, "ferry demo: destination: query-guest-hash: %s\n", err);
	}
out:
	host_end(&src);
	host_end(&dst);
	unlink(src.sock);
	unlink(dst.sock);
	rmdir(dir);
	if (failed_setup) {
		json_decref(info);
		json_decref(d.params);
		json_decref(d.caps);
		return 1;
	}

	json_t *mig = info;
	const char *status = mig ? json_string_value(json_object_get(mig, "status")) : NULL;
	bool verified = ver && json_is_true(json_object_get(ver, "matches-twin"));
	bool ok = status && !strcmp(status, "completed") && verified;
	json_int_t total = jint(mig, "total-time", NULL);
	json_int_t down = jint(mig, "downtime", NULL);
	json_int_t xfer = jint(mig, "ram", "transferred");
	json_int_t passes = jint(mig, "ram", "dirty-sync-count");
	json_int_t normal = jint(mig, "ram", "normal");
	json_int_t zero = jint(mig, "ram", "duplicate");
	json_int_t skipped = jint(mig, "ram", "x-skipped");
	json_int_t thr_peak = jint(mig, "x-cpu-throttle", "peak");
	double mbps = total ? (double)xfer * 8 / 1e3 / (double)total : 0;

	json_t *lat = dpc ? json_object_get(dpc, "fault-latency") : NULL;
	if (json) {
		json_t *o = json_pack("{s:s,s:b,s:I,s:I,s:I,s:f,s:I,s:I,s:I}", "status",
				      status ? status : "failed", "verified", verified,
				      "total_time_ms", total, "downtime_ms", down,
				      "transferred_bytes", xfer, "mbps", mbps, "passes", passes,
				      "normal_pages", normal, "zero_pages", zero);
		json_object_set_new(o, "cpu_throttle_peak", json_integer(thr_peak));
		if (dpc)
			json_object_set(o, "postcopy", dpc);
		char *s = json_dumps(o, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		char b1[32], b2[32];
		json_int_t limit = json_integer_value(json_object_get(d.params, "downtime-limit"));
		double total_s = (double)total / 1000.0;
		printf("Ferry demo: %s guest, %s vCPUs, workload %s, %s\n", mem, vcpus, workload, uri);
		printf("  status       %s after %lld pass%s\n", status ? status : "failed",
		       (long long)passes, passes == 1 ? "" : "es");
		if (mig && json_object_get(mig, "error-desc"))
			printf("  error        %s\n", json_string_value(json_object_get(mig, "error-desc")));
		printf("  total time   %.2f s\n", total_s);
		if (json_object_get(mig, "downtime"))
			printf("  downtime     %lld ms %s %lld ms limit (source stop to destination running)\n",
			       (long long)down, down > limit ? "ABOVE the" : "within the", (long long)limit);
		printf("  transferred  %s: %lld pages with data, %lld zero pages, %lld never-populated pages skipped\n",
		       ferry_cli_fmt_bytes(b1, sizeof(b1), (double)xfer), (long long)normal,
		       (long long)zero, (long long)skipped);
		printf("  throughput   %s on average (transferred / total time)\n",
		       ferry_cli_fmt_rate(b2, sizeof(b2), total_s > 0 ? (double)xfer / total_s : 0));
		if (thr_peak)
			printf("  throttled    auto-converge slowed the source vCPUs, up to %lld%% (%lld raises)\n",
			       (long long)thr_peak, (long long)jint(mig, "x-cpu-throttle", "raises"));
		if (dpc && d.postcopy_after_s >= 0)
			printf("  postcopy     switched after %.2f s; ", d.postcopy_after_s);
		else if (dpc)
			printf("  postcopy     ");
		if (dpc)
			printf("%lld page requests (%lld faults), fault latency p50 %lld us, "
			       "p99 %lld us, max %lld us; vCPUs blocked %lld ms in all\n",
			       (long long)jint(dpc, "requests", NULL), (long long)jint(dpc, "faults", NULL),
			       (long long)jint(lat, "p50-us", NULL), (long long)jint(lat, "p99-us", NULL),
			       (long long)jint(lat, "max-us", NULL),
			       (long long)jint(dpc, "blocktime-ms", NULL));
		if (ver) {
			json_t *steps = json_object_get(ver, "steps");
			char sbuf[256] = "";
			size_t i;
			json_t *v;
			json_array_foreach(steps, i, v) {
				size_t l = strlen(sbuf);
				snprintf(sbuf + l, sizeof(sbuf) - l, "%s%lld", i ? "," : "",
					 (long long)json_integer_value(v));
			}
			if (verified)
				printf("  verified     destination RAM matches the never-migrated twin bit for bit\n"
				       "               (%lld pages, vCPU steps %s, hash %s)\n",
				       (long long)jint(ver, "pages-compared", NULL), sbuf,
				       json_string_value(json_object_get(ver, "hash")));
			else
				printf("  NOT VERIFIED first difference: block %s page %lld\n",
				       json_string_value(json_object_get(json_object_get(ver, "first-difference"), "block")),
				       (long long)jint(json_object_get(ver, "first-difference"), "page", NULL));
		} else {
			printf("  NOT VERIFIED the destination did not report a verification\n");
		}
	}
	json_decref(info);
	json_decref(ver);
	json_decref(dpc);
	json_decref(d.params);
	json_decref(d.caps);
	return ok ? 0 : 1;
}
