/* SPDX-License-Identifier: MIT */
/*
 * The outgoing (source) side of a precopy migration.
 *
 * DESIGN: mig/src/main connects, writes the stream header and the RAM setup
 * section, then iterates: send every dirty page (one PART section per pass),
 * log sync, and estimate whether what is still dirty can be sent within
 * downtime-limit at the bandwidth measured so far. When it can, the vCPUs are
 * stopped, the last dirty pages go out in the END section, followed by every
 * device's state (FULL sections), the run state and EOF. The destination
 * answers SHUT on the return path once its vCPUs run (or it failed); the
 * time from our stop to that answer is the downtime.
 *
 * mig/src/rp reads the return path. It shares only rp_* fields with the main
 * thread, under rp_lock.
 *
 * Failure or cancel at any point: tracking stops, and if this thread
 * stopped the vCPUs it starts them again, so the source guest keeps running
 * with nothing lost.
 */
#include "migration/mig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration/multifd.h"
#include "stream/format.h"
#include "transport/transport.h"

static void *rp_thread(void *arg)
{
	struct ferry_migration *m = arg;
	ferry_chan *c = &m->chan;
	pthread_setname_np(pthread_self(), "mig/src/rp");
	for (;;) {
		uint16_t type, len;
		uint8_t buf[512];
		ferry__chan_ctx(c, "return path message");
		if (ferry__chan_get_be16(c, &type) || ferry__chan_get_be16(c, &len))
			break;
		if (len > sizeof(buf)) {
			ferry__chan_fail(c, FERRY_EBADSTREAM, "return path message of %u bytes", len);
			break;
		}
		if (ferry__chan_read(c, buf, len))
			break;
		if (type == FERRY_RP_SHUT && len >= 4) {
			pthread_mutex_lock(&m->rp_lock);
			m->rp_shut = true;
			m->rp_shut_ns = ferry__now_ns();
			m->rp_status = (int32_t)ferry__ld_be32(buf);
			size_t ml = (size_t)len - 4;
			if (ml > sizeof(m->rp_msg) - 1)
				ml = sizeof(m->rp_msg) - 1;
			memcpy(m->rp_msg, buf + 4, ml);
			m->rp_msg[ml] = 0;
			pthread_cond_broadcast(&m->rp_cond);
			pthread_mutex_unlock(&m->rp_lock);
			break;
		} else if (type == FERRY_RP_PONG && len == 4) {
			continue;
		}
		ferry__chan_fail(c, FERRY_EBADSTREAM, "unknown return path message %u (len %u)", type,
				 len);
		break;
	}
	pthread_mutex_lock(&m->rp_lock);
	m->rp_dead = true;
	pthread_cond_broadcast(&m->rp_cond);
	pthread_mutex_unlock(&m->rp_lock);
	return NULL;
}

/* Waits for SHUT. Returns 0 (and the destination's status) or an error. */
static int wait_shut(struct ferry_migration *m, int *status)
{
	pthread_mutex_lock(&m->rp_lock);
	while (!m->rp_shut && !m->rp_dead && !ferry__mig_cancelled(m))
		pthread_cond_wait(&m->rp_cond, &m->rp_lock);
	int r = 0;
	if (m->rp_shut)
		*status = m->rp_status;
	else if (ferry__mig_cancelled(m))
		r = -ECANCELED;
	else
		r = m->chan.in_err ? m->chan.in_err : -EPIPE;
	pthread_mutex_unlock(&m->rp_lock);
	return r;
}

static int save_devices(struct ferry_migration *m, ferry_chan *c)
{
	ferry_vm_t *vm = m->vm;
	for (unsigned i = 0; i < vm->ndevices; i++) {
		struct ferry_device *d = &vm->devices[i];
		int64_t n = ferry_vmsd_encode(d->vmsd, d->opaque, NULL, 0);
		if (n < 0) {
			ferry__mig_set_error(m, (int)n, "cannot save device '%s' instance %u: %s",
					     d->id, d->instance, ferry_strerror((int)n));
			return (int)n;
		}
		if ((uint64_t)n > FERRY_DEVICE_STATE_MAX) {
			ferry__mig_set_error(m, -E2BIG, "device '%s' state is %lld bytes (max %u)",
					     d->id, (long long)n, FERRY_DEVICE_STATE_MAX);
			return -E2BIG;
		}
		uint8_t *buf = malloc((size_t)n ? (size_t)n : 1);
		if (!buf)
			return -ENOMEM;
		int64_t k = ferry_vmsd_encode(d->vmsd, d->opaque, buf, (size_t)n);
		if (k != n) {
			free(buf);
			ferry__mig_set_error(m, -EIO, "device '%s' state changed size while saved",
					     d->id);
			return -EIO;
		}
		uint32_t id = FERRY_SECTION_RAM + 1 + i;
		ferry__chan_put_u8(c, FERRY_REC_SECTION_FULL);
		ferry__chan_put_be32(c, id);
		ferry__chan_put_u8(c, (uint8_t)strlen(d->id));
		ferry__chan_put(c, d->id, strlen(d->id));
		ferry__chan_put_be32(c, d->instance);
		ferry__chan_put_be32(c, d->vmsd->version);
		ferry__chan_put_be32(c, (uint32_t)n);
		ferry__chan_put(c, buf, (size_t)n);
		ferry__chan_put_u8(c, FERRY_REC_FOOTER);
		ferry__chan_put_be32(c, id);
		free(buf);
	}
	return 0;
}

static void put_cmd(ferry_chan *c, uint16_t cmd, const void *p, uint16_t len)
{
	ferry__chan_put_u8(c, FERRY_REC_COMMAND);
	ferry__chan_put_be16(c, cmd);
	ferry__chan_put_be16(c, len);
	ferry__chan_put(c, p, len);
}

static void update_info(struct ferry_migration *m, ferry_ram_saver *rs, uint32_t pass,
			uint64_t dirty_rate, uint64_t bw, bool stalled)
{
	pthread_mutex_lock(&m->stats_lock);
	m->info.pass = pass;
	m->info.dirty_sync_count = pass;
	m->info.dirty_pages_rate = dirty_rate;
	m->info.stalled = stalled;
	if (bw) {
		/* mbps itself is the last 100 ms window (ram.c). */
		m->info.expected_downtime_ms = rs->dirty_pages * FERRY_PAGE_SIZE * 1000 / bw;
		m->info.pages_per_second = bw / FERRY_PAGE_SIZE;
	}
	pthread_mutex_unlock(&m->stats_lock);
}

void *ferry__source_thread(void *arg)
{
	struct ferry_migration *m = arg;
	ferry_vm_t *vm = m->vm;
	ferry_chan *c = &m->chan;
	ferry_ram_saver rs = { .m = m, .vm = vm, .c = c, .max_bw = m->params.max_bandwidth };
	bool stopped_by_us = false;
	ferry_mf_sender mf = { .inited = false };
	ferry_mf_job *mf_job = NULL;
	char err[256];
	int fd = -1, r;

	pthread_setname_np(pthread_self(), "mig/src/main");

	r = ferry__sock_connect(m->uri, &fd, &m->cancel, err, sizeof(err));
	if (r) {
		if (r != -ECANCELED)
			ferry__mig_set_error(m, r, "%s", err);
		goto out;
	}
	r = ferry__chan_init(c, fd);
	if (r) {
		close(fd);
		fd = -1;
		goto out;
	}
	atomic_store(&m->chan_fd, fd);
	if (ferry__mig_cancelled(m)) { /* a cancel that raced with connect */
		r = -ECANCELED;
		goto out;
	}
	if ((r = -pthread_create(&m->rp_thread, NULL, rp_thread, m)))
		goto out;
	m->rp_started = true;

	/* Header. */
	ferry__chan_put_be32(c, FERRY_STREAM_MAGIC);
	ferry__chan_put_be32(c, FERRY_STREAM_VERSION);
	ferry__chan_put(c, vm->uuid, 16);
	ferry__chan_put_be32(c, FERRY_PAGE_SIZE);

	/*
	 * Multifd settings are fixed for the whole migration (later
	 * migrate-set-parameters calls change only the live ones).
	 */
	ferry_mig_params p0;
	ferry__mig_params(m, &p0);
	if (p0.multifd) {
		uint8_t mc[5];
		ferry__st_be32(mc, p0.multifd_channels);
		mc[4] = (uint8_t)p0.multifd_compression;
		put_cmd(c, FERRY_CMD_MULTIFD, mc, sizeof(mc));
		if ((r = ferry__chan_flush(c)))
			goto out;
		mf_job = calloc(1, sizeof(*mf_job));
		if (!mf_job) {
			r = -ENOMEM;
			goto out;
		}
		r = ferry__mf_send_start(&mf, m, p0.multifd_channels, p0.multifd_compression,
					 p0.multifd_zstd_level);
		if (r) {
			if (!ferry__mig_cancelled(m))
				ferry__mig_set_error(m, r, "%s", mf.errmsg[0] ? mf.errmsg : ferry_strerror(r));
			goto out;
		}
		/* Published only now: cancel may shut the channels down from here on. */
		pthread_mutex_lock(&vm->mig_lock);
		m->mf_send = &mf;
		pthread_mutex_unlock(&vm->mig_lock);
		if (ferry__mig_cancelled(m)) {
			r = -ECANCELED;
			goto out;
		}
		rs.mf = &mf;
		rs.job = mf_job;
	}

	if ((r = ferry__ram_save_setup(&rs)))
		goto out;
	pthread_mutex_lock(&m->stats_lock);
	m->info.setup_time_ms = (ferry__now_ns() - m->start_ns) / 1000000;
	pthread_mutex_unlock(&m->stats_lock);
	ferry__mig_set_status(m, FERRY_MIG_ACTIVE);

	uint32_t pass = 0;
	bool stalled = false;
	uint64_t last_sync = ferry__now_ns();
	for (;;) {
		pass++;
		ferry__mig_event(m, FERRY_EVENT_PASS, pass);
		update_info(m, &rs, pass, m->info.dirty_pages_rate, 0, stalled);
		if ((r = ferry__ram_save_pass(&rs, FERRY_REC_SECTION_PART)))
			goto out;
		uint64_t newly;
		if ((r = ferry__ram_sync(&rs, &newly)))
			goto out;
		uint64_t now = ferry__now_ns();
		uint64_t rate = newly * 1000000000ull / (now - last_sync ? now - last_sync : 1);
		last_sync = now;
		/* Bandwidth over all passes so far (bytes/s), including rate-limit naps. */
		uint64_t bw = rs.send_ns ? (uint64_t)((double)rs.sent_bytes * 1e9 / (double)rs.send_ns) : 0;
		uint64_t remaining = rs.dirty_pages * FERRY_PAGE_SIZE;
		ferry_mig_params params;
		ferry__mig_params(m, &params);
		double threshold = (double)bw * (double)params.downtime_limit_ms / 1000.0;
		if (!stalled && params.max_passes && pass >= params.max_passes &&
		    (double)remaining > threshold) {
			stalled = true;
			ferry_warn("migration does not converge after %u passes: %llu bytes dirty, "
				   "%.0f can be sent within the downtime limit; still trying",
				   pass, (unsigned long long)remaining, threshold);
		}
		update_info(m, &rs, pass, rate, bw, stalled);
		if ((double)remaining <= threshold)
			break;
	}

	/* Switchover. */
	pthread_mutex_lock(&vm->run_lock);
	uint64_t stop_ns = ferry__now_ns();
	if (vm->running) {
		r = vm->vcpu_ops.stop ? vm->vcpu_ops.stop(vm->vcpu_opaque) : 0;
		if (r) {
			pthread_mutex_unlock(&vm->run_lock);
			ferry__mig_set_error(m, r, "cannot stop vCPUs: %s", ferry_strerror(r));
			goto out;
		}
		vm->running = false;
		stopped_by_us = true;
	}
	/* From here on the run state is ours: ferry_vm_start() says -EBUSY. */
	vm->run_owned = true;
	pthread_mutex_unlock(&vm->run_lock);
	if (stopped_by_us)
		ferry__mig_event(m, FERRY_EVENT_STOP, 0);
	ferry__mig_set_status(m, FERRY_MIG_DEVICE);
	put_cmd(c, FERRY_CMD_SWITCHOVER, NULL, 0);
	if ((r = ferry__ram_sync(&rs, NULL)))
		goto out;
	update_info(m, &rs, pass + 1, m->info.dirty_pages_rate, 0, stalled);
	/* As QEMU: every dirty sync is a MIGRATION_PASS, the switchover one too. */
	ferry__mig_event(m, FERRY_EVENT_PASS, pass + 1);
	if ((r = ferry__ram_save_pass(&rs, FERRY_REC_SECTION_END)))
		goto out;
	if ((r = save_devices(m, c)))
		goto out;
	uint8_t running = stopped_by_us;
	put_cmd(c, FERRY_CMD_VM_STATE, &running, 1);
	ferry__chan_put_u8(c, FERRY_REC_EOF);
	if ((r = ferry__chan_flush(c)))
		goto out;
	int status = 0;
	if ((r = wait_shut(m, &status)))
		goto out;
	if (status) {
		r = FERRY_EPEER;
		ferry__mig_set_error(m, status, "destination failed: %s", m->rp_msg);
		goto out;
	}
	pthread_mutex_lock(&m->stats_lock);
	m->info.downtime_ms = (m->rp_shut_ns - stop_ns) / 1000000;
	uint64_t total_ns = ferry__now_ns() - m->start_ns;
	uint64_t wire = c->out_bytes + (mf.inited ? m->info.multifd_bytes : 0);
	m->info.transferred = wire;
	m->info.throughput_bps = (uint64_t)((double)wire * 1e9 / (double)total_ns);
	m->info.mbps = (double)m->info.throughput_bps * 8 / 1e6;
	m->info.remaining = 0;
	pthread_mutex_unlock(&m->stats_lock);
	ferry__vm_own_run(vm, false);
	ferry__mig_set_status(m, FERRY_MIG_COMPLETED);
	/* Housekeeping after completion: unprotecting RAM takes ~10 ms per GiB. */
	ferry__ram_save_cleanup(&rs);
	goto done;

out:
	ferry__ram_save_cleanup(&rs);
	if (r && mf.inited && !ferry__mig_cancelled(m)) {
		/* A channel failure shuts the main connection down: prefer its message. */
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_nsec += 200000000L;
		dl.tv_sec += dl.tv_nsec / 1000000000L;
		dl.tv_nsec %= 1000000000L;
		pthread_mutex_lock(&mf.lock);
		while (!mf.err && pthread_cond_timedwait(&mf.cond, &mf.lock, &dl) == 0)
			;
		int merr = mf.err;
		pthread_mutex_unlock(&mf.lock);
		if (merr)
			ferry__mig_set_error(m, merr, "%s", mf.errmsg);
	}
	if (ferry__mig_cancelled(m)) {
		r = -ECANCELED;
	} else if (r && r != FERRY_EPEER) {
		/*
		 * An I/O error on the channel: the destination may have failed
		 * first and said why on the return path; give it a moment.
		 */
		if (m->rp_started) {
			pthread_mutex_lock(&m->rp_lock);
			struct timespec dl;
			clock_gettime(CLOCK_MONOTONIC, &dl);
			dl.tv_sec += 1;
			while (!m->rp_shut && !m->rp_dead)
				if (pthread_cond_timedwait(&m->rp_cond, &m->rp_lock, &dl))
					break;
			bool shut = m->rp_shut && m->rp_status;
			pthread_mutex_unlock(&m->rp_lock);
			if (shut)
				ferry__mig_set_error(m, m->rp_status, "destination failed: %s",
						     m->rp_msg);
		}
		if (r == -EPIPE || r == -ECONNRESET)
			ferry__mig_set_error(m, r, "lost the connection to the destination: %s",
					     ferry_strerror(r));
		else
			ferry__mig_set_error(m, r, "%s", ferry_strerror(r));
	}
	ferry__vm_own_run(vm, false);
	if (stopped_by_us) {
		/* Precopy failed: the source guest runs on as if nothing happened. */
		if (ferry_vm_start(vm) == 0)
			ferry__mig_event(m, FERRY_EVENT_RESUME, 0);
	}
	ferry__mig_set_status(m, r == -ECANCELED ? FERRY_MIG_CANCELLED : FERRY_MIG_FAILED);
done:
	pthread_mutex_lock(&vm->mig_lock);
	m->mf_send = NULL;
	pthread_mutex_unlock(&vm->mig_lock);
	ferry__mf_send_stop(&mf);
	free(mf_job);
	if (fd >= 0) {
		atomic_store(&m->chan_fd, -1);
		ferry__chan_shutdown(c);
		if (m->rp_started)
			pthread_join(m->rp_thread, NULL);
		ferry__chan_close(c);
	}
	ferry__mig_thread_done(m);
	return NULL;
}
