/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination, all of it in postcopy-dst.c: the commands
 * its record loader dispatches here, the phases the driver (dest.c) calls
 * in order, and the page state underneath them (ferry_pc_dst).
 *
 * DESIGN: at the switch the source sends the pages it will send again
 * (DISCARD bitmaps); they become `pending`, and those the destination
 * already holds are punched out of RAM so that they fault. LISTEN registers every block with a userfaultfd in MISSING mode
 * and starts mig/dst/fault. From then on nothing writes guest RAM directly:
 * every page is placed with UFFDIO_COPY (zero pages with UFFDIO_ZEROPAGE),
 * which installs the whole page at once and wakes the threads waiting for
 * it, so a running vCPU never sees a partly written page. A page that is
 * already there (EEXIST) is simply skipped: a requested page may arrive on
 * the preempt channel and again in the background stream.
 *
 * mig/dst/fault reads fault messages. A fault on a pending page that has
 * not been placed is requested from the source on the return path (once:
 * `requested`), or with FERRY_PC_PREEMPT_REQS on the preempt connection,
 * whose socket nothing else writes this way (on the main one a request
 * waits whenever mig/dst/listen holds the socket to read the background,
 * and on the source whenever mig/src/main holds it to send); a fault on
 * any other missing page is a page the source never sent because it was
 * never populated (zero there and here): it is placed as a zero page at
 * once, without a round trip. The fault thread also sends a heartbeat on
 * each of those connections that has been quiet, so the source can tell a
 * silent link from an idle guest.
 *
 * mig/dst/listen reads the rest of the main stream (background pages) and
 * mig/dst/preempt the preempt connection (requested pages); both place.
 *
 * Threads and sharing: `pending` is written by mig/dst/main before LISTEN
 * and only read afterwards. `placed` and `requested` are atomic bitmaps
 * (bits only ever set). Return-path writes from several threads are
 * serialized by rp_lock; `rp` is NULL while the migration is paused, and
 * requests made then are sent again when it resumes.
 *
 * Phases, after the precopy stream (ferry__dst_* in dest.h) returned:
 *   ferry__postcopy_package   device state from PACKAGE, with mig/dst/listen
 *                             already reading the background pages
 *   (the driver starts the vCPUs)
 *   ferry__postcopy_incoming  the guest runs; pages fault in until all are
 *                             placed, pausing and recovering on a broken link;
 *                             without RUN (advised, ended in precopy) it only
 *                             frees what ADVISE and LISTEN set up
 *   ferry__postcopy_fail      on failure: stops postcopy and the guest
 *
 * Thread: the phases are called on mig/dst/main; the commands run on
 * whichever thread reads the record (mig/dst/main, or mig/dst/listen after
 * RUN); the page state's functions say theirs. Each returns 0 or a
 * negative errno.
 */
#ifndef FERRY_MIGRATION_POSTCOPY_DST_H
#define FERRY_MIGRATION_POSTCOPY_DST_H

#include "migration/dest.h"
#include "migration/pc-blocktime.h"
#include "migration/postcopy.h"

/* ---- the page state (threads and sharing: see DESIGN above) ---- */

/* Fault latency histogram: 16 linear sub-buckets per power of two (ns). */
#define FERRY_PC_HIST_BUCKETS (64 * 16)
#define FERRY_PC_REQ_MAX 1024 /* outstanding requests timed at once */

typedef struct ferry_pc_dst {
	struct ferry_migration *m;
	ferry_vm_t *vm;
	int uffd;
	int wake_fd;      /* eventfd: tells the fault thread to quit */
	bool zeropage_ok; /* UFFDIO_ZEROPAGE available on every block */
	bool registered;
	pthread_t fault_thread;
	bool fault_started;
	unsigned heartbeat_ms;

	/* Per block. pending: read-only after LISTEN. */
	unsigned long *pending[FERRY_MAX_RAM_BLOCKS];
	unsigned long *scratch[FERRY_MAX_RAM_BLOCKS]; /* one DISCARD message's bits */
	bool maps_file[FERRY_MAX_RAM_BLOCKS];          /* discard with fallocate */
	_Atomic unsigned long *placed[FERRY_MAX_RAM_BLOCKS];
	_Atomic unsigned long *requested[FERRY_MAX_RAM_BLOCKS];
	uint64_t npending;

	/*
	 * Return path writes; rp is NULL while paused. req_chan, when not NULL,
	 * carries the page requests instead: the preempt connection with
	 * FERRY_PC_PREEMPT_REQS (NULL while paused too).
	 */
	pthread_mutex_t rp_lock;
	ferry_chan *rp;   /* protected by rp_lock */
	uint64_t rp_last_ns; /* protected by rp_lock: last message sent */
	ferry_chan *req_chan; /* protected by rp_lock */
	uint64_t req_last_ns; /* protected by rp_lock: last message sent on req_chan */

	/* Protected by stat_lock: outstanding request times and statistics. */
	pthread_mutex_t stat_lock;
	struct { unsigned block; uint64_t page; uint64_t t0; bool non_vcpu; } req[FERRY_PC_REQ_MAX];
	unsigned nreq;
	uint64_t hist[FERRY_PC_HIST_BUCKETS];
	uint64_t samples, max_ns, blocked_ns;
	uint64_t faults, requests, local_zero, placed_pages;
	ferry_pc_blocktime bt; /* per-vCPU waits (pc-blocktime.h) */
} ferry_pc_dst;

/* Allocates the bitmaps and opens nothing yet. 0 or -ENOMEM. */
int ferry__pc_dst_init(ferry_pc_dst *pc, struct ferry_migration *m);
/* Checks that this host can do postcopy (userfaultfd MISSING on RAM). */
int ferry__pc_dst_probe(ferry_vm_t *vm, ferry_error *err);
/* DISCARD payload (already read) -> pending bits; punches those pages out. */
int ferry__pc_dst_discard(ferry_pc_dst *pc, ferry_chan *c, const uint8_t *p, size_t len);
/* LISTEN: registers RAM (MISSING mode) and starts mig/dst/fault. */
int ferry__pc_dst_listen(ferry_pc_dst *pc, ferry_chan *rp, ferry_error *err);
/*
 * Places pages [first, first + n) of block bi: data (n pages) or zeros
 * (data == NULL), through ferry__place_atomic (place.h), and marks them
 * placed. Pages already present are skipped. 0 or a negative errno.
 */
int ferry__pc_place(ferry_pc_dst *pc, unsigned bi, uint64_t first, uint32_t n,
		    const uint8_t *data);
/* True once every pending page is placed. */
bool ferry__pc_dst_complete(ferry_pc_dst *pc);
/* Attaches (rp != NULL) or detaches the return path. */
void ferry__pc_dst_set_rp(ferry_pc_dst *pc, ferry_chan *rp);
/* Attaches (req != NULL) or detaches the page requests' own channel. */
void ferry__pc_dst_set_req(ferry_pc_dst *pc, ferry_chan *req);
/* Sends one return path message under rp_lock. 0, or -EPIPE when detached. */
int ferry__pc_rp_send(ferry_pc_dst *pc, uint16_t type, const void *p1, size_t l1,
		      const void *p2, size_t l2);
/* Recovery: sends MISSING bitmaps + MISSING_END, then re-sends requests. */
int ferry__pc_dst_resync(ferry_pc_dst *pc);
/* Stops the fault thread, unregisters RAM, frees everything. Idempotent. */
void ferry__pc_dst_fini(ferry_pc_dst *pc);

/* ---- the driver's view (dest.c) ---- */

/* Commands: payload not read yet, except run's (run state). */
int ferry__postcopy_advise(ferry_dst *d, uint32_t flags);
int ferry__postcopy_discard(ferry_dst *d, uint16_t len);
int ferry__postcopy_listen(ferry_dst *d);
int ferry__postcopy_package_read(ferry_dst *d, uint32_t len);
int ferry__postcopy_run(ferry_dst *d, uint8_t run);
/*
 * At a precopy EOF (no RUN came): 0, or a failure if a DISCARD or LISTEN
 * came, whose dropped pages only postcopy would bring back (a destination
 * must not complete with them missing).
 */
int ferry__postcopy_precopy_end(ferry_dst *d);

/* Phases. Each is a no-op when its part of postcopy did not happen. */
int ferry__postcopy_package(ferry_dst *d);
/*
 * Right before the guest may run (its vCPUs start, or the embedder may
 * start them): after a postcopy RUN, tells the source with RP RUNNING. A
 * destination that fails before this never ran the guest, and the source
 * resumes its own (postcopy-src.c, dst_never_ran).
 */
void ferry__postcopy_may_run(ferry_dst *d);
int ferry__postcopy_incoming(ferry_dst *d);
void ferry__postcopy_fail(ferry_dst *d);

#endif
