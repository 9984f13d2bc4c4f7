/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the source's return-path parser, as a hostile
 * destination drives it: the message framing of source.c's rp_message
 * (ferry__wire_get_rp, a payload of at most FERRY_RP_PAYLOAD_MAX bytes)
 * and the decoders of each message (src/lib/stream/wire.c, format.h
 * "Return path"): SHUT (ferry__wire_rp_shut_decode), PONG, LOAD
 * (ferry__wire_rp_load_decode: exactly FERRY_RP_LOAD_LEN bytes), REQ_PAGES
 * (ferry__wire_req_len_ok, ferry__wire_req_decode) and the recovery's
 * MISSING bitmaps, decoded into a VM's page maps by
 * ferry__pc_bitmap_decode (src/lib/migration/postcopy.c) as the source
 * does (postcopy-src.c, rp_missing), against a VM of three RAM blocks
 * (1 page; 69 pages; one bitmap chunk and 70 pages more). What the source
 * does with a request (the page bounds in postcopy-src.c's rp_request)
 * needs a migration and is not reached here (test-postcopy's
 * t_pc_bad_request_nosum sends one through a running migration).
 *
 * Oracles, beyond the sanitizers: a payload the framing accepts fits
 * FERRY_RP_PAYLOAD_MAX; SHUT's message is the payload's rest; an accepted
 * request has a name of 1..FERRY_NAME_MAX bytes without NUL and encodes
 * back (ferry__wire_req_encode) to its exact bytes; an accepted bitmap
 * names a block, starts at a multiple of 64 inside it, covers 1..n pages
 * that end inside it and sets no bit outside the block's map nor past its
 * last page. What is refused sets the channel's sticky error (that code,
 * a message), and every later read fails with it.
 *
 * Input layout: return path messages, be16 type, be16 length, payload,
 * until SHUT, an unknown type or the end of the input.
 *
 * Built by tests/fuzz/run.sh with the channel and wire sources and
 * postcopy.c, whose other needs (the migration's parameters and status,
 * ferry_ram_block_find) are stubbed below. Thread: libFuzzer's one
 * thread.
 */
#include "migration/postcopy.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz-chan.h"
#include "stream/wire.h"

enum { NBLOCKS = 3, MAX_MSGS = 64 };

static const char *const block_names[NBLOCKS] = { "tiny", "small", "big" };
static const uint64_t block_pages[NBLOCKS] = { 1, 69, FERRY_BITMAP_CHUNK_PAGES + 70 };

static int memfd = -1;
static struct ferry_vm vm;
static struct ferry_ram_block blocks[NBLOCKS];
static unsigned long *maps[NBLOCKS];

/* ---- what postcopy.c needs beyond the stream ---- */

void ferry__mig_params(struct ferry_migration *m, ferry_migration_params *out)
{
	(void)m;
	memset(out, 0, sizeof(*out));
}

void ferry__mig_set_status(struct ferry_migration *m, ferry_migration_status s)
{
	(void)m;
	(void)s;
}

ferry_ram_block_t *ferry_ram_block_find(ferry_vm_t *v, const char *name)
{
	for (unsigned i = 0; i < v->nblocks; i++)
		if (!strcmp(v->blocks[i]->name, name))
			return v->blocks[i];
	return NULL;
}

static size_t map_words(unsigned b)
{
	return (block_pages[b] + 63) / 64;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("fuzz-rp", MFD_CLOEXEC);
	CHECK(memfd >= 0);
	for (unsigned b = 0; b < NBLOCKS; b++) {
		snprintf(blocks[b].name, sizeof(blocks[b].name), "%s", block_names[b]);
		blocks[b].npages = block_pages[b];
		blocks[b].size = block_pages[b] * FERRY_PAGE_SIZE;
		blocks[b].vm = &vm;
		vm.blocks[b] = &blocks[b];
		maps[b] = calloc(map_words(b), sizeof(unsigned long)); /* exactly the map: ASan bounds it */
		CHECK(maps[b]);
	}
	vm.nblocks = NBLOCKS;
	return 0;
}

static void check_name(const char *name)
{
	size_t n = strlen(name);
	CHECK(n >= 1 && n <= FERRY_NAME_MAX);
}

static int request(ferry_chan *c, const uint8_t *b, size_t len)
{
	if (!ferry__wire_req_len_ok(b, len))
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "page request of %zu bytes", len);
	char name[FERRY_NAME_MAX + 1];
	uint64_t first;
	uint32_t n;
	int r = ferry__wire_req_decode(c, b, &first, &n, name);
	if (r)
		return r;
	check_name(name);
	uint8_t e[FERRY_RP_REQ_MAX];
	CHECK(ferry__wire_req_encode(e, first, n, name) == len && !memcmp(e, b, len));
	return 0;
}

static int missing(ferry_chan *c, const uint8_t *b, size_t len)
{
	unsigned bi;
	uint64_t first, n;
	for (unsigned k = 0; k < NBLOCKS; k++)
		memset(maps[k], 0, map_words(k) * sizeof(unsigned long));
	int r = ferry__pc_bitmap_decode(&vm, c, b, len, maps, &bi, &first, &n);
	if (r)
		return r;
	CHECK(bi < NBLOCKS);
	uint64_t np = block_pages[bi];
	CHECK(first % 64 == 0 && first < np && n >= 1 && n <= np - first);
	for (unsigned k = 0; k < NBLOCKS; k++)
		for (size_t w = 0; w < map_words(k); w++) {
			unsigned long v = maps[k][w];
			if (k != bi) {
				CHECK(!v);
				continue;
			}
			for (unsigned bit = 0; bit < 64; bit++)
				if (v >> bit & 1) {
					uint64_t page = w * 64 + bit;
					CHECK(page >= first && page < first + n && page < np);
				}
		}
	return 0;
}

/* One message; 1 at SHUT or an unknown type. */
static int message(ferry_chan *c, uint8_t *buf)
{
	uint16_t type, len;
	ferry__chan_ctx(c, "return path message");
	int r = ferry__wire_get_rp(c, &type, &len);
	if (r)
		return r;
	if (len > FERRY_RP_PAYLOAD_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "return path message of %u bytes", len);
	if ((r = ferry__chan_read(c, buf, len)))
		return r;
	switch (type) {
	case FERRY_RP_SHUT: {
		if (len < FERRY_RP_SHUT_STATUS_LEN)
			return 1;
		const uint8_t *msg;
		size_t ml;
		int status;
		ferry__wire_rp_shut_decode(buf, len, &status, &msg, &ml);
		CHECK(msg == buf + FERRY_RP_SHUT_STATUS_LEN && ml == len - FERRY_RP_SHUT_STATUS_LEN);
		return 1;
	}
	case FERRY_RP_PONG:
		if (len == FERRY_RP_PONG_LEN)
			CHECK(ferry__wire_rp_pong_decode(buf) == ferry__ld_be32(buf));
		return 0;
	case FERRY_RP_LOAD: {
		ferry_wire_load l;
		if (ferry__wire_rp_load_decode(buf, len, &l))
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "return path LOAD of %u bytes", len);
		CHECK(l.value == ferry__ld_be32(buf) && l.bytes == ferry__ld_be64(buf + FERRY_RP_LOAD_BYTES_OFF) &&
		      l.cpu_ns == ferry__ld_be64(buf + FERRY_RP_LOAD_CPU_OFF));
		return 0;
	}
	case FERRY_RP_REQ_PAGES: return request(c, buf, len);
	case FERRY_RP_MISSING: return missing(c, buf, len);
	case FERRY_RP_RUNNING:
	case FERRY_RP_MISSING_END:
	case FERRY_RP_HEARTBEAT:
	case FERRY_RP_SWITCHOVER_ACK: return 0;
	default: return 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[FERRY_RP_PAYLOAD_MAX];
	ferry_chan c;
	fuzz_chan_open(&c, memfd, data, size);
	int r = 0;
	for (int k = 0; k < MAX_MSGS && !r; k++)
		r = message(&c, buf);
	if (r < 0)
		fuzz_check_refused(&c, r);
	ferry__chan_close(&c);
	return 0;
}
