/* SPDX-License-Identifier: MIT */
/*
 * The types of `ferry host`'s replies and events, for the command table
 * (host-qmp.c) and query-qmp-schema: QEMU's where Ferry answers what QEMU
 * does (MigrationInfo, StatusInfo, VersionInfo, ...), with QEMU's member
 * names and whether each is optional; Ferry's own members (x-) are
 * described as far as a client can rely on them, nested ones as "any".
 *
 * DESIGN: a reply built in host-qmp.c must only use members declared
 * here; tests/qmp/test-qmp.py checks every reply it sees against
 * query-qmp-schema, so a member added to a reply and not here fails.
 *
 * Thread: none (constant tables).
 */
#include "host.h"

#define OPT true

static const ferry_qmp_arg int_t = { NULL, FERRY_QMP_INT };
static const ferry_qmp_arg any_t = { NULL, FERRY_QMP_ANY };

/* ---- query-migrate: QEMU's MigrationInfo ---- */

static const char *const migration_status[] = {
	"none",	    "setup",	      "cancelling",	 "cancelled",	     "active",
	"postcopy-active", "postcopy-paused", "postcopy-recover", "completed", "failed",
	"colo",	    "pre-switchover", "device",		 "wait-unplug",	     NULL,
};

static const ferry_qmp_arg migration_stats[] = {
	{ "transferred", FERRY_QMP_INT },
	{ "remaining", FERRY_QMP_INT },
	{ "total", FERRY_QMP_INT },
	{ "duplicate", FERRY_QMP_INT },
	{ "skipped", FERRY_QMP_INT },
	{ "normal", FERRY_QMP_INT },
	{ "normal-bytes", FERRY_QMP_INT },
	{ "dirty-pages-rate", FERRY_QMP_INT },
	{ "mbps", FERRY_QMP_NUMBER },
	{ "dirty-sync-count", FERRY_QMP_INT },
	{ "postcopy-requests", FERRY_QMP_INT },
	{ "page-size", FERRY_QMP_INT },
	{ "multifd-bytes", FERRY_QMP_UINT64 },
	{ "pages-per-second", FERRY_QMP_UINT64 },
	{ "precopy-bytes", FERRY_QMP_UINT64 },
	{ "downtime-bytes", FERRY_QMP_UINT64 },
	{ "postcopy-bytes", FERRY_QMP_UINT64 },
	{ "dirty-sync-missed-zero-copy", FERRY_QMP_UINT64 },
	{ "x-skipped", FERRY_QMP_UINT64 },
	{ "x-verified-bytes", FERRY_QMP_UINT64 },
	{ "x-checksum-mismatches", FERRY_QMP_UINT64 },
	{ "x-bandwidth-peak-window-bytes", FERRY_QMP_UINT64, OPT },
	{ "x-dest-load-rate", FERRY_QMP_UINT64, OPT },
	{ NULL },
};

static const char *const socket_types[] = { "inet", "unix", "vsock", "fd", NULL };
static const ferry_qmp_arg inet_members[] = {
	{ "host", FERRY_QMP_STR },
	{ "port", FERRY_QMP_STR },
	{ NULL },
};
static const ferry_qmp_arg inet_t = { NULL, FERRY_QMP_OBJECT, .members = inet_members };
static const ferry_qmp_arg unix_members[] = { { "path", FERRY_QMP_STR }, { NULL } };
static const ferry_qmp_arg unix_t = { NULL, FERRY_QMP_OBJECT, .members = unix_members };
static const ferry_qmp_arg fd_members[] = { { "str", FERRY_QMP_STR }, { NULL } };
static const ferry_qmp_arg fd_t = { NULL, FERRY_QMP_OBJECT, .members = fd_members };
static const ferry_qmp_variant socket_variants[] = {
	{ "inet", &inet_t },
	{ "unix", &unix_t },
	{ "fd", &fd_t },
	{ NULL },
};
static const ferry_qmp_arg socket_base[] = {
	{ "type", FERRY_QMP_ENUM, .values = socket_types },
	{ NULL },
};
/* QEMU's SocketAddress; Ferry's variants are inet, unix and fd (a name getfd gave). */
const ferry_qmp_arg host_socket_address = {
	NULL, FERRY_QMP_OBJECT, .members = socket_base, .tag = "type", .variants = socket_variants,
};

/* QEMU 8.2's MigrationChannel: MigrationAddress is a union on transport. */
static const char *const channel_types[] = { "main", NULL };
static const char *const transports[] = { "socket", "exec", "rdma", NULL };
static const ferry_qmp_arg address_base[] = {
	{ "transport", FERRY_QMP_ENUM, .values = transports },
	{ NULL },
};
static const ferry_qmp_variant address_variants[] = {
	{ "socket", &host_socket_address },
	{ NULL },
};
static const ferry_qmp_arg channel_members[] = {
	{ "channel-type", FERRY_QMP_ENUM, .values = channel_types },
	{ "addr", FERRY_QMP_OBJECT, .members = address_base, .tag = "transport",
	  .variants = address_variants },
	{ NULL },
};
const ferry_qmp_arg host_migration_channel = {
	NULL, FERRY_QMP_OBJECT, .members = channel_members,
};

static const ferry_qmp_arg migration_info[] = {
	{ "status", FERRY_QMP_ENUM, OPT, .values = migration_status },
	{ "ram", FERRY_QMP_OBJECT, OPT, .members = migration_stats },
	{ "total-time", FERRY_QMP_INT, OPT },
	{ "expected-downtime", FERRY_QMP_INT, OPT },
	{ "downtime", FERRY_QMP_INT, OPT },
	{ "setup-time", FERRY_QMP_INT, OPT },
	{ "cpu-throttle-percentage", FERRY_QMP_INT, OPT },
	{ "error-desc", FERRY_QMP_STR, OPT },
	{ "postcopy-blocktime", FERRY_QMP_UINT32, OPT },
	{ "postcopy-vcpu-blocktime", FERRY_QMP_ARRAY, OPT, .elem = &int_t },
	{ "postcopy-latency", FERRY_QMP_UINT64, OPT },
	{ "postcopy-vcpu-latency", FERRY_QMP_ARRAY, OPT, .elem = &int_t },
	{ "postcopy-non-vcpu-latency", FERRY_QMP_UINT64, OPT },
	{ "postcopy-latency-dist", FERRY_QMP_ARRAY, OPT, .elem = &int_t },
	{ "socket-address", FERRY_QMP_ARRAY, OPT, .elem = &host_socket_address },
	{ "x-multifd", FERRY_QMP_OBJECT, OPT },
	{ "x-postcopy", FERRY_QMP_OBJECT, OPT },
	{ "x-free-page-hints", FERRY_QMP_OBJECT, OPT },
	{ "x-device-state", FERRY_QMP_OBJECT, OPT },
	{ "x-downtime-split", FERRY_QMP_OBJECT, OPT },
	{ "x-incoming", FERRY_QMP_BOOL, OPT },
	{ "x-placement", FERRY_QMP_STR, OPT },
	{ "x-user-copy", FERRY_QMP_BOOL, OPT },
	{ "x-stalled", FERRY_QMP_BOOL, OPT },
	{ "x-cpu-throttle", FERRY_QMP_OBJECT, OPT },
	{ "x-previous", FERRY_QMP_OBJECT, OPT },
	{ NULL },
};
const ferry_qmp_arg host_ret_migration_info = { NULL, FERRY_QMP_OBJECT, .members = migration_info };

/* ---- run state, the guest's hash ---- */

static const char *const run_states[] = {
	"debug",	 "inmigrate",	  "internal-error", "io-error",	  "paused",
	"postmigrate",	 "prelaunch",	  "finish-migrate", "restore-vm",  "running",
	"save-vm",	 "shutdown",	  "suspended",	    "watchdog",	  "guest-panicked",
	"colo",		 NULL,
};
static const ferry_qmp_arg status_info[] = {
	{ "running", FERRY_QMP_BOOL },
	{ "singlestep", FERRY_QMP_BOOL },
	{ "status", FERRY_QMP_ENUM, .values = run_states },
	{ NULL },
};
const ferry_qmp_arg host_ret_status = { NULL, FERRY_QMP_OBJECT, .members = status_info };

static const ferry_qmp_arg steps_members[] = {
	{ "steps", FERRY_QMP_ARRAY, .elem = &int_t },
	{ NULL },
};
const ferry_qmp_arg host_ret_steps = { NULL, FERRY_QMP_OBJECT, .members = steps_members };

static const ferry_qmp_arg difference[] = {
	{ "block", FERRY_QMP_STR },
	{ "page", FERRY_QMP_UINT64 },
	{ NULL },
};
static const ferry_qmp_arg guest_hash[] = {
	{ "hash", FERRY_QMP_STR },
	{ "steps", FERRY_QMP_ARRAY, .elem = &int_t },
	{ "running", FERRY_QMP_BOOL },
	{ "matches-twin", FERRY_QMP_BOOL, OPT },
	{ "twin-hash", FERRY_QMP_STR, OPT },
	{ "pages-compared", FERRY_QMP_UINT64, OPT },
	{ "pages-differing", FERRY_QMP_UINT64, OPT },
	{ "first-difference", FERRY_QMP_OBJECT, OPT, .members = difference },
	{ NULL },
};
const ferry_qmp_arg host_ret_guest_hash = { NULL, FERRY_QMP_OBJECT, .members = guest_hash };

/* ---- what the guest is ---- */

static const ferry_qmp_arg version_triple[] = {
	{ "major", FERRY_QMP_INT },
	{ "minor", FERRY_QMP_INT },
	{ "micro", FERRY_QMP_INT },
	{ NULL },
};
static const ferry_qmp_arg version_info[] = {
	{ "qemu", FERRY_QMP_OBJECT, .members = version_triple },
	{ "package", FERRY_QMP_STR },
	{ NULL },
};
const ferry_qmp_arg host_ret_version = { NULL, FERRY_QMP_OBJECT, .members = version_info };

static const ferry_qmp_arg name_info[] = { { "name", FERRY_QMP_STR, OPT }, { NULL } };
const ferry_qmp_arg host_ret_name = { NULL, FERRY_QMP_OBJECT, .members = name_info };

static const ferry_qmp_arg uuid_info[] = { { "UUID", FERRY_QMP_STR }, { NULL } };
const ferry_qmp_arg host_ret_uuid = { NULL, FERRY_QMP_OBJECT, .members = uuid_info };

static const ferry_qmp_arg kvm_info[] = {
	{ "enabled", FERRY_QMP_BOOL },
	{ "present", FERRY_QMP_BOOL },
	{ NULL },
};
const ferry_qmp_arg host_ret_kvm = { NULL, FERRY_QMP_OBJECT, .members = kvm_info };

static const char *const targets[] = {
	"aarch64", "i386", "ppc64", "riscv64", "s390x", "x86_64", NULL,
};
static const ferry_qmp_arg cpu_info[] = {
	{ "cpu-index", FERRY_QMP_INT },
	{ "qom-path", FERRY_QMP_STR },
	{ "thread-id", FERRY_QMP_INT },
	{ "props", FERRY_QMP_OBJECT, OPT },
	{ "target", FERRY_QMP_ENUM, .values = targets },
	{ NULL },
};
static const ferry_qmp_arg cpu_info_t = { NULL, FERRY_QMP_OBJECT, .members = cpu_info };
const ferry_qmp_arg host_ret_cpus = { NULL, FERRY_QMP_ARRAY, .elem = &cpu_info_t };

static const ferry_qmp_arg machine_info[] = {
	{ "name", FERRY_QMP_STR },
	{ "alias", FERRY_QMP_STR, OPT },
	{ "is-default", FERRY_QMP_BOOL, OPT },
	{ "cpu-max", FERRY_QMP_INT },
	{ "hotpluggable-cpus", FERRY_QMP_BOOL },
	{ "numa-mem-supported", FERRY_QMP_BOOL },
	{ "deprecated", FERRY_QMP_BOOL },
	{ "default-cpu-type", FERRY_QMP_STR, OPT },
	{ "default-ram-id", FERRY_QMP_STR, OPT },
	{ NULL },
};
static const ferry_qmp_arg machine_t = { NULL, FERRY_QMP_OBJECT, .members = machine_info };
const ferry_qmp_arg host_ret_machines = { NULL, FERRY_QMP_ARRAY, .elem = &machine_t };

static const ferry_qmp_arg target_info[] = {
	{ "arch", FERRY_QMP_ENUM, .values = targets },
	{ NULL },
};
const ferry_qmp_arg host_ret_target = { NULL, FERRY_QMP_OBJECT, .members = target_info };

/* query-block, query-block-jobs, query-pci: lists the synthetic guest has none of. */
const ferry_qmp_arg host_ret_empty_list = { NULL, FERRY_QMP_ARRAY, .elem = &any_t };

/* ---- events ---- */

static const ferry_qmp_arg migration_event[] = {
	{ "status", FERRY_QMP_ENUM, .values = migration_status },
	{ NULL },
};
static const ferry_qmp_arg pass_event[] = { { "pass", FERRY_QMP_INT }, { NULL } };
static const char *const shutdown_causes[] = {
	"none",	 "host-error", "host-qmp-quit", "host-qmp-system-reset", "host-signal",
	"host-ui", "guest-shutdown", "guest-reset", "guest-panic", "subsystem-reset", NULL,
};
static const ferry_qmp_arg shutdown_event[] = {
	{ "guest", FERRY_QMP_BOOL },
	{ "reason", FERRY_QMP_ENUM, .values = shutdown_causes },
	{ NULL },
};

const ferry_qmp_event host_events[] = {
	{ "MIGRATION", migration_event },
	{ "MIGRATION_PASS", pass_event },
	{ "STOP", NULL },
	{ "RESUME", NULL },
	{ "SHUTDOWN", shutdown_event },
	{ NULL },
};
