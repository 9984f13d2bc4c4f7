/* SPDX-License-Identifier: MIT */
/*
 * Postcopy, destination side, all of it: the commands (ADVISE, DISCARD,
 * LISTEN, PACKAGE, RUN), the preempt channel (mig/dst/preempt), the
 * background stream after RUN (mig/dst/listen), the package's device state,
 * pause and recovery, and underneath them discard, userfaultfd
 * registration, the fault thread (mig/dst/fault), page requests, atomic
 * page placement and the statistics. The DESIGN, the rules on what each
 * thread touches and the driver's view (the phases dest.c calls) are in
 * postcopy-dst.h.
 *
 * Thread: the commands run on the thread that reads the record (mig/dst/main
 * before RUN, mig/dst/listen after); the phases on mig/dst/main;
 * ferry__pc_place on mig/dst/main, mig/dst/listen, mig/dst/preempt and
 * mig/dst/fault (placed/requested are atomic bitmaps); return-path writes
 * take pc->rp_lock, statistics pc->stat_lock (m->stats_lock first, when
 * both: pc_stats).
 */
#include "migration/postcopy-dst.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/place.h"
#include "stream/format.h"
#include "stream/wire.h"
#include "transport/transport.h"

/* Sets bit and returns whether it was set before (any thread). */
static bool test_and_set(_Atomic unsigned long *map, uint64_t bit)
{
	unsigned long mask = 1UL << (bit % FERRY_BITS_PER_LONG);
	/* Relaxed: the bits are hints for deduplication; the page contents are
	 * ordered by the placement ioctl itself. */
	return atomic_fetch_or_explicit(&map[bit / FERRY_BITS_PER_LONG], mask,
					memory_order_relaxed) & mask;
}

static bool test_atomic(_Atomic unsigned long *map, uint64_t bit)
{
	return (atomic_load_explicit(&map[bit / FERRY_BITS_PER_LONG], memory_order_relaxed) >>
		(bit % FERRY_BITS_PER_LONG)) & 1;
}

/* Thread: mig/dst/main (ADVISE), before any postcopy thread. */
int ferry__pc_dst_init(ferry_pc_dst *pc, struct ferry_migration *m)
{
	memset(pc, 0, sizeof(*pc));
	pc->m = m;
	pc->vm = m->vm;
	pc->uffd = -1;
	pc->wake_fd = -1;
	pthread_mutex_init(&pc->rp_lock, NULL);
	pthread_mutex_init(&pc->stat_lock, NULL);
	for (unsigned i = 0; i < pc->vm->nblocks; i++) {
		uint64_t n = pc->vm->blocks[i]->npages;
		pc->pending[i] = ferry__bitmap_new(n);
		pc->scratch[i] = ferry__bitmap_new(n);
		pc->maps_file[i] = ferry__ram_maps_file(pc->vm->blocks[i]->host,
							pc->vm->blocks[i]->size, pc->vm->blocks[i]->fd);
		if (!pc->scratch[i])
			return -ENOMEM;
		pc->placed[i] = (_Atomic unsigned long *)ferry__bitmap_new(n);
		pc->requested[i] = (_Atomic unsigned long *)ferry__bitmap_new(n);
		if (!pc->pending[i] || !pc->placed[i] || !pc->requested[i])
			return -ENOMEM;
	}
	return 0;
}

/* Thread: mig/dst/main (ADVISE). */
int ferry__pc_dst_probe(ferry_vm_t *vm, ferry_error *err)
{
	(void)vm;
	int fd = ferry__uffd_open();
	if (fd < 0)
		return ferry__error_set(err, fd,
					"postcopy needs userfaultfd: %s", ferry_strerror(fd));
	struct uffdio_api api = {.api = UFFD_API};
	int r = ioctl(fd, UFFDIO_API, &api) < 0 ? -errno : 0;
	close(fd);
	if (r)
		return ferry__error_set(err, r, "postcopy needs userfaultfd: UFFDIO_API: %s",
					ferry_strerror(r));
	return 0;
}

/* Thread: mig/dst/main, before LISTEN: pending and scratch are its own. */
int ferry__pc_dst_discard(ferry_pc_dst *pc, ferry_chan *c, const uint8_t *p, size_t len)
{
	unsigned bi;
	uint64_t first, n;
	/* scratch is all zero between messages: each clears its own words below. */
	int r = ferry__pc_bitmap_decode(pc->vm, c, p, len, pc->scratch, &bi, &first, &n);
	if (r)
		return r;
	struct ferry_ram_block *rb = pc->vm->blocks[bi];
	/*
	 * Every pending page must fault until the source's copy is placed:
	 * drop what precopy put there (MADV_REMOVE frees shared memory's
	 * backing pages; private anonymous memory only needs DONTNEED).
	 * Pages this migration never wrote are holes already: left alone.
	 */
	unsigned long *msg = pc->scratch[bi];
	for (uint64_t w = first / FERRY_BITS_PER_LONG; w < FERRY_BITMAP_LONGS(first + n); w++) {
		pc->pending[bi][w] |= msg[w];
		msg[w] &= rb->received[w];
	}
	uint64_t end = first + n, t0 = ferry__now_ns(), runs = 0;
	uint64_t s = ferry__bitmap_next_set(msg, end, first);
	while (s < end) {
		uint64_t e = ferry__bitmap_next_clear(msg, end, s);
		uint8_t *a = rb->host + (s << FERRY_PAGE_SHIFT);
		size_t l = (size_t)(e - s) << FERRY_PAGE_SHIFT;
		/* On the file when RAM maps all of it: measured ~12% cheaper. */
		bool punched = pc->maps_file[bi] &&
			       !fallocate(rb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					  (off_t)(s << FERRY_PAGE_SHIFT), (off_t)l);
		if (!punched && madvise(a, l, MADV_REMOVE) && madvise(a, l, MADV_DONTNEED))
			return ferry__chan_fail(c, -errno, "cannot discard pages %llu..%llu of '%s': %s",
						(unsigned long long)s, (unsigned long long)e - 1,
						rb->name, strerror(errno));
		/* Holes again: nothing may write them but a placement (see place_uffd). */
		ferry__bitmap_clear_range(rb->received, s, e - s);
		s = ferry__bitmap_next_set(msg, end, e);
		runs++;
	}
	for (uint64_t w = first / FERRY_BITS_PER_LONG; w < FERRY_BITMAP_LONGS(first + n); w++)
		msg[w] = 0;
	ferry_dbg("postcopy: discarded %llu runs of '%s' in %.2f ms", (unsigned long long)runs,
		  rb->name, (double)(ferry__now_ns() - t0) / 1e6);
	return 0;
}

/* Thread: any postcopy thread; takes rp_lock. */
int ferry__pc_rp_send(ferry_pc_dst *pc, uint16_t type, const void *p1, size_t l1,
		      const void *p2, size_t l2)
{
	pthread_mutex_lock(&pc->rp_lock);
	int r = -EPIPE;
	if (pc->rp) {
		ferry__wire_put_rp(pc->rp, type, p1, l1, p2, l2);
		r = ferry__chan_flush(pc->rp);
		pc->rp_last_ns = ferry__now_ns();
	}
	pthread_mutex_unlock(&pc->rp_lock);
	return r;
}

/* Thread: mig/dst/main (listen, pause, recovery, end); takes rp_lock. */
void ferry__pc_dst_set_rp(ferry_pc_dst *pc, ferry_chan *rp)
{
	pthread_mutex_lock(&pc->rp_lock);
	pc->rp = rp;
	pthread_mutex_unlock(&pc->rp_lock);
}

/* Thread: mig/dst/main (preempt reader start and stop); takes rp_lock. */
void ferry__pc_dst_set_req(ferry_pc_dst *pc, ferry_chan *req)
{
	pthread_mutex_lock(&pc->rp_lock);
	pc->req_chan = req;
	pc->req_last_ns = ferry__now_ns();
	pthread_mutex_unlock(&pc->rp_lock);
}

/*
 * One message on the requests' channel: req_chan when attached, else the
 * return path. 0, or -EPIPE when neither is. Takes rp_lock.
 */
static int req_send(ferry_pc_dst *pc, uint16_t type, const void *p, size_t l)
{
	pthread_mutex_lock(&pc->rp_lock);
	int r = -EPIPE;
	ferry_chan *c = pc->req_chan ? pc->req_chan : pc->rp;
	if (c) {
		ferry__wire_put_rp(c, type, p, l, NULL, 0);
		r = ferry__chan_flush(c);
		*(c == pc->req_chan ? &pc->req_last_ns : &pc->rp_last_ns) = ferry__now_ns();
	}
	pthread_mutex_unlock(&pc->rp_lock);
	return r;
}

/* Thread: mig/dst/fault or a resync on mig/dst/main; takes rp_lock. */
static int send_request(ferry_pc_dst *pc, unsigned bi, uint64_t page)
{
	const struct ferry_ram_block *rb = pc->vm->blocks[bi];
	uint8_t m[FERRY_RP_REQ_MAX];
	size_t l = ferry__wire_req_encode(m, page, 1, rb->name);
	return req_send(pc, FERRY_RP_REQ_PAGES, m, l);
}

/*
 * Heartbeats on the return path and on the requests' channel, each when
 * it has been quiet for heartbeat_ms. Thread: mig/dst/fault; takes rp_lock.
 */
static void heartbeats(ferry_pc_dst *pc)
{
	uint64_t quiet_ns = pc->heartbeat_ms * 1000000ull, now = ferry__now_ns();
	pthread_mutex_lock(&pc->rp_lock);
	bool rp = pc->rp && now - pc->rp_last_ns >= quiet_ns;
	bool req = pc->req_chan && now - pc->req_last_ns >= quiet_ns;
	pthread_mutex_unlock(&pc->rp_lock);
	if (rp)
		ferry__pc_rp_send(pc, FERRY_RP_HEARTBEAT, NULL, 0, NULL, 0);
	if (req)
		req_send(pc, FERRY_RP_HEARTBEAT, NULL, 0);
}

static unsigned hist_bucket(uint64_t ns)
{
	if (ns < 16)
		return (unsigned)ns;
	unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
	return (msb - 3) * 16 + (unsigned)((ns >> (msb - 4)) & 15);
}

static uint64_t hist_upper(unsigned idx)
{
	if (idx < 16)
		return idx;
	unsigned msb = idx / 16 + 3, sub = idx % 16;
	return ((16ull + sub) << (msb - 4)) + (1ull << (msb - 4)) - 1;
}

/* Bookkeeping after pages of block bi were placed (stat_lock not held). */
static void placed_requested(ferry_pc_dst *pc, unsigned bi, uint64_t first, uint64_t n)
{
	uint64_t now = 0;
	for (uint64_t p = first; p < first + n; p++) {
		if (!test_atomic(pc->requested[bi], p))
			continue;
		if (!now)
			now = ferry__now_ns();
		pthread_mutex_lock(&pc->stat_lock);
		ferry__pc_bt_end(&pc->bt, bi, p, now);
		for (unsigned i = 0; i < pc->nreq; i++) {
			if (pc->req[i].block != bi || pc->req[i].page != p)
				continue;
			uint64_t d = now - pc->req[i].t0;
			if (pc->req[i].non_vcpu)
				ferry__pc_bt_non_vcpu(&pc->bt, d);
			pc->hist[hist_bucket(d)]++;
			pc->samples++;
			pc->blocked_ns += d;
			if (d > pc->max_ns)
				pc->max_ns = d;
			pc->req[i] = pc->req[--pc->nreq];
			break;
		}
		pthread_mutex_unlock(&pc->stat_lock);
	}
}

/* Marks [first, first + n) placed; counts pending pages that became placed. */
static void mark_placed(ferry_pc_dst *pc, unsigned bi, uint64_t first, uint64_t n)
{
	uint64_t newly = 0;
	for (uint64_t p = first; p < first + n; p++)
		if (!test_and_set(pc->placed[bi], p) && ferry__bitmap_test(pc->pending[bi], p))
			newly++;
	if (newly) {
		pthread_mutex_lock(&pc->stat_lock);
		pc->placed_pages += newly;
		pthread_mutex_unlock(&pc->stat_lock);
	}
	placed_requested(pc, bi, first, n);
}

/*
 * Thread: mig/dst/listen, mig/dst/preempt, mig/dst/fault and the package
 * loader on mig/dst/main; placed/requested are atomic, stats take stat_lock.
 */
/* ferry__place_atomic's report of pages that landed. */
struct placed_ctx {
	ferry_pc_dst *pc;
	unsigned bi;
};

static void on_placed(void *opaque, uint64_t first, uint64_t n)
{
	struct placed_ctx *p = opaque;
	mark_placed(p->pc, p->bi, first, n);
}

int ferry__pc_place(ferry_pc_dst *pc, unsigned bi, uint64_t first, uint32_t n,
		    const uint8_t *data)
{
	struct placed_ctx ctx = {.pc = pc, .bi = bi};
	const struct ferry_place_atomic pa = {
		.uffd = pc->uffd, .zeropage = pc->zeropage_ok, .placed = on_placed, .opaque = &ctx};
	return ferry__place_atomic(&pa, pc->vm->blocks[bi], first, n, data);
}

/* Thread: mig/dst/main (placed pages counted under stat_lock). */
bool ferry__pc_dst_complete(ferry_pc_dst *pc)
{
	pthread_mutex_lock(&pc->stat_lock);
	bool done = pc->placed_pages >= pc->npending;
	pthread_mutex_unlock(&pc->stat_lock);
	return done;
}

/* One fault: request the page, or resolve it here when the source has none. */
static void handle_fault(ferry_pc_dst *pc, uint64_t addr, pid_t ptid)
{
	ferry_vm_t *vm = pc->vm;
	unsigned bi;
	for (bi = 0; bi < vm->nblocks; bi++) {
		struct ferry_ram_block *rb = vm->blocks[bi];
		if (addr >= (uintptr_t)rb->host && addr < (uintptr_t)rb->host + rb->size)
			break;
	}
	if (bi == vm->nblocks)
		return; /* not guest RAM: cannot happen with our registrations */
	struct ferry_ram_block *rb = vm->blocks[bi];
	uint64_t page = (addr - (uintptr_t)rb->host) >> FERRY_PAGE_SHIFT;
	pthread_mutex_lock(&pc->stat_lock);
	pc->faults++;
	pthread_mutex_unlock(&pc->stat_lock);
	if (test_atomic(pc->placed[bi], page)) {
		/* Placed since the fault was queued; the placement woke it. */
		struct uffdio_range wr = {.start = addr & ~(uint64_t)(FERRY_PAGE_SIZE - 1),
					  .len = FERRY_PAGE_SIZE};
		ioctl(pc->uffd, UFFDIO_WAKE, &wr);
		return;
	}
	if (!ferry__bitmap_test(pc->pending[bi], page)) {
		/* Never populated on the source: a zero page, no round trip. */
		if (ferry__pc_place(pc, bi, page, 1, NULL) == 0) {
			pthread_mutex_lock(&pc->stat_lock);
			pc->local_zero++;
			pthread_mutex_unlock(&pc->stat_lock);
		}
		return;
	}
	uint64_t now = ferry__now_ns();
	pthread_mutex_lock(&pc->stat_lock);
	bool vcpu = ferry__pc_bt_begin(&pc->bt, ptid, bi, page, now);
	pthread_mutex_unlock(&pc->stat_lock);
	if (test_and_set(pc->requested[bi], page)) {
		/* Already asked for; the placement wakes this one too. If it was
		 * placed before this vCPU's wait was recorded, end the wait here. */
		if (vcpu && test_atomic(pc->placed[bi], page)) {
			pthread_mutex_lock(&pc->stat_lock);
			ferry__pc_bt_end(&pc->bt, bi, page, ferry__now_ns());
			pthread_mutex_unlock(&pc->stat_lock);
		}
		return;
	}
	pthread_mutex_lock(&pc->stat_lock);
	pc->requests++;
	if (pc->nreq == FERRY_PC_REQ_MAX) /* forget the oldest timing */
		memmove(&pc->req[0], &pc->req[1], sizeof(pc->req[0]) * --pc->nreq);
	pc->req[pc->nreq].block = bi;
	pc->req[pc->nreq].page = page;
	pc->req[pc->nreq].t0 = now;
	pc->req[pc->nreq].non_vcpu = !vcpu;
	pc->nreq++;
	pthread_mutex_unlock(&pc->stat_lock);
	if (test_atomic(pc->placed[bi], page)) {
		placed_requested(pc, bi, page, 1); /* raced with its placement */
		return;
	}
	/* While paused this fails: ferry__pc_dst_resync() asks again. */
	send_request(pc, bi, page);
}

/* Thread: mig/dst/fault. Until wake_fd: reads faults, sends heartbeats. */
static void *fault_thread(void *arg)
{
	ferry_pc_dst *pc = arg;
	pthread_setname_np(pthread_self(), "mig/dst/fault");
	ferry__pc_boost_thread(pc->m);
	struct pollfd fds[2] = {{.fd = pc->uffd, .events = POLLIN}, {.fd = pc->wake_fd, .events = POLLIN}};
	for (;;) {
		int n = poll(fds, 2, (int)pc->heartbeat_ms);
		if (n < 0 && errno != EINTR)
			break;
		if (fds[1].revents)
			break;
		heartbeats(pc);
		if (n <= 0 || !(fds[0].revents & POLLIN))
			continue;
		struct uffd_msg msg[16];
		ssize_t k = read(pc->uffd, msg, sizeof(msg));
		if (k < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			ferry_warn("postcopy: reading faults: %s", strerror(errno));
			break;
		}
		for (size_t i = 0; i < (size_t)k / sizeof(msg[0]); i++)
			if (msg[i].event == UFFD_EVENT_PAGEFAULT)
				handle_fault(pc, msg[i].arg.pagefault.address,
					     (pid_t)msg[i].arg.pagefault.feat.ptid);
	}
	ferry__log_thread_cpu();
	return NULL;
}

/*
 * A userfaultfd past its API handshake, with the faulting thread's id in
 * each fault (which vCPU waits: pc-blocktime.h) when the kernel gives it;
 * without it, every fault counts as a non-vCPU one. fd or negative errno.
 */
static int pc_uffd_open(void)
{
	for (int with_tid = 1; with_tid >= 0; with_tid--) {
		int fd = ferry__uffd_open();
		if (fd < 0)
			return fd;
		struct uffdio_api api = {.api = UFFD_API,
					 .features = with_tid ? UFFD_FEATURE_THREAD_ID : 0};
		if (ioctl(fd, UFFDIO_API, &api) == 0)
			return fd;
		int r = -errno;
		close(fd);
		if (r != -EINVAL || !with_tid)
			return r;
	}
	return -EINVAL;
}

/* Thread: mig/dst/main (LISTEN); starts mig/dst/fault. */
int ferry__pc_dst_listen(ferry_pc_dst *pc, ferry_chan *rp, ferry_error *err)
{
	ferry_vm_t *vm = pc->vm;
	int r;
	pc->npending = 0;
	for (unsigned i = 0; i < vm->nblocks; i++)
		pc->npending += ferry__bitmap_count(pc->pending[i], vm->blocks[i]->npages);
	pc->uffd = pc_uffd_open();
	if (pc->uffd < 0) {
		r = pc->uffd;
		return ferry__error_set(err, r, "postcopy: userfaultfd: %s", ferry_strerror(r));
	}
	pthread_mutex_lock(&pc->stat_lock);
	ferry__pc_bt_init(&pc->bt, vm->vcpu_tids, vm->nvcpu_tids);
	pthread_mutex_unlock(&pc->stat_lock);
	pc->zeropage_ok = true;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		struct uffdio_register reg = {
			.range = {.start = (uintptr_t)rb->host, .len = rb->size},
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(pc->uffd, UFFDIO_REGISTER, &reg) < 0) {
			r = -errno;
			return ferry__error_set(err, r,
						"postcopy: cannot register RAM block '%s' for missing-page faults: %s",
						rb->name, ferry_strerror(r));
		}
		pc->registered = true;
		if (!(reg.ioctls & (1ULL << _UFFDIO_COPY))) {
			return ferry__error_set(err, -EOPNOTSUPP,
						"postcopy: RAM block '%s' does not support UFFDIO_COPY",
						rb->name);
		}
		if (!(reg.ioctls & (1ULL << _UFFDIO_ZEROPAGE)))
			pc->zeropage_ok = false;
	}
	pc->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pc->wake_fd < 0) {
		r = -errno;
		return ferry__error_set(err, r, "postcopy: eventfd: %s", ferry_strerror(r));
	}
	uint32_t link_ms = ferry__mig_link_timeout_ms(pc->m);
	pc->heartbeat_ms = link_ms / 4 < 25 ? 25 : link_ms / 4;
	ferry__pc_dst_set_rp(pc, rp);
	if ((r = -pthread_create(&pc->fault_thread, NULL, fault_thread, pc))) {
		return ferry__error_set(err, r,
					"postcopy: cannot start the fault thread: %s",
					ferry_strerror(r));
	}
	pc->fault_started = true;
	return 0;
}

static int send_missing(void *opaque, const uint8_t *msg, size_t len)
{
	return ferry__pc_rp_send(opaque, FERRY_RP_MISSING, msg, len, NULL, 0);
}

/* Thread: mig/dst/main, after a recovery attached the new return path. */
int ferry__pc_dst_resync(ferry_pc_dst *pc)
{
	ferry_vm_t *vm = pc->vm;
	int r = 0;
	for (unsigned i = 0; i < vm->nblocks && !r; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		unsigned long *missing = ferry__bitmap_new(rb->npages);
		if (!missing) {
			r = -ENOMEM;
			break;
		}
		for (uint64_t w = 0; w < FERRY_BITMAP_LONGS(rb->npages); w++)
			missing[w] = pc->pending[i][w] &
				     ~atomic_load_explicit(&pc->placed[i][w], memory_order_relaxed);
		r = ferry__wire_bitmap_each(rb->name, rb->npages, missing, send_missing, pc);
		free(missing);
	}
	if (!r)
		r = ferry__pc_rp_send(pc, FERRY_RP_MISSING_END, NULL, 0, NULL, 0);
	/* Requests lost with the old connection: ask again. */
	for (unsigned i = 0; i < vm->nblocks && !r; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		for (uint64_t p = 0; p < rb->npages && !r; p++)
			if (test_atomic(pc->requested[i], p) && !test_atomic(pc->placed[i], p))
				r = send_request(pc, i, p);
	}
	return r;
}

/* Copies the statistics into info. Thread: any, with m->stats_lock held; takes stat_lock. */
static void pc_stats(ferry_pc_dst *pc, ferry_migration_info *info)
{
	pthread_mutex_lock(&pc->stat_lock);
	info->postcopy_faults = pc->faults;
	info->postcopy_requests = pc->requests;
	info->postcopy_local_zero = pc->local_zero;
	info->postcopy_latency_samples = pc->samples;
	info->postcopy_latency_max_us = pc->max_ns / 1000;
	info->postcopy_blocktime_ms = pc->blocked_ns / 1000000;
	ferry__pc_bt_fill(&pc->bt, info);
	uint64_t want50 = (pc->samples + 1) / 2, want99 = (pc->samples * 99 + 99) / 100, acc = 0;
	bool got50 = false;
	for (unsigned i = 0; i < FERRY_PC_HIST_BUCKETS && pc->samples; i++) {
		acc += pc->hist[i];
		uint64_t v = hist_upper(i) < pc->max_ns ? hist_upper(i) : pc->max_ns;
		if (!got50 && acc >= want50) {
			info->postcopy_latency_p50_us = v / 1000;
			got50 = true;
		}
		if (acc >= want99) {
			info->postcopy_latency_p99_us = v / 1000;
			break;
		}
	}
	pthread_mutex_unlock(&pc->stat_lock);
}

/* Thread: any, with vm->mig_lock (m->pc_dst is set and cleared under it) and m->stats_lock held. */
void ferry__pc_dst_query(struct ferry_migration *m, ferry_migration_info *info)
{
	if (m->pc_dst)
		pc_stats(m->pc_dst, info);
}

/* Thread: mig/dst/main, after every other postcopy thread was stopped. */
void ferry__pc_dst_fini(ferry_pc_dst *pc)
{
	if (!pc->m)
		return;
	/*
	 * Unregister first: that wakes every thread still waiting on a fault
	 * (it retries as an ordinary fault), so none is left behind by the
	 * fault thread's exit.
	 */
	if (pc->registered) {
		for (unsigned i = 0; i < pc->vm->nblocks; i++) {
			struct uffdio_range rg = {.start = (uintptr_t)pc->vm->blocks[i]->host,
						  .len = pc->vm->blocks[i]->size};
			ioctl(pc->uffd, UFFDIO_UNREGISTER, &rg);
		}
		pc->registered = false;
	}
	if (pc->fault_started) {
		uint64_t one = 1;
		if (write(pc->wake_fd, &one, sizeof(one)) < 0)
			ferry_warn("postcopy: waking the fault thread: %s", strerror(errno));
		pthread_join(pc->fault_thread, NULL);
		pc->fault_started = false;
	}
	if (pc->uffd >= 0)
		close(pc->uffd);
	if (pc->wake_fd >= 0)
		close(pc->wake_fd);
	for (unsigned i = 0; i < pc->vm->nblocks; i++) {
		free(pc->pending[i]);
		free(pc->scratch[i]);
		free((void *)pc->placed[i]);
		free((void *)pc->requested[i]);
	}
	pthread_mutex_destroy(&pc->rp_lock);
	pthread_mutex_destroy(&pc->stat_lock);
	pc->m = NULL;
}

/* ---- the commands and phases the driver calls (postcopy-dst.h) ---- */

static void *preempt_thread(void *arg);
static int pc_accept_preempt(ferry_dst *l, int lfd, ferry_error *err);

/* ADVISE: this destination must allow postcopy and be able to do it. Thread: mig/dst/main. */
int ferry__postcopy_advise(ferry_dst *l, uint32_t flags)
{
	struct ferry_migration *m = l->m;
	ferry_vm_t *vm = l->vm;
	ferry_chan *c = l->c;
	ferry_error err = { 0 };
	if (l->pc || l->ram.started)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy advised twice or late");
	if ((flags & ~(FERRY_PC_PREEMPT | FERRY_PC_PREEMPT_REQS)) ||
	    (flags & FERRY_PC_PREEMPT_REQS && !(flags & FERRY_PC_PREEMPT)))
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy flags 0x%x", flags);
	pthread_mutex_lock(&vm->mig_lock);
	ferry_migration_params ip = vm->in_params;
	pthread_mutex_unlock(&vm->mig_lock);
	if (!ip.postcopy)
		return ferry__chan_fail(c, FERRY_EMISMATCH,
					"the source asks for postcopy but postcopy-ram is not enabled on the destination");
	pthread_mutex_lock(&m->stats_lock);
	m->params.postcopy = true;
	m->params.link_timeout_ms = ip.link_timeout_ms;
	m->params.postcopy_cpu = ip.postcopy_cpu;
	pthread_mutex_unlock(&m->stats_lock);
	int r = ferry__pc_dst_probe(vm, &err);
	if (r)
		return ferry__chan_fail(c, r, "%s", err.msg);
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
	if ((r = pc_accept_preempt(l, m->listen_fd, &err)))
		return ferry__chan_fail(c, r, "%s", err.msg);
	l->pre_on = true;
	l->pre_reqs = flags & FERRY_PC_PREEMPT_REQS;
	return 0;
}

/*
 * Accepts the preempt connection on lfd and reads its handshake. The
 * source connects it right after the main connection's ADVISE (or
 * RESUME): it must come within the link timeout, while the main
 * connection (l->c) is up, and its handshake within the link timeout
 * too (fuzz-pcconn found a source that advised preempt and never
 * connected it, or sent 23 of its handshake's 24 bytes, hanging this
 * thread).
 * Thread: mig/dst/main.
 */
static int pc_accept_preempt(ferry_dst *l, int lfd, ferry_error *err)
{
	uint32_t link_ms = ferry__mig_link_timeout_ms(l->m);
	uint64_t deadline = ferry__now_ns() + (uint64_t)link_ms * 1000000;
	int fd, r = ferry__sock_accept_by(lfd, deadline, l->c->fd, &fd);
	if (r == -ETIMEDOUT)
		return ferry__error_set(err, r,
					"the source did not connect the postcopy preempt channel within %u ms",
					link_ms);
	if (r == -EPIPE)
		return ferry__error_set(err, r,
					"the source closed the connection before connecting the postcopy preempt channel");
	if (r) {
		return ferry__error_set(err, r,
					"accepting the postcopy preempt channel: %s",
					ferry_strerror(r));
	}
	/* Its handshake (and TLS's) too: a source that stops sending it fails the read. */
	ferry__sock_set_link_timeout(fd, link_ms);
	if ((r = ferry__chan_init(&l->pre, fd))) {
		close(fd);
		return r;
	}
	l->pre.peer = "source";
	if ((r = ferry__chan_tls_open(&l->pre, &l->m->tls, err)))
		goto refused;
	if (l->m->sums_on)
		ferry__sums_attach(&l->pre, &l->m->sums, FERRY_SUM_PREEMPT);
	uint8_t hs[FERRY_PC_HS_LEN];
	ferry__chan_ctx(&l->pre, "preempt channel handshake");
	if ((r = ferry__chan_read(&l->pre, hs, sizeof(hs)))) {
		ferry__error_set(err, r, "%s", l->pre.in_err.msg);
		goto refused;
	}
	if (!ferry__wire_pc_hs_match(hs, l->uuid)) {
		r = ferry__error_set(err, FERRY_EBADSTREAM,
				     "the postcopy preempt channel's handshake does not match this migration");
		goto refused;
	}
	atomic_store(&l->m->preempt_fd, fd);
	return 0;
refused: /* not pre_on: nothing else would close it (flip-random found the leak) */
	ferry__chan_close(&l->pre);
	return r;
}

/* Thread: mig/dst/main. Starts mig/dst/preempt over l->pre. */
static int pre_start(ferry_dst *l)
{
	l->pre_ram = (ferry_ram_loader){ .vm = l->vm, .c = &l->pre, .pc = l->pc,
					 .pages = l->pre_ram.pages, .zeros = l->pre_ram.zeros };
	l->pre_ram.bounce = malloc((size_t)FERRY_RAM_MAX_RUN << FERRY_PAGE_SHIFT);
	if (!l->pre_ram.bounce)
		return -ENOMEM;
	atomic_store(&l->pre_quit, false);
	atomic_store(&l->pre_broke, false);
	int r = -pthread_create(&l->pre_thread, NULL, preempt_thread, l);
	l->pre_started = !r;
	if (!r && l->pre_reqs) /* page requests from now on (resync's too) */
		ferry__pc_dst_set_req(l->pc, &l->pre);
	return r;
}

/* Thread: mig/dst/main. Stops and joins mig/dst/preempt, closes l->pre. */
static void pre_stop(ferry_dst *l)
{
	ferry__pc_dst_set_req(l->pc, NULL); /* no writer once it is closed */
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

/* LISTEN: precopy placement ends, RAM is registered for postcopy. Thread: mig/dst/main. */
int ferry__postcopy_listen(ferry_dst *l)
{
	ferry_chan *c = l->c;
	ferry_error err = { 0 };
	if (!l->pc || l->pc_listening)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy listen %s",
					l->pc ? "twice" : "without advise");
	/* Precopy is over: the multifd receivers have placed all they had. */
	ferry__dst_mf_stop(l);
	ferry__place_fini(l->vm); /* RAM is registered for postcopy instead */
	/* Pages that did not verify in precopy must be among those sent again. */
	int r = ferry__sum_listen(c, l->pc->pending);
	if (r)
		return r;
	uint64_t t0 = ferry__now_ns();
	r = ferry__pc_dst_listen(l->pc, c, &err);
	ferry_dbg("postcopy: listening (RAM registered) in %.2f ms", (double)(ferry__now_ns() - t0) / 1e6);
	if (r)
		return ferry__chan_fail(c, r, "%s", err.msg);
	l->pc_listening = true;
	l->ram.pc = l->pc;
	if (!l->ram.bounce) /* may exist already: precopy pages were read through it */
		l->ram.bounce = malloc((size_t)FERRY_RAM_MAX_RUN << FERRY_PAGE_SHIFT);
	if (!l->ram.bounce)
		return ferry__chan_fail(c, -ENOMEM, "out of memory for postcopy");
	/* l->pre's since its accept */
	ferry__sock_set_link_timeout(c->fd, ferry__mig_link_timeout_ms(l->m));
	if (l->pre_on) {
		if ((r = pre_start(l)))
			return ferry__chan_fail(c, r, "cannot start the preempt thread");
	}
	return 0;
}

/*
 * PACKAGE: its bytes go to a memfd, so that the main connection is free for
 * mig/dst/listen while the device state loads (pc_load_package).
 */
int ferry__postcopy_package_read(ferry_dst *l, uint32_t len)
{
	ferry_chan *c = l->c;
	if (!l->pc_listening || l->pkg_fd >= 0)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy package %s",
					l->pc_listening ? "twice" : "before listen");
	if (len == 0 || len > FERRY_PC_PACKAGE_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy package of %u bytes (max %u)",
					len, FERRY_PC_PACKAGE_MAX);
	if (c->sums && !l->digest_seen)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy package without its digest");
	int fd = memfd_create("ferry-package", MFD_CLOEXEC);
	if (fd < 0)
		return ferry__chan_fail(c, -errno, "memfd for the postcopy package: %s", strerror(errno));
	uint8_t tmp[65536];
	XXH3_state_t sum; /* the package's own checksum (DIGEST's), not the control hash's */
	XXH3_64bits_reset(&sum);
	int r = 0;
	for (uint32_t done = 0; done < len && !r;) {
		uint32_t k = len - done < sizeof(tmp) ? len - done : (uint32_t)sizeof(tmp);
		if ((r = ferry__chan_read_direct(c, tmp, k)))
			break;
		XXH3_64bits_update(&sum, tmp, k);
		if (write(fd, tmp, k) != (ssize_t)k)
			r = ferry__chan_fail(c, -EIO, "writing the postcopy package: %s", strerror(errno));
		done += k;
	}
	if (!r && c->sums)
		r = ferry__sum_check_value(c, XXH3_64bits_digest(&sum), l->pkg_sum, "postcopy package");
	if (!r && lseek(fd, 0, SEEK_SET) != 0)
		r = ferry__chan_fail(c, -errno, "postcopy package: %s", strerror(errno));
	if (r) {
		close(fd);
		return r;
	}
	l->pkg_fd = fd;
	l->pkg_len = len;
	l->pc_running = true; /* load_stream returns: the rest is postcopy */
	ferry__dst_mark_bytes(l, &l->m->pc_bytes); /* the package came before the switch */
	return 0;
}

/*
 * mig/dst/preempt: requested pages from the preempt connection. If it
 * breaks while in use, the main connection is shut down too so that both
 * pause together.
 */
static void *preempt_thread(void *arg)
{
	ferry_dst *l = arg;
	pthread_setname_np(pthread_self(), "mig/dst/preempt");
	ferry__pc_boost_thread(l->m);
	ferry__ram_load(&l->pre_ram, false);
	if (!atomic_load(&l->pre_quit)) {
		atomic_store(&l->pre_broke, true); /* before the cut: pc_drain must see it */
		char why[300];
		snprintf(why, sizeof(why), "postcopy preempt channel: %s",
			 l->pre.in_err.msg[0] ? l->pre.in_err.msg : "ended");
		ferry_warn("%s", why);
		/* Bad pages: the pause says so; a broken link says it itself. */
		ferry__mig_cut(l->m, l->pre.in_err.code == FERRY_EBADSTREAM ? why : NULL);
	}
	ferry__log_thread_cpu();
	return NULL;
}

/*
 * A PART section of the background stream, to its participant: only one
 * that may go on after the switch (RAM). Thread: mig/dst/listen.
 */
static int load_part(ferry_dst *l)
{
	ferry_section sec = { .type = FERRY_REC_SECTION_PART };
	ferry__chan_ctx_name(l->c, "section part");
	int r = ferry__wire_get_section_id(l->c, &sec.id);
	if (r)
		return r;
	int k = ferry__parts_find(&l->parts, l->c, sec.id);
	if (k >= 0 && !(l->parts.p[k].ops->flags & FERRY_PART_POSTCOPY))
		k = ferry__chan_fail(l->c, FERRY_EBADSTREAM, "section %u in postcopy", sec.id);
	return k < 0 ? k : ferry__parts_load_at(&l->parts, k, l->c, &sec);
}

/* Thread: mig/dst/listen. The background pages on the main connection, until EOF. */
static void *listen_thread(void *arg)
{
	ferry_dst *l = arg;
	ferry_chan *c = l->c;
	pthread_setname_np(pthread_self(), "mig/dst/listen");
	int r = 0;
	for (;;) {
		uint8_t type;
		ferry__chan_ctx(c, "record");
		if ((r = ferry__wire_get_record(c, &type)))
			break;
		if (type == FERRY_REC_EOF)
			break;
		if (type == FERRY_REC_SECTION_PART) {
			if ((r = load_part(l)))
				break;
		} else if (type == FERRY_REC_COMMAND) {
			if ((r = ferry__dst_load_command(l)))
				break;
		} else {
			r = ferry__chan_fail(c, FERRY_EBADSTREAM, "record type 0x%02x in postcopy", type);
			break;
		}
		ferry__dst_stats(l);
	}
	l->listen_r = r;
	ferry__log_thread_cpu();
	return NULL;
}

/*
 * Loads the package (device state, then RUN) while mig/dst/listen already
 * reads the main connection, then every participant's load_complete but
 * FERRY_PART_POSTCOPY ones' (live devices: their load threads done, their
 * configs applied; their data came before LISTEN). Returns 0 once RUN was
 * seen and those completed. Thread: mig/dst/main.
 */
static int pc_load_package(ferry_dst *l)
{
	ferry_chan pk;
	int r = ferry__chan_init(&pk, l->pkg_fd);
	if (r)
		return r;
	if (l->m->sums_on)
		ferry__sums_attach(&pk, &l->m->sums, FERRY_SUM_PACKAGE);
	l->pkg_fd = -1; /* the channel owns it */
	ferry_dst pl = { .m = l->m, .vm = l->vm, .c = &pk, .parts = l->parts, .pc = l->pc,
		      .pc_listening = true, .pkg_fd = -1 };
	pl.ram.started = true; /* no RAM setup (nor multifd, nor advise) in a package */
	while (!r && ferry__chan_offset(&pk) < l->pkg_len) {
		uint8_t type;
		ferry__chan_ctx(&pk, "postcopy package record");
		if ((r = ferry__wire_get_record(&pk, &type)))
			break;
		if (type == FERRY_REC_SECTION_FULL)
			r = ferry__dst_load_section(&pl, type);
		else if (type == FERRY_REC_COMMAND && !pl.pc_running)
			r = ferry__dst_load_command(&pl);
		else
			r = ferry__chan_fail(&pk, FERRY_EBADSTREAM, "record type 0x%02x in the postcopy package",
					     type);
	}
	if (!r && !pl.pc_running)
		r = ferry__chan_fail(&pk, FERRY_EBADSTREAM, "postcopy package without run");
	if (!r) /* what must be whole before the vCPUs start (live devices) */
		r = ferry__parts_load_complete(&pl.parts, &pk, true);
	if (r) {
		struct ferry_migration *m = l->m;
		ferry__mig_set_error(m, r, "%s", ferry__error_text(&pk.in_err, r));
	}
	l->run_after = pl.run_after;
	ferry__chan_close(&pk);
	return r;
}

/* A recovered connection: header of the same source, then RESUME. Thread: mig/dst/main. */
static int pc_accept_resume(ferry_dst *l, int lfd, ferry_error *err)
{
	ferry_chan *c = l->c;
	int fd, r = ferry__sock_accept(lfd, &fd);
	if (r) {
		return ferry__error_set(err, r, "accept failed: %s", ferry_strerror(r));
	}
	/* Its opening too: a source that stops sending it fails the read. */
	ferry__sock_set_link_timeout(fd, ferry__mig_link_timeout_ms(l->m));
	if ((r = ferry__chan_init(c, fd))) {
		close(fd);
		return r;
	}
	c->peer = "source";
	atomic_store(&l->m->chan_fd, fd);
	if ((r = ferry__chan_tls_open(c, &l->m->tls, err)))
		return r;
	if (l->m->sums_on)
		ferry__sums_attach(c, &l->m->sums, FERRY_SUM_MAIN);
	ferry_wire_hdr hdr;
	uint8_t t;
	uint16_t cmd, clen;
	ferry__chan_ctx(c, "stream header");
	if ((r = ferry__wire_get_header(c, &hdr)))
		goto bad;
	uint32_t version = c->sums ? FERRY_STREAM_VERSION : FERRY_STREAM_VERSION_PLAIN;
	if (hdr.magic != FERRY_STREAM_MAGIC || hdr.version != version ||
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
	if (l->pre_on && (r = pc_accept_preempt(l, lfd, err)))
		return r;
	return 0;
bad:
	return ferry__error_set(err, r, "%s", ferry__error_text(&c->in_err, r));
}

/* Drops the connections of a broken postcopy; the guest keeps running. Thread: mig/dst/main. */
static void pc_disconnect(ferry_dst *l)
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
 * Runs mig/dst/listen on the main connection until it ends (its
 * l->listen_r says how). The first one was started before the package
 * loaded; each later one reads a recovered connection. Thread: mig/dst/main.
 */
static int listen_run(ferry_dst *l)
{
	pthread_t t;
	if (l->listen_started) {
		t = l->listen_thread;
		l->listen_started = false;
	} else {
		int r = -pthread_create(&t, NULL, listen_thread, l);
		if (r)
			return r;
	}
	pthread_join(t, NULL);
	return 0;
}

/*
 * EOF on the main connection: requested pages the source sent on the
 * preempt connection (and left out of the background) may still be on
 * their way there. 0 once every page is placed; 1 when the preempt
 * connection broke first (a bad page on it, or the link): those pages are
 * lost, so postcopy pauses and the recovery asks for them again (found by
 * flip-random: a flipped bit in the last requested page, after the
 * source's EOF, failed the migration with the guest running here).
 * Thread: mig/dst/main.
 */
static int pc_drain(ferry_dst *l)
{
	uint64_t end = ferry__now_ns() + (uint64_t)ferry__mig_link_timeout_ms(l->m) * 1000000;
	while (!ferry__pc_dst_complete(l->pc) && l->pre_on && !atomic_load(&l->pre_broke) &&
	       ferry__now_ns() < end)
		ferry__sleep_ns(1000000);
	if (ferry__pc_dst_complete(l->pc))
		return 0;
	if (atomic_load(&l->pre_broke)) { /* set only with pre_on */
		l->listen_r = ferry__chan_fail(l->c, -EPIPE,
					       "the preempt connection ended with requested pages missing");
		return 1;
	}
	return ferry__chan_fail(l->c, FERRY_EBADSTREAM,
				"the source ended postcopy with pages still missing");
}

/* The main connection broke: drops the links and pauses. Thread: mig/dst/main. */
static void pc_pause(ferry_dst *l)
{
	char why[300];
	snprintf(why, sizeof(why), "%s", ferry__error_text(&l->c->in_err, l->listen_r));
	pc_disconnect(l);
	ferry__mig_paused(l->m, why);
	ferry__mig_set_status(l->m, FERRY_MIGRATION_POSTCOPY_PAUSED);
}

/*
 * Waits for the listener ferry_migration_recover() hands over. Returns its
 * fd, or -ECANCELED when the VM is being destroyed. Thread: mig/dst/main.
 */
static int recover_wait(ferry_dst *l)
{
	struct ferry_migration *m = l->m;
	ferry_vm_t *vm = l->vm;
	pthread_mutex_lock(&vm->mig_lock);
	while (m->recover_fd < 0 && !ferry__mig_cancelled(m))
		pthread_cond_wait(&vm->mig_cond, &vm->mig_lock);
	int lfd = m->recover_fd;
	pthread_mutex_unlock(&vm->mig_lock);
	if (ferry__mig_cancelled(m))
		return -ECANCELED;
	return lfd;
}

/*
 * One recovery on listener lfd (closed here): the source's new connection,
 * then the return path, the preempt reader and the resync. 0, or a
 * negative errno with err saying why. Thread: mig/dst/main.
 */
static int pc_resume(ferry_dst *l, int lfd, ferry_error *err)
{
	struct ferry_migration *m = l->m;
	int r = pc_accept_resume(l, lfd, err);
	/* One recovery per listener: the next pause needs a new one. */
	pthread_mutex_lock(&l->vm->mig_lock);
	m->recover_fd = -1;
	pthread_mutex_unlock(&l->vm->mig_lock);
	close(lfd);
	if (r)
		return r;
	ferry__pc_dst_set_rp(l->pc, l->c);
	if (l->pre_on)
		r = pre_start(l);
	if (!r)
		r = ferry__pc_dst_resync(l->pc);
	if (r)
		ferry__error_set(err, r, "resync failed: %s", ferry_strerror(r));
	return r;
}

/*
 * Paused: recovers on each listener handed over until one recovery
 * succeeds, then postcopy is active again. 0 or -ECANCELED.
 * Thread: mig/dst/main.
 */
static int pc_recover(ferry_dst *l)
{
	struct ferry_migration *m = l->m;
	for (;;) {
		int lfd = recover_wait(l);
		if (lfd < 0)
			return lfd;
		ferry__mig_set_status(m, FERRY_MIGRATION_POSTCOPY_RECOVER);
		ferry_error err = { 0 };
		if (!pc_resume(l, lfd, &err))
			break;
		ferry__mig_pause_reason(m, "postcopy recovery failed: %s", err.msg);
		pc_disconnect(l);
		ferry__mig_set_status(m, FERRY_MIGRATION_POSTCOPY_PAUSED);
	}
	ferry__pc_recovered(m);
	return 0;
}

/*
 * After RUN: mig/dst/listen takes the main connection until EOF. A broken
 * connection pauses; ferry_migration_recover() brings a new one. Returns 0
 * once every page is placed, or a negative errno. Thread: mig/dst/main.
 */
static int pc_incoming(ferry_dst *l)
{
	for (;;) {
		int r = listen_run(l);
		if (r)
			return r;
		if (!l->listen_r && (r = pc_drain(l)) <= 0)
			return r;
		pc_pause(l);
		if ((r = pc_recover(l)))
			return r;
	}
}

/* Ends postcopy: unregisters RAM (waking any waiter), stops its threads. Thread: mig/dst/main. */
static void pc_end(ferry_dst *l)
{
	if (!l->pc)
		return;
	if (l->pre_on)
		pre_stop(l);
	ferry__pc_dst_set_rp(l->pc, NULL);
	pthread_mutex_lock(&l->m->stats_lock); /* keep the final figures */
	pc_stats(l->pc, &l->m->info);
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

/* DISCARD: the pages the source will send again (payload of len bytes). */
int ferry__postcopy_discard(ferry_dst *l, uint16_t len)
{
	ferry_chan *c = l->c;
	if (!l->pc || l->pc_listening)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "postcopy discard %s",
					l->pc ? "after listen" : "without advise");
	uint8_t *big = malloc(len ? len : 1);
	if (!big)
		return ferry__chan_fail(c, -ENOMEM, "out of memory for a discard bitmap");
	int r = ferry__chan_read(c, big, len);
	if (!r)
		r = ferry__pc_dst_discard(l->pc, c, big, len);
	free(big);
	l->pc_discarded |= !r;
	return r;
}

int ferry__postcopy_precopy_end(ferry_dst *l)
{
	if (!l->pc_discarded && !l->pc_listening)
		return 0;
	return ferry__chan_fail(l->c, FERRY_EBADSTREAM,
				"stream ended in precopy after postcopy %s: the pages it dropped were "
				"never sent again",
				l->pc_listening ? "listen" : "discard");
}

/* RUN: the rest of the migration is postcopy; run: whether the vCPUs start. */
int ferry__postcopy_run(ferry_dst *l, uint8_t run)
{
	if (!l->pc_listening || run > 1)
		return ferry__chan_fail(l->c, FERRY_EBADSTREAM, "postcopy run %s",
					l->pc_listening ? "with a bad run state" : "before listen");
	l->run_after = run;
	l->pc_running = true;
	return 0;
}

/* Stops mig/dst/listen if it was started and not joined yet. */
static void listen_stop(ferry_dst *l)
{
	if (!l->listen_started)
		return;
	shutdown(l->c->fd, SHUT_RD); /* the return path still says why */
	pthread_join(l->listen_thread, NULL);
	l->listen_started = false;
}

/* Phase: a PACKAGE was read: mig/dst/listen takes the main connection while devices load. */
int ferry__postcopy_package(ferry_dst *l)
{
	if (l->pkg_fd < 0)
		return 0;
	int r = -pthread_create(&l->listen_thread, NULL, listen_thread, l);
	if (r)
		return r;
	l->listen_started = true;
	return pc_load_package(l);
}

void ferry__postcopy_may_run(ferry_dst *l)
{
	if (l->pc_running)
		ferry__pc_rp_send(l->pc, FERRY_RP_RUNNING, NULL, 0, NULL, 0);
}

/* Phase: after RUN (and the vCPUs' start): the guest runs, its missing pages fault in. */
int ferry__postcopy_incoming(ferry_dst *l)
{
	struct ferry_migration *m = l->m;
	if (!l->pc_running) {
		/*
		 * Advised, but the stream ended in precopy (a source with
		 * postcopy on that converged): what ADVISE (and LISTEN, if it
		 * came) set up ends here, else nothing freed it on success
		 * (fuzz-pcstream found the leak of l->pc and its bitmaps).
		 */
		pc_end(l);
		return 0;
	}
	pthread_mutex_lock(&m->stats_lock);
	m->info.postcopy = true;
	pthread_mutex_unlock(&m->stats_lock);
	ferry__mig_set_status(m, FERRY_MIGRATION_POSTCOPY_ACTIVE);
	int r = pc_incoming(l);
	ferry__dst_stats(l);
	pc_end(l);
	return r;
}

/* Phase, on failure: stops postcopy; a guest that ran on the destination stops. */
void ferry__postcopy_fail(ferry_dst *l)
{
	listen_stop(l);
	if (!l->pc)
		return;
	/* Before SHUT: the fault thread writes the return path too. */
	bool ran = l->pc_running;
	pc_end(l);
	if (ran && ferry_vm_stop(l->vm) == 0)
		ferry__mig_event(l->m, FERRY_EVENT_STOP, 0);
}
