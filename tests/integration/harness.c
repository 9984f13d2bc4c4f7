/* SPDX-License-Identifier: MIT */
/* Helpers for in-process migration tests (see harness.h). */
#include "harness.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

void side_create(side *s, const char *spec, ferry_dirty_mode mode, bool incoming)
{
	ferry_guest_config cfg;
	char err[256];
	ferry_guest_config_init(&cfg);
	assert_int_equal(ferry_guest_config_parse(&cfg, spec, err, sizeof(err)), 0);
	ferry_vm_options o = { .dirty_mode = mode };
	assert_int_equal(ferry_vm_create(&o, &s->vm), 0);
	assert_int_equal(ferry_guest_create(&cfg, incoming, &s->g), 0);
	assert_int_equal(ferry_guest_attach(s->g, s->vm), 0);
}

void side_destroy(side *s)
{
	ferry_vm_destroy(s->vm);
	ferry_guest_destroy(s->g);
	s->vm = NULL;
	s->g = NULL;
}

const char *test_uri(void)
{
	static char uri[128];
	static int n;
	snprintf(uri, sizeof(uri), "unix:/tmp/ferry-test-%d-%d.sock", (int)getpid(), n++);
	return uri;
}

bool side_verify(side *s)
{
	ferry_vm_stop(s->vm);
	ferry_verify_result v;
	assert_int_equal(ferry_guest_verify(s->g, &v), 0);
	if (!v.matches)
		fprintf(stderr, "verify: first difference in %s page %llu\n", v.block,
			(unsigned long long)v.page);
	return v.matches;
}

bool side_run_and_verify(side *s, uint64_t n)
{
	uint64_t t[FERRY_GUEST_MAX_VCPUS];
	ferry_vm_stop(s->vm);
	ferry_guest_steps(s->g, t);
	for (unsigned i = 0; i < ferry_guest_vcpus(s->g); i++)
		t[i] += ferry_guest_get_config(s->g)->workload == FERRY_WL_IDLE ? 0 : n;
	assert_int_equal(ferry_guest_run_until(s->g, t), 0);
	return side_verify(s);
}

int wait_final(ferry_vm_t *vm)
{
	int st = ferry_migration_wait(vm, 120000);
	assert_int_not_equal(st, -ETIMEDOUT);
	return st;
}

void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}
