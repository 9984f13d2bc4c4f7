/* SPDX-License-Identifier: MIT */
/*
 * Multifd integration tests: bit-exact migrations over 1, 2 and 4 channels
 * with and without zstd, page data spliced (default) or copied, deliberately uneven channels (per-pass sync), a
 * channel cut mid-migration (clean failure, then a retry that succeeds),
 * and hand-made channel traffic: a connection from another migration is
 * refused, malformed packets are rejected with exact messages. Every way of
 * placing pages on the destination (UFFDIO_COPY or pwrite() into a fresh
 * memfd-backed block, straight into the mapping of an anonymous one) gives
 * the same RAM, also when later passes send pages again over placed pages
 * and zero pages over holes.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"
#include "capcheck.h"
#include "proxy.h"
#include "sbuf.h"
#include "stream/format.h"

#define MiB (1ull << 20)

static void mf_params(ferry_migration_params *p, unsigned n, bool zstd)
{
	ferry_migration_params_init(p);
	p->multifd = true;
	p->multifd_channels = n;
	p->multifd_compression = zstd ? FERRY_COMPRESS_ZSTD : FERRY_COMPRESS_NONE;
}

/* Migrates spec with p over src_uri (the destination listens on dst_uri). */
static void mf_migrate(const char *spec, const ferry_migration_params *p, ferry_migration_info *out)
{
	side src, dst;
	side_create(&src, spec, FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, spec, FERRY_DIRTY_WP_ASYNC, true);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	bool paused = ferry_guest_get_config(src.g)->paused;
	if (!paused) {
		assert_int_equal(ferry_vm_start(src.vm), 0);
		side_wait_steps(&src, 2048); /* 8 MiB written before the first pass */
	}
	assert_int_equal(ferry_migration_start(src.vm, uri, p), 0);
	assert_int_equal(wait_src_converge(src.vm, p, 5), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
	ferry_migration_info si, di;
	ferry_migration_query(src.vm, &si);
	ferry_migration_query(dst.vm, &di);
	assert_int_equal(si.multifd_channels, p->multifd_channels);
	assert_int_equal(di.multifd_channels, p->multifd_channels);
	/* Both sides agree on what crossed, in total and per channel. */
	assert_int_equal(si.transferred, di.transferred);
	assert_int_equal(si.multifd_bytes, di.multifd_bytes);
	for (unsigned i = 0; i < p->multifd_channels; i++) {
		assert_int_equal(si.channel_bytes[i], di.channel_bytes[i]);
		assert_true(si.channel_bytes[i] > 0);
	}
	assert_int_equal(si.normal, di.normal);
	assert_int_equal(si.duplicate, di.duplicate);
	/* Pages went over the channels, not the main connection. */
	assert_true(si.transferred - si.multifd_bytes < 1 * MiB);
	assert_true(side_run_and_verify(&dst, 5000));
	if (out)
		*out = si;
	side_destroy(&src);
	side_destroy(&dst);
}

#define SPEC "mem=256M,vram=4M,vcpus=2,rate=100M,workload=random"

static void t_mf_1(void **s) { (void)s; ferry_migration_params p; mf_params(&p, 1, false); mf_migrate(SPEC, &p, NULL); }
static void t_mf_2(void **s) { (void)s; ferry_migration_params p; mf_params(&p, 2, false); mf_migrate(SPEC, &p, NULL); }
static void t_mf_4(void **s) { (void)s; ferry_migration_params p; mf_params(&p, 4, false); mf_migrate(SPEC, &p, NULL); }
/*
 * The destination's load reports count the channels: their bytes and their
 * receive threads' CPU time as of each pass's sync. A guest that never fits
 * 1 ms keeps passing; the source sees a load rate, then cancels.
 */
static void t_mf_load_reports(void **s)
{
	(void)s;
	side src, dst;
	side_create(&src, SPEC, FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, SPEC, FERRY_DIRTY_WP_ASYNC, true);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	assert_int_equal(ferry_vm_start(src.vm), 0);
	side_wait_steps(&src, 2048);
	ferry_migration_params p;
	mf_params(&p, 2, false);
	p.max_bandwidth = 200 * 1000 * 1000;
	p.downtime_limit_ms = 1;
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	ferry_migration_info i = { 0 };
	for (int k = 0; k < 600 && !(i.dest_load_bps && i.dirty_sync_count >= 3); k++) {
		msleep(50);
		ferry_migration_query(src.vm, &i);
		assert_int_equal(i.status, FERRY_MIGRATION_ACTIVE);
	}
	assert_true(i.dirty_sync_count >= 3);
	assert_true(i.dest_load_bps > 0);
	/* Nearly all of it crossed on the channels: their bytes are in the reports. */
	assert_true(i.multifd_bytes > 8 * MiB);
	assert_int_equal(ferry_migration_cancel(src.vm), 0);
	assert_int_equal(wait_final(src.vm), FERRY_MIGRATION_CANCELLED);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_FAILED);
	assert_true(ferry_vm_is_running(src.vm));
	assert_true(side_verify(&src)); /* the source guest, bit for bit against its twin */
	side_destroy(&src);
	side_destroy(&dst);
}

/* Channels splicing page data into the socket (x-send-splice on) instead of copying it. */
/* max-bandwidth is the total over the main connection and every channel. */
static void t_mf_bandwidth_cap(void **s)
{
	(void)s;
	ferry_migration_params p;
	mf_params(&p, 2, false);
	p.max_bandwidth = 40 * 1000 * 1000;
	ferry_migration_info i = cap_migrate(&p);
	assert_true(i.channel_bytes[0] > 8 * MiB && i.channel_bytes[1] > 8 * MiB);
}

/*
 * A source cancelled while its channels send: the channels finish their
 * packet, the main connection carries the cancel notice, and the
 * destination says so instead of reporting a truncated channel.
 */
static void t_mf_cancel_told(void **s)
{
	(void)s;
	side src, dst;
	const char *uri = running_pair(&src, &dst, CAP_SPEC);
	ferry_migration_params p;
	mf_params(&p, 2, false);
	p.max_bandwidth = 40 * 1000 * 1000;
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	ferry_migration_info i = { .transferred = 0 };
	for (int k = 0; k < 1500 && i.multifd_bytes < 8 * MiB; k++) {
		assert_int_equal(ferry_migration_wait(src.vm, 20), -ETIMEDOUT);
		ferry_migration_query(src.vm, &i);
	}
	assert_true(i.multifd_bytes >= 8 * MiB);
	assert_int_equal(ferry_migration_cancel(src.vm), 0);
	assert_int_equal(wait_final(src.vm), FERRY_MIGRATION_CANCELLED);
	assert_true(ferry_vm_is_running(src.vm));
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_FAILED);
	ferry_migration_query(dst.vm, &i);
	assert_string_equal(i.error_desc, "migration cancelled by the source");
	side_destroy(&src);
	side_destroy(&dst);
}

/*
 * A cancel that comes while the destination waits at a pass's sync for
 * channels held up on their way (a silent link: the proxy freezes them).
 * The source sends its notice and closes the main connection; the
 * destination, which looks at that connection while it waits, fails at
 * once instead of waiting for the channels forever (it did). Which of the
 * two messages it gives depends on what follows the sync in the stream:
 * the notice itself, or records of the next pass it must not act on.
 */
static void t_mf_cancel_at_sync(void **s)
{
	(void)s;
	side src, dst;
	char puri[120];
	/* Never-written RAM, a trickle of dirty pages: a pass fits in the frozen sockets. */
	proxy *px = running_pair_proxied(&src, &dst, "mem=64M,vram=4M,vcpus=2,fill=none,rate=100K",
					 puri);
	ferry_migration_params p;
	mf_params(&p, 2, false);
	p.max_bandwidth = 200 * 1000; /* the guest's rate: 1 ms is 200 bytes, never a page */
	p.downtime_limit_ms = 1;
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	ferry_migration_info i = { 0 };
	for (int k = 0; k < 1200 && i.dirty_sync_count < 2; k++) {
		assert_int_equal(ferry_migration_wait(src.vm, 50), -ETIMEDOUT);
		ferry_migration_query(src.vm, &i);
	}
	assert_true(i.dirty_sync_count >= 2);
	proxy_freeze(px, 1);
	proxy_freeze(px, 2);
	/* The next pass's SYNC is on the main connection, its packets held: the destination waits. */
	wait_thread_stays_in_syscall("mig/dst/main", SYS_futex);
	cancel_at_orphaned_sync(&src, &dst);
	proxy_stop(px);
	assert_true(side_verify(&src));
	side_destroy(&src);
	side_destroy(&dst);
}

static void t_mf_2_splice(void **s)
{
	(void)s;
	ferry_migration_params p;
	mf_params(&p, 2, false);
	p.send_splice = true;
	mf_migrate(SPEC, &p, NULL);
}
static void t_mf_1_zstd(void **s) { (void)s; ferry_migration_params p; mf_params(&p, 1, true); mf_migrate(SPEC, &p, NULL); }
static void t_mf_4_zstd(void **s) { (void)s; ferry_migration_params p; mf_params(&p, 4, true); mf_migrate(SPEC, &p, NULL); }

/* zstd on compressible (text) RAM: exact, and it does compress. */
static void t_mf_2_zstd_text(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	mf_params(&p, 2, true);
	mf_migrate("mem=256M,vram=4M,vcpus=2,rate=50M,workload=hotset,fill=text", &p, &i);
	assert_true(i.compress_in >= 200 * MiB);
	assert_true(i.compress_out * 2 < i.compress_in);
	assert_true(i.multifd_bytes < i.compress_in);
	assert_int_equal(i.compress_skipped, 0); /* every packet paid: none skipped */
}

/*
 * zstd on incompressible (random) RAM, one channel, paused: 260 packets of
 * 256 pages; each failed attempt sends raw and skips the next 0, 1, 2, 4 ..
 * 64 packets, so exactly packets 0, 1, 3, 6, 11, 20, 37, 70, 135 and 200 are
 * tried: 10 MiB given to zstd, 250 MiB sent raw without trying.
 */
static void t_mf_zstd_incompressible(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	mf_params(&p, 1, true);
	mf_migrate("mem=256M,vram=4M,vcpus=2,paused,fill=random", &p, &i);
	assert_int_equal(i.normal, (260 * MiB) / 4096);
	assert_int_equal(i.compress_in, 10 * MiB);
	assert_int_equal(i.compress_out, 10 * MiB); /* sent raw: zstd did not pay */
	assert_int_equal(i.compress_skipped, 250 * MiB);
}

/* Paused guest, exact counts: every page of a zero fill is a zero page. */
static void t_mf_counts(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	mf_params(&p, 2, false);
	mf_migrate("mem=256M,vram=4M,vcpus=2,paused,fill=zero", &p, &i);
	assert_int_equal(i.duplicate, (260 * MiB) / 4096);
	assert_int_equal(i.normal, 0);
}

/*
 * One channel much slower than the other while hot pages are resent every
 * pass: the per-pass sync must keep an old copy from landing after a newer
 * one. Several passes are forced by a 1 ms downtime limit.
 */
static void t_mf_uneven(void **s)
{
	(void)s;
	const char *spec = "mem=256M,vram=4M,vcpus=2,rate=50M,wss=16M,workload=hotset";
	side src, dst;
	side_create(&src, spec, FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, spec, FERRY_DIRTY_WP_ASYNC, true);
	char dpath[108], ppath[108], puri[120];
	snprintf(dpath, sizeof(dpath), "%s", test_uri() + 5);
	snprintf(ppath, sizeof(ppath), "%s", test_uri() + 5);
	snprintf(puri, sizeof(puri), "unix:%s", ppath);
	char duri[120];
	snprintf(duri, sizeof(duri), "unix:%s", dpath);
	assert_int_equal(ferry_migration_incoming(dst.vm, duri), 0);
	proxy *px = proxy_start(ppath, dpath);
	assert_non_null(px);
	proxy_set_delay(px, 1, 400); /* connection 1 = multifd channel 0 */
	assert_int_equal(ferry_vm_start(src.vm), 0);
	ferry_migration_params p;
	mf_params(&p, 2, false);
	p.downtime_limit_ms = 1;
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	assert_int_equal(wait_src_converge(src.vm, &p, 5), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
	ferry_migration_info i;
	ferry_migration_query(src.vm, &i);
	assert_true(i.dirty_sync_count >= 3);
	/* The slow channel carried less: the channels really were uneven. */
	assert_true(i.channel_bytes[0] < i.channel_bytes[1]);
	assert_true(side_run_and_verify(&dst, 5000));
	proxy_stop(px);
	side_destroy(&src);
	side_destroy(&dst);
}

/* A multifd channel cut mid-migration: clean failure, then a retry works. */
static void t_mf_channel_cut_then_retry(void **s)
{
	(void)s;
	side src, dst;
	side_create(&src, SPEC, FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, SPEC, FERRY_DIRTY_WP_ASYNC, true);
	char dpath[108], ppath[108], puri[120], duri[120];
	snprintf(dpath, sizeof(dpath), "%s", test_uri() + 5);
	snprintf(ppath, sizeof(ppath), "%s", test_uri() + 5);
	snprintf(puri, sizeof(puri), "unix:%s", ppath);
	snprintf(duri, sizeof(duri), "unix:%s", dpath);
	assert_int_equal(ferry_migration_incoming(dst.vm, duri), 0);
	proxy *px = proxy_start(ppath, dpath);
	proxy_cut_after(px, 2, 20 * MiB); /* connection 2 = multifd channel 1 */
	assert_int_equal(ferry_vm_start(src.vm), 0);
	ferry_migration_params p;
	mf_params(&p, 2, false);
	p.max_bandwidth = 100 * MiB;
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	ferry_migration_info si, di;
	wait_both_final(&src, &dst, FERRY_MIGRATION_FAILED, &si, &di);
	/*
	 * Channel 1 is cut; which channel reports first on each side is a
	 * race (a failure shuts the other connections down), but it is a
	 * channel, and on the source a lost connection.
	 */
	assert_non_null(strstr(si.error_desc, "multifd channel "));
	assert_non_null(strstr(si.error_desc, ": lost the connection to the destination"));
	assert_non_null(strstr(di.error_desc, "multifd channel "));
	assert_true(ferry_vm_is_running(src.vm));
	proxy_stop(px);
	side_destroy(&dst);
	/* Retry straight to a new destination. */
	side_create(&dst, SPEC, FERRY_DIRTY_WP_ASYNC, true);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	p.max_bandwidth = 0;
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	assert_int_equal(wait_src_converge(src.vm, &p, 5), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/* ---- hand-made channel traffic ---- */

static const uint8_t UUID_A[16] = { 0xaa, 1, 2, 3 };
static const uint8_t UUID_B[16] = { 0xbb, 1, 2, 3 };

static void main_prologue(sbuf *b)
{
	be32(b, FERRY_STREAM_MAGIC);
	be32(b, FERRY_STREAM_VERSION_PLAIN); /* no checksums: hand-made records */
	put(b, UUID_A, 16);
	be32(b, 4096);
	u8(b, FERRY_REC_COMMAND);
	be16(b, FERRY_CMD_MULTIFD);
	be16(b, 5);
	be32(b, 1);
	u8(b, 0);
}

static void ram_setup_and_sync(sbuf *b)
{
	ram_setup(b);
	u8(b, FERRY_REC_SECTION_PART);
	be32(b, 1);
	be64(b, FERRY_RAM_MULTIFD_SYNC);
	be64(b, FERRY_RAM_EOS);
	u8(b, FERRY_REC_FOOTER);
	be32(b, 1);
}

/*
 * A listening hand-made destination (*uri) and the main connection of a
 * source of uuid A that announced one multifd channel: its fd.
 */
static int hand_main(side *dst, const char **uri)
{
	side_create(dst, DST_SPEC, FERRY_DIRTY_EXPLICIT, true);
	*uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst->vm, *uri), 0);
	int mfd = uconnect(*uri);
	sbuf b = { .len = 0 };
	main_prologue(&b);
	sendb(mfd, &b);
	return mfd;
}

/*
 * A source that announces multifd, then closes its main connection
 * without connecting a channel: the destination fails at once (it used
 * to wait out its 10 s for the channels).
 */
static void t_mf_source_gone_before_channels(void **s)
{
	(void)s;
	side dst;
	const char *uri;
	int mfd = hand_main(&dst, &uri);
	shutdown(mfd, SHUT_WR);
	assert_string_equal(wait_failed(dst.vm),
			    "the source closed the connection with 0 of 1 multifd channels "
			    "connected (command at offset 28)");
	close(mfd);
	side_destroy(&dst);
}

/*
 * A whole one-channel migration by hand: a connection from another
 * migration (uuid B) arrives first and is refused; the real channel
 * carries page 5 of pc.ram and a SYNC. The migration completes.
 */
static void t_mf_foreign_channel_refused(void **s)
{
	(void)s;
	side dst;
	const char *uri;
	int mfd = hand_main(&dst, &uri);
	sbuf b;
	wait_status(dst.vm, FERRY_MIGRATION_ACTIVE); /* the header read: uuid A is known */
	int bogus = uconnect(uri);
	b.len = 0;
	handshake(&b, UUID_B, 0, 1);
	sendb(bogus, &b);
	/* The destination refuses it: the connection is closed unread. */
	char x;
	assert_int_equal(recv(bogus, &x, 1, 0), 0);
	close(bogus);
	int cfd = uconnect(uri);
	b.len = 0;
	handshake(&b, UUID_A, 0, 1);
	pkt_header(&b, 0, 1, 1, 0, 0);
	str8(&b, "pc.ram");
	be64(&b, 5);
	be64(&b, 6);
	uint8_t page[4096];
	memset(page, 0x5a, sizeof(page));
	put(&b, page, sizeof(page));
	pkt_header(&b, FERRY_MF_SYNC, 0, 0, 0, 1);
	sendb(cfd, &b);
	b.len = 0;
	ram_setup_and_sync(&b);
	u8(&b, FERRY_REC_COMMAND);
	be16(&b, FERRY_CMD_VM_STATE);
	be16(&b, 1);
	u8(&b, 0);
	u8(&b, FERRY_REC_EOF);
	sendb(mfd, &b);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
	const char *name;
	uint8_t *host;
	uint64_t size;
	ferry_guest_ram(dst.g, 0, &name, &host, &size);
	assert_string_equal(name, "pc.ram");
	assert_memory_equal(host + 5 * 4096, page, 4096);
	ferry_migration_info i;
	ferry_migration_query(dst.vm, &i);
	assert_int_equal(i.normal, 1);
	assert_int_equal(i.duplicate, 1);
	close(cfd);
	close(mfd);
	side_destroy(&dst);
}

/* Sends one bad packet on a channel and returns the destination's error. */
static const char *bad_packet(const sbuf *pkt)
{
	static char msg[256];
	side dst;
	side_create(&dst, DST_SPEC, FERRY_DIRTY_EXPLICIT, true);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	int mfd = uconnect(uri);
	sbuf b = { .len = 0 };
	main_prologue(&b);
	ram_setup_and_sync(&b);
	sendb(mfd, &b);
	int cfd = uconnect(uri);
	b.len = 0;
	handshake(&b, UUID_A, 0, 1);
	sendb(cfd, &b);
	sendb(cfd, pkt);
	shutdown(cfd, SHUT_WR);
	snprintf(msg, sizeof(msg), "%s", wait_failed(dst.vm));
	close(cfd);
	close(mfd);
	side_destroy(&dst);
	return msg;
}

static void t_mf_packet_fuzz(void **s)
{
	(void)s;
	sbuf b;
	b.len = 0;
	be32(&b, 0xdeadbeef);
	put(&b, (uint8_t[28]){ 0 }, 28);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: bad multifd packet magic 0xdeadbeef (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, 0x80, 1, 0, 0, 0);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: unknown multifd packet flags 0x80 (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, 0, 200, 100, 0, 0);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: multifd packet with 200 + 100 pages (max 256) (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, 0, 0, 0, 0, 0);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: multifd packet without pages (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, FERRY_MF_SYNC, 1, 0, 0, 0);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: multifd sync packet with pages (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, FERRY_MF_ZSTD, 1, 0, 100, 0);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: multifd packet compression (flags 0x2, 100 bytes) does not match the migration's (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, 0, 1, 0, 0, 0);
	str8(&b, "rom");
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: multifd packet for unknown RAM block 'rom' (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, 0, 1, 0, 0, 0);
	str8(&b, "pc.ram");
	be64(&b, 4096);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: multifd page 4096 outside RAM block 'pc.ram' (4096 pages) (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, 0, 1, 0, 0, 0);
	str8(&b, "pc.ram");
	be64(&b, 7);
	put(&b, (uint8_t[10]){ 0 }, 10);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: truncated stream: end of data with 4086 bytes missing (multifd packet at offset 32)");
}

/* ---- placement paths (bare VMs, no guest) ---- */

#define PL_PAGES 2048u /* 8 MiB per block */

/* A block of PL_PAGES pages: a memfd mapped shared at offset 0, or anonymous. */
static uint8_t *pl_ram(bool file, int *fd)
{
	size_t len = (size_t)PL_PAGES * FERRY_PAGE_SIZE;
	*fd = -1;
	if (file) {
		*fd = memfd_create("pl", MFD_CLOEXEC);
		assert_true(*fd >= 0);
		assert_int_equal(ftruncate(*fd, (off_t)len), 0);
	}
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       file ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS, *fd, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

/*
 * Source pages: runs of data pages, single data pages between zero pages and
 * never-touched pages, so that destination packets hold runs of several
 * lengths as well as isolated pages.
 */
static void pl_fill(uint8_t *ram, unsigned salt)
{
	for (uint64_t i = 0; i < PL_PAGES; i++) {
		if (i % 7 == 3 || (i / 64) % 5 == 4)
			continue; /* zero or never written */
		uint64_t *w = (uint64_t *)(ram + i * FERRY_PAGE_SIZE);
		for (unsigned k = 0; k < FERRY_PAGE_SIZE / 8; k += 8)
			w[k] = (i + 1) * 0x9e3779b97f4a7c15ull + k + salt;
	}
}

static void pl_migrate(const ferry_migration_params *p)
{
	static const char *const names[] = { "file", "anon" };
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	ferry_vm_t *src, *dst;
	assert_int_equal(ferry_vm_create(&o, &src), 0);
	assert_int_equal(ferry_vm_create(&o, &dst), 0);
	uint8_t *sram[2], *dram[2];
	int sfd[2], dfd[2];
	for (unsigned b = 0; b < 2; b++) {
		sram[b] = pl_ram(true, &sfd[b]);
		dram[b] = pl_ram(b == 0, &dfd[b]);
		pl_fill(sram[b], b);
		ferry_ram_block_t *rb;
		size_t len = (size_t)PL_PAGES * FERRY_PAGE_SIZE;
		assert_int_equal(ferry_ram_block_add(src, names[b], sram[b], len, sfd[b], &rb), 0);
		assert_int_equal(ferry_ram_block_add(dst, names[b], dram[b], len, dfd[b], &rb), 0);
	}
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst, uri), 0);
	assert_int_equal(ferry_migration_start(src, uri, p), 0);
	assert_int_equal(wait_final(src), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst), FERRY_MIGRATION_COMPLETED);
	for (unsigned b = 0; b < 2; b++) {
		for (uint64_t i = 0; i < PL_PAGES; i++) {
			const uint8_t *s = sram[b] + i * FERRY_PAGE_SIZE, *d = dram[b] + i * FERRY_PAGE_SIZE;
			if (memcmp(s, d, FERRY_PAGE_SIZE))
				fail_msg("block '%s' page %llu differs", names[b], (unsigned long long)i);
		}
	}
	ferry_vm_destroy(src);
	ferry_vm_destroy(dst);
	for (unsigned b = 0; b < 2; b++) {
		munmap(sram[b], (size_t)PL_PAGES * FERRY_PAGE_SIZE);
		munmap(dram[b], (size_t)PL_PAGES * FERRY_PAGE_SIZE);
		close(sfd[b]);
		if (dfd[b] >= 0)
			close(dfd[b]);
	}
}

static void t_place_precopy(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	pl_migrate(&p);
}

/*
 * Several passes: a writer thread (the "vCPU", stopped and started through
 * the vCPU ops) rewrites pages for a while during the migration: data over
 * data, zero over data, zero over zero or never-written pages, data over
 * those; the bandwidth limit makes the first pass outlast it, so later
 * passes send pages again over placed pages and over holes.
 */
struct pl_writer {
	uint8_t *ram;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool run, running, quit;
	unsigned rounds;
};

static void *pl_writer_main(void *arg)
{
	struct pl_writer *w = arg;
	pthread_mutex_lock(&w->lock);
	for (unsigned gen = 1;; gen++) {
		w->running = w->run;
		pthread_cond_broadcast(&w->cond);
		while (!w->run && !w->quit)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->quit || w->rounds >= 12)
			break;
		w->running = true;
		pthread_mutex_unlock(&w->lock);
		for (uint64_t i = gen % 3; i < PL_PAGES; i += 3) {
			uint8_t *p = w->ram + i * FERRY_PAGE_SIZE;
			if ((i + gen) % 4 == 0)
				memset(p, 0, FERRY_PAGE_SIZE);
			else
				for (unsigned k = 0; k < FERRY_PAGE_SIZE; k += 512)
					p[k] = (uint8_t)(gen + i + k / 512 + 1);
		}
		msleep(15);
		pthread_mutex_lock(&w->lock);
		w->rounds++;
	}
	w->running = false;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static int pl_writer_set(struct pl_writer *w, bool run)
{
	pthread_mutex_lock(&w->lock);
	w->run = run;
	pthread_cond_broadcast(&w->cond);
	/* stop returns once the writer is between rounds (a round is short) */
	while (!run && w->running)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

static int pl_stop(void *o) { return pl_writer_set(o, false); }
static int pl_start(void *o) { return pl_writer_set(o, true); }

static void pl_passes_copy(uint32_t placement, bool multifd, uint32_t user_copy);
/* The placement asked for, the user copy as x-user-copy's default decides. */
static void pl_passes(uint32_t placement, bool multifd)
{
	pl_passes_copy(placement, multifd, FERRY_USER_COPY_AUTO);
}

static void pl_passes_copy(uint32_t placement, bool multifd, uint32_t user_copy)
{
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_WP_ASYNC };
	ferry_vm_t *src, *dst;
	assert_int_equal(ferry_vm_create(&o, &src), 0);
	assert_int_equal(ferry_vm_create(&o, &dst), 0);
	int sfd, dfd;
	size_t len = (size_t)PL_PAGES * FERRY_PAGE_SIZE;
	/*
	 * copy is what anonymous (and preallocated) RAM gets; into a memfd a
	 * copy that fell back to pwrite() would pass unnoticed.
	 */
	uint8_t *sram = pl_ram(true, &sfd), *dram = pl_ram(placement != FERRY_PLACE_COPY, &dfd);
	pl_fill(sram, 7);
	ferry_ram_block_t *rb;
	assert_int_equal(ferry_ram_block_add(src, "ram", sram, len, sfd, &rb), 0);
	assert_int_equal(ferry_ram_block_add(dst, "ram", dram, len, dfd, &rb), 0);
	struct pl_writer w = { .ram = sram };
	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	ferry_vcpu_ops ops = { .stop = pl_stop, .start = pl_start };
	assert_int_equal(ferry_vm_set_vcpu_ops(src, &ops, &w), 0);
	assert_int_equal(pthread_create(&w.thread, NULL, pl_writer_main, &w), 0);
	assert_int_equal(ferry_vm_start(src), 0);

	ferry_migration_params ip;
	ferry_migration_params_init(&ip);
	ip.placement = placement;
	ip.user_copy = user_copy;
	assert_int_equal(ferry_migration_set_incoming_params(dst, &ip), 0);
	ferry_migration_params p;
	if (multifd)
		mf_params(&p, 2, false);
	else
		ferry_migration_params_init(&p);
	p.user_copy = user_copy;
	p.max_bandwidth = 40 * MiB; /* the first pass takes ~150 ms */
	p.downtime_limit_ms = 10;   /* converges once the writer is done */
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst, uri), 0);
	assert_int_equal(ferry_migration_start(src, uri, &p), 0);
	assert_int_equal(wait_final(src), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst), FERRY_MIGRATION_COMPLETED);
	ferry_migration_info si, di;
	ferry_migration_query(src, &si);
	ferry_migration_query(dst, &di);
	assert_true(si.dirty_sync_count >= 3); /* pages were sent again */
	assert_true(si.duplicate > 0 && si.normal > PL_PAGES);
	assert_int_equal(di.placement, placement);
	assert_false(ferry_vm_is_running(src));
	for (uint64_t i = 0; i < PL_PAGES; i++)
		if (memcmp(sram + i * FERRY_PAGE_SIZE, dram + i * FERRY_PAGE_SIZE, FERRY_PAGE_SIZE))
			fail_msg("page %llu differs", (unsigned long long)i);
	pthread_mutex_lock(&w.lock);
	w.quit = true;
	pthread_cond_broadcast(&w.cond);
	pthread_mutex_unlock(&w.lock);
	pthread_join(w.thread, NULL);
	ferry_vm_destroy(src);
	ferry_vm_destroy(dst);
	munmap(sram, len);
	munmap(dram, len);
	close(sfd);
	if (dfd >= 0)
		close(dfd);
}

/*
 * A destination block whose file descriptor is read-only: pwrite() of the
 * first data page fails in the placement thread (a single connection), the
 * destination reports which page and why, and the source guest keeps
 * running.
 */
static void t_place_fail_pwrite(void **s)
{
	(void)s;
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	ferry_vm_t *src, *dst;
	assert_int_equal(ferry_vm_create(&o, &src), 0);
	assert_int_equal(ferry_vm_create(&o, &dst), 0);
	size_t len = (size_t)PL_PAGES * FERRY_PAGE_SIZE;
	int sfd, dfd;
	uint8_t *sram = pl_ram(true, &sfd), *dram = pl_ram(true, &dfd);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", dfd);
	int rofd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(rofd >= 0);
	pl_fill(sram, 3);
	ferry_ram_block_t *rb;
	assert_int_equal(ferry_ram_block_add(src, "ram", sram, len, sfd, &rb), 0);
	assert_int_equal(ferry_ram_block_add(dst, "ram", dram, len, rofd, &rb), 0);
	assert_int_equal(ferry_vm_start(src), 0);
	ferry_migration_params ip, p;
	ferry_migration_params_init(&ip);
	ip.placement = FERRY_PLACE_PWRITE;
	assert_int_equal(ferry_migration_set_incoming_params(dst, &ip), 0);
	ferry_migration_params_init(&p);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst, uri), 0);
	assert_int_equal(ferry_migration_start(src, uri, &p), 0);
	assert_int_equal(wait_final(dst), FERRY_MIGRATION_FAILED);
	assert_int_equal(wait_final(src), FERRY_MIGRATION_FAILED);
	assert_true(ferry_vm_is_running(src));
	/* Nothing lost on the source: its RAM is still exactly what it was filled with. */
	uint8_t *ref = pl_ram(false, &(int){-1});
	pl_fill(ref, 3);
	if (memcmp(sram, ref, len))
		fail_msg("source RAM changed by the failed migration");
	munmap(ref, len);
	const char *want = "cannot write page 0 of RAM block 'ram': Bad file descriptor (";
	ferry_migration_info di;
	ferry_migration_query(dst, &di);
	if (strncmp(di.error_desc, want, strlen(want)))
		fail_msg("destination error '%s', want '%s...'", di.error_desc, want);
	ferry_vm_destroy(src);
	ferry_vm_destroy(dst);
	munmap(sram, len);
	munmap(dram, len);
	close(sfd);
	close(dfd);
	close(rofd);
}

static void t_place_passes_pwrite(void **s) { (void)s; pl_passes(FERRY_PLACE_PWRITE, false); }
static void t_place_passes_uffd(void **s) { (void)s; pl_passes(FERRY_PLACE_UFFD, false); }
static void t_place_passes_uffd_mf(void **s) { (void)s; pl_passes(FERRY_PLACE_UFFD, true); }
static void t_place_passes_pwrite_mf(void **s) { (void)s; pl_passes(FERRY_PLACE_PWRITE, true); }
static void t_place_passes_mapping(void **s) { (void)s; pl_passes(FERRY_PLACE_MAPPING, false); }
/* x-user-copy on both sides: staged sends, pages copied from a bounce buffer into place. */
static void t_place_passes_copy(void **s)
{
	(void)s;
	pl_passes_copy(FERRY_PLACE_COPY, false, FERRY_USER_COPY_ON);
}
static void t_place_passes_copy_mf(void **s)
{
	(void)s;
	pl_passes_copy(FERRY_PLACE_COPY, true, FERRY_USER_COPY_ON);
}
/* And never: the kernel copies straight from and into guest RAM, whatever the machine. */
static void t_place_passes_direct_mf(void **s)
{
	(void)s;
	pl_passes_copy(FERRY_PLACE_MAPPING, true, FERRY_USER_COPY_OFF);
}

static void t_place_mf_2(void **s) { (void)s; ferry_migration_params p; mf_params(&p, 2, false); pl_migrate(&p); }
static void t_place_mf_2_zstd(void **s) { (void)s; ferry_migration_params p; mf_params(&p, 2, true); pl_migrate(&p); }

/*
 * A backing file shorter than its block is refused at registration (the
 * destination would fault writing past its end), as is a closed fd; a
 * file as long as the block, or none, is fine.
 */
static void t_ram_block_fd_checks(void **s)
{
	(void)s;
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	ferry_vm_t *vm;
	assert_int_equal(ferry_vm_create(&o, &vm), 0);
	int fd;
	uint8_t *ram = pl_ram(true, &fd);
	size_t len = (size_t)PL_PAGES * FERRY_PAGE_SIZE;
	assert_int_equal(ftruncate(fd, (off_t)(len - FERRY_PAGE_SIZE)), 0);
	assert_int_equal(ferry_ram_block_add(vm, "short", ram, len, fd, NULL), -EINVAL);
	int dead = dup(fd);
	close(dead);
	assert_int_equal(ferry_ram_block_add(vm, "closed", ram, len, dead, NULL), -EBADF);
	assert_int_equal(ferry_ram_block_add(vm, "nofd", ram, len, -1, NULL), 0);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	assert_int_equal(ferry_ram_block_add(vm, "whole", ram, len, fd, NULL), 0);
	ferry_vm_destroy(vm);
	munmap(ram, len);
	close(fd);
}

/*
 * The block-name rule on the multifd path (stream/wire.h): a name with an
 * embedded NUL ("pc.ram\0", once read as 'pc.ram') and an empty name are
 * refused like on the main stream.
 */
static void t_mf_packet_name_rule(void **s)
{
	(void)s;
	sbuf b;
	b.len = 0;
	pkt_header(&b, 0, 1, 0, 0, 0);
	put(&b, "\x07pc.ram\0", 8);
	be64(&b, 0);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: RAM block name contains NUL (multifd packet at offset 32)");
	b.len = 0;
	pkt_header(&b, 0, 1, 0, 0, 0);
	u8(&b, 0);
	be64(&b, 0);
	assert_string_equal(bad_packet(&b),
			    "multifd channel 0: empty RAM block name (multifd packet at offset 32)");
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_mf_1),
		cmocka_unit_test(t_mf_2),
		cmocka_unit_test(t_mf_4),
		cmocka_unit_test(t_mf_2_splice),
		cmocka_unit_test(t_mf_bandwidth_cap),
		cmocka_unit_test(t_mf_cancel_told),
		cmocka_unit_test(t_mf_cancel_at_sync),
		cmocka_unit_test(t_mf_load_reports),
		cmocka_unit_test(t_mf_1_zstd),
		cmocka_unit_test(t_mf_4_zstd),
		cmocka_unit_test(t_mf_2_zstd_text),
		cmocka_unit_test(t_mf_zstd_incompressible),
		cmocka_unit_test(t_mf_counts),
		cmocka_unit_test(t_mf_uneven),
		cmocka_unit_test(t_mf_channel_cut_then_retry),
		cmocka_unit_test(t_mf_foreign_channel_refused),
		cmocka_unit_test(t_mf_source_gone_before_channels),
		cmocka_unit_test(t_mf_packet_fuzz),
		cmocka_unit_test(t_place_precopy),
		cmocka_unit_test(t_place_mf_2),
		cmocka_unit_test(t_place_mf_2_zstd),
		cmocka_unit_test(t_place_passes_uffd),
		cmocka_unit_test(t_place_passes_pwrite),
		cmocka_unit_test(t_place_fail_pwrite),
		cmocka_unit_test(t_ram_block_fd_checks),
		cmocka_unit_test(t_place_passes_uffd_mf),
		cmocka_unit_test(t_place_passes_pwrite_mf),
		cmocka_unit_test(t_place_passes_mapping),
		cmocka_unit_test(t_place_passes_copy),
		cmocka_unit_test(t_place_passes_copy_mf),
		cmocka_unit_test(t_place_passes_direct_mf),
		cmocka_unit_test(t_mf_packet_name_rule),
	};
	if (getenv("FERRY_TEST_FILTER")) /* e.g. t_mf_bandwidth_cap */
		cmocka_set_test_filter(getenv("FERRY_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
