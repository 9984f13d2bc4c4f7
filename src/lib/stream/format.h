/* SPDX-License-Identifier: MIT */
/*
 * Constants of Ferry's migration stream and return path. docs/wire-format.md
 * describes every record; keep the two in step. All integers big-endian.
 */
#ifndef FERRY_STREAM_FORMAT_H
#define FERRY_STREAM_FORMAT_H

#define FERRY_STREAM_MAGIC 0x46525259u /* "FRRY" */
#define FERRY_STREAM_VERSION 1u

/* Record types (first byte of each top-level record). */
enum {
	FERRY_REC_EOF = 0x00,
	FERRY_REC_SECTION_START = 0x01,
	FERRY_REC_SECTION_PART = 0x02,
	FERRY_REC_SECTION_END = 0x03,
	FERRY_REC_SECTION_FULL = 0x04,
	FERRY_REC_COMMAND = 0x08,
	FERRY_REC_FOOTER = 0x7e,
};

/* Commands (FERRY_REC_COMMAND: be16 cmd, be16 len, payload). */
enum {
	FERRY_CMD_PING = 1,       /* be32 value; answered with RP PONG */
	FERRY_CMD_SWITCHOVER = 2, /* 0 bytes: the source stopped its vCPUs */
	FERRY_CMD_VM_STATE = 3,   /* u8 running: start vCPUs after loading */
	FERRY_CMD__MAX,
};

/* Section ids: RAM is 1; devices follow in registration order. */
#define FERRY_SECTION_RAM 1u
#define FERRY_RAM_IDSTR "ram"
#define FERRY_RAM_VERSION 1u

/*
 * RAM section body records: be64 word = page-aligned offset | flags.
 * PAGES and ZEROS are runs of 1..FERRY_RAM_MAX_RUN pages.
 */
enum {
	FERRY_RAM_ZEROS = 0x002,    /* [block] be32 npages */
	FERRY_RAM_MEM_SIZE = 0x004, /* word = total bytes; be32 nblocks; blocks */
	FERRY_RAM_PAGES = 0x008,    /* [block] be32 npages; npages * 4096 bytes */
	FERRY_RAM_EOS = 0x010,      /* end of this section body */
	FERRY_RAM_CONTINUE = 0x020, /* same block as the previous record */
};
#define FERRY_RAM_FLAG_MASK 0xfffull
#define FERRY_RAM_MAX_RUN 256u

/* Device state bodies (SECTION_FULL) are bounded. */
#define FERRY_DEVICE_STATE_MAX (16u << 20)

/* Return path messages: be16 type, be16 len, payload. */
enum {
	FERRY_RP_SHUT = 1, /* be32 status (0 or negative errno), message bytes */
	FERRY_RP_PONG = 2, /* be32 value */
};

#endif
