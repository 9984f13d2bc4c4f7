/* SPDX-License-Identifier: MIT */
/*
 * The QMP commands of `ferry host` (docs/qmp.md is their reference).
 *
 * DESIGN: one table at the end, host_commands, names each command with
 * its handler, its arguments and what it returns; the QMP server checks
 * the arguments against it (with QEMU's messages) before the handler
 * runs, and describes it in query-qmp-schema. The replies' and events'
 * types are in host-schema.c. Commands that touch the guest (stop, cont, migrate,
 * migrate-incoming, query-guest-hash, x-run-until) then go through the
 * guest-operation queue (host.h): their state checks run when they reach
 * the head of the queue, so they see the state the earlier operations left,
 * and their reply follows the events they caused (STOP before the reply to
 * `stop`, MIGRATION "setup" before the reply to `migrate`). Queries,
 * parameters, capabilities, migrate_cancel and quit answer at once, even
 * while a long operation (a twin verification) runs.
 *
 * Status rules, from QEMU where it has one:
 *  - "inmigrate": a destination waiting for or receiving a migration; it
 *    refuses migrate, stop, cont and x-run-until.
 *  - A migration is "in progress" from setup to its final status; while an
 *    outgoing one (or a connected incoming one) is, capabilities cannot
 *    change, and cont, verification and x-run-until are refused (a cont
 *    could restart vCPUs the migration just stopped for switchover).
 *  - Parameters may change at any time; during an outgoing migration they
 *    apply live (ferry_migration_set_params).
 *
 * Thread: loop thread, except the *_work functions (worker thread), which
 * touch only their op and the guest.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "host.h"

static const char *const msg_in_progress = "There's a migration process in progress";
static const char *const msg_inmigrate = "Guest is waiting for an incoming migration";
/* QEMU built without CONFIG_LIVE_BLOCK_MIGRATION (blk, inc, the block capability). */
static const char *const msg_no_block = "QEMU compiled without old-style (blk/-b, inc/-i) block migration";

/* ------------------------------------------------------------------ */
/* State.                                                              */

static ferry_migration_status mig_status(host *h)
{
	ferry_migration_info i;
	ferry_migration_query(h->vm, &i);
	return i.status;
}

static bool status_postcopy(ferry_migration_status s)
{
	return s == FERRY_MIGRATION_POSTCOPY_ACTIVE || s == FERRY_MIGRATION_POSTCOPY_PAUSED ||
	       s == FERRY_MIGRATION_POSTCOPY_RECOVER;
}

static bool status_busy(ferry_migration_status s)
{
	return s == FERRY_MIGRATION_SETUP || s == FERRY_MIGRATION_ACTIVE || s == FERRY_MIGRATION_DEVICE ||
	       s == FERRY_MIGRATION_CANCELLING || status_postcopy(s);
}

static bool status_final(ferry_migration_status s)
{
	return s == FERRY_MIGRATION_COMPLETED || s == FERRY_MIGRATION_FAILED || s == FERRY_MIGRATION_CANCELLED;
}

/* An outgoing migration, or an incoming one with a peer, is under way. */
static bool migration_running(host *h)
{
	ferry_migration_status s = mig_status(h);
	if (h->dir == HOST_DIR_OUT)
		return status_busy(s);
	if (h->dir == HOST_DIR_IN)
		return s == FERRY_MIGRATION_ACTIVE || s == FERRY_MIGRATION_DEVICE || s == FERRY_MIGRATION_CANCELLING ||
		       status_postcopy(s);
	return false;
}

/*
 * query-migrate's "ram": what the RAM saver or loader moved, with every
 * member QEMU 7.2's MigrationStats has (skipped: QEMU's is always 0; Ferry's
 * never-populated pages are x-skipped; no zero-copy send, so no misses).
 */
static json_t *info_ram(const ferry_migration_info *i)
{
	json_t *ram = json_pack(
		"{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
		"transferred", (json_int_t)i->transferred, "remaining", (json_int_t)i->remaining, "total",
		(json_int_t)i->total, "duplicate", (json_int_t)i->duplicate, "skipped", (json_int_t)0,
		"normal", (json_int_t)i->normal, "normal-bytes", (json_int_t)i->normal_bytes,
		"dirty-pages-rate", (json_int_t)i->dirty_pages_rate, "dirty-sync-count",
		(json_int_t)i->dirty_sync_count, "mbps", i->mbps, "postcopy-requests",
		(json_int_t)i->postcopy_requests, "page-size", (json_int_t)FERRY_PAGE_SIZE,
		"multifd-bytes", (json_int_t)i->multifd_bytes, "pages-per-second",
		(json_int_t)i->pages_per_second, "precopy-bytes", (json_int_t)i->precopy_bytes,
		"downtime-bytes", (json_int_t)i->downtime_bytes, "postcopy-bytes",
		(json_int_t)i->postcopy_bytes, "dirty-sync-missed-zero-copy", (json_int_t)0, "x-skipped",
		(json_int_t)i->skipped);
	/* The most bytes sent in any 100 ms window (what max-bandwidth caps). */
	if (!i->incoming) {
		json_object_set_new(ram, "x-bandwidth-peak-window-bytes",
				    json_integer((json_int_t)i->bandwidth_peak_window_bytes));
		/* The destination's load rate per CPU second, last pass (expected-downtime). */
		json_object_set_new(ram, "x-dest-load-rate", json_integer((json_int_t)i->dest_load_bps));
	}
	/* Checksums (x-checksum): page bytes verified, payloads that failed (destination). */
	json_object_set_new(ram, "x-verified-bytes", json_integer((json_int_t)i->verified_bytes));
	json_object_set_new(ram, "x-checksum-mismatches",
			    json_integer((json_int_t)i->checksum_mismatches));
	return ram;
}

/* "x-multifd": bytes per channel and, with zstd, the compression. */
static json_t *info_multifd(const ferry_migration_info *i)
{
	json_t *ch = json_array();
	for (uint32_t k = 0; k < i->multifd_channels && k < FERRY_MULTIFD_MAX_CHANNELS; k++)
		json_array_append_new(ch, json_integer((json_int_t)i->channel_bytes[k]));
	json_t *mf = json_pack("{s:I,s:o}", "channels", (json_int_t)i->multifd_channels, "channel-bytes", ch);
	if (i->compress_in) {
		double ratio = i->compress_out ? (double)i->compress_in / (double)i->compress_out : 0.0;
		json_object_set_new(mf, "compression",
				    json_pack("{s:I,s:I,s:f,s:I}", "in", (json_int_t)i->compress_in, "out",
					      (json_int_t)i->compress_out, "ratio", ratio, "skipped",
					      (json_int_t)i->compress_skipped));
	}
	return mf;
}

/* "x-postcopy": faults, requests and the fault latency. */
static json_t *info_postcopy(const ferry_migration_info *i)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I}}", "faults", (json_int_t)i->postcopy_faults,
			 "requests", (json_int_t)i->postcopy_requests, "local-zero-pages",
			 (json_int_t)i->postcopy_local_zero, "recoveries", (json_int_t)i->postcopy_recoveries,
			 "fault-latency", "samples", (json_int_t)i->postcopy_latency_samples, "p50-us",
			 (json_int_t)i->postcopy_latency_p50_us, "p99-us", (json_int_t)i->postcopy_latency_p99_us,
			 "max-us", (json_int_t)i->postcopy_latency_max_us);
}

/*
 * The destination's postcopy-blocktime statistics (QEMU's, with the
 * capability): ms blocked with every vCPU waiting and per vCPU; average
 * fault latencies (ns); the latency histogram (bucket N: [2^N, 2^(N+1)) us).
 */
static void info_blocktime(json_t *o, const ferry_migration_info *i)
{
	json_t *bt = json_array(), *lat = json_array(), *dist = json_array();
	for (uint32_t v = 0; v < i->postcopy_vcpus; v++) {
		json_array_append_new(bt, json_integer((json_int_t)i->postcopy_vcpu_blocktime_ms[v]));
		json_array_append_new(lat, json_integer((json_int_t)i->postcopy_vcpu_latency_ns[v]));
	}
	for (unsigned b = 0; b < FERRY_POSTCOPY_LATENCY_BUCKETS; b++)
		json_array_append_new(dist, json_integer((json_int_t)i->postcopy_latency_dist[b]));
	json_object_set_new(o, "postcopy-blocktime", json_integer((json_int_t)i->postcopy_all_blocktime_ms));
	json_object_set_new(o, "postcopy-vcpu-blocktime", bt);
	json_object_set_new(o, "postcopy-latency", json_integer((json_int_t)i->postcopy_latency_ns));
	json_object_set_new(o, "postcopy-vcpu-latency", lat);
	json_object_set_new(o, "postcopy-non-vcpu-latency",
			    json_integer((json_int_t)i->postcopy_non_vcpu_latency_ns));
	json_object_set_new(o, "postcopy-latency-dist", dist);
}

/* Times, and the downtime: measured once completed, expected while it runs. */
static void info_times(json_t *o, const ferry_migration_info *i, uint64_t downtime_limit_ms)
{
	json_object_set_new(o, "total-time", json_integer((json_int_t)i->total_time_ms));
	json_object_set_new(o, "setup-time", json_integer((json_int_t)i->setup_time_ms));
	if (!i->incoming && i->status == FERRY_MIGRATION_COMPLETED)
		json_object_set_new(o, "downtime", json_integer((json_int_t)i->downtime_ms));
	if (!i->incoming && (i->status == FERRY_MIGRATION_ACTIVE || i->status == FERRY_MIGRATION_DEVICE)) {
		/* Until a pass measured the bandwidth there is no estimate yet. */
		uint64_t e = i->expected_downtime_ms ? i->expected_downtime_ms : downtime_limit_ms;
		json_object_set_new(o, "expected-downtime", json_integer((json_int_t)e));
	}
}

/* What this side alone reports: placement (destination), stall and throttle (source). */
static void info_side(json_t *o, const ferry_migration_info *i)
{
	json_object_set_new(o, "x-incoming", json_boolean(i->incoming));
	if (i->incoming && i->placement)
		json_object_set_new(o, "x-placement", json_string(ferry_migration_param_find("x-placement")->values[i->placement]));
	if (!i->incoming)
		json_object_set_new(o, "x-stalled", json_boolean(i->stalled));
	if (i->status != FERRY_MIGRATION_SETUP)
		json_object_set_new(o, "x-user-copy", json_boolean(i->user_copy));
	/* QEMU shows cpu-throttle-percentage while a throttle is on. */
	if (i->cpu_throttle_percentage)
		json_object_set_new(o, "cpu-throttle-percentage",
				    json_integer((json_int_t)i->cpu_throttle_percentage));
	if (i->cpu_throttle_peak)
		json_object_set_new(o, "x-cpu-throttle",
				    json_pack("{s:I,s:I}", "peak", (json_int_t)i->cpu_throttle_peak,
					      "raises", (json_int_t)i->cpu_throttle_raises));
}

/* One live device's figures: what this side measured of it. */
static json_t *info_device(ferry_vm_t *vm, unsigned k, bool incoming)
{
	ferry_live_device_stats d;
	if (ferry_live_device_stats_get(vm, k, &d))
		return NULL;
	json_t *o = json_pack("{s:s,s:I,s:I,s:I}", "id", d.id, "instance", (json_int_t)d.instance,
			      "bytes", (json_int_t)d.bytes, "buffers", (json_int_t)d.buffers);
	if (incoming) {
		json_object_set_new(o, "load-ms", json_integer((json_int_t)d.load_ms));
		json_object_set_new(o, "apply-ms", json_integer((json_int_t)d.apply_ms));
		json_object_set_new(o, "reordered", json_integer((json_int_t)d.reordered));
	} else {
		json_object_set_new(o, "save-ms", json_integer((json_int_t)d.save_ms));
	}
	return o;
}

/*
 * "x-device-state" (only with live devices) and "x-downtime-split": the
 * source's once its downtime is known, the destination's device part.
 */
static void info_devices(json_t *o, const ferry_migration_info *i, ferry_vm_t *vm)
{
	if (i->live_devices) {
		json_t *list = json_array();
		for (unsigned k = 0; k < i->live_devices; k++) {
			json_t *d = info_device(vm, k, i->incoming);
			if (d)
				json_array_append_new(list, d);
		}
		json_object_set_new(o, "x-device-state",
				    json_pack("{s:I,s:I,s:I,s:o}", "devices", (json_int_t)i->live_devices,
					      "precopy-bytes", (json_int_t)i->device_precopy_bytes,
					      "stop-copy-bytes", (json_int_t)i->device_stopcopy_bytes,
					      "list", list));
	}
	if (!i->incoming && i->status == FERRY_MIGRATION_COMPLETED) /* precopy or postcopy */
		json_object_set_new(o, "x-downtime-split",
				    json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "ram",
					      (json_int_t)i->downtime_ram_ms, "device",
					      (json_int_t)i->downtime_device_ms, "other",
					      (json_int_t)i->downtime_other_ms, "expected",
					      (json_int_t)i->downtime_expected_ms, "downtime-us",
					      (json_int_t)i->downtime_us, "expected-us",
					      (json_int_t)i->downtime_expected_us));
	else if (i->incoming && i->live_devices && i->status == FERRY_MIGRATION_COMPLETED)
		json_object_set_new(o, "x-downtime-split",
				    json_pack("{s:I}", "device", (json_int_t)i->downtime_device_ms));
}

/*
 * query-migrate's answer. downtime_limit_ms: what expected-downtime starts
 * at (QEMU's rule); vm: the live devices' own figures; blocktime: the
 * capability postcopy-blocktime is on.
 */
static json_t *info_json(const ferry_migration_info *i, uint64_t downtime_limit_ms, ferry_vm_t *vm,
			 bool blocktime)
{
	json_t *o = json_pack("{s:s}", "status", ferry_migration_status_name(i->status));
	if (i->status == FERRY_MIGRATION_NONE)
		return o;
	info_times(o, i, downtime_limit_ms);
	json_object_set_new(o, "ram", info_ram(i));
	if (i->multifd_channels)
		json_object_set_new(o, "x-multifd", info_multifd(i));
	if (i->postcopy || status_postcopy(i->status)) {
		if (i->incoming && blocktime)
			info_blocktime(o, i);
		json_object_set_new(o, "x-postcopy", info_postcopy(i));
	}
	if (i->hint_cmds)
		json_object_set_new(o, "x-free-page-hints",
				    json_pack("{s:I,s:I,s:I}", "commands", (json_int_t)i->hint_cmds,
					      "skipped-pages", (json_int_t)i->hint_skipped, "wait-ms",
					      (json_int_t)i->hint_wait_ms));
	if (i->status == FERRY_MIGRATION_FAILED || (status_postcopy(i->status) && i->error_desc[0]))
		json_object_set_new(o, "error-desc", json_string(i->error_desc));
	info_devices(o, i, vm);
	info_side(o, i);
	return o;
}

/*
 * QEMU's socket-address: the addresses an incoming migration listens on,
 * as SocketAddress ({"type": "inet", "host", "port"} with the port a
 * string, or {"type": "unix", "path"}). NULL if it has none.
 */
static json_t *socket_address(host *h)
{
	char uri[512];
	if (ferry_migration_incoming_address(h->vm, uri, sizeof(uri)))
		return NULL;
	if (!strncmp(uri, "unix:", 5))
		return json_pack("[{s:s,s:s}]", "type", "unix", "path", uri + 5);
	char *colon = strrchr(uri, ':');
	if (strncmp(uri, "tcp:", 4) || !colon || colon < uri + 4)
		return NULL;
	*colon = 0;
	char *host = uri + 4;
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		host[hl - 1] = 0;
		host++;
	}
	return json_pack("[{s:s,s:s,s:s}]", "type", "inet", "host", host, "port", colon + 1);
}

json_t *host_query_migrate(host *h)
{
	ferry_migration_info i;
	ferry_migration_query(h->vm, &i);
	/* QEMU answers {} before the first migration. */
	json_t *o = i.status == FERRY_MIGRATION_NONE ? json_object()
					       : info_json(&i, h->params.downtime_limit_ms, h->vm,
							   h->cap_blocktime);
	if (h->dir == HOST_DIR_IN && h->inmigrate && h->incoming_started) {
		json_t *sa = socket_address(h);
		if (sa)
			json_object_set_new(o, "socket-address", sa);
	}
	if (h->prev_incoming)
		json_object_set(o, "x-previous", h->prev_incoming);
	return o;
}

/* Completes an op's request after the events it caused went out. */
static void op_return(host *h, host_op *op, json_t *ret)
{
	host_drain_events(h);
	if (op->req)
		ferry_qmp_req_return(op->req, ret);
	else
		json_decref(ret);
}

#define op_error(h, op, ...)                                                    \
	do {                                                                    \
		host_drain_events(h);                                           \
		if ((op)->req)                                                  \
			ferry_qmp_req_error((op)->req, FERRY_QMP_GENERIC, __VA_ARGS__); \
	} while (0)

static json_t *steps_json(const host *h, const uint64_t *steps)
{
	json_t *a = json_array();
	for (unsigned i = 0; i < ferry_guest_vcpus(h->g); i++)
		json_array_append_new(a, json_integer((json_int_t)steps[i]));
	return a;
}

/* ------------------------------------------------------------------ */
/* Destination life cycle.                                             */

/* "Failed to listen on 'unix:/x': /x is in use by another server". */
static void listen_error(const char *uri, int r, char *err, size_t elen)
{
	bool unix_ = !strncmp(uri, "unix:", 5);
	if (unix_ && r == -EADDRINUSE)
		snprintf(err, elen, "Failed to listen on '%s': %s is in use by another server", uri,
			 uri + 5);
	else if (unix_ && r == -ENOTSOCK)
		snprintf(err, elen, "Failed to listen on '%s': %s exists and is not a socket", uri,
			 uri + 5);
	else
		snprintf(err, elen, "Failed to listen on '%s': %s", uri, ferry_strerror(r));
}

/* Records the socket file a listen on uri just created, to remove it later. */
static void note_sock(ferry_sock_file *f, const char *uri)
{
	ferry_sock_file_remove(f); /* a previous one, if still there */
	ferry_sock_file_note(f, uri);
}

void host_incoming_release(host *h)
{
	ferry_sock_file_remove(&h->in_sock);
	ferry_sock_file_remove(&h->recover_sock);
}

/* An incoming migration on uri, or on fd (>= 0; taken). */
static int incoming_begin(host *h, const char *uri, int fd, char *err, size_t elen)
{
	ferry_migration_params p = h->params;
	int r = host_tls_resolve(&p, true, err, elen);
	if (r) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	ferry_migration_set_incoming_params(h->vm, &p); /* libferry takes its references */
	host_drain_events(h); /* the previous migration's events, with the old direction */
	h->ev_last = FERRY_MIGRATION_NONE;
	h->dir = HOST_DIR_IN;
	h->in_ran = false;
	r = fd >= 0 ? ferry_migration_incoming_fd(h->vm, fd) : ferry_migration_incoming(h->vm, uri);
	if (r == -EBUSY) {
		snprintf(err, elen, "%s", msg_in_progress);
		return r;
	}
	if (r && fd >= 0) {
		snprintf(err, elen, "Cannot receive a migration on the file descriptor: %s",
			 ferry_strerror(r));
		return r;
	}
	if (r) {
		listen_error(uri, r, err, elen);
		return r;
	}
	if (fd < 0)
		note_sock(&h->in_sock, uri);
	/* A port 0 listener listens again on the port it got (--incoming). */
	if (h->incoming == HOST_INCOMING_URI)
		ferry_migration_incoming_address(h->vm, h->incoming_uri, sizeof(h->incoming_uri));
	h->incoming_started = true;
	h->inmigrate = true;
	host_drain_events(h);
	return 0;
}

int host_incoming_start(host *h, const char *uri, char *err, size_t elen)
{
	int r = ferry_uri_validate(uri, err, elen);
	return r ? r : incoming_begin(h, uri, -1, err, elen);
}

int host_incoming_start_fd(host *h, int fd, char *err, size_t elen)
{
	return incoming_begin(h, "fd", fd, err, elen);
}

void host_on_resume(host *h)
{
	if (h->dir != HOST_DIR_IN || h->in_ran || !h->incoming_started)
		return;
	h->in_ran = true;
	fprintf(stderr, "ferry host: incoming migration: the guest runs here now\n");
}

/* One line on stderr for a migration that ended. */
static void log_final(host *h, ferry_migration_status s, const ferry_migration_info *i)
{
	const char *dir = h->dir == HOST_DIR_IN ? "incoming migration" : "migration";
	if (s == FERRY_MIGRATION_COMPLETED && h->dir == HOST_DIR_OUT)
		fprintf(stderr, "ferry host: migration completed in %" PRIu64 " ms (downtime %" PRIu64
			" ms, %" PRIu64 " bytes sent)\n",
			i->total_time_ms, i->downtime_ms, i->transferred);
	else if (s == FERRY_MIGRATION_COMPLETED)
		fprintf(stderr, "ferry host: incoming migration completed in %" PRIu64 " ms (%" PRIu64
			" bytes received)\n",
			i->total_time_ms, i->transferred);
	else if (h->dir == HOST_DIR_OUT)
		fprintf(stderr, "ferry host: %s %s%s%s\n", dir, ferry_migration_status_name(s),
			i->error_desc[0] ? ": " : "", i->error_desc);
}

/* Worker: waits for the failed migration's thread, then wipes the guest. */
static void reset_work(host *h, host_op *op)
{
	ferry_migration_wait(h->vm, -1);
	ferry_vm_stop(h->vm);
	op->result = ferry_guest_reset(h->g);
}

static void reset_done(host *h, host_op *op)
{
	char err[512];
	if (op->result) {
		fprintf(stderr, "ferry host: cannot reset the guest for the next migration: %s\n",
			ferry_strerror(op->result));
		host_quit(h, 1);
		return;
	}
	h->incoming_started = false;
	if (h->incoming == HOST_INCOMING_URI &&
	    host_incoming_start(h, h->incoming_uri, err, sizeof(err))) {
		fprintf(stderr, "ferry host: cannot wait for a migration again: %s\n", err);
		host_quit(h, 1);
	}
}

void host_on_status(host *h, ferry_migration_status s)
{
	if (!status_final(s) || h->dir == HOST_DIR_NONE)
		return;
	ferry_migration_info i;
	ferry_migration_query(h->vm, &i);
	log_final(h, s, &i);
	if (h->dir == HOST_DIR_OUT) {
		if (s == FERRY_MIGRATION_COMPLETED)
			h->postmigrate = true;
		return;
	}
	host_incoming_release(h); /* the listener is done with */
	if (s == FERRY_MIGRATION_COMPLETED) {
		h->inmigrate = false;
		h->ever_ran = true;
		json_decref(h->prev_incoming);
		h->prev_incoming = NULL;
		return;
	}
	json_decref(h->prev_incoming);
	h->prev_incoming = info_json(&i, 0, h->vm, h->cap_blocktime);
	json_object_set_new(h->prev_incoming, "status", json_string(ferry_migration_status_name(s)));
	if (h->exit_on_error) {
		fprintf(stderr, "ferry host: incoming migration %s%s%s\n", ferry_migration_status_name(s),
			i.error_desc[0] ? ": " : "", i.error_desc);
		host_quit(h, 1);
		return;
	}
	fprintf(stderr, "ferry host: incoming migration %s%s%s; discarding it and waiting again\n",
		ferry_migration_status_name(s), i.error_desc[0] ? ": " : "", i.error_desc);
	host_op_submit_urgent(h, host_op_new("reset", NULL, NULL, NULL, reset_work, reset_done));
}

/* ------------------------------------------------------------------ */
/* migrate, migrate-incoming, migrate_cancel, query-migrate.           */

static void migrate_done(host *h, host_op *op)
{
	const char *uri = json_string_value(json_object_get(op->args, "uri"));
	char err[512];
	if (h->inmigrate) {
		op_error(h, op, "%s", msg_inmigrate);
		return;
	}
	if (status_busy(mig_status(h))) {
		op_error(h, op, "%s", msg_in_progress);
		return;
	}
	int fd = -1;
	if (host_uri_is_fd(uri))
		fd = host_fd_for_migration(h, op->req, uri, true, err, sizeof(err));
	if (fd < 0 && (host_uri_is_fd(uri) || ferry_uri_validate(uri, err, sizeof(err)))) {
		op_error(h, op, "%s", err);
		return;
	}
	ferry_migration_params p = h->params;
	if (host_tls_resolve(&p, false, err, sizeof(err))) {
		if (fd >= 0)
			close(fd);
		op_error(h, op, "%s", err);
		return;
	}
	host_drain_events(h);
	h->ev_last = FERRY_MIGRATION_NONE;
	h->dir = HOST_DIR_OUT;
	int r = fd >= 0 ? ferry_migration_start_fd(h->vm, fd, &p) : ferry_migration_start(h->vm, uri, &p);
	if (r == -EBUSY)
		op_error(h, op, "%s", msg_in_progress);
	else if (r)
		op_error(h, op, "Cannot start the migration: %s", ferry_strerror(r));
	else
		op_return(h, op, NULL);
}

/* "resume": postcopy recovery, answered at once; the reconnect happens in libferry. */
static void migrate_resume(host *h, ferry_qmp_req *req, const char *uri)
{
	char err[512];
	if (ferry_uri_validate(uri, err, sizeof(err)))
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", err);
	else if (h->dir != HOST_DIR_OUT || ferry_migration_resume(h->vm, uri))
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "Cannot resume if there is no paused migration");
	else
		ferry_qmp_req_return(req, NULL);
}

/*
 * QEMU 7.2's migrate plus 8.2's channels: detach is ignored (as QEMU);
 * blk and inc are refused when true with the message of a QEMU built
 * without block migration (Ferry has none).
 */
static const ferry_qmp_arg migrate_args[] = {
	{ "uri", FERRY_QMP_STR, true },
	{ "channels", FERRY_QMP_ARRAY, true, .elem = &host_migration_channel },
	{ "blk", FERRY_QMP_BOOL, true },
	{ "inc", FERRY_QMP_BOOL, true },
	{ "detach", FERRY_QMP_BOOL, true },
	{ "resume", FERRY_QMP_BOOL, true },
	{ NULL },
};

static void cmd_migrate(void *opaque, ferry_qmp_req *req, json_t *args)
{
	char uri[512], err[512];
	if (host_migration_uri(args, "migrate", uri, sizeof(uri), err, sizeof(err))) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", err);
		return;
	}
	if (json_is_true(json_object_get(args, "blk")) || json_is_true(json_object_get(args, "inc"))) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", msg_no_block);
		return;
	}
	if (json_is_true(json_object_get(args, "resume"))) {
		migrate_resume(opaque, req, uri);
		return;
	}
	json_t *a = json_pack("{s:s}", "uri", uri);
	host_op_submit(opaque, host_op_new("migrate", req, a, NULL, NULL, migrate_done));
	json_decref(a);
}

static void incoming_done(host *h, host_op *op)
{
	char err[512];
	if (h->incoming != HOST_INCOMING_DEFER) {
		op_error(h, op, "'-incoming' was not specified on the command line");
		return;
	}
	if (h->incoming_started || !h->inmigrate) {
		op_error(h, op, "The incoming migration has already been started");
		return;
	}
	char uri[512];
	if (host_migration_uri(op->args, "migrate-incoming", uri, sizeof(uri), err, sizeof(err))) {
		op_error(h, op, "%s", err);
		return;
	}
	json_t *eoe = json_object_get(op->args, "exit-on-error");
	h->exit_on_error = eoe ? json_is_true(eoe) : h->exit_on_error_flag;
	int fd = host_uri_is_fd(uri) ? host_fd_for_migration(h, op->req, uri, false, err, sizeof(err))
				     : -1;
	if (host_uri_is_fd(uri) ? fd < 0 || host_incoming_start_fd(h, fd, err, sizeof(err))
				: host_incoming_start(h, uri, err, sizeof(err)))
		op_error(h, op, "%s", err);
	else
		op_return(h, op, NULL);
}

static const ferry_qmp_arg incoming_args[] = {
	{ "uri", FERRY_QMP_STR, true },
	{ "channels", FERRY_QMP_ARRAY, true, .elem = &host_migration_channel },
	{ "exit-on-error", FERRY_QMP_BOOL, true },
	{ NULL },
};

static void cmd_migrate_incoming(void *opaque, ferry_qmp_req *req, json_t *args)
{
	host_op_submit(opaque,
		       host_op_new("migrate-incoming", req, args, NULL, NULL, incoming_done));
}

static void cmd_migrate_cancel(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host *h = opaque;
	/* Nothing to cancel is not an error (QEMU's migrate_cancel neither). */
	ferry_migration_cancel(h->vm);
	host_drain_events(h);
	ferry_qmp_req_return(req, NULL);
}

static void cmd_query_migrate(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	ferry_qmp_req_return(req, host_query_migrate(opaque));
}

/* ------------------------------------------------------------------ */
/* Capabilities and parameters.                                        */

/*
 * QEMU's MigrationCapability, in its order: QEMU 7.2's, then the later
 * switchover-ack (8.0), dirty-limit (8.1) and mapped-ram (9.0).
 */
static const char *const qemu_caps[] = {
	"xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
	"postcopy-ram", "x-colo", "release-ram", "block", "return-path", "pause-before-switchover",
	"multifd", "dirty-bitmaps", "postcopy-blocktime", "late-block-activate", "x-ignore-shared",
	"validate-uuid", "background-snapshot", "zero-copy-send", "postcopy-preempt",
	"switchover-ack", "dirty-limit", "mapped-ram", NULL,
};

static const ferry_qmp_arg cap_status[] = {
	{ "capability", FERRY_QMP_ENUM, .values = qemu_caps },
	{ "state", FERRY_QMP_BOOL },
	{ NULL },
};
static const ferry_qmp_arg cap_status_t = { NULL, FERRY_QMP_OBJECT, .members = cap_status };
static const ferry_qmp_arg cap_list = { NULL, FERRY_QMP_ARRAY, .elem = &cap_status_t };
static const ferry_qmp_arg set_caps_args[] = {
	{ "capabilities", FERRY_QMP_ARRAY, .elem = &cap_status_t },
	{ NULL },
};

/*
 * Why a QEMU capability Ferry lacks cannot be on: QEMU's own message where
 * a QEMU build can lack it too (block migration, COLO), else Ferry's.
 */
static const char *cap_refusal(const char *name)
{
	static char buf[128];
	if (!strcmp(name, "block"))
		return msg_no_block;
	if (!strcmp(name, "x-colo"))
		return "QEMU compiled without replication module can't enable COLO";
	snprintf(buf, sizeof(buf), "Capability '%s' is not supported by this version of Ferry", name);
	return buf;
}

/*
 * The parsed capabilities applied to p and *events; false (req answered)
 * for one Ferry lacks.
 */
static bool caps_apply(ferry_qmp_req *req, json_t *caps, ferry_migration_params *p, bool *events,
		       bool *blocktime)
{
	json_t *c;
	size_t i;
	json_array_foreach(caps, i, c) {
		const char *name = json_string_value(json_object_get(c, "capability"));
		bool on = json_is_true(json_object_get(c, "state"));
		if (!strcmp(name, "events"))
			*events = on;
		else if (!strcmp(name, "postcopy-blocktime"))
			*blocktime = on;
		else if (!strcmp(name, "multifd"))
			p->multifd = on;
		else if (!strcmp(name, "auto-converge"))
			p->auto_converge = on;
		else if (!strcmp(name, "postcopy-ram"))
			p->postcopy = on;
		else if (!strcmp(name, "postcopy-preempt"))
			p->postcopy_preempt = on;
		else if (!strcmp(name, "switchover-ack"))
			p->switchover_ack = on;
		else if (on) {
			ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", cap_refusal(name));
			return false;
		}
	}
	if (p->postcopy_preempt && !p->postcopy) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "Postcopy preempt requires postcopy-ram");
		return false;
	}
	return true;
}

static void cmd_set_capabilities(void *opaque, ferry_qmp_req *req, json_t *args)
{
	host *h = opaque;
	json_t *caps = json_object_get(args, "capabilities");
	if (migration_running(h)) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", msg_in_progress);
		return;
	}
	ferry_migration_params p = h->params;
	bool events = h->cap_events, blocktime = h->cap_blocktime;
	if (!caps_apply(req, caps, &p, &events, &blocktime))
		return;
	h->cap_events = events; /* gates MIGRATION and MIGRATION_PASS (host.c) */
	h->cap_blocktime = blocktime; /* gates query-migrate's postcopy-blocktime members */
	h->params = p;
	ferry_migration_set_incoming_params(h->vm, &h->params); /* the destination's part */
	ferry_qmp_req_return(req, NULL);
}

static void cmd_query_capabilities(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host *h = opaque;
	const struct { const char *name; bool on; } caps[] = {
		{ "events", h->cap_events },
		{ "multifd", h->params.multifd },
		{ "postcopy-ram", h->params.postcopy },
		{ "postcopy-preempt", h->params.postcopy_preempt },
		{ "auto-converge", h->params.auto_converge },
		{ "switchover-ack", h->params.switchover_ack },
		{ "postcopy-blocktime", h->cap_blocktime },
	};
	json_t *list = json_array();
	for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++)
		json_array_append_new(list, json_pack("{s:s,s:b}", "capability", caps[k].name, "state",
						      caps[k].on));
	ferry_qmp_req_return(req, list);
}

/* The QMP type of a libferry parameter (QEMU's schema names). */
static ferry_qmp_type qmp_type(ferry_migration_param_type t)
{
	switch (t) {
	case FERRY_MIGRATION_PARAM_BOOL: return FERRY_QMP_BOOL;
	case FERRY_MIGRATION_PARAM_I32: return FERRY_QMP_INT;
	case FERRY_MIGRATION_PARAM_U64: return FERRY_QMP_UINT64;
	case FERRY_MIGRATION_PARAM_SIZE: return FERRY_QMP_SIZE;
	case FERRY_MIGRATION_PARAM_ENUM: return FERRY_QMP_ENUM;
	default: return FERRY_QMP_UINT32; /* U32, and INT (multifd-zstd-level) */
	}
}

/*
 * migrate-set-parameters' arguments and query-migrate-parameters' reply:
 * libferry's parameter table, every member optional (QEMU's
 * MigrateSetParameters and MigrationParameters); filled once by
 * host_qmp_init().
 */
#define HOST_MAX_PARAMS 64
static ferry_qmp_arg params_args[HOST_MAX_PARAMS + 5];

/*
 * QEMU's max-postcopy-bandwidth: Ferry never caps postcopy (its rate
 * limiter is off once postcopy runs), so the only true value is QEMU's
 * default, 0 (no cap). Accepted as 0, listed as 0.
 */
#define POSTCOPY_BW "max-postcopy-bandwidth"
static const ferry_qmp_arg params_t = { NULL, FERRY_QMP_OBJECT, .members = params_args };

void host_qmp_init(void)
{
	size_t n;
	const ferry_migration_param_desc *t = ferry_migration_params_table(&n);
	assert(n <= HOST_MAX_PARAMS);
	for (size_t i = 0; i < n; i++)
		params_args[i] = (ferry_qmp_arg){ t[i].name, qmp_type(t[i].type), true,
						  .values = t[i].values };
	params_args[n] = (ferry_qmp_arg){ POSTCOPY_BW, FERRY_QMP_SIZE, true };
	/* host-tls.c's: ids of object-add's objects, and a name. */
	params_args[n + 1] = (ferry_qmp_arg){ "tls-creds", FERRY_QMP_STR, true };
	params_args[n + 2] = (ferry_qmp_arg){ "tls-hostname", FERRY_QMP_STR, true };
	params_args[n + 3] = (ferry_qmp_arg){ "tls-authz", FERRY_QMP_STR, true };
}

/* One parameter from its JSON value (already checked) into p: an enum by its index. */
static void param_from_json(ferry_migration_params *p, const ferry_migration_param_desc *d, json_t *v)
{
	int64_t k = 0;
	if (d->type == FERRY_MIGRATION_PARAM_ENUM)
		while (d->values[k] && strcmp(d->values[k], json_string_value(v)))
			k++;
	else
		k = json_is_boolean(v) ? json_is_true(v) : json_integer_value(v);
	ferry_migration_param_set(p, d, k);
}

/*
 * migrate-set-parameters: libferry's parameter table gives the names, the
 * types and the limits (and the limits' messages). Each given parameter
 * is set and checked in table order, and so is one whose lower limit is a
 * given one (max-cpu-throttle after cpu-throttle-initial): the first
 * problem is the reply and nothing changes.
 */
static void cmd_set_parameters(void *opaque, ferry_qmp_req *req, json_t *args)
{
	size_t n;
	const ferry_migration_param_desc *t = ferry_migration_params_table(&n);
	host *h = opaque;
	ferry_migration_params p = h->params;
	char err[256];
	json_t *pcbw = json_object_get(args, POSTCOPY_BW);
	if (pcbw && json_integer_value(pcbw)) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Parameter '" POSTCOPY_BW "' expects 0 (Ferry never caps postcopy)");
		return;
	}
	if (!host_tls_params_check(req, args))
		return;
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_object_get(args, t[i].name);
		if (v)
			param_from_json(&p, &t[i], v);
		if (!v && !(t[i].min_param && json_object_get(args, t[i].min_param)))
			continue;
		if (ferry_migration_param_check(&p, &t[i], err, sizeof(err))) {
			ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", err);
			return;
		}
	}
	if (h->dir == HOST_DIR_OUT && status_busy(mig_status(h))) {
		int r = ferry_migration_set_params(h->vm, &p);
		if (r && r != -ENOENT) { /* -ENOENT: it just ended; the values stay for the next */
			ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
					    "Cannot apply the parameters to the running migration: %s",
					    ferry_strerror(r));
			return;
		}
	}
	host_tls_params_set(args, &p);
	h->params = p;
	ferry_migration_set_incoming_params(h->vm, &h->params);
	ferry_qmp_req_return(req, NULL);
}

/* query-migrate-parameters: every entry of the table, in its order. */
static void cmd_query_parameters(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host *h = opaque;
	size_t n;
	const ferry_migration_param_desc *t = ferry_migration_params_table(&n);
	json_t *o = json_object();
	for (size_t i = 0; i < n; i++) {
		int64_t v = ferry_migration_param_get(&h->params, &t[i]);
		json_object_set_new(o, t[i].name,
				    t[i].type == FERRY_MIGRATION_PARAM_BOOL ? json_boolean(v)
				    : t[i].type == FERRY_MIGRATION_PARAM_ENUM ? json_string(t[i].values[v])
									 : json_integer(v));
	}
	json_object_set_new(o, POSTCOPY_BW, json_integer(0));
	host_tls_params_query(o, &h->params);
	ferry_qmp_req_return(req, o);
}

/* ------------------------------------------------------------------ */
/* Run state.                                                          */

/*
 * On a destination waiting for or receiving a migration, stop and cont say
 * whether the guest starts when it arrives (as QEMU's autostart): no event.
 */
static void stop_done(host *h, host_op *op)
{
	if (h->inmigrate) {
		ferry_migration_set_autostart(h->vm, false);
		op_return(h, op, NULL);
		return;
	}
	bool was = ferry_vm_is_running(h->vm);
	int r = ferry_vm_stop(h->vm);
	if (r) {
		op_error(h, op, "Cannot stop the guest: %s", ferry_strerror(r));
		return;
	}
	if (was)
		host_post_event(h, FERRY_EVENT_STOP);
	op_return(h, op, NULL);
}

static void cont_done(host *h, host_op *op)
{
	if (h->inmigrate) {
		ferry_migration_set_autostart(h->vm, true);
		op_return(h, op, NULL);
		return;
	}
	if (h->dir == HOST_DIR_OUT && status_busy(mig_status(h))) {
		op_error(h, op, "%s", msg_in_progress);
		return;
	}
	bool was = ferry_vm_is_running(h->vm);
	int r = ferry_vm_start(h->vm);
	if (r) {
		op_error(h, op, "Cannot start the guest: %s", ferry_strerror(r));
		return;
	}
	if (!was)
		host_post_event(h, FERRY_EVENT_RESUME);
	h->postmigrate = false;
	h->ever_ran = true;
	op_return(h, op, NULL);
}

static void cmd_stop(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host_ops_interrupt(opaque, "stop"); /* a running x-run-until ends first */
	host_op_submit(opaque, host_op_new("stop", req, NULL, NULL, NULL, stop_done));
}

static void cmd_cont(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host_op_submit(opaque, host_op_new("cont", req, NULL, NULL, NULL, cont_done));
}

static void cmd_query_status(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host *h = opaque;
	bool running = false;
	const char *st;
	if (h->run_job) {
		running = true;
		st = "running";
	} else if (h->inmigrate) {
		st = "inmigrate";
	} else if (h->dir == HOST_DIR_OUT && mig_status(h) == FERRY_MIGRATION_DEVICE) {
		st = "finish-migrate";
	} else if ((running = ferry_vm_is_running(h->vm))) {
		st = "running";
	} else if (h->postmigrate) {
		st = "postmigrate";
	} else {
		st = h->ever_ran ? "paused" : "prelaunch";
	}
	/* QEMU 7.2's StatusInfo: singlestep is mandatory (Ferry has no single-step mode). */
	ferry_qmp_req_return(req, json_pack("{s:b,s:b,s:s}", "running", running, "singlestep", 0,
					    "status", st));
}

static void cmd_quit(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host *h = opaque;
	ferry_qmp_req_return(req, NULL);
	ferry_qmp_server_event(h->qmp, "SHUTDOWN",
			       json_pack("{s:b,s:s}", "guest", 0, "reason", "host-qmp-quit"),
			       ferry_qmp_wall_us());
	host_quit(h, 0);
}

/* ------------------------------------------------------------------ */
/* Ferry's own: query-guest-hash, x-run-until.                         */

static bool hash_check(host *h, host_op *op)
{
	op->verify = json_is_true(json_object_get(op->args, "verify"));
	if (!op->verify)
		return true;
	const char *why = NULL;
	if (ferry_vm_is_running(h->vm))
		why = "Guest must be stopped to verify";
	else if (migration_running(h))
		why = msg_in_progress;
	if (!why)
		return true;
	op_error(h, op, "%s", why);
	return false;
}

static void hash_work(host *h, host_op *op)
{
	op->was_running = ferry_guest_running(h->g);
	if (op->verify) {
		op->result = ferry_guest_verify(h->g, &op->vr);
		op->hash = op->vr.hash;
	} else {
		op->hash = ferry_guest_hash(h->g);
	}
	ferry_guest_steps(h->g, op->steps);
}

static void hash_done(host *h, host_op *op)
{
	if (op->result) {
		op_error(h, op, "Cannot verify the guest: %s", ferry_strerror(op->result));
		return;
	}
	char hex[24];
	snprintf(hex, sizeof(hex), "%016" PRIx64, op->hash);
	json_t *o = json_pack("{s:s,s:o,s:b}", "hash", hex, "steps", steps_json(h, op->steps),
			      "running", op->was_running);
	if (op->verify) {
		const ferry_verify_result *v = &op->vr;
		snprintf(hex, sizeof(hex), "%016" PRIx64, v->twin_hash);
		json_object_set_new(o, "matches-twin", json_boolean(v->matches));
		json_object_set_new(o, "twin-hash", json_string(hex));
		json_object_set_new(o, "pages-compared", json_integer((json_int_t)v->pages_compared));
		json_object_set_new(o, "pages-differing", json_integer((json_int_t)v->pages_differing));
		if (!v->matches)
			json_object_set_new(o, "first-difference",
					    json_pack("{s:s,s:I}", "block", v->block, "page",
						      (json_int_t)v->page));
	}
	op_return(h, op, o);
}

static const ferry_qmp_arg hash_args[] = { { "verify", FERRY_QMP_BOOL, true }, { NULL } };

static void cmd_query_guest_hash(void *opaque, ferry_qmp_req *req, json_t *args)
{
	host_op_submit(opaque, host_op_new("query-guest-hash", req, args, hash_check,
						   hash_work, hash_done));
}

static bool run_check(host *h, host_op *op)
{
	const char *why = h->inmigrate ? msg_inmigrate : migration_running(h) ? msg_in_progress : NULL;
	if (why) {
		op_error(h, op, "%s", why);
		return false;
	}
	h->run_job = true;
	return true;
}

/* The targets: "steps", or the current counts plus "advance". */
static void run_targets(host *h, host_op *op, const uint64_t *cur, uint64_t *t)
{
	json_t *steps = json_object_get(op->args, "steps");
	uint64_t adv = (uint64_t)json_integer_value(json_object_get(op->args, "advance"));
	for (unsigned i = 0; i < ferry_guest_vcpus(h->g); i++)
		t[i] = steps ? (uint64_t)json_integer_value(json_array_get(steps, i)) : cur[i] + adv;
}

static void run_work(host *h, host_op *op)
{
	if (atomic_load(&op->cancel)) { /* interrupted before it started */
		op->result = -EINTR;
		return;
	}
	unsigned n = ferry_guest_vcpus(h->g);
	uint64_t t[FERRY_GUEST_MAX_VCPUS];
	op->was_running = ferry_vm_is_running(h->vm);
	op->result = ferry_vm_stop(h->vm);
	if (op->result)
		return;
	ferry_guest_steps(h->g, op->steps); /* exact now: the vCPUs are stopped */
	run_targets(h, op, op->steps, t);
	for (unsigned i = 0; i < n; i++) {
		if (t[i] < op->steps[i]) {
			op->result = -ERANGE;
			if (op->was_running && ferry_vm_start(h->vm)) /* refused: as if it never came */
				fprintf(stderr, "ferry host: cannot restart the guest after a refused x-run-until\n");
			return;
		}
	}
	if (op->was_running)
		host_post_event(h, FERRY_EVENT_STOP);
	op->result = ferry_guest_run_until_ex(h->g, t, &op->cancel);
	ferry_guest_steps(h->g, op->steps);
}

static void run_interrupt(host *h, host_op *op)
{
	(void)op;
	ferry_guest_kick(h->g);
}

static void run_done(host *h, host_op *op)
{
	h->run_job = false;
	if (op->result == -ERANGE) {
		json_t *a = steps_json(h, op->steps);
		char *cur = json_dumps(a, 0);
		op_error(h, op, "Parameter 'steps' is below the current step counts %s", cur);
		free(cur);
		json_decref(a);
		return;
	}
	h->ever_ran = true;
	if (op->result == -EINTR)
		op_error(h, op, "x-run-until was interrupted by '%s'",
			 op->cancelled_by ? op->cancelled_by : "quit");
	else if (op->result == -EINVAL)
		op_error(h, op, "The vCPUs of an idle guest never step");
	else if (op->result)
		op_error(h, op, "Cannot run the guest: %s", ferry_strerror(op->result));
	else
		op_return(h, op, json_pack("{s:o}", "steps", steps_json(h, op->steps)));
}

static const ferry_qmp_arg step_t = { NULL, FERRY_QMP_UINT64 };
static const ferry_qmp_arg run_args[] = {
	{ "steps", FERRY_QMP_ARRAY, true, .elem = &step_t },
	{ "advance", FERRY_QMP_UINT64, true },
	{ NULL },
};

static void cmd_run_until(void *opaque, ferry_qmp_req *req, json_t *args)
{
	host *h = opaque;
	json_t *steps = json_object_get(args, "steps");
	bool adv = json_object_get(args, "advance") != NULL;
	if (!steps == !adv) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s",
				    adv ? "Parameters 'steps' and 'advance' are mutually exclusive"
					: "Parameter 'steps' or 'advance' is required");
		return;
	}
	unsigned n = ferry_guest_vcpus(h->g);
	size_t i;
	json_t *v;
	bool ok = !steps || json_array_size(steps) == n;
	json_array_foreach(steps, i, v)
		ok = ok && json_is_integer(v) && json_integer_value(v) >= 0;
	if (!ok) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Parameter 'steps' expects an array of %u step counts (one per vCPU)",
				    n);
		return;
	}
	host_op *op = host_op_new("x-run-until", req, args, run_check, run_work, run_done);
	if (op)
		op->interrupt = run_interrupt;
	host_op_submit(h, op);
}

/* ------------------------------------------------------------------ */
/* Postcopy: migrate-start-postcopy, migrate-pause, migrate-recover.    */

static void cmd_start_postcopy(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host *h = opaque;
	/* QEMU's order: the capability first, then whether a migration runs. */
	int r = !h->params.postcopy	  ? -EINVAL
		: h->dir == HOST_DIR_OUT ? ferry_migration_start_postcopy(h->vm)
					 : -ENOENT;
	if (r == -EINVAL)
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Enable postcopy with migrate_set_capability before the start of migration");
	else if (r)
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Postcopy must be started after migration has been started");
	else
		ferry_qmp_req_return(req, NULL);
}

static void cmd_migrate_pause(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)args;
	host *h = opaque;
	if (ferry_migration_pause(h->vm))
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "migrate-pause is currently only supported during postcopy-active state");
	else
		ferry_qmp_req_return(req, NULL);
}

static const ferry_qmp_arg recover_args[] = { { "uri", FERRY_QMP_STR }, { NULL } };

static void cmd_migrate_recover(void *opaque, ferry_qmp_req *req, json_t *args)
{
	host *h = opaque;
	char err[512];
	const char *uri = json_string_value(json_object_get(args, "uri"));
	bool paused = h->dir == HOST_DIR_IN && mig_status(h) == FERRY_MIGRATION_POSTCOPY_PAUSED;
	int fd = host_uri_is_fd(uri) && paused
			 ? host_fd_for_migration(h, req, uri, false, err, sizeof(err))
			 : -1;
	if (host_uri_is_fd(uri) ? paused && fd < 0 : ferry_uri_validate(uri, err, sizeof(err))) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", err);
		return;
	}
	int r = !paused   ? -ENOENT
		: fd >= 0 ? ferry_migration_recover_fd(h->vm, fd)
			  : ferry_migration_recover(h->vm, uri);
	if (r == -ENOENT) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Migrate recover can only be run when postcopy is paused.");
	} else if (r && host_uri_is_fd(uri)) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
				    "Ferry recovers a postcopy migration on a listening socket: "
				    "'%s' is not one (%s)", uri, ferry_strerror(r));
	} else if (r) {
		listen_error(uri, r, err, sizeof(err));
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", err);
	} else {
		if (fd < 0)
			note_sock(&h->recover_sock, uri);
		ferry_qmp_req_return(req, NULL);
	}
}

/* ------------------------------------------------------------------ */
/* What the guest is: the queries orchestrators issue on connect.       */

/* The QEMU release whose migration QMP Ferry implements (docs/qmp.md). */
#define HOST_QEMU_MAJOR 7
#define HOST_QEMU_MINOR 2
#define HOST_QEMU_MICRO 0

/* The vCPUs run the host's own code: the target is the build's arch (QEMU's SysEmuTarget names). */
#if defined(__x86_64__)
#define HOST_TARGET "x86_64"
#elif defined(__i386__)
#define HOST_TARGET "i386"
#elif defined(__aarch64__)
#define HOST_TARGET "aarch64"
#elif defined(__riscv) && __riscv_xlen == 64
#define HOST_TARGET "riscv64"
#elif defined(__powerpc64__)
#define HOST_TARGET "ppc64"
#elif defined(__s390x__)
#define HOST_TARGET "s390x"
#else
#error "query-target: no QEMU target name for this architecture"
#endif

/* The synthetic guest's machine type (Ferry's own: x- prefix). */
#define HOST_MACHINE "x-ferry-synthetic"

json_t *host_version(void)
{
	char pkg[64];
	snprintf(pkg, sizeof(pkg), "ferry-%s", ferry_version_string());
	return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "major", HOST_QEMU_MAJOR, "minor",
			 HOST_QEMU_MINOR, "micro", HOST_QEMU_MICRO, "package", pkg);
}

/* A command without arguments answering a fixed value built by fn. */
static void reply_noargs(ferry_qmp_req *req, json_t *args, json_t *(*fn)(host *h), host *h)
{
	(void)args;
	ferry_qmp_req_return(req, fn(h));
}

static json_t *version_json(host *h)
{
	return json_deep_copy(h->version);
}

/* QEMU without -name answers {}: the synthetic guest has no name. */
static json_t *name_json(host *h)
{
	(void)h;
	return json_object();
}

static json_t *uuid_json(host *h)
{
	const uint8_t *u = ferry_vm_uuid(h->vm);
	char s[40];
	snprintf(s, sizeof(s),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
		 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
	return json_pack("{s:s}", "UUID", s);
}

/* The vCPUs are host threads: no KVM, and Ferry has no KVM accelerator at all. */
static json_t *kvm_json(host *h)
{
	(void)h;
	return json_pack("{s:b,s:b}", "enabled", 0, "present", 0);
}

/* One entry per vCPU thread, with its thread id; no topology (props), as it has none. */
static json_t *cpus_json(host *h)
{
	json_t *a = json_array();
	for (unsigned i = 0; i < ferry_guest_vcpus(h->g); i++) {
		char path[32];
		snprintf(path, sizeof(path), "/guest/vcpu%u", i);
		json_array_append_new(a, json_pack("{s:i,s:s,s:i,s:s}", "cpu-index", (int)i, "qom-path",
						   path, "thread-id", ferry_guest_vcpu_tid(h->g, i),
						   "target", HOST_TARGET));
	}
	return a;
}

/* No block devices, no block jobs, no PCI bus: empty lists. */
static json_t *empty_json(host *h)
{
	(void)h;
	return json_array();
}

static json_t *machines_json(host *h)
{
	(void)h;
	return json_pack("[{s:s,s:b,s:i,s:b,s:b,s:b,s:s}]", "name", HOST_MACHINE, "is-default", 1,
			 "cpu-max", FERRY_GUEST_MAX_VCPUS, "hotpluggable-cpus", 0,
			 "numa-mem-supported", 0, "deprecated", 0, "default-ram-id", "pc.ram");
}

static json_t *target_json(host *h)
{
	(void)h;
	return json_pack("{s:s}", "arch", HOST_TARGET);
}

#define NOARGS_CMD(cmd, fn) \
	static void cmd(void *opaque, ferry_qmp_req *req, json_t *args) \
	{ \
		reply_noargs(req, args, fn, opaque); \
	}

NOARGS_CMD(cmd_query_version, version_json)
NOARGS_CMD(cmd_query_name, name_json)
NOARGS_CMD(cmd_query_uuid, uuid_json)
NOARGS_CMD(cmd_query_kvm, kvm_json)
NOARGS_CMD(cmd_query_cpus_fast, cpus_json)
NOARGS_CMD(cmd_query_empty, empty_json)
NOARGS_CMD(cmd_query_machines, machines_json)
NOARGS_CMD(cmd_query_target, target_json)

/*
 * The one table: each command's handler, arguments (checked by the
 * server before the handler runs) and reply; query-commands and
 * query-qmp-schema are generated from it, and docs/qmp.md is checked
 * against it (tests/qmp/test-qmp.py).
 */
const ferry_qmp_command host_commands[] = {
	{ "migrate-start-postcopy", cmd_start_postcopy, NULL, NULL },
	{ "migrate-pause", cmd_migrate_pause, NULL, NULL, FERRY_QMP_ALLOW_OOB },
	{ "migrate-recover", cmd_migrate_recover, recover_args, NULL, FERRY_QMP_ALLOW_OOB },
	{ "migrate", cmd_migrate, migrate_args, NULL },
	{ "migrate-incoming", cmd_migrate_incoming, incoming_args, NULL },
	{ "migrate_cancel", cmd_migrate_cancel, NULL, NULL },
	{ "query-migrate", cmd_query_migrate, NULL, &host_ret_migration_info },
	{ "migrate-set-capabilities", cmd_set_capabilities, set_caps_args, NULL },
	{ "query-migrate-capabilities", cmd_query_capabilities, NULL, &cap_list },
	{ "migrate-set-parameters", cmd_set_parameters, params_args, NULL },
	{ "query-migrate-parameters", cmd_query_parameters, NULL, &params_t },
	{ "stop", cmd_stop, NULL, NULL },
	{ "cont", cmd_cont, NULL, NULL },
	{ "query-status", cmd_query_status, NULL, &host_ret_status },
	{ "quit", cmd_quit, NULL, NULL },
	{ "query-guest-hash", cmd_query_guest_hash, hash_args, &host_ret_guest_hash },
	{ "x-run-until", cmd_run_until, run_args, &host_ret_steps },
	{ "query-version", cmd_query_version, NULL, &host_ret_version },
	{ "query-name", cmd_query_name, NULL, &host_ret_name },
	{ "query-uuid", cmd_query_uuid, NULL, &host_ret_uuid },
	{ "query-kvm", cmd_query_kvm, NULL, &host_ret_kvm },
	{ "query-cpus-fast", cmd_query_cpus_fast, NULL, &host_ret_cpus },
	{ "query-block", cmd_query_empty, NULL, &host_ret_empty_list },
	{ "query-block-jobs", cmd_query_empty, NULL, &host_ret_empty_list },
	{ "query-pci", cmd_query_empty, NULL, &host_ret_empty_list },
	{ "query-machines", cmd_query_machines, NULL, &host_ret_machines },
	{ "query-target", cmd_query_target, NULL, &host_ret_target },
	{ "getfd", host_cmd_getfd, host_getfd_args, NULL },
	{ "closefd", host_cmd_closefd, host_getfd_args, NULL },
	{ "add-fd", host_cmd_add_fd, host_add_fd_args, &host_ret_add_fd },
	{ "remove-fd", host_cmd_remove_fd, host_remove_fd_args, NULL },
	{ "query-fdsets", host_cmd_query_fdsets, NULL, &host_ret_fdsets },
	{ "object-add", host_cmd_object_add, NULL, NULL, 0, &host_object_add_args_t },
	{ "object-del", host_cmd_object_del, host_object_del_args, NULL },
	{ NULL },
};
