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
		"                  [--devices N [--devmem 64M] [--devrate 500M|max] [--devprecopy]]\n"
		"                  [--tls DIR | --tls-psk DIR]\n"
		"  --tls       both hosts with --tls DIR (ferry host --help): TLS 1.3 with mutual\n"
		"              authentication; the server certificate must name 127.0.0.1\n"
		"  --tls-psk   both hosts with --tls-psk DIR: TLS 1.3 with a pre-shared key\n"
		"              (DIR/keys.psk with a line for username qemu: psktool -u qemu)\n"
		"  --devices   N synthetic live devices of devmem bytes each, read at no more\n"
		"              than devrate bytes/s per device; verified like RAM;\n"
		"              --devprecopy: they offer PRE_COPY (their data moves while the\n"
		"              guest runs) and switchover-ack is on on both hosts\n"
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
	const char *devices, *devmem, *devrate; /* live devices: "0" is none */
	const char *tls;                        /* --tls DIR or --tls-psk DIR, or NULL */
	char *sets[16];
	int nsets;
	bool json, postcopy, preempt, auto_converge, devprecopy, tls_psk;
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
	    check_guest_opt("--rate", "rate", o->rate) || check_guest_opt("--fill", "fill", o->fill) ||
	    check_guest_opt("--devices", "devices", o->devices) ||
	    check_guest_opt("--devmem", "devmem", o->devmem) ||
	    check_guest_opt("--devrate", "devrate", o->devrate))
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
	if (o->devprecopy && !strcmp(o->devices, "0"))
		return ferry_cli_usage_error("demo", demo_usage, "--devprecopy needs --devices N");
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
		{ "devices", required_argument, 0, 'D' },
		{ "devmem", required_argument, 0, 'M' },
		{ "devrate", required_argument, 0, 'R' },
		{ "devprecopy", no_argument, 0, 'X' },
		{ "tls", required_argument, 0, 'T' },
		{ "tls-psk", required_argument, 0, 'K' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	*o = (demo_opts){ .mem = "1G", .vcpus = "2", .workload = "random", .rate = "200M",
			  .fill = "random", .dirty = "auto", .auto_converge = true,
			  .devices = "0", .devmem = "64M", .devrate = "500M" };
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
		case 'D': o->devices = optarg; break;
		case 'M': o->devmem = optarg; break;
		case 'R': o->devrate = optarg; break;
		case 'X': o->devprecopy = true; break;
		case 'T':
		case 'K':
			if (o->tls && o->tls_psk != (c == 'K'))
				return ferry_cli_usage_error("demo", demo_usage, "--tls and --tls-psk exclude each other");
			o->tls = optarg;
			o->tls_psk = c == 'K';
			break;
		case 'h': demo_usage(stdout); return 0;
		default: return ferry_cli_bad_option("demo", c, argv, demo_usage);
		}
	}
	if (optind != argc)
		return ferry_cli_usage_error("demo", demo_usage, "unexpected argument '%s'",
					     argv[optind]);
	return demo_check(o);
}

/* Both hosts' session: the processes, the URI, and what came back. */
typedef struct demo_run {
	char spec[512], uri[64], self[4096], dir[32];
	child dst, src;
	ferry_cli_drive d;
	json_t *info; /* the source's final query-migrate */
	json_t *ver;  /* the destination's query-guest-hash */
	json_t *dpc;  /* the destination's x-postcopy, with blocktime-ms */
	char err[512];
} demo_run;

/* Our own path, a free port and a private directory. 0 or -1 (message printed). */
static int demo_env(demo_run *r, const demo_opts *o)
{
	int l = snprintf(r->spec, sizeof(r->spec), "mem=%s,vcpus=%s,workload=%s,rate=%s,fill=%s", o->mem,
			 o->vcpus, o->workload, o->rate, o->fill);
	if (strcmp(o->devices, "0"))
		snprintf(r->spec + l, sizeof(r->spec) - (size_t)l, ",devices=%s,devmem=%s,devrate=%s%s",
			 o->devices, o->devmem, o->devrate, o->devprecopy ? ",devprecopy" : "");
	ssize_t sl = readlink("/proc/self/exe", r->self, sizeof(r->self) - 1);
	if (sl < 0) {
		perror("ferry demo: /proc/self/exe");
		return -1;
	}
	r->self[sl] = 0;
	int port = free_port();
	if (port < 0) {
		perror("ferry demo: no free port");
		return -1;
	}
	snprintf(r->uri, sizeof(r->uri), "tcp:127.0.0.1:%d", port);
	snprintf(r->dir, sizeof(r->dir), "/tmp/ferry-demo.XXXXXX");
	if (!mkdtemp(r->dir)) {
		perror("ferry demo: mkdtemp");
		return -1;
	}
	return 0;
}

/* One QMP command; NULL (message in r->err) on failure. Takes args. */
static json_t *demo_exec(demo_run *r, child *ch, const char *cmd, json_t *args)
{
	return ferry_qmp_client_exec(ch->qmp, cmd, args, 10000, r->err, sizeof(r->err), NULL);
}

/* Sets args (taken) on ch; 0 or -1 with "ferry demo: WHAT: error" printed. */
static int demo_set(demo_run *r, child *ch, const char *cmd, json_t *args, const char *what)
{
	json_t *res = demo_exec(r, ch, cmd, args);
	if (!res) {
		fprintf(stderr, "ferry demo: %s: %s\n", what, r->err);
		return -1;
	}
	json_decref(res);
	return 0;
}

/* Capabilities and --set parameters, on the hosts that need them. 0 or -1. */
static int demo_configure(demo_run *r, const demo_opts *o)
{
	if (o->postcopy) {
		json_t *caps = json_pack("[{s:s,s:b},{s:s,s:b},{s:s,s:b}]", "capability", "postcopy-ram",
					 "state", 1, "capability", "postcopy-preempt", "state", o->preempt,
					 "capability", "postcopy-blocktime", "state", 1);
		int e = demo_set(r, &r->dst, "migrate-set-capabilities", json_pack("{s:O}", "capabilities", caps),
				 "enabling postcopy") ||
			demo_set(r, &r->src, "migrate-set-capabilities", json_pack("{s:O}", "capabilities", caps),
				 "enabling postcopy") ||
			demo_set(r, &r->src, "migrate-set-parameters",
				 json_pack("{s:i}", "x-postcopy-after-passes", 1), "enabling postcopy");
		json_decref(caps);
		if (e)
			return -1;
	}
	json_t *ack = json_pack("{s:[{s:s,s:b}]}", "capabilities", "capability", "switchover-ack",
				"state", 1);
	int e = o->devprecopy &&
		(demo_set(r, &r->dst, "migrate-set-capabilities", json_incref(ack), "enabling switchover-ack") ||
		 demo_set(r, &r->src, "migrate-set-capabilities", json_incref(ack), "enabling switchover-ack"));
	json_decref(ack);
	if (e)
		return -1;
	if (o->auto_converge &&
	    demo_set(r, &r->src, "migrate-set-capabilities",
		     json_pack("{s:[{s:s,s:b}]}", "capabilities", "capability", "auto-converge", "state", 1),
		     "enabling auto-converge"))
		return -1;
	if (!o->nsets)
		return 0;
	json_t *args = json_object();
	for (int i = 0; i < o->nsets; i++) {
		char name[128];
		json_t *v;
		if (ferry_cli_parse_kv(o->sets[i], name, sizeof(name), &v)) {
			fprintf(stderr, "ferry demo: --set '%s': expected NAME=VALUE\n", o->sets[i]);
			json_decref(args);
			return -1;
		}
		json_object_set_new(args, name, v);
	}
	/* Both sides: some parameters are the destination's (x-placement, x-postcopy-cpu). */
	if (demo_set(r, &r->dst, "migrate-set-parameters", json_incref(args), "migrate-set-parameters")) {
		json_decref(args);
		return -1;
	}
	return demo_set(r, &r->src, "migrate-set-parameters", args, "migrate-set-parameters");
}

/*
 * After the source completed: the destination's outcome, then its guest runs
 * on (or stops, if idle) and the oracle is asked. 0 or -1 (message printed).
 */
static int demo_verify(demo_run *r, const demo_opts *o)
{
	json_t *din = wait_incoming(&r->dst, r->err, sizeof(r->err));
	const char *ds = din ? json_string_value(json_object_get(din, "status")) : NULL;
	if (!ds || strcmp(ds, "completed")) {
		fprintf(stderr, "ferry demo: destination: %s\n", din ? "incoming migration failed" : r->err);
		json_decref(din);
		return -1;
	}
	if (json_object_get(din, "x-postcopy")) {
		r->dpc = json_deep_copy(json_object_get(din, "x-postcopy"));
		json_object_set(r->dpc, "blocktime-ms", json_object_get(din, "postcopy-blocktime"));
	}
	json_decref(din);
	json_t *res = strcmp(o->workload, "idle")
			      ? ferry_qmp_client_exec(r->dst.qmp, "x-run-until",
						      json_pack("{s:i}", "advance", RUN_ON_STEPS),
						      VERIFY_TIMEOUT_MS, r->err, sizeof(r->err), NULL)
			      : demo_exec(r, &r->dst, "stop", NULL);
	if (!res) {
		fprintf(stderr, "ferry demo: destination: %s\n", r->err);
		return -1;
	}
	json_decref(res);
	r->ver = ferry_qmp_client_exec(r->dst.qmp, "query-guest-hash", json_pack("{s:b}", "verify", 1),
				       VERIFY_TIMEOUT_MS, r->err, sizeof(r->err), NULL);
	if (!r->ver)
		fprintf(stderr, "ferry demo: destination: query-guest-hash: %s\n", r->err);
	return r->ver ? 0 : -1;
}

/* Spawns both hosts and configures them. 0 or -1 (message printed). */
static int demo_setup(demo_run *r, const demo_opts *o)
{
	char *tls = !o->tls ? NULL : o->tls_psk ? "--tls-psk" : "--tls";
	char *dargs[] = { "--guest", r->spec, "--dirty", (char *)o->dirty, "--incoming", r->uri,
			  tls, (char *)o->tls, NULL };
	char *sargs[] = { "--guest", r->spec, "--dirty", (char *)o->dirty, tls, (char *)o->tls, NULL };
	if (host_spawn(&r->dst, r->self, r->dir, "destination", dargs) ||
	    host_spawn(&r->src, r->self, r->dir, "source", sargs))
		return -1;
	return demo_configure(r, o);
}

/* The migration itself, followed as `ferry migrate` follows it, then the verification. */
static void demo_migrate(demo_run *r, const demo_opts *o)
{
	if (!o->json)
		fprintf(stderr, "ferry demo: migrating a running %s guest (%s vCPUs, %s workload at %s/s per vCPU) to %s\n",
			o->mem, o->vcpus, o->workload, o->rate, r->uri);
	usleep(300000); /* let the source guest run and dirty its RAM (a demo, not a test) */
	r->d = (ferry_cli_drive){
		.who = "demo",
		.uri = r->uri,
		.qmp_addr = r->src.sock,
		.progress = o->json ? FERRY_PROGRESS_NONE
			    : isatty(2) ? FERRY_PROGRESS_BAR
					: FERRY_PROGRESS_LINES,
		/* --json: the switch time to 10 ms, for background throughput (bench/postcopy.py) */
		.interval_ms = o->json && o->postcopy ? 10 : 0,
	};
	r->info = ferry_cli_migration_drive(r->src.qmp, &r->d, r->err, sizeof(r->err));
	if (!r->info) {
		fprintf(stderr, "ferry demo: migrate: %s\n", r->err);
		return;
	}
	const char *st = json_string_value(json_object_get(r->info, "status"));
	if (st && !strcmp(st, "completed"))
		demo_verify(r, o);
}

static bool demo_verified(const demo_run *r)
{
	return r->ver && json_is_true(json_object_get(r->ver, "matches-twin"));
}

static void demo_print_json(const demo_run *r)
{
	json_t *mig = r->info;
	const char *status = mig ? json_string_value(json_object_get(mig, "status")) : NULL;
	json_int_t total = jint(mig, "total-time", NULL), xfer = jint(mig, "ram", "transferred");
	json_t *o = json_pack("{s:s,s:b,s:I,s:I,s:I,s:f,s:I,s:I,s:I}", "status",
			      status ? status : "failed", "verified", demo_verified(r),
			      "total_time_ms", total, "downtime_ms", jint(mig, "downtime", NULL),
			      "transferred_bytes", xfer, "mbps",
			      total ? (double)xfer * 8 / 1e3 / (double)total : 0, "passes",
			      jint(mig, "ram", "dirty-sync-count"), "normal_pages",
			      jint(mig, "ram", "normal"), "zero_pages", jint(mig, "ram", "duplicate"));
	json_object_set_new(o, "cpu_throttle_peak", json_integer(jint(mig, "x-cpu-throttle", "peak")));
	if (r->dpc) {
		json_object_set(o, "postcopy", r->dpc);
		/* The phase after the switch: its bytes and when it began (10 ms resolution). */
		json_object_set_new(o, "postcopy_bytes", json_integer(jint(mig, "ram", "postcopy-bytes")));
		json_object_set_new(o, "postcopy_after_ms",
				    json_integer((json_int_t)(r->d.postcopy_after_s * 1000)));
	}
	json_t *ds = json_object_get(mig, "x-device-state");
	if (ds) {
		json_object_set(o, "device_state", ds);
		json_object_set(o, "downtime_split_ms", json_object_get(mig, "x-downtime-split"));
	}
	char *s = json_dumps(o, JSON_COMPACT);
	printf("%s\n", s);
	free(s);
	json_decref(o);
}

/* The postcopy line of the summary. */
static void demo_print_postcopy(const demo_run *r)
{
	json_t *dpc = r->dpc, *lat = json_object_get(dpc, "fault-latency");
	if (r->d.postcopy_after_s >= 0)
		printf("  postcopy     switched after %.2f s; ", r->d.postcopy_after_s);
	else
		printf("  postcopy     ");
	printf("%lld page requests (%lld faults), fault latency p50 %lld us, "
	       "p99 %lld us, max %lld us; every vCPU blocked at once %lld ms\n",
	       (long long)jint(dpc, "requests", NULL), (long long)jint(dpc, "faults", NULL),
	       (long long)jint(lat, "p50-us", NULL), (long long)jint(lat, "p99-us", NULL),
	       (long long)jint(lat, "max-us", NULL), (long long)jint(dpc, "blocktime-ms", NULL));
}

/* The verification lines of the summary. */
static void demo_print_verify(const demo_run *r)
{
	json_t *ver = r->ver;
	if (!ver) {
		printf("  NOT VERIFIED the destination did not report a verification\n");
		return;
	}
	char sbuf[256] = "";
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(ver, "steps"), i, v) {
		size_t l = strlen(sbuf);
		snprintf(sbuf + l, sizeof(sbuf) - l, "%s%lld", i ? "," : "", (long long)json_integer_value(v));
	}
	json_t *diff = json_object_get(ver, "first-difference");
	if (demo_verified(r))
		printf("  verified     destination RAM %s the never-migrated twin bit for bit\n"
		       "               (%lld pages, vCPU steps %s, hash %s)\n",
		       json_object_get(r->info, "x-device-state") ? "and device memory match" : "matches",
		       (long long)jint(ver, "pages-compared", NULL), sbuf,
		       json_string_value(json_object_get(ver, "hash")));
	else
		printf("  NOT VERIFIED first difference: block %s page %lld\n",
		       json_string_value(json_object_get(diff, "block")), (long long)jint(diff, "page", NULL));
}

static void demo_print_text(const demo_run *r, const demo_opts *o)
{
	json_t *mig = r->info;
	const char *status = mig ? json_string_value(json_object_get(mig, "status")) : NULL;
	json_int_t total = jint(mig, "total-time", NULL), down = jint(mig, "downtime", NULL);
	json_int_t xfer = jint(mig, "ram", "transferred"), passes = jint(mig, "ram", "dirty-sync-count");
	json_int_t thr_peak = jint(mig, "x-cpu-throttle", "peak");
	json_int_t limit = json_integer_value(json_object_get(r->d.params, "downtime-limit"));
	double total_s = (double)total / 1000.0;
	char b1[32], b2[32];
	printf("Ferry demo: %s guest, %s vCPUs, workload %s, %s\n", o->mem, o->vcpus, o->workload, r->uri);
	printf("  status       %s after %lld pass%s\n", status ? status : "failed", (long long)passes,
	       passes == 1 ? "" : "es");
	if (mig && json_object_get(mig, "error-desc"))
		printf("  error        %s\n", json_string_value(json_object_get(mig, "error-desc")));
	printf("  total time   %.2f s\n", total_s);
	if (json_object_get(mig, "downtime"))
		printf("  downtime     %lld ms %s %lld ms limit (source stop to destination running)\n",
		       (long long)down, down > limit ? "ABOVE the" : "within the", (long long)limit);
	printf("  transferred  %s: %lld pages with data, %lld zero pages, %lld never-populated pages skipped\n",
	       ferry_cli_fmt_bytes(b1, sizeof(b1), (double)xfer), (long long)jint(mig, "ram", "normal"),
	       (long long)jint(mig, "ram", "duplicate"), (long long)jint(mig, "ram", "x-skipped"));
	printf("  throughput   %s on average (transferred / total time)\n",
	       ferry_cli_fmt_rate(b2, sizeof(b2), total_s > 0 ? (double)xfer / total_s : 0));
	if (thr_peak)
		printf("  throttled    auto-converge slowed the source vCPUs, up to %lld%% (%lld raises)\n",
		       (long long)thr_peak, (long long)jint(mig, "x-cpu-throttle", "raises"));
	char dev[256];
	if (ferry_cli_device_text(dev, sizeof(dev), mig))
		printf("  devices      %s\n", dev);
	if (r->dpc)
		demo_print_postcopy(r);
	demo_print_verify(r);
}

/* Quits both hosts, removes the directory, frees the replies. */
static void demo_end(demo_run *r)
{
	host_end(&r->src);
	host_end(&r->dst);
	unlink(r->src.sock);
	unlink(r->dst.sock);
	rmdir(r->dir);
	json_decref(r->info);
	json_decref(r->ver);
	json_decref(r->dpc);
	json_decref(r->d.params);
	json_decref(r->d.caps);
}

/*
 * The demo in phases: options, environment, both hosts up and configured,
 * the migration and its verification, the summary, the end.
 */
int ferry_cli_demo(int argc, char **argv)
{
	demo_opts o;
	int prc = demo_parse(argc, argv, &o);
	if (prc >= 0)
		return prc;
	demo_run *r = calloc(1, sizeof(*r));
	if (!r || demo_env(r, &o)) {
		if (!r)
			fprintf(stderr, "ferry demo: out of memory\n");
		free(r);
		return 1;
	}
	bool ok = false;
	if (!demo_setup(r, &o)) {
		demo_migrate(r, &o);
		const char *st = r->info ? json_string_value(json_object_get(r->info, "status")) : NULL;
		ok = st && !strcmp(st, "completed") && demo_verified(r);
		/* Quit the hosts before printing (demo_end's host_end is then a no-op). */
		host_end(&r->src);
		host_end(&r->dst);
		if (o.json)
			demo_print_json(r);
		else
			demo_print_text(r, &o);
	}
	demo_end(r);
	free(r);
	return ok ? 0 : 1;
}
