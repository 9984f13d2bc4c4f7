/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the synthetic guest's churn workload and free-page list,
 * and the oracle's handling of undefined pages:
 *  - determinism: twins (threads vs the oracle's in-thread execution, with
 *    and without the virtio area) agree on every allocated page;
 *  - the oracle skips free pages and the virtio area, and still catches a
 *    changed allocated page or free-list page;
 *  - the balloon driver in the background while the guest runs: only
 *    managed pages are ever hinted, and the guest still verifies;
 *  - a hand-made migration that skips hinted pages not written since the
 *    hint verifies bit-exact; skipping hinted pages that were reallocated
 *    and written afterwards does not (so the new-id-after-sync rule is what
 *    makes hints safe).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ferry.h"
#include "balloon-drv.h"
#include "guest.h"

#define PAGE 4096u
#define MiB (1ull << 20)

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static ferry_guest_t *churn_guest(uint64_t mem, unsigned vcpus, bool virtio, bool incoming)
{
	ferry_guest_config cfg;
	ferry_guest_config_init(&cfg);
	cfg.mem_size = mem;
	cfg.vram_size = 1 * MiB;
	cfg.vcpus = vcpus;
	cfg.workload = FERRY_WL_CHURN;
	cfg.virtio = virtio;
	cfg.seed = 5;
	ferry_guest_t *g = NULL;
	assert_int_equal(ferry_guest_create(&cfg, incoming, &g), 0);
	return g;
}

static uint64_t total_pages(const ferry_guest_t *g)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < ferry_guest_ram_count(g); i++) {
		uint64_t size;
		ferry_guest_ram(g, i, NULL, NULL, &size);
		n += size / PAGE;
	}
	return n;
}

static ferry_verify_result verify(const ferry_guest_t *g)
{
	ferry_verify_result res;
	assert_int_equal(ferry_guest_verify(g, &res), 0);
	return res;
}

static void assert_matches(const ferry_guest_t *g)
{
	ferry_verify_result res = verify(g);
	if (!res.matches)
		fail_msg("verify: first difference in %s page %llu (%llu differ)", res.block,
			 (unsigned long long)res.page, (unsigned long long)res.pages_differing);
	assert_int_equal(res.pages_compared + res.pages_excluded, total_pages(g));
	assert_int_equal(res.hash, res.twin_hash);
	assert_int_equal(res.hash, ferry_guest_hash(g));
}

static uint64_t *undefined(const ferry_guest_t *g, uint64_t *count)
{
	uint64_t size;
	ferry_guest_ram(g, 0, NULL, NULL, &size);
	uint64_t *bits = calloc((size / PAGE + 63) / 64, 8);
	*count = ferry_guest_undefined_pages(g, 0, bits);
	return bits;
}

static bool bit(const uint64_t *b, uint64_t p)
{
	return b[p / 64] >> (p % 64) & 1;
}

static void run_to(ferry_guest_t *g, uint64_t steps)
{
	uint64_t t[FERRY_GUEST_MAX_VCPUS];
	for (unsigned i = 0; i < ferry_guest_vcpus(g); i++)
		t[i] = steps;
	assert_int_equal(ferry_guest_run_until(g, t), 0);
}

static void determinism(bool virtio)
{
	ferry_guest_t *g = churn_guest(32 * MiB, 2, virtio, false);
	assert_int_equal(ferry_guest_start(g), 0);
	/* Until both vCPUs did over 1000 steps (10 s at most on a loaded host). */
	uint64_t steps[2] = { 0, 0 };
	for (int k = 0; k < 10000 && (steps[0] <= 1000 || steps[1] <= 1000); k++) {
		sleep_ms(1);
		ferry_guest_steps(g, steps);
	}
	assert_int_equal(ferry_guest_stop(g), 0);
	ferry_guest_steps(g, steps);
	assert_true(steps[0] > 1000 && steps[1] > 1000);
	ferry_verify_result res = verify(g);
	assert_true(res.matches);
	assert_true(res.pages_excluded > 0);
	assert_matches(g);
	/* A second guest run to the same steps by run_until: same RAM. */
	ferry_guest_t *h = churn_guest(32 * MiB, 2, virtio, false);
	assert_int_equal(ferry_guest_run_until(h, steps), 0);
	assert_int_equal(ferry_guest_hash(h), ferry_guest_hash(g));
	uint64_t n;
	uint64_t *u = undefined(g, &n);
	uint8_t *a, *b;
	uint64_t size;
	ferry_guest_ram(g, 0, NULL, &a, &size);
	ferry_guest_ram(h, 0, NULL, &b, NULL);
	uint64_t allocated_compared = 0;
	for (uint64_t p = 0; p < size / PAGE; p++) {
		if (bit(u, p))
			continue;
		if (memcmp(a + p * PAGE, b + p * PAGE, PAGE))
			fail_msg("page %llu differs between twins", (unsigned long long)p);
		allocated_compared++;
	}
	assert_true(allocated_compared > 0 && n > 0);
	print_message("    churn%s: %llu + %llu steps, %llu undefined pages\n",
		      virtio ? "+virtio" : "", (unsigned long long)steps[0],
		      (unsigned long long)steps[1], (unsigned long long)n);
	free(u);
	ferry_guest_destroy(h);
	ferry_guest_destroy(g);
}

static void test_determinism(void **state)
{
	(void)state;
	determinism(false);
}

static void test_determinism_virtio(void **state)
{
	(void)state;
	determinism(true);
}

/* Other workloads are untouched by the virtio area: only the layout moves. */
static void test_config(void **state)
{
	(void)state;
	ferry_guest_config c;
	char err[256];
	ferry_guest_config_init(&c);
	assert_false(c.virtio);
	c.workload = FERRY_WL_CHURN;
	c.mem_size = 7 * PAGE;
	c.vcpus = 4;
	assert_int_equal(ferry_guest_config_check(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "churn needs a working set of at least 2 pages per vcpu");
	c.mem_size = 8 * PAGE;
	c.vcpus = 4;
	assert_int_equal(ferry_guest_config_check(&c, err, sizeof(err)), 0);
	c.wss = PAGE;
	assert_int_equal(ferry_guest_config_check(&c, err, sizeof(err)), -EINVAL);
	c.wss = 0;
	c.virtio = true;
	assert_int_equal(ferry_guest_config_check(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "mem (8 pages) is too small for 4 vcpus and the virtio area "
				 "(64 pages)");
	c.workload = (ferry_workload)5;
	c.virtio = false;
	assert_int_equal(ferry_guest_config_check(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "unknown workload 5");
}

/* The oracle skips undefined pages, and only those. */
static void test_oracle_exclusion(void **state)
{
	(void)state;
	ferry_guest_t *g = churn_guest(8 * MiB, 2, true, false);
	run_to(g, 5000);
	assert_matches(g);
	uint64_t n;
	uint64_t *u = undefined(g, &n);
	uint8_t *host, *vhost;
	uint64_t size, vgpa, vsize;
	ferry_guest_ram(g, 0, NULL, &host, &size);
	ferry_guest_virtio_area(g, &vhost, &vgpa, &vsize);
	assert_int_equal(vgpa, size - FERRY_GUEST_VIRTIO_SIZE);
	assert_int_equal(vsize, FERRY_GUEST_VIRTIO_SIZE);
	/* Scribble over every free page and the virtio area: still verifies. */
	uint64_t free_pages = 0, alloc_page = UINT64_MAX;
	for (uint64_t p = 0; p < size / PAGE; p++) {
		if (bit(u, p)) {
			memset(host + p * PAGE, 0xee, PAGE);
			free_pages++;
		} else if (p > 100 && p < vgpa / PAGE && alloc_page == UINT64_MAX) {
			alloc_page = p;
		}
	}
	assert_int_equal(free_pages, n);
	assert_true(n > FERRY_GUEST_VIRTIO_SIZE / PAGE);
	ferry_verify_result res = verify(g);
	assert_true(res.matches);
	assert_int_equal(res.pages_excluded, n);
	/* One allocated (or untouched) page changed: found. */
	host[alloc_page * PAGE + 7] ^= 1;
	res = verify(g);
	assert_false(res.matches);
	assert_string_equal(res.block, "pc.ram");
	assert_int_equal(res.page, alloc_page);
	host[alloc_page * PAGE + 7] ^= 1;
	/* The free list itself (vCPU 0's first page) is compared. */
	host[40] ^= 1;
	res = verify(g);
	assert_false(res.matches);
	assert_int_equal(res.page, 0);
	host[40] ^= 1;
	assert_true(verify(g).matches);
	free(u);
	ferry_guest_destroy(g);
}

/* ------------------------------------------------------------------------ */
/* With the balloon driver                                                  */

struct bal {
	ferry_vm_t *vm;
	ferry_gpa_map_t *map;
	ferry_balloon_t *b;
	ferry_guest_balloon_t *d;
	ferry_ram_block_t *pc;
	uint64_t npages;
	uint64_t *hinted;
	uint64_t bad;  /* hints outside the managed pages */
	const uint64_t *managed;
};

static void on_hint(void *opaque, ferry_ram_block_t *rb, uint64_t first, uint64_t n)
{
	struct bal *x = opaque;
	for (uint64_t p = first; p < first + n; p++) {
		if (rb != x->pc || p >= x->npages || (x->managed && !bit(x->managed, p))) {
			x->bad++;
			continue;
		}
		x->hinted[p / 64] |= 1ull << (p % 64);
	}
}

static void on_kick(void *opaque)
{
	struct bal *x = opaque;
	ferry_balloon_hint_poll(x->b, on_hint, x);
}

static void bal_attach(struct bal *x, ferry_guest_t *g, bool background)
{
	memset(x, 0, sizeof(*x));
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	assert_int_equal(ferry_vm_create(&o, &x->vm), 0);
	assert_int_equal(ferry_guest_attach(g, x->vm), 0);
	ferry_gpa_region reg[2];
	assert_int_equal(ferry_guest_gpa_regions(g, reg, 2), 2);
	assert_int_equal(ferry_gpa_map_create(reg, 2, &x->map), 0);
	assert_int_equal(ferry_balloon_create(x->map, &x->b), 0);
	x->pc = reg[0].rb;
	x->npages = ferry_ram_block_size(x->pc) / PAGE;
	x->hinted = calloc((x->npages + 63) / 64, 8);
	ferry_guest_balloon_opts bo = { .kick = background ? NULL : on_kick, .opaque = x,
					.background = background };
	assert_int_equal(ferry_guest_balloon_create(g, x->b, &bo, &x->d), 0);
}

/* After ferry_guest_destroy(). */
static void bal_free(struct bal *x)
{
	ferry_guest_balloon_destroy(x->d);
	ferry_balloon_destroy(x->b);
	ferry_gpa_map_destroy(x->map);
	ferry_vm_destroy(x->vm);
	free(x->hinted);
}

static int mark_range(void *opaque, uint64_t gpa, uint64_t len)
{
	uint64_t *m = opaque;
	for (uint64_t p = gpa / PAGE; p < (gpa + len) / PAGE; p++)
		m[p / 64] |= 1ull << (p % 64);
	return 0;
}

static void test_background_driver(void **state)
{
	(void)state;
	ferry_guest_t *g = churn_guest(16 * MiB, 2, true, false);
	/* Fresh guest: every managed page is free, so its free runs are all of them. */
	uint64_t size;
	ferry_guest_ram(g, 0, NULL, NULL, &size);
	uint64_t *managed = calloc((size / PAGE + 63) / 64, 8);
	assert_true(ferry_guest_free_ranges(g, mark_range, managed) > 0);
	struct bal x;
	bal_attach(&x, g, true);
	x.managed = managed;
	assert_int_equal(ferry_guest_start(g), 0);
	unsigned complete = 0;
	for (int round = 0; round < 5; round++) {
		ferry_balloon_hint_start(x.b);
		for (int t = 0; t < 2000 && !ferry_balloon_hint_complete(x.b); t++) {
			assert_true(ferry_balloon_hint_poll(x.b, on_hint, &x) >= 0);
			sleep_ms(1);
		}
		assert_true(ferry_balloon_hint_poll(x.b, on_hint, &x) >= 0);
		complete += ferry_balloon_hint_complete(x.b);
	}
	assert_int_equal(ferry_guest_stop(g), 0);
	assert_int_equal(complete, 5);
	assert_int_equal(x.bad, 0);
	ferry_balloon_stats s;
	ferry_balloon_get_stats(x.b, &s);
	assert_true(s.pages_hinted > 0);
	assert_int_equal(s.reports, 5);
	assert_false(ferry_vq_is_broken(ferry_balloon_free_page_vq(x.b)));
	/* The driver's ring writes are in the virtio area: still verifies. */
	assert_matches(g);
	/* Stopped: the driver does not run (nothing answers a new id). */
	ferry_balloon_hint_start(x.b);
	sleep_ms(20);
	assert_int_equal(ferry_balloon_hint_poll(x.b, on_hint, &x), 0);
	ferry_guest_destroy(g);
	bal_free(&x);
	free(managed);
}

/*
 * A hand-made precopy with hints: at the "dirty sync" the host snapshots
 * RAM and starts a new id; the guest reports; the guest runs on (and
 * reuses some hinted pages); at switchover every page is sent except
 * hinted pages not written since the sync (dirty tracking, emulated by
 * comparing with the snapshot).
 */
static void test_migrate_with_hints(void **state)
{
	(void)state;
	ferry_guest_t *src = churn_guest(16 * MiB, 2, true, false);
	struct bal x;
	bal_attach(&x, src, false);
	run_to(src, 20000);
	uint8_t *host;
	uint64_t size;
	ferry_guest_ram(src, 0, NULL, &host, &size);
	uint8_t *snap = malloc(size);
	memcpy(snap, host, size); /* the sync */
	ferry_balloon_hint_start(x.b);
	assert_true(ferry_guest_balloon_service(x.d) > 0);
	assert_true(ferry_balloon_hint_poll(x.b, on_hint, &x) >= 0);
	assert_true(ferry_balloon_hint_complete(x.b));
	run_to(src, 40000); /* the guest runs on */

	uint64_t skipped = 0, reused = 0;
	for (int pass = 0; pass < 2; pass++) {
		/* pass 0: skip hinted and clean pages; pass 1: skip every hinted page. */
		ferry_guest_t *dst = churn_guest(16 * MiB, 2, true, true);
		for (unsigned b = 0; b < ferry_guest_ram_count(src); b++) {
			uint8_t *s, *d;
			uint64_t sz;
			ferry_guest_ram(src, b, NULL, &s, &sz);
			ferry_guest_ram(dst, b, NULL, &d, NULL);
			for (uint64_t p = 0; p < sz / PAGE; p++) {
				if (b == 0 && bit(x.hinted, p)) {
					bool dirty = memcmp(host + p * PAGE, snap + p * PAGE, PAGE);
					if (pass == 0)
						reused += dirty;
					if (pass == 1 || !dirty) {
						skipped += pass == 0;
						continue;
					}
				}
				memcpy(d + p * PAGE, s + p * PAGE, PAGE);
			}
		}
		for (unsigned i = 0; i < ferry_guest_vcpus(src); i++) {
			uint8_t buf[1024];
			char err[256];
			int64_t n = ferry_vmsd_encode(ferry_guest_vcpu_vmsd(),
						      ferry_guest_vcpu_opaque(src, i), buf, sizeof(buf));
			assert_true(n > 0);
			assert_int_equal(ferry_vmsd_decode(ferry_guest_vcpu_vmsd(),
							   ferry_guest_vcpu_opaque(dst, i), 1, buf,
							   (size_t)n, err, sizeof(err)), 0);
		}
		ferry_verify_result res = verify(dst);
		if (pass == 0) {
			if (!res.matches)
				fail_msg("migrated with hints: %s page %llu differs (%llu)", res.block,
					 (unsigned long long)res.page,
					 (unsigned long long)res.pages_differing);
			/* And it keeps running correctly on the destination. */
			run_to(dst, 60000);
			assert_matches(dst);
		} else {
			/* Hinted pages written since the sync must be sent. */
			assert_true(reused > 0);
			assert_false(res.matches);
		}
		ferry_guest_destroy(dst);
	}
	assert_true(skipped > 100);
	print_message("    %llu hinted pages not sent, %llu reused since the hint\n",
		      (unsigned long long)skipped, (unsigned long long)reused);
	free(snap);
	ferry_guest_destroy(src);
	bal_free(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_determinism_virtio),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_oracle_exclusion),
		cmocka_unit_test(test_background_driver),
		cmocka_unit_test(test_migrate_with_hints),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
