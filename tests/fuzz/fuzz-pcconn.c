/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for postcopy's connections besides the first main one,
 * past their openings (which fuzz-hs.c fuzzes): the preempt connection
 * (mig/dst/preempt's loader: requested pages, placed while mig/dst/listen
 * places the background), and a recovery (postcopy-dst.c, pc_resume): the
 * recovered main connection's opening and background stream, with its
 * own preempt connection, after the resync's MISSING bitmaps went out.
 * What pcstream covers (the main connection up to and after the switch)
 * is reached here too, now with a preempt connection beside it, and the
 * fault path: a vCPU thread reads every page once the guest runs, so
 * mig/dst/fault requests the pages not placed yet, and what the input
 * brings answers them or not.
 *
 * Entry point: the public one. The destination listens
 * (ferry_migration_incoming_fd on a listening socket, which preempt
 * needs); the target connects the main connection, then the preempt
 * connection. The preempt connection stays open until the destination
 * has closed the main one, as a source keeps it (fuzz-dest.h's hold):
 * shut at once, its end would pause the destination before the main
 * connection's data was read. If the migration is then
 * POSTCOPY_PAUSED and the input has a recovered main connection, the
 * target hands the destination a new listener
 * (ferry_migration_recover_fd) and connects the recovered connections
 * to it, the same way.
 *
 * Oracles, beyond the sanitizers: fuzz-dest.h's (the migration ends
 * COMPLETED, FAILED with an error code and a message, or POSTCOPY_PAUSED,
 * where cancel is refused); a paused destination takes the recovery
 * listener (ferry_migration_recover_fd returns 0); a vCPU waiting in a
 * fault is woken by the end of postcopy or of the VM; none hangs
 * (libFuzzer's -timeout: the destination's x-link-timeout is 100 ms, so
 * a wait for requested pages that never come, pc_drain's, ends in time).
 *
 * Input layout: up to four connections' bytes, in connect order: the
 * main connection, the preempt connection, the recovered main connection
 * and its preempt connection, each but the last after its be32 length
 * (clamped to what the input has). A preempt connection of no bytes is
 * not made; a recovered main connection of no bytes is no recovery.
 * Seeds: postcopy migrations with preempt (and one without) that a real
 * source of fuzz-vm.h's VM sent, the main connection cut after the
 * switch, pages requested on the preempt connection before the cut, then
 * recovered (gen-corpus.py pcconn, through tests/fuzz/capture.c).
 *
 * Built by tests/fuzz/run.sh with every library source. Thread:
 * libFuzzer's one thread, with the destination's own threads.
 */
#include <pthread.h>

#include "fuzz-dest.h"

enum { CONNS = 4 };

/*
 * The destination guest's vCPU: once the guest runs (RUN), it reads a
 * byte of every page, a missing-page fault for each page not placed yet,
 * which mig/dst/fault requests (REQ_PAGES, dropped by the target) and
 * whatever the input's connections bring may answer. A fault that
 * nothing answers waits for postcopy's end, which unregisters RAM, or the
 * VM's (fuzz_dest_renew).
 */
enum { VCPU_WAITING, VCPU_READING, VCPU_DONE };
static struct {
	pthread_t t;
	atomic_int state;
	atomic_bool stop; /* the input is done: no more waiting for RUN */
	uint8_t *pages[8];
} vcpu;

static void *vcpu_main(void *arg)
{
	(void)arg;
	/* The VM handle is used only while WAITING: see vcpu_join. */
	while (!ferry_vm_is_running(fuzz_dst.vm)) {
		if (atomic_load(&vcpu.stop)) {
			atomic_store(&vcpu.state, VCPU_DONE);
			return NULL;
		}
		usleep(100);
	}
	atomic_store(&vcpu.state, VCPU_READING);
	unsigned sum = 0;
	for (unsigned i = 0; i < 8; i++)
		sum += *(volatile uint8_t *)vcpu.pages[i];
	(void)sum;
	atomic_store(&vcpu.state, VCPU_DONE);
	return NULL;
}

static void vcpu_start(void)
{
	for (unsigned i = 0; i < 8; i++)
		vcpu.pages[i] = i < 4 ? fuzz_dst.ram0 + i * FUZZ_PAGE
			      : i < 7 ? fuzz_dst.ram1 + (i - 4) * FUZZ_PAGE
				      : fuzz_dst.rom;
	atomic_store(&vcpu.state, VCPU_WAITING);
	atomic_store(&vcpu.stop, false);
	CHECK(pthread_create(&vcpu.t, NULL, vcpu_main, NULL) == 0);
}

/* The input is done: the vCPU stops waiting, or reads on (RAM only) until the VM is gone. */
static void vcpu_stop(void)
{
	atomic_store(&vcpu.stop, true);
	while (atomic_load(&vcpu.state) == VCPU_WAITING)
		usleep(50);
}

/* fuzz_dst_vm_gone: the VM is destroyed, so no fault waits any more. */
static void vcpu_join(void)
{
	CHECK(pthread_join(vcpu.t, NULL) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_dst_link_timeout_ms = 100;
	fuzz_dst_vm_gone = vcpu_join;
	fuzz_dest_init(true);
	return 0;
}

/*
 * Connects a main connection (and a preempt one, if it has bytes) to
 * listener k and feeds them until the destination closed the main one.
 */
static void feed(unsigned k, const uint8_t *const seg[2], const size_t len[2])
{
	fuzz_conn cs[2] = { { .fd = fuzz_connect("pcconn", k), .data = seg[0], .len = len[0] } };
	unsigned n = 1;
	if (len[1])
		cs[n++] = (fuzz_conn){ .fd = fuzz_connect("pcconn", k), .data = seg[1],
				       .len = len[1], .hold = true };
	fuzz_dest_pump(cs, n);
	for (unsigned i = 0; i < n; i++)
		close(cs[i].fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *seg[CONNS];
	size_t len[CONNS], off = 0;
	for (unsigned i = 0; i < CONNS; i++) {
		size_t n = size - off;
		if (i + 1 < CONNS) { /* be32 length, clamped */
			if (n < 4) {
				n = 0;
			} else {
				const uint8_t *b = data + off;
				size_t k = (size_t)b[0] << 24 | (size_t)b[1] << 16 | (size_t)b[2] << 8 | b[3];
				off += 4;
				n = k < size - off ? k : size - off;
			}
		}
		seg[i] = data + off;
		len[i] = n;
		off += n;
	}
	if (!len[0])
		return 0;
	vcpu_start();
	CHECK(ferry_migration_incoming_fd(fuzz_dst.vm, fuzz_listen("pcconn", 0)) == 0);
	feed(0, seg, len);
	int st = fuzz_dest_wait();
	if (st == FERRY_MIGRATION_POSTCOPY_PAUSED && len[2]) {
		CHECK(ferry_migration_recover_fd(fuzz_dst.vm, fuzz_listen("pcconn", 1)) == 0);
		feed(1, seg + 2, len + 2);
	}
	fuzz_dest_finish();
	vcpu_stop();
	fuzz_dest_renew();
	return 0;
}
