/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the destination's postcopy path, past the ADVISE
 * that fuzz-stream.c's destination refuses: src/lib/migration/
 * postcopy-dst.c with what it drives. ADVISE (flags, the userfaultfd
 * probe, the bitmaps), DISCARD (ferry__pc_bitmap_decode's block name,
 * first page and bitmap; the pages dropped with fallocate on the memfd
 * block, madvise on the anonymous ones), LISTEN (the checksums' verdict,
 * userfaultfd registration of every block in MISSING mode, the fault
 * thread), PACKAGE (its length, its DIGEST-carried checksum, the memfd,
 * and the package's inner stream: device sections, RUN, the live
 * devices' completion), RUN, the postcopy DIGEST, then mig/dst/listen's
 * background stream (RAM PART sections placed with UFFDIO_COPY and
 * UFFDIO_ZEROPAGE, commands, EOF) and the end: complete when every
 * discarded page was placed, else failed, or paused when the stream
 * breaks after RUN. The precopy records before the switch are
 * fuzz-stream.c's, reached here too.
 *
 * Entry point: the public one, as fuzz-stream.c: the input is the
 * incoming connection of ferry_migration_incoming_fd() on a connected
 * socket, into the VM of fuzz-vm.h (fuzz-dest.h), whose incoming
 * parameters allow postcopy (postcopy-ram). Such a connection has no
 * listener, so postcopy-preempt is refused (hs and rp cover its
 * handshake and the return path). Nothing touches the guest's RAM (the
 * vCPU ops are no-ops), so after RUN no page faults: the background
 * stream alone must bring every page.
 *
 * Oracles, beyond the sanitizers: the migration ends COMPLETED, FAILED
 * with an error code and a message, or POSTCOPY_PAUSED (a stream that
 * breaks or is refused after RUN pauses the destination as a broken
 * link does, to wait for a recovery), where ferry_migration_cancel must
 * refuse (-EBUSY); none hangs (libFuzzer's -timeout). Each input gets a
 * new VM (fuzz_dest_renew): fresh RAM, as a destination's must be for
 * its holes to fault, and the one public end of a paused migration.
 *
 * Input layout: the bytes of the main connection, as a source sends them
 * (docs/wire-format.md). Seeds: postcopy migrations a real source of the
 * same VM sent, switched after its first pass or on request, with and
 * without checksums, pages dirtied during the passes so that DISCARD and
 * the background stream carry some (gen-corpus.py pcstream, through
 * tests/fuzz/capture.c), each also cut at a third and two thirds; and,
 * added by hand, advised-precopy-end (ADVISE, DISCARDs, then a precopy
 * EOF), which found the destination's leak of what ADVISE set up
 * (fixed in postcopy-dst.c, ferry__postcopy_incoming); such a stream is
 * now refused (ferry__postcopy_precopy_end), and the leak's path is a
 * converged migration's (test-postcopy's t_pc_converges).
 *
 * Built by tests/fuzz/run.sh with every library source. Thread:
 * libFuzzer's one thread, with the destination's own threads.
 */
#include "fuzz-dest.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_dest_init(true);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_dest_feed_main(data, size);
	fuzz_dest_renew();
	return 0;
}
