/* SPDX-License-Identifier: MIT */
/*
 * The postcopy source (postcopy-src.c): what the source driver calls at
 * its fixed phase points when the postcopy capability is on, and what the
 * return path thread hands over to it. Every entry point is a no-op (or
 * false) when the migration has no postcopy state, so callers need not
 * ask first.
 *
 * Thread: the ferry__pc_src_* functions taking a src_ctx run on
 * mig/src/main; the ferry__pc_src_rp_* ones on mig/src/rp.
 */
#ifndef FERRY_MIGRATION_POSTCOPY_SRC_H
#define FERRY_MIGRATION_POSTCOPY_SRC_H

#include "migration/source.h"

/* ---- mig/src/main ---- */

/* Negotiate, before the return path starts (it reads m->pc_src): the state. */
int ferry__pc_src_open(struct src_ctx *x);
/* Negotiate, after the multifd command: POSTCOPY_ADVISE and the preempt channel. */
int ferry__pc_src_advise(struct src_ctx *x);
/* After a pass's sync: true when the migration should switch to postcopy now. */
bool ferry__pc_src_wanted(struct src_ctx *x, const ferry_migration_params *p);
/* Before the stop: the destination drops what will be sent again after it. */
int ferry__pc_src_prediscard(struct src_ctx *x);
/*
 * After the stop (x->stop_ns, SWITCHOVER queued): the switch, then the
 * background stream, page requests, pauses and recoveries until the
 * destination has every page. 0 (completed) or an error; x->committed
 * says whether the destination may have run the guest.
 */
int ferry__pc_src_run(struct src_ctx *x);
/* Bytes of the connections of the postcopy phase not counted on m->chan. */
uint64_t ferry__pc_src_extra_bytes(struct ferry_migration *m);
/*
 * The end of the migration: drops the connections, joins the return path
 * and frees the state. False when there was none (the caller closes the
 * main connection itself).
 */
bool ferry__pc_src_close(struct src_ctx *x);

/* ---- mig/src/rp ---- */

/* At the thread's start: it is on every page request's path, so it is boosted. */
void ferry__pc_src_rp_begin(struct ferry_migration *m);
/*
 * A return path message of postcopy's (payload b, len bytes): 0 handled,
 * -ENOMSG not one of postcopy's, else an error already recorded on c.
 */
int ferry__pc_src_rp_msg(struct ferry_migration *m, ferry_chan *c, uint16_t type,
			 const uint8_t *b, size_t len);
/* Whether the switch happened (a dead return path then pauses the sender). */
bool ferry__pc_src_switched(struct ferry_migration *m);
/* The return path ended: wakes the main thread's waits. */
void ferry__pc_src_rp_end(struct ferry_migration *m);

#endif
