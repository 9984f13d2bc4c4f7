/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the destination's stream loader, every record a
 * hostile source can send on the main connection: the stream header
 * (version 1 without checksums, version 2 with), sections (START, PART,
 * END, FULL) with the RAM section's body (the MEM_SIZE block list, PAGES,
 * ZEROS, CONTINUE, EOS, MULTIFD_SYNC, CANCELLED), the vmsd devices' and
 * the live devices' sections, footers, commands (PING, SWITCHOVER,
 * VM_STATE, MULTIFD, postcopy's ADVISE, DISCARD, LISTEN, RUN, PACKAGE,
 * SWITCHOVER_START, DIGEST), CANCELLED and EOF: src/lib/migration/dest.c,
 * ram-load.c, place.c, participant.c, live-dev.c, swack.c, stream/.
 *
 * Entry point: the public one. The input is the incoming connection of
 * ferry_migration_incoming_fd() on a connected socket, into the VM of
 * fuzz-vm.h (fuzz-dest.h runs it and reads the return path); nothing in
 * the library is special for the target. On such a connection multifd is
 * refused (it needs a listener: fuzz-multifd.c covers its channels) and
 * so is postcopy (off on the destination: no userfaultfd is registered;
 * fuzz-pcstream.c allows it).
 *
 * Oracles, beyond the sanitizers: the migration ends COMPLETED or FAILED
 * with an error code and a message (fuzz-dest.h); none hangs (libFuzzer's
 * -timeout).
 *
 * Input layout: the bytes of the main connection, as a source sends them
 * (docs/wire-format.md). Seeds: streams a real source of the same VM sent
 * (gen-corpus.py stream, through tests/fuzz/capture.c).
 *
 * Built by tests/fuzz/run.sh with every library source. Thread:
 * libFuzzer's one thread, with the destination's own threads.
 */
#include "fuzz-dest.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_dest_init(false);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_dest_feed_main(data, size);
	return 0;
}
