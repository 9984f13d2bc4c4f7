/* SPDX-License-Identifier: MIT */
/*
 * The incoming (destination) side of a migration.
 *
 * DESIGN: mig/dst/main accepts the connection (or takes a given fd), checks
 * the header and loads records until EOF: RAM sections straight into guest
 * RAM (ram.c), device state (FULL sections) through each device's vmsd,
 * commands. Everything from the stream is hostile: each length and index is
 * checked before use, and the first violation ends the migration with a
 * message naming the stream offset and the record. RAM is loaded without
 * any lock; applying device state and starting the vCPUs take run_lock.
 * When EOF arrives the vCPUs start (if the source ran), and SHUT(0) on the
 * return path tells the source; a failure sends SHUT(error, message).
 *
 * The control plane is never blocked by loading: it only reads progress
 * under stats_lock and may cancel (shutdown of the socket).
 */
#include "migration/mig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/multifd.h"
#include "migration/place.h"
#include "migration/postcopy.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "transport/transport.h"

typedef struct loader {
	struct ferry_migration *m;
	ferry_vm_t *vm;
	ferry_chan *c;
	bool ram_started;
	bool run_after;
	ferry_ram_loader ram;   /* the main channel's RAM loading state */
	uint8_t uuid[16];       /* the source VM's, from the header */
	ferry_mf_receiver mf;   /* when the stream announced multifd */
	bool mf_on;
	/* Postcopy (from ADVISE). */
	ferry_pc_dst *pc;
	bool pc_listening;      /* LISTEN done: RAM is placed, never written */
	bool pc_running;        /* RUN received: the rest comes in postcopy */
	bool pre_on;            /* preempt channel negotiated */
	ferry_chan pre;         /* read by mig/dst/preempt */
	ferry_ram_loader pre_ram;
	pthread_t pre_thread;
	bool pre_started;
	atomic_bool pre_quit;   /* the preempt channel is being closed on purpose */
	int pkg_fd;             /* PACKAGE received: its bytes in a memfd, or -1 */
	uint32_t pkg_len;
	int listen_r;           /* mig/dst/listen's result */
} loader;

static void send_shut(ferry_chan *c, int status, const char *msg)
{
	ferry__wire_put_rp_shut(c, status, msg);
	ferry__chan_flush(c);
}

static void load_stats(loader *l)
{
	struct ferry_migration *m = l->m;
	pthread_mutex_lock(&m->stats_lock);
	m->info.transferred = l->c->in_offset;
	m->info.normal = l->ram.pages + l->pre_ram.pages;
	m->info.duplicate = l->ram.zeros + l->pre_ram.zeros;
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
}

static int check_footer(loader *l, uint32_t id)
{
	return ferry__wire_get_footer(l->c, id);
}

static int load_device(loader *l, uint32_t id, const char *idstr, uint32_t inst, uint32_t ver)
{
	ferry_chan *c = l->c;
	ferry_vm_t *vm = l->vm;
	struct ferry_device *d = NULL;
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (!strcmp(vm->devices[i].id, idstr) && vm->devices[i].instance == inst)
			d = &vm->devices[i];
	ferry__chan_ctx_name(c, "device state");
	if (!d)
		return ferry__chan_fail(c, FERRY_EMISMATCH,
					"unknown device '%s' instance %u", idstr, inst);
	uint32_t len;
	int r = ferry__wire_get_device_len(c, &len);
	if (r)
		return r;
	if (len > FERRY_DEVICE_STATE_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"device '%s' state of %u bytes (max %u)", idstr, len,
					FERRY_DEVICE_STATE_MAX);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return ferry__chan_fail(c, -ENOMEM, "out of memory for device state");
	if ((r = ferry__chan_read(c, buf, len))) {
		free(buf);
		return r;
	}
	char msg[200] = "";
	/* RAM is complete before any device state: ordinary memory from here. */
	ferry__place_end(vm);
	/* Device state is applied under run_lock: the only lock loading takes. */
	pthread_mutex_lock(&vm->run_lock);
	r = ferry_vmsd_decode(d->vmsd, d->opaque, ver, buf, len, msg, sizeof(msg));
	pthread_mutex_unlock(&vm->run_lock);
	free(buf);
	if (r)
		return ferry__chan_fail(c, r, "device '%s' instance %u: %s", idstr, inst,
					msg[0] ? msg : ferry_strerror(r));
	return check_footer(l, id);
}

static int load_section_start(loader *l, uint8_t type)
{
	ferry_chan *c = l->c;
	uint32_t id, inst, ver;
	char idstr[FERRY_NAME_MAX + 1];
	int r;
	ferry__chan_ctx_name(c, type == FERRY_REC_SECTION_FULL ? "section full" : "section start");
	if ((r = ferry__wire_get_section_start(c, &id, idstr, &inst, &ver)))
		return r;
	if (!strcmp(idstr, FERRY_RAM_IDSTR)) {
		if (type != FERRY_REC_SECTION_START || id != FERRY_SECTION_RAM || inst != 0)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"RAM section must be a start section with id %u",
						FERRY_SECTION_RAM);
		if (ver != FERRY_RAM_VERSION)
			return ferry__chan_fail(c, FERRY_EVERSION,
						"RAM section version %u (supported: %u)", ver,
						FERRY_RAM_VERSION);
		if (l->ram_started)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "second RAM setup section");
		l->ram_started = true;
		l->ram.mf = l->mf_on ? &l->mf : NULL;
		if ((r = ferry__ram_load(&l->ram, true)))
			return r;
		return check_footer(l, id);
	}
	if (type != FERRY_REC_SECTION_FULL)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"device '%s' sent as an iterative section", idstr);
	return load_device(l, id, idstr, inst, ver);
}

/* Joins the receive threads (all pages are placed once the stream ended). */
static void mf_stop(loader *l)
{
	if (!l->mf_on)
		return;
	pthread_mutex_lock(&l->m->vm->mig_lock);
	l->m->mf_recv = NULL;
	pthread_mutex_unlock(&l->m->vm->mig_lock);
	ferry__mf_recv_stop(&l->mf);
	l->mf_on = false;
}

static void *preempt_thread(void *arg);
static int pc_accept_preempt(loader *l, int lfd, char *err, size_t len);

/* ADVISE: this destination must allow postcopy and be able to do it. */
static int pc_advise(loader *l, uint32_t flags)
{
	struct ferry_migration *m = l->m;
	ferry_vm_t *vm = l->vm;
	ferry_chan *c = l->c;
	char err[256];
	if (l->pc || l->ram_started)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy advised twice or late");
	if (flags & ~FERRY_PC_PREEMPT)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy flags 0x%x", flags);
	pthread_mutex_lock(&vm->mig_lock);
	ferry_mig_params ip = vm->in_params;
	pthread_mutex_unlock(&vm->mig_lock);
	if (!ip.postcopy)
		return ferry__chan_fail(c, FERRY_EMISMATCH,
					"the source asks for postcopy but postcopy-ram is not enabled on the destination");
	pthread_mutex_lock(&m->stats_lock);
	m->params.postcopy = true;
	m->params.link_timeout_ms = ip.link_timeout_ms;
	m->params.postcopy_cpu = ip.postcopy_cpu;
	pthread_mutex_unlock(&m->stats_lock);
	int r = ferry__pc_dst_probe(vm, err, sizeof(err));
	if (r)
		return ferry__chan_fail(c, r, "%s", err);
	ferry_pc_dst *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return ferry__chan_fail(c, -ENOMEM, "out of memory for postcopy");
	if ((r = ferry__pc_dst_init(pc, m))) {
		ferry__pc_dst_fini(pc);
		free(pc);
		return ferry__chan_fail(c, r, "out of memory for postcopy bitmaps");
	}
	pthread_mutex_lock(&vm->mig_lock);
	l->pc = pc;
	m->pc_dst = pc;
	pthread_mutex_unlock(&vm->mig_lock);
	if (!(flags & FERRY_PC_PREEMPT))
		return 0;
	if (m->listen_fd < 0)
		return ferry__chan_fail(c, -EOPNOTSUPP,
					"postcopy-preempt needs a destination that listens for connections");
	if ((r = pc_accept_preempt(l, m->listen_fd, err, sizeof(err))))
		return ferry__chan_fail(c, r, "%s", err);
	l->pre_on = true;
	return 0;
}

/* Reads a preempt connection's handshake from lfd. */
static int pc_accept_preempt(loader *l, int lfd, char *err, size_t len)
{
	int fd, r = ferry__sock_accept(lfd, &fd);
	if (r) {
		snprintf(err, len, "accepting the postcopy preempt channel: %s", ferry_strerror(r));
		return r;
	}
	if ((r = ferry__chan_init(&l->pre, fd))) {
		close(fd);
		return r;
	}
	l->pre.peer = "source";
	uint8_t hs[FERRY_PC_HS_LEN];
	ferry__chan_ctx(&l->pre, "preempt channel handshake");
	if ((r = ferry__chan_read(&l->pre, hs, sizeof(hs)))) {
		snprintf(err, len, "%s", l->pre.in_errmsg);
		return r;
	}
	if (!ferry__wire_pc_hs_match(hs, l->uuid)) {
		snprintf(err, len, "the postcopy preempt channel's handshake does not match this migration");
		return FERRY_EBADSTREAM;
	}
	atomic_store(&l->m->preempt_fd, fd);
	return 0;
}

static int pre_start(loader *l)
{
	l->pre_ram = (ferry_ram_loader){ .vm = l->vm, .c = &l->pre, .pc = l->pc,
					 .pages = l->pre_ram.pages, .zeros = l->pre_ram.zeros };
	l->pre_ram.bounce = malloc((size_t)FERRY_RAM_MAX_RUN << FERRY_PAGE_SHIFT);
	if (!l->pre_ram.bounce)
		return -ENOMEM;
	atomic_store(&l->pre_quit, false);
	int r = -pthread_create(&l->pre_thread, NULL, preempt_thread, l);
	l->pre_started = !r;
	return r;
}

static void pre_stop(loader *l)
{
	atomic_store(&l->pre_quit, true);
	atomic_store(&l->m->preempt_fd, -1);
	if (l->pre.ibuf)
		ferry__chan_shutdown(&l->pre);
	if (l->pre_started)
		pthread_join(l->pre_thread, NULL);
	l->pre_started = false;
	if (l->pre.ibuf)
		ferry__chan_close(&l->pre);
	l->pre.fd = -1;
	free(l->pre_ram.bounce);
	l->pre_ram.bounce = NULL;
}

static int pc_listen(loader *l)
{
	ferry_chan *c = l->c;
	char err[256];
	if (!l->pc || l->pc_listening)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy listen %s",
					l->pc ? "twice" : "without advise");
	/* Precopy is over: the multifd receivers have placed all they had. */
	mf_stop(l);
	ferry__place_fini(l->vm); /* RAM is registered for postcopy instead */
	uint64_t t0 = ferry__now_ns();
	int r = ferry__pc_dst_listen(l->pc, c, err, sizeof(err));
	ferry_dbg("postcopy: listening (RAM registered) in %.2f ms", (double)(ferry__now_ns() - t0) / 1e6);
	if (r)
		return ferry__chan_fail(c, r, "%s", err);
	l->pc_listening = true;
	l->ram.pc = l->pc;
	if (!l->ram.bounce) /* may exist already: precopy pages were read through it */
		l->ram.bounce = malloc((size_t)FERRY_RAM_MAX_RUN << FERRY_PAGE_SHIFT);
	if (!l->ram.bounce)
		return ferry__chan_fail(c, -ENOMEM, "out of memory for postcopy");
	ferry_mig_params p;
	ferry__mig_params(l->m, &p);
	ferry__sock_set_link_timeout(c->fd, p.link_timeout_ms);
	if (l->pre_on) {
		ferry__sock_set_link_timeout(l->pre.fd, p.link_timeout_ms);
		if ((r = pre_start(l)))
			return ferry__chan_fail(c, r, "cannot start the preempt thread");
	}
	return 0;
}

/*
 * PACKAGE: its bytes go to a memfd, so that the main connection is free for
 * mig/dst/listen while the device state loads (pc_load_package).
 */
static int pc_read_package(loader *l, uint32_t len)
{
	ferry_chan *c = l->c;
	if (!l->pc_listening || l->pkg_fd >= 0)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy package %s",
					l->pc_listening ? "twice" : "before listen");
	if (len == 0 || len > FERRY_PC_PACKAGE_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy package of %u bytes (max %u)",
					len, FERRY_PC_PACKAGE_MAX);
	int fd = memfd_create("ferry-package", MFD_CLOEXEC);
	if (fd < 0)
		return ferry__chan_fail(c, -errno, "memfd for the postcopy package: %s", strerror(errno));
	uint8_t tmp[65536];
	int r = 0;
	for (uint32_t done = 0; done < len && !r;) {
		uint32_t k = len - done < sizeof(tmp) ? len - done : (uint32_t)sizeof(tmp);
		if ((r = ferry__chan_read(c, tmp, k)))
			break;
		if (write(fd, tmp, k) != (ssize_t)k)
			r = ferry__chan_fail(c, -EIO, "writing the postcopy package: %s", strerror(errno));
		done += k;
	}
	if (!r && lseek(fd, 0, SEEK_SET) != 0)
		r = ferry__chan_fail(c, -errno, "postcopy package: %s", strerror(errno));
	if (r) {
		close(fd);
		return r;
	}
	l->pkg_fd = fd;
	l->pkg_len = len;
	l->pc_running = true; /* load_stream returns: the rest is postcopy */
	return 0;
}

static int load_command(loader *l)
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
	if (cmd == FERRY_CMD_POSTCOPY_DISCARD) {
		if (!l->pc || l->pc_listening)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy discard %s",
						l->pc ? "after listen" : "without advise");
		uint8_t *big = malloc(len ? len : 1);
		if (!big)
			return ferry__chan_fail(c, -ENOMEM, "out of memory for a discard bitmap");
		r = ferry__chan_read(c, big, len);
		if (!r)
			r = ferry__pc_dst_discard(l->pc, c, big, len);
		free(big);
		return r;
	}
	int want = ferry__wire_cmd_len(cmd);
	if (len != want)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "command %u with %u bytes (expected %d)",
					cmd, len, want);
	if ((r = ferry__chan_read(c, buf, len)))
		return r;
	switch (cmd) {
	case FERRY_CMD_PING:
		if (l->pc_listening) /* other threads write the return path too */
			return ferry__pc_rp_send(l->pc, FERRY_RP_PONG, buf, FERRY_RP_PONG_LEN, NULL, 0);
		ferry__wire_put_rp(c, FERRY_RP_PONG, buf, FERRY_RP_PONG_LEN, NULL, 0);
		return ferry__chan_flush(c);
	case FERRY_CMD_POSTCOPY_ADVISE:
		return pc_advise(l, ferry__wire_cmd_be32(buf));
	case FERRY_CMD_POSTCOPY_LISTEN:
		return pc_listen(l);
	case FERRY_CMD_POSTCOPY_PACKAGE:
		return pc_read_package(l, ferry__wire_cmd_be32(buf));
	case FERRY_CMD_POSTCOPY_RUN:
		if (!l->pc_listening || buf[0] > 1)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy run %s",
						l->pc_listening ? "with a bad run state" : "before listen");
		l->run_after = buf[0];
		l->pc_running = true;
		return 0;
	case FERRY_CMD_SWITCHOVER:
		return 0;
	case FERRY_CMD_VM_STATE:
		if (buf[0] > 1)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "run state %u", buf[0]);
		l->run_after = buf[0];
		return 0;
	case FERRY_CMD_MULTIFD: {
		uint32_t n;
		uint8_t comp;
		ferry__wire_cmd_multifd_decode(buf, &n, &comp);
		if (l->mf_on || l->ram_started)
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "multifd announced twice or late");
		if (n < 1 || n > FERRY_MULTIFD_MAX_CHANNELS || comp > FERRY_COMPRESS_ZSTD)
			return ferry__chan_fail(c, FERRY_EBADSTREAM,
						"multifd with %u channels, compression %u", n, comp);
		l->mf_on = true;
		struct ferry_migration *m = l->m;
		int r = ferry__mf_recv_start(&l->mf, m, m->listen_fd, l->uuid, n, comp);
		if (r)
			return ferry__chan_fail(c, r, "%s", l->mf.errmsg[0] ? l->mf.errmsg
									 : ferry_strerror(r));
		/* Published only now: cancel may shut the channels down from here on. */
		pthread_mutex_lock(&m->vm->mig_lock);
		m->mf_recv = &l->mf;
		pthread_mutex_unlock(&m->vm->mig_lock);
		return ferry__mig_cancelled(m) ? -ECANCELED : 0;
	}
	}
	return 0;
}

static int load_stream(loader *l)
{
	ferry_chan *c = l->c;
	ferry_wire_hdr hdr;
	int r;
	ferry__chan_ctx(c, "stream header");
	if ((r = ferry__wire_get_header(c, &hdr)))
		return r;
	if (hdr.magic != FERRY_STREAM_MAGIC)
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"not a Ferry migration stream (magic 0x%08x)", hdr.magic);
	if (hdr.version != FERRY_STREAM_VERSION)
		return ferry__chan_fail(c, FERRY_EVERSION, "stream version %u (supported: %u)",
					hdr.version, FERRY_STREAM_VERSION);
	memcpy(l->uuid, hdr.uuid, FERRY_UUID_LEN);
	if (hdr.page_size != FERRY_PAGE_SIZE)
		return ferry__chan_fail(c, FERRY_EMISMATCH, "page size %u (supported: %u)",
					hdr.page_size, FERRY_PAGE_SIZE);
	ferry__mig_set_status(l->m, FERRY_MIG_ACTIVE);
	for (;;) {
		uint8_t type;
		uint32_t id;
		ferry__chan_ctx(c, "record");
		if ((r = ferry__wire_get_record(c, &type)))
			return r;
		switch (type) {
		case FERRY_REC_EOF:
			if (!l->ram_started)
				return ferry__chan_fail(c, FERRY_EBADSTREAM,
							"stream ended before the RAM setup section");
			return 0;
		case FERRY_REC_SECTION_START:
		case FERRY_REC_SECTION_FULL:
			r = load_section_start(l, type);
			break;
		case FERRY_REC_SECTION_PART:
		case FERRY_REC_SECTION_END:
			ferry__chan_ctx_name(c, "section part");
			if ((r = ferry__wire_get_section_id(c, &id)))
				return r;
			if (id != FERRY_SECTION_RAM || !l->ram_started)
				return ferry__chan_fail(c, FERRY_EBADSTREAM,
							"section %u continued before it started", id);
			if (type == FERRY_REC_SECTION_END)
				ferry__mig_set_status(l->m, FERRY_MIG_DEVICE);
			l->ram.mf = l->mf_on ? &l->mf : NULL;
			r = ferry__ram_load(&l->ram, false);
			if (!r)
				r = check_footer(l, id);
			break;
		case FERRY_REC_COMMAND:
			r = load_command(l);
			break;
		case FERRY_REC_CANCELLED:
			return ferry__chan_fail_msg(c, FERRY_EPEER, FERRY_CANCELLED_MSG);
		default:
			return ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown record type 0x%02x",
						type);
		}
		if (r)
			return r;
		load_stats(l);
		if (ferry__mig_cancelled(l->m))
			return -ECANCELED;
		if (l->pc_running)
			return 0; /* the rest is postcopy: pc_incoming() */
	}
}

/* ---- postcopy (destination) ---- */

/*
 * mig/dst/preempt: requested pages from the preempt connection. If it
 * breaks while in use, the main connection is shut down too so that both
 * pause together.
 */
static void *preempt_thread(void *arg)
{
	loader *l = arg;
	pthread_setname_np(pthread_self(), "mig/dst/preempt");
	ferry__pc_boost_thread(l->m);
	ferry__ram_load(&l->pre_ram, false);
	if (!atomic_load(&l->pre_quit)) {
		ferry_warn("postcopy preempt channel: %s",
			   l->pre.in_errmsg[0] ? l->pre.in_errmsg : "ended");
		int fd = atomic_load(&l->m->chan_fd);
		if (fd >= 0)
			shutdown(fd, SHUT_RDWR);
	}
	return NULL;
}

/* mig/dst/listen: the background pages on the main connection, until EOF. */
static void *listen_thread(void *arg)
{
	loader *l = arg;
	ferry_chan *c = l->c;
	pthread_setname_np(pthread_self(), "mig/dst/listen");
	int r = 0;
	for (;;) {
		uint8_t type;
		uint32_t id;
		ferry__chan_ctx(c, "record");
		if ((r = ferry__wire_get_record(c, &type)))
			break;
		if (type == FERRY_REC_EOF)
			break;
		if (type == FERRY_REC_SECTION_PART) {
			ferry__chan_ctx_name(c, "section part");
			if ((r = ferry__wire_get_section_id(c, &id)))
				break;
			if (id != FERRY_SECTION_RAM) {
				r = ferry__chan_fail(c, FERRY_EBADSTREAM, "section %u in postcopy", id);
				break;
			}
			if ((r = ferry__ram_load(&l->ram, false)) || (r = check_footer(l, id)))
				break;
		} else if (type == FERRY_REC_COMMAND) {
			if ((r = load_command(l)))
				break;
		} else {
			r = ferry__chan_fail(c, FERRY_EBADSTREAM, "record type 0x%02x in postcopy", type);
			break;
		}
		load_stats(l);
	}
	l->listen_r = r;
	return NULL;
}

/*
 * Loads the package (device state, then RUN) while mig/dst/listen already
 * reads the main connection. Returns 0 once RUN was seen.
 */
static int pc_load_package(loader *l)
{
	ferry_chan pk;
	int r = ferry__chan_init(&pk, l->pkg_fd);
	if (r)
		return r;
	l->pkg_fd = -1; /* the channel owns it */
	loader pl = { .m = l->m, .vm = l->vm, .c = &pk, .ram_started = true, .pc = l->pc,
		      .pc_listening = true, .pkg_fd = -1 };
	while (!r && ferry__chan_offset(&pk) < l->pkg_len) {
		uint8_t type;
		ferry__chan_ctx(&pk, "postcopy package record");
		if ((r = ferry__wire_get_record(&pk, &type)))
			break;
		if (type == FERRY_REC_SECTION_FULL)
			r = load_section_start(&pl, type);
		else if (type == FERRY_REC_COMMAND && !pl.pc_running)
			r = load_command(&pl);
		else
			r = ferry__chan_fail(&pk, FERRY_EBADSTREAM, "record type 0x%02x in the postcopy package",
					     type);
	}
	if (!r && !pl.pc_running)
		r = ferry__chan_fail(&pk, FERRY_EBADSTREAM, "postcopy package without run");
	if (r) {
		struct ferry_migration *m = l->m;
		ferry__mig_set_error(m, r, "%s", pk.in_errmsg[0] ? pk.in_errmsg : ferry_strerror(r));
	}
	l->run_after = pl.run_after;
	ferry__chan_close(&pk);
	return r;
}

/* A recovered connection: header of the same source, then RESUME. */
static int pc_accept_resume(loader *l, int lfd, char *err, size_t len)
{
	ferry_chan *c = l->c;
	int fd, r = ferry__sock_accept(lfd, &fd);
	if (r) {
		snprintf(err, len, "accept failed: %s", ferry_strerror(r));
		return r;
	}
	if ((r = ferry__chan_init(c, fd))) {
		close(fd);
		return r;
	}
	c->peer = "source";
	atomic_store(&l->m->chan_fd, fd);
	ferry_wire_hdr hdr;
	uint8_t t;
	uint16_t cmd, clen;
	ferry__chan_ctx(c, "stream header");
	if ((r = ferry__wire_get_header(c, &hdr)))
		goto bad;
	if (hdr.magic != FERRY_STREAM_MAGIC || hdr.version != FERRY_STREAM_VERSION ||
	    memcmp(hdr.uuid, l->uuid, FERRY_UUID_LEN)) {
		r = ferry__chan_fail(c, FERRY_EMISMATCH, "the connection is not from this migration's source");
		goto bad;
	}
	ferry__chan_ctx(c, "command");
	if ((r = ferry__wire_get_record(c, &t)) || (r = ferry__wire_get_cmd(c, &cmd, &clen)))
		goto bad;
	if (t != FERRY_REC_COMMAND || cmd != FERRY_CMD_POSTCOPY_RESUME || clen) {
		r = ferry__chan_fail(c, FERRY_EBADSTREAM, "expected postcopy resume");
		goto bad;
	}
	if (l->pre_on && (r = pc_accept_preempt(l, lfd, err, len)))
		return r;
	ferry_mig_params p;
	ferry__mig_params(l->m, &p);
	ferry__sock_set_link_timeout(fd, p.link_timeout_ms);
	if (l->pre_on)
		ferry__sock_set_link_timeout(l->pre.fd, p.link_timeout_ms);
	return 0;
bad:
	snprintf(err, len, "%s", c->in_errmsg[0] ? c->in_errmsg : ferry_strerror(r));
	return r;
}

/* Drops the connections of a broken postcopy; the guest keeps running. */
static void pc_disconnect(loader *l)
{
	ferry__pc_dst_set_rp(l->pc, NULL);
	atomic_store(&l->m->chan_fd, -1);
	if (l->c->ibuf) {
		ferry__chan_shutdown(l->c);
		ferry__chan_close(l->c);
	}
	l->c->fd = -1;
	if (l->pre_on)
		pre_stop(l);
}

/*
 * After RUN: mig/dst/listen takes the main connection until EOF. A broken
 * connection pauses; ferry_migration_recover() brings a new one. Returns 0
 * once every page is placed, or a negative errno.
 */
static int pc_incoming(loader *l, pthread_t *running)
{
	struct ferry_migration *m = l->m;
	ferry_vm_t *vm = l->vm;
	for (;;) {
		pthread_t t;
		int r = 0;
		if (running) { /* the first one: started before the package loaded */
			t = *running;
			running = NULL;
		} else if ((r = -pthread_create(&t, NULL, listen_thread, l))) {
			return r;
		}
		pthread_join(t, NULL);
		if (!l->listen_r) {
			/*
			 * EOF on the main connection: requested pages the source
			 * sent on the preempt connection (and left out of the
			 * background) may still be on their way there.
			 */
			ferry_mig_params p;
			ferry__mig_params(m, &p);
			uint64_t end = ferry__now_ns() + (uint64_t)p.link_timeout_ms * 1000000;
			while (!ferry__pc_dst_complete(l->pc) && l->pre_on && ferry__now_ns() < end)
				ferry__sleep_ns(1000000);
			if (ferry__pc_dst_complete(l->pc))
				return 0;
			return ferry__chan_fail(l->c, FERRY_EBADSTREAM,
						"the source ended postcopy with pages still missing");
		}
		char why[300];
		snprintf(why, sizeof(why), "%s",
			 l->c->in_errmsg[0] ? l->c->in_errmsg : ferry_strerror(l->listen_r));
		pc_disconnect(l);
		ferry_warn("postcopy paused: %s", why);
		ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_PAUSED);
		for (;;) {
			pthread_mutex_lock(&vm->mig_lock);
			while (m->recover_fd < 0 && !ferry__mig_cancelled(m))
				pthread_cond_wait(&vm->mig_cond, &vm->mig_lock);
			int lfd = m->recover_fd;
			pthread_mutex_unlock(&vm->mig_lock);
			if (ferry__mig_cancelled(m)) /* the VM is being destroyed */
				return -ECANCELED;
			ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_RECOVER);
			char err[256];
			r = pc_accept_resume(l, lfd, err, sizeof(err));
			/* One recovery per listener: the next pause needs a new one. */
			pthread_mutex_lock(&vm->mig_lock);
			m->recover_fd = -1;
			pthread_mutex_unlock(&vm->mig_lock);
			close(lfd);
			if (!r) {
				ferry__pc_dst_set_rp(l->pc, l->c);
				if (l->pre_on)
					r = pre_start(l);
				if (!r)
					r = ferry__pc_dst_resync(l->pc);
				if (!r)
					break;
				snprintf(err, sizeof(err), "resync failed: %s", ferry_strerror(r));
			}
			ferry_warn("postcopy recovery failed: %s", err);
			pc_disconnect(l);
			ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_PAUSED);
		}
		pthread_mutex_lock(&m->stats_lock);
		m->info.postcopy_recoveries++;
		pthread_mutex_unlock(&m->stats_lock);
		ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_ACTIVE);
	}
}

/* Ends postcopy: unregisters RAM (waking any waiter), stops its threads. */
static void pc_end(loader *l)
{
	if (!l->pc)
		return;
	if (l->pre_on)
		pre_stop(l);
	ferry__pc_dst_set_rp(l->pc, NULL);
	pthread_mutex_lock(&l->m->stats_lock); /* keep the final figures */
	ferry__pc_dst_stats(l->pc, &l->m->info);
	pthread_mutex_unlock(&l->m->stats_lock);
	pthread_mutex_lock(&l->vm->mig_lock);
	l->m->pc_dst = NULL;
	pthread_mutex_unlock(&l->vm->mig_lock);
	ferry__pc_dst_fini(l->pc);
	free(l->pc);
	l->pc = NULL;
	free(l->ram.bounce);
	l->ram.bounce = NULL;
	l->ram.pc = NULL;
}

void *ferry__dest_thread(void *arg)
{
	struct ferry_migration *m = arg;
	ferry_vm_t *vm = m->vm;
	ferry_chan *c = &m->chan;
	loader l = { .m = m, .vm = vm, .c = c, .ram = { .vm = vm, .c = c }, .pkg_fd = -1 };
	l.pre.fd = -1;
	int fd = m->chan.fd, r = 0;

	pthread_setname_np(pthread_self(), "mig/dst/main");
	/* The guest must not run while its RAM and state arrive. */
	ferry__vm_own_run(vm, true);
	if (m->listen_fd >= 0) {
		/* The listener stays open for multifd channels until the end. */
		r = ferry__sock_accept(m->listen_fd, &fd);
		if (r) {
			fd = -1;
			if (!ferry__mig_cancelled(m))
				ferry__mig_set_error(m, r, "accept failed: %s", ferry_strerror(r));
			goto out;
		}
	}
	r = ferry__chan_init(c, fd);
	if (r) {
		close(fd);
		fd = -1;
		goto out;
	}
	c->peer = "source";
	atomic_store(&m->chan_fd, fd);
	if (ferry__mig_cancelled(m)) {
		r = -ECANCELED;
		goto out;
	}
	/* Fresh destination RAM is zero: nothing of it was received yet. */
	for (unsigned i = 0; i < vm->nblocks; i++)
		ferry__bitmap_zero(vm->blocks[i]->received, vm->blocks[i]->npages);
	char perr[256];
	uint32_t placement;
	/* Destination parameters as they are now (set after the listen too). */
	pthread_mutex_lock(&vm->mig_lock);
	uint32_t want = vm->in_params.placement;
	pthread_mutex_unlock(&vm->mig_lock);
	if ((r = ferry__place_setup(vm, want, &placement, perr, sizeof(perr)))) {
		ferry__mig_set_error(m, r, "%s", perr);
		goto out;
	}
	pthread_mutex_lock(&m->stats_lock);
	m->info.placement = placement;
	pthread_mutex_unlock(&m->stats_lock);

	r = load_stream(&l);
	load_stats(&l);
	/* The source said it cancelled (the only FERRY_EPEER of the stream): that, before any channel's EOF. */
	if (r && c->in_err == FERRY_EPEER)
		ferry__mig_set_error(m, c->in_err, "%s", c->in_errmsg);
	if (r && l.mf_on && !ferry__mig_cancelled(m) && ferry__mf_recv_wait_error(&l.mf, 200))
		ferry__mig_set_error(m, l.mf.err, "%s", l.mf.errmsg); /* a channel failed first */
	mf_stop(&l);
	if (r)
		goto out;
	pthread_t lt;
	bool lt_started = false;
	if (l.pkg_fd >= 0) {
		/* The main connection goes to mig/dst/listen while devices load. */
		if ((r = -pthread_create(&lt, NULL, listen_thread, &l)))
			goto out;
		lt_started = true;
		if ((r = pc_load_package(&l))) {
			/* The listen thread stops; the return path still says why. */
			shutdown(c->fd, SHUT_RD);
			pthread_join(lt, NULL);
			goto out;
		}
	}
	ferry__vm_own_run(vm, false);
	if (l.run_after) {
		r = ferry_vm_start(vm);
		if (r) {
			ferry__mig_set_error(m, r, "cannot start vCPUs: %s", ferry_strerror(r));
			if (lt_started) {
				shutdown(c->fd, SHUT_RD);
				pthread_join(lt, NULL);
			}
			goto out;
		}
		ferry__mig_event(m, FERRY_EVENT_RESUME, 0);
	}
	if (l.pc_running) {
		/* The guest runs; its missing pages fault and are fetched. */
		pthread_mutex_lock(&m->stats_lock);
		m->info.postcopy = true;
		pthread_mutex_unlock(&m->stats_lock);
		ferry__pc_rp_send(l.pc, FERRY_RP_RUNNING, NULL, 0, NULL, 0);
		ferry__mig_set_status(m, FERRY_MIG_POSTCOPY_ACTIVE);
		r = pc_incoming(&l, lt_started ? &lt : NULL);
		load_stats(&l);
		pc_end(&l);
		if (r)
			goto out;
	}
	send_shut(c, 0, NULL);
	ferry__mig_set_status(m, FERRY_MIG_COMPLETED);
	goto done;

out:
	if (l.pc) {
		/* Before SHUT: the fault thread writes the return path too. */
		bool ran = l.pc_running;
		pc_end(&l);
		if (ran && ferry_vm_stop(vm) == 0)
			ferry__mig_event(m, FERRY_EVENT_STOP, 0);
	}
	if (ferry__mig_cancelled(m))
		r = -ECANCELED;
	else if (c->in_err && c->in_errmsg[0])
		ferry__mig_set_error(m, c->in_err, "%s", c->in_errmsg);
	else if (r)
		ferry__mig_set_error(m, r, "incoming migration failed: %s", ferry_strerror(r));
	if (c->fd >= 0 && c->obuf) { /* a paused postcopy may have none left */
		pthread_mutex_lock(&m->stats_lock);
		char msg[256];
		snprintf(msg, sizeof(msg), "%s",
			 r == -ECANCELED ? "migration cancelled on the destination" : m->info.error_desc);
		pthread_mutex_unlock(&m->stats_lock);
		send_shut(c, r, msg);
	}
	ferry__mig_set_status(m, r == -ECANCELED ? FERRY_MIG_CANCELLED : FERRY_MIG_FAILED);
done:
	if (l.pkg_fd >= 0)
		close(l.pkg_fd);
	ferry__vm_own_run(vm, false);
	mf_stop(&l);
	ferry__ram_loader_fini(&l.ram);
	ferry__place_fini(vm);
	free(l.ram.bounce);
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
	ferry__mig_thread_done(m);
	return NULL;
}
