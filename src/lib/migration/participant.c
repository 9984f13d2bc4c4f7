/* SPDX-License-Identifier: MIT */
/*
 * The participant table's walks (participant.h), and the two small
 * built-in participants: device vmsd state and free page hints. RAM's
 * handlers live with the saver in ram.c.
 *
 * Thread: the walks run on the driver's main thread (mig/src/main on the
 * source); the table is not changed while they run, so it takes no lock.
 */
#include "migration/participant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration/mig.h"
#include "migration/place.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "util/bufpool.h"

int ferry__parts_add(ferry_parts *t, const ferry_participant *ops, void *opaque)
{
	if (t->n == FERRY_PARTS_MAX)
		return -ENOSPC;
	t->p[t->n].ops = ops;
	t->p[t->n].opaque = opaque;
	t->n++;
	return 0;
}

int ferry__parts_save_setup(ferry_parts *t, ferry_chan *c)
{
	int r = 0;
	for (unsigned i = 0; i < t->n && !r; i++)
		if (t->p[i].ops->save_setup)
			r = t->p[i].ops->save_setup(t->p[i].opaque, c);
	return r;
}

int ferry__parts_sync(ferry_parts *t, uint64_t *dirtied)
{
	int r = 0;
	uint64_t d = 0;
	for (unsigned i = 0; i < t->n && !r; i++)
		if (t->p[i].ops->sync)
			r = t->p[i].ops->sync(t->p[i].opaque, &d);
	if (dirtied)
		*dirtied = d;
	return r;
}

int ferry__parts_pass(ferry_parts *t, ferry_chan *c)
{
	int r = 0;
	for (unsigned i = 0; i < t->n; i++)
		if (t->p[i].ops->pass_begin)
			t->p[i].ops->pass_begin(t->p[i].opaque);
	for (unsigned i = 0; i < t->n && !r; i++)
		if (t->p[i].ops->save_iterate)
			r = t->p[i].ops->save_iterate(t->p[i].opaque, c);
	for (unsigned i = t->n; i-- > 0;)
		if (t->p[i].ops->pass_end)
			t->p[i].ops->pass_end(t->p[i].opaque);
	return r;
}

uint64_t ferry__parts_pending(ferry_parts *t, uint64_t *precopy, uint64_t *stopcopy)
{
	uint64_t pre = 0, stop = 0;
	for (unsigned i = 0; i < t->n; i++)
		if (t->p[i].ops->pending)
			t->p[i].ops->pending(t->p[i].opaque, &pre, &stop);
	if (precopy)
		*precopy = pre;
	if (stopcopy)
		*stopcopy = stop;
	return pre + stop;
}

bool ferry__parts_ready(ferry_parts *t)
{
	for (unsigned i = 0; i < t->n; i++)
		if (t->p[i].ops->ready && !t->p[i].ops->ready(t->p[i].opaque))
			return false;
	return true;
}

/* Whether walk runs the participant flagged flags. */
static bool in_walk(unsigned flags, ferry_parts_walk walk)
{
	switch (walk) {
	case FERRY_WALK_BEFORE_RUN:
		return flags & FERRY_PART_BEFORE_RUN;
	case FERRY_WALK_PACKAGE:
		return !(flags & (FERRY_PART_BEFORE_RUN | FERRY_PART_POSTCOPY));
	default:
		return true;
	}
}

int ferry__parts_save_complete(ferry_parts *t, ferry_chan *c, ferry_parts_walk walk)
{
	int r = 0;
	for (unsigned i = 0; i < t->n && !r; i++) {
		const ferry_participant *ops = t->p[i].ops;
		if (ops->save_complete && in_walk(ops->flags, walk))
			r = ops->save_complete(t->p[i].opaque, c);
	}
	/*
	 * Participants whose complete went on in threads of their own; not
	 * after a failure (another's section may be open on c): save_cleanup
	 * stops their threads.
	 */
	for (unsigned i = 0; i < t->n && !r; i++) {
		const ferry_participant *ops = t->p[i].ops;
		if (ops->complete_wait && in_walk(ops->flags, walk))
			r = ops->complete_wait(t->p[i].opaque);
	}
	return r;
}

void ferry__parts_save_cleanup(ferry_parts *t)
{
	for (unsigned i = t->n; i-- > 0;)
		if (t->p[i].ops->save_cleanup)
			t->p[i].ops->save_cleanup(t->p[i].opaque);
}

/* The participant that loads START/FULL sections named idstr: by name, else devices' (-1: none). */
static int load_owner(ferry_parts *t, const char *idstr)
{
	int any = -1;
	for (unsigned i = 0; i < t->n; i++) {
		const ferry_participant *ops = t->p[i].ops;
		if (!ops->load)
			continue;
		if (ops->section && !strcmp(ops->section, idstr))
			return (int)i;
		if (!ops->section && any < 0)
			any = (int)i;
	}
	return any;
}

int ferry__parts_load(ferry_parts *t, ferry_chan *c, ferry_section *s)
{
	int k = load_owner(t, s->idstr);
	if (k < 0)
		return ferry__chan_fail(c, FERRY_EMISMATCH, "unknown section '%s' instance %u",
					s->idstr, s->instance);
	int r = ferry__parts_load_at(t, k, c, s);
	if (!r && s->type == FERRY_REC_SECTION_START) {
		t->p[k].started = true;
		t->p[k].section_id = s->id;
	}
	return r;
}

int ferry__parts_find(ferry_parts *t, ferry_chan *c, uint32_t id)
{
	for (unsigned i = 0; i < t->n; i++)
		if (t->p[i].started && t->p[i].section_id == id)
			return (int)i;
	return ferry__chan_fail(c, FERRY_EBADSTREAM, "section %u continued before it started", id);
}

int ferry__parts_load_at(ferry_parts *t, int k, ferry_chan *c, ferry_section *s)
{
	if (s->type == FERRY_REC_SECTION_PART || s->type == FERRY_REC_SECTION_END)
		s->idstr = t->p[k].ops->section;
	int r = t->p[k].ops->load(t->p[k].opaque, c, s);
	return r ? r : ferry__wire_get_footer(c, s->id);
}

int ferry__parts_load_setup(ferry_parts *t)
{
	int r = 0;
	for (unsigned i = 0; i < t->n && !r; i++)
		if (t->p[i].ops->load_setup)
			r = t->p[i].ops->load_setup(t->p[i].opaque);
	return r;
}

int ferry__parts_load_start(ferry_parts *t, ferry_chan *c)
{
	int r = 0;
	for (unsigned i = 0; i < t->n && !r; i++)
		if (t->p[i].ops->load_start)
			r = t->p[i].ops->load_start(t->p[i].opaque, c);
	return r;
}

/* Thread: mig/dst/recv_N; reads only the table's ops and opaques (fixed while it runs). */
int ferry__parts_load_buf(ferry_parts *t, ferry_chan *c, ferry_part_buf *b)
{
	for (unsigned i = 0; i < t->n; i++)
		if (t->p[i].ops->load_buf)
			return t->p[i].ops->load_buf(t->p[i].opaque, c, b);
	ferry__buf_put(b->data);
	b->data = NULL;
	return ferry__chan_fail(c, FERRY_EBADSTREAM, "device state %u buffer %u, but nothing loads it",
				b->dev, b->index);
}

int ferry__parts_load_complete(ferry_parts *t, ferry_chan *c, bool postcopy)
{
	int r = 0;
	for (unsigned i = 0; i < t->n && !r; i++) {
		const ferry_participant *ops = t->p[i].ops;
		if (ops->load_complete && !(postcopy && (ops->flags & FERRY_PART_POSTCOPY)))
			r = ops->load_complete(t->p[i].opaque, c);
	}
	return r;
}

void ferry__parts_load_cleanup(ferry_parts *t)
{
	for (unsigned i = t->n; i-- > 0;)
		if (t->p[i].ops->load_cleanup)
			t->p[i].ops->load_cleanup(t->p[i].opaque);
}

/* ---- device vmsd state (opaque: the migration) ---- */

int ferry__vmsd_save(struct ferry_migration *m, const char *id, uint32_t instance,
		     const ferry_vmsd *vmsd, void *opaque, uint8_t **buf, uint32_t *len)
{
	int64_t n = ferry_vmsd_encode(vmsd, opaque, NULL, 0);
	if (n < 0) {
		ferry__mig_set_error(m, (int)n, "cannot save device '%s' instance %u: %s", id, instance,
				     ferry_strerror((int)n));
		return (int)n;
	}
	if ((uint64_t)n > FERRY_DEVICE_STATE_MAX) {
		ferry__mig_set_error(m, -E2BIG, "device '%s' state is %lld bytes (max %u)", id,
				     (long long)n, FERRY_DEVICE_STATE_MAX);
		return -E2BIG;
	}
	uint8_t *b = malloc((size_t)n ? (size_t)n : 1);
	if (!b)
		return -ENOMEM;
	int64_t k = ferry_vmsd_encode(vmsd, opaque, b, (size_t)n);
	if (k != n) {
		free(b);
		ferry__mig_set_error(m, -EIO, "device '%s' state changed size while saved", id);
		return -EIO;
	}
	*buf = b;
	*len = (uint32_t)n;
	return 0;
}

int ferry__vmsd_apply(ferry_vm_t *vm, const ferry_vmsd *vmsd, void *opaque, uint32_t version,
		      const uint8_t *buf, uint32_t len, ferry_error *err)
{
	char msg[sizeof(err->msg)] = "";
	/* RAM is complete before any device state: ordinary memory from here. */
	ferry__place_end(vm);
	ferry__vm_run_lock_polite(vm);
	int r = ferry_vmsd_decode(vmsd, opaque, version, buf, len, msg, sizeof(msg));
	pthread_mutex_unlock(&vm->run_lock);
	if (r && msg[0])
		ferry__error_set(err, r, "%s", msg);
	return r;
}

/* Every device's vmsd as FULL sections on c, in registration order; vCPUs stopped. */
static int vmsd_save_complete(void *opaque, ferry_chan *c)
{
	struct ferry_migration *m = opaque;
	ferry_vm_t *vm = m->vm;
	for (unsigned i = 0; i < vm->ndevices; i++) {
		struct ferry_device *d = &vm->devices[i];
		uint8_t *buf;
		uint32_t n;
		int r = ferry__vmsd_save(m, d->id, d->instance, d->vmsd, d->opaque, &buf, &n);
		if (r)
			return r;
		uint32_t id = FERRY_SECTION_RAM + 1 + i;
		ferry__wire_put_section_start(c, FERRY_REC_SECTION_FULL, id, d->id, d->instance,
					      d->vmsd->version);
		ferry__wire_put_device_state(c, id, buf, n);
		ferry__wire_put_footer(c, id);
		free(buf);
	}
	return 0;
}

/* A device's FULL section: its vmsd, applied under run_lock (mig/dst/main). */
static int vmsd_load(void *opaque, ferry_chan *c, const ferry_section *s)
{
	struct ferry_migration *m = opaque;
	ferry_vm_t *vm = m->vm;
	struct ferry_device *d = NULL;
	if (s->type != FERRY_REC_SECTION_FULL)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"device '%s' sent as an iterative section", s->idstr);
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (!strcmp(vm->devices[i].id, s->idstr) && vm->devices[i].instance == s->instance)
			d = &vm->devices[i];
	ferry__chan_ctx_name(c, "device state");
	if (!d)
		return ferry__chan_fail(c, FERRY_EMISMATCH, "unknown device '%s' instance %u",
					s->idstr, s->instance);
	uint32_t len;
	uint64_t sum;
	int r = ferry__wire_get_device_len(c, &len);
	if (r || (r = ferry__wire_get_sum(c, &sum)))
		return r;
	if (len > FERRY_DEVICE_STATE_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "device '%s' state of %u bytes (max %u)",
					s->idstr, len, FERRY_DEVICE_STATE_MAX);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return ferry__chan_fail(c, -ENOMEM, "out of memory for device state");
	char what[FERRY_NAME_MAX + 40];
	snprintf(what, sizeof(what), "device '%s' instance %u", s->idstr, s->instance);
	if ((r = ferry__chan_read(c, buf, len)) ||
	    (r = ferry__wire_check_sum(c, buf, len, s->id, sum, what))) {
		free(buf);
		return r;
	}
	ferry_error e = { 0 };
	r = ferry__vmsd_apply(vm, d->vmsd, d->opaque, s->version, buf, len, &e);
	free(buf);
	if (r)
		return ferry__chan_fail(c, r, "device '%s' instance %u: %s", s->idstr, s->instance,
					ferry__error_text(&e, r));
	return 0;
}

const ferry_participant ferry__vmsd_participant = {
	.name = "vmsd",
	.save_complete = vmsd_save_complete,
	.load = vmsd_load,
};

/* ---- free page hints (opaque: the RAM saver) ---- */

/*
 * Before RAM's setup (it is registered first): takes the VM's hint provider
 * when free-page-hints is on, and asks RAM to protect all of itself.
 */
static int hints_save_setup(void *opaque, ferry_chan *c)
{
	ferry_ram_saver *rs = opaque;
	ferry_migration_params p;
	(void)c;
	ferry__mig_params(rs->m, &p);
	ferry__ram_hints_setup(rs, &p);
	return 0;
}

static void hints_pass_begin(void *opaque)
{
	ferry__ram_hints_begin(opaque); /* a new command id, after the last sync */
}

static void hints_pass_end(void *opaque)
{
	ferry__ram_hints_end(opaque); /* before the sync: that id's hints expire */
}

const ferry_participant ferry__hints_participant = {
	.name = "free-page-hints",
	.save_setup = hints_save_setup,
	.pass_begin = hints_pass_begin,
	.pass_end = hints_pass_end,
};
