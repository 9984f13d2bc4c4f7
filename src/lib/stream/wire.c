/* SPDX-License-Identifier: MIT */
/*
 * The wire codec's records off the page path (see wire.h for the design):
 * names, the stream header, handshakes, sections, commands, the RAM block
 * list, return path messages and page bitmaps.
 *
 * Thread: whichever thread owns the channel side used (chan.h).
 */
#include "stream/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry/common.h"

/* ---- names ---- */

int ferry__wire_name_check(ferry_chan *c, const char *what, const char *name, size_t len)
{
	if (!len)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "empty %s name", what);
	if (len > FERRY_NAME_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "%s name of %zu bytes (max %u)", what,
					len, FERRY_NAME_MAX);
	if (memchr(name, 0, len))
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "%s name contains NUL", what);
	return 0;
}

int ferry__wire_get_name(ferry_chan *c, const char *what, char name[FERRY_NAME_MAX + 1])
{
	uint8_t len;
	int r = ferry__chan_get_u8(c, &len);
	name[0] = 0;
	if (r)
		return r;
	if (!len)
		return ferry__wire_name_check(c, what, name, 0);
	if ((r = ferry__chan_read(c, name, len)))
		return r;
	name[len] = 0;
	return ferry__wire_name_check(c, what, name, len);
}

int ferry__wire_ld_name(ferry_chan *c, const char *what, const uint8_t *p,
			char name[FERRY_NAME_MAX + 1])
{
	size_t len = p[0];
	memcpy(name, p + 1, len);
	name[len] = 0;
	return ferry__wire_name_check(c, what, name, len);
}

/* ---- stream header and handshakes ---- */

void ferry__wire_put_header(ferry_chan *c, const uint8_t uuid[FERRY_UUID_LEN])
{
	uint8_t b[FERRY_HDR_LEN];
	ferry__st_be32(b + FERRY_HDR_MAGIC_OFF, FERRY_STREAM_MAGIC);
	ferry__st_be32(b + FERRY_HDR_VERSION_OFF,
		       c->sums ? FERRY_STREAM_VERSION : FERRY_STREAM_VERSION_PLAIN);
	memcpy(b + FERRY_HDR_UUID_OFF, uuid, FERRY_UUID_LEN);
	ferry__st_be32(b + FERRY_HDR_PSIZE_OFF, FERRY_PAGE_SIZE);
	ferry__chan_put(c, b, sizeof(b));
}

int ferry__wire_get_header(ferry_chan *c, ferry_wire_hdr *h)
{
	uint8_t b[FERRY_HDR_LEN];
	int r = ferry__chan_read(c, b, sizeof(b));
	if (r)
		return r;
	h->magic = ferry__ld_be32(b + FERRY_HDR_MAGIC_OFF);
	h->version = ferry__ld_be32(b + FERRY_HDR_VERSION_OFF);
	memcpy(h->uuid, b + FERRY_HDR_UUID_OFF, FERRY_UUID_LEN);
	h->page_size = ferry__ld_be32(b + FERRY_HDR_PSIZE_OFF);
	return 0;
}

void ferry__wire_pc_hs_encode(uint8_t b[FERRY_PC_HS_LEN], const uint8_t uuid[FERRY_UUID_LEN])
{
	ferry__st_be32(b + FERRY_PC_HS_MAGIC_OFF, FERRY_PC_HS_MAGIC);
	ferry__st_be32(b + FERRY_PC_HS_VERSION_OFF, FERRY_STREAM_VERSION);
	memcpy(b + FERRY_PC_HS_UUID_OFF, uuid, FERRY_UUID_LEN);
}

bool ferry__wire_pc_hs_match(const uint8_t b[FERRY_PC_HS_LEN],
			     const uint8_t uuid[FERRY_UUID_LEN])
{
	return ferry__ld_be32(b + FERRY_PC_HS_MAGIC_OFF) == FERRY_PC_HS_MAGIC &&
	       ferry__ld_be32(b + FERRY_PC_HS_VERSION_OFF) == FERRY_STREAM_VERSION &&
	       !memcmp(b + FERRY_PC_HS_UUID_OFF, uuid, FERRY_UUID_LEN);
}

void ferry__wire_mf_hs_encode(uint8_t b[FERRY_MF_HS_LEN], const uint8_t uuid[FERRY_UUID_LEN],
			      uint32_t id, uint32_t count)
{
	ferry__st_be32(b + FERRY_MF_HS_MAGIC_OFF, FERRY_MF_HS_MAGIC);
	ferry__st_be32(b + FERRY_MF_HS_VERSION_OFF, FERRY_MF_VERSION);
	memcpy(b + FERRY_MF_HS_UUID_OFF, uuid, FERRY_UUID_LEN);
	ferry__st_be32(b + FERRY_MF_HS_ID_OFF, id);
	ferry__st_be32(b + FERRY_MF_HS_COUNT_OFF, count);
}

void ferry__wire_mf_hs_decode(const uint8_t b[FERRY_MF_HS_LEN], ferry_wire_mf_hs *hs)
{
	hs->magic = ferry__ld_be32(b + FERRY_MF_HS_MAGIC_OFF);
	hs->version = ferry__ld_be32(b + FERRY_MF_HS_VERSION_OFF);
	memcpy(hs->uuid, b + FERRY_MF_HS_UUID_OFF, FERRY_UUID_LEN);
	hs->id = ferry__ld_be32(b + FERRY_MF_HS_ID_OFF);
	hs->count = ferry__ld_be32(b + FERRY_MF_HS_COUNT_OFF);
}

/* ---- sections ---- */

void ferry__wire_put_section_start(ferry_chan *c, uint8_t type, uint32_t id, const char *idstr,
				   uint32_t instance, uint32_t version)
{
	ferry__wire_put_section_part(c, type, id);
	ferry__wire_put_name(c, idstr);
	ferry__chan_put_be32(c, instance);
	ferry__chan_put_be32(c, version);
}

void ferry__wire_put_section_part(ferry_chan *c, uint8_t type, uint32_t id)
{
	ferry__chan_put_u8(c, type);
	ferry__chan_put_be32(c, id);
}

void ferry__wire_put_footer(ferry_chan *c, uint32_t id)
{
	ferry__wire_put_section_part(c, FERRY_REC_FOOTER, id);
}

int ferry__wire_get_section_start(ferry_chan *c, uint32_t *id, char idstr[FERRY_NAME_MAX + 1],
				  uint32_t *instance, uint32_t *version)
{
	int r;
	if ((r = ferry__chan_get_be32(c, id)) || (r = ferry__wire_get_name(c, FERRY_WIRE_SECTION, idstr)))
		return r;
	if ((r = ferry__chan_get_be32(c, instance)) || (r = ferry__chan_get_be32(c, version)))
		return r;
	return 0;
}

int ferry__wire_get_footer(ferry_chan *c, uint32_t id)
{
	uint8_t t;
	uint32_t fid;
	int r;
	ferry__chan_ctx(c, "section footer");
	if ((r = ferry__chan_get_u8(c, &t)) || (r = ferry__chan_get_be32(c, &fid)))
		return r;
	if (t != FERRY_REC_FOOTER || fid != id)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"bad section footer (0x%02x, id %u) for section %u", t, fid, id);
	return 0;
}

void ferry__wire_put_device_state(ferry_chan *c, uint32_t id, const void *p, uint32_t len)
{
	ferry__chan_put_be32(c, len);
	ferry__wire_put_sum(c, p, len, id);
	ferry__chan_put(c, p, len);
}

/* ---- checksums ---- */

void ferry__wire_put_sum(ferry_chan *c, const void *p, size_t len, uint64_t seed)
{
	if (!c->sums)
		return;
	uint64_t sum = ferry__sum_buf(p, len, seed);
	ferry__chan_put_be64(c, sum);
	ferry__sum_fold_chan(c, sum);
}

int ferry__wire_get_sum(ferry_chan *c, uint64_t *sum)
{
	*sum = 0;
	return c->sums ? ferry__chan_get_be64(c, sum) : 0;
}

int ferry__wire_check_sum(ferry_chan *c, const void *p, size_t len, uint64_t seed, uint64_t sum,
			  const char *what)
{
	if (!c->sums)
		return 0;
	ferry__sum_fold_chan(c, sum);
	return ferry__sum_check_buf(c, p, len, seed, sum, what);
}

size_t ferry__wire_st_mf_sums(uint8_t *b, const struct ferry_ram_block *rb, const uint64_t *idx,
			      uint32_t nn, const uint8_t *data)
{
	uint64_t seed = ferry__sum_seed(rb->name);
	for (uint32_t i = 0; i < nn; i++) {
		const uint8_t *page = data ? data + ((size_t)i << FERRY_PAGE_SHIFT)
					   : rb->host + (idx[i] << FERRY_PAGE_SHIFT);
		ferry__st_be64(b + (size_t)i * FERRY_SUM_LEN, ferry__sum_page(page, seed, idx[i]));
	}
	return (size_t)nn * FERRY_SUM_LEN;
}

uint64_t ferry__wire_mf_value(const char *block, const uint8_t *idx, uint32_t n,
			      const uint8_t *sums, uint32_t nn)
{
	if (!block)
		return ferry__sum_ram_value(FERRY_MF_SYNC, 0, 0, 0, NULL, 0);
	return ferry__sum_ram_value(0, ferry__sum_seed(block),
				    XXH3_64bits(idx, (size_t)n * FERRY_MF_INDEX_LEN), n, sums, nn);
}

/* ---- live devices ---- */

void ferry__wire_put_live_count(ferry_chan *c, uint32_t n)
{
	ferry__chan_put_be32(c, n);
}

int ferry__wire_get_live_count(ferry_chan *c, uint32_t *n)
{
	int r = ferry__chan_get_be32(c, n);
	if (!r && (*n < 1 || *n > FERRY_LIVE_DEVICES_MAX))
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "%u live devices (1..%u)", *n,
					FERRY_LIVE_DEVICES_MAX);
	return r;
}

void ferry__wire_put_live_dev(ferry_chan *c, const ferry_wire_live_dev *d)
{
	ferry__wire_put_name(c, d->id);
	ferry__chan_put_be32(c, d->instance);
	ferry__chan_put_u8(c, (uint8_t)((d->has_config ? FERRY_LIVE_F_CONFIG : 0) |
					(d->precopy ? FERRY_LIVE_F_PRECOPY : 0)));
	ferry__chan_put_be32(c, d->config_version);
}

int ferry__wire_get_live_dev(ferry_chan *c, ferry_wire_live_dev *d)
{
	int r;
	uint8_t f;
	if ((r = ferry__wire_get_name(c, FERRY_WIRE_DEVICE, d->id)) ||
	    (r = ferry__chan_get_be32(c, &d->instance)) || (r = ferry__chan_get_u8(c, &f)) ||
	    (r = ferry__chan_get_be32(c, &d->config_version)))
		return r;
	if (f & ~(FERRY_LIVE_F_CONFIG | FERRY_LIVE_F_PRECOPY))
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "live device '%s' flags byte %u",
					d->id, f);
	d->has_config = !!(f & FERRY_LIVE_F_CONFIG);
	d->precopy = !!(f & FERRY_LIVE_F_PRECOPY);
	return 0;
}

void ferry__wire_put_dev_state(ferry_chan *c, const ferry_wire_dev_hdr *h, const void *data)
{
	uint8_t b[FERRY_DEV_HDR_LEN];
	ferry__wire_st_dev_hdr(b, h);
	ferry__chan_put_u8(c, FERRY_DEV_STATE);
	ferry__chan_put(c, b, sizeof(b));
	ferry__wire_put_sum(c, data, h->len, ferry__sum_dev_seed(h->dev, h->index));
	if (h->len)
		ferry__chan_put_external(c, data, h->len);
}

/* A DEV_STATE header from c, checked; `flags`: the flags it may have. */
static int get_dev_hdr(ferry_chan *c, ferry_wire_dev_hdr *h, uint32_t flags)
{
	uint8_t b[FERRY_DEV_HDR_LEN];
	int r = ferry__chan_read(c, b, sizeof(b));
	if (r)
		return r;
	ferry__wire_ld_dev_hdr(b, h);
	if (h->flags & ~flags)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "device %u buffer %u: unknown flags 0x%x",
					h->dev, h->index, h->flags);
	uint32_t marker = h->flags & (FERRY_DEV_F_END | FERRY_DEV_F_INIT);
	if (marker == (FERRY_DEV_F_END | FERRY_DEV_F_INIT))
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "device %u buffer %u: flags 0x%x (END "
					"and INIT)", h->dev, h->index, h->flags);
	if (marker && h->len)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "device %u: %s marker with %u bytes",
					h->dev, marker == FERRY_DEV_F_END ? "end of state" :
					"initial data", h->len);
	if (!marker && (!h->len || h->len > FERRY_DEV_BUF_MAX))
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"device %u buffer %u of %u bytes (1..%u)", h->dev, h->index,
					h->len, FERRY_DEV_BUF_MAX);
	return 0;
}

int ferry__wire_get_dev_hdr(ferry_chan *c, ferry_wire_dev_hdr *h)
{
	return get_dev_hdr(c, h, FERRY_DEV_F_END | FERRY_DEV_F_INIT);
}

void ferry__wire_mf_dev_encode(uint8_t b[FERRY_MF_DEV_PKT_LEN], uint64_t num,
			       const ferry_wire_dev_hdr *h)
{
	ferry_wire_mf_pkt pkt = { .flags = FERRY_MF_DEVICE, .num = num };
	ferry__wire_mf_pkt_encode(b, &pkt);
	ferry__wire_st_dev_hdr(b + FERRY_MF_HDR_LEN, h);
}

size_t ferry__wire_mf_dev_encode_sum(uint8_t *b, uint64_t num, const ferry_wire_dev_hdr *h,
				     const void *data, const ferry_sums *sums)
{
	ferry__wire_mf_dev_encode(b, num, h);
	if (!sums)
		return FERRY_MF_DEV_PKT_LEN;
	ferry__st_be64(b + FERRY_MF_DEV_PKT_LEN,
		       ferry__sum_buf(data, h->len, ferry__sum_dev_seed(h->dev, h->index)));
	return FERRY_MF_DEV_PKT_LEN + FERRY_SUM_LEN;
}

int ferry__wire_get_mf_dev(ferry_chan *c, ferry_wire_dev_hdr *h)
{
	return get_dev_hdr(c, h, 0);
}

int ferry__wire_check_dev_sum(ferry_chan *c, const ferry_wire_dev_hdr *h, const void *data,
			      uint64_t sum)
{
	char what[64];
	snprintf(what, sizeof(what), "live device %u buffer %u", h->dev, h->index);
	return ferry__wire_check_sum(c, data, h->len, ferry__sum_dev_seed(h->dev, h->index), sum,
				     what);
}

void ferry__wire_put_dev_config(ferry_chan *c, uint32_t dev, uint32_t version, const void *p,
				uint32_t len)
{
	ferry__chan_put_u8(c, FERRY_DEV_CONFIG);
	ferry__chan_put_be32(c, dev);
	ferry__chan_put_be32(c, version);
	ferry__chan_put_be32(c, len);
	ferry__wire_put_sum(c, p, len, ferry__sum_dev_seed(dev, UINT32_MAX));
	ferry__chan_put(c, p, len);
}

int ferry__wire_get_dev_config(ferry_chan *c, uint32_t *dev, uint32_t *version, uint32_t *len)
{
	int r;
	if ((r = ferry__chan_get_be32(c, dev)) || (r = ferry__chan_get_be32(c, version)) ||
	    (r = ferry__chan_get_be32(c, len)))
		return r;
	if (*len > FERRY_DEVICE_STATE_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "device %u config state of %u bytes (max %u)",
					*dev, *len, FERRY_DEVICE_STATE_MAX);
	return 0;
}

/* ---- commands ---- */

void ferry__wire_put_cmd(ferry_chan *c, uint16_t cmd, const void *p, uint16_t len)
{
	ferry__chan_put_u8(c, FERRY_REC_COMMAND);
	ferry__chan_put_be16(c, cmd);
	ferry__chan_put_be16(c, len);
	ferry__chan_put(c, p, len);
}

void ferry__wire_put_cmd_be32(ferry_chan *c, uint16_t cmd, uint32_t v)
{
	uint8_t b[4];
	ferry__st_be32(b, v);
	ferry__wire_put_cmd(c, cmd, b, sizeof(b));
}

void ferry__wire_put_cmd_u8(ferry_chan *c, uint16_t cmd, uint8_t v)
{
	ferry__wire_put_cmd(c, cmd, &v, 1);
}

void ferry__wire_put_cmd_multifd(ferry_chan *c, uint32_t channels, uint8_t compression)
{
	uint8_t b[FERRY_CMD_MULTIFD_LEN];
	ferry__st_be32(b + FERRY_CMD_MULTIFD_COUNT_OFF, channels);
	b[FERRY_CMD_MULTIFD_COMP_OFF] = compression;
	ferry__wire_put_cmd(c, FERRY_CMD_MULTIFD, b, sizeof(b));
}

int ferry__wire_get_cmd(ferry_chan *c, uint16_t *cmd, uint16_t *len)
{
	int r;
	if ((r = ferry__chan_get_be16(c, cmd)) || (r = ferry__chan_get_be16(c, len)))
		return r;
	return 0;
}

int ferry__wire_cmd_len(uint16_t cmd)
{
	static const int lens[FERRY_CMD__MAX] = {
		[FERRY_CMD_PING] = FERRY_CMD_PING_LEN,
		[FERRY_CMD_SWITCHOVER] = 0,
		[FERRY_CMD_VM_STATE] = FERRY_CMD_VM_STATE_LEN,
		[FERRY_CMD_MULTIFD] = FERRY_CMD_MULTIFD_LEN,
		[FERRY_CMD_POSTCOPY_ADVISE] = FERRY_CMD_ADVISE_LEN,
		[FERRY_CMD_POSTCOPY_DISCARD] = FERRY_CMD_LEN_VARIABLE,
		[FERRY_CMD_POSTCOPY_LISTEN] = 0,
		[FERRY_CMD_POSTCOPY_RUN] = FERRY_CMD_RUN_LEN,
		[FERRY_CMD_POSTCOPY_RESUME] = FERRY_CMD_LEN_RESUME_ONLY,
		[FERRY_CMD_POSTCOPY_PACKAGE] = FERRY_CMD_PACKAGE_LEN,
		[FERRY_CMD_SWITCHOVER_START] = 0,
		[FERRY_CMD_DIGEST] = FERRY_CMD_DIGEST_LEN,
	};
	return cmd < FERRY_CMD__MAX ? lens[cmd] : FERRY_CMD_LEN_RESUME_ONLY;
}

void ferry__wire_put_cmd_digest(ferry_chan *c, ferry_wire_digest d)
{
	ferry__chan_put_u8(c, FERRY_REC_COMMAND);
	ferry__chan_put_be16(c, FERRY_CMD_DIGEST);
	ferry__chan_put_be16(c, FERRY_CMD_DIGEST_LEN);
	d.ctl = ferry__chan_ctl_out(c); /* the destination takes its own at the same byte */
	uint8_t b[FERRY_CMD_DIGEST_LEN];
	ferry__st_be64(b + FERRY_CMD_DIGEST_RECORDS_OFF, d.records);
	ferry__st_be64(b + FERRY_CMD_DIGEST_SUM_OFF, d.digest);
	ferry__st_be64(b + FERRY_CMD_DIGEST_CTL_OFF, d.ctl);
	ferry__st_be64(b + FERRY_CMD_DIGEST_PACKAGE_OFF, d.package);
	ferry__chan_put(c, b, sizeof(b));
}

/* ---- RAM section body ---- */

void ferry__wire_put_ram_sums(ferry_chan *c, uint64_t kind, const char *block, uint64_t first,
			      uint32_t n, const void *pages, const uint64_t *sums)
{
	uint8_t b[FERRY_RAM_MAX_RUN * FERRY_SUM_LEN];
	uint64_t seed = ferry__sum_seed(block);
	uint32_t ns = kind == FERRY_RAM_PAGES ? n : 0;
	for (uint32_t i = 0; i < ns; i++)
		ferry__st_be64(b + (size_t)i * FERRY_SUM_LEN,
			       sums ? sums[i]
				    : ferry__sum_page((const uint8_t *)pages + ((size_t)i << FERRY_PAGE_SHIFT),
						      seed, first + i));
	if (ns)
		ferry__chan_put(c, b, (size_t)ns * FERRY_SUM_LEN);
	uint64_t v = ferry__sum_ram_value(kind, seed, first, n, b, ns);
	if (!ns) /* ZEROS, FREE: the record's own value is its checksum */
		ferry__chan_put_be64(c, v);
	ferry__sum_fold_chan(c, v);
}

int ferry__wire_get_ram_sums(ferry_chan *c, uint64_t kind, const char *block, uint64_t first,
			     uint32_t n, uint8_t *sums, uint64_t *rec)
{
	if (!c->sums)
		return 0;
	uint32_t ns = kind == FERRY_RAM_PAGES ? n : 0;
	uint64_t want = 0;
	int r = ns ? ferry__chan_read(c, sums, (size_t)ns * FERRY_SUM_LEN)
		   : ferry__chan_get_be64(c, &want);
	if (r)
		return r;
	*rec = c->sum_seq;
	uint64_t v = ferry__sum_ram_value(kind, ferry__sum_seed(block), first, n, sums, ns);
	if (!ns) {
		char what[FERRY_NAME_MAX + 80];
		snprintf(what, sizeof(what), "%s record %llu (pages %llu..%llu of RAM block '%s')",
			 kind == FERRY_RAM_ZEROS ? "zero pages" : "free pages",
			 (unsigned long long)*rec, (unsigned long long)first,
			 (unsigned long long)(first + n - 1), block);
		if ((r = ferry__sum_check_value(c, v, want, what)))
			return r;
	}
	ferry__sum_fold_chan(c, v);
	return 0;
}

int ferry__wire_get_ram_count(ferry_chan *c, uint32_t *n)
{
	int r = ferry__chan_get_be32(c, n);
	if (r)
		return r;
	if (*n == 0 || *n > FERRY_RAM_MAX_RUN)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "RAM run of %u pages (allowed 1..%u)", *n,
					FERRY_RAM_MAX_RUN);
	return 0;
}

void ferry__wire_put_mem_size(ferry_chan *c, uint64_t total, uint32_t nblocks)
{
	ferry__wire_put_ram_flag(c, total | FERRY_RAM_MEM_SIZE);
	ferry__chan_put_be32(c, nblocks);
}

void ferry__wire_put_block_entry(ferry_chan *c, const char *name, uint64_t size)
{
	ferry__wire_put_name(c, name);
	ferry__chan_put_be64(c, size);
}

int ferry__wire_get_block_entry(ferry_chan *c, char name[FERRY_NAME_MAX + 1], uint64_t *size)
{
	int r;
	if ((r = ferry__wire_get_name(c, FERRY_WIRE_BLOCK, name)) || (r = ferry__chan_get_be64(c, size)))
		return r;
	return 0;
}

/* ---- return path ---- */

/* XXH3-64 of a return path message: its be16 type (flag included), be16 length, payload. */
static uint64_t rp_sum(uint16_t type, const void *p1, size_t l1, const void *p2, size_t l2)
{
	XXH3_state_t st;
	uint8_t h[4];
	ferry__st_be16(h, type);
	ferry__st_be16(h + 2, (uint16_t)(l1 + l2));
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, h, sizeof(h));
	if (l1)
		XXH3_64bits_update(&st, p1, l1);
	if (l2)
		XXH3_64bits_update(&st, p2, l2);
	return XXH3_64bits_digest(&st);
}

void ferry__wire_put_rp(ferry_chan *c, uint16_t type, const void *p1, size_t l1,
			const void *p2, size_t l2)
{
	if (c->sums)
		type |= FERRY_RP_F_SUM;
	ferry__chan_put_be16(c, type);
	ferry__chan_put_be16(c, (uint16_t)(l1 + l2));
	if (l1)
		ferry__chan_put(c, p1, l1);
	if (l2)
		ferry__chan_put(c, p2, l2);
	if (c->sums)
		ferry__chan_put_be64(c, rp_sum(type, p1, l1, p2, l2));
}

int ferry__wire_get_rp_sum(ferry_chan *c, uint16_t raw, uint16_t len, const uint8_t *p,
			   uint16_t *type, bool *summed)
{
	*type = raw & ~FERRY_RP_F_SUM;
	*summed = raw & FERRY_RP_F_SUM;
	if (!*summed)
		return 0;
	uint64_t want;
	int r = ferry__chan_get_be64(c, &want);
	if (r)
		return r;
	if (rp_sum(raw, p, len, NULL, 0) != want)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"checksum mismatch: return path message %u (%u bytes)", *type,
					len);
	return 0;
}

int ferry__wire_get_rp(ferry_chan *c, uint16_t *type, uint16_t *len)
{
	int r;
	if ((r = ferry__chan_get_be16(c, type)) || (r = ferry__chan_get_be16(c, len)))
		return r;
	return 0;
}

void ferry__wire_put_rp_shut(ferry_chan *c, int status, const char *msg)
{
	size_t ml = msg ? strlen(msg) : 0;
	if (ml > FERRY_RP_SHUT_MSG_MAX)
		ml = FERRY_RP_SHUT_MSG_MAX;
	uint8_t st[FERRY_RP_SHUT_STATUS_LEN];
	ferry__st_be32(st, (uint32_t)status);
	ferry__wire_put_rp(c, FERRY_RP_SHUT, st, sizeof(st), msg, ml);
}

void ferry__wire_rp_shut_decode(const uint8_t *p, size_t len, int *status, const uint8_t **msg,
				size_t *msg_len)
{
	*status = (int32_t)ferry__ld_be32(p);
	*msg = p + FERRY_RP_SHUT_STATUS_LEN;
	*msg_len = len - FERRY_RP_SHUT_STATUS_LEN;
}

void ferry__wire_put_rp_load(ferry_chan *c, const ferry_wire_load *l)
{
	uint8_t b[FERRY_RP_LOAD_LEN];
	ferry__st_be32(b + FERRY_RP_LOAD_VALUE_OFF, l->value);
	ferry__st_be64(b + FERRY_RP_LOAD_BYTES_OFF, l->bytes);
	ferry__st_be64(b + FERRY_RP_LOAD_CPU_OFF, l->cpu_ns);
	ferry__wire_put_rp(c, FERRY_RP_LOAD, b, sizeof(b), NULL, 0);
}

int ferry__wire_rp_load_decode(const uint8_t *p, size_t len, ferry_wire_load *l)
{
	if (len != FERRY_RP_LOAD_LEN)
		return -EINVAL;
	l->value = ferry__ld_be32(p + FERRY_RP_LOAD_VALUE_OFF);
	l->bytes = ferry__ld_be64(p + FERRY_RP_LOAD_BYTES_OFF);
	l->cpu_ns = ferry__ld_be64(p + FERRY_RP_LOAD_CPU_OFF);
	return 0;
}

size_t ferry__wire_req_encode(uint8_t *b, uint64_t first, uint32_t n, const char *name)
{
	ferry__st_be64(b + FERRY_RP_REQ_FIRST_OFF, first);
	ferry__st_be32(b + FERRY_RP_REQ_COUNT_OFF, n);
	return FERRY_RP_REQ_NAME_OFF + ferry__wire_st_name(b + FERRY_RP_REQ_NAME_OFF, name);
}

bool ferry__wire_req_len_ok(const uint8_t *b, size_t len)
{
	return len > FERRY_RP_REQ_NAME_OFF && len == FERRY_RP_REQ_NAME_OFF + 1u + b[FERRY_RP_REQ_NAME_OFF];
}

int ferry__wire_req_decode(ferry_chan *c, const uint8_t *b, uint64_t *first, uint32_t *n,
			   char name[FERRY_NAME_MAX + 1])
{
	*first = ferry__ld_be64(b + FERRY_RP_REQ_FIRST_OFF);
	*n = ferry__ld_be32(b + FERRY_RP_REQ_COUNT_OFF);
	return ferry__wire_ld_name(c, FERRY_WIRE_BLOCK, b + FERRY_RP_REQ_NAME_OFF, name);
}

/* ---- page bitmaps ---- */

size_t ferry__wire_bitmap_encode(uint8_t *buf, const char *name, uint64_t npages,
				 const unsigned long *map, uint64_t first)
{
	uint64_t end = first + FERRY_BITMAP_CHUNK_PAGES < npages ? first + FERRY_BITMAP_CHUNK_PAGES
								  : npages;
	if (ferry__bitmap_next_set(map, end, first) >= end)
		return 0;
	size_t o = ferry__wire_st_name(buf, name);
	ferry__st_be64(buf + o, first);
	o += FERRY_BITMAP_FIRST_LEN;
	for (uint64_t w = first / 64; w < (end + 63) / 64; w++) {
		uint64_t v = map[w]; /* unsigned long is 64 bits here (LP64) */
		for (unsigned b = 0; b < FERRY_BITMAP_WORD_LEN; b++)
			buf[o++] = (uint8_t)(v >> (8 * b));
	}
	return o;
}

int ferry__wire_bitmap_each(const char *name, uint64_t npages, const unsigned long *map,
			    int (*send)(void *opaque, const uint8_t *msg, size_t len), void *opaque)
{
	uint8_t *buf = malloc(FERRY_BITMAP_MSG_MAX);
	if (!buf)
		return -ENOMEM;
	int r = 0;
	for (uint64_t f = 0; f < npages && !r; f += FERRY_BITMAP_CHUNK_PAGES) {
		size_t l = ferry__wire_bitmap_encode(buf, name, npages, map, f);
		if (l)
			r = send(opaque, buf, l);
	}
	free(buf);
	return r;
}

int ferry__wire_bitmap_decode(ferry_chan *c, const uint8_t *p, size_t len,
			      char name[FERRY_NAME_MAX + 1], uint64_t *first,
			      const uint8_t **words, size_t *bytes)
{
	if (len < 1 || len < 1 + (size_t)p[0] + FERRY_BITMAP_FIRST_LEN)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "page bitmap of %zu bytes", len);
	int r = ferry__wire_ld_name(c, FERRY_WIRE_BLOCK, p, name);
	if (r)
		return r;
	size_t o = 1 + (size_t)p[0];
	*first = ferry__ld_be64(p + o);
	o += FERRY_BITMAP_FIRST_LEN;
	*words = p + o;
	*bytes = len - o;
	return 0;
}
