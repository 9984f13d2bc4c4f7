/* SPDX-License-Identifier: MIT */
/*
 * Capability switchover-ack (QEMU's name and protocol): the source does
 * not stop the guest before the destination acknowledged, on the return
 * path, that every PRE_COPY live device's initial data is loaded.
 *
 * DESIGN (QEMU's migration/savevm.c: switchover_ack_pending_num,
 * qemu_loadvm_approve_switchover, MIG_RP_MSG_SWITCHOVER_ACK):
 *   source       save_setup sends the section "switchover-ack" (FULL, empty
 *                body) when the capability is on: the destination learns
 *                that the source waits. ready (the convergence check, per
 *                pass) is false until the return path brought
 *                SWITCHOVER_ACK; it waits up to READY_WAIT_MS for it, so a
 *                source that converged does not spin passes.
 *   destination  the live devices' load_setup counts the PRE_COPY devices
 *                (ferry__swack_need); each approves once its initial data
 *                is written (ferry__swack_approve). SWITCHOVER_ACK goes once
 *                the source asked and none is pending: at once without
 *                PRE_COPY devices. A destination without the capability
 *                refuses the section; one with it whose source did not ask
 *                just sends no ack (QEMU's source ignores an unasked one).
 * Postcopy: the switch to postcopy does not wait for the ack (the live
 * devices' state completes at the switch anyway, before the destination
 * runs).
 *
 * Thread: source handlers on mig/src/main, the message on mig/src/rp
 * (m->swack_acked under rp_lock); destination all on mig/dst/main (its
 * fields are that thread's; the ack is written on the main channel's
 * return path by it alone, as PONG and SHUT are).
 */
#include "migration/swack.h"

#include <errno.h>
#include <time.h>

#include "migration/mig.h"
#include "stream/format.h"
#include "stream/wire.h"

/* How long a converged source waits for the ack before it runs another pass. */
#define READY_WAIT_MS 20

#define MISMATCH_SRC "the source asks for switchover-ack but switchover-ack is not enabled " \
		     "on the destination"

/* The capability: the source's parameters; the destination's as set now (also after the listen). */
static bool cap_on(struct ferry_migration *m)
{
	ferry_migration_params p;
	if (!m->incoming) {
		ferry__mig_params(m, &p);
		return p.switchover_ack;
	}
	pthread_mutex_lock(&m->vm->mig_lock);
	bool on = m->vm->in_params.switchover_ack;
	pthread_mutex_unlock(&m->vm->mig_lock);
	return on;
}

/* save_setup: the section that asks the destination for the ack. */
static int swack_save_setup(void *opaque, ferry_chan *c)
{
	struct ferry_migration *m = opaque;
	if (!(m->swack_asked = cap_on(m)))
		return 0;
	pthread_mutex_lock(&m->rp_lock);
	m->swack_acked = false;
	pthread_mutex_unlock(&m->rp_lock);
	uint32_t id = FERRY_SECTION_RAM + 2 + m->vm->ndevices; /* after the live devices' */
	ferry__wire_put_section_start(c, FERRY_REC_SECTION_FULL, id, FERRY_SWACK_IDSTR, 0,
				      FERRY_SWACK_VERSION);
	ferry__wire_put_footer(c, id);
	return 0;
}

/* ready: the ack arrived (or is not asked for); waits up to READY_WAIT_MS. */
static bool swack_ready(void *opaque)
{
	struct ferry_migration *m = opaque;
	if (!m->swack_asked)
		return true;
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl); /* rp_cond's clock */
	dl.tv_nsec += READY_WAIT_MS * 1000000L;
	dl.tv_sec += dl.tv_nsec / 1000000000L;
	dl.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&m->rp_lock);
	while (!m->swack_acked && !m->rp_dead && !ferry__mig_cancelled(m))
		if (pthread_cond_timedwait(&m->rp_cond, &m->rp_lock, &dl))
			break;
	bool acked = m->swack_acked;
	pthread_mutex_unlock(&m->rp_lock);
	return acked;
}

int ferry__swack_src_rp_msg(struct ferry_migration *m, uint16_t type, size_t len)
{
	if (type != FERRY_RP_SWITCHOVER_ACK || len)
		return -ENOMSG;
	pthread_mutex_lock(&m->rp_lock);
	m->swack_acked = true;
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
	return 0;
}

/* The ack, once: the source asked and no device is pending (mig/dst/main). */
static int maybe_ack(struct ferry_migration *m, ferry_chan *c)
{
	if (!m->swack_asked || m->swack_pending || m->swack_sent)
		return 0;
	m->swack_sent = true;
	ferry__wire_put_rp(c, FERRY_RP_SWITCHOVER_ACK, NULL, 0, NULL, 0);
	return ferry__chan_flush(c);
}

void ferry__swack_need(struct ferry_migration *m, unsigned n)
{
	m->swack_pending = n;
}

int ferry__swack_approve(struct ferry_migration *m, ferry_chan *c)
{
	if (m->swack_pending)
		m->swack_pending--;
	return maybe_ack(m, c);
}

/* load: the source's section "switchover-ack"; this side must have it on. */
static int swack_load(void *opaque, ferry_chan *c, const ferry_section *s)
{
	struct ferry_migration *m = opaque;
	if (s->type != FERRY_REC_SECTION_FULL || m->swack_asked)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "switchover-ack sent as section type %u%s",
					s->type, m->swack_asked ? " twice" : "");
	if (s->version != FERRY_SWACK_VERSION)
		return ferry__chan_fail(c, FERRY_EVERSION, "switchover-ack section version %u "
					"(supported: %u)", s->version, FERRY_SWACK_VERSION);
	if (!cap_on(m))
		return ferry__chan_fail_msg(c, FERRY_EMISMATCH, MISMATCH_SRC);
	m->swack_asked = true;
	return maybe_ack(m, c);
}

const ferry_participant ferry__swack_participant = {
	.name = "switchover-ack",
	.save_setup = swack_save_setup,
	.ready = swack_ready,
	.section = FERRY_SWACK_IDSTR,
	.load = swack_load,
};
