/* SPDX-License-Identifier: MIT */
/*
 * Participants: everything that migrates, behind one table of handlers the
 * drivers call at their phases. The drivers (source.c, dest.c) name no
 * feature; RAM, device vmsd state and free page hints are participants,
 * and so will be live devices (issue 17).
 *
 * DESIGN (source), in the order mig/src/main calls the handlers:
 *   save_setup      once, before the first pass (the migration is not
 *                   active yet); may write a setup section on c.
 *   pass_begin      before each precopy pass, all participants first;
 *   save_iterate    the pass itself: send what changed (may write on c);
 *   pass_end        after the pass, in reverse order, before the sync;
 *   sync            the log sync closing a pass (and once after the stop):
 *                   adds the bytes dirtied since the last sync to *dirtied;
 *   pending         what is left to send, added to *precopy (can go while
 *                   the guest runs) and *stopcopy (only after the stop): the
 *                   convergence estimate sums every participant's;
 *   ready           when the estimate says the rest fits the downtime: false
 *                   while the participant does not let the guest stop yet
 *                   (switchover-ack: the destination has not acknowledged);
 *                   the iteration runs another pass. May wait briefly.
 *   save_complete   after the vCPUs stopped: the rest of the state. With
 *                   postcopy (ferry_parts_walk): participants marked
 *                   FERRY_PART_BEFORE_RUN complete first, on the main
 *                   channel, before LISTEN (their state may be large and
 *                   must be whole before the destination runs); those
 *                   marked FERRY_PART_POSTCOPY are skipped (their rest goes
 *                   after the switch); the others' complete runs into the
 *                   switch package (capped at FERRY_PC_PACKAGE_MAX);
 *   save_cleanup    once, at the end (any outcome), in reverse order; also
 *                   after a failed save_setup.
 * A NULL handler is skipped. Return values are 0 or a negative errno (the
 * participant recorded the message with ferry__mig_set_error); the first
 * error stops the walk.
 *
 * DESIGN (destination), in the order mig/dst/main calls the handlers:
 *   load_setup      before the stream's first section;
 *   load            one section body, read from c: a START or FULL section
 *                   whose name is the participant's `section` (NULL: the
 *                   participant that loads devices by name, tried last),
 *                   or a PART/END section continuing the participant's
 *                   START (by section id; ferry__parts_load finds it and
 *                   checks the footer after the body);
 *   load_start      at SWITCHOVER_START (the source's vCPUs stopped): what
 *                   must run before state arrives (live devices: their
 *                   load threads);
 *   load_buf        a buffer of the participant's state with its carrier's
 *                   header (ferry_part_buf: device number, index, flags),
 *                   in any index order: the participant reorders. Live
 *                   devices' main-channel records reach it from their
 *                   section body; multifd device-state packets from
 *                   mig/dst/recv_N through the table (ferry__parts_load_buf),
 *                   concurrently with mig/dst/main;
 *   load_complete   at EOF, before the vCPUs start: what the participant
 *                   still has to finish (live devices: wait for their load
 *                   threads, apply their config). With postcopy, once the
 *                   package (and its RUN) is loaded, before the vCPUs
 *                   start, for every participant but FERRY_PART_POSTCOPY
 *                   ones; never at the background stream's EOF;
 *   load_cleanup    at the end (any outcome), in reverse order; status
 *                   COMPLETED is already set when the migration succeeded.
 * Every handler reads hostile input: it checks each field before use and
 * fails on c (ferry__chan_fail) with a message naming what was wrong.
 *
 * Live devices (live-dev.c, FERRY_PART_BEFORE_RUN): save_iterate sends
 * PRE_COPY devices' data while the guest runs; pending reports their
 * precopy and stop-copy bytes; save_complete starts a save thread per
 * device and returns, and the driver then waits for them through
 * complete_wait before EOF (postcopy: before LISTEN); load_buf receives
 * the devices' buffers on the destination.
 *
 * Thread: every handler runs on the driver's main thread (mig/src/main or
 * mig/dst/main) unless its participant starts threads of its own; after a
 * postcopy switch, the destination's background PART sections load on
 * mig/dst/listen while mig/dst/main loads the package through a copy of the
 * table (and then calls load_complete on that copy). The table is built
 * before the migration starts; only `started`
 * changes while it runs, on the thread that loads START sections.
 */
#ifndef FERRY_MIGRATION_PARTICIPANT_H
#define FERRY_MIGRATION_PARTICIPANT_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"
#include "stream/chan.h"

/* A section as the destination read its header (stream/wire.h). */
typedef struct ferry_section {
	uint8_t type;       /* FERRY_REC_SECTION_START, _PART, _END or _FULL */
	uint32_t id;
	const char *idstr;  /* START/FULL: its name; PART/END: the participant's `section` */
	uint32_t instance;  /* START/FULL only */
	uint32_t version;   /* START/FULL only */
} ferry_section;

/*
 * A buffer of a participant's state as a carrier delivers it. data is
 * malloc'd; load_buf takes it (frees it, also on error).
 */
typedef struct ferry_part_buf {
	uint32_t dev;    /* the participant's own numbering (live devices: setup order) */
	uint32_t index;
	uint32_t flags;
	uint32_t len;
	void *data;
} ferry_part_buf;

/* The participant's remaining state can be sent after a postcopy switch. */
#define FERRY_PART_POSTCOPY 0x1u
/*
 * Its state must be complete on the destination before the guest runs
 * there, and may be large (more than a postcopy package holds): at a
 * postcopy switch it completes on the main channel before LISTEN.
 */
#define FERRY_PART_BEFORE_RUN 0x2u

typedef struct ferry_participant {
	const char *name;
	unsigned flags; /* FERRY_PART_* */
	/* ---- source ---- */
	int (*save_setup)(void *opaque, ferry_chan *c);
	void (*pass_begin)(void *opaque);
	int (*save_iterate)(void *opaque, ferry_chan *c);
	void (*pass_end)(void *opaque);
	int (*sync)(void *opaque, uint64_t *dirtied);
	void (*pending)(void *opaque, uint64_t *precopy, uint64_t *stopcopy);
	bool (*ready)(void *opaque);
	int (*save_complete)(void *opaque, ferry_chan *c);
	int (*complete_wait)(void *opaque);
	void (*save_cleanup)(void *opaque);
	/* ---- destination ---- */
	const char *section; /* the name of its sections (NULL: devices, by their names) */
	int (*load_setup)(void *opaque);
	int (*load)(void *opaque, ferry_chan *c, const ferry_section *s);
	int (*load_start)(void *opaque, ferry_chan *c);
	int (*load_buf)(void *opaque, ferry_chan *c, ferry_part_buf *b);
	int (*load_complete)(void *opaque, ferry_chan *c);
	void (*load_cleanup)(void *opaque);
} ferry_participant;

#define FERRY_PARTS_MAX 8

/* The participants of one migration, in registration (= call) order. */
typedef struct ferry_parts {
	unsigned n;
	struct {
		const ferry_participant *ops;
		void *opaque;
		bool started;        /* destination: its START section was loaded */
		uint32_t section_id; /* that section's id */
	} p[FERRY_PARTS_MAX];
} ferry_parts;

/* Adds a participant; -ENOSPC when the table is full. */
int ferry__parts_add(ferry_parts *t, const ferry_participant *ops, void *opaque);

/* Source walks (mig/src/main). */
int ferry__parts_save_setup(ferry_parts *t, ferry_chan *c);
/* One pass: pass_begin, save_iterate, pass_end (the log sync is ferry__parts_sync). */
int ferry__parts_pass(ferry_parts *t, ferry_chan *c);
int ferry__parts_sync(ferry_parts *t, uint64_t *dirtied);
/* Bytes still to send, precopy plus stop-copy (each also returned if asked). */
uint64_t ferry__parts_pending(ferry_parts *t, uint64_t *precopy, uint64_t *stopcopy);
/* Whether every participant lets the guest stop now (ready; NULL: yes). */
bool ferry__parts_ready(ferry_parts *t);
/*
 * Which participants a completion walk runs: precopy's all of them; a
 * postcopy switch first the FERRY_PART_BEFORE_RUN ones (before LISTEN),
 * then, into the package, those neither BEFORE_RUN nor POSTCOPY.
 */
typedef enum ferry_parts_walk {
	FERRY_WALK_ALL,
	FERRY_WALK_BEFORE_RUN,
	FERRY_WALK_PACKAGE,
} ferry_parts_walk;
/* save_complete, then complete_wait, of the walk's participants. */
int ferry__parts_save_complete(ferry_parts *t, ferry_chan *c, ferry_parts_walk walk);
void ferry__parts_save_cleanup(ferry_parts *t);

/*
 * Destination (mig/dst/main, and mig/dst/listen for the postcopy package).
 * ferry__parts_load: a START or FULL section to the participant it names,
 * then its footer. ferry__parts_find: the participant whose START had
 * section id `id` (PART/END continue it), or the negative errno of failing
 * on c with "section N continued before it started"; ferry__parts_load_at loads such
 * a section there, then its footer. 0 or a negative errno (failed on c).
 */
int ferry__parts_load(ferry_parts *t, ferry_chan *c, ferry_section *s);
int ferry__parts_find(ferry_parts *t, ferry_chan *c, uint32_t id);
int ferry__parts_load_at(ferry_parts *t, int k, ferry_chan *c, ferry_section *s);
/*
 * The other destination walks (mig/dst/main): load_setup before the
 * stream, load_complete at its EOF (c: the main channel, for messages),
 * load_cleanup at the end (reverse order). 0 or a negative errno.
 */
int ferry__parts_load_setup(ferry_parts *t);
/* SWITCHOVER_START (mig/dst/main): every load_start. */
int ferry__parts_load_start(ferry_parts *t, ferry_chan *c);
/*
 * A buffer from a carrier outside the main stream (multifd device-state
 * packets; mig/dst/recv_N) to the participant that loads buffers (has a
 * load_buf); fails on c when none does. Takes b->data.
 */
int ferry__parts_load_buf(ferry_parts *t, ferry_chan *c, ferry_part_buf *b);
/* postcopy: after the package, skipping FERRY_PART_POSTCOPY participants. */
int ferry__parts_load_complete(ferry_parts *t, ferry_chan *c, bool postcopy);
void ferry__parts_load_cleanup(ferry_parts *t);

/*
 * Device vmsd helpers shared by the participants that save one:
 * ferry__vmsd_save encodes vmsd over opaque into a malloc'd *buf (caller
 * frees) and records the error as "cannot save device 'ID' instance N:
 * ..." on m; ferry__vmsd_apply decodes len bytes into it on mig/dst/main,
 * with RAM complete (placement ended) and under vm->run_lock, the
 * decoder's message (if it gave one) in *err.
 */
struct ferry_migration;
int ferry__vmsd_save(struct ferry_migration *m, const char *id, uint32_t instance,
		     const ferry_vmsd *vmsd, void *opaque, uint8_t **buf, uint32_t *len);
int ferry__vmsd_apply(ferry_vm_t *vm, const ferry_vmsd *vmsd, void *opaque, uint32_t version,
		      const uint8_t *buf, uint32_t len, ferry_error *err);

/*
 * The built-in participants. opaque: RAM's is the side's ferry_ram_saver
 * (source) or ferry_ram_loader (destination); hints' the saver; device
 * state's the migration.
 */
extern const ferry_participant ferry__ram_participant;   /* ram.c */
extern const ferry_participant ferry__hints_participant; /* participant.c */
extern const ferry_participant ferry__vmsd_participant;  /* participant.c */
extern const ferry_participant ferry__live_participant;  /* live-dev.c; opaque: the migration */
extern const ferry_participant ferry__swack_participant; /* swack.c; opaque: the migration */

#endif
