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
 * socket); the target connects the main connection and one multifd
 * channel. On the main connection it sends a fixed, valid stream, built
 * with the wire codec (stream/wire.c): the header (version 2 with
 * checksums or 1 without), MULTIFD (one channel, zstd or none), the RAM
 * setup section, the live device list, then SYNC_ROUNDS RAM sections of
 * MULTIFD_SYNC each, and no end: the migration ends when the channel's
 * data does (or is refused), so every packet of the input is read, in
 * order, before it does. On the channel: a valid handshake, then the
 * input. The handshake itself is fuzzed by fuzz-hs.c.
 *
 * Oracles, beyond the sanitizers: the migration ends FAILED with an
 * error code and a message (fuzz-dest.h); none hangs (libFuzzer's
 * -timeout).
 *
 * Input layout: a config byte (FUZZ_MF_SUMS: the main stream has
 * checksums; FUZZ_MF_ZSTD: the migration's compression is zstd), then
 * the channel's bytes after its handshake (docs/wire-format.md,
 * "Multifd"). Seeds: channels a real source sent (gen-corpus.py multifd,
 * through tests/fuzz/capture.c).
 *
 * Built by tests/fuzz/run.sh with every library source. Thread:
 * libFuzzer's one thread, with the destination's own threads.
 */
#include <stdio.h>
#include <sys/un.h>

#include "fuzz-dest.h"
#include "stream/chan.h"
#include "stream/format.h"
#include "stream/sum.h"
#include "stream/wire.h"

enum { SYNC_ROUNDS = 256, LIVE_SECTION = 2 };

static struct {
	uint8_t *p;
	size_t len;
} mains[4]; /* by config byte */
static char sock_name[64];

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
	ferry__wire_put_cmd_multifd(&c, 1, cfg & FUZZ_MF_ZSTD ? FERRY_COMPRESS_ZSTD : FERRY_COMPRESS_NONE);
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
	for (unsigned cfg = 0; cfg < 4; cfg++)
		build_main(cfg);
	snprintf(sock_name, sizeof(sock_name), "ferry-fuzz-multifd-%d", (int)getpid());
	return 0;
}

/* A unix socket address in the abstract namespace (nothing to unlink). */
static socklen_t sock_addr(struct sockaddr_un *a)
{
	*a = (struct sockaddr_un){ .sun_family = AF_UNIX };
	size_t n = strlen(sock_name);
	memcpy(a->sun_path + 1, sock_name, n);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static int connect_to(void)
{
	struct sockaddr_un a;
	socklen_t al = sock_addr(&a);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(s >= 0 && connect(s, (struct sockaddr *)&a, al) == 0);
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned cfg = data[0] & (FUZZ_MF_SUMS | FUZZ_MF_ZSTD);
	struct sockaddr_un a;
	socklen_t al = sock_addr(&a);
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(l >= 0 && bind(l, (struct sockaddr *)&a, al) == 0 && listen(l, 4) == 0);
	CHECK(ferry_migration_incoming_fd(fuzz_dst.vm, l) == 0); /* takes l */
	/* Accepted in this order: the main connection, then the channel. */
	int mfd = connect_to(), cfd = connect_to();
	uint8_t *ch = malloc(FERRY_MF_HS_LEN + size - 1);
	CHECK(ch);
	ferry__wire_mf_hs_encode(ch, fuzz_vm_uuid, 0, 1);
	memcpy(ch + FERRY_MF_HS_LEN, data + 1, size - 1);
	fuzz_conn cs[2] = {
		{ .fd = mfd, .data = mains[cfg].p, .len = mains[cfg].len },
		{ .fd = cfd, .data = ch, .len = FERRY_MF_HS_LEN + size - 1 },
	};
	fuzz_dest_pump(cs, 2);
	close(mfd);
	close(cfd);
	fuzz_dest_finish();
	free(ch);
	return 0;
}
