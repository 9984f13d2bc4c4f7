/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the destination's multifd channel receive path
 * (src/lib/migration/multifd.c, mig/dst/recv_N): packet headers (magic,
 * version, flags, counts, compression), the block name, page indexes,
 * normal pages placed (into the mapping, or with pwrite into the memfd
 * block), zstd frames, zero pages, checksums when the stream has them,
 * device-state packets handed to the live device loader (live-dev.c),
 * and SYNC packets with the rendezvous of the main thread.
 *
 * Entry point: the public one, as narrow as the code allows without a
 * hook: the receive loop is static and needs a whole migration around it
 * (its receiver, placement, checksums, the live device loader). The
 * destination listens (ferry_migration_incoming_fd on a listening
 * socket); the target connects the main connection and one or two
 * multifd channels. On the main connection it sends a fixed, valid
 * stream, built with the wire codec (stream/wire.c): the header (version
 * 2 with checksums or 1 without), MULTIFD (one or two channels, zstd or
 * none), the RAM
 * setup section, the live device list, then SYNC_ROUNDS RAM sections of
 * MULTIFD_SYNC each, and no end: the migration ends when the channel's
 * data does (or is refused), so every packet of the input is read, in
 * order, before it does. On each channel: a valid handshake, then its
 * part of the input. The handshake itself is fuzzed by fuzz-hs.c. Two
 * channels put the sync rendezvous under hostile input: one channel's
 * SYNC while the other sends pages, ends or syncs twice.
 *
 * Oracles, beyond the sanitizers: the migration ends FAILED with an
 * error code and a message (fuzz-dest.h); none hangs (libFuzzer's
 * -timeout).
 *
 * Input layout: a config byte (FUZZ_MF_SUMS: the main stream has
 * checksums; FUZZ_MF_ZSTD: the migration's compression is zstd;
 * FUZZ_MF_TWO: two channels), then the channel's bytes after its
 * handshake (docs/wire-format.md, "Multifd"); with two channels, a be32
 * length n, then channel 0's n bytes (fewer if the input ends), then
 * channel 1's. Seeds: channels a real source sent (gen-corpus.py
 * multifd, through tests/fuzz/capture.c), one channel and two.
 *
 * Built by tests/fuzz/run.sh with every library source. Thread:
 * libFuzzer's one thread, with the destination's own threads.
 */
#include "fuzz-dest.h"
#include "stream/chan.h"
#include "stream/format.h"
#include "stream/sum.h"
#include "stream/wire.h"

enum { SYNC_ROUNDS = 256, LIVE_SECTION = 2 };

static struct {
	uint8_t *p;
	size_t len;
} mains[8]; /* by config byte */

/* The main stream for config cfg, through a ferry_chan into a memfd. */
static void build_main(unsigned cfg)
{
	int fd = memfd_create("fuzz-multifd-main", MFD_CLOEXEC);
	CHECK(fd >= 0);
	ferry_chan c;
	static ferry_sums sums;
	CHECK(ferry__chan_init(&c, dup(fd)) == 0);
	if (cfg & FUZZ_MF_SUMS) {
		CHECK(ferry__sums_init(&sums, NULL) == 0);
		ferry__sums_attach(&c, &sums, FERRY_SUM_MAIN);
	}
	ferry__wire_put_header(&c, fuzz_vm_uuid);
	ferry__wire_put_cmd_multifd(&c, cfg & FUZZ_MF_TWO ? 2 : 1,
				    cfg & FUZZ_MF_ZSTD ? FERRY_COMPRESS_ZSTD : FERRY_COMPRESS_NONE);
	ferry__wire_put_section_start(&c, FERRY_REC_SECTION_START, FERRY_SECTION_RAM, FERRY_RAM_IDSTR, 0,
				      FERRY_RAM_VERSION);
	ferry__wire_put_mem_size(&c, 8 * FUZZ_PAGE, 3);
	ferry__wire_put_block_entry(&c, "ram0", 4 * FUZZ_PAGE);
	ferry__wire_put_block_entry(&c, "ram1", 3 * FUZZ_PAGE);
	ferry__wire_put_block_entry(&c, "rom", FUZZ_PAGE);
	ferry__wire_put_ram_flag(&c, FERRY_RAM_EOS);
	ferry__wire_put_footer(&c, FERRY_SECTION_RAM);
	ferry__wire_put_section_start(&c, FERRY_REC_SECTION_START, LIVE_SECTION, FERRY_LIVE_IDSTR, 0,
				      FERRY_LIVE_VERSION);
	ferry__wire_put_live_count(&c, 1);
	ferry_wire_live_dev d = { .id = "live", .has_config = 1, .config_version = fuzz_live_vmsd.version };
	ferry__wire_put_live_dev(&c, &d);
	ferry__wire_put_footer(&c, LIVE_SECTION);
	for (int k = 0; k < SYNC_ROUNDS; k++) {
		ferry__wire_put_section_part(&c, FERRY_REC_SECTION_PART, FERRY_SECTION_RAM);
		ferry__wire_put_ram_flag(&c, FERRY_RAM_MULTIFD_SYNC);
		ferry__wire_put_ram_flag(&c, FERRY_RAM_EOS);
		ferry__wire_put_footer(&c, FERRY_SECTION_RAM);
	}
	CHECK(ferry__chan_flush(&c) == 0);
	ferry__chan_close(&c);
	off_t len = lseek(fd, 0, SEEK_END);
	CHECK(len > 0 && (mains[cfg].p = malloc((size_t)len)));
	CHECK(pread(fd, mains[cfg].p, (size_t)len, 0) == len);
	mains[cfg].len = (size_t)len;
	close(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_dest_init(false);
	for (unsigned cfg = 0; cfg < 8; cfg++)
		build_main(cfg);
	return 0;
}

/* Channel id of n's handshake, then body: malloc'd. */
static uint8_t *channel_bytes(unsigned id, unsigned n, const uint8_t *body, size_t len)
{
	uint8_t *ch = malloc(FERRY_MF_HS_LEN + len);
	CHECK(ch);
	ferry__wire_mf_hs_encode(ch, fuzz_vm_uuid, id, n);
	memcpy(ch + FERRY_MF_HS_LEN, body, len);
	return ch;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned cfg = data[0] & (FUZZ_MF_SUMS | FUZZ_MF_ZSTD | FUZZ_MF_TWO);
	unsigned n = cfg & FUZZ_MF_TWO ? 2 : 1;
	const uint8_t *body[2] = { data + 1, NULL };
	size_t len[2] = { size - 1, 0 };
	if (n == 2) { /* be32 length of channel 0's bytes (clamped), then both */
		if (size < 5)
			return 0;
		size_t k = (size_t)data[1] << 24 | (size_t)data[2] << 16 | (size_t)data[3] << 8 | data[4];
		len[0] = k < size - 5 ? k : size - 5;
		body[0] = data + 5;
		body[1] = data + 5 + len[0];
		len[1] = size - 5 - len[0];
	}
	CHECK(ferry_migration_incoming_fd(fuzz_dst.vm, fuzz_listen("multifd", 0)) == 0);
	/* Accepted in this order: the main connection, then the channels. */
	fuzz_conn cs[3] = {
		{ .fd = fuzz_connect("multifd", 0), .data = mains[cfg].p, .len = mains[cfg].len }
	};
	uint8_t *ch[2] = { NULL, NULL };
	for (unsigned i = 0; i < n; i++) {
		ch[i] = channel_bytes(i, n, body[i], len[i]);
		cs[1 + i] = (fuzz_conn){ .fd = fuzz_connect("multifd", 0), .data = ch[i],
					 .len = FERRY_MF_HS_LEN + len[i] };
	}
	fuzz_dest_pump(cs, 1 + n);
	for (unsigned i = 0; i < 1 + n; i++)
		close(cs[i].fd);
	fuzz_dest_finish();
	free(ch[0]);
	free(ch[1]);
	return 0;
}
