/* SPDX-License-Identifier: MIT */
/*
 * A virtqueue with requests in flight, through a real migration: the
 * guest's driver (vring-drv.c, its rings and state in guest RAM) posts
 * requests to a device (ferry_vq over the guest's physical layout); the
 * device takes some, completes some; the guest keeps running its workload
 * and posts more while RAM moves. At switchover the queue's state (in
 * flight: taken, not completed) goes in the stream with the device state,
 * the rings with RAM. On the destination the device hands out the in-flight
 * requests again (ferry_vq_pop_inflight), then the ones it never took; the
 * driver, re-attached to its rings there, reaps every answer exactly once,
 * each one right. The rest of RAM matches the never-migrated twin.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "harness.h"
#include "vring-drv.h"

#define NUM 32 /* ring entries */
#define REQ_OFF 0x20000 /* request buffers: 16 bytes each, from here in the virtio area */
#define NREQ 12

typedef struct vside {
	side s;
	ferry_gpa_map_t *map;
	ferry_vq_t *vq;
	uint8_t *host; /* the virtio area */
	uint64_t gpa;
	uint64_t size;
} vside;

static void vside_create(vside *x, const char *spec, bool incoming)
{
	memset(x, 0, sizeof(*x));
	side_create(&x->s, spec, FERRY_DIRTY_WP_ASYNC, incoming);
	ferry_gpa_region reg[4];
	int n = ferry_guest_gpa_regions(x->s.g, reg, 4);
	assert_true(n > 0);
	assert_int_equal(ferry_gpa_map_create(reg, (unsigned)n, &x->map), 0);
	assert_int_equal(ferry_vq_create(x->map, &x->vq), 0);
	assert_int_equal(ferry_device_register(x->s.vm, "reqdev", 0, ferry_vq_vmsd(), x->vq), 0);
	ferry_guest_virtio_area(x->s.g, &x->host, &x->gpa, &x->size);
	assert_true(x->size >= REQ_OFF + 16 * NREQ);
}

static void vside_destroy(vside *x)
{
	side_destroy(&x->s);
	ferry_vq_destroy(x->vq);
	ferry_gpa_map_destroy(x->map);
}

/* Request i: a readable u32 (its number), then an 8-byte answer slot. */
static void post(vside *x, ferry_gvq *q, uint32_t i)
{
	uint64_t off = REQ_OFF + 16ull * i;
	memcpy(x->host + off, &i, 4);
	ferry_gbuf out = { x->gpa + off, 4 }, in = { x->gpa + off + 8, 8 };
	assert_true(ferry_gvq_add(q, &out, 1, &in, 1, i % 2 == 1) >= 0);
}

/* The device's work: answer = number * 7 + 1. */
static void complete(vside *x, const ferry_vq_elem *e, unsigned *done)
{
	uint32_t n;
	assert_int_equal(e->out_num, 1);
	assert_int_equal(e->in_num, 1);
	memcpy(&n, e->iov[0].iov_base, 4);
	assert_true(n < NREQ);
	uint64_t a = (uint64_t)n * 7 + 1;
	memcpy(e->iov[1].iov_base, &a, 8);
	assert_int_equal(ferry_vq_push(x->vq, e->head, 8), 0);
	done[n]++;
}

static void t_inflight_across_migration(void **state)
{
	(void)state;
	const char *spec = "mem=128M,vram=4M,vcpus=2,workload=random,rate=50M,virtio";
	vside src, dst;
	unsigned done[NREQ] = { 0 };
	vside_create(&src, spec, false);
	vside_create(&dst, spec, true);

	/* The guest's driver lays out its queue; the device takes it. */
	ferry_gvq q;
	assert_int_equal(ferry_gvq_init(&q, src.host, src.gpa, REQ_OFF, NUM,
					1ull << VIRTIO_RING_F_EVENT_IDX |
						1ull << VIRTIO_RING_F_INDIRECT_DESC),
			 0);
	ferry_vq_config cfg;
	ferry_gvq_config(&q, &cfg);
	assert_int_equal(ferry_vq_setup(src.vq, &cfg), 0);

	assert_int_equal(ferry_vm_start(src.s.vm), 0);
	for (uint32_t i = 0; i < 10; i++)
		post(&src, &q, i);
	/* The device takes 6 and completes the 2nd and the 5th. */
	ferry_vq_elem held[6];
	struct iovec hiov[6][2];
	for (int i = 0; i < 6; i++) {
		held[i] = (ferry_vq_elem){ .iov = hiov[i], .cap = 2 };
		assert_int_equal(ferry_vq_pop(src.vq, &held[i]), 1);
	}
	complete(&src, &held[1], done);
	complete(&src, &held[4], done);
	assert_int_equal(ferry_vq_inflight(src.vq), 4);

	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.downtime_limit_ms = 50;
	p.max_bandwidth = 200ull << 20; /* a few passes: the posts below land mid-migration */
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.s.vm, uri), 0);
	assert_int_equal(ferry_migration_start(src.s.vm, uri, &p), 0);
	ferry_migration_info mi;
	wait_transferred(src.s.vm, 1 << 20, &mi);
	/* While RAM moves the guest posts two more; the device does not take them. */
	post(&src, &q, 10);
	post(&src, &q, 11);
	assert_int_equal(wait_src_converge(src.s.vm, &p, 5), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst.s.vm), FERRY_MIGRATION_COMPLETED);
	ferry_migration_info si;
	ferry_migration_query(src.s.vm, &si);
	fprintf(stderr, "vq: %u passes, downtime %llu ms, %llu pages\n", si.pass,
		(unsigned long long)si.downtime_ms, (unsigned long long)si.normal);
	assert_true(si.pass >= 2);

	/* Destination: the device state says 4 in flight; the rings came with RAM. */
	assert_true(ferry_vq_ready(dst.vq));
	assert_false(ferry_vq_is_broken(dst.vq));
	assert_int_equal(ferry_vq_inflight(dst.vq), 4);
	struct iovec iov[4];
	ferry_vq_elem e = { .iov = iov, .cap = 4 };
	unsigned redelivered = 0, fresh = 0;
	while (ferry_vq_pop_inflight(dst.vq, &e) == 1) {
		complete(&dst, &e, done);
		redelivered++;
	}
	while (ferry_vq_pop(dst.vq, &e) == 1) {
		complete(&dst, &e, done);
		fresh++;
	}
	assert_int_equal(redelivered, 4);
	assert_int_equal(fresh, 6);
	for (unsigned i = 0; i < NREQ; i++)
		if (done[i] != 1)
			fail_msg("request %u completed %u times", i, done[i]);

	/* The guest's driver, re-attached there, reaps every answer once. */
	ferry_gvq dq;
	assert_int_equal(ferry_gvq_attach(&dq, dst.host, dst.gpa, REQ_OFF), 0);
	unsigned reaped = 0;
	uint32_t len;
	int h;
	while ((h = ferry_gvq_get_used(&dq, &len)) >= 0) {
		assert_int_equal(len, 8);
		reaped++;
	}
	assert_int_equal(h, -EAGAIN);
	assert_int_equal(reaped, NREQ);
	assert_int_equal(ferry_gvq_outstanding(&dq), 0);
	for (uint32_t i = 0; i < NREQ; i++) {
		uint64_t a;
		memcpy(&a, dst.host + REQ_OFF + 16ull * i + 8, 8);
		if (a != (uint64_t)i * 7 + 1)
			fail_msg("request %u: answer %llu", i, (unsigned long long)a);
	}
	assert_int_equal(ferry_vq_inflight(dst.vq), 0);
	assert_false(ferry_vq_is_broken(dst.vq));
	/* Everything outside the virtio area matches the twin. */
	assert_true(side_run_and_verify(&dst.s, 2000));
	vside_destroy(&src);
	vside_destroy(&dst);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_inflight_across_migration),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
