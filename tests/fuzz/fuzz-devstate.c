/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the wire decoders of live device state
 * (src/lib/stream/wire.c, format.h "Live devices"): the setup list
 * (ferry__wire_get_live_count, ferry__wire_get_live_dev), DEV_STATE
 * headers (ferry__wire_get_dev_hdr), DEV_CONFIG headers
 * (ferry__wire_get_dev_config) and the multifd device-state packet
 * (ferry__wire_mf_pkt_decode, then ferry__wire_get_mf_dev), read from a
 * ferry_chan over a memfd holding the input, as a peer would send them.
 *
 * Oracles, beyond the sanitizers: what a decoder accepts obeys format.h
 * (1..FERRY_LIVE_DEVICES_MAX devices; a name of 1..FERRY_NAME_MAX bytes
 * without NUL; header flags within END | INIT, not both; a marker without
 * data, else 1..FERRY_DEV_BUF_MAX bytes; no flags on a multifd buffer; a
 * config of at most FERRY_DEVICE_STATE_MAX bytes) and took exactly its
 * bytes; what it refuses sets the chan's sticky error (that code, a
 * non-empty message), and every later read fails with it.
 *
 * Input layout: a sequence of records, each a u8 tag as in a live device
 * body (FERRY_DEV_EOS ends it, FERRY_DEV_STATE, FERRY_DEV_CONFIG,
 * FERRY_DEV_MF_SYNC), plus three tags of this target only: TAG_LIST (a
 * setup body: be32 count, the devices), TAG_MF (a multifd packet header,
 * FERRY_MF_HDR_LEN bytes, then the DEV_STATE header) and TAG_SUMS (from
 * here on the stream is version 2: a be64 checksum follows each DEV_STATE
 * and DEV_CONFIG header, stream/sum.h). Data after a header is skipped as
 * the loader would read it, or with checksums read and checked: accepted
 * exactly when the checksum is XXH3-64 of the data with the record's
 * seed. Any other tag, or the end of the input, ends the run.
 *
 * Built by tests/fuzz/run.sh with only the channel and wire sources.
 * Thread: libFuzzer's one thread.
 */
#include "stream/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ferry/device.h"
#include "fuzz-chan.h"

enum { TAG_LIST = 0x10, TAG_MF = 0x11, TAG_SUMS = 0x12, MAX_RECS = 64 };

static int memfd = -1;
static ferry_sums sums;

/* With checksums: the len data bytes and their checksum, judged against seed. */
static int sum_data(ferry_chan *c, uint32_t len, uint64_t seed, const ferry_wire_dev_hdr *h)
{
	uint64_t sum;
	int r = ferry__wire_get_sum(c, &sum);
	if (r)
		return r;
	uint8_t *d = malloc(len ? len : 1);
	CHECK(d);
	if (!(r = ferry__chan_read(c, d, len))) {
		r = h ? ferry__wire_check_dev_sum(c, h, d, sum)
		      : ferry__wire_check_sum(c, d, len, seed, sum, "config");
		CHECK((r == 0) == (ferry__sum_buf(d, len, seed) == sum));
	}
	free(d);
	return r;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("fuzz-devstate", MFD_CLOEXEC);
	CHECK(memfd >= 0);
	CHECK(ferry__sums_init(&sums, NULL) == 0);
	return 0;
}

static int list_rec(ferry_chan *c)
{
	uint32_t n;
	int r = ferry__wire_get_live_count(c, &n);
	if (r)
		return r;
	CHECK(n >= 1 && n <= FERRY_LIVE_DEVICES_MAX);
	for (uint32_t k = 0; k < n; k++) {
		ferry_wire_live_dev d;
		uint64_t at = ferry__chan_offset(c);
		if ((r = ferry__wire_get_live_dev(c, &d)))
			return r;
		size_t nl = strlen(d.id);
		CHECK(nl >= 1 && nl <= FERRY_NAME_MAX);
		CHECK(ferry__chan_offset(c) - at == ferry__wire_name_len(d.id) + 9);
		CHECK(d.has_config <= 1 && d.precopy <= 1);
	}
	return 0;
}

/* A DEV_STATE header as format.h allows it; `mf`: from a multifd packet. */
static int state_rec(ferry_chan *c, bool mf)
{
	ferry_wire_dev_hdr h;
	uint64_t at = ferry__chan_offset(c);
	int r = mf ? ferry__wire_get_mf_dev(c, &h) : ferry__wire_get_dev_hdr(c, &h);
	if (r)
		return r;
	CHECK(ferry__chan_offset(c) - at == FERRY_DEV_HDR_LEN);
	uint32_t marker = h.flags & (FERRY_DEV_F_END | FERRY_DEV_F_INIT);
	CHECK(!(h.flags & ~(FERRY_DEV_F_END | FERRY_DEV_F_INIT)));
	CHECK(marker != (FERRY_DEV_F_END | FERRY_DEV_F_INIT));
	CHECK(marker ? !h.len : h.len >= 1 && h.len <= FERRY_DEV_BUF_MAX);
	CHECK(!mf || !h.flags);
	if (c->sums)
		return sum_data(c, h.len, ferry__sum_dev_seed(h.dev, h.index), &h);
	return ferry__chan_skip(c, h.len);
}

static int mf_rec(ferry_chan *c)
{
	uint8_t b[FERRY_MF_HDR_LEN];
	ferry_wire_mf_pkt p;
	int r = ferry__chan_read(c, b, sizeof(b));
	if (r)
		return r;
	ferry__wire_mf_pkt_decode(b, &p);
	uint8_t e[FERRY_MF_HDR_LEN];
	ferry__wire_mf_pkt_encode(e, &p);
	CHECK(!memcmp(e + 8, b + 8, sizeof(b) - 8)); /* all but magic and version */
	return state_rec(c, true);
}

static int config_rec(ferry_chan *c)
{
	uint32_t dev, version, len;
	int r = ferry__wire_get_dev_config(c, &dev, &version, &len);
	if (r)
		return r;
	CHECK(len <= FERRY_DEVICE_STATE_MAX);
	if (c->sums)
		return sum_data(c, len, ferry__sum_dev_seed(dev, UINT32_MAX), NULL);
	return ferry__chan_skip(c, len);
}

/* One record; 1 at the end of the body. */
static int record(ferry_chan *c)
{
	uint8_t tag;
	ferry__chan_ctx(c, "device state");
	int r = ferry__chan_get_u8(c, &tag);
	if (r)
		return r;
	switch (tag) {
	case FERRY_DEV_STATE: return state_rec(c, false);
	case FERRY_DEV_CONFIG: return config_rec(c);
	case FERRY_DEV_MF_SYNC: return 0;
	case TAG_LIST: return list_rec(c);
	case TAG_MF: return mf_rec(c);
	case TAG_SUMS: ferry__sums_attach(c, &sums, FERRY_SUM_MAIN); return 0;
	default: return 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
