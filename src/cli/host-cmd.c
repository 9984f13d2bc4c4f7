/* SPDX-License-Identifier: MIT */
/*
 * `ferry host`'s command line: options, the usage, the checks of what the
 * host is given (addresses, the guest spec, the memory it needs), in the
 * `ferry` grammar (cli.h). It fills a ferry_host_config and hands it to
 * the daemon (src/daemon/, ferry_host_run()), which does the rest.
 *
 * Thread: the process's main thread.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "daemon.h"

static void host_usage(FILE *f)
{
	fputs("usage: ferry host --qmp ADDRESS [--qmp ADDRESS ...] [options]\n"
	      "Runs a synthetic guest and serves QMP on it (docs/qmp.md); `ferry migrate` and\n"
	      "`ferry qmp` are its clients.\n"
	      "\n"
	      "  --qmp ADDRESS      serve QMP on unix:PATH (or a bare PATH) or tcp:HOST:PORT (port 0:\n"
	      "                     any free one, shown by --json); at least one, at most 8\n"
	      "  --guest SPEC       the guest, as KEY=VALUE,... (keys below)\n"
	      "  -S, --stopped      start with the vCPUs stopped (QEMU's -S, status \"prelaunch\");\n"
	      "                     `cont` starts them (the guest key `paused` does the same);\n"
	      "                     with --incoming, the guest arrives stopped (status \"paused\")\n"
	      "                     until `cont`, whether or not it ran on the source\n"
	      "  --dirty MODE       dirty tracking: auto (default), wp, explicit\n"
	      "  --incoming URI     be a destination listening on tcp:HOST:PORT (port 0: any free\n"
	      "                     one, shown by --json and query-migrate) or unix:PATH; listen\n"
	      "                     again after a failed or cancelled migration\n"
	      "  --incoming defer   be a destination waiting for QMP migrate-incoming\n"
	      "  --exit-on-error    destination: exit (status 1) when an incoming migration fails\n"
	      "                     or is cancelled, instead of waiting again\n"
	      "  --no-mem-check     allow mem+vram above MemAvailable (/proc/meminfo); not with\n"
	      "                     prealloc\n"
	      "  --tls DIR          TLS 1.3 with mutual authentication on every migration\n"
	      "                     connection: QMP object tls0 (tls-creds-x509) from DIR\n"
	      "                     (ca-cert.pem and server-cert/key.pem with --incoming, else\n"
	      "                     client-cert/key.pem) and parameter tls-creds tls0\n"
	      "  --tls-psk DIR      the same with a pre-shared key: tls0 is tls-creds-psk from\n"
	      "                     DIR/keys.psk (psktool's username:hexkey lines; the source\n"
	      "                     uses username qemu, the destination accepts any of the file)\n"
	      "  --json             print one JSON line on stdout once listening\n"
	      "  -h, --help         print this help and exit\n"
	      "\n"
	      "Guest keys (SIZE: bytes with an optional K, M or G suffix, powers of 1024):\n"
	      "  mem=SIZE           guest RAM (\"pc.ram\"), split in one slice per vCPU; default 1G\n"
	      "  vram=SIZE          video RAM (\"vga.vram\"), written by the initial fill only;\n"
	      "                     default 16M, 0 for none\n"
	      "  vcpus=N            vCPUs, 1..64; default 2\n"
	      "  workload=W         what a vCPU step (one 4 KiB page write) does: idle (nothing),\n"
	      "                     stride (pages in order), random (seeded random pages; default),\n"
	      "                     hotset (80% of the steps in the first 20% of the working set),\n"
	      "                     churn (allocates, frees and writes pages of a free list in RAM)\n"
	      "  rate=SIZE|max      bytes each vCPU dirties per second; default max (unpaced)\n"
	      "  wss=SIZE           working set: the part of its slice a vCPU writes; default 0,\n"
	      "                     the whole slice\n"
	      "  fill=F             initial RAM contents: none (left unpopulated), zero, random\n"
	      "                     (default), text (compressible)\n"
	      "  seed=N             seed of the fill and of the workloads' choices; default 1\n"
	      "  throttle=P         percent of the time the vCPUs sleep, 0..99; default 0\n"
	      "  alloc=P            churn: percent of the pages allocated at start, 0..100; default 0\n"
	      "  paused[=on|off]    start with the vCPUs stopped, as -S; default off\n"
	      "  prealloc[=on|off]  destination: allocate all RAM at start, not page by page as it\n"
	      "                     arrives (QEMU's prealloc=on); default off\n"
	      "  virtio[=on|off]    reserve the last 256 KiB of mem for virtio rings; default off\n"
	      "  balloon[=on|off]   add a virtio-balloon with free page hints (implies virtio);\n"
	      "                     default off\n"
	      "Example: ferry host --qmp /tmp/src.qmp --guest mem=1G,vcpus=2,rate=200M\n",
	      f);
}

/*
 * A --qmp ADDRESS: unix:PATH, tcp:HOST:PORT, or a bare PATH (no "scheme:"
 * before the first '/'). Writes the unix:/tcp: form to out. Returns 0 or
 * -EINVAL with the message in err.
 */
static int qmp_address(const char *a, char *out, size_t len, char *err, size_t elen)
{
	size_t scheme = strspn(a, "abcdefghijklmnopqrstuvwxyz0123456789+-.");
	if (a[scheme] != ':' || !scheme) {
		if (!*a) {
			snprintf(err, elen, "--qmp: empty address");
			return -EINVAL;
		}
		snprintf(out, len, "unix:%s", a);
	} else if (!strncmp(a, "unix:", 5) || !strncmp(a, "tcp:", 4)) {
		snprintf(out, len, "%s", a);
	} else {
		snprintf(err, elen,
			 "--qmp: unsupported QMP address '%s' (expected unix:PATH or tcp:HOST:PORT)", a);
		return -EINVAL;
	}
	if (strlen(out) >= len - 1 || ferry_uri_validate(out, err + 7, elen - 7)) {
		if (strlen(out) >= len - 1)
			snprintf(err, elen, "--qmp: address too long");
		else
			memcpy(err, "--qmp: ", 7);
		return -EINVAL;
	}
	return 0;
}

/* MemAvailable from /proc/meminfo in bytes, or 0 if unknown. */
static uint64_t mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	unsigned long long kb = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return (uint64_t)kb << 10;
}

/* "1024G", "1536M", "4096K" or bytes: as short as the value allows. */
static void fmt_size(uint64_t n, char *buf, size_t len)
{
	static const char suf[] = "GMK";
	for (int i = 0; i < 3; i++) {
		uint64_t unit = 1ull << (30 - 10 * i);
		if (n && n % unit == 0) {
			snprintf(buf, len, "%llu%c", (unsigned long long)(n / unit), suf[i]);
			return;
		}
	}
	snprintf(buf, len, "%llu", (unsigned long long)n);
}

/*
 * The guest must fit in the memory available now, or it would be killed
 * (or swap) part way through a migration. --no-mem-check lets an
 * unpopulated guest be larger (its pages are allocated as they are
 * written); a preallocated one is always checked.
 */
static int mem_check(const ferry_guest_config *cfg, bool skip)
{
	uint64_t avail = mem_available(), need = cfg->mem_size + cfg->vram_size;
	if (!avail || need <= avail || (skip && !cfg->prealloc))
		return 0;
	char m[32];
	fmt_size(cfg->mem_size, m, sizeof(m));
	return ferry_cli_usage_error("host", host_usage, "--guest: mem=%s is more than this machine's available memory "
			   "(%.1f GiB)%s",
			   m, (double)avail / (1ull << 30),
			   cfg->prealloc ? "" : "; --no-mem-check allows it without prealloc");
}

int ferry_cli_host(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "guest", required_argument, 0, 'g' },
		{ "dirty", required_argument, 0, 'd' },
		{ "qmp", required_argument, 0, 'q' },
		{ "incoming", required_argument, 0, 'i' },
		{ "exit-on-error", no_argument, 0, 'e' },
		{ "json", no_argument, 0, 'j' },
		{ "stopped", no_argument, 0, 'S' },
		{ "no-mem-check", no_argument, 0, 'M' },
		{ "tls", required_argument, 0, 't' },
		{ "tls-psk", required_argument, 0, 'P' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *spec = "", *incoming = NULL, *tls = NULL;
	char qmp[FERRY_HOST_MAX_QMP][FERRY_HOST_ADDR_MAX];
	int nqmp = 0;
	ferry_dirty_mode dmode = FERRY_DIRTY_AUTO;
	bool json = false, exit_on_error = false, stopped = false, no_mem_check = false, psk = false;
	char err[512];
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hS", opts, NULL)) != -1) {
		switch (c) {
		case 'g': spec = optarg; break;
		case 'd':
			if (!strcmp(optarg, "auto")) dmode = FERRY_DIRTY_AUTO;
			else if (!strcmp(optarg, "wp")) dmode = FERRY_DIRTY_WP_ASYNC;
			else if (!strcmp(optarg, "explicit")) dmode = FERRY_DIRTY_EXPLICIT;
			else
				return ferry_cli_usage_error("host", host_usage, "unknown dirty mode '%s' (expected auto, wp, explicit)",
						   optarg);
			break;
		case 'q':
			if (nqmp == FERRY_HOST_MAX_QMP)
				return ferry_cli_usage_error("host", host_usage, "at most %d --qmp addresses", FERRY_HOST_MAX_QMP);
			if (qmp_address(optarg, qmp[nqmp], FERRY_HOST_ADDR_MAX, err, sizeof(err)))
				return ferry_cli_usage_error("host", host_usage, "%s", err);
			nqmp++;
			break;
		case 'i': incoming = optarg; break;
		case 't':
		case 'P':
			if (tls && psk != (c == 'P'))
				return ferry_cli_usage_error("host", host_usage, "--tls and --tls-psk exclude each other");
			tls = optarg;
			psk = c == 'P';
			break;
		case 'e': exit_on_error = true; break;
		case 'j': json = true; break;
		case 'S': stopped = true; break;
		case 'M': no_mem_check = true; break;
		case 'h': host_usage(stdout); return 0;
		case ':':
			return ferry_cli_bad_option("host", c, argv, host_usage);
		default:
			return ferry_cli_bad_option("host", c, argv, host_usage);
		}
	}
	if (optind < argc)
		return ferry_cli_usage_error("host", host_usage, "unexpected argument '%s'", argv[optind]);
	if (incoming && strcmp(incoming, "defer") && ferry_uri_validate(incoming, err, sizeof(err)))
		return ferry_cli_usage_error("host", host_usage, "--incoming: %s", err);
	if (incoming && strlen(incoming) >= FERRY_HOST_ADDR_MAX)
		return ferry_cli_usage_error("host", host_usage, "--incoming URI too long");
	ferry_guest_config cfg;
	ferry_guest_config_init(&cfg);
	if (ferry_guest_config_parse(&cfg, spec, err, sizeof(err)))
		return ferry_cli_usage_error("host", host_usage, "--guest: %s", err);
	if (!nqmp)
		return ferry_cli_usage_error("host", host_usage, "at least one --qmp ADDRESS is required (unix:PATH or tcp:HOST:PORT)");
	if ((c = mem_check(&cfg, no_mem_check)))
		return c;
	cfg.paused |= stopped;

	ferry_host_config hc = { .guest = cfg, .dirty = dmode, .nqmp = nqmp, .incoming = incoming,
				 .exit_on_error = exit_on_error, .no_autostart = stopped && incoming,
				 .json = json, .tls_dir = tls,
				 .tls_psk = psk };
	for (int i = 0; i < nqmp; i++)
		hc.qmp[i] = qmp[i];
	return ferry_host_run(&hc);
}
