/* SPDX-License-Identifier: MIT */
/*
 * Free page hints in real migrations: a churn guest (pages allocated,
 * written, freed over and over) with a virtio-balloon whose driver reports
 * the guest's free pages; pages reported free for the current command id
 * are not sent. Every allocated page must match the never-migrated twin
 * bit for bit (free pages are excluded: their contents are undefined), in
 * precopy and in postcopy, with WP and explicit dirty tracking. A page
 * freed, hinted, then allocated and written again must be sent: the churn
 * workload does exactly that all the time while the migration runs.
 * Also: a guest that never answers (no driver) costs at most the bounded
 * wait per pass, hints can be switched off, a provider of the embedder's
 * own is called as ferry/hint.h says, and a guest migrated on from its
 * destination answers there too (A -> B -> C).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "balloon-drv.h"
#include "harness.h"

#define MiB (1ull << 20)

typedef struct bside {
	side s;
	ferry_gpa_map_t *map;
	ferry_balloon_t *b;
	ferry_guest_balloon_t *d;
} bside;

/*
 * A side with a balloon device (both sides: its state and its queue's are
 * device state) and, if driver, the guest's driver (an incoming side's
 * attaches in its first round, once the guest runs there).
 */
static void bside_create(bside *x, const char *spec, ferry_dirty_mode mode, bool incoming, bool driver)
{
	memset(x, 0, sizeof(*x));
	side_create(&x->s, spec, mode, incoming);
	ferry_gpa_region reg[4];
	int n = ferry_guest_gpa_regions(x->s.g, reg, 4);
	assert_true(n > 0);
	assert_int_equal(ferry_gpa_map_create(reg, (unsigned)n, &x->map), 0);
	assert_int_equal(ferry_balloon_create(x->map, &x->b), 0);
	assert_int_equal(ferry_device_register(x->s.vm, "virtio-balloon", 0, ferry_balloon_vmsd(), x->b),
			 0);
	assert_int_equal(ferry_device_register(x->s.vm, "virtio-balloon-fpq", 0, ferry_vq_vmsd(),
					       ferry_balloon_free_page_vq(x->b)),
			 0);
	assert_int_equal(ferry_vm_set_hint_ops(x->s.vm, ferry_balloon_hint_ops(), x->b), 0);
	if (driver) {
		ferry_guest_balloon_opts bo = { .background = true, .deferred = incoming };
		assert_int_equal(ferry_guest_balloon_create(x->s.g, x->b, &bo, &x->d), 0);
	}
}

static void bside_destroy(bside *x)
{
	side_destroy(&x->s); /* the guest first: its activity thread uses the driver */
	if (x->d)
		ferry_guest_balloon_destroy(x->d);
	ferry_balloon_destroy(x->b);
	ferry_gpa_map_destroy(x->map);
}

/*
 * A provider of the embedder's own (ferry/hint.h), here one that passes the
 * balloon's hints on and checks the order of the migration's calls; or,
 * with start_err, one whose start fails.
 */
typedef struct rec_provider {
	ferry_balloon_t *b;
	int start_err;
	bool in_round;
	unsigned starts, stops, dones, polls, hints;
	unsigned hints_outside; /* ranges reported outside start..stop */
	unsigned after_done;    /* calls after done */
	ferry_hint_fn fn;       /* the migration's, during a poll */
	void *fn_opaque;
} rec_provider;

static const ferry_hint_ops *bops(rec_provider *r)
{
	if (r->dones)
		r->after_done++;
	return ferry_balloon_hint_ops();
}

static int rec_start(void *o)
{
	rec_provider *r = o;
	const ferry_hint_ops *ops = bops(r);
	if (r->start_err)
		return r->start_err;
	r->starts++;
	r->in_round = true;
	return ops->start(r->b);
}

static void rec_hint(void *o, ferry_ram_block_t *rb, uint64_t first, uint64_t n)
{
	rec_provider *r = o;
	r->hints++;
	r->hints_outside += !r->in_round;
	r->fn(r->fn_opaque, rb, first, n);
}

static int rec_poll(void *o, ferry_hint_fn fn, void *fn_opaque)
{
	rec_provider *r = o;
	r->polls++;
	r->fn = fn;
	r->fn_opaque = fn_opaque;
	return bops(r)->poll(r->b, rec_hint, r);
}

static bool rec_complete(void *o)
{
	rec_provider *r = o;
	return bops(r)->complete(r->b);
}

static void rec_stop(void *o)
{
	rec_provider *r = o;
	r->stops++;
	r->in_round = false;
	bops(r)->stop(r->b);
}

static void rec_done(void *o)
{
	rec_provider *r = o;
	bops(r)->done(r->b);
	r->dones++;
}

static const ferry_hint_ops rec_ops = {
	.start = rec_start,
	.poll = rec_poll,
	.complete = rec_complete,
	.stop = rec_stop,
	.done = rec_done,
};

/*
 * rec: the source's provider instead of its balloon (NULL: the balloon).
 * raise_after: passes without a switchover before the downtime limit is raised.
 */
static void hint_migrate_x(const char *spec, ferry_dirty_mode mode, ferry_migration_params *p, bool driver,
			   bool hostile, rec_provider *rec, uint32_t raise_after, ferry_migration_info *out)
{
	bside src, dst;
	bside_create(&src, spec, mode, false, driver);
	if (rec) {
		rec->b = src.b;
		assert_int_equal(ferry_vm_set_hint_ops(src.s.vm, &rec_ops, rec), 0);
	}
	if (hostile) {
		/* A driver that sets the queue up but does not serve it; then the guest
		 * scribbles over its rings: the device must break the queue, nothing else. */
		ferry_guest_balloon_opts bo = { .background = false };
		assert_int_equal(ferry_guest_balloon_create(src.s.g, src.b, &bo, &src.d), 0);
		uint8_t *host;
		uint64_t gpa, size;
		ferry_guest_virtio_area(src.s.g, &host, &gpa, &size);
		memset(host, 0xff, size);
	}
	bside_create(&dst, spec, mode, true, false);
	if (p->postcopy) {
		ferry_migration_params ip;
		ferry_migration_params_init(&ip);
		ip.postcopy = true;
		assert_int_equal(ferry_migration_set_incoming_params(dst.s.vm, &ip), 0);
	}
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.s.vm, uri), 0);
	assert_int_equal(ferry_vm_start(src.s.vm), 0);
	side_wait_steps(&src.s, 1024);
	assert_int_equal(ferry_migration_start(src.s.vm, uri, p), 0);
	if (rec) /* registration waits until the migration is over */
		assert_int_equal(ferry_vm_set_hint_ops(src.s.vm, NULL, NULL), -EBUSY);
	/* Postcopy cases end by switching; the others must not hang on a slow host. */
	if (p->postcopy)
		assert_int_equal(wait_final(src.s.vm), FERRY_MIGRATION_COMPLETED);
	else
		assert_int_equal(wait_src_converge(src.s.vm, p, raise_after), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.s.vm), FERRY_MIGRATION_COMPLETED);
	ferry_migration_info si;
	ferry_migration_query(src.s.vm, &si);
	fprintf(stderr, "hints: %llu commands, %llu pages skipped, waited %llu ms; %llu normal, %llu zero, %llu bytes, passes %u%s\n",
		(unsigned long long)si.hint_cmds, (unsigned long long)si.hint_skipped,
		(unsigned long long)si.hint_wait_ms, (unsigned long long)si.normal,
		(unsigned long long)si.duplicate, (unsigned long long)si.transferred, si.pass,
		si.postcopy ? ", postcopy" : "");
	/*
	 * Checksums stay on with hints: every page the destination took was
	 * verified, and none failed (a hinted page's torn copy goes as FREE,
	 * not judged).
	 */
	ferry_migration_info di;
	ferry_migration_query(dst.s.vm, &di);
	fprintf(stderr, "hints: destination verified %llu bytes, %llu mismatches\n",
		(unsigned long long)di.verified_bytes, (unsigned long long)di.checksum_mismatches);
	if (p->checksum) {
		assert_true(di.verified_bytes * 4 >= si.normal * 4096 * 3); /* torn copies, sent again, do not count */
		assert_int_equal(di.checksum_mismatches, 0);
	}
	assert_true(side_run_and_verify(&dst.s, 2000));
	*out = si;
	bside_destroy(&src);
	bside_destroy(&dst);
}

static void hint_migrate(const char *spec, ferry_dirty_mode mode, ferry_migration_params *p, bool driver,
			 ferry_migration_info *out)
{
	hint_migrate_x(spec, mode, p, driver, false, NULL, 5, out);
}

/* 256 MiB, 10% of the churn pages allocated at first, churning at 50 MB/s per vCPU. */
#define SPEC "mem=256M,vram=4M,vcpus=2,workload=churn,alloc=10,rate=50M,balloon"

static void t_hints_precopy(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	ferry_migration_params_init(&p);
	p.downtime_limit_ms = 50;
	/*
	 * The first pass scans only once the guest's report is complete (the
	 * wait ends then, at once on a quiet host): a guest whose driver is
	 * starved on a loaded host would otherwise report pages after the
	 * pass went past them. The bounded wait has its own test (silent guest).
	 */
	p.hint_wait_ms = 10000;
	/*
	 * Without hints the first pass alone sends every page (66k); with them,
	 * the allocated ones (~10k over passes 1-2 on a quiet host). Each pass
	 * after that resends what the guest dirtied, and a loaded host needs
	 * more of them, so the limit is raised after pass 2: at most ~2 more.
	 */
	hint_migrate_x(SPEC, FERRY_DIRTY_WP_ASYNC, &p, true, false, NULL, 2, &i);
	assert_true(i.hint_cmds >= 1);
	/* Most of the 90% free pages were not sent. */
	assert_true(i.hint_skipped > (200 * MiB) / 4096);
	assert_true(i.normal < (100 * MiB) / 4096);
}

static void t_hints_explicit(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	ferry_migration_params_init(&p);
	p.downtime_limit_ms = 50;
	hint_migrate(SPEC, FERRY_DIRTY_EXPLICIT, &p, true, &i);
	assert_true(i.hint_skipped > (200 * MiB) / 4096);
}

/* Several passes, then postcopy: a new command id for each pass. */
static void t_hints_multipass(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	ferry_migration_params_init(&p);
	p.downtime_limit_ms = 0; /* a churning guest never gets there */
	p.max_passes = 0;
	p.postcopy = true;               /* ends the otherwise endless precopy */
	p.postcopy_after_passes = 4;
	hint_migrate(SPEC, FERRY_DIRTY_WP_ASYNC, &p, true, &i);
	assert_true(i.postcopy);
	/* One command per precopy pass. */
	assert_int_equal(i.hint_cmds, 4);
}

/* Postcopy with preempt straight after the first (hinted) pass. */
static void t_hints_postcopy(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	ferry_migration_params_init(&p);
	p.postcopy = true;
	p.postcopy_preempt = true;
	p.postcopy_after_passes = 1;
	p.downtime_limit_ms = 1;
	hint_migrate(SPEC, FERRY_DIRTY_WP_ASYNC, &p, true, &i);
	assert_true(i.postcopy);
	assert_true(i.hint_skipped > (200 * MiB) / 4096);
	/* Unlike QEMU: the free pages went as zero pages in the background. */
	assert_true(i.duplicate > (150 * MiB) / 4096);
}

/* A guest that never answers: the bounded wait, then everything is sent. */
static void t_hints_silent_guest(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	ferry_migration_params_init(&p);
	p.hint_wait_ms = 30;
	p.downtime_limit_ms = 50;
	hint_migrate(SPEC, FERRY_DIRTY_WP_ASYNC, &p, false, &i);
	assert_int_equal(i.hint_skipped, 0);
	assert_true(i.hint_cmds >= 1);
	/* Each command waited about 30 ms, never much longer. */
	assert_true(i.hint_wait_ms >= 30 * i.hint_cmds - 1);
	assert_true(i.hint_wait_ms <= 30 * i.hint_cmds + 50 * i.hint_cmds);
	assert_true(i.normal > (200 * MiB) / 4096);
}

/*
 * A hostile guest: rings full of garbage. The queue breaks at the first
 * poll, hints stop, the migration goes on and is exact (the virtio area is
 * outside the oracle's comparison; everything else is compared).
 */
static void t_hints_hostile_guest(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	ferry_migration_params_init(&p);
	p.downtime_limit_ms = 50;
	hint_migrate_x(SPEC, FERRY_DIRTY_WP_ASYNC, &p, false, true, NULL, 5, &i);
	assert_int_equal(i.hint_skipped, 0);
	assert_int_equal(i.hint_cmds, 1); /* the first one saw the broken queue; no more */
	assert_true(i.normal > (200 * MiB) / 4096);
}

/* x-free-page-hints off: no command, every page sent. */
static void t_hints_off(void **s)
{
	(void)s;
	ferry_migration_params p;
	ferry_migration_info i;
	ferry_migration_params_init(&p);
	p.free_page_hints = false;
	p.downtime_limit_ms = 50;
	hint_migrate(SPEC, FERRY_DIRTY_WP_ASYNC, &p, true, &i);
	assert_int_equal(i.hint_cmds, 0);
	assert_int_equal(i.hint_skipped, 0);
	assert_true(i.normal > (200 * MiB) / 4096);
}

/*
 * The embedder's provider: the migration calls it as ferry/hint.h says
 * (each round stopped, done once and last; the balloon reports nothing
 * outside a round) and skips what it reports.
 */
/* A precopy of SPEC (the guest's driver answering) with rec as the source's provider. */
static void provider_migrate(rec_provider *rec, ferry_migration_info *i)
{
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.downtime_limit_ms = 50;
	p.hint_wait_ms = 10000; /* the first pass waits for the whole report: see t_hints_precopy */
	hint_migrate_x(SPEC, FERRY_DIRTY_WP_ASYNC, &p, true, false, rec, 5, i);
}

static void t_hints_provider(void **s)
{
	(void)s;
	ferry_migration_info i;
	rec_provider rec = { 0 };
	provider_migrate(&rec, &i);
	assert_true(i.hint_cmds >= 1);
	assert_int_equal(rec.starts, i.hint_cmds);
	assert_true(rec.polls >= rec.starts);
	assert_true(rec.hints > 0);
	assert_int_equal(rec.hints_outside, 0);
	assert_true(rec.stops > rec.starts); /* each round, and at the end */
	assert_int_equal(rec.dones, 1);
	assert_int_equal(rec.after_done, 0);
	assert_true(i.hint_skipped > (200 * MiB) / 4096);
}

/* A provider whose start fails: no hints, every page sent, still stopped and done. */
static void t_hints_provider_fails(void **s)
{
	(void)s;
	ferry_migration_info i;
	rec_provider rec = { .start_err = -EIO };
	provider_migrate(&rec, &i);
	assert_int_equal(i.hint_cmds, 0);
	assert_int_equal(i.hint_skipped, 0);
	assert_int_equal(rec.polls, 0);
	assert_int_equal(rec.dones, 1);
	assert_true(i.normal > (200 * MiB) / 4096);
}

/* Registration: the required ops, and NULL to detach. */
static void t_hints_set_ops(void **s)
{
	(void)s;
	ferry_vm_t *vm;
	assert_int_equal(ferry_vm_create(NULL, &vm), 0);
	ferry_hint_ops ops = rec_ops;
	assert_int_equal(ferry_vm_set_hint_ops(NULL, &ops, NULL), -EINVAL);
	ops.poll = NULL;
	assert_int_equal(ferry_vm_set_hint_ops(vm, &ops, NULL), -EINVAL);
	ops = rec_ops;
	ops.done = NULL; /* optional, like error */
	assert_int_equal(ferry_vm_set_hint_ops(vm, &ops, NULL), 0);
	assert_int_equal(ferry_vm_set_hint_ops(vm, NULL, NULL), 0);
	ferry_vm_destroy(vm);
}

/* Migrates a (running) to b (incoming) with hints; returns a's stats. */
static void hop(bside *a, bside *b, ferry_migration_info *out)
{
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.downtime_limit_ms = 50;
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(b->s.vm, uri), 0);
	assert_int_equal(ferry_migration_start(a->s.vm, uri, &p), 0);
	assert_int_equal(wait_src_converge(a->s.vm, &p, 5), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(b->s.vm), FERRY_MIGRATION_COMPLETED);
	ferry_migration_query(a->s.vm, out);
	fprintf(stderr, "hop: %llu commands, %llu pages skipped, %llu normal, passes %u\n",
		(unsigned long long)out->hint_cmds, (unsigned long long)out->hint_skipped,
		(unsigned long long)out->normal, out->pass);
}

/*
 * A -> B -> C. B's driver attaches to the rings that came with the guest's
 * RAM once the guest runs on B, and answers B's hints: the second hop
 * skips free pages too (without a driver on B it would skip none). Command ids go on from A's (the balloon's state
 * migrated), so nothing A asked for passes for B's report. C matches the
 * twin.
 */
static void t_hints_chain(void **s)
{
	(void)s;
	bside a, b, c;
	ferry_migration_info i1, i2;
	bside_create(&a, SPEC, FERRY_DIRTY_WP_ASYNC, false, true);
	bside_create(&b, SPEC, FERRY_DIRTY_WP_ASYNC, true, true);
	assert_int_equal(ferry_vm_start(a.s.vm), 0);
	side_wait_steps(&a.s, 1024);
	hop(&a, &b, &i1);
	ferry_guest_balloon_stats ga;
	ferry_guest_balloon_get_stats(a.d, &ga);
	bside_destroy(&a);
	side_wait_steps(&b.s, 1024); /* the guest runs on B */
	bside_create(&c, SPEC, FERRY_DIRTY_WP_ASYNC, true, false);
	hop(&b, &c, &i2);
	ferry_guest_balloon_stats gb;
	ferry_guest_balloon_get_stats(b.d, &gb);
	assert_true(i1.hint_skipped > (150 * MiB) / 4096);
	/* On B free pages that never held data are holes, not sent anyway: the
	 * hints skip what the churn freed there after it wrote it. */
	assert_true(i2.hint_skipped > 0);
	assert_true(gb.reports > 0);
	assert_int_equal(gb.last_id, ga.last_id + (uint32_t)i2.hint_cmds);
	assert_true(side_run_and_verify(&c.s, 2000));
	bside_destroy(&b);
	bside_destroy(&c);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (getenv("FERRY_TEST_FILTER")) /* e.g. t_hints_precopy, or t_hints_* */
		cmocka_set_test_filter(getenv("FERRY_TEST_FILTER"));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_hints_precopy),
		cmocka_unit_test(t_hints_explicit),
		cmocka_unit_test(t_hints_multipass),
		cmocka_unit_test(t_hints_postcopy),
		cmocka_unit_test(t_hints_silent_guest),
		cmocka_unit_test(t_hints_hostile_guest),
		cmocka_unit_test(t_hints_off),
		cmocka_unit_test(t_hints_provider),
		cmocka_unit_test(t_hints_provider_fails),
		cmocka_unit_test(t_hints_set_ops),
		cmocka_unit_test(t_hints_chain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
