/* SPDX-License-Identifier: MIT */
/*
 * End-to-end integrity (stream/sum.h, docs/wire-format.md "Checksums"):
 * a bit flipped in a RAM page's bytes by the proxy, on the main channel
 * and on a multifd channel, fails the migration with a message naming the
 * channel, the record, its offset and the page, the source keeps running
 * and a second migration completes bit-exact; a clean migration verifies
 * exactly the bytes of the pages it sent.
 *
 * A bit flipped in a control byte (VM_STATE) fails at DIGEST by the
 * control hash.
 *
 * The guest is idle (no vCPU writes RAM) and multifd has one channel, so
 * each stream is the same every run and the flipped byte falls in page
 * data; the page the message names must be the one page whose bytes
 * differ between the two sides.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "harness.h"
#include "proxy.h"

#define MiB (1ull << 20)
#define SPEC "mem=16M,vram=4M,vcpus=1,workload=idle"
#define FLIP_AT (4 * MiB + 1234)

/* The one page whose bytes differ between src and dst: its block and index. */
static void differing_page(side *src, side *dst, char name[64], uint64_t *page)
{
	unsigned found = 0;
	for (unsigned i = 0; i < ferry_guest_ram_count(src->g); i++) {
		const char *n;
		uint8_t *a, *b;
		uint64_t size, size2;
		ferry_guest_ram(src->g, i, &n, &a, &size);
		ferry_guest_ram(dst->g, i, &n, &b, &size2);
		assert_int_equal(size, size2);
		for (uint64_t off = 0; off < size; off += 4096) {
			if (!memcmp(a + off, b + off, 4096))
				continue;
			snprintf(name, 64, "%s", n);
			*page = off / 4096;
			found++;
		}
	}
	assert_int_equal(found, 1);
}

/*
 * Migrates src through a proxy that flips one bit of connection k (0 the
 * main channel, 1 multifd channel 0) and checks the failure: its message
 * exactly, both sides FAILED, the source running. Returns with src running.
 */
static void flip_and_fail(side *src, const ferry_migration_params *p, unsigned k,
			  const char *carrier, const char *ctx)
{
	side dst;
	char puri[120];
	proxy *px = running_pair_proxied(src, &dst, SPEC, puri);
	proxy_flip_at(px, k, FLIP_AT, 0x10);
	assert_int_equal(ferry_migration_start(src->vm, puri, p), 0);
	char msg[512], want[512], block[64], got_block[64];
	snprintf(msg, sizeof(msg), "%s", wait_failed(dst.vm));
	unsigned long long page, off, rec, at;
	int n = sscanf(msg, "checksum mismatch: page %llu of RAM block '%63[^']' (offset 0x%llx), %*s %*s",
		       &page, got_block, &off);
	assert_int_equal(n, 3);
	const char *tail = strstr(msg, " record ");
	assert_non_null(tail);
	assert_int_equal(sscanf(tail, " record %llu", &rec), 1);
	const char *ato = strstr(tail, " at offset ");
	assert_non_null(ato);
	assert_int_equal(sscanf(ato, " at offset %llu)", &at), 1);
	uint64_t bad = 0;
	differing_page(src, &dst, block, &bad);
	snprintf(want, sizeof(want),
		 "checksum mismatch: page %llu of RAM block '%s' (offset 0x%llx), %s record %llu (%s at offset %llu)",
		 (unsigned long long)bad, block, (unsigned long long)bad * 4096, carrier, rec, ctx,
		 at);
	assert_string_equal(msg, want);
	/* The record that carried it starts before the flip, at most one run before. */
	assert_true(at < FLIP_AT && FLIP_AT - at < 256 * (4096 + 8 + 8) + 512);
	char srcwant[600];
	snprintf(srcwant, sizeof(srcwant), "destination failed: %s", want);
	assert_string_equal(wait_failed(src->vm), srcwant);
	assert_true(ferry_vm_is_running(src->vm));
	ferry_migration_info di;
	assert_int_equal(ferry_migration_query(dst.vm, &di), 0);
	assert_int_equal(di.checksum_mismatches, 1);
	proxy_stop(px);
	side_destroy(&dst);
}

/* A second migration of src, straight to a fresh destination: bit-exact, every page verified. */
static void migrate_clean(side *src, const ferry_migration_params *p)
{
	side dst;
	side_create(&dst, SPEC, FERRY_DIRTY_WP_ASYNC, true);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	assert_int_equal(ferry_migration_start(src->vm, uri, p), 0);
	ferry_migration_info si, di;
	wait_both_final(src, &dst, FERRY_MIGRATION_COMPLETED, &si, &di);
	assert_true(side_verify(&dst));
	assert_int_equal(di.checksum_mismatches, 0);
	assert_true(si.normal > 0);
	assert_int_equal(di.verified_bytes, si.normal * 4096);
	side_destroy(&dst);
}

static void t_flip_main(void **state)
{
	(void)state;
	side src;
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	flip_and_fail(&src, &p, 0, "main channel", "RAM pages");
	migrate_clean(&src, &p);
	side_destroy(&src);
}

static void t_flip_multifd(void **state)
{
	(void)state;
	side src;
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.multifd = true;
	p.multifd_channels = 1;
	flip_and_fail(&src, &p, 1, "multifd channel 0", "multifd packet");
	p.multifd_channels = 4; /* reordered across channels: the digest must not mind */
	migrate_clean(&src, &p);
	p.multifd_compression = FERRY_COMPRESS_ZSTD;
	migrate_clean(&src, &p);
	side_destroy(&src);
}

/*
 * A bit flipped in a control byte: the source's VM_STATE (0 or 1; a flip
 * of bit 0 gives the other valid value), 39 bytes before the end of the
 * main channel (EOF, DIGEST of 37 bytes, the payload byte). No payload
 * checksum covers it; the control hash in DIGEST must catch it. The
 * stream of the idle guest is the same every run: a clean migration
 * through the proxy measures its length first.
 */
static void t_flip_control(void **state)
{
	(void)state;
	side src, dst;
	char puri[120];
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	proxy *px = running_pair_proxied(&src, &dst, SPEC, puri);
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	ferry_migration_info si, di;
	wait_both_final(&src, &dst, FERRY_MIGRATION_COMPLETED, &si, &di);
	uint64_t total = proxy_forwarded(px, 0);
	proxy_stop(px);
	side_destroy(&dst);
	side_destroy(&src);

	px = running_pair_proxied(&src, &dst, SPEC, puri);
	proxy_flip_at(px, 0, total - 39, 0x01);
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	const char *want = "checksum mismatch: the main channel's records, commands and headers hash to ";
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", wait_failed(dst.vm));
	assert_true(strncmp(msg, want, strlen(want)) == 0);
	assert_non_null(strstr(msg, " (stream digest at offset "));
	char srcwant[600];
	snprintf(srcwant, sizeof(srcwant), "destination failed: %s", msg);
	assert_string_equal(wait_failed(src.vm), srcwant);
	assert_true(ferry_vm_is_running(src.vm));
	assert_int_equal(ferry_migration_query(dst.vm, &di), 0);
	assert_int_equal(di.checksum_mismatches, 1);
	proxy_stop(px);
	side_destroy(&dst);
	migrate_clean(&src, &p);
	side_destroy(&src);
}

/*
 * Postcopy, a page of the first pass flipped on the main channel: the idle
 * guest never writes it again, so it is not among the pages DISCARD says
 * will come again, and the destination fails at LISTEN, before it could
 * run the guest. The source learns it from the SHUT without RUNNING: the
 * migration fails like a precopy one and the source's guest runs on.
 */
static void t_flip_before_run(void **state)
{
	(void)state;
	side src, dst;
	char puri[120];
	proxy *px = running_pair_proxied(&src, &dst, SPEC, puri);
	ferry_migration_params ip;
	ferry_migration_params_init(&ip);
	ip.postcopy = true;
	assert_int_equal(ferry_migration_set_incoming_params(dst.vm, &ip), 0);
	proxy_flip_at(px, 0, FLIP_AT, 0x10);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.postcopy = true;
	p.postcopy_after_passes = 1;
	p.downtime_limit_ms = 1; /* never converge: always switch */
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	char msg[512], want[600];
	snprintf(msg, sizeof(msg), "%s", wait_failed(dst.vm));
	assert_true(strncmp(msg, "checksum mismatch: page ", 24) == 0);
	snprintf(want, sizeof(want), "destination failed before it ran the guest: %s", msg);
	assert_string_equal(wait_failed(src.vm), want);
	assert_true(ferry_vm_is_running(src.vm));
	assert_false(ferry_vm_is_running(dst.vm));
	proxy_stop(px);
	side_destroy(&dst);
	ferry_migration_params_init(&p);
	migrate_clean(&src, &p);
	side_destroy(&src);
}

/*
 * Multifd, the main channel's first record after the header (the MULTIFD
 * command, type 0x08) flipped to 0x48: the destination fails before any
 * channel is accepted; the source, which may be connecting its channels
 * or sending on them, must learn it and fail with the guest running (a
 * randomized run once hung here).
 */
static void t_flip_multifd_early(void **state)
{
	(void)state;
	side src, dst;
	char puri[120];
	proxy *px = running_pair_proxied(&src, &dst, SPEC, puri);
	proxy_flip_at(px, 0, 28, 0x40);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.multifd = true;
	p.multifd_channels = 2;
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	assert_string_equal(wait_failed(dst.vm), "unknown record type 0x48 (record at offset 28)");
	assert_string_equal(wait_failed(src.vm),
			    "destination failed: unknown record type 0x48 (record at offset 28)");
	assert_true(ferry_vm_is_running(src.vm));
	proxy_stop(px);
	side_destroy(&dst);
	migrate_clean(&src, &p);
	side_destroy(&src);
}

/*
 * Multifd channels that never reach the destination (frozen in the proxy:
 * they stay open, and take nothing once their socket buffers are full):
 * the destination gives up after its 10 s wait and says so; the source,
 * blocked writing a full channel, must fail at once with that word and its
 * guest running (a randomized run once hung here, the destination having
 * refused channels whose handshake carried a flipped VM uuid).
 */
static void t_multifd_channels_frozen(void **state)
{
	(void)state;
	side src, dst;
	char puri[120];
	proxy *px = running_pair_proxied(&src, &dst, SPEC, puri);
	proxy_freeze(px, 1);
	proxy_freeze(px, 2);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.multifd = true;
	p.multifd_channels = 2;
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	const char *want = "only 0 of 2 multifd channels connected within 10 s (command at offset 28)";
	assert_string_equal(wait_failed(dst.vm), want);
	char srcwant[200];
	snprintf(srcwant, sizeof(srcwant), "destination failed: %s", want);
	assert_string_equal(wait_failed(src.vm), srcwant);
	assert_true(ferry_vm_is_running(src.vm));
	proxy_stop(px);
	side_destroy(&dst);
	side_destroy(&src);
}

/* Without checksums (x-checksum off): a version 1 stream, nothing verified. */
static void t_checksum_off(void **state)
{
	(void)state;
	side src, dst;
	const char *uri = running_pair(&src, &dst, SPEC);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.checksum = false;
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	ferry_migration_info si, di;
	wait_both_final(&src, &dst, FERRY_MIGRATION_COMPLETED, &si, &di);
	assert_true(side_verify(&dst));
	assert_int_equal(di.verified_bytes, 0);
	side_destroy(&dst);
	side_destroy(&src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_flip_main),
		cmocka_unit_test(t_flip_multifd),
		cmocka_unit_test(t_flip_control),
		cmocka_unit_test(t_flip_before_run),
		cmocka_unit_test(t_flip_multifd_early),
		cmocka_unit_test(t_multifd_channels_frozen),
		cmocka_unit_test(t_checksum_off),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
