/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the synthetic guest (src/guest/): config parsing (every
 * error message), the oracle (a run-and-stop guest matches its twin; one
 * corrupted byte is found at the right block and page), exact run_until
 * step counts, the fill kinds, working sets, pacing and throttling (no
 * tight timing asserts), prompt stops, and registration with a libferry VM
 * including a hand-made "migration" of RAM and vCPU state through
 * ferry_vmsd_encode/decode.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <zstd.h>

#include "ferry.h"
#include "guest.h"

#define PAGE 4096u
#define MiB (1ull << 20)

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
	return now_ns() / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static ferry_guest_t *make_guest(const char *spec, bool incoming)
{
	ferry_guest_config cfg;
	char err[256];
	ferry_guest_config_init(&cfg);
	int r = ferry_guest_config_parse(&cfg, spec, err, sizeof(err));
	if (r < 0)
		fail_msg("spec '%s': %s", spec, err);
	ferry_guest_t *g = NULL;
	assert_int_equal(ferry_guest_create(&cfg, incoming, &g), 0);
	assert_non_null(g);
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

static void assert_verify_matches(const ferry_guest_t *g)
{
	ferry_verify_result res;
	assert_int_equal(ferry_guest_verify(g, &res), 0);
	if (!res.matches)
		fail_msg("verify: first difference in %s page %llu (%llu differ)", res.block,
			 (unsigned long long)res.page, (unsigned long long)res.pages_differing);
	assert_int_equal(res.pages_compared, total_pages(g));
	assert_int_equal(res.pages_differing, 0);
	assert_int_equal(res.hash, res.twin_hash);
	assert_int_equal(res.hash, ferry_guest_hash(g));
}

/* ------------------------------------------------------------------------ */
/* Config                                                                   */

static void test_config_defaults(void **state)
{
	(void)state;
	ferry_guest_config c;
	char err[256];
	ferry_guest_config_init(&c);
	assert_int_equal(c.mem_size, 1ull << 30);
	assert_int_equal(c.vram_size, 16 * MiB);
	assert_int_equal(c.vcpus, 2);
	assert_int_equal(c.workload, FERRY_WL_RANDOM);
	assert_int_equal(c.rate, 0);
	assert_int_equal(c.wss, 0);
	assert_int_equal(c.fill, FERRY_FILL_RANDOM);
	assert_int_equal(c.seed, 1);
	assert_int_equal(c.throttle, 0);
	assert_false(c.paused);
	assert_int_equal(ferry_guest_config_check(&c, err, sizeof(err)), 0);
	assert_int_equal(ferry_guest_config_parse(&c, "", err, sizeof(err)), 0);
	assert_int_equal(c.mem_size, 1ull << 30);
}

static void test_config_good(void **state)
{
	(void)state;
	ferry_guest_config c;
	char err[256];

	ferry_guest_config_init(&c);
	assert_int_equal(ferry_guest_config_parse(&c,
			"mem=2G,vcpus=4,workload=stride,rate=200M,wss=64M,fill=text,seed=7,"
			"throttle=30,vram=8M,paused", err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(c.mem_size, 2ull << 30);
	assert_int_equal(c.vcpus, 4);
	assert_int_equal(c.workload, FERRY_WL_STRIDE);
	assert_int_equal(c.rate, 200 * MiB);
	assert_int_equal(c.wss, 64 * MiB);
	assert_int_equal(c.fill, FERRY_FILL_TEXT);
	assert_int_equal(c.seed, 7);
	assert_int_equal(c.throttle, 30);
	assert_int_equal(c.vram_size, 8 * MiB);
	assert_true(c.paused);

	/* Over the previous values; suffixes; rate=max; hex seed; vram 0. */
	assert_int_equal(ferry_guest_config_parse(&c,
			"mem=4096,vcpus=1,rate=max,seed=0x10,vram=0,paused=off,fill=zero,"
			"workload=hotset,wss=8k,", err, sizeof(err)), 0);
	assert_int_equal(c.mem_size, 4096);
	assert_int_equal(c.vcpus, 1);
	assert_int_equal(c.rate, 0);
	assert_int_equal(c.seed, 16);
	assert_int_equal(c.vram_size, 0);
	assert_false(c.paused);
	assert_int_equal(c.fill, FERRY_FILL_ZERO);
	assert_int_equal(c.workload, FERRY_WL_HOTSET);
	assert_int_equal(c.wss, 8192);
	assert_int_equal(c.throttle, 30); /* untouched */

	ferry_guest_config_init(&c);
	assert_int_equal(ferry_guest_config_parse(&c, "workload=idle,fill=none,mem=64m,rate=1g,"
			"vcpus=64,paused=yes,,throttle=99,throttle=0", err, sizeof(err)), 0);
	assert_int_equal(c.workload, FERRY_WL_IDLE);
	assert_int_equal(c.fill, FERRY_FILL_NONE);
	assert_int_equal(c.mem_size, 64 * MiB);
	assert_int_equal(c.rate, 1ull << 30);
	assert_int_equal(c.vcpus, 64);
	assert_true(c.paused);
	assert_int_equal(c.throttle, 0); /* last one wins */

	ferry_guest_config_init(&c);
	assert_int_equal(ferry_guest_config_parse(&c, "fill=random,workload=random,rate=12345",
						  err, sizeof(err)), 0);
	assert_int_equal(c.rate, 12345);
	/* Exactly one page per vCPU is enough. */
	assert_int_equal(ferry_guest_config_parse(&c, "mem=16K,vcpus=4", err, sizeof(err)), 0);
	/* A remainder goes to the last vCPU. */
	assert_int_equal(ferry_guest_config_parse(&c, "mem=20K,vcpus=3", err, sizeof(err)), 0);

	/* Live devices: defaults, sizes, devrate=max. */
	ferry_guest_config_init(&c);
	assert_int_equal(c.devices, 0);
	assert_int_equal(c.devmem, 64 * MiB);
	assert_int_equal(c.devrate, 500 * MiB);
	assert_int_equal(ferry_guest_config_parse(&c, "devices=16,devmem=8M,devrate=max", err,
						  sizeof(err)), 0);
	assert_int_equal(c.devices, 16);
	assert_int_equal(c.devmem, 8 * MiB);
	assert_int_equal(c.devrate, 0);
	assert_int_equal(ferry_guest_config_parse(&c, "devrate=1M", err, sizeof(err)), 0);
	assert_int_equal(c.devrate, MiB);
	assert_false(c.devprecopy);
	assert_int_equal(ferry_guest_config_parse(&c, "devprecopy", err, sizeof(err)), 0);
	assert_true(c.devprecopy);
	assert_int_equal(ferry_guest_config_parse(&c, "devprecopy=off", err, sizeof(err)), 0);
	assert_false(c.devprecopy);
}

static void test_config_bad(void **state)
{
	(void)state;
	static const struct {
		const char *spec;
		const char *msg;
	} cases[] = {
		{ "foo=1", "unknown key 'foo' (expected mem, vram, vcpus, workload, rate, wss, fill, "
			   "seed, throttle, alloc, paused, prealloc, virtio, balloon, devices, devmem, "
			   "devrate, devprecopy)" },
		{ "mem", "missing value for 'mem'" },
		{ "mem=", "missing value for 'mem'" },
		{ "=5", "missing key before '=' in '=5'" },
		{ "mem=abc", "bad size 'abc' for mem (expected bytes with an optional K, M or G "
			     "suffix)" },
		{ "mem=1T", "bad size '1T' for mem (expected bytes with an optional K, M or G "
			    "suffix)" },
		{ "mem=-1G", "bad size '-1G' for mem (expected bytes with an optional K, M or G "
			     "suffix)" },
		{ "mem=99999999999999G", "bad size '99999999999999G' for mem (expected bytes with "
					 "an optional K, M or G suffix)" },
		{ "vram=1x", "bad size '1x' for vram (expected bytes with an optional K, M or G "
			     "suffix)" },
		{ "wss=G", "bad size 'G' for wss (expected bytes with an optional K, M or G "
			   "suffix)" },
		{ "mem=1000", "mem must be a non-zero multiple of 4096 bytes (got 1000)" },
		{ "mem=0", "mem must be a non-zero multiple of 4096 bytes (got 0)" },
		{ "vram=6K", "vram must be a multiple of 4096 bytes (got 6144)" },
		{ "wss=100", "wss must be a multiple of 4096 bytes (got 100)" },
		{ "vcpus=0", "vcpus must be 1..64 (got 0)" },
		{ "vcpus=65", "vcpus must be 1..64 (got 65)" },
		{ "vcpus=two", "bad number 'two' for vcpus" },
		{ "vcpus=2,mem=4K", "mem (1 pages) is too small for 2 vcpus (at least one page each)" },
		{ "mem=12K,vcpus=4", "mem (3 pages) is too small for 4 vcpus (at least one page "
				     "each)" },
		{ "workload=foo", "unknown workload 'foo' (expected idle, stride, random, hotset, churn)" },
		{ "workload=Random", "unknown workload 'Random' (expected idle, stride, random, "
				     "hotset, churn)" },
		{ "alloc=101", "alloc must be a percentage 0..100 (got 101)" },
		{ "balloon=maybe", "bad value 'maybe' for balloon (expected on or off)" },
		{ "fill=ones", "unknown fill 'ones' (expected none, zero, random, text)" },
		{ "rate=fast", "bad rate 'fast' (expected bytes/s with an optional K, M or G suffix, "
			       "or max)" },
		{ "seed=-1", "bad number '-1' for seed" },
		{ "seed=0x", "bad number '0x' for seed" },
		{ "seed=99999999999999999999", "bad number '99999999999999999999' for seed" },
		{ "throttle=100", "throttle must be 0..99 (got 100)" },
		{ "throttle=1.5", "bad number '1.5' for throttle" },
		{ "paused=maybe", "bad value 'maybe' for paused (expected on or off)" },
		{ "prealloc=2", "bad value '2' for prealloc (expected on or off)" },
		{ "mem=1G,Mem=2G", "unknown key 'Mem' (expected mem, vram, vcpus, workload, rate, "
				   "wss, fill, seed, throttle, alloc, paused, prealloc, virtio, balloon, "
				   "devices, devmem, devrate, devprecopy)" },
		{ "devices=17", "devices must be 0..16 (got 17)" },
		{ "devices=2,devmem=1000", "devmem must be a non-zero multiple of 4096 bytes with at "
					   "least 64 per vcpu (got 1000)" },
		{ "devmem=1x", "bad size '1x' for devmem (expected bytes with an optional K, M or G "
			       "suffix)" },
		{ "devrate=fast", "bad size 'fast' for devrate (expected bytes with an optional K, M "
				  "or G suffix, or max)" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ferry_guest_config c, before;
		char err[256];
		ferry_guest_config_init(&c);
		before = c;
		memset(err, 'x', sizeof(err));
		err[sizeof(err) - 1] = '\0';
		int r = ferry_guest_config_parse(&c, cases[i].spec, err, sizeof(err));
		if (r != -EINVAL || strcmp(err, cases[i].msg))
			fail_msg("spec '%s': r=%d err='%s', expected '%s'", cases[i].spec, r, err,
				 cases[i].msg);
		assert_memory_equal(&c, &before, sizeof(c)); /* unchanged on error */
	}
	/* Small error buffers truncate; NULL is allowed. */
	ferry_guest_config c;
	char small[8];
	ferry_guest_config_init(&c);
	assert_int_equal(ferry_guest_config_parse(&c, "vcpus=0", small, sizeof(small)), -EINVAL);
	assert_string_equal(small, "vcpus m");
	assert_int_equal(ferry_guest_config_parse(&c, "vcpus=0", NULL, 0), -EINVAL);
	assert_int_equal(ferry_guest_config_parse(NULL, "", NULL, 0), -EINVAL);
	assert_int_equal(ferry_guest_config_parse(&c, NULL, NULL, 0), -EINVAL);
}

static void test_create_bad(void **state)
{
	(void)state;
	ferry_guest_config c;
	ferry_guest_t *g = (ferry_guest_t *)&c;
	ferry_guest_config_init(&c);
	c.mem_size = 4097;
	assert_int_equal(ferry_guest_create(&c, false, &g), -EINVAL);
	assert_null(g);
	ferry_guest_config_init(&c);
	c.vcpus = 65;
	assert_int_equal(ferry_guest_create(&c, false, &g), -EINVAL);
	c.vcpus = 2;
	c.throttle = 100;
	assert_int_equal(ferry_guest_create(&c, false, &g), -EINVAL);
	c.throttle = 0;
	c.workload = (ferry_workload)7;
	assert_int_equal(ferry_guest_create(&c, false, &g), -EINVAL);
	assert_int_equal(ferry_guest_create(NULL, false, &g), -EINVAL);
	assert_int_equal(ferry_guest_create(&c, false, NULL), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Determinism and the oracle                                               */

/*
 * Waits until every vCPU passed min (one entry per vCPU); fails after 10 s
 * (a loaded host may not run a vCPU for a while).
 */
static void wait_steps_above(ferry_guest_t *g, const uint64_t *min)
{
	uint64_t s[FERRY_GUEST_MAX_VCPUS];
	unsigned n = ferry_guest_vcpus(g);
	for (int k = 0; k < 1000; k++) {
		ferry_guest_steps(g, s);
		unsigned i = 0;
		while (i < n && s[i] > min[i])
			i++;
		if (i == n)
			return;
		sleep_ms(10);
	}
	fail_msg("a vCPU did not step within 10 s");
}

static void run_stop_verify(const char *spec)
{
	ferry_guest_t *g = make_guest(spec, false);
	uint64_t s1[2], s2[2];
	assert_false(ferry_guest_running(g));
	assert_int_equal(ferry_guest_vcpus(g), 2);
	assert_int_equal(ferry_guest_start(g), 0);
	assert_true(ferry_guest_running(g));
	assert_int_equal(ferry_guest_start(g), 0); /* idempotent */
	const uint64_t zero[2] = { 0, 0 };
	wait_steps_above(g, zero);
	assert_int_equal(ferry_guest_stop(g), 0);
	assert_false(ferry_guest_running(g));
	ferry_guest_steps(g, s1);
	assert_true(s1[0] > 0 && s1[1] > 0);
	assert_int_equal(ferry_guest_stop(g), 0); /* idempotent */
	assert_int_equal(ferry_guest_start(g), 0);
	wait_steps_above(g, s1);
	assert_int_equal(ferry_guest_stop(g), 0);
	ferry_guest_steps(g, s2);
	assert_true(s2[0] > s1[0] && s2[1] > s1[1]);
	print_message("    %s: %llu + %llu steps\n", spec, (unsigned long long)s2[0],
		      (unsigned long long)s2[1]);
	/* Verify while running is refused. */
	ferry_verify_result res;
	assert_int_equal(ferry_guest_start(g), 0);
	assert_int_equal(ferry_guest_verify(g, &res), -EBUSY);
	assert_int_equal(ferry_guest_vcpu_exec(g, 0, 1), -EBUSY);
	assert_int_equal(ferry_guest_stop(g), 0);
	assert_verify_matches(g);
	ferry_guest_destroy(g);
}

static void test_determinism_stride(void **state)
{
	(void)state;
	run_stop_verify("mem=64M,vcpus=2,workload=stride");
}

static void test_determinism_random(void **state)
{
	(void)state;
	run_stop_verify("mem=64M,vcpus=2,workload=random");
}

static void test_determinism_hotset(void **state)
{
	(void)state;
	run_stop_verify("mem=64M,vcpus=2,workload=hotset");
}

static void test_determinism_wss_text(void **state)
{
	(void)state;
	run_stop_verify("mem=64M,vcpus=2,workload=hotset,wss=1M,fill=text,seed=99,vram=0");
	run_stop_verify("mem=64M,vcpus=2,workload=stride,wss=40K,fill=zero,vram=4K");
}

static void test_run_until(void **state)
{
	(void)state;
	ferry_guest_t *g = make_guest("mem=64M,vcpus=3,workload=random", false);
	uint64_t t1[3] = { 1000, 54321, 0 }, s[3];
	assert_int_equal(ferry_guest_run_until(g, t1), 0);
	assert_false(ferry_guest_running(g));
	ferry_guest_steps(g, s);
	assert_int_equal(s[0], 1000);
	assert_int_equal(s[1], 54321);
	assert_int_equal(s[2], 0);
	/* Past targets just stay; others move on. */
	uint64_t t2[3] = { 500, 60000, 1 };
	assert_int_equal(ferry_guest_run_until(g, t2), 0);
	ferry_guest_steps(g, s);
	assert_int_equal(s[0], 1000);
	assert_int_equal(s[1], 60000);
	assert_int_equal(s[2], 1);
	assert_verify_matches(g);
	/* From a running guest: it is stopped first, then runs to the targets. */
	assert_int_equal(ferry_guest_start(g), 0);
	wait_steps_above(g, s);
	ferry_guest_steps(g, s);
	uint64_t t5[3] = { s[0] + 300000, s[1] + 3, s[2] + 300000 };
	assert_int_equal(ferry_guest_run_until(g, t5), 0);
	assert_false(ferry_guest_running(g));
	ferry_guest_steps(g, s);
	assert_int_equal(s[0], t5[0]);
	assert_true(s[1] >= t5[1]); /* probably past it when stopped */
	assert_int_equal(s[2], t5[2]);
	assert_verify_matches(g);
	/* Exec = the same step function, single-threaded. */
	uint64_t before = s[1];
	assert_int_equal(ferry_guest_vcpu_exec(g, 1, 10), 0);
	ferry_guest_steps(g, s);
	assert_int_equal(s[1], before + 10);
	assert_verify_matches(g);
	assert_int_equal(ferry_guest_vcpu_exec(g, 3, 1), -EINVAL);
	assert_int_equal(ferry_guest_run_until(g, NULL), -EINVAL);
	ferry_guest_destroy(g);
}

static void test_corrupt_detected(void **state)
{
	(void)state;
	ferry_guest_t *g = make_guest("mem=64M,vcpus=2,workload=random", false);
	uint64_t t[2] = { 20000, 30000 };
	assert_int_equal(ferry_guest_run_until(g, t), 0);
	assert_verify_matches(g);

	uint8_t *host;
	const char *name;
	ferry_guest_ram(g, 0, &name, &host, NULL);
	assert_string_equal(name, "pc.ram");
	uint8_t *b = host + 1234ull * PAGE + 777;
	*b ^= 0x5a;
	ferry_verify_result res;
	assert_int_equal(ferry_guest_verify(g, &res), 0);
	assert_false(res.matches);
	assert_string_equal(res.block, "pc.ram");
	assert_int_equal(res.page, 1234);
	assert_int_equal(res.pages_differing, 1);
	assert_int_equal(res.pages_compared, total_pages(g));
	assert_int_not_equal(res.hash, res.twin_hash);
	*b ^= 0x5a;
	assert_verify_matches(g);

	/* vga.vram, last byte; and a second difference later in pc.ram. */
	uint64_t vsize;
	ferry_guest_ram(g, 1, &name, &host, &vsize);
	assert_string_equal(name, "vga.vram");
	host[vsize - 1] ^= 1;
	uint8_t *pc;
	ferry_guest_ram(g, 0, NULL, &pc, NULL);
	pc[5000ull * PAGE] ^= 1;
	assert_int_equal(ferry_guest_verify(g, &res), 0);
	assert_false(res.matches);
	assert_string_equal(res.block, "pc.ram");
	assert_int_equal(res.page, 5000);
	assert_int_equal(res.pages_differing, 2);
	pc[5000ull * PAGE] ^= 1;
	assert_int_equal(ferry_guest_verify(g, &res), 0);
	assert_false(res.matches);
	assert_string_equal(res.block, "vga.vram");
	assert_int_equal(res.page, vsize / PAGE - 1);
	host[vsize - 1] ^= 1;

	/* Steps done by exec are reproduced by the twin. */
	assert_int_equal(ferry_guest_vcpu_exec(g, 0, 1), 0);
	assert_verify_matches(g);
	ferry_guest_destroy(g);
}

/* ------------------------------------------------------------------------ */
/* Fill kinds                                                               */

static void test_fill_zero(void **state)
{
	(void)state;
	ferry_guest_t *g = make_guest("mem=8M,vram=1M,fill=zero", false);
	for (unsigned b = 0; b < 2; b++) {
		uint8_t *host;
		uint64_t size;
		ferry_guest_ram(g, b, NULL, &host, &size);
		for (uint64_t i = 0; i < size; i++)
			if (host[i])
				fail_msg("block %u byte %llu is %u", b, (unsigned long long)i, host[i]);
		int fd = ferry_guest_ram_fd(g, b);
		assert_true(fd >= 0);
		/* Populated: every page is data. */
		assert_int_equal(lseek(fd, 0, SEEK_DATA), 0);
		assert_int_equal(lseek(fd, 0, SEEK_HOLE), (off_t)size);
	}
	ferry_guest_destroy(g);
}

static void assert_no_data(const ferry_guest_t *g)
{
	for (unsigned b = 0; b < ferry_guest_ram_count(g); b++) {
		errno = 0;
		assert_int_equal(lseek(ferry_guest_ram_fd(g, b), 0, SEEK_DATA), -1);
		assert_int_equal(errno, ENXIO);
	}
}

static void test_fill_none(void **state)
{
	(void)state;
	ferry_guest_t *g = make_guest("mem=8M,vram=1M,fill=none,workload=random", false);
	assert_int_equal(ferry_guest_ram_count(g), 2);
	assert_no_data(g);
	/* Hashing and verifying do not populate the memfds. */
	ferry_guest_t *z = make_guest("mem=8M,vram=1M,fill=zero", false);
	assert_int_equal(ferry_guest_hash(g), ferry_guest_hash(z));
	ferry_guest_destroy(z);
	assert_verify_matches(g);
	assert_no_data(g);
	/* Steps populate only what they touch; verify handles the mix. */
	uint64_t t[2] = { 100, 100 };
	assert_int_equal(ferry_guest_run_until(g, t), 0);
	int fd = ferry_guest_ram_fd(g, 0);
	off_t d = lseek(fd, 0, SEEK_DATA);
	assert_true(d >= 0);
	off_t h = lseek(fd, 0, SEEK_HOLE);
	assert_true(h < 8 * (off_t)MiB);
	errno = 0;
	assert_int_equal(lseek(ferry_guest_ram_fd(g, 1), 0, SEEK_DATA), -1);
	assert_verify_matches(g);
	ferry_guest_destroy(g);

	/* An incoming guest is never filled, whatever the fill. */
	g = make_guest("mem=8M,vram=1M,fill=random", true);
	assert_no_data(g);
	ferry_guest_destroy(g);
}

static void test_fill_text(void **state)
{
	(void)state;
	ferry_guest_t *g = make_guest("mem=8M,vram=64K,fill=text,workload=idle", false);
	for (unsigned b = 0; b < 2; b++) {
		uint8_t *host;
		uint64_t size;
		ferry_guest_ram(g, b, NULL, &host, &size);
		uint64_t newlines = 0;
		for (uint64_t i = 0; i < size; i++) {
			uint8_t c = host[i];
			if (c == '\n')
				newlines++;
			else if (c != '\t' && (c < 0x20 || c > 0x7e))
				fail_msg("block %u byte %llu is 0x%02x", b, (unsigned long long)i, c);
		}
		assert_true(newlines > size / 200); /* lines, not one blob */
	}
	/* Compressible like source code: 2.5x..8x with zstd level 1. */
	uint8_t *host;
	ferry_guest_ram(g, 0, NULL, &host, NULL);
	size_t cap = ZSTD_compressBound(8 * MiB);
	void *dst = malloc(cap);
	assert_non_null(dst);
	size_t n = ZSTD_compress(dst, cap, host, 8 * MiB, 1);
	assert_false(ZSTD_isError(n));
	double ratio = (double)(8 * MiB) / (double)n;
	print_message("    text fill: zstd -1 ratio %.2f\n", ratio);
	assert_true(ratio > 2.5 && ratio < 8);
	free(dst);
	/* Deterministic, and the seed matters. */
	ferry_guest_t *g2 = make_guest("mem=8M,vram=64K,fill=text,workload=idle", false);
	ferry_guest_t *g3 = make_guest("mem=8M,vram=64K,fill=text,workload=idle,seed=2", false);
	assert_int_equal(ferry_guest_hash(g), ferry_guest_hash(g2));
	assert_int_not_equal(ferry_guest_hash(g), ferry_guest_hash(g3));
	ferry_guest_destroy(g3);
	ferry_guest_destroy(g2);
	ferry_guest_destroy(g);
}

static void test_fill_random(void **state)
{
	(void)state;
	ferry_guest_t *a = make_guest("mem=8M,vram=4M,fill=random,seed=5", false);
	ferry_guest_t *b = make_guest("mem=8M,vram=4M,fill=random,seed=5", false);
	ferry_guest_t *c = make_guest("mem=8M,vram=4M,fill=random,seed=6", false);
	assert_int_equal(ferry_guest_hash(a), ferry_guest_hash(b));
	assert_int_not_equal(ferry_guest_hash(a), ferry_guest_hash(c));
	uint8_t *pc, *vr;
	ferry_guest_ram(a, 0, NULL, &pc, NULL);
	ferry_guest_ram(a, 1, NULL, &vr, NULL);
	/* vga.vram has its own stream; pages are not repeats of each other. */
	assert_memory_not_equal(pc, vr, PAGE);
	assert_memory_not_equal(pc, pc + 2 * MiB, PAGE);
	assert_memory_not_equal(pc, pc + PAGE, PAGE);
	/* Roughly uniform bytes. */
	uint64_t ones = 0;
	for (uint64_t i = 0; i < 8 * MiB / 8; i++)
		ones += (uint64_t)__builtin_popcountll(((uint64_t *)(void *)pc)[i]);
	double frac = (double)ones / (8.0 * MiB * 8);
	assert_true(frac > 0.49 && frac < 0.51);
	ferry_guest_destroy(a);
	ferry_guest_destroy(b);
	ferry_guest_destroy(c);
}

/* ------------------------------------------------------------------------ */
/* Working set, idle, pacing, throttle, stop latency                        */

static void test_wss(void **state)
{
	(void)state;
	/* 2 vCPUs x 512 pages; working sets of 16 pages. */
	const char *spec = "mem=4M,vram=0,vcpus=2,workload=random,wss=64K";
	ferry_guest_t *g = make_guest(spec, false);
	ferry_guest_t *fresh = make_guest(spec, false);
	uint64_t t[2] = { 100000, 100000 };
	assert_int_equal(ferry_guest_run_until(g, t), 0);
	uint8_t *a, *b;
	ferry_guest_ram(g, 0, NULL, &a, NULL);
	ferry_guest_ram(fresh, 0, NULL, &b, NULL);
	for (uint64_t p = 0; p < 1024; p++) {
		bool in_ws = p % 512 < 16;
		bool same = !memcmp(a + p * PAGE, b + p * PAGE, PAGE);
		if (in_ws == same)
			fail_msg("page %llu: in working set %d, unchanged %d",
				 (unsigned long long)p, in_ws, same);
	}
	assert_verify_matches(g);
	ferry_guest_destroy(fresh);
	ferry_guest_destroy(g);

	/* Uneven slices: 3 vCPUs over 10 pages -> 3, 3, 4; stride sweeps all. */
	g = make_guest("mem=40K,vram=0,vcpus=3,workload=stride,fill=zero", false);
	uint64_t t3[3] = { 3 * 64, 3 * 64, 4 * 64 };
	assert_int_equal(ferry_guest_run_until(g, t3), 0);
	ferry_guest_ram(g, 0, NULL, &a, NULL);
	for (uint64_t p = 0; p < 10; p++)
		for (uint64_t off = 0; off < PAGE; off++)
			assert_int_equal(a[p * PAGE + off], off % 64 == 0 ? 1 : 0);
	assert_verify_matches(g);
	ferry_guest_destroy(g);
}

static void test_idle(void **state)
{
	(void)state;
	ferry_guest_t *g = make_guest("mem=8M,workload=idle", false);
	uint64_t h = ferry_guest_hash(g), s[2];
	assert_int_equal(ferry_guest_start(g), 0);
	assert_true(ferry_guest_running(g));
	sleep_ms(10);
	uint64_t t0 = now_ms();
	assert_int_equal(ferry_guest_stop(g), 0);
	assert_true(now_ms() - t0 < 100);
	ferry_guest_steps(g, s);
	assert_int_equal(s[0], 0);
	assert_int_equal(s[1], 0);
	assert_int_equal(ferry_guest_hash(g), h);
	uint64_t t[2] = { 0, 5 };
	assert_int_equal(ferry_guest_run_until(g, t), -EINVAL);
	t[1] = 0;
	assert_int_equal(ferry_guest_run_until(g, t), 0);
	assert_verify_matches(g);
	ferry_guest_destroy(g);
}

static uint64_t steps_in_window(ferry_guest_t *g, unsigned ms)
{
	uint64_t a[FERRY_GUEST_MAX_VCPUS], b[FERRY_GUEST_MAX_VCPUS];
	ferry_guest_steps(g, a);
	assert_int_equal(ferry_guest_start(g), 0);
	sleep_ms(ms);
	assert_int_equal(ferry_guest_stop(g), 0);
	ferry_guest_steps(g, b);
	return b[0] - a[0];
}

static void test_throttle(void **state)
{
	(void)state;
	ferry_guest_t *g = make_guest("mem=64M,vcpus=1,workload=random", false);
	uint64_t free_run = steps_in_window(g, 200);
	assert_int_equal(ferry_guest_set_throttle(g, 90), 0);
	uint64_t throttled = steps_in_window(g, 200);
	print_message("    throttle 0: %llu steps, throttle 90: %llu steps in 200 ms\n",
		      (unsigned long long)free_run, (unsigned long long)throttled);
	/* Ideally ~1/10 to 3/20; a generous margin keeps it from flaking. */
	assert_true(throttled * 2 < free_run);
	assert_int_equal(ferry_guest_set_throttle(g, 100), -EINVAL);
	assert_int_equal(ferry_guest_set_throttle(g, 0), 0);
	/* The migration's throttle (auto-converge) is its own: the higher one wins. */
	assert_int_equal(ferry_guest_set_mig_throttle(g, 90), 0);
	assert_int_equal(ferry_guest_mig_throttle(g), 90);
	throttled = steps_in_window(g, 200);
	assert_true(throttled * 2 < free_run);
	assert_int_equal(ferry_guest_set_mig_throttle(g, 100), -EINVAL);
	assert_int_equal(ferry_guest_set_mig_throttle(g, 0), 0);
	assert_int_equal(ferry_guest_mig_throttle(g), 0);
	assert_verify_matches(g);
	ferry_guest_destroy(g);

	/* throttle= in the config applies from the start, and stays when the migration's ends. */
	g = make_guest("mem=64M,vcpus=1,workload=random,throttle=90", false);
	throttled = steps_in_window(g, 200);
	assert_true(throttled * 2 < free_run);
	assert_int_equal(ferry_guest_set_mig_throttle(g, 20), 0);
	assert_int_equal(ferry_guest_set_mig_throttle(g, 0), 0);
	throttled = steps_in_window(g, 200);
	assert_true(throttled * 2 < free_run);
	ferry_guest_destroy(g);
}

/* ns per step at rate bytes/s, as the guest computes it (one page per step). */
static uint64_t ns_per_step(uint64_t rate)
{
	return (uint64_t)((double)PAGE * 1e9 / (double)rate);
}

/*
 * Pacing is a token bucket that starts empty when a vCPU starts and never
 * holds more than the steps due by then: step k + 1 runs no earlier than
 * k step times after the start, and each step's time is waited out after
 * it. So in E ns a vCPU does at most E / step + 1 steps, and reaching n
 * steps takes at least (n - 1) steps' time. A loaded host may make a vCPU
 * slower, never faster: the lower bound on the rate is only "within 10 s".
 */
static void test_rate(void **state)
{
	(void)state;
	/* 4 MiB/s = 1024 steps/s per vCPU: 307 steps in ~300 ms. */
	const uint64_t step = ns_per_step(4 * MiB), want = 307;
	assert_int_equal(step, 976562);
	ferry_guest_t *g = make_guest("mem=64M,vcpus=2,workload=random,rate=4M", false);
	uint64_t b[2] = { 0, 0 };
	uint64_t t0 = now_ns();
	assert_int_equal(ferry_guest_start(g), 0);
	while ((b[0] < want || b[1] < want) && now_ns() - t0 < 10000000000ull) {
		sleep_ms(5);
		ferry_guest_steps(g, b);
	}
	uint64_t reached = now_ns() - t0;
	assert_int_equal(ferry_guest_stop(g), 0);
	uint64_t el = now_ns() - t0;
	ferry_guest_steps(g, b);
	print_message("    rate 4M: %llu and %llu steps, %llu reached after %.1f ms, stopped after %.1f ms\n",
		      (unsigned long long)b[0], (unsigned long long)b[1], (unsigned long long)want,
		      (double)reached / 1e6, (double)el / 1e6);
	assert_true(reached >= (want - 1) * step);
	for (int i = 0; i < 2; i++) {
		assert_true(b[i] >= want);
		assert_true(b[i] <= el / step + 1);
	}
	assert_verify_matches(g);
	ferry_guest_destroy(g);

	/*
	 * Pacing also works in run_until: 20 steps at 1 MiB/s (256 steps/s)
	 * take at least 20 step times, the last one waited out included.
	 */
	g = make_guest("mem=8M,vcpus=1,workload=stride,rate=1M", false);
	uint64_t t[1] = { 20 };
	t0 = now_ns();
	assert_int_equal(ferry_guest_run_until(g, t), 0);
	el = now_ns() - t0;
	ferry_guest_steps(g, b);
	assert_int_equal(b[0], 20);
	assert_true(el >= 20 * ns_per_step(1 * MiB)); /* 78.125 ms */
	ferry_guest_destroy(g);
}

static void test_stop_prompt(void **state)
{
	(void)state;
	/* Throttle 99: the vCPU sleeps 990 ms per 10 ms of run. */
	ferry_guest_t *g = make_guest("mem=64M,vcpus=2,workload=random,throttle=99", false);
	assert_int_equal(ferry_guest_start(g), 0);
	sleep_ms(50);
	uint64_t t0 = now_ms();
	assert_int_equal(ferry_guest_stop(g), 0);
	uint64_t el = now_ms() - t0;
	assert_true(el < 300);
	/* Slow pacing: 1 step per second. */
	ferry_guest_t *g2 = make_guest("mem=64M,vcpus=2,workload=random,rate=4K", false);
	assert_int_equal(ferry_guest_start(g2), 0);
	sleep_ms(50);
	t0 = now_ms();
	assert_int_equal(ferry_guest_stop(g2), 0);
	assert_true(now_ms() - t0 < 300);
	/* Unthrottled, many times in a row. */
	ferry_guest_t *g3 = make_guest("mem=64M,vcpus=2,workload=hotset", false);
	t0 = now_ms();
	for (int i = 0; i < 200; i++) {
		assert_int_equal(ferry_guest_start(g3), 0);
		if (i % 2)
			sleep_ms(1);
		assert_int_equal(ferry_guest_stop(g3), 0);
	}
	print_message("    200 start/stop cycles: %llu ms\n", (unsigned long long)(now_ms() - t0));
	assert_verify_matches(g3);
	assert_verify_matches(g);
	assert_verify_matches(g2);
	ferry_guest_destroy(g3);
	ferry_guest_destroy(g2);
	ferry_guest_destroy(g);
}

/* Threads of this process, from /proc/self/task. */
static unsigned thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	assert_non_null(d);
	unsigned n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Destroy while running: the vCPU threads, one per vCPU, are stopped and joined. */
static void test_destroy_running(void **state)
{
	(void)state;
	unsigned before = thread_count();
	ferry_guest_t *g = make_guest("mem=16M,vcpus=4,workload=random,throttle=50", false);
	assert_int_equal(ferry_guest_vcpus(g), 4);
	assert_int_equal(thread_count(), before + 4);
	assert_int_equal(ferry_guest_start(g), 0);
	const uint64_t zero[4] = { 0 };
	wait_steps_above(g, zero);
	assert_true(ferry_guest_running(g));
	ferry_guest_destroy(g);
	assert_int_equal(thread_count(), before);
	ferry_guest_destroy(NULL);
}

/* ------------------------------------------------------------------------ */
/* libferry registration                                                    */

static void test_attach(void **state)
{
	(void)state;
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	ferry_vm_t *vm = NULL;
	assert_int_equal(ferry_vm_create(&o, &vm), 0);
	assert_int_equal(ferry_vm_dirty_mode(vm), FERRY_DIRTY_EXPLICIT);
	ferry_guest_t *g = make_guest("mem=64M,vram=16M,vcpus=2,workload=random", false);
	assert_int_equal(ferry_guest_attach(g, vm), 0);
	assert_int_equal(ferry_guest_attach(g, vm), -EALREADY);

	ferry_ram_block_t *rb = ferry_ram_block_find(vm, "pc.ram");
	assert_non_null(rb);
	assert_int_equal(ferry_ram_block_size(rb), 64 * MiB);
	uint8_t *host;
	ferry_guest_ram(g, 0, NULL, &host, NULL);
	assert_ptr_equal(ferry_ram_block_host(rb), host);
	rb = ferry_ram_block_find(vm, "vga.vram");
	assert_non_null(rb);
	assert_int_equal(ferry_ram_block_size(rb), 16 * MiB);

	/* The vCPU ops drive the guest. */
	assert_int_equal(ferry_vm_start(vm), 0);
	assert_true(ferry_guest_running(g));
	const uint64_t zero[2] = { 0, 0 };
	wait_steps_above(g, zero);
	assert_int_equal(ferry_vm_stop(vm), 0);
	assert_false(ferry_guest_running(g));
	assert_verify_matches(g); /* marking dirty changes nothing in RAM */

	/* A hand-made migration: RAM by memcpy, vCPUs by vmsd encode/decode. */
	ferry_guest_t *d = make_guest("mem=64M,vram=16M,vcpus=2,workload=random", true);
	for (unsigned b = 0; b < 2; b++) {
		uint8_t *src, *dst;
		uint64_t size;
		ferry_guest_ram(g, b, NULL, &src, &size);
		ferry_guest_ram(d, b, NULL, &dst, NULL);
		memcpy(dst, src, size);
	}
	const ferry_vmsd *vmsd = ferry_guest_vcpu_vmsd();
	assert_string_equal(vmsd->name, "cpu");
	assert_int_equal(vmsd->version, 1);
	assert_int_equal(vmsd->min_version, 1);
	for (unsigned i = 0; i < 2; i++) {
		uint8_t buf[1024];
		char err[256] = "";
		int64_t n = ferry_vmsd_encode(vmsd, ferry_guest_vcpu_opaque(g, i), buf, sizeof(buf));
		assert_true(n > 0 && n <= (int64_t)sizeof(buf));
		int r = ferry_vmsd_decode(vmsd, ferry_guest_vcpu_opaque(d, i), 1, buf, (size_t)n,
					  err, sizeof(err));
		if (r)
			fail_msg("decode: %d %s", r, err);
	}
	uint64_t sg[2], sd[2];
	ferry_guest_steps(g, sg);
	ferry_guest_steps(d, sd);
	assert_memory_equal(sg, sd, sizeof(sg));
	assert_int_equal(ferry_guest_hash(d), ferry_guest_hash(g));
	/* The destination continues where the source stopped. */
	assert_int_equal(ferry_guest_start(d), 0);
	wait_steps_above(d, sd);
	assert_int_equal(ferry_guest_stop(d), 0);
	assert_verify_matches(d);

	/* A destination with another config refuses the vCPU state. */
	static const char *const others[] = {
		"mem=64M,vram=16M,vcpus=2,workload=random,seed=2",
		"mem=64M,vram=16M,vcpus=2,workload=hotset",
		"mem=64M,vram=16M,vcpus=2,workload=random,wss=1M",
		"mem=128M,vram=16M,vcpus=2,workload=random",
	};
	for (unsigned k = 0; k < 4; k++) {
		ferry_guest_t *x = make_guest(others[k], true);
		uint8_t buf[1024];
		char err[256] = "";
		int64_t n = ferry_vmsd_encode(vmsd, ferry_guest_vcpu_opaque(g, 1), buf, sizeof(buf));
		assert_true(n > 0);
		int r = ferry_vmsd_decode(vmsd, ferry_guest_vcpu_opaque(x, 1), 1, buf, (size_t)n,
					  err, sizeof(err));
		if (r != FERRY_EMISMATCH)
			fail_msg("%s: decode returned %d (%s)", others[k], r, err);
		ferry_guest_destroy(x);
	}

	/* Attach refuses a running guest. */
	ferry_vm_t *vm2 = NULL;
	assert_int_equal(ferry_vm_create(&o, &vm2), 0);
	assert_int_equal(ferry_guest_start(d), 0);
	assert_int_equal(ferry_guest_attach(d, vm2), -EBUSY);
	assert_int_equal(ferry_guest_stop(d), 0);
	assert_int_equal(ferry_guest_attach(d, vm2), 0);
	assert_int_equal(ferry_guest_attach(NULL, vm2), -EINVAL);

	/* The VM goes first: it must not outlive the RAM. */
	ferry_vm_destroy(vm2);
	ferry_vm_destroy(vm);
	ferry_guest_destroy(d);
	ferry_guest_destroy(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_defaults),
		cmocka_unit_test(test_config_good),
		cmocka_unit_test(test_config_bad),
		cmocka_unit_test(test_create_bad),
		cmocka_unit_test(test_determinism_stride),
		cmocka_unit_test(test_determinism_random),
		cmocka_unit_test(test_determinism_hotset),
		cmocka_unit_test(test_determinism_wss_text),
		cmocka_unit_test(test_run_until),
		cmocka_unit_test(test_corrupt_detected),
		cmocka_unit_test(test_fill_zero),
		cmocka_unit_test(test_fill_none),
		cmocka_unit_test(test_fill_text),
		cmocka_unit_test(test_fill_random),
		cmocka_unit_test(test_wss),
		cmocka_unit_test(test_idle),
		cmocka_unit_test(test_throttle),
		cmocka_unit_test(test_rate),
		cmocka_unit_test(test_stop_prompt),
		cmocka_unit_test(test_destroy_running),
		cmocka_unit_test(test_attach),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
