/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the placer's failure (src/lib/migration/place.h): two
 * placing threads take queued jobs in any order, so a later job may fail
 * before an earlier one; the failure reported is still the one of the
 * earliest job in the stream, every time. A block whose fd is read-only
 * makes every pwrite() fail at once: a race of the two threads per run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "migration/place.h"
#include "stream/chan.h"

#define JOB_PAGES 1u
#define JOBS 8u
#define PAGES (JOB_PAGES * JOBS)
#define RUNS 3000

static void t_placer_first_failure(void **state)
{
	(void)state;
	size_t len = (size_t)PAGES * FERRY_PAGE_SIZE;
	int fd = memfd_create("placer", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	uint8_t *ram = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(ram != MAP_FAILED);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int rofd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(rofd >= 0);
	ferry_vm_options o = { .dirty_mode = FERRY_DIRTY_EXPLICIT };
	ferry_vm_t *vm;
	assert_int_equal(ferry_vm_create(&o, &vm), 0);
	ferry_ram_block_t *rb;
	assert_int_equal(ferry_ram_block_add(vm, "ram", ram, len, rofd, &rb), 0);
	rb->place = FERRY_PLACE_PWRITE;
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	const char *want = "cannot write page 0 of RAM block 'ram': Bad file descriptor";
	for (int run = 0; run < RUNS; run++) {
		ferry_chan c;
		assert_int_equal(ferry__chan_init(&c, dup(sp[0])), 0);
		struct ferry_placer *pl = ferry__placer_start();
		if (!pl) /* one CPU: no placing threads, nothing to race */
			skip();
		int r = 0;
		for (unsigned j = 0; j < JOBS && !r; j++) {
			/* Pushed at once (the data does not matter), before a thread wakes. */
			if (ferry__placer_slot(&c, pl, &r))
				ferry__placer_push(pl, rb, (uint64_t)j * JOB_PAGES, JOB_PAGES, false);
		}
		if (!r)
			r = ferry__placer_drain(&c, pl);
		ferry__placer_stop(pl);
		assert_int_equal(r, -EBADF);
		if (strncmp(c.in_err.msg, want, strlen(want)))
			fail_msg("run %d: '%s', want '%s...'", run, c.in_err.msg, want);
		ferry__chan_close(&c);
	}
	close(sp[0]);
	close(sp[1]);
	ferry_vm_destroy(vm);
	munmap(ram, len);
	close(rofd);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_placer_first_failure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
