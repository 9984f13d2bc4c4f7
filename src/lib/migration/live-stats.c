/* SPDX-License-Identifier: MIT */
/*
 * Live device statistics (live-stats.h): per-device figures in
 * m->live_stats and the totals in m->info, both under m->stats_lock, and
 * the public per-device query.
 *
 * DESIGN: the save and load threads add each buffer as it moves (one short
 * critical section per buffer of up to 1 MiB: not contended), and a time
 * once a device is done, so that query-migrate shows device data growing
 * while it streams. The downtime split is computed once, from the main
 * thread's switchover marks, when the source learns the destination runs.
 */
#include "migration/live-stats.h"

#include <errno.h>
#include <string.h>

#include "migration/mig.h"

void ferry__live_stat_setup(struct ferry_migration *m, unsigned n)
{
	pthread_mutex_lock(&m->stats_lock);
	m->info.live_devices = n;
	m->info.device_precopy_bytes = m->info.device_stopcopy_bytes = 0;
	memset(m->live_stats, 0, sizeof(m->live_stats));
	pthread_mutex_unlock(&m->stats_lock);
}

void ferry__live_stat_buf(struct ferry_migration *m, unsigned dev, uint64_t len, bool precopy)
{
	pthread_mutex_lock(&m->stats_lock);
	m->live_stats[dev].bytes += len;
	m->live_stats[dev].buffers++;
	*(precopy ? &m->info.device_precopy_bytes : &m->info.device_stopcopy_bytes) += len;
	pthread_mutex_unlock(&m->stats_lock);
}

void ferry__live_stat_time(struct ferry_migration *m, unsigned dev, enum ferry_live_stat_time w,
			   uint64_t t0_ns)
{
	uint64_t ns = ferry__now_ns() - t0_ns;
	pthread_mutex_lock(&m->stats_lock);
	struct ferry_live_stat *s = &m->live_stats[dev];
	*(w == FERRY_LIVE_SAVE ? &s->save_ns : w == FERRY_LIVE_LOAD ? &s->load_ns : &s->apply_ns) = ns;
	pthread_mutex_unlock(&m->stats_lock);
}

void ferry__live_stat_loaded(struct ferry_migration *m, unsigned dev, uint64_t t0_ns, uint64_t early)
{
	ferry__live_stat_time(m, dev, FERRY_LIVE_LOAD, t0_ns);
	pthread_mutex_lock(&m->stats_lock);
	m->live_stats[dev].reordered = early;
	pthread_mutex_unlock(&m->stats_lock);
}

/* ns since the vCPU stop, in ms (0 when either mark is missing). */
static uint64_t since_stop_ms(const struct ferry_migration *m, uint64_t ns)
{
	return m->sw_stop_ns && ns > m->sw_stop_ns ? (ns - m->sw_stop_ns) / 1000000 : 0;
}

void ferry__live_stat_split(struct ferry_migration *m, uint64_t run_ns)
{
	uint64_t ram = since_stop_ms(m, m->sw_ram_ns), dev = since_stop_ms(m, m->sw_dev_ns);
	uint64_t all = since_stop_ms(m, run_ns), most = ram > dev ? ram : dev;
	pthread_mutex_lock(&m->stats_lock);
	m->info.downtime_ram_ms = ram;
	m->info.downtime_device_ms = dev;
	m->info.downtime_other_ms = all > most ? all - most : 0;
	pthread_mutex_unlock(&m->stats_lock);
}

void ferry__live_stat_applied(struct ferry_migration *m)
{
	uint64_t dev = since_stop_ms(m, ferry__now_ns());
	pthread_mutex_lock(&m->stats_lock);
	m->info.downtime_device_ms = dev;
	pthread_mutex_unlock(&m->stats_lock);
}

int ferry_live_device_stats_get(ferry_vm_t *vm, unsigned index, ferry_live_device_stats *out)
{
	if (!vm || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&vm->mig_lock);
	if (index >= vm->nlive) {
		pthread_mutex_unlock(&vm->mig_lock);
		return -ENOENT;
	}
	const struct ferry_live_device *d = &vm->live[index];
	out->id = d->id;
	out->instance = d->instance;
	out->state = (ferry_live_state)atomic_load(&d->state);
	struct ferry_migration *m = vm->mig;
	if (m) {
		pthread_mutex_lock(&m->stats_lock);
		const struct ferry_live_stat *s = &m->live_stats[index];
		out->bytes = s->bytes;
		out->buffers = s->buffers;
		out->save_ms = s->save_ns / 1000000;
		out->load_ms = s->load_ns / 1000000;
		out->apply_ms = s->apply_ns / 1000000;
		out->reordered = s->reordered;
		pthread_mutex_unlock(&m->stats_lock);
	}
	pthread_mutex_unlock(&vm->mig_lock);
	return 0;
}
