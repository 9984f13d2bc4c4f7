/* SPDX-License-Identifier: MIT */
/*
 * Constants of Ferry's migration stream and return path: record types,
 * commands, flags, magics, limits. docs/wire-format.md describes every
 * record; the wire codec (wire.h) encodes and decodes them and names their
 * offsets. Keep the three in step. All integers big-endian.
 */
#ifndef FERRY_STREAM_FORMAT_H
#define FERRY_STREAM_FORMAT_H

#define FERRY_STREAM_MAGIC 0x46525259u /* "FRRY" */
/*
 * Version 3: guest-data records carry XXH3-64 checksums, control bytes are
 * hashed, and the stream ends with a DIGEST (docs/wire-format.md,
 * "Checksums"). A source with x-checksum off writes version 1, the layout
 * without them. (Version 2, an earlier layout of the checksums, was never
 * released: refused.)
 */
#define FERRY_STREAM_VERSION 3u
#define FERRY_STREAM_VERSION_PLAIN 1u

/* Record types (first byte of each top-level record). */
enum {
	FERRY_REC_EOF = 0x00,
	FERRY_REC_SECTION_START = 0x01,
	FERRY_REC_SECTION_PART = 0x02,
	FERRY_REC_SECTION_END = 0x03,
	FERRY_REC_SECTION_FULL = 0x04,
	FERRY_REC_COMMAND = 0x08,
	FERRY_REC_CANCELLED = 0x09, /* 0 bytes: the source cancelled; nothing follows */
	FERRY_REC_FOOTER = 0x7e,
};

/* Commands (FERRY_REC_COMMAND: be16 cmd, be16 len, payload). */
enum {
	FERRY_CMD_PING = 1,       /* be32 value; answered with RP PONG */
	FERRY_CMD_SWITCHOVER = 2, /* 0 bytes: the source stopped its vCPUs */
	FERRY_CMD_VM_STATE = 3,   /* u8 running: start vCPUs after loading */
	FERRY_CMD_MULTIFD = 4,    /* be32 channels, u8 compression: accept channels */
	/*
	 * Postcopy (see docs/wire-format.md, "Postcopy"):
	 * ADVISE: be32 flags (FERRY_PC_PREEMPT, FERRY_PC_PREEMPT_REQS):
	 *   postcopy may follow; with preempt, one more connection
	 *   (FERRY_PC_HS_MAGIC handshake) follows.
	 * DISCARD: u8 name length, name, be64 first page (multiple of 64), then
	 *   little-endian 64-bit bitmap words: pages the source will send again.
	 * LISTEN: 0 bytes: register RAM for missing-page faults.
	 * RUN: u8 running: start the vCPUs; RAM keeps arriving after this.
	 * RESUME: 0 bytes: first command of a recovered connection.
	 */
	FERRY_CMD_POSTCOPY_ADVISE = 5,
	FERRY_CMD_POSTCOPY_DISCARD = 6,
	FERRY_CMD_POSTCOPY_LISTEN = 7,
	FERRY_CMD_POSTCOPY_RUN = 8,
	FERRY_CMD_POSTCOPY_RESUME = 9,
	/*
	 * PACKAGE: be32 length L, then L bytes: the device state (FULL
	 * sections) and RUN. The destination reads it whole, hands the main
	 * connection to its listen thread, then loads it: a device whose
	 * state load touches guest RAM faults, and the page can still arrive.
	 */
	FERRY_CMD_POSTCOPY_PACKAGE = 10,
	/*
	 * SWITCHOVER_START: 0 bytes, right after the vCPUs stopped when the VM
	 * has live devices: the destination starts their load threads
	 * (RESUMING) before the first device-state buffer can arrive, on any
	 * channel (QEMU's MIG_CMD_SWITCHOVER_START).
	 */
	FERRY_CMD_SWITCHOVER_START = 11,
	/* DIGEST: be64 records, be64 digest (version 2, before EOF of a precopy stream) */
	FERRY_CMD_DIGEST = 12,
	FERRY_CMD__MAX,
};

/* What a destination reports when it reads FERRY_REC_CANCELLED or FERRY_RAM_CANCELLED. */
#define FERRY_CANCELLED_MSG "migration cancelled by the source"
/* The destination's error when the source closed the main connection with multifd channels behind. */
#define FERRY_MF_ORPHANED_MSG "the source closed the connection while its multifd channels were behind"
/* The reason of a postcopy pause ferry_migration_pause() asked for, on the side that asked. */
#define FERRY_PAUSE_ASKED_MSG "migrate-pause on this side"

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
	FERRY_RAM_MULTIFD_SYNC = 0x040, /* all channels' pages so far must be placed */
	FERRY_RAM_CANCELLED = 0x080, /* word = flag only: the source cancelled; nothing follows */
	/*
	 * [block] be32 npages, checksums only: free page hints said these
	 * pages are free, and the source will not send them again; whatever
	 * copy the destination holds does not matter (not judged).
	 */
	FERRY_RAM_FREE = 0x100,
};
#define FERRY_RAM_FLAG_MASK 0xfffull
#define FERRY_RAM_MAX_RUN 256u

/*
 * Multifd channels. Each extra connection starts with a handshake
 * (be32 magic, be32 version, 16-byte VM uuid, be32 channel id, be32 channel
 * count), then carries packets:
 *   be32 magic, be32 version, be32 flags, be32 normal pages, be32 zero
 *   pages, be32 compressed length, be64 packet number,
 *   [u8 block name length, name]   (when pages > 0)
 *   be64 page index x (normal + zero)
 *   normal x 4096 bytes, or compressed length bytes of one zstd frame
 * A device-state packet (flags = FERRY_MF_DEVICE alone, no pages, length
 * 0) carries instead a live device's buffer: the DEV_STATE header (be32
 * device number, be32 index, be32 flags = 0, be32 length 1..
 * FERRY_DEV_BUF_MAX), then length bytes. End markers go on the main
 * channel (DEV_STATE with FERRY_DEV_F_END).
 */
#define FERRY_MF_HS_MAGIC 0x46524d43u  /* "FRMC" */
#define FERRY_MF_PKT_MAGIC 0x46524d50u /* "FRMP" */
#define FERRY_MF_VERSION 1u
#define FERRY_MF_HS_LEN 32u
#define FERRY_MF_HDR_LEN 32u
#define FERRY_MF_MAX_PAGES 256u
enum {
	FERRY_MF_SYNC = 0x1, /* end of a pass on this channel: no pages */
	FERRY_MF_ZSTD = 0x2, /* normal pages are one zstd frame */
	FERRY_MF_DEVICE = 0x4, /* a live device's buffer instead of pages */
};

/*
 * Live devices (ferry/device.h): one section "live-devices". Its START
 * (setup) body is be32 n, then n x {u8 name length, name, be32 instance,
 * u8 flags (FERRY_LIVE_F_*), be32 config version}. Its PART bodies
 * (precopy: PRE_COPY devices' data while the guest runs) and its END body
 * are sequences of records, each a u8 tag:
 *   DEV_STATE  be32 device number (setup order), be32 index, be32 flags,
 *              be32 length, then length bytes (1..FERRY_DEV_BUF_MAX; 0
 *              with FERRY_DEV_F_END, whose index is the device's number of
 *              data buffers: the end-of-state marker; 0 with
 *              FERRY_DEV_F_INIT, PART only, whose index is the number of
 *              buffers sent so far: the device's initial data is complete);
 *   DEV_CONFIG be32 device number, be32 vmsd version, be32 length, then
 *              the device's config vmsd (<= FERRY_DEVICE_STATE_MAX);
 *   DEV_MF_SYNC 0 bytes: every multifd channel sent a SYNC packet after
 *              its last device-state packet (the destination waits for
 *              them: no more device data can come);
 *   CANCELLED  the source cancelled; nothing follows;
 *   DEV_EOS    end of the body.
 */
#define FERRY_LIVE_IDSTR "live-devices"
#define FERRY_LIVE_VERSION 1u
#define FERRY_DEV_BUF_MAX (1u << 20)
#define FERRY_DEV_HDR_LEN 16u /* DEV_STATE after its tag: dev, index, flags, length */
enum {
	FERRY_DEV_EOS = 0x00,
	FERRY_DEV_STATE = 0x01,
	FERRY_DEV_CONFIG = 0x02,
	FERRY_DEV_MF_SYNC = 0x03,
	FERRY_DEV_CANCELLED = 0x09, /* = FERRY_REC_CANCELLED: the source's notice */
};
enum {
	FERRY_DEV_F_END = 0x1, /* end-of-state marker: no data, index = buffer count */
	FERRY_DEV_F_INIT = 0x2, /* initial data sent (PRE_COPY): no data, index = buffers so far */
};
/* The setup list's flags byte. */
enum {
	FERRY_LIVE_F_CONFIG = 0x1,  /* the device has a config vmsd */
	FERRY_LIVE_F_PRECOPY = 0x2, /* the device streams data in PRE_COPY */
};
/* Section "switchover-ack" (SECTION_FULL, empty body): the source waits for RP SWITCHOVER_ACK. */
#define FERRY_SWACK_IDSTR "switchover-ack"
#define FERRY_SWACK_VERSION 1u

/* Device state bodies (SECTION_FULL) are bounded. */
#define FERRY_DEVICE_STATE_MAX (16u << 20)
/* A postcopy package is bounded too. */
#define FERRY_PC_PACKAGE_MAX (64u << 20)

/* Return path messages: be16 type, be16 len, payload. */
enum {
	FERRY_RP_SHUT = 1, /* be32 status (0 or negative errno), message bytes */
	FERRY_RP_PONG = 2, /* be32 value */
	/* Postcopy: */
	FERRY_RP_REQ_PAGES = 3, /* be64 first page, be32 count, u8 name length, name */
	FERRY_RP_RUNNING = 4,   /* 0 bytes: the destination's vCPUs run */
	FERRY_RP_MISSING = 5,   /* recovery: like CMD_POSTCOPY_DISCARD's payload */
	FERRY_RP_MISSING_END = 6, /* 0 bytes: the MISSING bitmaps are complete */
	FERRY_RP_HEARTBEAT = 7, /* 0 bytes: the destination is alive */
	FERRY_RP_SWITCHOVER_ACK = 8, /* 0 bytes: the source may switch over (switchover-ack) */
	/*
	 * LOAD: be32 the PING's value, be64 stream bytes read, be64 ns of CPU
	 * time the loading threads used, both since the stream began. The
	 * answer to a PING whose value has FERRY_PING_LOAD in its top byte,
	 * instead of PONG; a destination that does not know it answers PONG.
	 */
	FERRY_RP_LOAD = 9,
};
/* A PING value asking for RP LOAD: this top byte ("L"), a 24-bit sequence number. */
#define FERRY_PING_LOAD 0x4c000000u
#define FERRY_PING_TAG_MASK 0xff000000u
/*
 * OR-ed into a return path message's type by a destination whose stream
 * has checksums: a be64 XXH3-64 of the message (type, length, payload)
 * follows the payload.
 */
#define FERRY_RP_F_SUM 0x8000u

#define FERRY_PC_PREEMPT 0x1u
/*
 * With FERRY_PC_PREEMPT: the destination sends its page requests and
 * heartbeats (return path messages) on the preempt connection instead of
 * the main one, whose socket the background stream keeps busy.
 */
#define FERRY_PC_PREEMPT_REQS 0x2u
#define FERRY_PC_HS_MAGIC 0x46525043u /* "FRPC": preempt channel handshake */
#define FERRY_PC_HS_LEN 24u           /* be32 magic, be32 version, 16-byte uuid */
/* Bitmap bytes per DISCARD/MISSING message (262144 pages = 1 GiB). */
#define FERRY_PC_BITMAP_CHUNK 32768u

#endif
