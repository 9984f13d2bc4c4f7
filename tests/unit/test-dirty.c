/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of dirty-page tracking (src/lib/dirty): WP_ASYNC harvests on an
 * anonymous private mapping and on a memfd MAP_SHARED mapping must report
 * exactly the pages written (exact bitmap and count), explicit mode must
 * drain its log, and the populated scan must find exactly the touched pages.
 *
 * The WP_ASYNC tests skip only when the kernel probe says unsupported
 * (needs Linux 6.7+: UFFD_FEATURE_WP_ASYNC and PAGEMAP_SCAN). On a 6.7+
 * kernel an unsupported probe is a failure, not a skip: a broken probe
 * must not hide every WP test.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmocka.h>

#include "dirty/dirty.h"
#include "util/bitmap.h"

#define PS ((uint64_t)FERRY_PAGE_SIZE)
#define MIB (1024 * 1024ULL)

enum mem_kind { MEM_ANON, MEM_MEMFD };
static enum mem_kind kind_anon = MEM_ANON, kind_memfd = MEM_MEMFD;

typedef struct fixture {
	enum mem_kind kind;
	uint8_t *host;
	uint64_t size, npages;
	int fd; /* memfd, or -1 */
	ferry_dirty_tracker t;
	bool tracker_open, tracking;
	unsigned long *got, *want;
} fixture;

static fixture *fixture_new(enum mem_kind kind, uint64_t size)
{
	fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->kind = kind;
	f->size = size;
	f->npages = size / PS;
	f->fd = -1;
	if (kind == MEM_MEMFD) {
		f->fd = memfd_create("test-dirty", MFD_CLOEXEC);
		assert_true(f->fd >= 0);
		assert_int_equal(ftruncate(f->fd, (off_t)size), 0);
		f->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
	} else {
		f->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
	}
	assert_true(f->host != MAP_FAILED);
	/*
	 * One touched page must populate one page, not a 2 MiB THP, for the
	 * populated-scan assertions to be exact.
	 */
	if (kind == MEM_ANON)
		(void)madvise(f->host, size, MADV_NOHUGEPAGE);
	f->got = ferry__bitmap_new(f->npages);
	f->want = ferry__bitmap_new(f->npages);
	assert_non_null(f->got);
	assert_non_null(f->want);
	return f;
}

static void fixture_free(fixture *f)
{
	if (!f)
		return;
	if (f->tracking)
		ferry__dirty_track_stop(&f->t, f->host, f->size);
	if (f->tracker_open)
		ferry__dirty_tracker_fini(&f->t);
	munmap(f->host, f->size);
	if (f->fd >= 0)
		close(f->fd);
	free(f->got);
	free(f->want);
	free(f);
}

/* Opens a WP_ASYNC tracker and starts tracking the whole mapping. */
static void wp_start(fixture *f)
{
	assert_int_equal(ferry__dirty_tracker_init(&f->t, FERRY_DIRTY_WP_ASYNC), 0);
	f->tracker_open = true;
	assert_int_equal(f->t.mode, FERRY_DIRTY_WP_ASYNC);
	assert_true(f->t.uffd >= 0);
	assert_true(f->t.pagemap_fd >= 0);
	assert_int_equal(ferry__dirty_track_start(&f->t, f->host, f->size), 0);
	f->tracking = true;
}

static void write_page(fixture *f, uint64_t page, uint8_t v)
{
	/* Vary the offset inside the page: any byte must count. */
	((volatile uint8_t *)f->host)[page * PS + (page * 61) % PS] = v;
}

static uint64_t harvest(fixture *f)
{
	uint64_t newly = UINT64_MAX;
	assert_int_equal(ferry__dirty_harvest(&f->t, f->host, f->size, NULL, f->got, &newly), 0);
	return newly;
}

static void assert_bitmaps_equal(const unsigned long *got, const unsigned long *want,
				 uint64_t nbits)
{
	for (uint64_t i = 0; i < nbits; i++) {
		if (ferry__bitmap_test(got, i) != ferry__bitmap_test(want, i)) {
			print_error("bitmaps differ first at page %llu: got %d want %d\n",
				    (unsigned long long)i, ferry__bitmap_test(got, i),
				    ferry__bitmap_test(want, i));
			fail();
		}
	}
}

/*
 * The reference pattern: every 7th page, a run of 1000 contiguous pages,
 * and the last page. Writes it and records it in f->want.
 */
static uint64_t write_pattern(fixture *f)
{
	for (uint64_t p = 0; p < f->npages; p += 7)
		ferry__bitmap_set(f->want, p);
	ferry__bitmap_set_range(f->want, 5000, 1000);
	ferry__bitmap_set(f->want, f->npages - 1);
	for (uint64_t p = 0; p < f->npages; p++)
		if (ferry__bitmap_test(f->want, p))
			write_page(f, p, (uint8_t)(p | 1));
	return ferry__bitmap_count(f->want, f->npages);
}

static bool kernel_has_wp_async(void)
{
	struct utsname u;
	unsigned maj = 0, min = 0;
	if (uname(&u) || sscanf(u.release, "%u.%u", &maj, &min) != 2)
		return false;
	return maj > 6 || (maj == 6 && min >= 7);
}

#define SKIP_WITHOUT_WP()                                              \
	do {                                                           \
		if (!ferry__dirty_wp_async_supported()) {              \
			if (kernel_has_wp_async())                     \
				fail_msg("WP_ASYNC probe failed on a 6.7+ kernel"); \
			skip();                                        \
		}                                                      \
	} while (0)

static int setup(void **state)
{
	enum mem_kind kind = *(enum mem_kind *)*state;
	*state = fixture_new(kind, 64 * MIB);
	return 0;
}

/* For the vector-overflow test: 20480 single-page regions need 160 MiB. */
static int setup_big(void **state)
{
	enum mem_kind kind = *(enum mem_kind *)*state;
	*state = fixture_new(kind, 160 * MIB);
	return 0;
}

static int teardown(void **state)
{
	fixture_free(*state);
	return 0;
}

/* (a) Right after track_start nothing is dirty, populated pages included. */
static void test_wp_clean_after_start(void **state)
{
	SKIP_WITHOUT_WP();
	fixture *f = *state;
	/* Pages written before tracking starts are protected by track_start. */
	for (uint64_t p = 0; p < f->npages; p += 3)
		write_page(f, p, 0xaa);
	wp_start(f);
	assert_int_equal(harvest(f), 0);
	assert_int_equal(ferry__bitmap_count(f->got, f->npages), 0);
}

/* (b) Exactly the pages written are reported, with an exact count. */
static void test_wp_pattern(void **state)
{
	SKIP_WITHOUT_WP();
	fixture *f = *state;
	wp_start(f);
	uint64_t n = write_pattern(f);
	assert_int_equal(harvest(f), n);
	assert_bitmaps_equal(f->got, f->want, f->npages);
	assert_int_equal(ferry__bitmap_count(f->got, f->npages), n);
}

/* (c) A harvest re-arms: a second one without writes reports nothing. */
static void test_wp_second_harvest_clean(void **state)
{
	SKIP_WITHOUT_WP();
	fixture *f = *state;
	wp_start(f);
	uint64_t n = write_pattern(f);
	assert_int_equal(harvest(f), n);
	ferry__bitmap_zero(f->got, f->npages);
	assert_int_equal(harvest(f), 0);
	assert_int_equal(ferry__bitmap_count(f->got, f->npages), 0);
}

/*
 * (d) Writes after a harvest are seen by the next one, including rewrites of
 * pages already reported; *newly counts only bits not already set.
 */
static void test_wp_writes_after_harvest(void **state)
{
	SKIP_WITHOUT_WP();
	fixture *f = *state;
	wp_start(f);
	uint64_t n = write_pattern(f);
	assert_int_equal(harvest(f), n);

	/*
	 * Second round, bitmap kept: 1, 2, 6000, 6001 are new; 7, 14 and 5999
	 * (multiples of 7) were already set. The result must be exactly the
	 * union, and *newly only the 4 new pages.
	 */
	const uint64_t pages[] = {1, 2, 7, 14, 5999, 6000, 6001};
	uint64_t expect_new = 0;
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		write_page(f, pages[i], 0x55);
		expect_new += !ferry__bitmap_test(f->want, pages[i]);
		ferry__bitmap_set(f->want, pages[i]);
	}
	assert_int_equal(expect_new, 4);
	assert_int_equal(harvest(f), expect_new);
	assert_bitmaps_equal(f->got, f->want, f->npages);

	/* Third round into a cleared bitmap: exactly the one page rewritten. */
	ferry__bitmap_zero(f->got, f->npages);
	write_page(f, 1, 0x66);
	ferry__bitmap_zero(f->want, f->npages);
	ferry__bitmap_set(f->want, 1);
	assert_int_equal(harvest(f), 1);
	assert_bitmaps_equal(f->got, f->want, f->npages);
}

/*
 * (e) More separate regions than the kernel's output vector holds (20480
 * single pages vs 4096 entries): all are reported. Catches a harvest that
 * trusts walk_end after a full vector.
 */
static void test_wp_vector_overflow(void **state)
{
	SKIP_WITHOUT_WP();
	fixture *f = *state;
	wp_start(f);
	for (uint64_t p = 0; p < f->npages; p += 2) {
		write_page(f, p, 0x77);
		ferry__bitmap_set(f->want, p);
	}
	uint64_t n = ferry__bitmap_count(f->want, f->npages);
	assert_int_equal(n, 20480);
	assert_int_equal(harvest(f), n);
	assert_bitmaps_equal(f->got, f->want, f->npages);

	/* And the walk re-protected them all. */
	ferry__bitmap_zero(f->got, f->npages);
	assert_int_equal(harvest(f), 0);

	/* Odd pages now, plus the last (odd) page: again 20480 regions. */
	ferry__bitmap_zero(f->want, f->npages);
	for (uint64_t p = 1; p < f->npages; p += 2) {
		write_page(f, p, 0x78);
		ferry__bitmap_set(f->want, p);
	}
	assert_int_equal(harvest(f), 20480);
	assert_bitmaps_equal(f->got, f->want, f->npages);
}

/*
 * (e2) A peek counts what a harvest would find, more regions than the
 * output vector holds too, and takes nothing: the harvest after it finds
 * the same pages, and a peek after the harvest finds none.
 */
static void test_wp_peek(void **state)
{
	SKIP_WITHOUT_WP();
	fixture *f = *state;
	wp_start(f);
	uint64_t n = UINT64_MAX;
	assert_int_equal(ferry__dirty_peek(&f->t, f->host, f->size, NULL, &n), 0);
	assert_int_equal(n, 0);
	for (uint64_t p = 0; p < f->npages; p += 2) {
		write_page(f, p, 0x79);
		ferry__bitmap_set(f->want, p);
	}
	assert_int_equal(ferry__dirty_peek(&f->t, f->host, f->size, NULL, &n), 0);
	assert_int_equal(n, 20480);
	assert_int_equal(ferry__dirty_peek(&f->t, f->host, f->size, NULL, &n), 0);
	assert_int_equal(n, 20480);
	assert_int_equal(harvest(f), 20480);
	assert_bitmaps_equal(f->got, f->want, f->npages);
	assert_int_equal(ferry__dirty_peek(&f->t, f->host, f->size, NULL, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(ferry__dirty_peek(&f->t, f->host + 1, f->size, NULL, &n), -EINVAL);
}

/* (f) Explicit mode drains the atomic log. */
static void test_explicit(void **state)
{
	fixture *f = *state;
	assert_int_equal(ferry__dirty_tracker_init(&f->t, FERRY_DIRTY_EXPLICIT), 0);
	f->tracker_open = true;
	assert_int_equal(f->t.mode, FERRY_DIRTY_EXPLICIT);
	assert_int_equal(f->t.uffd, -1);
	assert_int_equal(ferry__dirty_track_start(&f->t, f->host, f->size), 0);
	f->tracking = true;

	_Atomic unsigned long *log = (_Atomic unsigned long *)ferry__bitmap_new(f->npages);
	assert_non_null(log);
	uint64_t newly = UINT64_MAX;
	assert_int_equal(ferry__dirty_harvest(&f->t, f->host, f->size, log, f->got, &newly), 0);
	assert_int_equal(newly, 0);

	ferry__bitmap_set_range_atomic(log, 3, 1);
	ferry__bitmap_set_range_atomic(log, 60, 200); /* crosses words */
	ferry__bitmap_set_range_atomic(log, f->npages - 1, 1);
	ferry__bitmap_set(f->want, 3);
	ferry__bitmap_set_range(f->want, 60, 200);
	ferry__bitmap_set(f->want, f->npages - 1);
	uint64_t peeked = 0;
	assert_int_equal(ferry__dirty_peek(&f->t, f->host, f->size, log, &peeked), 0);
	assert_int_equal(peeked, 202);
	assert_int_equal(ferry__dirty_harvest(&f->t, f->host, f->size, log, f->got, &newly), 0);
	assert_int_equal(newly, 202);
	assert_bitmaps_equal(f->got, f->want, f->npages);
	assert_int_equal(ferry__dirty_peek(&f->t, f->host, f->size, log, &peeked), 0);
	assert_int_equal(peeked, 0);

	/* Drained: nothing new, log empty. */
	assert_int_equal(ferry__dirty_harvest(&f->t, f->host, f->size, log, f->got, &newly), 0);
	assert_int_equal(newly, 0);
	assert_int_equal(ferry__bitmap_count((unsigned long *)log, f->npages), 0);

	/* Already-set bits do not count as new. */
	ferry__bitmap_set_range_atomic(log, 59, 2);
	assert_int_equal(ferry__dirty_harvest(&f->t, f->host, f->size, log, f->got, &newly), 0);
	assert_int_equal(newly, 1);

	assert_int_equal(ferry__dirty_harvest(&f->t, f->host, f->size, NULL, f->got, &newly),
			 -EINVAL);
	free((void *)log);
}

/* Mode resolution and argument checks. */
static void test_modes(void **state)
{
	fixture *f = *state;
	ferry_dirty_tracker t;
	bool wp = ferry__dirty_wp_async_supported();

	assert_int_equal(ferry__dirty_tracker_init(&t, FERRY_DIRTY_AUTO), 0);
	assert_int_equal(t.mode, wp ? FERRY_DIRTY_WP_ASYNC : FERRY_DIRTY_EXPLICIT);
	ferry__dirty_tracker_fini(&t);
	ferry__dirty_tracker_fini(&t); /* idempotent */

	int r = ferry__dirty_tracker_init(&t, FERRY_DIRTY_WP_ASYNC);
	assert_int_equal(r, wp ? 0 : -EOPNOTSUPP);
	if (r == 0) {
		assert_int_equal(ferry__dirty_track_start(&t, f->host + 1, PS), -EINVAL);
		assert_int_equal(ferry__dirty_track_start(&t, f->host, PS + 1), -EINVAL);
		ferry__dirty_track_stop(&t, f->host, f->size); /* never started: no-op */
		ferry__dirty_tracker_fini(&t);
	}
	assert_int_equal(t.uffd, -1);
	assert_int_equal(t.pagemap_fd, -1);

	assert_int_equal(ferry__dirty_tracker_init(&t, (ferry_dirty_mode)42), -EINVAL);
}

/*
 * (g) The populated scan: nothing on a fresh mapping, then exactly the pages
 * touched (written through the mapping, and for memfd also with pwrite()).
 */
static void test_populated(void **state)
{
	fixture *f = *state;
	uint64_t count = UINT64_MAX;

	assert_int_equal(ferry__ram_scan_populated(f->host, f->size, f->fd, 0, f->got, &count), 0);
	assert_int_equal(count, 0);

	uint64_t n = write_pattern(f);
	if (f->kind == MEM_MEMFD) {
		/* Pages this process never mapped: found via SEEK_DATA. */
		const uint64_t pw[] = {8002, 8003, 12345};
		uint8_t buf[FERRY_PAGE_SIZE];
		memset(buf, 0x5a, sizeof(buf));
		for (size_t i = 0; i < sizeof(pw) / sizeof(pw[0]); i++) {
			assert_int_equal(pwrite(f->fd, buf, sizeof(buf), (off_t)(pw[i] * PS)),
					 (ssize_t)sizeof(buf));
			assert_false(ferry__bitmap_test(f->want, pw[i]));
			ferry__bitmap_set(f->want, pw[i]);
			n++;
		}
		/* A partial page write populates the whole page. */
		assert_int_equal(pwrite(f->fd, buf, 10, (off_t)(9000 * PS + 100)), 10);
		ferry__bitmap_set(f->want, 9000);
		n++;
	}
	assert_int_equal(ferry__ram_scan_populated(f->host, f->size, f->fd, 0, f->got, &count), 0);
	assert_bitmaps_equal(f->got, f->want, f->npages);
	assert_int_equal(count, n);

	/* The scan ORs: bits already set stay and are counted. */
	ferry__bitmap_set(f->got, 1);
	assert_int_equal(ferry__ram_scan_populated(f->host, f->size, f->fd, 0, f->got, &count), 0);
	assert_int_equal(count, n + !ferry__bitmap_test(f->want, 1));

	assert_int_equal(ferry__ram_scan_populated(f->host + 1, PS, -1, 0, f->got, &count), -EINVAL);
}

/*
 * The populated scan while WP_ASYNC tracking runs (the migration's order:
 * track_start, then scan, so no first write can fall between them). For a
 * shared memfd the result stays exact although never-touched pages now carry
 * uffd-wp markers; for anonymous RAM it may only over-report (markers look
 * swapped), never miss a page.
 */
static void test_populated_while_tracking(void **state)
{
	SKIP_WITHOUT_WP();
	fixture *f = *state;
	uint64_t n = write_pattern(f);
	wp_start(f);
	for (uint64_t p = 3; p < f->npages; p += 1001) {
		write_page(f, p, 0x11);
		n += !ferry__bitmap_test(f->want, p);
		ferry__bitmap_set(f->want, p);
	}
	uint64_t count = UINT64_MAX;
	assert_int_equal(ferry__ram_scan_populated(f->host, f->size, f->fd, 0, f->got, &count), 0);
	if (f->kind == MEM_MEMFD) {
		assert_bitmaps_equal(f->got, f->want, f->npages);
		assert_int_equal(count, n);
	} else {
		for (uint64_t p = 0; p < f->npages; p++)
			if (ferry__bitmap_test(f->want, p) && !ferry__bitmap_test(f->got, p))
				fail_msg("populated page %llu not reported", (unsigned long long)p);
		assert_true(count >= n);
	}
	/* The scan does not disturb tracking: the harvest sees the new writes. */
	uint64_t newly = 0;
	ferry__bitmap_zero(f->got, f->npages);
	assert_int_equal(ferry__dirty_harvest(&f->t, f->host, f->size, NULL, f->got, &newly), 0);
	uint64_t expect = 0;
	for (uint64_t p = 3; p < f->npages; p += 1001)
		expect++;
	assert_int_equal(newly, expect);
}

/*
 * A MAP_PRIVATE mapping of the fd: pages written through it are anonymous
 * copies the file's extents do not show, so the scan must not trust them
 * alone. Also a mapping of another file.
 */
static void test_populated_private_file(void **state)
{
	fixture *f = *state;
	uint64_t count = UINT64_MAX;
	uint8_t *priv = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, f->fd, 0);
	assert_true(priv != MAP_FAILED);
	(void)madvise(priv, f->size, MADV_NOHUGEPAGE);
	priv[10 * PS] = 1;      /* anonymous copy only */
	write_page(f, 20, 1); /* in the file (shared mapping) */
	ferry__bitmap_set(f->want, 10);
	ferry__bitmap_set(f->want, 20);
	assert_int_equal(ferry__ram_scan_populated(priv, f->size, f->fd, 0, f->got, &count), 0);
	assert_bitmaps_equal(f->got, f->want, f->npages);
	assert_int_equal(count, 2);

	/* The shared mapping with an unrelated fd: must not take the file's word. */
	int other = memfd_create("test-dirty-other", MFD_CLOEXEC);
	assert_true(other >= 0);
	assert_int_equal(ftruncate(other, (off_t)f->size), 0);
	ferry__bitmap_zero(f->got, f->npages);
	ferry__bitmap_zero(f->want, f->npages);
	ferry__bitmap_set(f->want, 20);
	assert_int_equal(ferry__ram_scan_populated(f->host, f->size, other, 0, f->got, &count), 0);
	assert_bitmaps_equal(f->got, f->want, f->npages);
	assert_int_equal(count, 1);
	close(other);
	munmap(priv, f->size);
}

/* Each test on both kinds of memory, named test/anon and test/memfd. */
#define BOTH(fn, su)                                      \
	{#fn "/anon", fn, su, teardown, &kind_anon},     \
	{#fn "/memfd", fn, su, teardown, &kind_memfd}

int main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_wp_clean_after_start, setup),
		BOTH(test_wp_pattern, setup),
		BOTH(test_wp_second_harvest_clean, setup),
		BOTH(test_wp_writes_after_harvest, setup),
		BOTH(test_wp_vector_overflow, setup_big),
		BOTH(test_wp_peek, setup_big),
		BOTH(test_explicit, setup),
		BOTH(test_populated, setup),
		BOTH(test_populated_while_tracking, setup),
		cmocka_unit_test_prestate_setup_teardown(test_populated_private_file, setup,
							 teardown, &kind_memfd),
		cmocka_unit_test_prestate_setup_teardown(test_modes, setup, teardown, &kind_anon),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
