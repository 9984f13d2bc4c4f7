/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the first bytes of each connection a destination
 * accepts (src/lib/stream/wire.c, format.h): the stream header
 * (ferry__wire_get_header, FERRY_HDR_LEN bytes), the multifd channel
 * hello (ferry__wire_mf_hs_decode), the postcopy preempt channel's
 * handshake (ferry__wire_pc_hs_match, FERRY_PC_HS_MAGIC) and a recovered
 * connection's opening (postcopy-dst.c, pc_accept_resume: the header,
 * then a COMMAND record, ferry__wire_get_cmd, that must be
 * POSTCOPY_RESUME), plus the fixed payload lengths a command header is
 * judged by (ferry__wire_cmd_len).
 *
 * Oracles, beyond the sanitizers: each decoder took exactly its bytes and
 * its fields are the big-endian values at the documented offsets; a
 * multifd hello re-encodes (ferry__wire_mf_hs_encode) to its bytes but for
 * magic and version; the preempt handshake matches a uuid exactly when
 * its bytes are that uuid's encoding (ferry__wire_pc_hs_encode); the
 * fixed payload of a known command fits the destination's buffer
 * (FERRY_CMD_FIXED_MAX). A short read sets the channel's sticky error
 * (that code, a message), and every later read fails with it.
 *
 * Input layout: records, each a u8 tag (0 header, 1 multifd hello,
 * 2 preempt handshake, 3 recovery opening) and that handshake's bytes;
 * another tag or the end of the input ends the run.
 *
 * Built by tests/fuzz/run.sh with the channel and wire sources.
 * Thread: libFuzzer's one thread.
 */
#include "stream/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz-chan.h"

enum { TAG_HDR, TAG_MF, TAG_PC, TAG_RESUME, MAX_RECS = 32 };

static const uint8_t our_uuid[FERRY_UUID_LEN] = "ferry-fuzz-uuid";
static int memfd = -1;
static const uint8_t *input; /* this run's bytes, to judge what was decoded */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("fuzz-hs", MFD_CLOEXEC);
	CHECK(memfd >= 0);
	for (uint16_t cmd = 1; cmd < FERRY_CMD__MAX; cmd++)
		CHECK(ferry__wire_cmd_len(cmd) <= FERRY_CMD_FIXED_MAX);
	return 0;
}

static int header(ferry_chan *c)
{
	ferry_wire_hdr h;
	uint64_t at = ferry__chan_offset(c);
	ferry__chan_ctx(c, "stream header");
	int r = ferry__wire_get_header(c, &h);
	if (r)
		return r;
	CHECK(ferry__chan_offset(c) - at == FERRY_HDR_LEN);
	const uint8_t *b = input + at;
	CHECK(h.magic == ferry__ld_be32(b + FERRY_HDR_MAGIC_OFF));
	CHECK(h.version == ferry__ld_be32(b + FERRY_HDR_VERSION_OFF));
	CHECK(h.page_size == ferry__ld_be32(b + FERRY_HDR_PSIZE_OFF));
	CHECK(!memcmp(h.uuid, b + FERRY_HDR_UUID_OFF, FERRY_UUID_LEN));
	return 0;
}

static int mf_hello(ferry_chan *c)
{
	uint8_t b[FERRY_MF_HS_LEN], e[FERRY_MF_HS_LEN];
	ferry__chan_ctx(c, "multifd handshake");
	int r = ferry__chan_read(c, b, sizeof(b));
	if (r)
		return r;
	ferry_wire_mf_hs hs;
	ferry__wire_mf_hs_decode(b, &hs);
	CHECK(hs.magic == ferry__ld_be32(b) && hs.version == ferry__ld_be32(b + 4));
	ferry__wire_mf_hs_encode(e, hs.uuid, hs.id, hs.count);
	CHECK(!memcmp(e + FERRY_MF_HS_UUID_OFF, b + FERRY_MF_HS_UUID_OFF,
		      FERRY_MF_HS_LEN - FERRY_MF_HS_UUID_OFF));
	CHECK((hs.magic == FERRY_MF_HS_MAGIC && hs.version == FERRY_MF_VERSION) ==
	      !memcmp(e, b, FERRY_MF_HS_UUID_OFF));
	return 0;
}

static int pc_handshake(ferry_chan *c)
{
	uint8_t b[FERRY_PC_HS_LEN], e[FERRY_PC_HS_LEN];
	ferry__chan_ctx(c, "preempt channel handshake");
	int r = ferry__chan_read(c, b, sizeof(b));
	if (r)
		return r;
	ferry__wire_pc_hs_encode(e, our_uuid);
	CHECK(ferry__wire_pc_hs_match(b, our_uuid) == !memcmp(e, b, sizeof(b)));
	ferry__wire_pc_hs_encode(e, b + FERRY_PC_HS_UUID_OFF); /* its own uuid */
	CHECK(ferry__wire_pc_hs_match(b, b + FERRY_PC_HS_UUID_OFF) == !memcmp(e, b, sizeof(b)));
	return 0;
}

/* A recovered connection's opening, judged as pc_accept_resume does. */
static int resume(ferry_chan *c)
{
	int r = header(c);
	if (r)
		return r;
	uint8_t t;
	uint16_t cmd, len;
	ferry__chan_ctx(c, "command");
	if ((r = ferry__wire_get_record(c, &t)) || (r = ferry__wire_get_cmd(c, &cmd, &len)))
		return r;
	CHECK(cmd == ferry__ld_be16(input + ferry__chan_offset(c) - 4));
	CHECK(len == ferry__ld_be16(input + ferry__chan_offset(c) - 2));
	if (cmd >= 1 && cmd < FERRY_CMD__MAX)
		CHECK(ferry__wire_cmd_len(cmd) <= FERRY_CMD_FIXED_MAX);
	if (t != FERRY_REC_COMMAND || cmd != FERRY_CMD_POSTCOPY_RESUME || len)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "expected postcopy resume");
	return 0;
}

static int record(ferry_chan *c)
{
	uint8_t tag;
	int r = ferry__chan_get_u8(c, &tag);
	if (r)
		return r;
	switch (tag) {
	case TAG_HDR: return header(c);
	case TAG_MF: return mf_hello(c);
	case TAG_PC: return pc_handshake(c);
	case TAG_RESUME: return resume(c);
	default: return 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	input = data;
	ferry_chan c;
	fuzz_chan_open(&c, memfd, data, size);
	int r = 0;
	for (int k = 0; k < MAX_RECS && !r; k++)
		r = record(&c);
	if (r < 0)
		fuzz_check_refused(&c, r);
	ferry__chan_close(&c);
	return 0;
}
