/* SPDX-License-Identifier: MIT */
/*
 * The source side's shared state: one context per outgoing migration,
 * shared by the phases of the driver (source.c) and the postcopy source
 * (postcopy-src.c), and the return path entry points those use.
 *
 * Ownership: a src_ctx lives on mig/src/main's stack for the whole
 * migration. Its fields are owned by mig/src/main; other threads reach the
 * migration only through struct ferry_migration (mig.h), whose fields say
 * which lock protects them.
 */
#ifndef FERRY_MIGRATION_SOURCE_H
#define FERRY_MIGRATION_SOURCE_H

#include "migration/mig.h"
#include "migration/multifd.h"
#include "migration/participant.h"
#include "migration/throttle.h"

struct src_ctx;

/*
 * Bytes on the wire so far: the main connection, the multifd channels
 * (refreshing info.multifd_bytes) and postcopy's other connections.
 * Thread: the migration's main thread, under m->stats_lock.
 */
uint64_t ferry__src_wire_bytes(struct src_ctx *x);

/*
 * The downtime, ended at end_ns (SHUT's arrival; postcopy: the destination
 * running): info.downtime_us and downtime_ms. Under m->stats_lock.
 */
void ferry__src_set_downtime(struct src_ctx *x, uint64_t end_ns);

struct src_ctx {
	struct ferry_migration *m;
	ferry_vm_t *vm;
	ferry_chan *c;            /* &m->chan */
	ferry_migration_params p0;      /* parameters at the start (multifd and postcopy stay fixed) */
	ferry_parts parts;        /* everything that migrates (registered at setup) */
	ferry_ram_saver rs;       /* the RAM participant's state */
	ferry_mf_sender mf;       /* multifd channels (mf.inited: started) */
	ferry_error mf_open_err;  /* starting them lost the connection: src_pick_error weighs it */
	ferry_throttle thr;       /* auto-converge */
	int fd;                   /* main connection, -1 before it is made */
	bool stopped_by_us;       /* the switchover stopped the vCPUs */
	bool committed;           /* postcopy: the destination may run the guest */
	bool stream_open;         /* the header is out, EOF is not: a cancel notice may follow */
	bool postcopy;            /* the iteration ended with a switch to postcopy */
	bool stalled;             /* max-passes reached without converging */
	uint32_t pass;            /* passes sent so far */
	uint64_t last_sync_ns;    /* the last log sync, for the dirty rate */
	uint64_t pass_start_ns;   /* when the current (or last) pass began */
	uint64_t dirty_rate;      /* pages dirtied per second at the last sync */
	uint64_t stop_ns;         /* when the switchover stopped the vCPUs */
	uint64_t sync_ns;         /* how long the last log sync took */
	uint64_t dest_bps;        /* the destination's load rate, last pass (dest_load_bps; 0: none) */
	uint64_t expected_ns;     /* the downtime the last pass estimated (downtime_estimate_ns) */
};

/* ---- return path (source.c) ---- */

/* Starts mig/src/rp on m->chan (again after a postcopy reconnect). mig/src/main. */
int ferry__src_rp_start(struct ferry_migration *m);
/* What the destination said in SHUT (a copy taken under rp_lock). */
struct ferry_rp_shut {
	int status;    /* 0: it runs the guest; else its negative errno */
	uint64_t ns;   /* when SHUT arrived */
	char msg[200]; /* its reason, when status is not 0 */
};
/* Waits for SHUT. 0 (and *out) or an error. mig/src/main. */
int ferry__src_rp_wait_shut(struct ferry_migration *m, struct ferry_rp_shut *out);
/* The same for at most timeout_ms (0: no limit); -ETIMEDOUT when it passed. */
int ferry__src_rp_wait_shut_ms(struct ferry_migration *m, struct ferry_rp_shut *out,
			       uint32_t timeout_ms);
/* The main thread has written all it will after a cancel; mig/src/main. */
void ferry__src_rp_bye(struct ferry_migration *m);

#endif
