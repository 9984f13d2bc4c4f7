/* SPDX-License-Identifier: MIT */
/*
 * `ferry demo`: starts a destination and a source `ferry host` process on
 * loopback, live-migrates the running default guest, lets the destination
 * guest run on for a while, stops it at chosen step counts and verifies its
 * RAM bit for bit against a never-migrated twin. Prints a summary (or one
 * JSON object) and exits non-zero unless the migration completed and
 * verified.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

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

/* Spawns argv with stdout on a pipe; returns the read end as a FILE. */
static FILE *spawn(char *const argv[], pid_t *pid)
{
	int p[2];
	if (pipe(p))
		return NULL;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addclose(&fa, p[0]);
	int r = posix_spawn(pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (r) {
		close(p[0]);
		errno = r;
		return NULL;
	}
	return fdopen(p[0], "r");
}

/* Reads JSON lines until one has `key`; returns it (or NULL at EOF). */
static json_t *read_obj(FILE *f, const char *key)
{
	char line[65536];
	while (fgets(line, sizeof(line), f)) {
		json_t *o = json_loads(line, 0, NULL);
		if (o && json_object_get(o, key))
			return o;
		json_decref(o);
	}
	return NULL;
}

static json_int_t jint(json_t *o, const char *path1, const char *path2)
{
	json_t *v = json_object_get(o, path1);
	if (v && path2)
		v = json_object_get(v, path2);
	return json_is_integer(v) ? json_integer_value(v) : 0;
}

int ferry_cli_demo(int argc, char **argv)
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
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *mem = "1G", *vcpus = "2", *workload = "random", *rate = "200M",
		   *fill = "random", *dirty = "auto";
	char *sets[16];
	int nsets = 0;
	bool json = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': mem = optarg; break;
		case 'c': vcpus = optarg; break;
		case 'w': workload = optarg; break;
		case 'r': rate = optarg; break;
		case 'f': fill = optarg; break;
		case 'd': dirty = optarg; break;
		case 's':
			if (nsets < 16)
				sets[nsets++] = optarg;
			break;
		case 'j': json = true; break;
		case 'h':
			printf("usage: ferry demo [--mem 1G] [--vcpus 2] [--workload random|stride|hotset|idle]\n"
			       "                  [--rate 200M|max] [--fill random|text|zero|none]\n"
			       "                  [--dirty auto|wp|explicit] [--set NAME=VALUE] [--json]\n");
			return 0;
		default: return 2;
		}
	}
	char spec[512], uri[64], self[4096];
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

	char *dargv[] = { self, "host", "--guest", spec, "--dirty", (char *)dirty, "--incoming", uri,
			  "--verify-after", "20000", "--json", NULL };
	pid_t dpid, spid;
	FILE *df = spawn(dargv, &dpid);
	if (!df) {
		perror("ferry demo: cannot start the destination");
		return 1;
	}
	json_t *ready = read_obj(df, "listening");
	if (!ready) {
		fprintf(stderr, "ferry demo: the destination did not start\n");
		waitpid(dpid, NULL, 0);
		return 1;
	}
	json_decref(ready);
	if (!json)
		fprintf(stderr, "ferry demo: migrating a running %s guest (%s vCPUs, %s workload at %s/s per vCPU) to %s\n",
			mem, vcpus, workload, rate, uri);

	char *sargv[48];
	int n = 0;
	sargv[n++] = self;
	sargv[n++] = "host";
	sargv[n++] = "--guest";
	sargv[n++] = spec;
	sargv[n++] = "--dirty";
	sargv[n++] = (char *)dirty;
	sargv[n++] = "--migrate";
	sargv[n++] = uri;
	sargv[n++] = "--migrate-after";
	sargv[n++] = "300";
	sargv[n++] = "--json";
	if (!json && isatty(2))
		sargv[n++] = "--progress";
	for (int i = 0; i < nsets; i++) {
		sargv[n++] = "--set";
		sargv[n++] = sets[i];
	}
	sargv[n] = NULL;
	FILE *sf = spawn(sargv, &spid);
	if (!sf) {
		perror("ferry demo: cannot start the source");
		kill(dpid, SIGTERM);
		waitpid(dpid, NULL, 0);
		return 1;
	}
	json_t *src = read_obj(sf, "role");
	int sst, dst;
	waitpid(spid, &sst, 0);
	if (!src || !WIFEXITED(sst) || WEXITSTATUS(sst))
		kill(dpid, SIGTERM);
	json_t *dres = read_obj(df, "role");
	waitpid(dpid, &dst, 0);
	fclose(sf);
	fclose(df);

	json_t *mig = src ? json_object_get(src, "migration") : NULL;
	const char *status = mig ? json_string_value(json_object_get(mig, "status")) : NULL;
	json_t *ver = dres ? json_object_get(dres, "verify") : NULL;
	bool verified = ver && json_is_true(json_object_get(ver, "matches"));
	bool ok = status && !strcmp(status, "completed") && verified;

	json_int_t total = mig ? jint(mig, "total-time", NULL) : 0;
	json_int_t down = mig ? jint(mig, "downtime", NULL) : 0;
	json_int_t xfer = mig ? jint(mig, "ram", "transferred") : 0;
	json_int_t passes = mig ? jint(mig, "ram", "dirty-sync-count") : 0;
	json_int_t normal = mig ? jint(mig, "ram", "normal") : 0;
	json_int_t zero = mig ? jint(mig, "ram", "duplicate") : 0;
	json_int_t skipped = mig ? jint(mig, "ram", "skipped") : 0;
	double mbps = total ? (double)xfer * 8 / 1e3 / (double)total : 0;

	if (json) {
		json_t *o = json_pack("{s:s,s:b,s:I,s:I,s:I,s:f,s:I,s:I,s:I}", "status",
				      status ? status : "failed", "verified", verified,
				      "total_time_ms", total, "downtime_ms", down,
				      "transferred_bytes", xfer, "mbps", mbps, "passes", passes,
				      "normal_pages", normal, "zero_pages", zero);
		char *s = json_dumps(o, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		printf("Ferry demo: %s guest, %s vCPUs, workload %s, %s\n", mem, vcpus, workload, uri);
		printf("  status       %s after %lld passes\n", status ? status : "failed", (long long)passes);
		if (mig && json_object_get(mig, "error-desc"))
			printf("  error        %s\n", json_string_value(json_object_get(mig, "error-desc")));
		printf("  total time   %lld ms\n", (long long)total);
		printf("  downtime     %lld ms (source stop to destination running)\n", (long long)down);
		printf("  transferred  %.1f MiB: %lld pages with data, %lld zero pages, %lld never-populated pages skipped\n",
		       (double)xfer / 1048576.0, (long long)normal, (long long)zero, (long long)skipped);
		printf("  throughput   %.0f Mbit/s\n", mbps);
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
	json_decref(src);
	json_decref(dres);
	return ok ? 0 : 1;
}
