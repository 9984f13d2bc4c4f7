/* SPDX-License-Identifier: MIT */
/*
 * The migration object shared by the source (source.c), destination
 * (dest.c) and RAM (ram.c) code.
 *
 * Ownership: a ferry_migration is created by ferry_migration_start() /
 * ferry_migration_incoming(), owned by its VM (vm->mig) and run by one main
 * thread. Control threads only read it through ferry_migration_query() and
 * set `cancel`. It is freed when the next migration replaces it or the VM
 * is destroyed, after its threads were joined.
 *
 * Thread: on the source, mig/src/main runs the migration (source.c,
 * postcopy-src.c, ram.c's saver), mig/src/rp reads the return path,
 * mig/src/send_N are the multifd channels and mig/src/zero helps the saver;
 * control threads call the public functions of migration.c. Each field
 * below says what protects it; a field without a note is written before
 * the threads that read it start. Lock order (outer first):
 *   vm->mig_lock > m->stats_lock > (m->rl's lock, mf_send->lock);
 *   vm->mig_lock > mf_send->lock (cancel);
 *   pc_src->lock > m->rp_lock (postcopy waits look at the return path).
 * stats_lock is held only to copy figures in or out; nothing blocks under it.
 */
#ifndef FERRY_MIGRATION_MIG_H
#define FERRY_MIGRATION_MIG_H

#include "internal.h"
#include "migration/hints.h"
#include "migration/sink.h"
#include "stream/chan.h"
#include "stream/sum.h"
#include "transport/tls.h"
#include "util/bufpool.h"
#include "util/helper.h"

struct ferry_migration {
	ferry_vm_t *vm;
	bool incoming;
	char uri[512];
	ferry_migration_params params; /* protected by stats_lock (live updates) */

	pthread_t thread;     /* mig/src/main or mig/dst/main */
	bool thread_started;
	bool thread_done;     /* protected by vm->mig_lock */

	atomic_bool cancel;   /* set by ferry_migration_cancel() */
	/*
	 * Destination: the listener, or -1; opened by ferry_migration_incoming()
	 * before mig/dst/main starts. mig/dst/main accepts the main, multifd
	 * and preempt connections on it and closes it at the end (cleared
	 * under vm->mig_lock: cancel shuts it down under that lock).
	 */
	int listen_fd;

	/*
	 * The channel. `chan` is set up by the main thread before any other
	 * thread touches it; cancel only calls shutdown on chan_fd.
	 */
	ferry_chan chan;
	atomic_int chan_fd;   /* -1 when not connected */
	/*
	 * max-bandwidth over the main channel and every multifd channel
	 * (ratelimit.h; thread-safe). Source only: the cap follows
	 * ferry_migration_set_params; postcopy turns it off.
	 */
	ferry_ratelimit rl;
	/*
	 * Live device buffers (util/bufpool.h; its own lock): every
	 * ferry_part_buf's data comes from here and goes back with
	 * ferry__buf_put. Trimmed when the migration thread ends.
	 */
	ferry_bufpool *bufs;

	/* Protected by vm->mig_lock. */
	ferry_migration_status status;

	/* Protected by stats_lock: what query-migrate shows. */
	pthread_mutex_t stats_lock;
	ferry_migration_info info;
	uint64_t start_ns;
	uint64_t end_ns;      /* 0 while running */

	/*
	 * Multifd channels while they exist (protected by vm->mig_lock), so
	 * that cancel can shut them down too.
	 */
	struct ferry_mf_sender *mf_send;
	struct ferry_mf_receiver *mf_recv;

	/*
	 * Source return path (mig/src/rp). rp_thread and rp_started belong to
	 * mig/src/main, which starts and joins the thread; the rest is
	 * protected by rp_lock (copied out under it: see ferry__src_rp_wait_shut).
	 */
	pthread_t rp_thread;
	bool rp_started;
	pthread_mutex_t rp_lock;
	pthread_cond_t rp_cond;
	bool rp_shut;         /* SHUT received */
	bool rp_dead;         /* return path ended (EOF or error) */
	int rp_status;
	char rp_msg[200];
	uint64_t rp_shut_ns;
	bool rp_qmp;          /* the peer greeted like a QMP monitor */
	bool rp_bye;          /* main thread: done writing after a cancel */
	/*
	 * The destination's last two load reports, older first; rp_loads
	 * counts them (rp_cond is broadcast at each); rp_load_none: the
	 * destination answered PONG instead, it does not report.
	 */
	struct ferry_load_report {
		uint64_t bytes, cpu_ns; /* RP LOAD: stream bytes read, CPU ns of its loading threads (totals) */
		uint64_t at_ns;         /* when it arrived here */
		uint32_t pass;          /* the pass it answers */
	} rp_load[2];
	uint32_t rp_loads;
	bool rp_load_none;

	/*
	 * Postcopy. pc_src (source) and pc_dst (destination) are set by the
	 * main thread before the threads that use them start, and freed
	 * after they were joined.
	 */
	atomic_bool pc_start;        /* source: switch after the current pass */
	struct ferry_pc_src *pc_src;
	struct ferry_pc_dst *pc_dst;
	atomic_int preempt_fd;       /* -1 when none; pause shuts it down */
	/*
	 * Protected by stats_lock: why this side cut its links in postcopy
	 * (ferry__mig_cut: ferry_migration_pause, a protocol error on the
	 * preempt channel), "" if it did not; ferry__mig_paused takes it.
	 */
	char pause_why[256];
	/* Recovery requests: protected by vm->mig_lock, signalled on mig_cond. */
	char resume_uri[512];        /* source: ferry_migration_resume() */
	bool resume_req;
	int recover_fd;              /* destination: listener from ferry_migration_recover() */
	/*
	 * Live devices (live-dev.c), when the VM has any: created by the
	 * participant's setup handler and freed by its cleanup, on the main
	 * thread; its own threads use it in between.
	 */
	struct ferry_live_src *live_src;
	struct ferry_live_dst *live_dst;
	/*
	 * switchover-ack (swack.c). Source: swack_acked, protected by rp_lock
	 * (set by mig/src/rp, waited for on rp_cond by mig/src/main).
	 * Destination, mig/dst/main's: how many PRE_COPY devices have not
	 * approved yet, whether the source asked for the ack, and whether it
	 * was sent.
	 */
	bool swack_acked;
	unsigned swack_pending;
	bool swack_asked, swack_sent;
	/*
	 * Switchover marks (ferry__now_ns; 0: not reached), written and read
	 * only by the main thread (mig/src/main, mig/dst/main): the vCPU stop
	 * (destination: the SWITCHOVER command received), the final RAM pass
	 * written, the last live device's end marker sent (live-stats.c).
	 */
	uint64_t sw_stop_ns, sw_ram_ns, sw_dev_ns;
	/*
	 * Protected by stats_lock: the bytes transferred at the switchover
	 * (vCPU stop; destination: SWITCHOVER received) and at the postcopy
	 * switch (0: not reached), for precopy/downtime/postcopy bytes.
	 */
	uint64_t sw_bytes, pc_bytes;
	/* Protected by stats_lock: per live device, registration order (live-stats.c). */
	struct ferry_live_stat {
		uint64_t bytes, buffers;
		uint64_t save_ns, load_ns, apply_ns;
		uint64_t reordered; /* destination: buffers that arrived early */
	} live_stats[FERRY_LIVE_DEVICES_MAX];
	/*
	 * Integrity (stream/sum.h; its own atomics and lock): set up by the
	 * main thread before the stream's header (source: x-checksum on;
	 * destination: a version 2 header), then attached to every channel
	 * that carries guest data. sums_on: it was.
	 */
	ferry_sums sums;
	bool sums_on;
	/*
	 * Source: x-user-copy's decision, taken once by the main thread before
	 * its first connection (ferry__kcopy_use), read-only afterwards: every
	 * connection it makes (main, multifd, preempt, recovered) stages its
	 * sends when set.
	 */
	bool stage_sends;
	/*
	 * TLS (transport/tls.h): taken from the parameters by the main
	 * thread before its first connection, read-only afterwards; creds
	 * NULL: plaintext. Dropped when the migration is freed.
	 */
	ferry_tls_cfg tls;
};

/* Status change + MIGRATION event; takes vm->mig_lock. Any migration thread. */
void ferry__mig_set_status(struct ferry_migration *m, ferry_migration_status s);
void ferry__mig_event(struct ferry_migration *m, ferry_event_type type, uint32_t pass);
/*
 * How an error reaches query-migrate: ferry__mig_set_error_from records e
 * (code and message) as the migration's error unless one was recorded
 * before (the first wins); it is the only writer of info.error and
 * info.error_desc. ferry__mig_set_error is the same with a formatted
 * message. Both take stats_lock; any thread. Where several errors compete
 * (a channel's, a multifd channel's, the peer's), the drivers choose with
 * one function per side: src_pick_error (source.c), dst_pick_error (dest.c).
 * The one other writer of info.error_desc: ferry__mig_pause_reason, while
 * postcopy is paused and no error was recorded (info.error 0).
 */
void ferry__mig_set_error_from(struct ferry_migration *m, const ferry_error *e);
void ferry__mig_set_error(struct ferry_migration *m, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/*
 * Postcopy paused: why (the link's error, or why the last recovery
 * failed), logged as a warning and shown in info.error_desc, with
 * info.error still 0, until a recovery succeeds (ferry__pc_recovered
 * clears it) or the migration fails (its error replaces it). As QEMU's
 * query-migrate shows error-desc in postcopy-paused. Takes stats_lock.
 */
void ferry__mig_pause_reason(struct ferry_migration *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * Postcopy paused on either side: its reason is "postcopy paused: " and
 * why this side cut its links (ferry__mig_cut) if it did, else link (the
 * connection's error).
 */
void ferry__mig_paused(struct ferry_migration *m, const char *link);
/*
 * Postcopy, either side: shuts both connections down (the main one and
 * the preempt one), so that whichever thread blocks on them fails and the
 * migration pauses, with why as its reason (the first cut's wins): for
 * ferry_migration_pause (FERRY_PAUSE_ASKED_MSG), or a preempt channel
 * thread that read a protocol error, which the main connection's reader
 * would otherwise report as the peer closing it. why NULL: no reason of
 * its own (the links' errors say it). Any thread; takes stats_lock.
 */
void ferry__mig_cut(struct ferry_migration *m, const char *why);
static inline bool ferry__mig_cancelled(struct ferry_migration *m)
{
	return atomic_load_explicit(&m->cancel, memory_order_relaxed);
}

/* Snapshot of the current parameters (they can change while running); takes stats_lock. */
void ferry__mig_params(struct ferry_migration *m, ferry_migration_params *out);
/* x-link-timeout as it is now (it can change while running); takes stats_lock. */
uint32_t ferry__mig_link_timeout_ms(struct ferry_migration *m);

/* Dead peer detection on a new connection fd, per x-link-timeout (ferry__sock_set_peer_timeout). */
void ferry__mig_watch_peer(struct ferry_migration *m, int fd);

/* Called by a migration's main thread as its very last action; takes vm->mig_lock. */
void ferry__mig_thread_done(struct ferry_migration *m);

/* Thread bodies: mig/src/main and mig/dst/main. */
void *ferry__source_thread(void *arg);
/* mig/dst/main (dest.c): the whole incoming migration, as phases; arg is m. */
void *ferry__dest_thread(void *arg);

/* ---- RAM (ram.c) ---- */

/*
 * The RAM saver: owned by mig/src/main, which calls every ferry__ram_*
 * save function below (the free page hint callbacks run on it too, inside
 * ferry__ram_hints_*). Its helper mig/src/zero touches only the chunk it
 * was handed, between submit and wait. Once in postcopy, mig/src/rp clears
 * dirty bits too, under the lock passed to ferry__ram_postcopy_pass.
 */
typedef struct ferry_ram_saver {
	struct ferry_migration *m;
	ferry_vm_t *vm;
	ferry_chan *c;
	const struct ferry_ram_block *last_block; /* for CONTINUE */
	uint64_t dirty_pages;     /* set bits over all blocks */
	uint64_t pass_bytes;
	uint64_t pass_ns;         /* the last pass's duration */
	uint64_t pass_wait_ns;    /* of which mig/src/main waited for a CPU (ferry__thread_wait_ns) */
	/*
	 * max-bandwidth is applied where bytes are written (m->rl, used by
	 * the channels); the saver only refreshes the counters, at most every
	 * STATS_NS, from the channel's on_write hook too.
	 */
	uint64_t stats_ns;        /* when rs_stats last ran */
	uint64_t send_ns;         /* time spent sending (for bandwidth) */
	uint64_t sent_bytes;      /* bytes sent while timing */
	uint64_t normal, zero, skipped;
	uint64_t processed;       /* pages sent or skipped in the current pass */
	uint64_t mbps_t0, mbps_b0; /* start of the current mbps window */
	bool tracking;
	/*
	 * On machines with more than one CPU this helper thread (mig/src/zero)
	 * prepares the first pass's next chunk while this thread sends the
	 * current one, and takes half of the zero detection of later passes.
	 * Two sets of maps, one per chunk in flight (ram.c, first_pass).
	 */
	ferry_helper zero_helper;
	unsigned long *zmap[2]; /* SCAN_BATCH bits: zero pages of a chunk */
	unsigned long *pmap[2]; /* SCAN_BATCH bits: populated pages (first pass) */
	/*
	 * SCAN_BATCH checksums: a chunk's data pages' (stream/sum.h), computed
	 * with its zero check when they go on the main channel with checksums,
	 * so the helper takes its share (emit hands a run's to the sink).
	 */
	uint64_t *sums[2];
	/*
	 * The first pass protects and scans every chunk before reading it;
	 * maps_file[i]: block i is a shared mapping of its whole fd, so the
	 * file's block count can answer "all/none populated" without a walk.
	 */
	bool first_pass;
	bool maps_file[FERRY_MAX_RAM_BLOCKS];
	/*
	 * Where pages go (sink.h): chan_sink, PAGES/ZEROS records on c, unless
	 * ferry__ram_set_sink() chose another carrier (multifd).
	 */
	ferry_page_sink chan_sink;
	ferry_page_sink *sink;
	/* Postcopy: no rate limit, small flushes (requests wait behind them). */
	bool postcopy;
	bool in_section;  /* a RAM section body is open on c (for the cancel notice) */
	/* Set (m->pc_start) when a switch to postcopy is wanted: passes end early. */
	atomic_bool *pc_start;
	/* Free page hints (hints.h); hints.ops NULL: none. */
	struct ferry_ram_hints hints;
	/* Write-protect all RAM at setup (set by ferry__ram_hints_setup). */
	bool protect_all;
} ferry_ram_saver;

/*
 * Chooses the carrier of the saver's pages (NULL: the main channel, the
 * default). mig/src/main, between passes.
 */
void ferry__ram_set_sink(ferry_ram_saver *rs, ferry_page_sink *sink);
/* Starts dirty tracking, finds populated pages, writes the setup section. */
int ferry__ram_save_setup(ferry_ram_saver *rs);
/* Log sync: merges the kernel's dirty state into the bitmaps. */
int ferry__ram_sync(ferry_ram_saver *rs, uint64_t *newly);
/* How many pages a log sync now would find, without taking them (the downtime estimate's). */
int ferry__ram_peek(ferry_ram_saver *rs, uint64_t *pages);
/* Refreshes query-migrate's counters now (remaining: every dirty page). */
void ferry__ram_stats(ferry_ram_saver *rs);
/* Sends every dirty page as one section of the given type (PART/END). */
int ferry__ram_save_pass(ferry_ram_saver *rs, uint8_t section_type);
/* Stops tracking (idempotent). */
void ferry__ram_save_cleanup(ferry_ram_saver *rs);
/*
 * Postcopy background pass: one PART section with every dirty page, in
 * small runs whose bits are cleared under `lock` (the return path thread
 * clears bits of pages it sends on the preempt channel). serve(opaque) runs
 * between runs (requested pages first). Returns 0 or a negative errno.
 */
int ferry__ram_postcopy_pass(ferry_ram_saver *rs, pthread_mutex_t *lock,
			     int (*serve)(void *opaque), void *opaque);
/*
 * Inside ferry__ram_postcopy_pass's serve: ends the PART section, lets
 * put(c, opaque) queue records of its own on the channel (a PING) and
 * opens the next PART section.
 */
void ferry__ram_postcopy_break(ferry_ram_saver *rs, void (*put)(ferry_chan *c, void *opaque),
			       void *opaque);
/*
 * Queues the cancel notice: FERRY_RAM_CANCELLED inside a RAM section body,
 * FERRY_REC_CANCELLED between records. Only at a record boundary.
 */
void ferry__ram_put_cancelled(ferry_ram_saver *rs);
/* Sends pages [first, first + n) of rb as one PAGES record and flushes. */
int ferry__ram_send_pages(ferry_ram_saver *rs, const struct ferry_ram_block *rb,
			  uint64_t first, uint32_t n);

/* ---- RAM loader (ram-load.c; the placer it calls is in place.h) ---- */

/*
 * Destination RAM loading state for one input channel, owned by the thread
 * that reads that channel (mig/dst/main, mig/dst/listen or
 * mig/dst/preempt). With pc set (postcopy), pages are read into `bounce`
 * (FERRY_RAM_MAX_RUN pages) and placed atomically instead of being
 * received straight into RAM.
 */
struct ferry_mf_receiver;
struct ferry_pc_dst;
struct ferry_placer;
typedef struct ferry_ram_loader {
	ferry_vm_t *vm;
	ferry_chan *c;
	struct ferry_mf_receiver *mf;
	struct ferry_pc_dst *pc;
	uint8_t *bounce;
	struct ferry_ram_block *last; /* for CONTINUE */
	/*
	 * Written by the owner only; read by ferry__dst_stats on another
	 * thread too (the preempt loader's, by mig/dst/listen): atomic.
	 */
	_Atomic uint64_t pages, zeros;
	struct ferry_placer *placer;  /* mig/dst/place_N, started on demand */
	bool placer_tried;            /* started it, or found it cannot start */
	bool started;                 /* the RAM setup section was loaded */
} ferry_ram_loader;
/*
 * Loads one RAM section body (records up to EOS). The preempt channel is
 * one endless body: its loader returns only on error or end of data.
 * Thread: the loader's owner. Returns with every page placed.
 */
int ferry__ram_load(ferry_ram_loader *l, bool setup);
/*
 * RAM's destination participant handler (participant.h; opaque: the
 * loader): the setup section (START, checked) or a PART/END body.
 */
struct ferry_section;
int ferry__ram_part_load(void *opaque, ferry_chan *c, const struct ferry_section *s);
/* Stops the loader's placing threads, if any (idle: ferry__ram_load drained them). */
void ferry__ram_loader_fini(ferry_ram_loader *l);
/*
 * Postcopy hook for query-migrate (migration.c; postcopy-dst.c): copies
 * the destination's postcopy statistics into info, if m->pc_dst is set.
 * The caller holds vm->mig_lock and m->stats_lock.
 */
void ferry__pc_dst_query(struct ferry_migration *m, ferry_migration_info *info);
/* Multifd hooks for cancel (migration.c): wake everything up. */
/* shut: also shut the source's channels down (else they finish their packet). */
void ferry__mf_cancel(struct ferry_migration *m, bool shut);

#endif
