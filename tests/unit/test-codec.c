/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the wire codec (stream/wire.h): every record and return
 * path message round-trips through its encoder and decoder, the bytes sit
 * at the offsets docs/wire-format.md gives, and every refusal of the codec
 * has its exact message. The name rule is checked on every reader: the
 * channel reader (RAM records, block list, multifd packets, sections) and
 * the buffer readers (page requests, page bitmaps).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "ferry/common.h"
#include "stream/wire.h"

static void pair(ferry_chan *w, ferry_chan *r)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(ferry__chan_init(w, sv[0]), 0);
	assert_int_equal(ferry__chan_init(r, sv[1]), 0);
}

static void unpair(ferry_chan *w, ferry_chan *r)
{
	ferry__chan_close(w);
	ferry__chan_close(r);
}

/* Writes n raw bytes to w and flushes. */
static void raw(ferry_chan *w, const void *p, size_t n)
{
	ferry__chan_put(w, p, n);
	assert_int_equal(ferry__chan_flush(w), 0);
}

static const uint8_t UUID[FERRY_UUID_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

static void t_header(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	ferry__wire_put_header(&w, UUID);
	assert_int_equal(ferry__chan_pending(&w), FERRY_HDR_LEN);
	assert_int_equal(ferry__chan_flush(&w), 0);
	ferry_wire_hdr h;
	assert_int_equal(ferry__wire_get_header(&r, &h), 0);
	assert_int_equal(h.magic, FERRY_STREAM_MAGIC);
	assert_int_equal(h.version, FERRY_STREAM_VERSION_PLAIN); /* no checksums on w */
	assert_int_equal(h.page_size, FERRY_PAGE_SIZE);
	assert_memory_equal(h.uuid, UUID, FERRY_UUID_LEN);
	unpair(&w, &r);
}

static void t_handshakes(void **state)
{
	(void)state;
	uint8_t b[FERRY_PC_HS_LEN];
	ferry__wire_pc_hs_encode(b, UUID);
	assert_int_equal(ferry__ld_be32(b), FERRY_PC_HS_MAGIC);
	assert_true(ferry__wire_pc_hs_match(b, UUID));
	b[FERRY_PC_HS_UUID_OFF + 15] ^= 1;
	assert_false(ferry__wire_pc_hs_match(b, UUID));

	uint8_t m[FERRY_MF_HS_LEN];
	ferry__wire_mf_hs_encode(m, UUID, 3, 8);
	ferry_wire_mf_hs hs;
	ferry__wire_mf_hs_decode(m, &hs);
	assert_int_equal(hs.magic, FERRY_MF_HS_MAGIC);
	assert_int_equal(hs.version, FERRY_MF_VERSION);
	assert_int_equal(hs.id, 3);
	assert_int_equal(hs.count, 8);
	assert_memory_equal(hs.uuid, UUID, FERRY_UUID_LEN);
}

static void t_mf_packet(void **state)
{
	(void)state;
	uint8_t b[FERRY_MF_HDR_MAX];
	ferry_wire_mf_pkt p = { .flags = FERRY_MF_ZSTD, .normal = 2, .zero = 1, .clen = 77,
				.num = 0x0102030405060708ull }, q;
	ferry__wire_mf_pkt_encode(b, &p);
	assert_int_equal(ferry__ld_be32(b + FERRY_MF_MAGIC_OFF), FERRY_MF_PKT_MAGIC);
	ferry__wire_mf_pkt_decode(b, &q);
	assert_int_equal(q.magic, FERRY_MF_PKT_MAGIC);
	assert_int_equal(q.version, FERRY_MF_VERSION);
	assert_int_equal(q.flags, FERRY_MF_ZSTD);
	assert_int_equal(q.normal, 2);
	assert_int_equal(q.zero, 1);
	assert_int_equal(q.clen, 77);
	assert_true(q.num == p.num);
	size_t h = FERRY_MF_HDR_LEN;
	h += ferry__wire_st_name(b + h, "pc.ram");
	assert_int_equal(b[FERRY_MF_HDR_LEN], 6);
	uint64_t idx[3] = { 5, 6, 1ull << 40 }, back[3];
	h += ferry__wire_st_indices(b + h, idx, 3);
	assert_int_equal(h, FERRY_MF_HDR_LEN + 7 + 3 * FERRY_MF_INDEX_LEN);
	ferry__wire_ld_indices(b + FERRY_MF_HDR_LEN + 7, back, 3);
	assert_memory_equal(back, idx, sizeof(idx));
}

static void t_ram_records(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	uint8_t *pages = malloc(2 * FERRY_PAGE_SIZE), dst[2 * FERRY_PAGE_SIZE];
	for (unsigned i = 0; i < 2 * FERRY_PAGE_SIZE; i++)
		pages[i] = (uint8_t)(i * 13);
	ferry__wire_put_ram_run(&w, FERRY_RAM_PAGES, "pc.ram", false, 7, 2, pages, NULL);
	ferry__wire_put_ram_run(&w, FERRY_RAM_ZEROS, "pc.ram", true, 9, 256, NULL, NULL);
	ferry__wire_put_mem_size(&w, 1ull << 30, 1);
	ferry__wire_put_block_entry(&w, "pc.ram", 1ull << 30);
	ferry__wire_put_ram_flag(&w, FERRY_RAM_EOS);
	assert_int_equal(ferry__chan_flush(&w), 0);

	uint64_t flags, addr, size;
	uint32_t n;
	char name[FERRY_NAME_MAX + 1];
	assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
	assert_true(flags == FERRY_RAM_PAGES && addr == 7ull << FERRY_PAGE_SHIFT);
	assert_int_equal(ferry__wire_get_name(&r, FERRY_WIRE_BLOCK, name), 0);
	assert_string_equal(name, "pc.ram");
	assert_int_equal(ferry__wire_get_ram_count(&r, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ferry__chan_read(&r, dst, sizeof(dst)), 0);
	assert_memory_equal(dst, pages, sizeof(dst));
	assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
	assert_true(flags == (FERRY_RAM_ZEROS | FERRY_RAM_CONTINUE) && addr == 9ull << FERRY_PAGE_SHIFT);
	assert_int_equal(ferry__wire_get_ram_count(&r, &n), 0);
	assert_int_equal(n, 256);
	assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
	assert_true(flags == FERRY_RAM_MEM_SIZE && addr == 1ull << 30);
	assert_int_equal(ferry__chan_get_be32(&r, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ferry__wire_get_block_entry(&r, name, &size), 0);
	assert_string_equal(name, "pc.ram");
	assert_true(size == 1ull << 30);
	assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
	assert_true(flags == FERRY_RAM_EOS && addr == 0);
	free(pages);
	unpair(&w, &r);
}

static void t_ram_count_refused(void **state)
{
	(void)state;
	static const uint32_t bad[] = { 0, FERRY_RAM_MAX_RUN + 1 };
	static const char *const msg[] = {
		"RAM run of 0 pages (allowed 1..256) (RAM pages at offset 0)",
		"RAM run of 257 pages (allowed 1..256) (RAM pages at offset 0)",
	};
	for (unsigned i = 0; i < 2; i++) {
		ferry_chan w, r;
		pair(&w, &r);
		ferry__chan_put_be32(&w, bad[i]);
		assert_int_equal(ferry__chan_flush(&w), 0);
		ferry__chan_ctx(&r, "RAM pages");
		uint32_t n;
		assert_int_equal(ferry__wire_get_ram_count(&r, &n), FERRY_EBADSTREAM);
		assert_string_equal(r.in_err.msg, msg[i]);
		unpair(&w, &r);
	}
}

/* Live devices: the setup list, DEV_STATE headers at their offsets, DEV_CONFIG, refusals. */
static void t_live_records(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	ferry_wire_live_dev e = { .id = "gpu", .instance = 3, .has_config = 1, .precopy = 1,
				  .config_version = 2 };
	ferry__wire_put_live_count(&w, 1);
	ferry__wire_put_live_dev(&w, &e);
	static const uint8_t data[5] = { 9, 8, 7, 6, 5 };
	ferry_wire_dev_hdr h = { .dev = 1, .index = 0x01020304, .flags = 0, .len = 5 };
	ferry__wire_put_dev_state(&w, &h, data);
	ferry__wire_put_dev_config(&w, 1, 2, data, 3);
	ferry__wire_put_dev_eos(&w);
	assert_int_equal(ferry__chan_flush(&w), 0);
	uint8_t raw_bytes[4 + 4 + 4 + 1 + 4 + 1 + FERRY_DEV_HDR_LEN];
	assert_int_equal(ferry__chan_read(&r, raw_bytes, sizeof(raw_bytes)), 0);
	/* flags byte 3: has config (0x1) and PRE_COPY (0x2). */
	static const uint8_t want[] = { 0, 0, 0, 1, 3, 'g', 'p', 'u', 0, 0, 0, 3, 3, 0, 0, 0, 2,
					FERRY_DEV_STATE, 0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5 };
	assert_memory_equal(raw_bytes, want, sizeof(want));
	ferry_wire_dev_hdr g;
	ferry__wire_ld_dev_hdr(raw_bytes + 18, &g);
	assert_memory_equal(&g, &h, sizeof(g));
	uint8_t got[5], tag;
	assert_int_equal(ferry__chan_read(&r, got, 5), 0);
	assert_memory_equal(got, data, 5);
	uint32_t dev, version, len;
	assert_int_equal(ferry__chan_get_u8(&r, &tag), 0);
	assert_int_equal(tag, FERRY_DEV_CONFIG);
	assert_int_equal(ferry__wire_get_dev_config(&r, &dev, &version, &len), 0);
	assert_true(dev == 1 && version == 2 && len == 3);
	assert_int_equal(ferry__chan_read(&r, got, 3), 0);
	assert_int_equal(ferry__chan_get_u8(&r, &tag), 0);
	assert_int_equal(tag, FERRY_DEV_EOS);
	unpair(&w, &r);
	/* The same bytes read back through the decoders. */
	pair(&w, &r);
	uint32_t n;
	ferry__wire_put_live_count(&w, 1);
	ferry__wire_put_live_dev(&w, &e);
	ferry__wire_put_dev_state(&w, &h, data);
	assert_int_equal(ferry__chan_flush(&w), 0);
	ferry_wire_live_dev f;
	assert_int_equal(ferry__wire_get_live_count(&r, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ferry__wire_get_live_dev(&r, &f), 0);
	assert_string_equal(f.id, "gpu");
	assert_true(f.instance == 3 && f.has_config == 1 && f.precopy == 1 && f.config_version == 2);
	assert_int_equal(ferry__chan_get_u8(&r, &tag), 0);
	assert_int_equal(ferry__wire_get_dev_hdr(&r, &g), 0);
	assert_memory_equal(&g, &h, sizeof(g));
	unpair(&w, &r);
}

/* The multifd device-state packet: headers encoded, read back, and its flags checked. */
static void t_mf_dev_packet(void **state)
{
	(void)state;
	uint8_t b[FERRY_MF_DEV_PKT_LEN];
	ferry_wire_dev_hdr h = { .dev = 3, .index = 0x01020304, .len = 4096 }, g;
	ferry__wire_mf_dev_encode(b, 9, &h);
	ferry_wire_mf_pkt q;
	ferry__wire_mf_pkt_decode(b, &q);
	assert_int_equal(q.magic, FERRY_MF_PKT_MAGIC);
	assert_int_equal(q.flags, FERRY_MF_DEVICE);
	assert_int_equal(q.normal + q.zero + q.clen, 0);
	assert_true(q.num == 9);
	ferry_chan w, r;
	pair(&w, &r);
	raw(&w, b + FERRY_MF_HDR_LEN, FERRY_DEV_HDR_LEN);
	assert_int_equal(ferry__wire_get_mf_dev(&r, &g), 0);
	assert_memory_equal(&g, &h, sizeof(h));
	h = (ferry_wire_dev_hdr){ .dev = 0, .index = 2, .flags = FERRY_DEV_F_END };
	ferry__wire_st_dev_hdr(b, &h);
	raw(&w, b, FERRY_DEV_HDR_LEN);
	ferry__chan_ctx(&r, "multifd device state");
	assert_int_equal(ferry__wire_get_mf_dev(&r, &g), FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg,
			    "device 0 buffer 2: unknown flags 0x1 (multifd device state at offset 16)");
	unpair(&w, &r);
	assert_int_equal(ferry__wire_cmd_len(FERRY_CMD_SWITCHOVER_START), 0);
}

static void t_live_refused(void **state)
{
	(void)state;
	static const uint32_t hdr[][4] = {
		{ 0, 1, 0x4, 8 }, { 2, 7, FERRY_DEV_F_END, 1 }, { 0, 0, 0, 0 },
		{ 0, 3, 0, FERRY_DEV_BUF_MAX + 1 }, { 1, 2, FERRY_DEV_F_INIT, 5 },
		{ 0, 4, FERRY_DEV_F_END | FERRY_DEV_F_INIT, 0 },
	};
	static const char *const msg[] = {
		"device 0 buffer 1: unknown flags 0x4 (device state at offset 0)",
		"device 2: end of state marker with 1 bytes (device state at offset 0)",
		"device 0 buffer 0 of 0 bytes (1..1048576) (device state at offset 0)",
		"device 0 buffer 3 of 1048577 bytes (1..1048576) (device state at offset 0)",
		"device 1: initial data marker with 5 bytes (device state at offset 0)",
		"device 0 buffer 4: flags 0x3 (END and INIT) (device state at offset 0)",
	};
	for (unsigned i = 0; i < 6; i++) {
		ferry_chan w, r;
		pair(&w, &r);
		for (unsigned k = 0; k < 4; k++)
			ferry__chan_put_be32(&w, hdr[i][k]);
		assert_int_equal(ferry__chan_flush(&w), 0);
		ferry__chan_ctx(&r, "device state");
		ferry_wire_dev_hdr h;
		assert_int_equal(ferry__wire_get_dev_hdr(&r, &h), FERRY_EBADSTREAM);
		assert_string_equal(r.in_err.msg, msg[i]);
		unpair(&w, &r);
	}
	ferry_chan w, r;
	pair(&w, &r);
	ferry__chan_put_be32(&w, 0);
	assert_int_equal(ferry__chan_flush(&w), 0);
	ferry__chan_ctx(&r, "live device list");
	uint32_t n;
	assert_int_equal(ferry__wire_get_live_count(&r, &n), FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg, "0 live devices (1..64) (live device list at offset 0)");
	unpair(&w, &r);
	pair(&w, &r);
	ferry_wire_live_dev e = { .id = "nic" };
	ferry__wire_put_name(&w, "nic");
	ferry__chan_put_be32(&w, 0);
	ferry__chan_put_u8(&w, 4); /* flags: only CONFIG (1) and PRECOPY (2) exist */
	ferry__chan_put_be32(&w, 0);
	ferry__wire_put_dev_config(&w, 0, 1, "", 0);
	assert_int_equal(ferry__chan_flush(&w), 0);
	ferry__chan_ctx(&r, "live device list");
	assert_int_equal(ferry__wire_get_live_dev(&r, &e), FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg, "live device 'nic' flags byte 4 (live device list at offset 0)");
	unpair(&w, &r);
}

/*
 * A PAGES run whose checksums the caller computed ahead (the first pass's
 * helper, ram.c) carries exactly those; without them the codec computes
 * the same values itself.
 */
static void t_sums_given(void **state)
{
	(void)state;
	ferry_chan w, r;
	ferry_sums ws, rs;
	static uint8_t pages[2 * FERRY_PAGE_SIZE], got[sizeof(pages)];
	memset(pages, 0xa5, sizeof(pages));
	uint64_t seed = ferry__sum_seed("pc.ram");
	const uint64_t right[2] = { ferry__sum_page(pages, seed, 7),
				    ferry__sum_page(pages + FERRY_PAGE_SIZE, seed, 8) };
	const uint64_t given[2] = { 0x1111, 0x2222 };
	pair(&w, &r);
	assert_int_equal(ferry__sums_init(&ws, NULL), 0);
	assert_int_equal(ferry__sums_init(&rs, NULL), 0);
	ferry__sums_attach(&w, &ws, FERRY_SUM_MAIN);
	ferry__sums_attach(&r, &rs, FERRY_SUM_MAIN);
	ferry__chan_ctl_start(&w);
	ferry__wire_put_ram_run(&w, FERRY_RAM_PAGES, "pc.ram", false, 7, 2, pages, NULL);
	ferry__wire_put_ram_run(&w, FERRY_RAM_PAGES, "pc.ram", true, 7, 2, pages, right);
	ferry__wire_put_ram_run(&w, FERRY_RAM_PAGES, "pc.ram", true, 7, 2, pages, given);
	assert_int_equal(ferry__chan_flush(&w), 0);
	ferry__chan_ctl_start(&r);
	const uint64_t *want[3] = { right, right, given };
	for (int k = 0; k < 3; k++) {
		uint64_t flags, addr, rec;
		uint32_t n;
		uint8_t sums[FERRY_RAM_MAX_RUN * FERRY_SUM_LEN];
		char name[FERRY_NAME_MAX + 1] = "pc.ram";
		assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
		if (!k)
			assert_int_equal(ferry__wire_get_name(&r, FERRY_WIRE_BLOCK, name), 0);
		assert_int_equal(ferry__wire_get_ram_count(&r, &n), 0);
		assert_int_equal(n, 2);
		assert_int_equal(ferry__wire_get_ram_sums(&r, FERRY_RAM_PAGES, name, 7, n, sums, &rec),
				 0);
		assert_int_equal(rec, k);
		assert_int_equal(ferry__ld_be64(sums), want[k][0]);
		assert_int_equal(ferry__ld_be64(sums + 8), want[k][1]);
		assert_int_equal(ferry__chan_read_direct(&r, got, sizeof(got)), 0);
	}
	ferry__sums_fini(&ws);
	ferry__sums_fini(&rs);
	unpair(&w, &r);
}

/*
 * Checksums (stream/sum.h): a PAGES run carries one per page after its
 * count, a device body one after its length; both sides fold the same
 * records into the same digest; a changed payload fails with its message.
 */
static void t_sums(void **state)
{
	(void)state;
	ferry_chan w, r;
	ferry_sums ws, rs;
	static uint8_t pages[2 * FERRY_PAGE_SIZE];
	memset(pages, 0x5a, sizeof(pages));
	pair(&w, &r);
	assert_int_equal(ferry__sums_init(&ws, NULL), 0);
	assert_int_equal(ferry__sums_init(&rs, NULL), 0);
	ferry__sums_attach(&w, &ws, FERRY_SUM_MAIN);
	ferry__sums_attach(&r, &rs, FERRY_SUM_MAIN);
	ferry__wire_put_header(&w, UUID);
	ferry__chan_ctl_start(&w);
	ferry__wire_put_ram_run(&w, FERRY_RAM_PAGES, "pc.ram", false, 7, 2, pages, NULL);
	ferry__wire_put_ram_run(&w, FERRY_RAM_ZEROS, "pc.ram", true, 9, 3, NULL, NULL);
	ferry__wire_put_device_state(&w, 2, "abc", 3);
	ferry__wire_put_device_state(&w, 2, "abc", 3);
	ferry__wire_put_cmd_digest(&w, (ferry_wire_digest){ atomic_load(&ws.records),
							     atomic_load(&ws.digest) });
	assert_int_equal(ferry__chan_flush(&w), 0);
	assert_int_equal(atomic_load(&ws.records), 4);

	ferry_wire_hdr h;
	assert_int_equal(ferry__wire_get_header(&r, &h), 0);
	assert_int_equal(h.version, FERRY_STREAM_VERSION);
	ferry__chan_ctl_start(&r);
	uint64_t flags, addr, rec, sum;
	uint32_t n, len;
	uint8_t sums[FERRY_RAM_MAX_RUN * FERRY_SUM_LEN], b[3];
	char name[FERRY_NAME_MAX + 1];
	assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
	assert_int_equal(ferry__wire_get_name(&r, FERRY_WIRE_BLOCK, name), 0);
	assert_int_equal(ferry__wire_get_ram_count(&r, &n), 0);
	assert_int_equal(ferry__wire_get_ram_sums(&r, FERRY_RAM_PAGES, name, 7, n, sums, &rec), 0);
	assert_int_equal(rec, 0);
	uint64_t seed = ferry__sum_seed("pc.ram");
	assert_int_equal(ferry__ld_be64(sums), ferry__sum_page(pages, seed, 7));
	assert_int_equal(ferry__ld_be64(sums + 8), ferry__sum_page(pages + FERRY_PAGE_SIZE, seed, 8));
	static uint8_t got[sizeof(pages)];
	assert_int_equal(ferry__chan_read_direct(&r, got, sizeof(got)), 0); /* payload: not hashed */
	assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
	assert_int_equal(ferry__wire_get_ram_count(&r, &n), 0);
	assert_int_equal(ferry__wire_get_ram_sums(&r, FERRY_RAM_ZEROS, name, 9, n, sums, &rec), 0);
	assert_int_equal(rec, 1);
	/* The first body verifies; the second is changed after its checksum was read. */
	for (int k = 0; k < 2; k++) {
		ferry__chan_ctx(&r, "device state");
		assert_int_equal(ferry__wire_get_device_len(&r, &len), 0);
		assert_int_equal(ferry__wire_get_sum(&r, &sum), 0);
		assert_int_equal(ferry__chan_read(&r, b, 3), 0);
		b[1] ^= (uint8_t)k;
		assert_int_equal(ferry__wire_check_sum(&r, b, 3, 2, sum, "device 'cpu' instance 0"),
				 k ? FERRY_EBADSTREAM : 0);
	}
	assert_string_equal(r.in_err.msg, "checksum mismatch: device 'cpu' instance 0, main channel "
			    "(device state at offset 8290)");
	assert_int_equal(atomic_load(&rs.mismatches), 1);
	/* Same records, same order: the same digest. */
	assert_int_equal(atomic_load(&rs.records), 4);
	assert_int_equal(atomic_load(&rs.digest), atomic_load(&ws.digest));
	/* Every byte but the pages and the device payloads: the same control hash. */
	memset(&r.in_err, 0, sizeof(r.in_err)); /* the test's own mismatch above is sticky */
	uint8_t type, buf[FERRY_CMD_DIGEST_LEN];
	uint16_t cmd, clen;
	assert_int_equal(ferry__chan_get_u8(&r, &type), 0);
	assert_int_equal(ferry__wire_get_cmd(&r, &cmd, &clen), 0);
	assert_int_equal(cmd, FERRY_CMD_DIGEST);
	uint64_t ctl = ferry__chan_ctl_in(&r);
	assert_int_equal(ferry__chan_read(&r, buf, clen), 0);
	ferry_wire_digest d;
	ferry__wire_cmd_digest_decode(buf, &d);
	assert_int_equal(d.records, 4);
	assert_int_equal(d.digest, atomic_load(&ws.digest));
	assert_int_equal(d.ctl, ctl);
	assert_int_not_equal(ctl, 0);
	assert_int_equal(d.package, 0);
	ferry__sums_fini(&ws);
	ferry__sums_fini(&rs);
	unpair(&w, &r);
}

/*
 * A ZEROS or FREE record carries its own value as its checksum: one whose
 * place or count changed on the way fails with its message.
 */
static void t_sums_zeros(void **state)
{
	(void)state;
	ferry_chan w, r;
	ferry_sums ws, rs;
	pair(&w, &r);
	assert_int_equal(ferry__sums_init(&ws, NULL), 0);
	assert_int_equal(ferry__sums_init(&rs, NULL), 0);
	ferry__sums_attach(&w, &ws, FERRY_SUM_MAIN);
	ferry__sums_attach(&r, &rs, FERRY_SUM_MAIN);
	ferry__wire_put_ram_run(&w, FERRY_RAM_FREE, "pc.ram", false, 4, 2, NULL, NULL);
	ferry__wire_put_ram_run(&w, FERRY_RAM_ZEROS, "pc.ram", true, 9, 3, NULL, NULL);
	assert_int_equal(ferry__chan_flush(&w), 0);

	uint64_t flags, addr, rec;
	uint32_t n;
	uint8_t sums[FERRY_RAM_MAX_RUN * FERRY_SUM_LEN];
	char name[FERRY_NAME_MAX + 1];
	assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
	assert_int_equal(flags, FERRY_RAM_FREE);
	assert_int_equal(ferry__wire_get_name(&r, FERRY_WIRE_BLOCK, name), 0);
	assert_int_equal(ferry__wire_get_ram_count(&r, &n), 0);
	assert_int_equal(ferry__wire_get_ram_sums(&r, FERRY_RAM_FREE, name, 4, n, sums, &rec), 0);
	ferry__chan_ctx(&r, "RAM record");
	assert_int_equal(ferry__wire_get_ram_word(&r, &flags, &addr), 0);
	assert_int_equal(ferry__wire_get_ram_count(&r, &n), 0);
	/* As if a bit of the offset had flipped: page 10, not 9. */
	assert_int_equal(ferry__wire_get_ram_sums(&r, FERRY_RAM_ZEROS, name, 10, n, sums, &rec),
			 FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg, "checksum mismatch: zero pages record 1 (pages 10..12 of "
			    "RAM block 'pc.ram'), main channel (RAM record at offset 27)");
	assert_int_equal(atomic_load(&rs.mismatches), 1);
	ferry__sums_fini(&ws);
	ferry__sums_fini(&rs);
	unpair(&w, &r);
}

static void t_sections_and_commands(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	ferry__wire_put_section_start(&w, FERRY_REC_SECTION_FULL, 2, "cpu", 1, 3);
	ferry__wire_put_device_state(&w, 2, "abc", 3);
	ferry__wire_put_footer(&w, 2);
	ferry__wire_put_section_part(&w, FERRY_REC_SECTION_PART, 1);
	ferry__wire_put_cmd_multifd(&w, 4, 1);
	ferry__wire_put_cmd_be32(&w, FERRY_CMD_PING, 0xdeadbeef);
	ferry__wire_put_cmd_u8(&w, FERRY_CMD_VM_STATE, 1);
	ferry__wire_put_record(&w, FERRY_REC_EOF);
	ferry__wire_put_footer(&w, 5);
	assert_int_equal(ferry__chan_flush(&w), 0);

	uint8_t t, b[8];
	uint32_t id, inst, ver, len;
	uint16_t cmd, clen;
	char idstr[FERRY_NAME_MAX + 1];
	assert_int_equal(ferry__wire_get_record(&r, &t), 0);
	assert_int_equal(t, FERRY_REC_SECTION_FULL);
	assert_int_equal(ferry__wire_get_section_start(&r, &id, idstr, &inst, &ver), 0);
	assert_int_equal(id, 2);
	assert_string_equal(idstr, "cpu");
	assert_int_equal(inst, 1);
	assert_int_equal(ver, 3);
	assert_int_equal(ferry__wire_get_device_len(&r, &len), 0);
	assert_int_equal(len, 3);
	assert_int_equal(ferry__chan_read(&r, b, 3), 0);
	assert_memory_equal(b, "abc", 3);
	assert_int_equal(ferry__wire_get_footer(&r, 2), 0);
	assert_int_equal(ferry__wire_get_record(&r, &t), 0);
	assert_int_equal(t, FERRY_REC_SECTION_PART);
	assert_int_equal(ferry__wire_get_section_id(&r, &id), 0);
	assert_int_equal(id, 1);

	assert_int_equal(ferry__wire_get_record(&r, &t), 0);
	assert_int_equal(t, FERRY_REC_COMMAND);
	assert_int_equal(ferry__wire_get_cmd(&r, &cmd, &clen), 0);
	assert_int_equal(cmd, FERRY_CMD_MULTIFD);
	assert_int_equal(clen, ferry__wire_cmd_len(cmd));
	assert_int_equal(ferry__chan_read(&r, b, clen), 0);
	uint32_t ch;
	uint8_t comp;
	ferry__wire_cmd_multifd_decode(b, &ch, &comp);
	assert_int_equal(ch, 4);
	assert_int_equal(comp, 1);
	assert_int_equal(ferry__wire_get_record(&r, &t), 0);
	assert_int_equal(ferry__wire_get_cmd(&r, &cmd, &clen), 0);
	assert_int_equal(cmd, FERRY_CMD_PING);
	assert_int_equal(clen, FERRY_CMD_PING_LEN);
	assert_int_equal(ferry__chan_read(&r, b, clen), 0);
	assert_int_equal(ferry__wire_cmd_be32(b), 0xdeadbeef);
	assert_int_equal(ferry__wire_get_record(&r, &t), 0);
	assert_int_equal(ferry__wire_get_cmd(&r, &cmd, &clen), 0);
	assert_int_equal(cmd, FERRY_CMD_VM_STATE);
	assert_int_equal(clen, ferry__wire_cmd_len(cmd));
	assert_int_equal(ferry__chan_read(&r, b, clen), 0);
	assert_int_equal(b[0], 1);
	assert_int_equal(ferry__wire_get_record(&r, &t), 0);
	assert_int_equal(t, FERRY_REC_EOF);
	/* A footer that closes another section. */
	assert_int_equal(ferry__wire_get_footer(&r, 1), FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg,
			    "bad section footer (0x7e, id 5) for section 1 (section footer at offset 60)");

	assert_int_equal(ferry__wire_cmd_len(FERRY_CMD_POSTCOPY_DISCARD), FERRY_CMD_LEN_VARIABLE);
	assert_int_equal(ferry__wire_cmd_len(FERRY_CMD_POSTCOPY_RESUME), FERRY_CMD_LEN_RESUME_ONLY);
	assert_int_equal(ferry__wire_cmd_len(FERRY_CMD_SWITCHOVER), 0);
	unpair(&w, &r);
}

static void t_return_path(void **state)
{
	(void)state;
	ferry_chan w, r;
	pair(&w, &r);
	char longmsg[600];
	memset(longmsg, 'x', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = 0;
	ferry__wire_put_rp_shut(&w, -EIO, longmsg);
	ferry__wire_put_rp_shut(&w, 0, NULL);
	uint8_t pong[FERRY_RP_PONG_LEN] = { 0, 0, 0, 42 };
	ferry__wire_put_rp(&w, FERRY_RP_PONG, pong, sizeof(pong), NULL, 0);
	ferry__wire_put_rp_load(&w, &(ferry_wire_load){ FERRY_PING_LOAD | 7, 1ull << 40, 123456789 });
	assert_int_equal(ferry__chan_flush(&w), 0);

	uint16_t type, len;
	uint8_t buf[FERRY_RP_PAYLOAD_MAX];
	const uint8_t *msg;
	size_t ml;
	int status;
	assert_int_equal(ferry__wire_get_rp(&r, &type, &len), 0);
	assert_int_equal(type, FERRY_RP_SHUT);
	assert_int_equal(len, FERRY_RP_SHUT_STATUS_LEN + FERRY_RP_SHUT_MSG_MAX);
	assert_int_equal(ferry__chan_read(&r, buf, len), 0);
	ferry__wire_rp_shut_decode(buf, len, &status, &msg, &ml);
	assert_int_equal(status, -EIO);
	assert_int_equal(ml, FERRY_RP_SHUT_MSG_MAX);
	assert_memory_equal(msg, longmsg, ml);
	assert_int_equal(ferry__wire_get_rp(&r, &type, &len), 0);
	assert_int_equal(len, FERRY_RP_SHUT_STATUS_LEN);
	assert_int_equal(ferry__chan_read(&r, buf, len), 0);
	ferry__wire_rp_shut_decode(buf, len, &status, &msg, &ml);
	assert_int_equal(status, 0);
	assert_int_equal(ml, 0);
	assert_int_equal(ferry__wire_get_rp(&r, &type, &len), 0);
	assert_int_equal(type, FERRY_RP_PONG);
	assert_int_equal(len, FERRY_RP_PONG_LEN);
	assert_int_equal(ferry__chan_read(&r, buf, len), 0);
	assert_int_equal(ferry__wire_rp_pong_decode(buf), 42);
	/* A load report: its three figures back, and no other length. */
	assert_int_equal(ferry__wire_get_rp(&r, &type, &len), 0);
	assert_int_equal(type, FERRY_RP_LOAD);
	assert_int_equal(len, FERRY_RP_LOAD_LEN);
	assert_int_equal(ferry__chan_read(&r, buf, len), 0);
	ferry_wire_load ld;
	assert_int_equal(ferry__wire_rp_load_decode(buf, len, &ld), 0);
	assert_int_equal(ld.value, FERRY_PING_LOAD | 7);
	assert_true(ld.bytes == 1ull << 40);
	assert_true(ld.cpu_ns == 123456789);
	assert_int_equal(ferry__wire_rp_load_decode(buf, len - 1, &ld), -EINVAL);
	assert_int_equal(ferry__wire_rp_load_decode(buf, len + 1, &ld), -EINVAL);

	/* A page request. */
	uint8_t q[FERRY_RP_REQ_MAX];
	size_t ql = ferry__wire_req_encode(q, 1ull << 33, 3, "pc.ram");
	assert_int_equal(ql, FERRY_RP_REQ_NAME_OFF + 7);
	assert_true(ferry__wire_req_len_ok(q, ql));
	assert_false(ferry__wire_req_len_ok(q, ql - 1));
	assert_false(ferry__wire_req_len_ok(q, FERRY_RP_REQ_NAME_OFF));
	uint64_t first;
	uint32_t n;
	char name[FERRY_NAME_MAX + 1];
	assert_int_equal(ferry__wire_req_decode(&r, q, &first, &n, name), 0);
	assert_true(first == 1ull << 33);
	assert_int_equal(n, 3);
	assert_string_equal(name, "pc.ram");
	unpair(&w, &r);
}

/* The messages ferry__wire_bitmap_each() hands out. */
struct bm_got {
	uint8_t msg[2][FERRY_BITMAP_MSG_MAX];
	size_t len[2];
	unsigned n;
};

static int collect(void *opaque, const uint8_t *m, size_t l)
{
	struct bm_got *got = opaque;
	if (got->n == 2)
		return -E2BIG;
	memcpy(got->msg[got->n], m, l);
	got->len[got->n++] = l;
	return 0;
}

static void t_bitmap(void **state)
{
	(void)state;
	/* Three chunks: bits in the first and the last, none in the middle. */
	uint64_t npages = 2 * FERRY_BITMAP_CHUNK_PAGES + 100;
	unsigned long *map = ferry__bitmap_new(npages);
	ferry__bitmap_set_range(map, 3, 2);
	ferry__bitmap_set_range(map, npages - 1, 1);
	static struct bm_got got;
	assert_int_equal(ferry__wire_bitmap_each("pc.ram", npages, map, collect, &got), 0);
	assert_int_equal(got.n, 2);
	assert_int_equal(got.len[0], 7 + FERRY_BITMAP_FIRST_LEN + FERRY_PC_BITMAP_CHUNK);
	assert_int_equal(got.len[1], 7 + FERRY_BITMAP_FIRST_LEN + 2 * FERRY_BITMAP_WORD_LEN);

	ferry_chan w, r;
	pair(&w, &r);
	char name[FERRY_NAME_MAX + 1];
	uint64_t first;
	const uint8_t *words;
	size_t bytes;
	assert_int_equal(ferry__wire_bitmap_decode(&r, got.msg[0], got.len[0], name, &first, &words,
						   &bytes), 0);
	assert_string_equal(name, "pc.ram");
	assert_true(first == 0);
	assert_int_equal(bytes, FERRY_PC_BITMAP_CHUNK);
	assert_true(ferry__wire_bitmap_word(words, 0) == 0x18);
	assert_int_equal(ferry__wire_bitmap_decode(&r, got.msg[1], got.len[1], name, &first, &words,
						   &bytes), 0);
	assert_true(first == 2 * FERRY_BITMAP_CHUNK_PAGES);
	assert_true(ferry__wire_bitmap_word(words, 1) == 1ull << 35);
	/* Too short for its name and first page. */
	ferry__chan_ctx(&r, "command");
	assert_int_equal(ferry__wire_bitmap_decode(&r, got.msg[1], 10, name, &first, &words, &bytes),
			 FERRY_EBADSTREAM);
	assert_string_equal(r.in_err.msg, "page bitmap of 10 bytes (command at offset 0)");
	unpair(&w, &r);
	free(map);
}

/*
 * The name rule on every reader. Each case writes a name of `len` bytes
 * `bytes` and expects the message of the rule.
 */
struct name_case {
	uint8_t len;
	const char *bytes;
	const char *what;
	const char *msg; /* before " (CTX at offset 0)" */
};
static const struct name_case NAMES[] = {
	{ 0, "", FERRY_WIRE_BLOCK, "empty RAM block name" },
	{ 4, "pc\0x", FERRY_WIRE_BLOCK, "RAM block name contains NUL" },
	{ 1, "\0", FERRY_WIRE_BLOCK, "RAM block name contains NUL" },
	{ 0, "", FERRY_WIRE_SECTION, "empty section name" },
	{ 4, "cp\0u", FERRY_WIRE_SECTION, "section name contains NUL" },
};

static void expect_msg(ferry_chan *r, const char *msg, const char *ctx)
{
	char want[300];
	snprintf(want, sizeof(want), "%s (%s at offset 0)", msg, ctx);
	assert_string_equal(r->in_err.msg, want);
}

static void t_name_rule_chan(void **state)
{
	(void)state;
	for (unsigned i = 0; i < sizeof(NAMES) / sizeof(NAMES[0]); i++) {
		const struct name_case *k = &NAMES[i];
		ferry_chan w, r;
		pair(&w, &r);
		ferry__chan_put_u8(&w, k->len);
		raw(&w, k->bytes, k->len);
		ferry__chan_ctx(&r, "RAM pages");
		char name[FERRY_NAME_MAX + 1];
		assert_int_equal(ferry__wire_get_name(&r, k->what, name), FERRY_EBADSTREAM);
		expect_msg(&r, k->msg, "RAM pages");
		unpair(&w, &r);
	}
	/* The block list entry and a section header read names the same way. */
	ferry_chan w, r;
	pair(&w, &r);
	ferry__chan_put_u8(&w, 4);
	raw(&w, "pc\0x\0\0\0\0\0\0\0\0", 12);
	ferry__chan_ctx(&r, "RAM block list");
	char name[FERRY_NAME_MAX + 1];
	uint64_t size;
	assert_int_equal(ferry__wire_get_block_entry(&r, name, &size), FERRY_EBADSTREAM);
	expect_msg(&r, "RAM block name contains NUL", "RAM block list");
	unpair(&w, &r);
	pair(&w, &r);
	ferry__chan_put_be32(&w, 2);
	ferry__chan_put_u8(&w, 2);
	raw(&w, "a\0", 2);
	ferry__chan_ctx(&r, "section start");
	uint32_t id, inst, ver;
	assert_int_equal(ferry__wire_get_section_start(&r, &id, name, &inst, &ver), FERRY_EBADSTREAM);
	expect_msg(&r, "section name contains NUL", "section start");
	unpair(&w, &r);
}

static void t_name_rule_buffers(void **state)
{
	(void)state;
	ferry_chan w, r;
	char name[FERRY_NAME_MAX + 1];
	/* A page request naming "pc\0x". */
	uint8_t q[FERRY_RP_REQ_MAX] = { 0 };
	q[FERRY_RP_REQ_COUNT_OFF + 3] = 1;
	q[FERRY_RP_REQ_NAME_OFF] = 4;
	memcpy(q + FERRY_RP_REQ_NAME_OFF + 1, "pc\0x", 4);
	assert_true(ferry__wire_req_len_ok(q, FERRY_RP_REQ_NAME_OFF + 5));
	pair(&w, &r);
	ferry__chan_ctx(&r, "return path message");
	uint64_t first;
	uint32_t n;
	assert_int_equal(ferry__wire_req_decode(&r, q, &first, &n, name), FERRY_EBADSTREAM);
	expect_msg(&r, "RAM block name contains NUL", "return path message");
	unpair(&w, &r);
	/* An empty name in a page request. */
	q[FERRY_RP_REQ_NAME_OFF] = 0;
	pair(&w, &r);
	ferry__chan_ctx(&r, "return path message");
	assert_int_equal(ferry__wire_req_decode(&r, q, &first, &n, name), FERRY_EBADSTREAM);
	expect_msg(&r, "empty RAM block name", "return path message");
	unpair(&w, &r);
	/* A bitmap naming "pc\0x", and one with an empty name. */
	static const struct { uint8_t p[1 + 4 + 8 + 8]; size_t len; const char *msg; } bm[] = {
		{ { 4, 'p', 'c', 0, 'x' }, 1 + 4 + 8 + 8, "RAM block name contains NUL" },
		{ { 0 }, 1 + 8 + 8, "empty RAM block name" },
	};
	for (unsigned i = 0; i < 2; i++) {
		const uint8_t *words;
		size_t bytes;
		pair(&w, &r);
		ferry__chan_ctx(&r, "command");
		assert_int_equal(ferry__wire_bitmap_decode(&r, bm[i].p, bm[i].len, name, &first,
							   &words, &bytes), FERRY_EBADSTREAM);
		expect_msg(&r, bm[i].msg, "command");
		unpair(&w, &r);
	}
	/* Over-long: the rule itself (a one-byte length cannot say more than 255). */
	char big[FERRY_NAME_MAX + 1];
	memset(big, 'a', sizeof(big));
	pair(&w, &r);
	ferry__chan_ctx(&r, "RAM pages");
	assert_int_equal(ferry__wire_name_check(&r, FERRY_WIRE_BLOCK, big, sizeof(big)),
			 FERRY_EBADSTREAM);
	expect_msg(&r, "RAM block name of 256 bytes (max 255)", "RAM pages");
	unpair(&w, &r);
	/* The longest name passes. */
	pair(&w, &r);
	assert_int_equal(ferry__wire_name_check(&r, FERRY_WIRE_BLOCK, big, FERRY_NAME_MAX), 0);
	unpair(&w, &r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_header),
		cmocka_unit_test(t_handshakes),
		cmocka_unit_test(t_mf_packet),
		cmocka_unit_test(t_ram_records),
		cmocka_unit_test(t_ram_count_refused),
		cmocka_unit_test(t_live_records),
		cmocka_unit_test(t_mf_dev_packet),
		cmocka_unit_test(t_live_refused),
		cmocka_unit_test(t_sections_and_commands),
		cmocka_unit_test(t_return_path),
		cmocka_unit_test(t_bitmap),
		cmocka_unit_test(t_name_rule_chan),
		cmocka_unit_test(t_name_rule_buffers),
		cmocka_unit_test(t_sums),
		cmocka_unit_test(t_sums_given),
		cmocka_unit_test(t_sums_zeros),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
