/* SPDX-License-Identifier: MIT */
/*
 * The wire codec: every record of the migration stream, of the multifd and
 * preempt channels and of the return path is encoded and decoded here, and
 * only here. docs/wire-format.md describes the bytes; format.h holds the
 * type and flag values; this file holds the offsets, sizes and the
 * functions that put them on a channel or in a buffer, or take them off.
 *
 * DESIGN: the codec knows the layout of a record, not what it means. An
 * encoder writes a whole record (or the fixed part before its payload); a
 * decoder reads it and refuses what the layout alone makes wrong (a name
 * that breaks the name rule, a run count outside 1..FERRY_RAM_MAX_RUN, a
 * message too short for its fields), with a message from
 * ferry__chan_fail(). What needs the VM (does the block exist, is the page
 * inside it) stays with the caller. Records on the page path (the RAM run,
 * the multifd packet header) are static inline here and allocate nothing;
 * the rest lives in wire.c.
 *
 * Names (RAM blocks, section idstrs): u8 length, then the bytes, no NUL.
 * One rule for every reader, ferry__wire_name_check(): 1..FERRY_NAME_MAX
 * bytes, no NUL byte, else "empty WHAT name", "WHAT name of N bytes (max
 * 255)" or "WHAT name contains NUL".
 *
 * Thread: no state of its own; each function runs on the thread that owns
 * the channel side it uses (see chan.h).
 */
#ifndef FERRY_STREAM_WIRE_H
#define FERRY_STREAM_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ferry/vm.h"
#include "internal.h"
#include "stream/chan.h"
#include "stream/format.h"
#include "stream/sum.h"

_Static_assert(FERRY_NAME_MAX <= 255, "a name's length travels in one byte");

#define FERRY_UUID_LEN 16u

/* ---- names ---- */

/* What a name names, for messages: "RAM block", "section". */
#define FERRY_WIRE_BLOCK "RAM block"
#define FERRY_WIRE_SECTION "section"
#define FERRY_WIRE_DEVICE "live device"

/* Bytes a name takes on the wire: its length byte and the name. */
static inline size_t ferry__wire_name_len(const char *name)
{
	return 1 + strlen(name);
}

/* Queues name (u8 length, bytes). name is 1..FERRY_NAME_MAX bytes (registration checks). */
static inline void ferry__wire_put_name(ferry_chan *c, const char *name)
{
	size_t nl = strlen(name);
	ferry__chan_put_u8(c, (uint8_t)nl);
	ferry__chan_put(c, name, nl);
}

/* Stores name at b; returns the bytes used. */
static inline size_t ferry__wire_st_name(uint8_t *b, const char *name)
{
	size_t nl = strlen(name);
	b[0] = (uint8_t)nl;
	memcpy(b + 1, name, nl);
	return 1 + nl;
}

/* The one name rule (see above). Returns 0 or FERRY_EBADSTREAM via ferry__chan_fail. */
int ferry__wire_name_check(ferry_chan *c, const char *what, const char *name, size_t len);
/* Reads a name from c into name (NUL-terminated) and checks it. */
int ferry__wire_get_name(ferry_chan *c, const char *what, char name[FERRY_NAME_MAX + 1]);
/*
 * Takes a name from a message buffer: p[0] is the length, p + 1 the bytes;
 * the caller has checked that 1 + p[0] bytes are there. Checks the rule.
 */
int ferry__wire_ld_name(ferry_chan *c, const char *what, const uint8_t *p,
			char name[FERRY_NAME_MAX + 1]);

/* ---- stream header ---- */

enum {
	FERRY_HDR_MAGIC_OFF = 0,
	FERRY_HDR_VERSION_OFF = 4,
	FERRY_HDR_UUID_OFF = 8,
	FERRY_HDR_PSIZE_OFF = 24,
	FERRY_HDR_LEN = 28,
};
typedef struct ferry_wire_hdr {
	uint32_t magic, version, page_size;
	uint8_t uuid[FERRY_UUID_LEN];
} ferry_wire_hdr;

/* Queues the header of a stream from the VM with this uuid. */
void ferry__wire_put_header(ferry_chan *c, const uint8_t uuid[FERRY_UUID_LEN]);
/* Reads the header's FERRY_HDR_LEN bytes (the caller judges the fields). */
int ferry__wire_get_header(ferry_chan *c, ferry_wire_hdr *h);

/* ---- preempt channel handshake (FERRY_PC_HS_LEN bytes) ---- */

enum { FERRY_PC_HS_MAGIC_OFF = 0, FERRY_PC_HS_VERSION_OFF = 4, FERRY_PC_HS_UUID_OFF = 8 };
void ferry__wire_pc_hs_encode(uint8_t b[FERRY_PC_HS_LEN], const uint8_t uuid[FERRY_UUID_LEN]);
/* True when b is the handshake of the migration of the VM with this uuid. */
bool ferry__wire_pc_hs_match(const uint8_t b[FERRY_PC_HS_LEN],
			     const uint8_t uuid[FERRY_UUID_LEN]);

/* ---- multifd channel handshake (FERRY_MF_HS_LEN bytes) ---- */

enum {
	FERRY_MF_HS_MAGIC_OFF = 0,
	FERRY_MF_HS_VERSION_OFF = 4,
	FERRY_MF_HS_UUID_OFF = 8,
	FERRY_MF_HS_ID_OFF = 24,
	FERRY_MF_HS_COUNT_OFF = 28,
};
typedef struct ferry_wire_mf_hs {
	uint32_t magic, version, id, count;
	uint8_t uuid[FERRY_UUID_LEN];
} ferry_wire_mf_hs;
void ferry__wire_mf_hs_encode(uint8_t b[FERRY_MF_HS_LEN], const uint8_t uuid[FERRY_UUID_LEN],
			      uint32_t id, uint32_t count);
void ferry__wire_mf_hs_decode(const uint8_t b[FERRY_MF_HS_LEN], ferry_wire_mf_hs *hs);

/* ---- multifd packet (page path: inline) ---- */

enum {
	FERRY_MF_MAGIC_OFF = 0,
	FERRY_MF_VERSION_OFF = 4,
	FERRY_MF_FLAGS_OFF = 8,
	FERRY_MF_NORMAL_OFF = 12,
	FERRY_MF_ZERO_OFF = 16,
	FERRY_MF_CLEN_OFF = 20,
	FERRY_MF_NUM_OFF = 24,
};
_Static_assert(FERRY_MF_NUM_OFF + 8 == FERRY_MF_HDR_LEN, "multifd packet header layout");
/* Bytes of one page index after the header (and block name). */
#define FERRY_MF_INDEX_LEN 8u
/* The largest header, block name and index list of one packet. */
#define FERRY_MF_HDR_MAX (FERRY_MF_HDR_LEN + 1 + FERRY_NAME_MAX + \
			  (FERRY_MF_INDEX_LEN + FERRY_SUM_LEN) * FERRY_MF_MAX_PAGES)

typedef struct ferry_wire_mf_pkt {
	uint32_t magic, version; /* set by decode; encode writes the constants */
	uint32_t flags, normal, zero, clen;
	uint64_t num;
} ferry_wire_mf_pkt;

static inline void ferry__wire_mf_pkt_encode(uint8_t b[FERRY_MF_HDR_LEN], const ferry_wire_mf_pkt *p)
{
	ferry__st_be32(b + FERRY_MF_MAGIC_OFF, FERRY_MF_PKT_MAGIC);
	ferry__st_be32(b + FERRY_MF_VERSION_OFF, FERRY_MF_VERSION);
	ferry__st_be32(b + FERRY_MF_FLAGS_OFF, p->flags);
	ferry__st_be32(b + FERRY_MF_NORMAL_OFF, p->normal);
	ferry__st_be32(b + FERRY_MF_ZERO_OFF, p->zero);
	ferry__st_be32(b + FERRY_MF_CLEN_OFF, p->clen);
	ferry__st_be64(b + FERRY_MF_NUM_OFF, p->num);
}

static inline void ferry__wire_mf_pkt_decode(const uint8_t b[FERRY_MF_HDR_LEN], ferry_wire_mf_pkt *p)
{
	p->magic = ferry__ld_be32(b + FERRY_MF_MAGIC_OFF);
	p->version = ferry__ld_be32(b + FERRY_MF_VERSION_OFF);
	p->flags = ferry__ld_be32(b + FERRY_MF_FLAGS_OFF);
	p->normal = ferry__ld_be32(b + FERRY_MF_NORMAL_OFF);
	p->zero = ferry__ld_be32(b + FERRY_MF_ZERO_OFF);
	p->clen = ferry__ld_be32(b + FERRY_MF_CLEN_OFF);
	p->num = ferry__ld_be64(b + FERRY_MF_NUM_OFF);
}

/* Stores n page indices at b; returns the bytes used. */
static inline size_t ferry__wire_st_indices(uint8_t *b, const uint64_t *idx, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		ferry__st_be64(b + FERRY_MF_INDEX_LEN * i, idx[i]);
	return (size_t)FERRY_MF_INDEX_LEN * n;
}

static inline void ferry__wire_ld_indices(const uint8_t *b, uint64_t *idx, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		idx[i] = ferry__ld_be64(b + FERRY_MF_INDEX_LEN * i);
}

/*
 * Checksums of a packet's nn data pages (pages idx[0..nn) of rb: in guest
 * RAM, or when data is not NULL the copies there, one after another),
 * stored at b; returns the bytes used (FERRY_SUM_LEN each).
 */
size_t ferry__wire_st_mf_sums(uint8_t *b, const struct ferry_ram_block *rb, const uint64_t *idx,
			      uint32_t nn, const uint8_t *data);
/*
 * The digest value of a page packet: its block, the index list (n of them,
 * as on the wire) and the data pages' checksums (nn, as on the wire). A
 * SYNC packet's: ferry__wire_mf_value(NULL, NULL, 0, NULL, 0).
 */
uint64_t ferry__wire_mf_value(const char *block, const uint8_t *idx, uint32_t n,
			      const uint8_t *sums, uint32_t nn);

/* ---- checksums of device payloads (stream/sum.h; no-ops without them) ---- */

/* Queues the be64 checksum of p (len bytes, seeded) and folds it as c's next record. */
void ferry__wire_put_sum(ferry_chan *c, const void *p, size_t len, uint64_t seed);
/* Reads a be64 checksum (0 without checksums). */
int ferry__wire_get_sum(ferry_chan *c, uint64_t *sum);
/*
 * Folds sum as c's next record and checks the payload p against it; on a
 * mismatch fails c with "checksum mismatch: WHAT, CARRIER".
 */
int ferry__wire_check_sum(ferry_chan *c, const void *p, size_t len, uint64_t seed, uint64_t sum,
			  const char *what);

/* ---- records ---- */

/* Queues a record that is its type byte alone (EOF, CANCELLED). */
static inline void ferry__wire_put_record(ferry_chan *c, uint8_t type)
{
	ferry__chan_put_u8(c, type);
}

/* Reads a record's type byte. */
static inline int ferry__wire_get_record(ferry_chan *c, uint8_t *type)
{
	return ferry__chan_get_u8(c, type);
}

/* Reads the be32 section id that follows PART or END. */
static inline int ferry__wire_get_section_id(ferry_chan *c, uint32_t *id)
{
	return ferry__chan_get_be32(c, id);
}

/* Queues START or FULL: type, be32 id, idstr, be32 instance, be32 version. */
void ferry__wire_put_section_start(ferry_chan *c, uint8_t type, uint32_t id, const char *idstr,
				   uint32_t instance, uint32_t version);
/* Queues PART or END: type, be32 id. */
void ferry__wire_put_section_part(ferry_chan *c, uint8_t type, uint32_t id);
/* Queues a section's footer. */
void ferry__wire_put_footer(ferry_chan *c, uint32_t id);
/* Reads the rest of START or FULL after the type byte (idstr checked by the name rule). */
int ferry__wire_get_section_start(ferry_chan *c, uint32_t *id, char idstr[FERRY_NAME_MAX + 1],
				  uint32_t *instance, uint32_t *version);
/* Reads a footer and checks that it closes section id. */
int ferry__wire_get_footer(ferry_chan *c, uint32_t id);

/* SECTION_FULL device body of section id: be32 length, [be64 checksum,] the vmsd encoding. */
void ferry__wire_put_device_state(ferry_chan *c, uint32_t id, const void *p, uint32_t len);

/* Reads a device body's be32 length (the caller bounds it). */
static inline int ferry__wire_get_device_len(ferry_chan *c, uint32_t *len)
{
	return ferry__chan_get_be32(c, len);
}

/* ---- live devices (section "live-devices", format.h) ---- */

/* One device of the setup body. */
typedef struct ferry_wire_live_dev {
	char id[FERRY_NAME_MAX + 1];
	uint32_t instance;
	uint8_t has_config;  /* 0 or 1 (FERRY_LIVE_F_CONFIG) */
	uint8_t precopy;     /* 0 or 1 (FERRY_LIVE_F_PRECOPY) */
	uint32_t config_version;
} ferry_wire_live_dev;

/* The setup body: be32 count (1..FERRY_LIVE_DEVICES_MAX), then count devices. */
void ferry__wire_put_live_count(ferry_chan *c, uint32_t n);
int ferry__wire_get_live_count(ferry_chan *c, uint32_t *n);
void ferry__wire_put_live_dev(ferry_chan *c, const ferry_wire_live_dev *d);
/* Reads one; refuses a flags byte with bits other than FERRY_LIVE_F_*. */
int ferry__wire_get_live_dev(ferry_chan *c, ferry_wire_live_dev *d);

/*
 * A device-state buffer's header (DEV_STATE after its tag): the same 16
 * bytes whichever carrier takes the buffer (main channel; multifd later).
 */
typedef struct ferry_wire_dev_hdr {
	uint32_t dev;
	uint32_t index;
	uint32_t flags;  /* FERRY_DEV_F_* */
	uint32_t len;
} ferry_wire_dev_hdr;

#define FERRY_DEV_DEV_OFF 0u
#define FERRY_DEV_INDEX_OFF 4u
#define FERRY_DEV_FLAGS_OFF 8u
#define FERRY_DEV_LEN_OFF 12u

static inline void ferry__wire_st_dev_hdr(uint8_t b[FERRY_DEV_HDR_LEN], const ferry_wire_dev_hdr *h)
{
	ferry__st_be32(b + FERRY_DEV_DEV_OFF, h->dev);
	ferry__st_be32(b + FERRY_DEV_INDEX_OFF, h->index);
	ferry__st_be32(b + FERRY_DEV_FLAGS_OFF, h->flags);
	ferry__st_be32(b + FERRY_DEV_LEN_OFF, h->len);
}

static inline void ferry__wire_ld_dev_hdr(const uint8_t b[FERRY_DEV_HDR_LEN], ferry_wire_dev_hdr *h)
{
	h->dev = ferry__ld_be32(b + FERRY_DEV_DEV_OFF);
	h->index = ferry__ld_be32(b + FERRY_DEV_INDEX_OFF);
	h->flags = ferry__ld_be32(b + FERRY_DEV_FLAGS_OFF);
	h->len = ferry__ld_be32(b + FERRY_DEV_LEN_OFF);
}

/* Queues a DEV_STATE record: tag, header, [checksum,] data (not copied: valid until flush). */
void ferry__wire_put_dev_state(ferry_chan *c, const ferry_wire_dev_hdr *h, const void *data);
/*
 * Reads a DEV_STATE header (after its tag) and checks what the layout
 * alone makes wrong: unknown flags, a marker (END or INIT, not both) with
 * data, a data buffer of 0 or more than FERRY_DEV_BUF_MAX bytes.
 */
int ferry__wire_get_dev_hdr(ferry_chan *c, ferry_wire_dev_hdr *h);
/*
 * A multifd device-state packet's headers (FERRY_MF_DEV_PKT_LEN bytes:
 * the multifd header with FERRY_MF_DEVICE and packet number num, then h);
 * its h->len data bytes follow.
 */
#define FERRY_MF_DEV_PKT_LEN (FERRY_MF_HDR_LEN + FERRY_DEV_HDR_LEN)
void ferry__wire_mf_dev_encode(uint8_t b[FERRY_MF_DEV_PKT_LEN], uint64_t num,
			       const ferry_wire_dev_hdr *h);
/*
 * The same, followed by the be64 checksum of data when sums is not NULL
 * (b has FERRY_MF_DEV_PKT_LEN + FERRY_SUM_LEN bytes); returns the length.
 */
size_t ferry__wire_mf_dev_encode_sum(uint8_t *b, uint64_t num, const ferry_wire_dev_hdr *h,
				     const void *data, const ferry_sums *sums);
/*
 * Reads the DEV_STATE header of a device-state packet (after its multifd
 * header) and checks it as ferry__wire_get_dev_hdr does, but for an end
 * marker: those go on the main channel.
 */
int ferry__wire_get_mf_dev(ferry_chan *c, ferry_wire_dev_hdr *h);
/* A device buffer (h->len bytes of data) against the checksum its record carried. */
int ferry__wire_check_dev_sum(ferry_chan *c, const ferry_wire_dev_hdr *h, const void *data,
			      uint64_t sum);
/* Queues DEV_MF_SYNC: every multifd channel sent its SYNC after the device packets. */
static inline void ferry__wire_put_dev_mf_sync(ferry_chan *c)
{
	ferry__chan_put_u8(c, FERRY_DEV_MF_SYNC);
}
/* Queues the end of the state body (DEV_EOS). */
static inline void ferry__wire_put_dev_eos(ferry_chan *c)
{
	ferry__chan_put_u8(c, FERRY_DEV_EOS);
}
/* Queues a DEV_CONFIG record: tag, device, version, length, [checksum,] the vmsd bytes (copied). */
void ferry__wire_put_dev_config(ferry_chan *c, uint32_t dev, uint32_t version, const void *p,
				uint32_t len);
/* Reads a DEV_CONFIG header after its tag; refuses a length above FERRY_DEVICE_STATE_MAX. */
int ferry__wire_get_dev_config(ferry_chan *c, uint32_t *dev, uint32_t *version, uint32_t *len);

/* ---- commands ---- */

/* Payload sizes and offsets of the commands that have a fixed one. */
enum {
	FERRY_CMD_PING_LEN = 4,
	FERRY_CMD_VM_STATE_LEN = 1,
	FERRY_CMD_MULTIFD_LEN = 5,
	FERRY_CMD_MULTIFD_COUNT_OFF = 0,
	FERRY_CMD_MULTIFD_COMP_OFF = 4,
	FERRY_CMD_ADVISE_LEN = 4,
	FERRY_CMD_RUN_LEN = 1,
	FERRY_CMD_PACKAGE_LEN = 4,
	FERRY_CMD_DIGEST_LEN = 32,
	FERRY_CMD_DIGEST_RECORDS_OFF = 0,
	FERRY_CMD_DIGEST_SUM_OFF = 8,
	FERRY_CMD_DIGEST_CTL_OFF = 16,
	FERRY_CMD_DIGEST_PACKAGE_OFF = 24,
	/* Largest fixed payload. */
	FERRY_CMD_FIXED_MAX = 32,
};
/* ferry__wire_cmd_len: payload length of a variable (DISCARD) / not-here (RESUME) command. */
enum { FERRY_CMD_LEN_VARIABLE = -1, FERRY_CMD_LEN_RESUME_ONLY = -2 };

/* Queues COMMAND cmd with a payload of len bytes. */
void ferry__wire_put_cmd(ferry_chan *c, uint16_t cmd, const void *p, uint16_t len);
/* Queues a command whose payload is one be32 (PING, ADVISE, PACKAGE). */
void ferry__wire_put_cmd_be32(ferry_chan *c, uint16_t cmd, uint32_t v);
/* Queues a command whose payload is one byte (VM_STATE, RUN). */
void ferry__wire_put_cmd_u8(ferry_chan *c, uint16_t cmd, uint8_t v);
/* Queues MULTIFD: be32 channel count, u8 compression. */
void ferry__wire_put_cmd_multifd(ferry_chan *c, uint32_t channels, uint8_t compression);
/* The value of a command whose payload is one be32 (PING, ADVISE, PACKAGE). */
static inline uint32_t ferry__wire_cmd_be32(const uint8_t *payload)
{
	return ferry__ld_be32(payload);
}
/* DIGEST's payload (docs/wire-format.md, "Checksums"). */
typedef struct ferry_wire_digest {
	uint64_t records, digest; /* guest-data records folded so far, their digest */
	uint64_t ctl;             /* c's control hash up to this payload */
	uint64_t package;         /* XXH3-64 of the PACKAGE that follows (postcopy), or 0 */
} ferry_wire_digest;
/* Queues DIGEST with d (its ctl is c's control hash, taken here). */
void ferry__wire_put_cmd_digest(ferry_chan *c, ferry_wire_digest d);
static inline void ferry__wire_cmd_digest_decode(const uint8_t *payload, ferry_wire_digest *d)
{
	d->records = ferry__ld_be64(payload + FERRY_CMD_DIGEST_RECORDS_OFF);
	d->digest = ferry__ld_be64(payload + FERRY_CMD_DIGEST_SUM_OFF);
	d->ctl = ferry__ld_be64(payload + FERRY_CMD_DIGEST_CTL_OFF);
	d->package = ferry__ld_be64(payload + FERRY_CMD_DIGEST_PACKAGE_OFF);
}
/* Splits a MULTIFD payload (FERRY_CMD_MULTIFD_LEN bytes). */
static inline void ferry__wire_cmd_multifd_decode(const uint8_t *payload, uint32_t *channels,
						  uint8_t *compression)
{
	*channels = ferry__ld_be32(payload + FERRY_CMD_MULTIFD_COUNT_OFF);
	*compression = payload[FERRY_CMD_MULTIFD_COMP_OFF];
}
/* Reads a command's id and length (after the type byte). */
int ferry__wire_get_cmd(ferry_chan *c, uint16_t *cmd, uint16_t *len);
/* The payload length cmd must have, or FERRY_CMD_LEN_*; cmd in 1..FERRY_CMD__MAX-1. */
int ferry__wire_cmd_len(uint16_t cmd);

/* ---- RAM section body (page path: inline) ---- */

#define FERRY_RAM_WORD_LEN 8u

/* Queues a record that is its word alone (EOS, MULTIFD_SYNC, CANCELLED). */
static inline void ferry__wire_put_ram_flag(ferry_chan *c, uint64_t flag)
{
	ferry__chan_put_be64(c, flag);
}

/*
 * Queues a PAGES or ZEROS record (kind) for pages [first, first + n) of the
 * block named `block`, naming it unless cont (CONTINUE: the previous
 * record's block). For PAGES, `pages` points at the n pages, queued
 * without a copy (they must stay valid until the flush). With checksums,
 * the pages' checksums follow the count, and the record is folded; sums:
 * the n pages' checksums (ferry__sum_page) when the caller computed them
 * already, else NULL (computed here).
 */
void ferry__wire_put_ram_sums(ferry_chan *c, uint64_t kind, const char *block, uint64_t first,
			      uint32_t n, const void *pages, const uint64_t *sums);
static inline void ferry__wire_put_ram_run(ferry_chan *c, uint64_t kind, const char *block,
					   bool cont, uint64_t first, uint32_t n, const void *pages,
					   const uint64_t *sums)
{
	uint64_t word = (first << FERRY_PAGE_SHIFT) | kind;
	if (cont)
		word |= FERRY_RAM_CONTINUE;
	ferry__chan_put_be64(c, word);
	if (!cont)
		ferry__wire_put_name(c, block);
	ferry__chan_put_be32(c, n);
	if (c->sums)
		ferry__wire_put_ram_sums(c, kind, block, first, n, pages, sums);
	if (kind == FERRY_RAM_PAGES)
		ferry__chan_put_external(c, pages, (size_t)n << FERRY_PAGE_SHIFT);
}

/* Reads a record's word, split into its flags and its (page-aligned) offset. */
static inline int ferry__wire_get_ram_word(ferry_chan *c, uint64_t *flags, uint64_t *addr)
{
	uint64_t word;
	int r = ferry__chan_get_be64(c, &word);
	*flags = word & FERRY_RAM_FLAG_MASK;
	*addr = word & ~FERRY_RAM_FLAG_MASK;
	return r;
}

/* Reads a PAGES/ZEROS run's be32 count and checks 1..FERRY_RAM_MAX_RUN. */
int ferry__wire_get_ram_count(ferry_chan *c, uint32_t *n);
/*
 * With checksums, after the count: reads a PAGES run's n checksums into
 * sums (FERRY_RAM_MAX_RUN * FERRY_SUM_LEN bytes), folds the record (ZEROS
 * too) and sets *rec to its number on c. A no-op without checksums.
 */
int ferry__wire_get_ram_sums(ferry_chan *c, uint64_t kind, const char *block, uint64_t first,
			     uint32_t n, uint8_t *sums, uint64_t *rec);

/* MEM_SIZE: the word with the total, be32 block count; then one entry per block. */
void ferry__wire_put_mem_size(ferry_chan *c, uint64_t total, uint32_t nblocks);
/* Reads the block count after the MEM_SIZE word. */
static inline int ferry__wire_get_mem_size(ferry_chan *c, uint32_t *nblocks)
{
	return ferry__chan_get_be32(c, nblocks);
}
void ferry__wire_put_block_entry(ferry_chan *c, const char *name, uint64_t size);
int ferry__wire_get_block_entry(ferry_chan *c, char name[FERRY_NAME_MAX + 1], uint64_t *size);

/* ---- return path ---- */

/* Largest payload: a page bitmap (name, first page, FERRY_PC_BITMAP_CHUNK bytes). */
#define FERRY_BITMAP_HDR_MAX (1 + FERRY_NAME_MAX + 8)
#define FERRY_RP_PAYLOAD_MAX (FERRY_BITMAP_HDR_MAX + FERRY_PC_BITMAP_CHUNK)
/* SHUT: be32 status, then at most this many message bytes. */
#define FERRY_RP_SHUT_STATUS_LEN 4u
#define FERRY_RP_SHUT_MSG_MAX 400u
#define FERRY_RP_PONG_LEN 4u

/* The value a PONG carries back (its payload is the PING's). */
static inline uint32_t ferry__wire_rp_pong_decode(const uint8_t *payload)
{
	return ferry__ld_be32(payload);
}
/*
 * Reads the checksum of a message just read (raw type as on the wire, its
 * len payload bytes in p) when the type carries FERRY_RP_F_SUM, checks it
 * and strips the flag into *type; *summed says whether it had one. Fails c
 * on a mismatch.
 */
int ferry__wire_get_rp_sum(ferry_chan *c, uint16_t raw, uint16_t len, const uint8_t *p,
			   uint16_t *type, bool *summed);
/*
 * Queues message type with the payload p1 then p2 (either may be empty),
 * and its checksum when c has checksums.
 */
void ferry__wire_put_rp(ferry_chan *c, uint16_t type, const void *p1, size_t l1,
			const void *p2, size_t l2);
/* Reads a message's type and payload length. */
int ferry__wire_get_rp(ferry_chan *c, uint16_t *type, uint16_t *len);
/* Queues SHUT(status, msg); msg may be NULL, is cut at FERRY_RP_SHUT_MSG_MAX. */
void ferry__wire_put_rp_shut(ferry_chan *c, int status, const char *msg);
/* Splits a SHUT payload (len >= FERRY_RP_SHUT_STATUS_LEN); msg is not NUL-terminated. */
void ferry__wire_rp_shut_decode(const uint8_t *p, size_t len, int *status, const uint8_t **msg,
				size_t *msg_len);

/* LOAD: be32 value, be64 bytes, be64 CPU ns (format.h). */
enum {
	FERRY_RP_LOAD_VALUE_OFF = 0,
	FERRY_RP_LOAD_BYTES_OFF = 4,
	FERRY_RP_LOAD_CPU_OFF = 12,
	FERRY_RP_LOAD_LEN = 20,
};
typedef struct ferry_wire_load {
	uint32_t value;
	uint64_t bytes, cpu_ns;
} ferry_wire_load;
void ferry__wire_put_rp_load(ferry_chan *c, const ferry_wire_load *l);
/* A LOAD payload of len bytes into *l: 0, or -EINVAL when len is not FERRY_RP_LOAD_LEN. */
int ferry__wire_rp_load_decode(const uint8_t *p, size_t len, ferry_wire_load *l);

/* REQ_PAGES: be64 first page, be32 count, name. */
enum {
	FERRY_RP_REQ_FIRST_OFF = 0,
	FERRY_RP_REQ_COUNT_OFF = 8,
	FERRY_RP_REQ_NAME_OFF = 12,
	FERRY_RP_REQ_MAX = FERRY_RP_REQ_NAME_OFF + 1 + FERRY_NAME_MAX,
};
/* Stores a request at b (FERRY_RP_REQ_MAX bytes); returns its length. */
size_t ferry__wire_req_encode(uint8_t *b, uint64_t first, uint32_t n, const char *name);
/* True when len is the length of a request whose name length is at b[FERRY_RP_REQ_NAME_OFF]. */
bool ferry__wire_req_len_ok(const uint8_t *b, size_t len);
/* Decodes a request of a length ferry__wire_req_len_ok() accepted; checks the name rule. */
int ferry__wire_req_decode(ferry_chan *c, const uint8_t *b, uint64_t *first, uint32_t *n,
			   char name[FERRY_NAME_MAX + 1]);

/* ---- page bitmaps (DISCARD payload, return path MISSING) ---- */

#define FERRY_BITMAP_WORD_LEN 8u
#define FERRY_BITMAP_FIRST_LEN 8u
/* Pages one message covers. */
#define FERRY_BITMAP_CHUNK_PAGES ((uint64_t)FERRY_PC_BITMAP_CHUNK * 8)
/* Buffer for one encoded bitmap message. */
#define FERRY_BITMAP_MSG_MAX FERRY_RP_PAYLOAD_MAX

/*
 * Stores the message for pages [first, first + FERRY_BITMAP_CHUNK_PAGES) of
 * a block of npages named name, from map, in buf (FERRY_BITMAP_MSG_MAX
 * bytes); first % 64 == 0. Returns its length, 0 when no bit is set there.
 */
size_t ferry__wire_bitmap_encode(uint8_t *buf, const char *name, uint64_t npages,
				 const unsigned long *map, uint64_t first);
/*
 * Every message a whole block's map needs, in order, each handed to
 * send(opaque, msg, len); stops at send's first error. Returns 0, -ENOMEM
 * or send's error.
 */
int ferry__wire_bitmap_each(const char *name, uint64_t npages, const unsigned long *map,
			    int (*send)(void *opaque, const uint8_t *msg, size_t len), void *opaque);
/*
 * Splits a bitmap message: the block's name (name rule checked), the first
 * page, and the words (*words, *bytes of them, unchecked against a block).
 */
int ferry__wire_bitmap_decode(ferry_chan *c, const uint8_t *p, size_t len,
			      char name[FERRY_NAME_MAX + 1], uint64_t *first,
			      const uint8_t **words, size_t *bytes);
/* Word w of a decoded bitmap (little-endian). */
static inline uint64_t ferry__wire_bitmap_word(const uint8_t *words, size_t w)
{
	uint64_t v = 0;
	for (unsigned b = 0; b < FERRY_BITMAP_WORD_LEN; b++)
		v |= (uint64_t)words[w * FERRY_BITMAP_WORD_LEN + b] << (8 * b);
	return v;
}

#endif /* FERRY_STREAM_WIRE_H */
