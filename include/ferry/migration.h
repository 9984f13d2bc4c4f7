/* SPDX-License-Identifier: MIT */
/*
 * Live migration of a ferry_vm_t: outgoing (source) and incoming
 * (destination), parameters, progress and events.
 *
 * One migration at a time per VM, in either direction. The migration runs in
 * libferry's own threads (mig/src/main, mig/src/rp on the source; mig/dst/main
 * on the destination); these functions only start, query and cancel it, and
 * return quickly: they are safe to call from an event loop.
 *
 * URIs: "tcp:HOST:PORT" and "unix:PATH". The connection also carries the
 * return path (destination to source messages).
 *
 * Failure rules: a precopy migration that fails or is cancelled leaves the
 * source guest as it was (running if it ran). An incoming migration that
 * fails leaves the destination guest stopped; its RAM content is undefined.
 */
#ifndef FERRY_MIGRATION_H
#define FERRY_MIGRATION_H

#include "ferry/tls.h"
#include "ferry/vm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Status, with QEMU's names (ferry_migration_status_name()). */
typedef enum ferry_migration_status {
	FERRY_MIGRATION_NONE = 0,
	FERRY_MIGRATION_SETUP,
	FERRY_MIGRATION_ACTIVE,
	FERRY_MIGRATION_DEVICE,
	FERRY_MIGRATION_COMPLETED,
	FERRY_MIGRATION_FAILED,
	FERRY_MIGRATION_CANCELLING,
	FERRY_MIGRATION_CANCELLED,
	/*
	 * Postcopy: the destination runs the guest while RAM still arrives.
	 * From here on neither side can go back: a broken connection pauses
	 * both (POSTCOPY_PAUSED) until ferry_migration_recover() on the
	 * destination and ferry_migration_resume() on the source reconnect them
	 * (POSTCOPY_RECOVER while they do).
	 */
	FERRY_MIGRATION_POSTCOPY_ACTIVE,
	FERRY_MIGRATION_POSTCOPY_PAUSED,
	FERRY_MIGRATION_POSTCOPY_RECOVER,
} ferry_migration_status;

FERRY_EXTERN const char *ferry_migration_status_name(ferry_migration_status s);

/* Parameters (QEMU's names in comments). Start from ferry_migration_params_init(). */
typedef struct ferry_migration_params {
	uint32_t flags; /* none defined yet; must be 0 */
	uint64_t downtime_limit_ms; /* downtime-limit, default 300 */
	uint64_t max_bandwidth;     /* max-bandwidth, bytes/s; 0 = unlimited (default) */
	/*
	 * x-max-passes (Ferry's own): after this many passes without
	 * converging, report the stall (info.stalled) and keep trying. 0 = never
	 * report. Default 30.
	 */
	uint32_t max_passes;
	/*
	 * Capability multifd: RAM pages travel over multifd_channels extra
	 * connections (multifd-channels, default 2, 1..FERRY_MULTIFD_MAX_CHANNELS),
	 * each with its own thread doing zero detection and, with
	 * multifd_compression = FERRY_COMPRESS_ZSTD, compression at
	 * multifd_zstd_level (multifd-zstd-level, default 1, 1..20).
	 * Both sides must agree on multifd (the destination learns the rest
	 * from the stream).
	 */
	bool multifd;
	uint32_t multifd_channels;
	uint32_t multifd_compression;
	int multifd_zstd_level;
	/*
	 * Capability postcopy-ram (both sides; on the destination through
	 * ferry_migration_set_incoming_params): the migration may switch to
	 * postcopy, on ferry_migration_start_postcopy() or automatically after
	 * postcopy_after_passes passes (x-postcopy-after-passes, 0 = only on
	 * request). Capability postcopy-preempt (source): requested pages travel
	 * on their own connection so they never wait behind background pages.
	 */
	bool postcopy;
	bool postcopy_preempt;
	uint32_t postcopy_after_passes;
	/*
	 * x-link-timeout (ms, default 10000, 100..600000): on every TCP
	 * connection of a migration (main, multifd, preempt), a peer host
	 * that stops answering (data unacknowledged this long, or keepalive
	 * probes unanswered) fails it: "link dead: the destination stopped
	 * answering within the link timeout", the source guest running on;
	 * the destination waits this long at most for the stream header.
	 * In postcopy also a connection that carries nothing for this long
	 * (no data, no heartbeat) counts as broken and pauses the migration.
	 */
	uint32_t link_timeout_ms;
	/*
	 * x-postcopy-cpu (Ferry's own, default -1): the CPU that the postcopy
	 * fault-path threads run on (destination: mig/dst/fault and
	 * mig/dst/preempt, from its incoming parameters; source: mig/src/rp
	 * with preempt), -1 for wherever the scheduler puts them. A page
	 * request wakes three of them in turn; on one CPU each wakeup is a
	 * local one instead of an inter-processor interrupt (bench/postcopy.py
	 * here, busy vCPUs on two cores, 10 runs each: preempt p50 fault
	 * latency 53-77 us unpinned, 34-57 us pinned; but p99 344-1179 us
	 * unpinned, 327-1507 us pinned: the three share one CPU with a vCPU).
	 * Put them where the vCPUs are not, if you can. Must be a CPU the
	 * process may run on (else -EINVAL).
	 */
	int32_t postcopy_cpu;
	/*
	 * Free page hints (x-free-page-hints, default on; they need a provider
	 * registered with ferry_vm_set_hint_ops, ferry/hint.h): at the start of
	 * each pass a new round (command id) starts and the migration waits up to
	 * hint_wait_ms (x-free-page-hint-wait, default 100, 0..10000) for the
	 * guest's report, so that a silent guest cannot stall it; pages
	 * reported free for the current id are not sent.
	 */
	bool free_page_hints;
	uint32_t hint_wait_ms;
	/*
	 * x-placement (destination; Ferry's own): how precopy pages are
	 * written into a RAM block that maps a file (a memfd) and is not
	 * fully allocated yet. FERRY_PLACE_AUTO (default): userfaultfd when
	 * the kernel lets this process use it, else pwrite. FERRY_PLACE_UFFD:
	 * UFFDIO_COPY per run of new pages (allocates and maps them in one
	 * step; the receive threads do not share a lock), the migration fails
	 * if userfaultfd is unavailable. FERRY_PLACE_PWRITE: pwrite() into the
	 * file (one writer at a time: the file's lock). FERRY_PLACE_MAPPING:
	 * straight into the mapping (a page fault per new page).
	 * FERRY_PLACE_COPY: into a buffer, then memcpy() into the mapping.
	 * Anonymous blocks, fully allocated files and shmem huge pages on
	 * "advise" are always written through the mapping: straight
	 * (FERRY_PLACE_MAPPING) or copied (FERRY_PLACE_COPY) as x-user-copy
	 * says.
	 */
	uint32_t placement;
	/*
	 * x-send-splice (source; Ferry's own, default off): multifd channels
	 * send page data by reference (vmsplice + splice into the socket)
	 * instead of copying it into socket buffers. A page written after it
	 * was queued may leave with the new data; it is dirty then and sent
	 * again, so nothing is lost. Off: sendmsg() copies, as QEMU does, which
	 * measured faster end to end on loopback (the receiver then copies
	 * from cache-warm socket buffers instead of from guest RAM; see
	 * docs/architecture.md). The main connection always copies.
	 */
	bool send_splice;
	/*
	 * Capability auto-converge (source): when, over a period of at least
	 * 1 s, the guest dirtied more than throttle_trigger_threshold percent
	 * (throttle-trigger-threshold, 1..100, default 50) of the bytes sent,
	 * for the second time, its vCPUs are throttled through
	 * ferry_vcpu_ops.set_throttle (which the VMM must provide:
	 * ferry_migration_start says -EOPNOTSUPP otherwise): first to
	 * cpu_throttle_initial percent (cpu-throttle-initial, 1..99, default
	 * 20), then up by cpu_throttle_increment (cpu-throttle-increment,
	 * 1..99, default 10; with cpu_throttle_tailslow, cpu-throttle-tailslow,
	 * by no more than brings the dirty rate down to the threshold), never
	 * above max_cpu_throttle (max-cpu-throttle, cpu_throttle_initial..99,
	 * default 99). The throttle goes back to 0 when the migration ends,
	 * however it ends. The percentages and the threshold can change while
	 * the migration runs (ferry_migration_set_params); auto_converge itself
	 * cannot.
	 */
	bool auto_converge;
	uint32_t throttle_trigger_threshold;
	uint32_t cpu_throttle_initial;
	uint32_t cpu_throttle_increment;
	bool cpu_throttle_tailslow;
	uint32_t max_cpu_throttle;
	/*
	 * x-device-state-max-queued (destination; Ferry's own, default 64,
	 * 1..4096): how many buffers of one live device (ferry/device.h) may
	 * wait for its load thread. A buffer whose index is that far or
	 * farther ahead of the first one still missing fails the migration
	 * ("buffer index N is M ahead of K"), so a hostile or broken stream
	 * cannot make the destination hold unbounded memory. Buffers are at
	 * most 1 MiB each.
	 */
	uint32_t device_state_max_queued;
	/*
	 * x-device-save-threads (source; Ferry's own, default 0, 0..64): how
	 * many live devices are read at once after the stop, in registration
	 * order; 0: all of them, one save thread each. 1 reads them one after
	 * the other, as QEMU does without multifd device state transfer (its
	 * migration thread reads each VFIO device in turn): for devices that
	 * share what limits their reads (a PCIe link), or to compare.
	 */
	uint32_t device_save_threads;
	/*
	 * Capability switchover-ack (both sides, as QEMU: on the destination
	 * through ferry_migration_set_incoming_params): the source does not
	 * stop the guest before the destination acknowledged, on the return
	 * path, that every PRE_COPY live device's initial data is loaded
	 * (ferry/device.h); without PRE_COPY devices the destination
	 * acknowledges at once. A source with it needs a destination with it:
	 * one without fails with "the source asks for switchover-ack but
	 * switchover-ack is not enabled on the destination" at the start; a
	 * destination with it and a source without it migrate as if neither
	 * had it (QEMU's source ignores an ack it did not ask for). The switch
	 * to postcopy does not wait for it. Default off.
	 */
	bool switchover_ack;
	/*
	 * x-checksum (source; Ferry's own, default on): every guest-data
	 * record carries an XXH3-64 checksum of its payload and the stream a
	 * digest of its records, which the destination verifies (stream
	 * version 2; docs/wire-format.md, "Checksums"). Off: the stream is
	 * version 1, without them (for measuring their cost). With tls_creds
	 * set it is off whatever it says: the AEAD authenticates every byte.
	 */
	bool checksum;
	/*
	 * tls-creds, tls-hostname, tls-authz (both sides, as QEMU;
	 * ferry/tls.h): with tls_creds set (a client endpoint on the source,
	 * a server one on the destination), every connection of the migration
	 * is TLS 1.3, and a peer that the checks refuse gets nothing of the
	 * guest. tls_hostname: the name the destination's certificate must
	 * carry ("" = the URI's host). tls_authz: the peer DNs allowed (NULL
	 * = any the CA vouches for). The pointers are borrowed: the migration
	 * takes its own references when it starts. With TLS, the AEAD
	 * authenticates every byte, so x-checksum is not paid twice: the
	 * stream carries no checksums (version 1) whatever x-checksum says.
	 * x-send-splice cannot work with TLS (the records are encrypted in
	 * user space): ferry_migration_start() refuses the two together.
	 */
	ferry_tls_creds *tls_creds;
	ferry_tls_authz *tls_authz;
	char tls_hostname[256];
	/*
	 * x-user-copy (both sides; Ferry's own): whether RAM pages go through
	 * a small reused buffer in user space instead of the kernel copying
	 * straight from or into guest RAM. The source then memcpy()s pages
	 * into a staging buffer before each send (not with TLS, which copies
	 * anyway, nor with x-send-splice), the destination receives them into
	 * a buffer and copies them into place (FERRY_PLACE_COPY instead of
	 * FERRY_PLACE_MAPPING). One more copy, but on a machine whose kernel
	 * pays microseconds for its first access to each user page (some
	 * virtual machines) it is several times faster. FERRY_USER_COPY_AUTO
	 * (default): on where a probe, run once per process, measures that
	 * cost; FERRY_USER_COPY_ON, FERRY_USER_COPY_OFF: always, never.
	 */
	uint32_t user_copy;
	/* More fields may be added at any time. */
} ferry_migration_params;

enum {
	FERRY_PLACE_AUTO = 0,
	FERRY_PLACE_UFFD = 1,
	FERRY_PLACE_PWRITE = 2,
	FERRY_PLACE_MAPPING = 3,
	FERRY_PLACE_COPY = 4, /* into a buffer, then memcpy() into the mapping */
};

enum { FERRY_USER_COPY_AUTO = 0, FERRY_USER_COPY_ON = 1, FERRY_USER_COPY_OFF = 2 };

#define FERRY_MULTIFD_MAX_CHANNELS 16
enum { FERRY_COMPRESS_NONE = 0, FERRY_COMPRESS_ZSTD = 1 };

FERRY_EXTERN void ferry_migration_params_init(ferry_migration_params *p);

/*
 * The parameter table, for control planes: one entry per parameter that a
 * control plane sets by name (QMP's migrate-set-parameters), with its
 * field, type and limits, in the order of QMP's query-migrate-parameters.
 * Capabilities (multifd, postcopy, postcopy_preempt, auto_converge,
 * switchover_ack) and
 * flags are not in it.
 */
typedef enum ferry_migration_param_type {
	FERRY_MIGRATION_PARAM_BOOL = 1, /* bool */
	FERRY_MIGRATION_PARAM_U32,      /* uint32_t */
	FERRY_MIGRATION_PARAM_I32,      /* int32_t */
	FERRY_MIGRATION_PARAM_INT,      /* int */
	FERRY_MIGRATION_PARAM_U64,      /* uint64_t */
	FERRY_MIGRATION_PARAM_SIZE,     /* uint64_t, bytes (or bytes/s) */
	FERRY_MIGRATION_PARAM_ENUM,     /* uint32_t, an index into values */
} ferry_migration_param_type;

typedef struct ferry_migration_param_desc {
	const char *name;          /* QMP's: "downtime-limit" */
	ferry_migration_param_type type;
	size_t offset;             /* of the field in ferry_migration_params */
	bool ranged;               /* integers: min and max apply */
	int64_t min, max;          /* inclusive */
	const char *min_param;     /* non-NULL: the lower limit is this parameter's value */
	const char *unit;          /* "ms", "bytes/s", "%" or NULL */
	const char *const *values; /* ENUM: the names by value, NULL-terminated */
	const char *help;          /* ENUM: a list of the values for messages, or NULL */
} ferry_migration_param_desc;

/* The table (*count entries); static, never NULL. Thread: any. */
FERRY_EXTERN const ferry_migration_param_desc *ferry_migration_params_table(size_t *count);

/* The entry named name (QMP's), or NULL. Thread: any. */
FERRY_EXTERN const ferry_migration_param_desc *ferry_migration_param_find(const char *name);

/*
 * A parameter's value as an integer (bools 0 or 1, enums their index,
 * U64/SIZE cast), and setting it from one. Setting stores v in the field's
 * type; a v outside a ranged parameter's limits is stored as a value just
 * outside them (min - 1 or max + 1), so that it cannot wrap into range:
 * ferry_migration_param_check() then refuses it. Thread: any.
 */
FERRY_EXTERN int64_t ferry_migration_param_get(const ferry_migration_params *p,
					       const ferry_migration_param_desc *d);
FERRY_EXTERN void ferry_migration_param_set(ferry_migration_params *p,
					    const ferry_migration_param_desc *d, int64_t v);

/*
 * Checks one parameter of p against its limits, including the ones that
 * depend on another (max_cpu_throttle >= cpu_throttle_initial) or on the
 * process (postcopy_cpu: a CPU this process may run on). Returns 0, or
 * -EINVAL with QEMU's words in err ("Parameter 'multifd-channels' expects
 * a value between 1 and 16"). err may be NULL. Thread: any.
 */
FERRY_EXTERN int ferry_migration_param_check(const ferry_migration_params *p,
					     const ferry_migration_param_desc *d, char *err,
					     size_t err_len);

/*
 * Checks all of p, as ferry_migration_start() and ferry_migration_set_params()
 * do: flags, every parameter in table order, postcopy_preempt only with
 * postcopy. Returns 0 or -EINVAL with the first problem in err (may be
 * NULL). Thread: any.
 */
FERRY_EXTERN int ferry_migration_params_check(const ferry_migration_params *p, char *err,
					      size_t err_len);

/* What query-migrate shows. All byte counts are of RAM unless named. */
/* Postcopy statistics per vCPU: at most this many vCPUs; histogram buckets (QEMU's 24). */
#define FERRY_POSTCOPY_MAX_VCPUS 64
#define FERRY_POSTCOPY_LATENCY_BUCKETS 24

typedef struct ferry_migration_info {
	ferry_migration_status status;
	bool incoming;
	int error;                  /* negative errno when FAILED */
	/*
	 * Human message when FAILED; while POSTCOPY_PAUSED or _RECOVER (error
	 * 0), why it paused or why the last recovery attempt failed.
	 */
	char error_desc[256];
	uint64_t total_time_ms;     /* start to completion, or so far */
	uint64_t setup_time_ms;
	uint64_t downtime_ms;       /* source stop to destination running */
	/*
	 * Source, from the last pass: the downtime a switchover would take now
	 * (what is left and what the sockets hold, at the last pass's rate,
	 * or its rate end to end when the destination's reports show it
	 * slower, 90% of it under a max-bandwidth and at most that; plus a
	 * log sync); the switchover comes when it is within 90% of
	 * downtime-limit, so that the limit holds.
	 */
	uint64_t expected_downtime_ms;
	uint64_t transferred;       /* bytes on the wire, all records */
	uint64_t remaining;         /* dirty RAM bytes not yet sent */
	uint64_t total;             /* registered RAM bytes */
	uint64_t duplicate;         /* zero pages (QEMU calls them duplicate) */
	uint64_t normal;            /* pages sent with data */
	uint64_t normal_bytes;
	uint64_t skipped;           /* never-populated pages not read */
	uint64_t dirty_pages_rate;  /* pages/s dirtied, last pass */
	uint64_t dirty_sync_count;  /* log syncs (passes) */
	uint64_t pages_per_second;
	double mbps;                /* last 100 ms window, or overall at end */
	uint32_t pass;              /* current pass, 1-based */
	bool stalled;               /* max_passes exceeded without converging */
	uint64_t throughput_bps;    /* bytes/s over the whole migration */
	/* Multifd: bytes over all channels and per channel; compression. */
	uint32_t multifd_channels;
	uint64_t multifd_bytes;
	uint64_t channel_bytes[FERRY_MULTIFD_MAX_CHANNELS];
	uint64_t compress_in;       /* page bytes given to the compressor */
	uint64_t compress_out;      /* bytes sent for them (raw when zstd did not pay) */
	uint64_t compress_skipped;  /* page bytes sent raw without trying (incompressible data) */
	/*
	 * Postcopy. Source: requests served, bytes sent after the switch.
	 * Destination: faults seen, pages requested, faults resolved locally
	 * (pages the source never had: placed as zero pages), and the fault
	 * latency (fault read to page placed) of requested pages; vcpu
	 * blocktime sums those waits.
	 */
	bool postcopy;              /* the migration switched to postcopy */
	uint64_t postcopy_requests;
	uint64_t postcopy_bytes;
	uint64_t postcopy_faults;
	uint64_t postcopy_local_zero;
	uint64_t postcopy_latency_samples;
	uint64_t postcopy_latency_p50_us;
	uint64_t postcopy_latency_p99_us;
	uint64_t postcopy_latency_max_us;
	uint64_t postcopy_blocktime_ms;
	/*
	 * Destination, QEMU's postcopy-blocktime statistics (per vCPU thread
	 * registered with ferry_vm_set_vcpu_threads; faults of other threads
	 * are non-vCPU ones): the time every vCPU waited at once, each vCPU's
	 * total wait and average fault latency, the average latency of all
	 * and of non-vCPU faults, and a histogram of the latencies (bucket N:
	 * [2^N, 2^(N+1)) us; below 1 us in 0, the last open-ended).
	 */
	uint32_t postcopy_vcpus;
	uint64_t postcopy_all_blocktime_ms;
	uint32_t postcopy_vcpu_blocktime_ms[FERRY_POSTCOPY_MAX_VCPUS];
	uint64_t postcopy_vcpu_latency_ns[FERRY_POSTCOPY_MAX_VCPUS];
	uint64_t postcopy_latency_ns;
	uint64_t postcopy_non_vcpu_latency_ns;
	uint64_t postcopy_latency_dist[FERRY_POSTCOPY_LATENCY_BUCKETS];
	uint32_t postcopy_recoveries; /* times the migration resumed after a pause */
	/* Free page hints (source): commands sent, pages not sent, time waited. */
	uint64_t hint_cmds;
	uint64_t hint_skipped;
	uint64_t hint_wait_ms;
	/*
	 * Destination: how precopy pages were placed into file-backed RAM
	 * (FERRY_PLACE_UFFD/PWRITE/MAPPING/COPY; FERRY_PLACE_AUTO before setup).
	 */
	uint32_t placement;
	/*
	 * Both sides: whether RAM pages go through user-space copies
	 * (x-user-copy; "auto" decided by the machine's probe). Source: its
	 * main connection's sends are staged; destination: some block is
	 * placed by copy. Set once the connection is set up.
	 */
	bool user_copy;
	/*
	 * Destination, with checksums (x-checksum): bytes of RAM pages whose
	 * checksum matched (a page sent n times counts n times; device state
	 * is verified too but not counted here), and payloads (pages, device
	 * buffers) whose checksum did not match and that no later copy made
	 * good: a precopy page the source guest changed while it was sent, and
	 * a later pass sent again, is not counted (docs/wire-format.md,
	 * "Checksums").
	 */
	uint64_t verified_bytes;
	uint64_t checksum_mismatches;
	/*
	 * Auto-converge (source): the vCPU throttle now (cpu-throttle-percentage;
	 * 0 once the migration has ended), the highest it reached, and how many
	 * times it was raised.
	 */
	uint32_t cpu_throttle_percentage;
	uint32_t cpu_throttle_peak;
	uint32_t cpu_throttle_raises;
	/*
	 * Source: the most bytes handed to the kernel (main connection and
	 * multifd channels together) within any 100 ms window so far,
	 * measured in 1 ms steps where the bytes are written. With
	 * max-bandwidth B it stays within B / 10 plus one 5 ms grant.
	 */
	uint64_t bandwidth_peak_window_bytes;
	/*
	 * Live devices (ferry/device.h); per device: ferry_live_device_stats().
	 * live_devices: the live devices that take part (0: none, and the
	 * device_* figures stay 0). device_precopy_bytes: device data moved
	 * while the guest ran (PRE_COPY devices' data read in the precopy
	 * passes; on the destination, written when it arrived in precopy).
	 * device_stopcopy_bytes: device data moved after the vCPUs stopped.
	 * Once completed, their sum is the same on both sides.
	 * "Moved": on the source, the bytes read() returned (each buffer
	 * counted once its save thread handed it on); on the destination, the
	 * bytes write() took. Framing of the stream is not counted; the
	 * device's own format (whatever read() yields) is.
	 */
	uint32_t live_devices;
	uint64_t device_precopy_bytes;
	uint64_t device_stopcopy_bytes;
	/*
	 * The split of a switchover's downtime, every part measured from the
	 * vCPU stop on the source's clock (0 until COMPLETED):
	 *   downtime_ram_ms     until the final RAM pass was written (after a
	 *                       postcopy switch: its DISCARD bitmaps);
	 *   downtime_device_ms  until the last live device's end marker was
	 *                       sent (0 without live devices);
	 *   downtime_other_ms   downtime_ms - max(ram, device): configs and
	 *                       vmsd devices, the end of the stream (postcopy:
	 *                       LISTEN and the package), what the
	 *                       destination still loads and applies, its
	 *                       vCPU start and its answer.
	 * RAM and device data overlap when they travel side by side, so ram +
	 * device may exceed downtime_ms. On the destination only
	 * downtime_device_ms is set: from the source's switchover command
	 * received until the last live device's config was applied.
	 */
	uint64_t downtime_ram_ms;
	uint64_t downtime_device_ms;
	uint64_t downtime_other_ms;
	/*
	 * Source: the downtime the switchover was decided on (expected_downtime_ms
	 * at the last pass: what was left to send and what the sockets still
	 * held, at the rate expected_downtime_ms says, plus a log sync as long
	 * as the last), kept once COMPLETED, to compare with downtime_ms.
	 */
	uint64_t downtime_expected_ms;
	/*
	 * The transferred bytes split at the switchover, as QEMU's
	 * precopy-bytes, downtime-bytes and postcopy-bytes (the three add up to
	 * transferred; postcopy_bytes above is the third): precopy_bytes moved
	 * while the source's vCPUs ran (the destination: received before the
	 * source's switchover command), downtime_bytes after they stopped,
	 * until the postcopy switch or the end, postcopy_bytes after the
	 * switch. Before the switchover precopy_bytes is transferred.
	 */
	uint64_t precopy_bytes;
	uint64_t downtime_bytes;
	/*
	 * Source: the rate the destination loaded the last pass at, per second
	 * of its loading threads' CPU time, from its own reports (bytes/s).
	 * 0: not known (an older destination, fewer than two passes). For
	 * operators; expected_downtime_ms does not take it (a destination's
	 * CPU time cannot see a slow source or link).
	 */
	uint64_t dest_load_bps;
	/*
	 * Source, once COMPLETED: downtime_ms and downtime_expected_ms in
	 * microseconds. Switchovers of a few ms are common, and whole ms
	 * cannot say whether the estimate was within 10% of them.
	 */
	uint64_t downtime_us;
	uint64_t downtime_expected_us;
	/* More fields may be added at any time. */
} ferry_migration_info;

/* Events, delivered to the callback set with ferry_migration_set_event_cb. */
typedef enum ferry_event_type {
	FERRY_EVENT_STATUS = 1, /* MIGRATION: status changed */
	FERRY_EVENT_PASS = 2,   /* MIGRATION_PASS: a new pass started */
	FERRY_EVENT_STOP = 3,   /* vCPUs were stopped by the migration */
	FERRY_EVENT_RESUME = 4, /* vCPUs were started by the migration */
} ferry_event_type;

typedef struct ferry_event {
	ferry_event_type type;
	ferry_migration_status status; /* for STATUS */
	uint32_t pass;           /* for PASS */
	uint64_t timestamp_us;   /* CLOCK_REALTIME, microseconds */
} ferry_event;

/*
 * Thread: the callback runs on a migration thread; it must not block and
 * must not call ferry_migration_* (post the event to your own loop instead).
 */
typedef void (*ferry_event_cb)(void *opaque, const ferry_event *ev);
FERRY_EXTERN int ferry_migration_set_event_cb(ferry_vm_t *vm, ferry_event_cb cb,
					      void *opaque);

/*
 * Checks a migration URI's syntax. Returns 0, or -EINVAL with a message in
 * err (e.g. "unsupported migration URI 'ftp:x' (expected tcp:HOST:PORT or
 * unix:PATH)"). Thread: any.
 */
FERRY_EXTERN int ferry_uri_validate(const char *uri, char *err, size_t err_len);

/*
 * Starts an outgoing migration to uri. Returns 0 once the migration thread
 * runs (connection errors then show as FAILED with error_desc), or -EINVAL
 * (bad uri or params), -EBUSY (a migration already runs), -ENOMEM,
 * -EOPNOTSUPP (auto_converge without a set_throttle vCPU operation).
 */
FERRY_EXTERN int ferry_migration_start(ferry_vm_t *vm, const char *uri,
				     const ferry_migration_params *params);

/*
 * Listens on uri for one incoming migration. Binding happens before the
 * call returns, so "address in use" is returned here (-EADDRINUSE). The
 * destination's vCPUs must be stopped; they are started when the stream
 * says the source ran.
 */
FERRY_EXTERN int ferry_migration_incoming(ferry_vm_t *vm, const char *uri);

/*
 * The address the last ferry_migration_incoming() listened on, as a URI:
 * "tcp:HOST:PORT" with the port the kernel chose for port 0 (IPv6 hosts in
 * brackets), or "unix:PATH". It stays readable after the migration ended
 * (until the next one). A unix: socket file is the caller's to remove.
 * Returns 0, -ENOENT (no incoming migration on a URI) or -EINVAL.
 * Thread: any.
 */
FERRY_EXTERN int ferry_migration_incoming_address(ferry_vm_t *vm, char *buf, size_t len);

/*
 * Incoming on an fd the caller opened (QMP's fd:NAME): a connected socket
 * (or any stream) carries the whole migration, so the source must use one
 * connection (no multifd, no postcopy-preempt); a listening socket
 * (SO_ACCEPTCONN) is used as ferry_migration_incoming()'s listener would
 * be, for every connection. The fd is made blocking. libferry takes
 * ownership of fd, also on failure. Returns 0, -EINVAL, -EBUSY, -ENOMEM.
 */
FERRY_EXTERN int ferry_migration_incoming_fd(ferry_vm_t *vm, int fd);

/*
 * Starts an outgoing migration over fd, a connected socket (or any
 * stream) the caller opened (QMP's fd:NAME), as ferry_migration_start()
 * does over the connection it opens. One fd is one connection: params
 * with multifd or postcopy_preempt are refused (-EINVAL); postcopy
 * recovery reconnects with ferry_migration_resume() on a URI. The fd is
 * made blocking. libferry takes ownership of fd, also on failure.
 * Returns as ferry_migration_start().
 */
FERRY_EXTERN int ferry_migration_start_fd(ferry_vm_t *vm, int fd,
					  const ferry_migration_params *params);

/*
 * Changes the parameters of the running outgoing migration (as QEMU's
 * migrate-set-parameters does during a migration): max_bandwidth applies
 * from the next 100 ms window, downtime_limit_ms and max_passes at the next
 * convergence check. Returns 0, -EINVAL, or -ENOENT if no outgoing
 * migration runs. Thread: any.
 */
FERRY_EXTERN int ferry_migration_set_params(ferry_vm_t *vm, const ferry_migration_params *params);

/*
 * Switches the running outgoing migration to postcopy after its current
 * pass (QMP migrate-start-postcopy). Returns 0, -ENOENT (no outgoing
 * migration) or -EINVAL (postcopy not enabled). Thread: any.
 */
FERRY_EXTERN int ferry_migration_start_postcopy(ferry_vm_t *vm);

/*
 * Destination-side parameters for incoming migrations that start (are
 * listened for) after this call: postcopy, link_timeout_ms,
 * the TLS fields (the VM takes its own references on tls_creds and tls_authz).
 * Thread: any.
 */
FERRY_EXTERN int ferry_migration_set_incoming_params(ferry_vm_t *vm,
						     const ferry_migration_params *params);

/*
 * Destination: whether an incoming migration starts the guest's vCPUs
 * when the guest moves here (at the end of precopy, at the switch to
 * postcopy) if they ran on the source. Default true; false leaves them
 * stopped for the embedder's ferry_vm_start() (QEMU's -S, and its `stop`
 * and `cont` on a VM waiting for an incoming migration). Read at that
 * moment, so it may change while the migration runs. Returns 0 or -EINVAL
 * (vm NULL). Thread: any.
 */
FERRY_EXTERN int ferry_migration_set_autostart(ferry_vm_t *vm, bool on);

/*
 * Postcopy recovery. ferry_migration_pause() breaks the connection of a
 * postcopy migration by hand (QMP migrate-pause) so both sides pause.
 * On the destination, ferry_migration_recover() listens on uri for the
 * source to come back (QMP migrate-recover); on the source,
 * ferry_migration_resume() reconnects to it (QMP migrate with resume=true).
 * Return 0, -EINVAL (bad uri), -ENOENT (no migration in the right state:
 * postcopy-active for pause, postcopy-paused for the others) or
 * -EADDRINUSE (recover). Thread: any.
 */
FERRY_EXTERN int ferry_migration_pause(ferry_vm_t *vm);
FERRY_EXTERN int ferry_migration_recover(ferry_vm_t *vm, const char *uri);
FERRY_EXTERN int ferry_migration_resume(ferry_vm_t *vm, const char *uri);

/*
 * ferry_migration_recover() on a listening socket the caller opened
 * (QMP's fd:NAME), made blocking; libferry takes ownership of fd, also on
 * failure. Returns as ferry_migration_recover(), or -EINVAL when fd is no
 * listening socket, -ENOTSOCK when it is no socket. Thread: any.
 */
FERRY_EXTERN int ferry_migration_recover_fd(ferry_vm_t *vm, int fd);

/* Snapshot of progress. Thread: any. */
FERRY_EXTERN int ferry_migration_query(ferry_vm_t *vm, ferry_migration_info *info);

/*
 * Cancels the running migration (either direction). Returns 0 if a cancel
 * was started, -ENOENT if nothing runs, -EBUSY in postcopy (the guest runs
 * on the destination with part of its RAM still on the source: there is
 * nothing to go back to). Completion shows as CANCELLED.
 * Thread: any.
 */
FERRY_EXTERN int ferry_migration_cancel(ferry_vm_t *vm);

/*
 * Waits until the migration reaches COMPLETED, FAILED or CANCELLED, or
 * timeout_ms passes (-1 = forever). Returns the final status, or -ETIMEDOUT.
 * Thread: any except the event callback.
 */
FERRY_EXTERN int ferry_migration_wait(ferry_vm_t *vm, int timeout_ms);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_MIGRATION_H */
