/* SPDX-License-Identifier: MIT */
/*
 * Records the seeds of the stream, pcstream, pcconn, multifd and src fuzz
 * targets: real
 * migrations of fuzz-vm.h's VM, from a source to a destination in this
 * process, through the test proxy (tests/integration/proxy.c) which
 * records what each connection carries toward the destination. Whatever
 * the wire format is today, the seeds are what this Ferry sends and
 * accepts: rerun it (tests/fuzz/gen-corpus.py stream|pcstream|pcconn|multifd|src)
 * after a format change.
 *
 * Each scenario must complete on both sides, else the tool fails. It
 * writes, into OUTDIR:
 *   stream-NAME   the main connection (a fuzz-stream.c input);
 *   pcstream-NAME for postcopy scenarios, the main connection instead (a
 *                 fuzz-pcstream.c input): postcopy allowed on the
 *                 destination, the source switching after its first
 *                 pass or on request, a few pages dirtied (written and
 *                 marked) at the start of each pass so that the switch
 *                 discards them and the background stream sends them;
 *   pcconn-NAME   recovered postcopy migrations (a fuzz-pcconn.c input):
 *                 switched after the first pass, the main connection
 *                 held once the destination ran the guest (the rest of
 *                 the background stays in the proxy), with preempt a
 *                 page requested (read on the destination) and sent on
 *                 the preempt connection, then the main connection cut,
 *                 and a recovery through a second proxy; the be32
 *                 lengths of the main and preempt connections (0: none)
 *                 and of the recovered main connection, then the four
 *                 connections' bytes;
 *   src-NAME      for the scenarios without multifd, the return path the
 *                 destination sent (the proxy's stamped record) after a
 *                 config byte of fuzz-src.c (SRC_*: checksums, postcopy,
 *                 switchover-ack, resume, preempt); a fuzz-src.c input;
 *                 for the pcconn scenarios (src-recover-NAME), the
 *                 first connection's and the recovered one's, each
 *                 followed with preempt by its preempt connection's;
 *   multifd-NAME  for multifd scenarios: the config byte of
 *                 fuzz-multifd.c (FUZZ_MF_*) and the channel's bytes
 *                 after its handshake, or with two channels (mf2-*) the
 *                 be32 length of channel 0's, then both channels' (a
 *                 fuzz-multifd.c input).
 *
 * usage: fuzz-capture OUTDIR
 * Thread: main, with the migrations' and the proxy's threads.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../integration/proxy.h"
#include "fuzz-check.h"
#include "fuzz-vm.h"
#include "stream/format.h"

typedef struct scenario {
	const char *name;
	bool sums, multifd, zstd, running, swack;
	bool postcopy, forced; /* forced: switched on request, not after a pass */
	bool two;              /* multifd over two channels */
} scenario;

static const scenario scenarios[] = {
	{ "plain", .sums = false },
	{ "sums", .sums = true },
	{ "running-swack", .sums = true, .running = true, .swack = true },
	{ "running-plain", .sums = false, .running = true },
	{ "mf", .multifd = true },
	{ "mf-sums", .multifd = true, .sums = true },
	{ "mf-zstd", .multifd = true, .zstd = true },
	{ "mf-zstd-sums", .multifd = true, .zstd = true, .sums = true },
	{ "mf2-sums", .multifd = true, .sums = true, .two = true },
	{ "mf2-zstd", .multifd = true, .zstd = true, .two = true },
	{ "pc", .postcopy = true, .running = true },
	{ "pc-sums", .postcopy = true, .running = true, .sums = true },
	{ "pc-forced", .postcopy = true, .forced = true },
	{ "pc-forced-sums", .postcopy = true, .forced = true, .sums = true },
};

/* pcconn scenarios: a postcopy recovery, with preempt or without. */
typedef struct recovered {
	const char *name;
	bool sums, preempt;
} recovered;

static const recovered recovereds[] = {
	{ "preempt", .preempt = true },
	{ "preempt-sums", .preempt = true, .sums = true },
	{ "plain-sums", .sums = true },
	{ "plain" }, /* unsummed: mutations reach fuzz-src's recovery (MISSING bitmaps) */
};

/*
 * What the source's events do: the blocks that pass events mark; for
 * pcconn, the proxy to hold once the destination runs the guest.
 */
typedef struct dirtier {
	fuzz_vm *v;
	ferry_ram_block_t *ram0, *ram1;
	ferry_vm_t *dst;
	proxy *px;
	atomic_bool held;
} dirtier;

/*
 * At each pass's start, on the source's migration thread (which reads
 * RAM only after this returns): ram0's page 0 becomes zero, its page 1
 * and ram1's page 2 get new data, all marked dirty.
 */
static void dirty_on_pass(void *opaque, const ferry_event *ev)
{
	dirtier *d = opaque;
	if (ev->type == FERRY_EVENT_STATUS && ev->status == FERRY_MIGRATION_POSTCOPY_ACTIVE && d->px &&
	    !atomic_load(&d->held)) {
		/*
		 * The switch: the package is flushed, the background not yet
		 * sent. Against the callback's rule (it must not block), the
		 * source waits here until the destination ran the guest, then
		 * the proxy holds the rest of the main connection.
		 */
		for (int i = 0; i < 10000 && !ferry_vm_is_running(d->dst); i++)
			usleep(1000);
		CHECK(ferry_vm_is_running(d->dst));
		proxy_freeze_forward(d->px, 0);
		atomic_store(&d->held, true);
		return;
	}
	if (ev->type != FERRY_EVENT_PASS)
		return;
	memset(d->v->ram0, 0, FUZZ_PAGE);
	memset(d->v->ram0 + FUZZ_PAGE, (int)(0x30 + ev->pass), FUZZ_PAGE);
	memset(d->v->ram1 + 2 * FUZZ_PAGE, (int)(0x60 + ev->pass), 64);
	ferry_ram_mark_dirty(d->ram0, 0, 2 * FUZZ_PAGE);
	ferry_ram_mark_dirty(d->ram1, 2 * FUZZ_PAGE, FUZZ_PAGE);
}

static void copy_file(const char *from, const char *to, long skip, int first)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	CHECK(in && out && fseek(in, skip, SEEK_SET) == 0);
	if (first >= 0)
		fputc(first, out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		CHECK(fwrite(buf, 1, n, out) == n);
	CHECK(!ferror(in) && fclose(out) == 0);
	fclose(in);
}

/* Recorded connection k's bytes (its file in tmp): *len bytes, malloc'd. */
static uint8_t *read_rec(const char *tmp, unsigned k, size_t *len)
{
	char rec[300];
	snprintf(rec, sizeof(rec), "%s/rec-%u", tmp, k);
	FILE *f = fopen(rec, "rb");
	CHECK(f && fseek(f, 0, SEEK_END) == 0);
	long n = ftell(f);
	uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
	CHECK(n >= (long)FERRY_MF_HS_LEN && b && fseek(f, 0, SEEK_SET) == 0);
	CHECK(fread(b, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

/*
 * A fuzz-multifd.c input from the n recorded channels (connections 1..n,
 * in connect order): the config byte, with two channels the be32 length
 * of channel 0's bytes, then each channel's bytes after its handshake, in
 * channel id order (the be32 id at offset 24 of the handshake).
 */
static void write_channels(const char *tmp, const char *path, unsigned n, int cfg)
{
	uint8_t *ch[2];
	size_t len[2];
	for (unsigned k = 1; k <= n; k++) {
		size_t l;
		uint8_t *b = read_rec(tmp, k, &l);
		unsigned id = n == 1 ? 0 : (unsigned)b[27];
		CHECK(id < n);
		ch[id] = b;
		len[id] = l - FERRY_MF_HS_LEN;
	}
	FILE *out = fopen(path, "wb");
	CHECK(out && fputc(cfg, out) == cfg);
	if (n == 2) {
		uint8_t be[4] = { (uint8_t)(len[0] >> 24), (uint8_t)(len[0] >> 16), (uint8_t)(len[0] >> 8),
				  (uint8_t)len[0] };
		CHECK(fwrite(be, 1, 4, out) == 4);
	}
	for (unsigned i = 0; i < n; i++) {
		CHECK(fwrite(ch[i] + FERRY_MF_HS_LEN, 1, len[i], out) == len[i]);
		free(ch[i]);
	}
	CHECK(fclose(out) == 0);
}

/*
 * The destination listens at tmp/NAME-dst.sock through listen
 * (ferry_migration_incoming or _recover), behind a proxy at
 * tmp/NAME.sock that records to tmp/REC-K (and .back): the proxy, and
 * in uri the address the source connects to.
 */
static proxy *recorded_link(const char *tmp, const char *name, const char *rec, ferry_vm_t *dst,
			    int (*listen)(ferry_vm_t *, const char *), char *uri, size_t n)
{
	char dpath[256], ppath[256], prefix[256];
	snprintf(dpath, sizeof(dpath), "%s/%s-dst.sock", tmp, name);
	snprintf(ppath, sizeof(ppath), "%s/%s.sock", tmp, name);
	snprintf(prefix, sizeof(prefix), "%s/%s", tmp, rec);
	snprintf(uri, n, "unix:%s", dpath);
	unlink(dpath);
	CHECK(listen(dst, uri) == 0);
	proxy *px = proxy_start(ppath, dpath);
	CHECK(px);
	proxy_record(px, prefix);
	snprintf(uri, n, "unix:%s", ppath);
	return px;
}

static void run(const scenario *s, const char *out, const char *tmp)
{
	fuzz_vm src, dst;
	CHECK(fuzz_vm_create(&src, true) == 0 && fuzz_vm_create(&dst, false) == 0);
	char uri[300], rec[256], path[600];
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.placement = FERRY_PLACE_PWRITE;
	p.switchover_ack = s->swack;
	p.postcopy = s->postcopy;
	CHECK(ferry_migration_set_incoming_params(dst.vm, &p) == 0);
	dirtier dt = { &src, ferry_ram_block_find(src.vm, "ram0"), ferry_ram_block_find(src.vm, "ram1") };
	if (s->postcopy)
		CHECK(ferry_migration_set_event_cb(src.vm, dirty_on_pass, &dt) == 0);
	proxy *px = recorded_link(tmp, "proxy", "rec", dst.vm, ferry_migration_incoming, uri,
				  sizeof(uri));
	if (s->running)
		CHECK(ferry_vm_start(src.vm) == 0);
	ferry_migration_params_init(&p);
	p.checksum = s->sums;
	p.multifd = s->multifd;
	p.multifd_channels = s->two ? 2 : 1;
	p.multifd_compression = s->zstd ? FERRY_COMPRESS_ZSTD : FERRY_COMPRESS_NONE;
	p.switchover_ack = s->swack;
	p.postcopy = s->postcopy;
	p.postcopy_after_passes = s->postcopy && !s->forced;
	CHECK(ferry_migration_start(src.vm, uri, &p) == 0);
	if (s->forced)
		CHECK(ferry_migration_start_postcopy(src.vm) == 0);
	int ss = ferry_migration_wait(src.vm, 60000), ds = ferry_migration_wait(dst.vm, 60000);
	if (ss != FERRY_MIGRATION_COMPLETED || ds != FERRY_MIGRATION_COMPLETED) {
		ferry_migration_info i;
		ferry_migration_query(ds != FERRY_MIGRATION_COMPLETED ? dst.vm : src.vm, &i);
		fprintf(stderr, "capture: %s: migration failed: %s\n", s->name, i.error_desc);
		exit(1);
	}
	if (s->postcopy) { /* else the seeds would not reach past the switch */
		ferry_migration_info si, di;
		CHECK(ferry_migration_query(src.vm, &si) == 0 && ferry_migration_query(dst.vm, &di) == 0);
		if (!si.postcopy || !di.postcopy) {
			fprintf(stderr, "capture: %s: the migration did not switch to postcopy\n", s->name);
			exit(1);
		}
	}
	proxy_stop(px);
	snprintf(path, sizeof(path), "%s/%s-%s", out, s->postcopy ? "pcstream" : "stream", s->name);
	snprintf(rec, sizeof(rec), "%s/rec-0", tmp);
	copy_file(rec, path, 0, -1);
	if (!s->multifd) {
		snprintf(path, sizeof(path), "%s/src-%s", out, s->name);
		snprintf(rec, sizeof(rec), "%s/rec-0.back", tmp);
		copy_file(rec, path, 0, (s->sums ? 1 : 0) | (s->postcopy ? 2 : 0) | (s->swack ? 4 : 0));
	}
	if (s->multifd) {
		snprintf(path, sizeof(path), "%s/multifd-%s", out, s->name);
		write_channels(tmp, path, s->two ? 2 : 1,
			       (s->sums ? FUZZ_MF_SUMS : 0) | (s->zstd ? FUZZ_MF_ZSTD : 0) |
				       (s->two ? FUZZ_MF_TWO : 0));
	}
	fuzz_vm_destroy(&src);
	fuzz_vm_destroy(&dst);
}

static int status(ferry_vm_t *vm)
{
	ferry_migration_info i;
	CHECK(ferry_migration_query(vm, &i) == 0);
	return i.status;
}

static void wait_status(ferry_vm_t *vm, int want)
{
	for (int i = 0; i < 60000 && status(vm) != want; i++)
		usleep(1000);
	if (status(vm) != want) {
		fprintf(stderr, "capture: status %d, not %d\n", status(vm), want);
		exit(1);
	}
}

/* Appends the file's bytes to out, after their be32 length if len_first; none if missing. */
static void append_rec(FILE *out, const char *file, bool len_first)
{
	FILE *in = fopen(file, "rb");
	long n = 0;
	if (in) {
		CHECK(fseek(in, 0, SEEK_END) == 0 && (n = ftell(in)) >= 0 && fseek(in, 0, SEEK_SET) == 0);
	}
	if (len_first) {
		uint8_t be[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
		CHECK(fwrite(be, 1, 4, out) == 4);
	}
	if (!in)
		return;
	char buf[65536];
	size_t k;
	while ((k = fread(buf, 1, sizeof(buf), in)) > 0)
		CHECK(fwrite(buf, 1, k, out) == k);
	fclose(in);
}

/* A pcconn scenario: see the top of the file. */
static void run_recovered(const recovered *s, const char *out, const char *tmp)
{
	fuzz_vm src, dst;
	CHECK(fuzz_vm_create(&src, true) == 0 && fuzz_vm_create(&dst, false) == 0);
	char uri[300], rec[256], path[600];
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.placement = FERRY_PLACE_PWRITE;
	p.postcopy = true;
	CHECK(ferry_migration_set_incoming_params(dst.vm, &p) == 0);
	proxy *px = recorded_link(tmp, "proxy", "rec", dst.vm, ferry_migration_incoming, uri,
				  sizeof(uri));
	dirtier dt = { &src, ferry_ram_block_find(src.vm, "ram0"), ferry_ram_block_find(src.vm, "ram1"),
		       dst.vm, px, false };
	CHECK(ferry_migration_set_event_cb(src.vm, dirty_on_pass, &dt) == 0);
	CHECK(ferry_vm_start(src.vm) == 0);
	ferry_migration_params_init(&p);
	p.checksum = s->sums;
	p.postcopy = true;
	p.postcopy_preempt = s->preempt;
	p.postcopy_after_passes = 1;
	p.downtime_limit_ms = 1; /* switch, do not converge */
	CHECK(ferry_migration_start(src.vm, uri, &p) == 0);
	for (int i = 0; i < 60000 && !atomic_load(&dt.held); i++) {
		int st = status(src.vm);
		if (st == FERRY_MIGRATION_COMPLETED || st == FERRY_MIGRATION_FAILED)
			break;
		usleep(1000);
	}
	if (!atomic_load(&dt.held)) {
		fprintf(stderr, "capture: pcconn-%s: the migration did not switch to postcopy\n", s->name);
		exit(1);
	}
	/* Requested: its page comes on the preempt connection; ram1's page 2 after the recovery. */
	if (s->preempt)
		(void)*(volatile uint8_t *)(dst.ram0 + FUZZ_PAGE);
	proxy_cut_now(px, 0);
	wait_status(src.vm, FERRY_MIGRATION_POSTCOPY_PAUSED);
	wait_status(dst.vm, FERRY_MIGRATION_POSTCOPY_PAUSED);
	proxy *rx = recorded_link(tmp, "rproxy", "rrec", dst.vm, ferry_migration_recover, uri,
				  sizeof(uri));
	CHECK(ferry_migration_resume(src.vm, uri) == 0);
	int ss = ferry_migration_wait(src.vm, 60000), ds = ferry_migration_wait(dst.vm, 60000);
	if (ss != FERRY_MIGRATION_COMPLETED || ds != FERRY_MIGRATION_COMPLETED) {
		fprintf(stderr, "capture: pcconn-%s: migration failed\n", s->name);
		exit(1);
	}
	ferry_migration_info di;
	CHECK(ferry_migration_query(dst.vm, &di) == 0);
	CHECK(di.postcopy_recoveries == 1);
	proxy_stop(px);
	proxy_stop(rx);
	snprintf(path, sizeof(path), "%s/pcconn-%s", out, s->name);
	FILE *f = fopen(path, "wb");
	CHECK(f);
	/*
	 * fuzz-src's recovery: the return paths (with preempt each main
	 * connection's, then its preempt connection's), fuzz-src.c's
	 * END_OF_CONN between.
	 */
	snprintf(path, sizeof(path), "%s/src-recover-%s", out, s->name);
	FILE *g = fopen(path, "wb");
	CHECK(g && fputc(0x2 | 0x8 | (s->preempt ? 0x10 : 0) | (s->sums ? 0x1 : 0), g) != EOF);
	const char *backs[] = { "rec-0", "rec-1", "rrec-0", "rrec-1" };
	for (unsigned k = 0; k < 4; k++) {
		if (!s->preempt && k % 2)
			continue;
		if (k)
			CHECK(fwrite("\xff\xff\xff\xff\0\0", 1, 6, g) == 6);
		snprintf(rec, sizeof(rec), "%s/%s.back", tmp, backs[k]);
		append_rec(g, rec, false);
	}
	CHECK(fclose(g) == 0);
	const char *files[] = { "rec-0", "rec-1", "rrec-0", "rrec-1" };
	for (unsigned k = 0; k < 4; k++) {
		snprintf(rec, sizeof(rec), "%s/%s", tmp, files[k]);
		append_rec(f, rec, k < 3);
		unlink(rec);
	}
	CHECK(fclose(f) == 0);
	fuzz_vm_destroy(&src);
	fuzz_vm_destroy(&dst);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz-capture OUTDIR\n");
		return 2;
	}
	char tmp[] = "/tmp/ferry-capture.XXXXXX";
	CHECK(mkdtemp(tmp));
	mkdir(argv[1], 0755);
	for (size_t k = 0; k < sizeof(scenarios) / sizeof(scenarios[0]); k++)
		run(&scenarios[k], argv[1], tmp);
	for (size_t k = 0; k < sizeof(recovereds) / sizeof(recovereds[0]); k++)
		run_recovered(&recovereds[k], argv[1], tmp);
	char cmd[100];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	return system(cmd) ? 1 : 0;
}
