/* SPDX-License-Identifier: MIT */
/*
 * The migration parameter table (see ferry/migration.h): names, fields,
 * types and limits of the parameters a control plane sets by name, and the
 * one check that ferry_migration_start(), ferry_migration_set_params() and
 * control planes (`ferry host`'s migrate-set-parameters) all use.
 *
 * DESIGN: the public table says what a parameter is; a parallel private
 * table says how its limit is worded, so that the messages stay QEMU's
 * where QEMU has the parameter ("Parameter 'downtime_limit' expects an
 * integer in the range of 0 to 2000000 ms", its C field name) and Ferry's
 * own for the rest ("Parameter 'x-link-timeout' expects a value between
 * 100 and 600000 ms").
 *
 * Thread: any (the table is constant; the params are the caller's).
 */
#include "migration/mig.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#define F(field) offsetof(ferry_migration_params, field)
#define RANGE(lo, hi) .ranged = true, .min = (lo), .max = (hi)

static const char *const compression_names[] = { "none", "zstd", NULL };
/* Indexed by FERRY_PLACE_*. */
static const char *const placement_names[] = { "auto", "userfaultfd", "pwrite", "mapping", "copy",
						NULL };
/* Indexed by FERRY_USER_COPY_*. */
static const char *const user_copy_names[] = { "auto", "on", "off", NULL };

static const ferry_migration_param_desc table[] = {
	{ "downtime-limit", FERRY_MIGRATION_PARAM_U64, F(downtime_limit_ms), RANGE(0, 2000000),
	  .unit = "ms" },
	{ "max-bandwidth", FERRY_MIGRATION_PARAM_SIZE, F(max_bandwidth), .unit = "bytes/s" },
	{ "x-max-passes", FERRY_MIGRATION_PARAM_U32, F(max_passes) },
	{ "multifd-channels", FERRY_MIGRATION_PARAM_U32, F(multifd_channels),
	  RANGE(1, FERRY_MULTIFD_MAX_CHANNELS) },
	{ "multifd-compression", FERRY_MIGRATION_PARAM_ENUM, F(multifd_compression),
	  .values = compression_names },
	{ "multifd-zstd-level", FERRY_MIGRATION_PARAM_INT, F(multifd_zstd_level), RANGE(1, 20) },
	{ "x-postcopy-after-passes", FERRY_MIGRATION_PARAM_U32, F(postcopy_after_passes) },
	{ "x-link-timeout", FERRY_MIGRATION_PARAM_U32, F(link_timeout_ms), RANGE(100, 600000),
	  .unit = "ms" },
	{ "x-postcopy-cpu", FERRY_MIGRATION_PARAM_I32, F(postcopy_cpu), RANGE(-1, CPU_SETSIZE - 1) },
	{ "x-free-page-hints", FERRY_MIGRATION_PARAM_BOOL, F(free_page_hints) },
	{ "x-free-page-hint-wait", FERRY_MIGRATION_PARAM_U32, F(hint_wait_ms), RANGE(0, 10000),
	  .unit = "ms" },
	{ "x-placement", FERRY_MIGRATION_PARAM_ENUM, F(placement), .values = placement_names,
	  .help = "auto, userfaultfd, pwrite, mapping or copy" },
	{ "x-send-splice", FERRY_MIGRATION_PARAM_BOOL, F(send_splice) },
	{ "throttle-trigger-threshold", FERRY_MIGRATION_PARAM_U32, F(throttle_trigger_threshold),
	  RANGE(1, 100), .unit = "%" },
	{ "cpu-throttle-initial", FERRY_MIGRATION_PARAM_U32, F(cpu_throttle_initial), RANGE(1, 99),
	  .unit = "%" },
	{ "cpu-throttle-increment", FERRY_MIGRATION_PARAM_U32, F(cpu_throttle_increment), RANGE(1, 99),
	  .unit = "%" },
	{ "cpu-throttle-tailslow", FERRY_MIGRATION_PARAM_BOOL, F(cpu_throttle_tailslow) },
	{ "max-cpu-throttle", FERRY_MIGRATION_PARAM_U32, F(max_cpu_throttle), RANGE(1, 99), .unit = "%",
	  .min_param = "cpu-throttle-initial" },
	{ "x-device-state-max-queued", FERRY_MIGRATION_PARAM_U32, F(device_state_max_queued),
	  RANGE(1, 4096) },
	{ "x-device-save-threads", FERRY_MIGRATION_PARAM_U32, F(device_save_threads),
	  RANGE(0, FERRY_LIVE_DEVICES_MAX) },
	{ "x-checksum", FERRY_MIGRATION_PARAM_BOOL, F(checksum) },
	{ "x-user-copy", FERRY_MIGRATION_PARAM_ENUM, F(user_copy), .values = user_copy_names,
	  .help = "auto, on or off" },
};
#define N_PARAMS (sizeof(table) / sizeof(table[0]))
_Static_assert(N_PARAMS == 22, "words[] below names the entries by index");

/* How a limit is worded in messages. */
enum words {
	WORDS_FERRY = 0, /* "Parameter 'x-link-timeout' expects a value between 100 and 600000 ms" */
	WORDS_QEMU,      /* "Parameter 'downtime_limit' expects an integer in the range of 0 to ..." */
	WORDS_CPU,       /* "Parameter 'x-postcopy-cpu' expects -1 or a CPU this process may ..." */
};
static const enum words words[N_PARAMS] = {
	[0] = WORDS_QEMU,   /* downtime-limit */
	[8] = WORDS_CPU,    /* x-postcopy-cpu */
	[13] = WORDS_QEMU,  /* throttle-trigger-threshold */
	[14] = WORDS_QEMU,  /* cpu-throttle-initial */
	[15] = WORDS_QEMU,  /* cpu-throttle-increment */
	[17] = WORDS_QEMU,  /* max-cpu-throttle */
};

const ferry_migration_param_desc *ferry_migration_params_table(size_t *count)
{
	if (count)
		*count = N_PARAMS;
	return table;
}

const ferry_migration_param_desc *ferry_migration_param_find(const char *name)
{
	for (size_t i = 0; name && i < N_PARAMS; i++)
		if (!strcmp(table[i].name, name))
			return &table[i];
	return NULL;
}

int64_t ferry_migration_param_get(const ferry_migration_params *p, const ferry_migration_param_desc *d)
{
	const char *f = (const char *)p + d->offset;
	switch (d->type) {
	case FERRY_MIGRATION_PARAM_BOOL: return *(const bool *)f;
	case FERRY_MIGRATION_PARAM_U32:
	case FERRY_MIGRATION_PARAM_ENUM: return *(const uint32_t *)f;
	case FERRY_MIGRATION_PARAM_I32: return *(const int32_t *)f;
	case FERRY_MIGRATION_PARAM_INT: return *(const int *)f;
	case FERRY_MIGRATION_PARAM_U64:
	case FERRY_MIGRATION_PARAM_SIZE: return (int64_t)*(const uint64_t *)f;
	}
	return 0;
}

void ferry_migration_param_set(ferry_migration_params *p, const ferry_migration_param_desc *d, int64_t v)
{
	char *f = (char *)p + d->offset;
	if (d->ranged && d->type != FERRY_MIGRATION_PARAM_U64 && d->type != FERRY_MIGRATION_PARAM_SIZE)
		v = v < d->min ? d->min - 1 : v > d->max ? d->max + 1 : v;
	switch (d->type) {
	case FERRY_MIGRATION_PARAM_BOOL: *(bool *)f = v != 0; break;
	case FERRY_MIGRATION_PARAM_U32:
	case FERRY_MIGRATION_PARAM_ENUM: *(uint32_t *)f = (uint32_t)v; break;
	case FERRY_MIGRATION_PARAM_I32: *(int32_t *)f = (int32_t)v; break;
	case FERRY_MIGRATION_PARAM_INT: *(int *)f = (int)v; break;
	case FERRY_MIGRATION_PARAM_U64:
	case FERRY_MIGRATION_PARAM_SIZE: *(uint64_t *)f = (uint64_t)v; break;
	}
}

/* "0-3,6": the CPUs this process may run on ("" if unknown). */
static void cpu_list(char *buf, size_t len)
{
	cpu_set_t cs;
	size_t n = 0;
	buf[0] = 0;
	if (sched_getaffinity(0, sizeof(cs), &cs))
		return;
	for (int c = 0; c < CPU_SETSIZE && n < len; c++) {
		if (!CPU_ISSET(c, &cs))
			continue;
		int e = c;
		while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &cs))
			e++;
		int w = e > c ? snprintf(buf + n, len - n, "%s%d-%d", n ? "," : "", c, e)
			      : snprintf(buf + n, len - n, "%s%d", n ? "," : "", c);
		n += w > 0 ? (size_t)w : 0;
		c = e;
	}
}

static bool may_run_on(int64_t cpu)
{
	cpu_set_t cs;
	return cpu < 0 || (!sched_getaffinity(0, sizeof(cs), &cs) && CPU_ISSET((int)cpu, &cs));
}

/* QEMU's C name of a parameter: "downtime_limit". */
static void c_name(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s", name);
	for (char *c = buf; *c; c++)
		*c = *c == '-' ? '_' : *c;
}

/* Writes the message for d's limit; returns -EINVAL. */
static int limit_error(const ferry_migration_param_desc *d, int64_t v, char *err, size_t elen)
{
	char qname[64], lo[64], cpus[128];
	const char *ms = d->unit && !strcmp(d->unit, "ms") ? " ms" : "";
	c_name(d->name, qname, sizeof(qname));
	if (d->min_param)
		c_name(d->min_param, lo, sizeof(lo));
	else
		snprintf(lo, sizeof(lo), "%lld", (long long)d->min);
	switch (words[d - table]) {
	case WORDS_QEMU:
		snprintf(err, elen, "Parameter '%s' expects an integer in the range of %s to %lld%s",
			 qname, lo, (long long)d->max, ms);
		break;
	case WORDS_CPU:
		cpu_list(cpus, sizeof(cpus));
		snprintf(err, elen, "Parameter '%s' expects -1 or a CPU this process may run on (%s)",
			 d->name, cpus);
		break;
	case WORDS_FERRY:
		if (d->type == FERRY_MIGRATION_PARAM_ENUM)
			snprintf(err, elen, "Parameter '%s' does not accept value %lld", d->name,
				 (long long)v);
		else
			snprintf(err, elen, "Parameter '%s' expects a value between %s and %lld%s",
				 d->name, lo, (long long)d->max, ms);
		break;
	}
	return -EINVAL;
}

/* Whether d's value in p is outside its limits. */
static bool out_of_range(const ferry_migration_params *p, const ferry_migration_param_desc *d)
{
	int64_t v = ferry_migration_param_get(p, d);
	if (d->type == FERRY_MIGRATION_PARAM_ENUM) {
		size_t n = 0;
		while (d->values[n])
			n++;
		return (uint64_t)v >= n;
	}
	if (!d->ranged)
		return false;
	if (d->type == FERRY_MIGRATION_PARAM_U64 || d->type == FERRY_MIGRATION_PARAM_SIZE)
		return (uint64_t)v < (uint64_t)d->min || (uint64_t)v > (uint64_t)d->max;
	int64_t lo = d->min_param ? ferry_migration_param_get(p, ferry_migration_param_find(d->min_param)) : d->min;
	return v < lo || v > d->max || (words[d - table] == WORDS_CPU && !may_run_on(v));
}

int ferry_migration_param_check(const ferry_migration_params *p, const ferry_migration_param_desc *d, char *err,
			  size_t err_len)
{
	char tmp[256];
	if (!err || !err_len) {
		err = tmp;
		err_len = sizeof(tmp);
	}
	if (!p || d < table || d >= table + N_PARAMS) {
		snprintf(err, err_len, "not a migration parameter");
		return -EINVAL;
	}
	return out_of_range(p, d) ? limit_error(d, ferry_migration_param_get(p, d), err, err_len) : 0;
}

int ferry_migration_params_check(const ferry_migration_params *p, char *err, size_t err_len)
{
	char tmp[256];
	if (!err || !err_len) {
		err = tmp;
		err_len = sizeof(tmp);
	}
	if (!p || p->flags) {
		snprintf(err, err_len, p ? "flags must be 0" : "no parameters");
		return -EINVAL;
	}
	for (size_t i = 0; i < N_PARAMS; i++) {
		int r = ferry_migration_param_check(p, &table[i], err, err_len);
		if (r)
			return r;
	}
	if (p->postcopy_preempt && !p->postcopy) {
		snprintf(err, err_len, "Postcopy preempt requires postcopy-ram");
		return -EINVAL;
	}
	return 0;
}
