/* SPDX-License-Identifier: MIT */
/* Helpers for in-process migration tests (see harness.h). */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "sbuf.h"
#include "stream/format.h"

void side_create(side *s, const char *spec, ferry_dirty_mode mode, bool incoming)
{
	ferry_guest_config cfg;
	char err[256];
	ferry_guest_config_init(&cfg);
	assert_int_equal(ferry_guest_config_parse(&cfg, spec, err, sizeof(err)), 0);
	ferry_vm_options o = { .dirty_mode = mode };
	assert_int_equal(ferry_vm_create(&o, &s->vm), 0);
	assert_int_equal(ferry_guest_create(&cfg, incoming, &s->g), 0);
	assert_int_equal(ferry_guest_attach(s->g, s->vm), 0);
}

void side_destroy(side *s)
{
	ferry_vm_destroy(s->vm);
	ferry_guest_destroy(s->g);
	s->vm = NULL;
	s->g = NULL;
}

const char *test_uri(void)
{
	static char uri[128];
	static int n;
	snprintf(uri, sizeof(uri), "unix:/tmp/ferry-test-%d-%d.sock", (int)getpid(), n++);
	/*
	 * A socket an earlier process with this pid left (tests do not all
	 * remove theirs) would make a test's own bind fail: t_peer_is_qmp did,
	 * once, on a machine with 8,800 of them in /tmp.
	 */
	unlink(uri + strlen("unix:"));
	return uri;
}

unsigned free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
	close(s);
	return ntohs(a.sin_port);
}

int net_ns_enter(void)
{
	int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	assert_true(home >= 0);
	if (unshare(CLONE_NEWNET)) {
		fprintf(stderr, "no network namespace (%s)\n", strerror(errno));
		close(home);
		return -1;
	}
	net_ns_loopback(true);
	return home;
}

void net_ns_loopback(bool up)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = { .ifr_name = "lo" };
	assert_true(s >= 0);
	assert_int_equal(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
	if (up)
		ifr.ifr_flags |= IFF_UP;
	else
		ifr.ifr_flags &= ~IFF_UP;
	assert_int_equal(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
	close(s);
}

void net_ns_leave(int home)
{
	assert_int_equal(setns(home, CLONE_NEWNET), 0);
	close(home);
}

bool side_verify(side *s)
{
	ferry_vm_stop(s->vm);
	ferry_verify_result v;
	assert_int_equal(ferry_guest_verify(s->g, &v), 0);
	if (!v.matches)
		fprintf(stderr, "verify: first difference in %s page %llu\n", v.block,
			(unsigned long long)v.page);
	return v.matches;
}

bool side_run_and_verify(side *s, uint64_t n)
{
	uint64_t t[FERRY_GUEST_MAX_VCPUS];
	ferry_vm_stop(s->vm);
	ferry_guest_steps(s->g, t);
	for (unsigned i = 0; i < ferry_guest_vcpus(s->g); i++)
		t[i] += ferry_guest_get_config(s->g)->workload == FERRY_WL_IDLE ? 0 : n;
	assert_int_equal(ferry_guest_run_until(s->g, t), 0);
	return side_verify(s);
}

const char *wait_failed(ferry_vm_t *vm)
{
	static char msg[256];
	assert_int_equal(wait_final(vm), FERRY_MIGRATION_FAILED);
	ferry_migration_info i;
	ferry_migration_query(vm, &i);
	snprintf(msg, sizeof(msg), "%s", i.error_desc);
	return msg;
}

void wait_both_final(side *src, side *dst, int want, ferry_migration_info *si,
		     ferry_migration_info *di)
{
	assert_int_equal(wait_final(src->vm), want);
	assert_int_equal(wait_final(dst->vm), want);
	ferry_migration_query(src->vm, si);
	ferry_migration_query(dst->vm, di);
}

int wait_final(ferry_vm_t *vm)
{
	int st = ferry_migration_wait(vm, 120000);
	assert_int_not_equal(st, -ETIMEDOUT);
	return st;
}

int wait_src_converge(ferry_vm_t *vm, const ferry_migration_params *p, uint32_t after_pass)
{
	ferry_migration_params q;
	if (p)
		q = *p;
	else
		ferry_migration_params_init(&q);
	bool raised = false;
	for (int waited = 0; waited < 120000; waited += 50) {
		int st = ferry_migration_wait(vm, 50);
		if (st != -ETIMEDOUT)
			return st;
		ferry_migration_info i;
		if (raised || ferry_migration_query(vm, &i) || i.status != FERRY_MIGRATION_ACTIVE ||
		    i.pass <= after_pass)
			continue;
		fprintf(stderr, "harness: pass %u and no switchover (%llu MB dirty, %.0f MB/s): "
			"downtime-limit raised to 30 s\n", i.pass,
			(unsigned long long)(i.remaining >> 20), i.mbps / 8);
		q.downtime_limit_ms = 30000;
		q.max_bandwidth = 0;
		assert_int_equal(ferry_migration_set_params(vm, &q), 0);
		raised = true;
	}
	fail_msg("the migration did not end within 120 s");
	return -ETIMEDOUT;
}

/* The helpers below poll every POLL_MS for at most WAIT_MS. */
#define POLL_MS 1
#define WAIT_MS 60000

void side_wait_steps(side *s, uint64_t n)
{
	if (ferry_guest_get_config(s->g)->workload == FERRY_WL_IDLE)
		return;
	unsigned nv = ferry_guest_vcpus(s->g);
	uint64_t t0[FERRY_GUEST_MAX_VCPUS], t[FERRY_GUEST_MAX_VCPUS];
	ferry_guest_steps(s->g, t0);
	for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
		ferry_guest_steps(s->g, t);
		unsigned i = 0;
		while (i < nv && t[i] >= t0[i] + n)
			i++;
		if (i == nv)
			return;
		msleep(POLL_MS);
	}
	fail_msg("the guest did not run %llu steps on every vCPU within %d s",
		 (unsigned long long)n, WAIT_MS / 1000);
}

void wait_transferred(ferry_vm_t *vm, uint64_t bytes, ferry_migration_info *i)
{
	for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
		assert_int_equal(ferry_migration_query(vm, i), 0);
		if (i->status != FERRY_MIGRATION_ACTIVE && i->status != FERRY_MIGRATION_SETUP)
			fail_msg("status %s before %llu bytes were sent (%llu; %s)",
				 ferry_migration_status_name(i->status), (unsigned long long)bytes,
				 (unsigned long long)i->transferred, i->error_desc);
		if (i->status == FERRY_MIGRATION_ACTIVE && i->transferred >= bytes)
			return;
		msleep(POLL_MS);
	}
	fail_msg("%llu bytes were not sent within %d s", (unsigned long long)bytes, WAIT_MS / 1000);
}

void wait_status(ferry_vm_t *vm, ferry_migration_status st)
{
	for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
		ferry_migration_info info;
		assert_int_equal(ferry_migration_query(vm, &info), 0);
		if (info.status == st)
			return;
		if (info.status == FERRY_MIGRATION_FAILED || info.status == FERRY_MIGRATION_COMPLETED)
			fail_msg("status %s while waiting for %s (%s)",
				 ferry_migration_status_name(info.status),
				 ferry_migration_status_name(st), info.error_desc);
		msleep(POLL_MS);
	}
	fail_msg("timed out waiting for %s", ferry_migration_status_name(st));
}

const char *running_pair(side *src, side *dst, const char *spec)
{
	side_create(src, spec, FERRY_DIRTY_WP_ASYNC, false);
	side_create(dst, spec, FERRY_DIRTY_WP_ASYNC, true);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst->vm, uri), 0);
	assert_int_equal(ferry_vm_start(src->vm), 0);
	return uri;
}

proxy *running_pair_proxied(side *src, side *dst, const char *spec, char puri[120])
{
	char dpath[108], ppath[108], duri[120];
	side_create(src, spec, FERRY_DIRTY_WP_ASYNC, false);
	side_create(dst, spec, FERRY_DIRTY_WP_ASYNC, true);
	snprintf(dpath, sizeof(dpath), "%.100s", test_uri() + 5);
	snprintf(ppath, sizeof(ppath), "%.100s", test_uri() + 5);
	snprintf(duri, sizeof(duri), "unix:%s", dpath);
	snprintf(puri, 120, "unix:%s", ppath);
	assert_int_equal(ferry_migration_incoming(dst->vm, duri), 0);
	proxy *px = proxy_start(ppath, dpath);
	assert_non_null(px);
	assert_int_equal(ferry_vm_start(src->vm), 0);
	return px;
}

/* The system call the thread tid of this process is blocked in, or -1 (running, unknown). */
static long thread_syscall(const char *tid, const char *comm)
{
	char path[320], buf[64];
	snprintf(path, sizeof(path), "/proc/self/task/%s/comm", tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	bool named = fgets(buf, sizeof(buf), f) && !strncmp(buf, comm, strlen(comm)) &&
		     buf[strlen(comm)] == '\n';
	fclose(f);
	if (!named)
		return -1;
	snprintf(path, sizeof(path), "/proc/self/task/%s/syscall", tid);
	long nr = -1;
	if ((f = fopen(path, "r"))) {
		if (fscanf(f, "%ld", &nr) != 1) /* "running" */
			nr = -1;
		fclose(f);
	}
	return nr;
}

void wait_thread_in_syscall(const char *comm, long nr)
{
	for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
		DIR *d = opendir("/proc/self/task");
		assert_non_null(d);
		bool found = false;
		for (struct dirent *e; !found && (e = readdir(d));)
			found = e->d_name[0] != '.' && thread_syscall(e->d_name, comm) == nr;
		closedir(d);
		if (found)
			return;
		msleep(POLL_MS);
	}
	fail_msg("timed out waiting for thread %s to block in system call %ld", comm, nr);
}

void wait_thread_stays_in_syscall(const char *comm, long nr)
{
	wait_thread_in_syscall(comm, nr);
	msleep(200);
	wait_thread_in_syscall(comm, nr);
}

void cancel_at_orphaned_sync(side *src, side *dst)
{
	assert_int_equal(ferry_migration_cancel(src->vm), 0);
	assert_int_equal(wait_final(src->vm), FERRY_MIGRATION_CANCELLED);
	uint64_t t0 = now_ms();
	const char *why = wait_failed(dst->vm);
	assert_true(now_ms() - t0 < 3000);
	if (strcmp(why, FERRY_CANCELLED_MSG))
		assert_string_equal(why, FERRY_MF_ORPHANED_MSG);
	assert_true(ferry_vm_is_running(src->vm));
}

void expect_pause_reason(side *s, const char *want)
{
	ferry_migration_info i;
	for (int k = 0; k < 5000; k++) {
		ferry_migration_query(s->vm, &i);
		if (!strncmp(i.error_desc, want, strlen(want)))
			break;
		msleep(1);
	}
	fprintf(stderr, "pause reason: %s\n", i.error_desc);
	assert_int_equal(i.error, 0);
	assert_true(!strncmp(i.error_desc, want, strlen(want)));
}

size_t rp_filter_chunk(void *opaque, uint8_t *buf, size_t n, size_t cap)
{
	struct rp_filter *f = opaque;
	assert_true(n <= sizeof(f->in));
	memcpy(f->in, buf, n);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		f->msg[f->have++] = f->in[i];
		if (f->have < 4)
			continue;
		uint16_t type = (uint16_t)(f->msg[0] << 8 | f->msg[1]);
		size_t len = 4 + (size_t)(f->msg[2] << 8 | f->msg[3]) + (type & FERRY_RP_F_SUM ? 8 : 0);
		if (f->have < len)
			continue;
		len = f->fn(f->opaque, f->msg, len, sizeof(f->msg));
		assert_true(o + len <= cap);
		memcpy(buf + o, f->msg, len);
		o += len;
		f->have = 0;
	}
	return o;
}

void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Feeds a hand-made stream to a fresh destination (guest DST_SPEC) and
 * returns its error (static buffer); postcopy: the destination allows it.
 * Checks: the migration FAILED, the return path said the same, and guest
 * RAM outside the pages the stream legitimately wrote is untouched (zero).
 */
const char *feed_stream(const void *data, size_t len, bool postcopy)
{
	return feed_stream_spec(DST_SPEC, data, len, postcopy);
}

const char *feed_stream_spec(const char *spec, const void *data, size_t len, bool postcopy)
{
	static char msg[256];
	side dst;
	side_create(&dst, spec, FERRY_DIRTY_EXPLICIT, true);
	if (postcopy) {
		ferry_migration_params ip;
		ferry_migration_params_init(&ip);
		ip.postcopy = true;
		assert_int_equal(ferry_migration_set_incoming_params(dst.vm, &ip), 0);
	}
	const uint8_t *p = data;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(ferry_migration_incoming_fd(dst.vm, sv[1]), 0);
	size_t off = 0;
	while (off < len) {
		ssize_t n = send(sv[0], p + off, len - off, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_FAILED);
	ferry_migration_info i;
	ferry_migration_query(dst.vm, &i);
	snprintf(msg, sizeof(msg), "%s", i.error_desc);
	/* The return path carries the same message to the source. */
	uint8_t rp[512];
	ssize_t n = recv(sv[0], rp, sizeof(rp), MSG_WAITALL);
	assert_true(n >= 8);
	assert_int_equal(rp[0] << 8 | rp[1], FERRY_RP_SHUT);
	size_t rlen = (size_t)(rp[2] << 8 | rp[3]);
	assert_int_equal((size_t)n, 4 + rlen);
	assert_memory_equal(rp + 8, msg, rlen - 4);
	assert_false(ferry_vm_is_running(dst.vm));
	/* None of these streams carries page data: guest RAM must be untouched. */
	for (unsigned k = 0; k < ferry_guest_ram_count(dst.g); k++) {
		const char *name;
		uint8_t *host;
		uint64_t size;
		ferry_guest_ram(dst.g, k, &name, &host, &size);
		for (uint64_t o = 0; o < size; o++)
			if (host[o])
				fail_msg("block %s byte %llu was written", name, (unsigned long long)o);
	}
	close(sv[0]);
	side_destroy(&dst);
	return msg;
}

