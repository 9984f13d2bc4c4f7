/* SPDX-License-Identifier: MIT */
/*
 * The destination driver's context (dest.c), shared with the destination's
 * postcopy (postcopy-dst.c), which dest.c calls at fixed phase points and
 * which reuses dest.c's record loaders for the postcopy package and the
 * background stream.
 *
 * Thread: a ferry_dst lives on mig/dst/main's stack. Fields are written by
 * mig/dst/main unless marked; once postcopy runs, mig/dst/listen owns the
 * main channel `c` and `ram`, mig/dst/preempt owns `pre` and `pre_ram`.
 */
#ifndef FERRY_MIGRATION_DEST_H
#define FERRY_MIGRATION_DEST_H

#include "migration/mig.h"
#include "migration/multifd.h"
#include "migration/participant.h"

struct ferry_pc_dst;

typedef struct ferry_dst {
	struct ferry_migration *m;
	ferry_vm_t *vm;
	ferry_chan *c;          /* the main channel (&m->chan) */
	bool run_after;
	bool digest_seen;       /* DIGEST read (checksummed streams end with it) */
	uint64_t load_cpu0;     /* mig/dst/main's CPU time at the stream's start (load reports) */
	uint64_t eof_ns, end_ns; /* the stream's EOF read, and its end done (dst_load_end) */
	ferry_parts parts;      /* what loads sections: RAM (opaque &ram), devices (m) */
	ferry_ram_loader ram;   /* the main channel's RAM loading state */
	uint8_t uuid[16];       /* the source VM's, from the header */
	ferry_mf_receiver mf;   /* when the stream announced multifd (own lock) */
	ferry_error mf_err;     /* a multifd channel's error, copied under mf.lock at the end of the stream */
	bool mf_on;
	/* Postcopy (from ADVISE); see postcopy-dst.h. */
	struct ferry_pc_dst *pc; /* also published as m->pc_dst under vm->mig_lock */
	bool pc_discarded;      /* a DISCARD dropped pages: only postcopy brings them back */
	bool pc_listening;      /* LISTEN done: RAM is placed, never written */
	bool pc_running;        /* RUN received: the rest comes in postcopy */
	bool pre_on;            /* preempt channel negotiated */
	bool pre_reqs;          /* page requests go on it too (FERRY_PC_PREEMPT_REQS) */
	ferry_chan pre;         /* read by mig/dst/preempt; page requests written under pc->rp_lock */
	ferry_ram_loader pre_ram; /* mig/dst/preempt's; counters read by ferry__dst_stats */
	pthread_t pre_thread;
	bool pre_started;
	atomic_bool pre_quit;   /* the preempt channel is being closed on purpose */
	atomic_bool pre_broke;  /* mig/dst/preempt ended by itself: pages on their way there are lost */
	int pkg_fd;             /* PACKAGE received: its bytes in a memfd, or -1 */
	uint32_t pkg_len;
	uint64_t pkg_sum;       /* XXH3-64 the PACKAGE must have (DIGEST, checksums on) */
	pthread_t listen_thread; /* mig/dst/listen, started for the package */
	bool listen_started;     /* and not joined yet */
	int listen_r;           /* mig/dst/listen's result, read after the join */
} ferry_dst;

/*
 * Record loaders of the driver (dest.c), also used by postcopy-dst.c on
 * mig/dst/listen and for the package. Each returns 0 or a negative errno
 * (failed on d->c).
 */
/* A START or FULL section record, to the participant it names. */
int ferry__dst_load_section(ferry_dst *d, uint8_t type);
/* A COMMAND record; postcopy commands go to postcopy-dst.c. */
int ferry__dst_load_command(ferry_dst *d);
/* Publishes progress (takes m->stats_lock, then mf.lock). */
void ferry__dst_stats(ferry_dst *d);

/* Refreshes the counters and records `transferred` in *mark (under stats_lock). Thread: as ferry__dst_stats. */
void ferry__dst_mark_bytes(ferry_dst *d, uint64_t *mark);
/* Joins the multifd receive threads (all their pages are placed). mig/dst/main. */
void ferry__dst_mf_stop(ferry_dst *d);

#endif
