/* SPDX-License-Identifier: MIT */
/*
 * Integration tests for live devices (ferry/device.h) over the main
 * channel: bit-exact migrations of running guests with 1, 2 and 4
 * synthetic devices (guest RAM and device memory against the twin), a VM
 * with vmsd-only and live devices (one without config), cancel while the
 * save threads read (the source runs on, its devices RUNNING again, and a
 * second migration matches the twin), a device whose read fails on the
 * source or whose write fails on the destination, and hostile
 * live-device records, each with its message. Postcopy: 1 and 2 devices,
 * with and without multifd and preempt, bit-exact, the downtime with its
 * device part; the link cut while the state streams before the switch
 * (a clean failure, then a second migration). The same over the
 * multifd channels (device-state packets): 1, 2 and 4 devices, packets
 * out of order (the proxy slows one channel), cancel while they stream,
 * and hostile packets. PRE_COPY devices (devprecopy: data while the guest
 * runs, dirty granules again) with and without multifd, guest running or
 * paused; switchover-ack (the source waits until the destination wrote
 * every device's initial data; either side without it is refused); cancel
 * during PRE_COPY streaming.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"
#include "sbuf.h"
#include "stream/format.h"

/* A running guest whose vCPUs also write device memory. */
#define DEV_SPEC "mem=64M,vram=4M,vcpus=2,rate=50M,workload=random,devmem=4M,devrate=200M,"

static void expect_dev_states(side *s, int want)
{
	for (unsigned i = 0; i < ferry_guest_dev_count(s->g); i++) {
		assert_int_equal(ferry_guest_dev_state(s->g, i), want);
		assert_int_equal(ferry_live_device_state(s->vm, "gdev", i), want);
	}
}

/* Multifd with 2 channels; else the defaults (the main channel). */
static void dev_params(ferry_migration_params *p, bool multifd)
{
	ferry_migration_params_init(p);
	p->multifd = multifd;
	p->multifd_channels = 2;
}

/* Migrates src to dst (listening on uri) with p; both COMPLETED. */
static void migrate_pair_p(side *src, side *dst, const char *uri, const ferry_migration_params *p)
{
	bool multifd = p->multifd;
	assert_int_equal(ferry_migration_start(src->vm, uri, p), 0);
	assert_int_equal(wait_src_converge(src->vm, p, 5), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst->vm), FERRY_MIGRATION_COMPLETED);
	ferry_migration_info si, di;
	ferry_migration_query(src->vm, &si);
	ferry_migration_query(dst->vm, &di);
	assert_int_equal(si.transferred, di.transferred);
	/* With multifd the device data went on the channels: the main one carried little. */
	if (multifd && !si.device_precopy_bytes)
		assert_true(si.transferred - si.multifd_bytes < (1u << 20));
}

/* Migrates src to dst (listening on uri), with multifd or not; both COMPLETED. */
static void migrate_pair(side *src, side *dst, const char *uri, bool multifd)
{
	ferry_migration_params p;
	dev_params(&p, multifd);
	migrate_pair_p(src, dst, uri, &p);
}

/*
 * downtime_us against the split, whose parts come from the same clock
 * readings but are computed apart: the larger of ram and device, plus
 * other, is the downtime in whole ms (other 0: the downtime ended first).
 */
static void expect_downtime_us(const ferry_migration_info *si)
{
	uint64_t most = si->downtime_ram_ms > si->downtime_device_ms ? si->downtime_ram_ms
								       : si->downtime_device_ms;
	uint64_t ms = si->downtime_us / 1000;
	if (si->downtime_other_ms)
		assert_int_equal(ms, most + si->downtime_other_ms);
	else
		assert_true(ms <= most);
	assert_int_equal(ms, si->downtime_ms);
}

/*
 * The figures of a completed migration of n "gdev" devices of DEV_SPEC's
 * 4 MiB: each buffer is one frame (16-byte header and data), so a device's
 * bytes are 4 MiB plus 16 per buffer, the same on both sides.
 */
static void expect_dev_stats(side *src, side *dst, unsigned n, bool multifd)
{
	ferry_migration_info si, di;
	ferry_migration_query(src->vm, &si);
	ferry_migration_query(dst->vm, &di);
	uint64_t total = 0;
	for (unsigned i = 0; i < n; i++) {
		ferry_live_device_stats s, d;
		assert_int_equal(ferry_live_device_stats_get(src->vm, i, &s), 0);
		assert_int_equal(ferry_live_device_stats_get(dst->vm, i, &d), 0);
		assert_string_equal(s.id, "gdev");
		assert_int_equal(d.instance, i);
		assert_int_equal(s.bytes, (4u << 20) + 16 * s.buffers);
		assert_int_equal(d.bytes, s.bytes);
		assert_int_equal(d.buffers, s.buffers);
		assert_int_equal(d.state, FERRY_LIVE_RUNNING);
		total += s.bytes;
	}
	ferry_live_device_stats x;
	assert_int_equal(ferry_live_device_stats_get(src->vm, n, &x), -ENOENT);
	assert_int_equal(si.live_devices, n);
	assert_int_equal(di.live_devices, n);
	assert_int_equal(si.device_stopcopy_bytes, total);
	assert_int_equal(di.device_stopcopy_bytes, total);
	assert_int_equal(si.device_precopy_bytes, 0);
	/* The split: on the main channel device data follows RAM. */
	if (!multifd)
		assert_true(si.downtime_device_ms >= si.downtime_ram_ms);
	assert_true(si.downtime_device_ms + si.downtime_other_ms <= si.downtime_ms + 1);
	expect_downtime_us(&si);
	/* The estimate the switch was decided on is the last pass's. */
	assert_int_equal(si.downtime_expected_us / 1000, si.expected_downtime_ms);
}

static void migrate_devices(const char *spec, unsigned n, bool multifd)
{
	side src, dst;
	const char *uri = running_pair(&src, &dst, spec);
	side_wait_steps(&src, 2048);
	migrate_pair(&src, &dst, uri, multifd);
	expect_dev_stats(&src, &dst, n, multifd);
	expect_dev_states(&src, FERRY_LIVE_STOP);
	expect_dev_states(&dst, FERRY_LIVE_RUNNING);
	assert_true(ferry_vm_is_running(dst.vm));
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

static void t_one_device(void **state)
{
	(void)state;
	migrate_devices(DEV_SPEC "devices=1", 1, false);
}

static void t_two_devices(void **state)
{
	(void)state;
	migrate_devices(DEV_SPEC "devices=2", 2, false);
}

static void t_four_devices(void **state)
{
	(void)state;
	migrate_devices(DEV_SPEC "devices=4,devrate=max", 4, false);
}

static void t_mf_one_device(void **state)
{
	(void)state;
	migrate_devices(DEV_SPEC "devices=1", 1, true);
}

static void t_mf_two_devices(void **state)
{
	(void)state;
	migrate_devices(DEV_SPEC "devices=2", 2, true);
}

static void t_mf_four_devices(void **state)
{
	(void)state;
	migrate_devices(DEV_SPEC "devices=4,devrate=max", 4, true);
}

/*
 * Device-state packets out of order: the proxy slows multifd channel 0
 * (its connection 1), so channel 1's later buffers arrive first and the
 * destination must reorder them by index. One slow device (small reads,
 * ~20 buffers): it keeps to its own channel while that has room and spills
 * onto the idle one when the delay fills it (multifd.c, pick_chan), so
 * both channels carry some (two devices would each keep to their own
 * channel, in order). The destination's `reordered`
 * count shows that it happened (about half the buffers arrive early with
 * a 5 ms delay per forwarded chunk; 1 of 21 was seen with 1 ms). Bit-exact
 * all the same.
 */
static void t_mf_out_of_order(void **state)
{
	(void)state;
	side src, dst;
	char puri[120];
	proxy *px = running_pair_proxied(&src, &dst, DEV_SPEC "devices=1,devrate=20M", puri);
	proxy_set_delay(px, 1, 5000);
	side_wait_steps(&src, 2048);
	migrate_pair(&src, &dst, puri, true);
	expect_dev_states(&dst, FERRY_LIVE_RUNNING);
	ferry_live_device_stats ds;
	assert_int_equal(ferry_live_device_stats_get(dst.vm, 0, &ds), 0);
	fprintf(stderr, "out of order: %llu of %llu buffers arrived early\n",
		(unsigned long long)ds.reordered, (unsigned long long)ds.buffers);
	assert_true(ds.reordered > 0); /* the case is what it says */
	assert_true(side_run_and_verify(&dst, 5000));
	proxy_stop(px);
	side_destroy(&src);
	side_destroy(&dst);
}

/* ---- a VM with vmsd-only and live devices (one without config) ---- */

typedef struct blob {
	uint8_t mem[3000];
	size_t pos;
	uint64_t counter; /* the vmsd-only device's state */
	int fail_at;      /* write: -EIO at this buffer (-1: never) */
	int writes;
	int fail_read_at; /* read: -EIO at this read (0: never) */
	int reads;
	uint64_t first_ns, end_ns; /* read: the first call, the one that returned 0 */
	unsigned read_ms;          /* read: a slow device, this long a call */
} blob;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int blob_state(void *o, ferry_live_state to)
{
	blob *b = o;
	if (to == FERRY_LIVE_STOP_COPY || to == FERRY_LIVE_RESUMING)
		b->pos = 0;
	return 0;
}

/* 1000 bytes a read, so several buffers. */
static ssize_t blob_read(void *o, void *buf, size_t len)
{
	blob *b = o;
	if (!b->first_ns)
		b->first_ns = now_ns();
	if (++b->reads == b->fail_read_at)
		return -EIO;
	if (b->read_ms)
		msleep(b->read_ms); /* the device's own pace, not a wait for an event */
	size_t n = sizeof(b->mem) - b->pos < 1000 ? sizeof(b->mem) - b->pos : 1000;
	if (!n)
		b->end_ns = now_ns();
	assert_true(len >= n);
	memcpy(buf, b->mem + b->pos, n);
	b->pos += n;
	return (ssize_t)n;
}

static ssize_t blob_write(void *o, const void *buf, size_t len)
{
	blob *b = o;
	if (b->writes++ == b->fail_at)
		return -EIO;
	if (len > sizeof(b->mem) - b->pos)
		return -EINVAL;
	memcpy(b->mem + b->pos, buf, len);
	b->pos += len;
	return (ssize_t)len;
}

static const ferry_live_device_ops blob_ops = {
	.set_state = blob_state, .read = blob_read, .write = blob_write,
};

static const ferry_field counter_fields[] = { FERRY_FIELD_U64(blob, counter), FERRY_FIELD_END };
static const ferry_vmsd counter_vmsd = { .name = "counter", .version = 1, .fields = counter_fields };

static void blob_attach(side *s, blob *b)
{
	assert_int_equal(ferry_live_device_register(s->vm, "blob", 7, &blob_ops, NULL, b), 0);
	assert_int_equal(ferry_device_register(s->vm, "counter", 0, &counter_vmsd, b), 0);
}

static void t_mixed_devices(void **state)
{
	(void)state;
	static blob bs, bd;
	side src, dst;
	bs = (blob){ .counter = 0x1234567887654321ull, .fail_at = -1 };
	bd = (blob){ .fail_at = -1 };
	for (size_t i = 0; i < sizeof(bs.mem); i++)
		bs.mem[i] = (uint8_t)(i * 7 + 3);
	side_create(&src, DEV_SPEC "devices=2", FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, DEV_SPEC "devices=2", FERRY_DIRTY_WP_ASYNC, true);
	blob_attach(&src, &bs);
	blob_attach(&dst, &bd);
	/* Registration rules. */
	assert_int_equal(ferry_live_device_register(src.vm, "blob", 7, &blob_ops, NULL, &bs), -EEXIST);
	assert_int_equal(ferry_live_device_register(src.vm, "", 7, &blob_ops, NULL, &bs), -EINVAL);
	ferry_live_device_ops no_read = blob_ops;
	no_read.read = NULL;
	assert_int_equal(ferry_live_device_register(src.vm, "x", 0, &no_read, NULL, &bs), -EINVAL);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	assert_int_equal(ferry_live_device_register(dst.vm, "y", 0, &blob_ops, NULL, &bd), -EBUSY);
	assert_int_equal(ferry_vm_start(src.vm), 0);
	side_wait_steps(&src, 2048);
	migrate_pair(&src, &dst, uri, false);
	assert_memory_equal(bd.mem, bs.mem, sizeof(bs.mem));
	assert_int_equal(bd.counter, bs.counter);
	assert_int_equal(bd.writes, 3);
	assert_int_equal(ferry_live_device_state(dst.vm, "blob", 7), FERRY_LIVE_RUNNING);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/*
 * x-device-save-threads 1: the devices are read one after the other, in
 * registration order (QEMU's way without multifd device state transfer),
 * and the state arrives whole all the same.
 */
static void t_serial_save(void **state)
{
	(void)state;
	enum { N = 3 };
	static blob bs[N], bd[N];
	side src, dst;
	side_create(&src, DEV_SPEC "devices=1", FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, DEV_SPEC "devices=1", FERRY_DIRTY_WP_ASYNC, true);
	for (unsigned i = 0; i < N; i++) {
		bs[i] = (blob){ .fail_at = -1, .read_ms = 5 }; /* reads overlap unless serialized */
		bd[i] = (blob){ .fail_at = -1 };
		for (size_t k = 0; k < sizeof(bs[i].mem); k++)
			bs[i].mem[k] = (uint8_t)(k * 5 + i);
		assert_int_equal(ferry_live_device_register(src.vm, "blob", i, &blob_ops, NULL, &bs[i]), 0);
		assert_int_equal(ferry_live_device_register(dst.vm, "blob", i, &blob_ops, NULL, &bd[i]), 0);
	}
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	assert_int_equal(ferry_vm_start(src.vm), 0);
	side_wait_steps(&src, 2048);
	ferry_migration_params p;
	dev_params(&p, false);
	p.device_save_threads = FERRY_LIVE_DEVICES_MAX + 1;
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), -EINVAL);
	p.device_save_threads = 1;
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	assert_int_equal(wait_final(src.vm), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
	for (unsigned i = 0; i < N; i++) {
		assert_memory_equal(bd[i].mem, bs[i].mem, sizeof(bs[i].mem));
		assert_true(bs[i].end_ns > 0);
		if (i) /* after the previous device's last read */
			assert_true(bs[i].first_ns >= bs[i - 1].end_ns);
	}
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/* ---- cancel while the save threads read ---- */

static void wait_dev_state(side *s, unsigned i, int st)
{
	for (int waited = 0; ferry_guest_dev_state(s->g, i) != st; waited++) {
		if (waited == 60000)
			fail_msg("device %u never reached state %d", i, st);
		msleep(1);
	}
}

/*
 * Cancels src's migration and checks what a cancel promises: done within
 * 1 s, CANCELLED, the source guest running and its live devices RUNNING,
 * the destination FAILED with the source's notice. Then dst listens again
 * with a fresh guest; returns its URI.
 */
static const char *cancel_and_check_thaw(side *src, side *dst, proxy *px)
{
	ferry_migration_info i;
	uint64_t t0 = now_ms();
	assert_int_equal(ferry_migration_cancel(src->vm), 0);
	assert_int_equal(wait_final(src->vm), FERRY_MIGRATION_CANCELLED);
	assert_true(now_ms() - t0 < 1000); /* a read is 10 ms of data, a wait a poll step */
	assert_true(ferry_vm_is_running(src->vm));
	expect_dev_states(src, FERRY_LIVE_RUNNING);
	/*
	 * Frozen multifd channels (px): the destination may be waiting for
	 * their SYNC when the cancel notice comes on the main connection, and
	 * it reads that only after the sync (else it sees the source close,
	 * and says its channels were behind: t_mf_cancel_at_sync). The link
	 * comes back: it gets what the channels held, then the notice.
	 */
	for (unsigned k = 1; px && k <= 2; k++)
		proxy_thaw(px, k);
	assert_int_equal(wait_final(dst->vm), FERRY_MIGRATION_FAILED);
	ferry_migration_query(dst->vm, &i);
	assert_string_equal(i.error_desc, "migration cancelled by the source");
	ferry_guest_reset(dst->g);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst->vm, uri), 0);
	return uri;
}

static const char *cancel_and_check(side *src, side *dst)
{
	return cancel_and_check_thaw(src, dst, NULL);
}

static void cancel_streaming(bool multifd)
{
	side src, dst;
	/* 4 MiB at 2 MB/s: each device reads for 2 s, in 20 KB chunks. */
	const char *spec = "mem=64M,vram=4M,vcpus=2,rate=50M,devices=2,devmem=4M,devrate=2M";
	const char *uri = running_pair(&src, &dst, spec);
	side_wait_steps(&src, 2048);
	ferry_migration_params p;
	dev_params(&p, multifd);
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	wait_status(src.vm, FERRY_MIGRATION_DEVICE);
	wait_dev_state(&src, 1, FERRY_LIVE_STOP_COPY);
	/* Promptly (the whole state would take 2 s); then again: the devices go through it all. */
	uri = cancel_and_check(&src, &dst);
	side_wait_steps(&src, 2048);
	migrate_pair(&src, &dst, uri, multifd);
	expect_dev_states(&dst, FERRY_LIVE_RUNNING);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

static void t_cancel_streaming(void **state)
{
	(void)state;
	cancel_streaming(false);
}

static void t_mf_cancel_streaming(void **state)
{
	(void)state;
	cancel_streaming(true);
}

/*
 * Cancel while the save threads wait for room on the multifd channels:
 * both channels freeze once the devices are in STOP_COPY, so fast devices
 * (64 MiB each, unlimited rate: more than the queues and socket buffers
 * hold) fill every queue and block in the carrier's put. The cancel must
 * wake them (the put's abort path) and return the devices to RUNNING. The
 * channels then thaw, so that the destination, which may wait for their
 * SYNC before it reads the cancel notice, learns of it (it waited until
 * the harness's timeout in 2 of 10 runs under ASan while they stayed
 * frozen: see the note on a destination behind a silent link).
 */
static void t_mf_cancel_blocked(void **state)
{
	(void)state;
	side src, dst;
	char puri[120];
	proxy *px = running_pair_proxied(&src, &dst, "mem=64M,vram=4M,vcpus=2,rate=50M,devices=2,"
				       "devmem=64M,devrate=max", puri);
	side_wait_steps(&src, 2048);
	ferry_migration_params p;
	dev_params(&p, true);
	p.downtime_limit_ms = 60000; /* 128 MiB of device state must not keep it from switching */
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	wait_dev_state(&src, 0, FERRY_LIVE_STOP_COPY);
	proxy_freeze(px, 1);
	proxy_freeze(px, 2);
	wait_thread_in_syscall("mig/src/dev_0", SYS_futex); /* its put waits for a slot */
	/* Again, straight to a fresh destination. */
	const char *uri = cancel_and_check_thaw(&src, &dst, px);
	proxy_stop(px);
	migrate_pair(&src, &dst, uri, true);
	expect_dev_states(&dst, FERRY_LIVE_RUNNING);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/*
 * The live devices' own multifd sync (DEV_MF_SYNC) when the source goes
 * away with the channels behind. The device streams 128 KiB at 64 KB/s
 * over the channels after RAM's final sync; while it does, the
 * destination reads the main connection (in recvfrom, not at a sync).
 * Then the channels freeze: the rest of the device's data and the
 * channels' SYNCs sit in their sockets, and DEV_MF_SYNC comes on the main
 * connection, where the destination now waits for those SYNCs. A cancel
 * closes that connection: the destination must fail at once (it looks at
 * the main connection between 100 ms waits) with the notice or the
 * orphan message, not wait for the channels forever.
 */
static void t_mf_cancel_at_dev_sync(void **state)
{
	(void)state;
	side src, dst;
	char puri[120];
	proxy *px = running_pair_proxied(&src, &dst, "mem=64M,vram=4M,vcpus=2,fill=none,rate=100K,"
				       "devices=1,devmem=128K,devrate=64K", puri);
	ferry_migration_params p;
	dev_params(&p, true);
	p.downtime_limit_ms = 60000; /* 2 s of device state must not keep it from switching */
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	wait_dev_state(&src, 0, FERRY_LIVE_STOP_COPY);
	/* Past RAM's sync, reading the main connection while the device streams. */
	wait_thread_stays_in_syscall("mig/dst/main", SYS_recvfrom);
	assert_int_equal(ferry_guest_dev_state(src.g, 0), FERRY_LIVE_STOP_COPY);
	proxy_freeze(px, 1);
	proxy_freeze(px, 2);
	/* The device's last buffers go into the frozen sockets; DEV_MF_SYNC comes. */
	wait_thread_stays_in_syscall("mig/dst/main", SYS_futex);
	cancel_at_orphaned_sync(&src, &dst);
	expect_dev_states(&src, FERRY_LIVE_RUNNING);
	proxy_stop(px);
	assert_true(side_verify(&src));
	side_destroy(&src);
	side_destroy(&dst);
}

/* ---- the loader never blocks the VMM ---- */

/*
 * A live device whose config takes APPLY_MS to apply (its post_load runs
 * under the run lock, as ferry/device.h says), so that "one device apply"
 * is a measurable time.
 */
#define APPLY_MS 40
#define SLOW_DEVICES 3

typedef struct slowcfg {
	blob data;
	uint64_t cfg;
	uint64_t apply_ns; /* the longest apply it measured */
} slowcfg;

static int slowcfg_post_load(void *o, uint32_t version)
{
	slowcfg *c = o;
	(void)version;
	uint64_t t0 = now_ns();
	/* A device programmed through slow registers: busy, not asleep. */
	while (now_ns() - t0 < APPLY_MS * 1000000ull)
		;
	if (now_ns() - t0 > c->apply_ns)
		c->apply_ns = now_ns() - t0;
	return 0;
}

static const ferry_field slowcfg_fields[] = { FERRY_FIELD_U64(slowcfg, cfg), FERRY_FIELD_END };
static const ferry_vmsd slowcfg_vmsd = { .name = "slowcfg", .version = 1, .fields = slowcfg_fields,
					 .post_load = slowcfg_post_load };

/* The embedder's other thread on the destination: run-lock calls, timed. */
typedef struct probe {
	side *dst;
	pthread_t thread;
	atomic_bool stop;
	uint64_t calls, loading_calls;
	uint64_t max_ns, loading_max_ns; /* worst call; worst while device data loads */
} probe;

static bool gdev_loading(side *s)
{
	for (unsigned i = 0; i < ferry_guest_dev_count(s->g); i++)
		if (ferry_live_device_state(s->vm, "gdev", i) == FERRY_LIVE_RESUMING)
			return true;
	return false;
}

static void *probe_thread(void *arg)
{
	probe *p = arg;
	while (!atomic_load(&p->stop)) {
		bool loading = gdev_loading(p->dst);
		uint64_t t0 = now_ns();
		(void)ferry_vm_is_running(p->dst->vm); /* takes the run lock */
		uint64_t dt = now_ns() - t0;
		p->calls++;
		p->max_ns = dt > p->max_ns ? dt : p->max_ns;
		if (loading) {
			p->loading_calls++;
			p->loading_max_ns = dt > p->loading_max_ns ? dt : p->loading_max_ns;
		}
		sched_yield();
	}
	return NULL;
}

/*
 * While 2 devices' data loads for about a second (4 MiB at 4 MB/s each)
 * and then 3 configs take APPLY_MS each under the run lock, an embedder
 * call that takes the run lock waits at most one apply: its worst latency
 * stays below twice the longest apply measured (one apply, plus as much
 * again for a loaded host's scheduling), which holding the lock across
 * the data (a second) or across all the applies (3 x APPLY_MS) would not.
 */
static void t_loader_never_blocks(void **state)
{
	(void)state;
	static slowcfg cs[SLOW_DEVICES], cd[SLOW_DEVICES];
	side src, dst;
	const char *spec = "mem=64M,vram=4M,vcpus=2,rate=50M,devices=2,devmem=4M,devrate=4M";
	side_create(&src, spec, FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, spec, FERRY_DIRTY_WP_ASYNC, true);
	for (unsigned i = 0; i < SLOW_DEVICES; i++) {
		cs[i] = (slowcfg){ .data.fail_at = -1, .cfg = 100 + i };
		cd[i] = (slowcfg){ .data.fail_at = -1 };
		assert_int_equal(ferry_live_device_register(src.vm, "slowcfg", i, &blob_ops, &slowcfg_vmsd,
							    &cs[i]), 0);
		assert_int_equal(ferry_live_device_register(dst.vm, "slowcfg", i, &blob_ops, &slowcfg_vmsd,
							    &cd[i]), 0);
	}
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	assert_int_equal(ferry_vm_start(src.vm), 0);
	side_wait_steps(&src, 2048);
	static probe p;
	p = (probe){ .dst = &dst };
	assert_int_equal(pthread_create(&p.thread, NULL, probe_thread, &p), 0);
	migrate_pair(&src, &dst, uri, false);
	atomic_store(&p.stop, true);
	pthread_join(p.thread, NULL);
	uint64_t apply_ns = 0;
	for (unsigned i = 0; i < SLOW_DEVICES; i++) {
		assert_int_equal(cd[i].cfg, 100 + i);
		apply_ns = cd[i].apply_ns > apply_ns ? cd[i].apply_ns : apply_ns;
		ferry_live_device_stats st;
		assert_int_equal(ferry_live_device_stats_get(dst.vm, 2 + i, &st), 0);
		assert_true(st.apply_ms >= APPLY_MS);
	}
	uint64_t bound_ns = 2 * apply_ns;
	print_message("loader never blocks: %llu run-lock calls (%llu while device data loaded), "
		      "worst %.3f ms (%.3f ms while loading); one apply %.3f ms, bound %.3f ms\n",
		      (unsigned long long)p.calls, (unsigned long long)p.loading_calls, p.max_ns / 1e6,
		      p.loading_max_ns / 1e6, apply_ns / 1e6, bound_ns / 1e6);
	assert_true(apply_ns >= APPLY_MS * 1000000ull);
	assert_true(p.loading_max_ns < bound_ns);
	assert_true(p.max_ns < bound_ns);
	assert_true(p.loading_calls >= 100); /* it did probe while the data loaded */
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/* ---- devices that fail ---- */

/* Two small sides with the blob devices; a migration between them that fails on both. */
static void blob_migrate(side *src, side *dst, blob *bs, blob *bd)
{
	const char *spec = "mem=16M,vram=4M,vcpus=1,rate=50M";
	side_create(src, spec, FERRY_DIRTY_WP_ASYNC, false);
	side_create(dst, spec, FERRY_DIRTY_WP_ASYNC, true);
	blob_attach(src, bs);
	blob_attach(dst, bd);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst->vm, uri), 0);
	assert_int_equal(ferry_vm_start(src->vm), 0);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	assert_int_equal(ferry_migration_start(src->vm, uri, &p), 0);
	assert_int_equal(wait_final(dst->vm), FERRY_MIGRATION_FAILED);
	assert_int_equal(wait_final(src->vm), FERRY_MIGRATION_FAILED);
}

static void t_write_fails(void **state)
{
	(void)state;
	static blob bs, bd;
	side src, dst;
	bs = (blob){ .fail_at = -1 };
	bd = (blob){ .fail_at = 2 };
	blob_migrate(&src, &dst, &bs, &bd);
	ferry_migration_info i;
	ferry_migration_query(dst.vm, &i);
	assert_string_equal(i.error_desc,
			    "live device 'blob' instance 7: write of buffer 2 failed: Input/output error");
	ferry_migration_query(src.vm, &i);
	assert_string_equal(i.error_desc, "destination failed: live device 'blob' instance 7: "
					  "write of buffer 2 failed: Input/output error");
	/* The source guest runs on, its device RUNNING again. */
	assert_true(ferry_vm_is_running(src.vm));
	assert_int_equal(ferry_live_device_state(src.vm, "blob", 7), FERRY_LIVE_RUNNING);
	side_destroy(&src);
	side_destroy(&dst);
}

/* A device whose read fails on the source: the migration fails, the guest runs on. */
static void t_read_fails(void **state)
{
	(void)state;
	static blob bs, bd;
	side src, dst;
	bs = (blob){ .fail_at = -1, .fail_read_at = 2 };
	bd = (blob){ .fail_at = -1 };
	blob_migrate(&src, &dst, &bs, &bd);
	ferry_migration_info i;
	ferry_migration_query(src.vm, &i);
	assert_string_equal(i.error_desc,
			    "live device 'blob' instance 7: read of buffer 1 failed: Input/output error");
	assert_true(ferry_vm_is_running(src.vm));
	assert_int_equal(ferry_live_device_state(src.vm, "blob", 7), FERRY_LIVE_RUNNING);
	side_destroy(&src);
	side_destroy(&dst);
}

/* ---- postcopy: the devices' state is whole before the destination runs ---- */

/* Postcopy after the first pass (never converging), with multifd and preempt or not. */
static void pc_dev_params(ferry_migration_params *p, bool multifd, bool preempt)
{
	dev_params(p, multifd);
	p->postcopy = true;
	p->postcopy_preempt = preempt;
	p->postcopy_after_passes = 1;
	p->downtime_limit_ms = 1;
}

static void dst_allow_postcopy(side *dst)
{
	ferry_migration_params ip;
	ferry_migration_params_init(&ip);
	ip.postcopy = true;
	assert_int_equal(ferry_migration_set_incoming_params(dst->vm, &ip), 0);
}

/*
 * A postcopy migration of n devices: both sides COMPLETED in postcopy, the
 * figures as precopy's, a downtime with its device part, bit-exact guest
 * RAM and device memory on the destination.
 */
static void expect_precopy_stats(side *src, side *dst, unsigned n);

static void pc_devices_x(unsigned n, bool multifd, bool preempt, bool precopy)
{
	side src, dst;
	char spec[160];
	snprintf(spec, sizeof(spec), DEV_SPEC "devices=%u%s", n, precopy ? ",devprecopy" : "");
	const char *uri = running_pair(&src, &dst, spec);
	dst_allow_postcopy(&dst);
	side_wait_steps(&src, 2048);
	ferry_migration_params p;
	pc_dev_params(&p, multifd, preempt);
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	ferry_migration_info si, di;
	wait_both_final(&src, &dst, FERRY_MIGRATION_COMPLETED, &si, &di);
	assert_true(si.postcopy && di.postcopy);
	if (precopy) /* the initial data went in the first pass, the rest at the switch */
		expect_precopy_stats(&src, &dst, n);
	else
		expect_dev_stats(&src, &dst, n, multifd);
	print_message("postcopy, %u devices%s%s: downtime %llu ms (ram %llu, device %llu, other "
		      "%llu); destination device %llu ms\n", n, multifd ? ", multifd" : "",
		      preempt ? ", preempt" : "", (unsigned long long)si.downtime_ms,
		      (unsigned long long)si.downtime_ram_ms, (unsigned long long)si.downtime_device_ms,
		      (unsigned long long)si.downtime_other_ms, (unsigned long long)di.downtime_device_ms);
	/* n x 4 MiB at 200 MB/s each: the devices' data is in the downtime. */
	assert_true(si.downtime_ms > 0 && si.downtime_device_ms > 0 && di.downtime_device_ms > 0);
	assert_true(si.downtime_ms >= si.downtime_device_ms);
	expect_downtime_us(&si); /* postcopy's own place */
	expect_dev_states(&src, FERRY_LIVE_STOP);
	expect_dev_states(&dst, FERRY_LIVE_RUNNING);
	assert_true(ferry_vm_is_running(dst.vm));
	assert_false(ferry_vm_is_running(src.vm));
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

static void pc_devices(unsigned n, bool multifd, bool preempt)
{
	pc_devices_x(n, multifd, preempt, false);
}

static void t_pc_one_device(void **s) { (void)s; pc_devices(1, false, false); }
static void t_pc_two_devices_preempt(void **s) { (void)s; pc_devices(2, false, true); }
static void t_pc_mf_one_device_preempt(void **s) { (void)s; pc_devices(1, true, true); }
static void t_pc_mf_two_devices(void **s) { (void)s; pc_devices(2, true, false); }
/* PRE_COPY devices switching to postcopy: PRE_COPY -> STOP_COPY at the switch. */
static void t_pc_precopy_devices(void **s) { (void)s; pc_devices_x(2, true, true, true); }

/* Waits until each of s's n "gdev" devices has loaded some data: their state streams. */
static void wait_dev_loaded(side *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		ferry_live_device_stats st = { 0 };
		for (int waited = 0; !st.bytes; waited++) {
			if (waited == 60000)
				fail_msg("device %u never loaded data", i);
			msleep(1);
			assert_int_equal(ferry_live_device_stats_get(s->vm, i, &st), 0);
		}
		assert_int_equal(st.state, FERRY_LIVE_RESUMING);
	}
}

/*
 * The link cut while the devices' state streams at a postcopy switch,
 * before LISTEN: the destination never ran, so the migration fails like a
 * precopy one (not paused): the source guest runs on, its devices RUNNING
 * again, and a second postcopy migration succeeds bit-exact.
 */
static void t_pc_cut_streaming(void **state)
{
	(void)state;
	side src, dst;
	char puri[120];
	/* 4 MiB at 2 MB/s: each device reads for 2 s, in 20 KB chunks. */
	const char *spec = "mem=64M,vram=4M,vcpus=2,rate=50M,devices=2,devmem=4M,devrate=2M";
	proxy *px = running_pair_proxied(&src, &dst, spec, puri);
	dst_allow_postcopy(&dst);
	side_wait_steps(&src, 2048);
	ferry_migration_params p;
	pc_dev_params(&p, false, false);
	assert_int_equal(ferry_migration_start(src.vm, puri, &p), 0);
	wait_status(src.vm, FERRY_MIGRATION_DEVICE);
	wait_dev_loaded(&dst, 2);
	proxy_cut_now(px, 0);
	assert_string_equal(wait_failed(src.vm), "lost the connection to the destination: Broken pipe");
	assert_true(ferry_vm_is_running(src.vm));
	expect_dev_states(&src, FERRY_LIVE_RUNNING);
	/* The destination was reading the devices' state (its offset: after the first pass). */
	const char *want = "the source closed the connection before the migration completed "
			   "(device state at offset ";
	assert_memory_equal(wait_failed(dst.vm), want, strlen(want));
	assert_false(ferry_vm_is_running(dst.vm));
	proxy_stop(px);
	/* Again, straight to a fresh destination. */
	ferry_guest_reset(dst.g);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	side_wait_steps(&src, 2048);
	p.downtime_limit_ms = 300; /* the devices' 2 s of data */
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	assert_int_equal(wait_final(src.vm), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
	expect_dev_states(&dst, FERRY_LIVE_RUNNING);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/* ---- PRE_COPY devices and switchover-ack ---- */

/*
 * A completed migration of n PRE_COPY "gdev": each device's bytes the same
 * on both sides, and the totals exact: what was read in PRE_COPY and in
 * STOP_COPY is what the destination wrote, split the same way.
 */
static void expect_precopy_stats(side *src, side *dst, unsigned n)
{
	ferry_migration_info si, di;
	ferry_migration_query(src->vm, &si);
	ferry_migration_query(dst->vm, &di);
	uint64_t total = 0;
	for (unsigned i = 0; i < n; i++) {
		ferry_live_device_stats s, d;
		assert_int_equal(ferry_live_device_stats_get(src->vm, i, &s), 0);
		assert_int_equal(ferry_live_device_stats_get(dst->vm, i, &d), 0);
		assert_int_equal(d.bytes, s.bytes);
		assert_int_equal(d.buffers, s.buffers);
		assert_true(s.bytes >= (4u << 20)); /* all of it at least once */
		total += s.bytes;
	}
	assert_true(si.device_precopy_bytes > 0);
	assert_int_equal(si.device_precopy_bytes + si.device_stopcopy_bytes, total);
	assert_int_equal(di.device_precopy_bytes, si.device_precopy_bytes);
	assert_int_equal(di.device_stopcopy_bytes, si.device_stopcopy_bytes);
}

/* switchover-ack on p and on dst's incoming parameters (before the stream arrives). */
static void swack_on(side *dst, ferry_migration_params *p)
{
	p->switchover_ack = true;
	ferry_migration_params ip;
	ferry_migration_params_init(&ip);
	ip.switchover_ack = true;
	assert_int_equal(ferry_migration_set_incoming_params(dst->vm, &ip), 0);
}

static void migrate_precopy(const char *spec, unsigned n, bool multifd, bool swack, bool paused)
{
	side src, dst;
	const char *uri = running_pair(&src, &dst, spec);
	side_wait_steps(&src, 2048);
	if (paused)
		assert_int_equal(ferry_vm_stop(src.vm), 0);
	ferry_migration_params p;
	dev_params(&p, multifd);
	if (swack)
		swack_on(&dst, &p);
	migrate_pair_p(&src, &dst, uri, &p);
	expect_precopy_stats(&src, &dst, n);
	expect_dev_states(&src, FERRY_LIVE_STOP);
	expect_dev_states(&dst, paused ? FERRY_LIVE_STOP : FERRY_LIVE_RUNNING);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/* The PRE_COPY cases (cmocka's initial state): the guest runs and dirties device memory, or is paused. */
typedef struct precopy_case {
	bool multifd, swack, paused;
} precopy_case;

static void t_precopy_case(void **state)
{
	const precopy_case *k = *state;
	migrate_precopy(DEV_SPEC "devices=2,devprecopy", 2, k->multifd, k->swack, k->paused);
}

/*
 * switchover-ack: with a downtime limit the first pass already meets, the
 * source would stop the guest at once; with the ack it waits until the
 * destination wrote each device's initial data (4 MiB, read at 20 MB/s:
 * about 200 ms a device). So when the source leaves ACTIVE, the
 * destination has written at least 4 MiB of every device, in precopy.
 */
static void t_swack_waits(void **state)
{
	(void)state;
	side src, dst;
	const char *uri = running_pair(&src, &dst, DEV_SPEC "devices=2,devprecopy,devrate=20M");
	side_wait_steps(&src, 2048);
	ferry_migration_params p;
	dev_params(&p, false);
	p.downtime_limit_ms = 60000;
	swack_on(&dst, &p);
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	ferry_migration_info i;
	for (int waited = 0; !ferry_migration_query(src.vm, &i) && i.status <= FERRY_MIGRATION_ACTIVE;
	     waited++) {
		if (waited == 60000)
			fail_msg("the source never switched over");
		msleep(1);
	}
	ferry_migration_info di;
	ferry_migration_query(dst.vm, &di);
	for (unsigned d = 0; d < 2; d++) {
		ferry_live_device_stats st;
		assert_int_equal(ferry_live_device_stats_get(dst.vm, d, &st), 0);
		assert_true(st.bytes >= (4u << 20));
	}
	assert_true(di.device_precopy_bytes >= (8u << 20));
	assert_int_equal(wait_final(src.vm), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
	expect_precopy_stats(&src, &dst, 2);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/* switchover-ack without PRE_COPY devices: acknowledged at once, and it completes. */
static void t_swack_no_precopy(void **state)
{
	(void)state;
	side src, dst;
	const char *uri = running_pair(&src, &dst, DEV_SPEC "devices=1");
	ferry_migration_params p;
	dev_params(&p, false);
	swack_on(&dst, &p);
	migrate_pair_p(&src, &dst, uri, &p);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/*
 * switchover-ack on one side only. On the source only (msg): refused with
 * its message, the source guest runs on. On the destination only (NULL):
 * the migration completes as if neither had it (QEMU ignores an unasked ack).
 */
static void swack_mismatch(bool on_source, const char *msg)
{
	side src, dst;
	const char *uri = running_pair(&src, &dst, DEV_SPEC "devices=1,devprecopy");
	ferry_migration_params p;
	dev_params(&p, false);
	if (on_source)
		p.switchover_ack = true;
	else
		swack_on(&dst, &(ferry_migration_params){ 0 });
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	if (!msg) { /* the destination's ack is not asked for: as if neither had it */
		assert_int_equal(wait_final(src.vm), FERRY_MIGRATION_COMPLETED);
		assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
		assert_true(side_run_and_verify(&dst, 5000));
		side_destroy(&src);
		side_destroy(&dst);
		return;
	}
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_FAILED);
	assert_int_equal(wait_final(src.vm), FERRY_MIGRATION_FAILED);
	ferry_migration_info i;
	ferry_migration_query(dst.vm, &i);
	assert_string_equal(i.error_desc, msg);
	ferry_migration_query(src.vm, &i);
	char want[256];
	snprintf(want, sizeof(want), "destination failed: %s", msg);
	assert_string_equal(i.error_desc, want);
	assert_true(ferry_vm_is_running(src.vm));
	expect_dev_states(&src, FERRY_LIVE_RUNNING);
	side_destroy(&src);
	side_destroy(&dst);
}

static void t_swack_mismatch(void **state)
{
	(void)state;
	swack_mismatch(true, "the source asks for switchover-ack but switchover-ack is not enabled "
			     "on the destination");
	swack_mismatch(false, NULL);
}

/*
 * Cancel while PRE_COPY data streams (4 MiB at 2 MB/s: 2 s of initial
 * data, and the ack holds the switchover): the devices go back to
 * RUNNING, the guest runs on, and a second migration completes.
 */
static void t_cancel_precopy(void **state)
{
	(void)state;
	side src, dst;
	const char *uri = running_pair(&src, &dst, DEV_SPEC "devices=2,devprecopy,devrate=2M");
	ferry_migration_params p;
	dev_params(&p, false);
	swack_on(&dst, &p);
	assert_int_equal(ferry_migration_start(src.vm, uri, &p), 0);
	ferry_migration_info i;
	for (int waited = 0; !ferry_migration_query(src.vm, &i) && !i.device_precopy_bytes; waited++) {
		if (waited == 60000 || i.status > FERRY_MIGRATION_ACTIVE)
			fail_msg("no precopy device data while active");
		msleep(1);
	}
	expect_dev_states(&src, FERRY_LIVE_PRE_COPY);
	uri = cancel_and_check(&src, &dst);
	side_wait_steps(&src, 2048);
	migrate_pair_p(&src, &dst, uri, &p);
	expect_precopy_stats(&src, &dst, 2);
	expect_dev_states(&dst, FERRY_LIVE_RUNNING);
	assert_true(side_run_and_verify(&dst, 5000));
	side_destroy(&src);
	side_destroy(&dst);
}

/* ---- hostile streams ---- */

/* A destination with one synthetic device ("gdev" 0, with config), RAM as DST_SPEC's. */
#define HOSTILE_SPEC DST_SPEC ",devices=1,devmem=64K"
#define LIVE_ID 3u /* any id: the destination keys PART/END on the START's */

/* SWITCHOVER_START: the destination's load threads start. */
static void switchover_start(sbuf *b)
{
	u8(b, FERRY_REC_COMMAND);
	be16(b, FERRY_CMD_SWITCHOVER_START);
	be16(b, 0);
}

/* The live devices' setup listing (name, instance): the section START. */
static void live_start(sbuf *b, const char *name, uint32_t instance)
{
	u8(b, FERRY_REC_SECTION_START);
	be32(b, LIVE_ID);
	str8(b, FERRY_LIVE_IDSTR);
	be32(b, 0);
	be32(b, FERRY_LIVE_VERSION);
	be32(b, 1);
	str8(b, name);
	be32(b, instance);
	u8(b, 1);
	be32(b, 1);
	u8(b, FERRY_REC_FOOTER);
	be32(b, LIVE_ID);
}

/*
 * The listing, SWITCHOVER_START and the state section's start. Returns the
 * offset of the listing's record.
 */
static size_t live_list(sbuf *b, const char *name, uint32_t instance)
{
	size_t at = b->len;
	live_start(b, name, instance);
	switchover_start(b);
	u8(b, FERRY_REC_SECTION_END);
	be32(b, LIVE_ID);
	return at;
}

/* A vmsd field entry's header (docs/wire-format.md, "Field entry"). */
static void vmsd_field(sbuf *b, uint8_t type, const char *name, uint32_t size)
{
	u8(b, 1);
	u8(b, type);
	str8(b, name);
	be32(b, size);
}

/* Header, RAM setup, live_list. */
static size_t live_setup(sbuf *b, const char *name, uint32_t instance)
{
	header(b);
	ram_setup(b);
	return live_list(b, name, instance);
}

/* "gdev" 0's config: fields index (u32) 0, size (u64) 64 KiB, seed (u64) 1. */
static void gdev_config(sbuf *b)
{
	u8(b, FERRY_DEV_CONFIG);
	be32(b, 0);
	be32(b, 1);
	be32(b, 55);
	vmsd_field(b, FERRY_FT_U32, "index", 4);
	be32(b, 0);
	vmsd_field(b, FERRY_FT_U64, "size", 8);
	be64(b, 65536);
	vmsd_field(b, FERRY_FT_U64, "seed", 8);
	be64(b, 1);
	u8(b, 0);
}

/* A DEV_STATE record's tag and header. */
static void dev_hdr(sbuf *b, uint32_t dev, uint32_t index, uint32_t flags, uint32_t len)
{
	u8(b, FERRY_DEV_STATE);
	be32(b, dev);
	be32(b, index);
	be32(b, flags);
	be32(b, len);
}

/* One "gdev" frame (24 bytes): 8 bytes at offset `at`. */
static void gdev_frame(sbuf *b, uint64_t at)
{
	be32(b, 0x46444556);
	be32(b, 8);
	be64(b, at);
	be64(b, 0x0102030405060708ull);
}

/* A DEV_STATE record holding one "gdev" frame of 8 bytes at offset `at`. */
static void dev_frame(sbuf *b, uint32_t index, uint64_t at)
{
	dev_hdr(b, 0, index, 0, 24);
	gdev_frame(b, at);
}

/*
 * The hostile streams: each builder writes one into b and returns the
 * offset of the record the destination must name.
 */
static size_t h_unknown_device(sbuf *b)
{
	return live_setup(b, "nic", 0);
}

static size_t h_missing_device(sbuf *b)
{
	header(b);
	ram_setup(b);
	u8(b, FERRY_REC_EOF);
	return b->len - 1;
}

/*
 * Postcopy advised (flags 0), the device list, then LISTEN and a package
 * holding only RUN: the devices' state must come before it. Returns the
 * offset of RUN in the package.
 */
static size_t h_postcopy(sbuf *b)
{
	header(b);
	u8(b, FERRY_REC_COMMAND);
	be16(b, FERRY_CMD_POSTCOPY_ADVISE);
	be16(b, 4);
	be32(b, 0);
	ram_setup(b);
	live_start(b, "gdev", 0);
	u8(b, FERRY_REC_COMMAND);
	be16(b, FERRY_CMD_POSTCOPY_LISTEN);
	be16(b, 0);
	u8(b, FERRY_REC_COMMAND);
	be16(b, FERRY_CMD_POSTCOPY_PACKAGE);
	be16(b, 4);
	be32(b, 6);
	u8(b, FERRY_REC_COMMAND);
	be16(b, FERRY_CMD_POSTCOPY_RUN);
	be16(b, 1);
	u8(b, 1);
	return 0;
}

static size_t h_unknown_number(sbuf *b)
{
	live_setup(b, "gdev", 0);
	dev_hdr(b, 5, 0, 0, 24);
	put(b, (uint8_t[24]){ 0 }, 24);
	return b->len - 41;
}

static size_t h_duplicate(sbuf *b)
{
	live_setup(b, "gdev", 0);
	dev_frame(b, 0, 0);
	dev_frame(b, 0, 0);
	return b->len - 41;
}

static size_t h_too_far(sbuf *b)
{
	live_setup(b, "gdev", 0);
	dev_frame(b, 0, 0);
	dev_frame(b, 65, 0);
	return b->len - 41;
}

static size_t h_no_end(sbuf *b)
{
	live_setup(b, "gdev", 0);
	dev_frame(b, 0, 0);
	dev_frame(b, 1, 0);
	u8(b, FERRY_DEV_EOS);
	return b->len - 1;
}

static size_t h_gap(sbuf *b)
{
	live_setup(b, "gdev", 0);
	dev_frame(b, 1, 0);
	dev_hdr(b, 0, 2, FERRY_DEV_F_END, 0);
	u8(b, FERRY_DEV_EOS);
	return b->len - 1;
}

static size_t h_oversized(sbuf *b)
{
	live_setup(b, "gdev", 0);
	dev_hdr(b, 0, 0, 0, FERRY_DEV_BUF_MAX + 1);
	return b->len - 17;
}

/* The list says PRE_COPY (flags 3), the destination's device is not. */
static size_t h_precopy_mismatch(sbuf *b)
{
	header(b);
	ram_setup(b);
	size_t at = b->len;
	live_start(b, "gdev", 0);
	b->p[at + 1 + 4 + 1 + strlen(FERRY_LIVE_IDSTR) + 4 + 4 + 4 + 1 + 4 + 4] = 3;
	return at;
}

/* Precopy data (a PART): with an INIT marker, or an END marker. */
static size_t h_precopy_marker(sbuf *b, uint32_t flags)
{
	header(b);
	ram_setup(b);
	live_start(b, "gdev", 0);
	u8(b, FERRY_REC_SECTION_PART);
	be32(b, LIVE_ID);
	dev_hdr(b, 0, 0, flags, 0);
	return b->len - 17;
}

static size_t h_init_not_precopy(sbuf *b)
{
	return h_precopy_marker(b, FERRY_DEV_F_INIT);
}

static size_t h_end_in_precopy(sbuf *b)
{
	return h_precopy_marker(b, FERRY_DEV_F_END);
}

/* A frame past the device's memory: the write fails, nothing is written (no offset). */
static size_t h_bad_frame(sbuf *b)
{
	live_setup(b, "gdev", 0);
	dev_frame(b, 0, 65536 - 4);
	dev_hdr(b, 0, 1, FERRY_DEV_F_END, 0);
	gdev_config(b);
	u8(b, FERRY_DEV_EOS);
	u8(b, FERRY_REC_FOOTER);
	be32(b, LIVE_ID);
	u8(b, FERRY_REC_EOF);
	return SIZE_MAX;
}

static void t_hostile(void **state)
{
	(void)state;
	static const struct {
		size_t (*build)(sbuf *b);
		const char *msg;
		const char *ctx; /* the record named with the offset */
		bool postcopy;   /* the destination allows postcopy */
	} cases[] = {
		{ h_unknown_device, "unknown live device 'nic' instance 0", "live device list" },
		{ h_missing_device, "live device 'gdev' instance 0 is not in the stream", "record" },
		{ h_postcopy, "no live device state before the vCPUs start", "command", true },
		{ h_unknown_number, "state of live device number 5 (1 devices)", "device state" },
		{ h_duplicate, "live device 'gdev' instance 0: duplicate buffer index 0", "device state" },
		{ h_too_far, "live device 'gdev' instance 0: buffer index 65 is 64 ahead of 1 "
			     "(x-device-state-max-queued 64)", "device state" },
		{ h_no_end, "live device 'gdev' instance 0: no end of state marker (2 buffers "
			    "received)", "device state" },
		{ h_gap, "live device 'gdev' instance 0: buffer index 0 missing (end marker after 2 "
			 "buffers)", "device state" },
		{ h_oversized, "device 0 buffer 0 of 1048577 bytes (1..1048576)", "device state" },
		{ h_bad_frame, "live device 'gdev' instance 0: write of buffer 0 failed: Invalid "
			       "argument", NULL },
		{ h_precopy_mismatch, "live device 'gdev' instance 0: PRE_COPY in the stream, not here",
		  "live device list" },
		{ h_init_not_precopy, "live device 'gdev' instance 0: initial data marker, but the "
				      "device is not PRE_COPY", "device state" },
		{ h_end_in_precopy, "device 0: end of state marker in precopy", "device state" },
	};
	static sbuf b;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[320];
		b.len = 0;
		size_t at = cases[i].build(&b);
		if (cases[i].ctx)
			snprintf(want, sizeof(want), "%s (%s at offset %zu)", cases[i].msg, cases[i].ctx, at);
		else
			snprintf(want, sizeof(want), "%s", cases[i].msg);
		assert_string_equal(feed_stream_spec(HOSTILE_SPEC, b.p, b.len, cases[i].postcopy), want);
	}
}

/* ---- hostile device-state packets on a multifd channel ---- */

/* A device-state packet: its headers (DEV_STATE's with `flags`), and a gdev frame if len is 24. */
static void mf_dev(sbuf *b, uint32_t dev, uint32_t index, uint32_t flags, uint32_t len)
{
	pkt_header(b, FERRY_MF_DEVICE, 0, 0, 0, 1 + index);
	be32(b, dev);
	be32(b, index);
	be32(b, flags);
	be32(b, len);
	if (len == 24)
		gdev_frame(b, 0);
}

/*
 * A destination with "gdev" 0 and one multifd channel, fed by hand. Main:
 * header, MULTIFD, RAM's setup, the device list, SWITCHOVER_START, a
 * pass's MULTIFD_SYNC, then the state section's END: DEV_MF_SYNC and
 * `tail` (NULL: nothing). Channel 0: a SYNC, pkts, a SYNC. Returns the
 * destination's error (static buffer).
 */
static const char *mf_feed(const sbuf *pkts, void (*tail)(sbuf *b))
{
	static char msg[256];
	static sbuf b;
	static const uint8_t uuid[16] = { 1 }; /* header()'s */
	side dst;
	side_create(&dst, HOSTILE_SPEC, FERRY_DIRTY_EXPLICIT, true);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	b.len = 0;
	header(&b);
	u8(&b, FERRY_REC_COMMAND);
	be16(&b, FERRY_CMD_MULTIFD);
	be16(&b, 5);
	be32(&b, 1);
	u8(&b, 0);
	ram_setup(&b);
	live_start(&b, "gdev", 0);
	switchover_start(&b);
	u8(&b, FERRY_REC_SECTION_PART);
	be32(&b, 1);
	be64(&b, FERRY_RAM_MULTIFD_SYNC);
	be64(&b, FERRY_RAM_EOS);
	u8(&b, FERRY_REC_FOOTER);
	be32(&b, 1);
	u8(&b, FERRY_REC_SECTION_END);
	be32(&b, LIVE_ID);
	u8(&b, FERRY_DEV_MF_SYNC);
	if (tail)
		tail(&b);
	int mfd = uconnect(uri);
	sendb(mfd, &b);
	b.len = 0;
	handshake(&b, uuid, 0, 1);
	pkt_header(&b, FERRY_MF_SYNC, 0, 0, 0, 0);
	put(&b, pkts->p, pkts->len);
	pkt_header(&b, FERRY_MF_SYNC, 0, 0, 0, 99);
	int cfd = uconnect(uri);
	sendb(cfd, &b);
	snprintf(msg, sizeof(msg), "%s", wait_failed(dst.vm));
	close(cfd);
	close(mfd);
	side_destroy(&dst);
	return msg;
}

/* After DEV_MF_SYNC: the end marker after 2 buffers, the config, the end of the body. */
static void tail_two(sbuf *b)
{
	dev_hdr(b, 0, 2, FERRY_DEV_F_END, 0);
	gdev_config(b);
	u8(b, FERRY_DEV_EOS);
}

static void t_mf_hostile(void **state)
{
	(void)state;
	static sbuf p;
	p.len = 0;
	mf_dev(&p, 5, 0, 0, 24);
	assert_string_equal(mf_feed(&p, NULL), "multifd channel 0: state of live device number 5 "
			    "(1 devices) (multifd device state at offset 96)");
	p.len = 0;
	mf_dev(&p, 0, 0, 0, 24);
	mf_dev(&p, 0, 0, 0, 24);
	assert_string_equal(mf_feed(&p, NULL), "multifd channel 0: live device 'gdev' instance 0: "
			    "duplicate buffer index 0 (multifd device state at offset 168)");
	p.len = 0;
	mf_dev(&p, 0, 0, 0, 24);
	mf_dev(&p, 0, 65, 0, 24);
	assert_string_equal(mf_feed(&p, NULL), "multifd channel 0: live device 'gdev' instance 0: "
			    "buffer index 65 is 64 ahead of 1 (x-device-state-max-queued 64) "
			    "(multifd device state at offset 168)");
	p.len = 0;
	mf_dev(&p, 0, 0, 0, FERRY_DEV_BUF_MAX + 1);
	assert_string_equal(mf_feed(&p, NULL), "multifd channel 0: device 0 buffer 0 of 1048577 "
			    "bytes (1..1048576) (multifd device state at offset 96)");
	p.len = 0;
	mf_dev(&p, 0, 0, FERRY_DEV_F_END, 0);
	assert_string_equal(mf_feed(&p, NULL), "multifd channel 0: device 0 buffer 0: unknown "
			    "flags 0x1 (multifd device state at offset 96)");
	/* Index 0 never comes: after the channel's SYNC, the end marker names it at DEV_EOS (byte 283). */
	p.len = 0;
	mf_dev(&p, 0, 1, 0, 24);
	assert_string_equal(mf_feed(&p, tail_two), "live device 'gdev' instance 0: buffer index 0 "
			    "missing (end marker after 2 buffers) (device state at offset 283)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_one_device),
		cmocka_unit_test(t_two_devices),
		cmocka_unit_test(t_four_devices),
		cmocka_unit_test(t_mf_one_device),
		cmocka_unit_test(t_mf_two_devices),
		cmocka_unit_test(t_mf_four_devices),
		cmocka_unit_test(t_mf_out_of_order),
		cmocka_unit_test(t_mixed_devices),
		cmocka_unit_test(t_serial_save),
		cmocka_unit_test(t_cancel_streaming),
		cmocka_unit_test(t_mf_cancel_streaming),
		cmocka_unit_test(t_mf_cancel_blocked),
		cmocka_unit_test(t_mf_cancel_at_dev_sync),
		cmocka_unit_test(t_loader_never_blocks),
		cmocka_unit_test(t_write_fails),
		cmocka_unit_test(t_read_fails),
		{ "t_precopy", t_precopy_case, NULL, NULL, &(precopy_case){ 0 } },
		{ "t_mf_precopy", t_precopy_case, NULL, NULL, &(precopy_case){ .multifd = true } },
		{ "t_precopy_paused", t_precopy_case, NULL, NULL,
		  &(precopy_case){ .swack = true, .paused = true } },
		{ "t_mf_precopy_swack", t_precopy_case, NULL, NULL,
		  &(precopy_case){ .multifd = true, .swack = true } },
		cmocka_unit_test(t_swack_waits),
		cmocka_unit_test(t_swack_no_precopy),
		cmocka_unit_test(t_swack_mismatch),
		cmocka_unit_test(t_cancel_precopy),
		cmocka_unit_test(t_pc_one_device),
		cmocka_unit_test(t_pc_two_devices_preempt),
		cmocka_unit_test(t_pc_mf_one_device_preempt),
		cmocka_unit_test(t_pc_mf_two_devices),
		cmocka_unit_test(t_pc_cut_streaming),
		cmocka_unit_test(t_pc_precopy_devices),
		cmocka_unit_test(t_hostile),
		cmocka_unit_test(t_mf_hostile),
	};
	if (getenv("FERRY_TEST_FILTER")) /* e.g. t_mf_two_devices, or t_mf_* */
		cmocka_set_test_filter(getenv("FERRY_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
