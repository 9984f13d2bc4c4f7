/* SPDX-License-Identifier: MIT */
/*
 * Multifd: RAM pages over several extra connections, each with its own
 * thread on both sides (mig/src/send_N, mig/dst/recv_N).
 *
 * DESIGN (source): the migration thread walks the dirty bitmap and hands
 * lists of up to FERRY_MF_MAX_PAGES pages of one block to an idle channel,
 * else to the next one with room in its queue (FERRY_MF_QUEUE jobs per
 * channel, so memory stays bounded). The channel thread does the zero detection
 * and, with zstd, the compression, then writes one packet whose page data
 * comes straight from guest RAM (iovecs) or from its compression buffer.
 * At the end of every pass the migration thread waits for all channels to
 * go idle and makes each send a SYNC packet; the main stream then carries a
 * MULTIFD_SYNC record.
 *
 * Incompressible data (zstd): a packet that zstd shrinks by less than 1/16
 * goes raw, and the channel then sends its next packets raw without trying
 * (1, 2, 4 .. 64 packets, doubling while the data keeps failing; one packet
 * that compresses resets it). Random data so costs 1/65 of the compression
 * work instead of all of it; compressible data is always compressed.
 *
 * Device state (live devices, a participant's carrier): save threads queue
 * their buffers as device-state packets with ferry__mf_send_buf, into the
 * same bounded job queues as the pages, so they go out in parallel with
 * the final RAM pass; ferry__mf_send_flush then makes every channel send a
 * SYNC after them.
 *
 * DESIGN (destination): each receive thread reads packets, checks them like
 * any stream input (magic, counts, block, page bounds) and places the page
 * data with ferry__place_recv() (place.h): for a memfd-backed block one recv()
 * into the channel's bounce buffer and one UFFDIO_COPY (or pwrite) per run
 * of consecutive pages, otherwise straight into guest RAM (zstd:
 * decompressed into the bounce, or into guest RAM page by page). After a
 * SYNC packet it waits until the main thread, having read MULTIFD_SYNC on
 * the main stream and seen every channel reach its SYNC, releases them: so
 * the pages of pass n are all placed before any page of pass n+1 lands.
 * A device-state packet goes to the participant that loads such buffers
 * (ferry__parts_load_buf), which reorders them; after the SYNC that
 * follows the last of them, every one was handed over.
 *
 * Failure of any channel records the first error (a ferry_error, error.h),
 * then shuts every channel and the main connection down so that all threads
 * wake up and fail. The main connection's failure is then only a symptom:
 * the migration thread asks for the channel's error with
 * ferry__mf_send/recv_wait_error (a grace period for it to arrive) and
 * prefers it (source.c's src_pick_error, dest.c's dst_pick_error).
 */
#ifndef FERRY_MIGRATION_MULTIFD_H
#define FERRY_MIGRATION_MULTIFD_H

#include "migration/mig.h"
#include "migration/participant.h"
#include "stream/format.h"

typedef struct ferry_mf_job {
	const struct ferry_ram_block *rb;
	uint32_t n;
	bool sync;          /* a SYNC packet instead of pages */
	ferry_part_buf dev; /* dev.data set: a device-state packet instead (the job owns it) */
	uint64_t pages[FERRY_MF_MAX_PAGES];
} ferry_mf_job;

/*
 * Jobs queued per channel: the one being sent and those after it, so that
 * a channel goes straight on to its next packet instead of waiting for
 * the migration thread to wake up and hand it one. A channel wakes the
 * migration thread when its queue is half empty (or empty), not after
 * every packet: each wakeup is a futex call and a context switch on both
 * sides. random-2, preallocated (bench/vs-qemu --base, 4 runs each,
 * 2026-12-06): 8 with the half-empty wakeup 1.09x 2 with a wakeup per
 * packet (0.77 against 0.82 CPU s), 1.03x 4 with it; 8 with a wakeup per
 * packet 0.99x. Every pass ends with all queues drained (the SYNC), so
 * the depth adds nothing to what the downtime estimate finds in flight.
 * Under a low max-bandwidth a channel holds fewer (multifd.c,
 * queue_depth), down to 2.
 */
#define FERRY_MF_QUEUE 8

struct ferry_mf_sender;

typedef struct ferry_mf_send_chan {
	struct ferry_mf_sender *s;
	unsigned id;
	int fd;
	struct ferry_tls *tls; /* TLS session on fd, or NULL (plaintext) */
	pthread_t thread;
	bool started;
	pthread_cond_t cond; /* work was queued for this channel, or quit */
	/*
	 * Protected by s->lock: the queue jobs[head .. head + queued) (mod
	 * FERRY_MF_QUEUE); jobs[head] is the one being sent, which the channel
	 * thread reads without the lock while the migration thread fills only
	 * the free slots.
	 */
	ferry_mf_job jobs[FERRY_MF_QUEUE];
	unsigned head, queued;
	uint64_t bytes;
	/* Owned by the channel thread. */
	uint64_t packet_num;
	void *cctx;        /* ZSTD_CCtx */
	uint8_t *zbuf;
	size_t zcap;
	int pipefd[2];     /* for sends by reference, or -1 (x-send-splice off) */
	uint8_t *stage;    /* sends copy through it (x-user-copy), or NULL */
	uint32_t zskip;    /* packets still to send raw without trying zstd */
	uint32_t zbackoff; /* raw packets after the next failed attempt */
} ferry_mf_send_chan;

typedef struct ferry_mf_sender {
	struct ferry_migration *m;
	unsigned n;
	uint32_t compression;
	int level;
	ferry_mf_send_chan ch[FERRY_MULTIFD_MAX_CHANNELS];
	pthread_mutex_t lock;
	pthread_cond_t cond; /* for the migration thread: a job done, or err */
	/* Protected by lock. */
	bool quit;
	ferry_error err;     /* the first channel's failure; read under lock */
	unsigned next;       /* round-robin start for the next job */
	unsigned depth;      /* jobs a channel may hold now (queue_depth) */
	/*
	 * send_sync is queueing SYNC packets: device buffers wait (free_slot),
	 * so that no channel has one queued behind its SYNC while the
	 * migration thread waits for the SYNCs to go (the receiver stops at a
	 * SYNC until the main stream's sync record is read).
	 */
	bool syncing;
	uint64_t normal, zero, compress_in, compress_out;
	uint64_t compress_skipped; /* page bytes sent raw without trying zstd */
	bool inited;
	/* The page sink; owned by the migration thread. */
	ferry_page_sink sink;
	ferry_mf_job *job;   /* the job being filled */
	ferry_chan *main;    /* the main channel, for MULTIFD_SYNC */
} ferry_mf_sender;

/*
 * Connects n channels to uri, sends handshakes and starts the threads.
 * Returns 0 or a negative errno, with a message in *err when there is one.
 */
int ferry__mf_send_start(ferry_mf_sender *s, struct ferry_migration *m, unsigned n,
			 uint32_t compression, int level, bool splice, bool stage,
			 ferry_error *err);
/*
 * After the main connection failed: waits up to timeout_ms for a channel
 * to report its own failure, copies it into *out (sticky) under s->lock.
 * Returns its code or 0.
 */
int ferry__mf_send_wait_error(ferry_mf_sender *s, int timeout_ms, ferry_error *out);
/* Bytes queued for the channels or still in their sockets (the downtime estimate). Takes s->lock. */
uint64_t ferry__mf_send_inflight(ferry_mf_sender *s);
/*
 * The multifd page sink (sink.h) over the started sender s: pages go to
 * the channels in jobs of up to FERRY_MF_MAX_PAGES pages of one block; a
 * pass ends when every channel sent its SYNC packet, then MULTIFD_SYNC
 * goes on main. mig/src/main. 0 or -ENOMEM.
 */
int ferry__mf_sink_init(ferry_mf_sender *s, ferry_chan *main, ferry_page_sink **out);
/*
 * Device state over the channels (a participant's carrier, live-dev.c):
 * ferry__mf_send_buf queues b (b->data malloc'd, taken: freed once sent,
 * also on failure) as one device-state packet on the next channel with
 * room, waiting while every channel's queue is full; 0, the sender's
 * error, or -ECANCELED once the migration is cancelled, *abort is set or
 * the sender stops. Thread: any (the save threads), concurrently with the
 * page sink. ferry__mf_send_flush waits until every channel sent what it
 * was given, then has each send a SYNC packet (the destination's receivers
 * stop after it until ferry__mf_recv_sync). mig/src/main; 0 or the error.
 */
int ferry__mf_send_buf(ferry_mf_sender *s, ferry_part_buf *b, const atomic_bool *abort);
int ferry__mf_send_flush(ferry_mf_sender *s);
/* Wakes every blocked channel write (cancel); any thread. */
void ferry__mf_send_shutdown(ferry_mf_sender *s);
/* Stops and joins the threads, closes the connections. Idempotent. */
void ferry__mf_send_stop(ferry_mf_sender *s);
/* Copies counters into info (caller holds m->stats_lock). */
void ferry__mf_send_stats(ferry_mf_sender *s, ferry_migration_info *info);

struct ferry_mf_receiver;

typedef struct ferry_mf_recv_chan {
	struct ferry_mf_receiver *r;
	unsigned id;
	ferry_chan in;
	pthread_t thread;
	bool started;
	void *dctx;        /* ZSTD_DCtx */
	uint8_t *zbuf;
	size_t zcap;
	uint8_t *bounce;   /* one packet's pages, for file-backed blocks */
} ferry_mf_recv_chan;

typedef struct ferry_mf_receiver {
	struct ferry_migration *m;
	ferry_vm_t *vm;
	ferry_parts *parts;  /* device-state packets go to their load_buf */
	unsigned n;
	uint32_t compression;
	ferry_mf_recv_chan ch[FERRY_MULTIFD_MAX_CHANNELS];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* Protected by lock. */
	unsigned at_sync;    /* channels waiting after a SYNC packet */
	uint64_t generation; /* bumped by each release */
	bool quit;
	ferry_error err;     /* the first channel's failure; read under lock */
	uint64_t pages, zeros, bytes;
	/*
	 * At the last sync, with every channel parked at its SYNC: the bytes
	 * the channels had read and their threads' CPU time (the destination's
	 * load report, dest.c).
	 */
	uint64_t load_bytes, load_cpu_ns;
	unsigned refused;    /* connections refused during the handshake */
	bool inited;
	bool joined;         /* ferry__mf_recv_quiesce done (mig/dst/main's own) */
} ferry_mf_receiver;

/*
 * Accepts n channels on listen_fd (handshakes checked against uuid;
 * connections from another migration are refused and waited past) and
 * starts the receive threads, which hand device-state packets to parts
 * (ferry__parts_load_buf). Returns 0 or a negative errno, with a message
 * in *err when there is one.
 */
int ferry__mf_recv_start(ferry_mf_receiver *r, struct ferry_migration *m, ferry_parts *parts,
			 int listen_fd, const uint8_t uuid[16], unsigned n, uint32_t compression,
			 ferry_error *err);
/*
 * Main thread at MULTIFD_SYNC: waits for every channel's SYNC, releases
 * them. 0, a channel's error, -ECANCELED, or -ENOTCONN: the source closed
 * the main connection while channels still owed their SYNC (it is gone;
 * its last record, a cancel notice perhaps, is readable without waiting).
 */
int ferry__mf_recv_sync(ferry_mf_receiver *r);
/*
 * What the channels had loaded at the last sync: their stream bytes and
 * their receive threads' CPU time (0 and 0 before the first, or without
 * multifd). mig/dst/main; takes r->lock.
 */
void ferry__mf_recv_load(ferry_mf_receiver *r, uint64_t *bytes, uint64_t *cpu_ns);
/*
 * After the main connection failed: waits up to timeout_ms for a channel
 * to report its own failure (the likelier cause), copies it into *out
 * (sticky) under r->lock. Returns its code or 0; 0 at once when no
 * receive thread was started (the channels never all connected).
 */
int ferry__mf_recv_wait_error(ferry_mf_receiver *r, int timeout_ms, ferry_error *out);
/*
 * Ends the receive threads (their sockets shut down, all joined): nothing
 * they read is placed after this returns. Their buffers and sockets stay
 * until ferry__mf_recv_stop (freeing them took 0.2 ms, half an idle
 * guest's multifd switchover). Idempotent. mig/dst/main.
 */
void ferry__mf_recv_quiesce(ferry_mf_receiver *r);
/* ferry__mf_recv_quiesce, then the channels closed and their buffers freed. */
void ferry__mf_recv_stop(ferry_mf_receiver *r);

#endif
