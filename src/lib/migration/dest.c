/* SPDX-License-Identifier: MIT */
/*
 * The incoming (destination) side of a migration: the driver.
 *
 * DESIGN: ferry__dest_thread (mig/dst/main) runs the phases in order over
 * one context (ferry_dst, dest.h):
 *   connect    accept the connection (or take a given fd)
 *   setup      register the participants that load sections (RAM,
 *              devices: participant.h) and decide the page placement
 *   negotiate  check the stream header
 *   load       records until EOF: sections to their participant
 *              (ferry__parts_load: RAM to ram-load.c, which places through
 *              place.c; device state to each device's vmsd), commands
 *              (postcopy's go to postcopy-dst.c); multifd channels are
 *              received and placed by mig/dst/recv_N (multifd.c)
 *   package    postcopy only: the device state of PACKAGE (postcopy-dst.c)
 *   start      the vCPUs, if the source's ran
 *   postcopy   postcopy only: the guest runs while pages fault in
 *   complete   SHUT(0) on the return path tells the source
 *   fail       or SHUT(error, message), and postcopy's guest is stopped
 *   cleanup    always
 * Everything from the stream is hostile: each length and index is checked
 * before use, and the first violation ends the migration with a message
 * naming the stream offset and the record.
 *
 * Thread: all of this file runs on mig/dst/main, except ferry__dst_stats,
 * ferry__dst_load_section and ferry__dst_load_command, which postcopy also
 * calls on mig/dst/listen (for the background stream; mig/dst/main then
 * waits for it) and for the package. RAM is loaded without any lock;
 * applying device state and starting the vCPUs take vm->run_lock.
 * Publishing m->mf_recv and m->pc_dst takes vm->mig_lock (cancel reads
 * them), progress takes m->stats_lock and then mf.lock. The control plane
 * is never blocked by loading: it only reads progress under stats_lock and
 * may cancel (shutdown of the socket).
 */
#include "migration/dest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/multifd.h"
#include "migration/place.h"
#include "util/kcopy.h"
#include "migration/postcopy-dst.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "transport/transport.h"

static void send_shut(ferry_chan *c, int status, const char *msg)
{
	ferry__wire_put_rp_shut(c, status, msg);
	ferry__chan_flush(c);
}

void ferry__dst_mark_bytes(ferry_dst *l, uint64_t *mark)
{
	ferry__dst_stats(l);
	pthread_mutex_lock(&l->m->stats_lock);
	*mark = l->m->info.transferred;
	pthread_mutex_unlock(&l->m->stats_lock);
}

/* The checksum counters (stream/sum.h) into query-migrate's figures; takes stats_lock. */
static void sum_stats(struct ferry_migration *m)
{
	pthread_mutex_lock(&m->stats_lock);
	m->info.verified_bytes = atomic_load(&m->sums.verified);
	m->info.checksum_mismatches = atomic_load(&m->sums.mismatches);
	pthread_mutex_unlock(&m->stats_lock);
}

/*
 * Thread: mig/dst/main or mig/dst/listen (never both at once), while
 * mig/dst/preempt may be counting pre_ram.
 */
void ferry__dst_stats(ferry_dst *l)
{
	struct ferry_migration *m = l->m;
	pthread_mutex_lock(&m->stats_lock);
	m->info.transferred = l->c->in_offset;
	m->info.normal = atomic_load_explicit(&l->ram.pages, memory_order_relaxed) +
			 atomic_load_explicit(&l->pre_ram.pages, memory_order_relaxed);
	m->info.duplicate = atomic_load_explicit(&l->ram.zeros, memory_order_relaxed) +
			    atomic_load_explicit(&l->pre_ram.zeros, memory_order_relaxed);
	if (l->mf_on) {
		pthread_mutex_lock(&l->mf.lock);
		m->info.normal += l->mf.pages;
		m->info.duplicate += l->mf.zeros;
		m->info.multifd_channels = l->mf.n;
		m->info.multifd_bytes = 0;
		for (unsigned i = 0; i < l->mf.n; i++) {
			m->info.channel_bytes[i] = l->mf.ch[i].in.in_offset;
			m->info.multifd_bytes += l->mf.ch[i].in.in_offset;
		}
		pthread_mutex_unlock(&l->mf.lock);
		m->info.transferred += m->info.multifd_bytes;
	}
	m->info.normal_bytes = m->info.normal * FERRY_PAGE_SIZE;
	pthread_mutex_unlock(&m->stats_lock);
	sum_stats(m);
}

int ferry__dst_load_section(ferry_dst *l, uint8_t type)
{
	ferry_chan *c = l->c;
	char idstr[FERRY_NAME_MAX + 1];
	ferry_section s = { .type = type, .idstr = idstr };
	ferry__chan_ctx_name(c, type == FERRY_REC_SECTION_FULL ? "section full" : "section start");
	int r = ferry__wire_get_section_start(c, &s.id, idstr, &s.instance, &s.version);
	return r ? r : ferry__parts_load(&l->parts, c, &s);
}

/* Joins the receive threads (all pages are placed once the stream ended). */
void ferry__dst_mf_stop(ferry_dst *l)
{
	if (!l->mf_on)
		return;
	pthread_mutex_lock(&l->m->vm->mig_lock);
	l->m->mf_recv = NULL;
	pthread_mutex_unlock(&l->m->vm->mig_lock);
	ferry__mf_recv_stop(&l->mf);
	l->mf_on = false;
}

/* MULTIFD (payload buf): accepts the channels and starts their receivers. */
static int cmd_multifd(ferry_dst *l, const uint8_t *buf)
{
	struct ferry_migration *m = l->m;
	ferry_chan *c = l->c;
	uint32_t n;
	uint8_t comp;
	ferry__wire_cmd_multifd_decode(buf, &n, &comp);
	if (l->mf_on || l->ram.started)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "multifd announced twice or late");
	if (n < 1 || n > FERRY_MULTIFD_MAX_CHANNELS || comp > FERRY_COMPRESS_ZSTD)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "multifd with %u channels, compression %u",
					n, comp);
	l->mf_on = true;
	l->ram.mf = &l->mf; /* RAM's sections wait for the channels' pages too */
	ferry_error e = { 0 };
	int r = ferry__mf_recv_start(&l->mf, m, &l->parts, m->listen_fd, l->uuid, n, comp, &e);
	if (r)
		return ferry__chan_fail(c, r, "%s", ferry__error_text(&e, r));
	/* Published only now: cancel may shut the channels down from here on. */
	pthread_mutex_lock(&m->vm->mig_lock);
	m->mf_recv = &l->mf;
	pthread_mutex_unlock(&m->vm->mig_lock);
	return ferry__mig_cancelled(m) ? -ECANCELED : 0;
}

/* DIGEST (payload buf): every guest-data record arrived, once, in order, and verified. */
/*
 * DIGEST (ctl: this side's control hash at its payload): precopy's last
 * command but EOF, or postcopy's right before the PACKAGE, whose hash it
 * carries. Postcopy judges no page here: LISTEN did.
 */
static int cmd_digest(ferry_dst *l, const uint8_t *buf, uint64_t ctl)
{
	ferry_chan *c = l->c;
	ferry_wire_digest d;
	ferry__wire_cmd_digest_decode(buf, &d);
	if (!c->sums || l->digest_seen || (l->pc_listening && l->pkg_fd >= 0))
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "stream digest %s",
					!c->sums ? "in a stream without checksums"
					: l->digest_seen ? "twice" : "after the postcopy package");
	l->digest_seen = true;
	l->pkg_sum = d.package;
	ferry__chan_ctx_name(c, "stream digest");
	return ferry__sum_finish(c, d.records, d.digest, d.ctl, ctl, !l->pc_listening);
}

/*
 * The answer to a PING asking for it (FERRY_PING_LOAD): the stream bytes
 * read so far and the CPU time this side's loading threads (mig/dst/main,
 * the placing threads, and the multifd receive threads as of the pass's
 * sync, which comes before the PING) used on them. The source divides the two
 * between reports: what loading a byte costs here, which the switchover's
 * downtime depends on once the source's vCPUs stop (source.c,
 * downtime_estimate_ns). CPU time, not wall time: waits for input and for
 * a CPU are not this side's work. mig/dst/main.
 */
static int put_load_report(ferry_dst *l, uint32_t value)
{
	uint64_t mf_bytes, mf_cpu;
	ferry__mf_recv_load(&l->mf, &mf_bytes, &mf_cpu);
	uint64_t cpu = ferry__thread_cpu_ns(pthread_self()) - l->load_cpu0 +
		       ferry__placer_cpu_ns(l->ram.placer) + mf_cpu;
	ferry__wire_put_rp_load(l->c, &(ferry_wire_load){ value, l->c->in_offset + mf_bytes, cpu });
	return ferry__chan_flush(l->c);
}

int ferry__dst_load_command(ferry_dst *l)
{
	ferry_chan *c = l->c;
	uint16_t cmd, len;
	uint8_t buf[FERRY_CMD_FIXED_MAX];
	int r;
	ferry__chan_ctx_name(c, "command");
	if ((r = ferry__wire_get_cmd(c, &cmd, &len)))
		return r;
	if (cmd == 0 || cmd >= FERRY_CMD__MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown command %u", cmd);
	if (cmd == FERRY_CMD_POSTCOPY_RESUME)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy resume outside a recovery");
	if (cmd == FERRY_CMD_POSTCOPY_DISCARD)
		return ferry__postcopy_discard(l, len);
	int want = ferry__wire_cmd_len(cmd);
	if (len != want)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "command %u with %u bytes (expected %d)",
					cmd, len, want);
	/* DIGEST compares the control hash up to its payload: taken before it is read. */
	uint64_t ctl = cmd == FERRY_CMD_DIGEST ? ferry__chan_ctl_in(c) : 0;
	if ((r = ferry__chan_read(c, buf, len)))
		return r;
	switch (cmd) {
	case FERRY_CMD_PING:
		if (l->pc_listening) /* other threads write the return path too */
			return ferry__pc_rp_send(l->pc, FERRY_RP_PONG, buf, FERRY_RP_PONG_LEN, NULL, 0);
		if ((ferry__wire_cmd_be32(buf) & FERRY_PING_TAG_MASK) == FERRY_PING_LOAD)
			return put_load_report(l, ferry__wire_cmd_be32(buf));
		ferry__wire_put_rp(c, FERRY_RP_PONG, buf, FERRY_RP_PONG_LEN, NULL, 0);
		return ferry__chan_flush(c);
	case FERRY_CMD_POSTCOPY_ADVISE:
		return ferry__postcopy_advise(l, ferry__wire_cmd_be32(buf));
	case FERRY_CMD_POSTCOPY_LISTEN:
		return ferry__postcopy_listen(l);
	case FERRY_CMD_POSTCOPY_PACKAGE:
		return ferry__postcopy_package_read(l, ferry__wire_cmd_be32(buf));
	case FERRY_CMD_POSTCOPY_RUN:
		return ferry__postcopy_run(l, buf[0]);
	case FERRY_CMD_SWITCHOVER:
		l->m->sw_stop_ns = ferry__now_ns(); /* downtime_device_ms counts from here */
		ferry__dst_mark_bytes(l, &l->m->sw_bytes);
		return 0;
	case FERRY_CMD_SWITCHOVER_START:
		return ferry__parts_load_start(&l->parts, c);
	case FERRY_CMD_VM_STATE:
		if (buf[0] > 1)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "run state %u", buf[0]);
		l->run_after = buf[0];
		return 0;
	case FERRY_CMD_MULTIFD:
		return cmd_multifd(l, buf);
	case FERRY_CMD_DIGEST:
		return cmd_digest(l, buf, ctl);
	}
	return 0;
}

/*
 * Phase negotiate: the stream header (this Ferry's version, page size).
 * The source sends it right after connecting: it must come within the
 * link timeout, or a connection that sends nothing (a port scan, a stuck
 * source) would hold the incoming migration until it is cancelled.
 */
static int dst_negotiate(ferry_dst *l)
{
	ferry_chan *c = l->c;
	ferry_wire_hdr hdr;
	int r;
	l->load_cpu0 = ferry__thread_cpu_ns(pthread_self()); /* load reports count from here */
	ferry__sock_set_read_timeout(c->fd, ferry__mig_link_timeout_ms(l->m));
	ferry__chan_ctx(c, "stream header");
	if ((r = ferry__wire_get_header(c, &hdr)))
		return r;
	ferry__sock_set_read_timeout(c->fd, 0); /* from here the source may pause (passes, devices) */
	if (hdr.magic >> 16 == 0x1603 && !l->m->tls.creds) /* a TLS handshake record */
		return ferry__chan_fail(c, -EPROTO,
					"the source speaks TLS but tls-creds is not set here");
	if (hdr.magic != FERRY_STREAM_MAGIC)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"not a Ferry migration stream (magic 0x%08x)", hdr.magic);
	if (hdr.version != FERRY_STREAM_VERSION && hdr.version != FERRY_STREAM_VERSION_PLAIN)
		return ferry__chan_fail(c, FERRY_EVERSION, "stream version %u (supported: %u, %u)",
					hdr.version, FERRY_STREAM_VERSION_PLAIN, FERRY_STREAM_VERSION);
	if (hdr.version == FERRY_STREAM_VERSION) {
		if ((r = ferry__sums_init(&l->m->sums, l->vm)))
			return ferry__chan_fail(c, r, "out of memory for checksums");
		l->m->sums_on = true;
		ferry__sums_attach(c, &l->m->sums, FERRY_SUM_MAIN);
		ferry__chan_ctl_start(c); /* from the first byte after the header, as the source */
	}
	memcpy(l->uuid, hdr.uuid, FERRY_UUID_LEN);
	if (hdr.page_size != FERRY_PAGE_SIZE)
		return ferry__chan_fail(c, FERRY_EMISMATCH, "page size %u (supported: %u)",
					hdr.page_size, FERRY_PAGE_SIZE);
	ferry__mig_set_status(l->m, FERRY_MIGRATION_ACTIVE);
	return 0;
}

/* Phase load: precopy records until EOF, or until RUN hands over to postcopy. */
static int dst_load_stream(ferry_dst *l)
{
	ferry_chan *c = l->c;
	int r;
	for (;;) {
		uint8_t type;
		ferry__chan_ctx(c, "record");
		if ((r = ferry__wire_get_record(c, &type)))
			return r;
		switch (type) {
		case FERRY_REC_EOF:
			if (!l->ram.started)
				return ferry__chan_fail(c, FERRY_EBADSTREAM,
							"stream ended before the RAM setup section");
			if (c->sums && !l->digest_seen)
				return ferry__chan_fail(c, FERRY_EBADSTREAM,
							"stream ended without its digest");
			if ((r = ferry__postcopy_precopy_end(l)))
				return r;
			return ferry__parts_load_complete(&l->parts, c, false);
		case FERRY_REC_SECTION_START:
		case FERRY_REC_SECTION_FULL:
			r = ferry__dst_load_section(l, type);
			break;
		case FERRY_REC_SECTION_PART:
		case FERRY_REC_SECTION_END: {
			ferry_section sec = { .type = type };
			ferry__chan_ctx_name(c, "section part");
			if ((r = ferry__wire_get_section_id(c, &sec.id)))
				return r;
			int k = ferry__parts_find(&l->parts, c, sec.id);
			if (k < 0)
				return k;
			if (type == FERRY_REC_SECTION_END)
				ferry__mig_set_status(l->m, FERRY_MIGRATION_DEVICE);
			r = ferry__parts_load_at(&l->parts, k, c, &sec);
			break;
		}
		case FERRY_REC_COMMAND:
			r = ferry__dst_load_command(l);
			break;
		case FERRY_REC_CANCELLED:
			return ferry__chan_fail_msg(c, FERRY_EPEER, FERRY_CANCELLED_MSG);
		default:
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown record type 0x%02x",
						type);
		}
		if (r)
			return r;
		ferry__dst_stats(l);
		if (ferry__mig_cancelled(l->m))
			return -ECANCELED;
		if (l->pc_running)
			return 0; /* the rest is postcopy: ferry__postcopy_incoming() */
	}
}

/* Grace for a failed multifd channel's own error after the main connection broke. */
#define MF_GRACE_MS 200

/*
 * The end of the precopy stream (or its failure at r): progress, a multifd
 * channel's error kept for dst_pick_error (waited for up to MF_GRACE_MS:
 * a failing channel shuts the main connection down), and the multifd
 * receive threads joined (every page they had is placed, and nothing
 * they read later can be, once the guest runs). After a good EOF their
 * sockets and buffers are freed only in dst_cleanup, after SHUT: stopping
 * them whole took 0.30-0.42 ms here, half of an idle guest's downtime over
 * multifd (the debug line "switchover here"), 0.19 of it the frees.
 */
static int dst_load_end(ferry_dst *l, int r)
{
	l->eof_ns = ferry__now_ns();
	ferry__dst_stats(l);
	if (!r) {
		if (l->mf_on)
			ferry__mf_recv_quiesce(&l->mf);
		l->end_ns = ferry__now_ns();
		return 0;
	}
	if (l->mf_on && !ferry__mig_cancelled(l->m))
		ferry__mf_recv_wait_error(&l->mf, MF_GRACE_MS, &l->mf_err);
	ferry__dst_mf_stop(l);
	return r;
}

/* Phase connect: accepts the source's connection (or takes the given fd). */
static int dst_connect(ferry_dst *l)
{
	struct ferry_migration *m = l->m;
	ferry_chan *c = l->c;
	int fd = m->chan.fd, r;
	if (m->listen_fd >= 0) {
		/* The listener stays open for multifd channels until the end. */
		r = ferry__sock_accept(m->listen_fd, &fd);
		if (r) {
			if (!ferry__mig_cancelled(m))
				ferry__mig_set_error(m, r, "accept failed: %s", ferry_strerror(r));
			return r;
		}
	}
	r = ferry__chan_init(c, fd);
	if (r) {
		close(fd);
		return r;
	}
	c->peer = "source";
	ferry__mig_watch_peer(m, fd);
	atomic_store(&m->chan_fd, fd);
	ferry_error err = { 0 };
	ferry_migration_params p;
	ferry__mig_params(m, &p);
	if ((r = ferry__tls_cfg_check(&m->tls, &p, true, &err)) ||
	    (r = ferry__chan_tls_open(c, &m->tls, &err))) {
		if (!ferry__mig_cancelled(m))
			ferry__mig_set_error_from(m, &err);
		return r;
	}
	return ferry__mig_cancelled(m) ? -ECANCELED : 0;
}

/* Phase setup: how pages will be placed (place.h), on RAM that holds nothing yet. */
static int dst_setup(ferry_dst *l)
{
	struct ferry_migration *m = l->m;
	ferry_vm_t *vm = l->vm;
	/* Fresh destination RAM is zero: nothing of it was received yet. */
	for (unsigned i = 0; i < vm->nblocks; i++)
		ferry__bitmap_zero(vm->blocks[i]->received, vm->blocks[i]->npages);
	/* What loads sections, in the order they are tried: RAM, then devices. */
	int r = ferry__parts_add(&l->parts, &ferry__ram_participant, &l->ram);
	if (!r)
		r = ferry__parts_add(&l->parts, &ferry__vmsd_participant, m);
	if (!r)
		r = ferry__parts_add(&l->parts, &ferry__live_participant, m);
	if (!r)
		r = ferry__parts_add(&l->parts, &ferry__swack_participant, m);
	if (!r)
		r = ferry__parts_load_setup(&l->parts);
	if (r)
		return r;
	ferry_error perr = { 0 };
	uint32_t placement;
	/* Destination parameters as they are now (set after the listen too). */
	pthread_mutex_lock(&vm->mig_lock);
	uint32_t want = vm->in_params.placement, copy = vm->in_params.user_copy;
	pthread_mutex_unlock(&vm->mig_lock);
	r = ferry__place_setup(vm, want, ferry__kcopy_use(copy), &placement, &perr);
	if (r) {
		ferry__mig_set_error_from(m, &perr);
		return r;
	}
	bool copied = false;
	for (unsigned i = 0; i < vm->nblocks; i++)
		copied |= vm->blocks[i]->place == FERRY_PLACE_COPY;
	pthread_mutex_lock(&m->stats_lock);
	m->info.placement = placement;
	m->info.user_copy = copied;
	pthread_mutex_unlock(&m->stats_lock);
	return 0;
}

/*
 * Phase start: the guest may run again; its vCPUs start if the source's
 * ran, unless the embedder said not to (ferry_migration_set_autostart):
 * then they wait for its ferry_vm_start().
 */
static int dst_start_vcpus(ferry_dst *l)
{
	ferry__postcopy_may_run(l); /* before the guest may run: the source relies on it */
	ferry__vm_own_run(l->vm, false);
	if (!l->run_after || !ferry__vm_autostart(l->vm))
		return 0;
	int r = ferry_vm_start(l->vm);
	if (r) {
		ferry__mig_set_error(l->m, r, "cannot start vCPUs: %s", ferry_strerror(r));
		return r;
	}
	ferry__mig_event(l->m, FERRY_EVENT_RESUME, 0);
	if (!l->pc_running && l->m->sw_stop_ns && l->end_ns) /* precopy: timed (source.c: "stop-copy") */
		ferry_dbg("switchover here: %.2f ms to the stream's end, %.2f ms ending it (multifd), "
			  "%.2f ms to the vCPUs started", (l->eof_ns - l->m->sw_stop_ns) / 1e6,
			  (l->end_ns - l->eof_ns) / 1e6, (ferry__now_ns() - l->end_ns) / 1e6);
	return 0;
}

/* Phase complete: SHUT(0) tells the source that the destination took over. */
static void dst_complete(ferry_dst *l)
{
	send_shut(l->c, 0, NULL);
	ferry__mig_set_status(l->m, FERRY_MIGRATION_COMPLETED);
}

/*
 * Which error the destination reports for a failure r. Candidates, best
 * first (the first one found is recorded):
 *   1. the source said it cancelled (FERRY_EPEER, the only one the stream
 *      carries, on the main channel), also when cancelled here too;
 *   unless cancelled here:
 *   2. a multifd channel's own error (l->mf_err, kept by dst_load_end): a
 *      failing channel shuts the main connection down, so that
 *      connection's EOF is only a symptom;
 *   3. the main channel's error, whose message names record and offset;
 *   4. r's bare text: "incoming migration failed: ...".
 * An error a phase recorded itself before (ferry__mig_set_error: accept,
 * placement, vCPUs, the postcopy package) wins over all of these.
 */
static void dst_pick_error(ferry_dst *l, int r)
{
	ferry_chan *c = l->c;
	ferry_error e = { 0 };
	if (c->in_err.code == FERRY_EPEER)
		ferry__error_copy(&e, &c->in_err);
	if (!ferry__mig_cancelled(l->m)) {
		ferry__error_copy(&e, &l->mf_err);
		ferry__error_copy(&e, &c->in_err);
		if (r)
			ferry__error_set(&e, r, "incoming migration failed: %s", ferry_strerror(r));
	}
	ferry__mig_set_error_from(l->m, &e);
}

/* Phase fail: stops postcopy, records the error and tells the source why. */
static void dst_fail(ferry_dst *l, int r)
{
	struct ferry_migration *m = l->m;
	ferry_chan *c = l->c;
	ferry__postcopy_fail(l);
	dst_pick_error(l, r);
	if (ferry__mig_cancelled(m))
		r = -ECANCELED;
	if (c->fd >= 0 && c->obuf) { /* a paused postcopy may have none left */
		pthread_mutex_lock(&m->stats_lock);
		char msg[256];
		snprintf(msg, sizeof(msg), "%s",
			 r == -ECANCELED ? "migration cancelled on the destination" : m->info.error_desc);
		pthread_mutex_unlock(&m->stats_lock);
		send_shut(c, r, msg);
	}
	ferry__mig_set_status(m, r == -ECANCELED ? FERRY_MIGRATION_CANCELLED : FERRY_MIGRATION_FAILED);
}

/* Phase cleanup, always: closes what the phases opened, in reverse. */
static void dst_cleanup(ferry_dst *l)
{
	struct ferry_migration *m = l->m;
	ferry_vm_t *vm = l->vm;
	ferry_chan *c = l->c;
	if (l->pkg_fd >= 0)
		close(l->pkg_fd);
	ferry__vm_own_run(vm, false);
	ferry__dst_mf_stop(l); /* the receivers hand buffers to participants: gone first */
	sum_stats(m);          /* final: the receivers folded their last pages */
	ferry__parts_load_cleanup(&l->parts);
	ferry__ram_loader_fini(&l->ram);
	ferry__place_fini(vm);
	free(l->ram.bounce);
	pthread_mutex_lock(&vm->mig_lock); /* cancel reads listen_fd under it */
	int lfd = m->listen_fd;
	m->listen_fd = -1;
	pthread_mutex_unlock(&vm->mig_lock);
	if (lfd >= 0)
		close(lfd);
	if (c->fd >= 0 || c->obuf) {
		atomic_store(&m->chan_fd, -1);
		ferry__chan_close(c);
	}
	if (m->sums_on) /* its counters stay for query-migrate */
		ferry__sums_fini(&m->sums);
}

/*
 * Thread: mig/dst/main, the whole incoming migration, one phase after the
 * other. The precopy stream ends at EOF, or at RUN when postcopy takes
 * over; postcopy's phases do nothing when it was not advised.
 */
void *ferry__dest_thread(void *arg)
{
	struct ferry_migration *m = arg;
	ferry_dst d = { .m = m, .vm = m->vm, .c = &m->chan, .pkg_fd = -1 };
	d.ram = (ferry_ram_loader){ .vm = m->vm, .c = &m->chan };
	d.pre.fd = -1;

	pthread_setname_np(pthread_self(), "mig/dst/main");
	/* The guest must not run while its RAM and state arrive. */
	ferry__vm_own_run(m->vm, true);
	int r = dst_connect(&d);
	if (!r)
		r = dst_setup(&d);
	if (!r) {
		r = dst_negotiate(&d);
		if (!r)
			r = dst_load_stream(&d);
		r = dst_load_end(&d, r);
	}
	if (!r) /* a postcopy package: its device state, while mig/dst/listen reads on */
		r = ferry__postcopy_package(&d);
	if (!r)
		r = dst_start_vcpus(&d);
	if (!r) /* the guest runs; its missing pages fault and are fetched */
		r = ferry__postcopy_incoming(&d);
	if (!r)
		dst_complete(&d);
	else
		dst_fail(&d, r);
	dst_cleanup(&d);
	ferry__log_thread_cpu();
	ferry__mig_thread_done(m);
	return NULL;
}
