/* SPDX-License-Identifier: MIT */
/*
 * Postcopy, destination side: discard, userfaultfd registration, the fault
 * thread (mig/dst/fault) and atomic page placement. See postcopy.h for the
 * design and the rules on what each thread touches.
 */
#include "migration/postcopy.h"

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
#include <sys/resource.h>
#include <unistd.h>

#include "stream/format.h"
#include "stream/wire.h"

static const uint8_t zero_page[FERRY_PAGE_SIZE] __attribute__((aligned(FERRY_PAGE_SIZE)));

void ferry__pc_boost_thread(struct ferry_migration *m)
{
	ferry_mig_params p;
	ferry__mig_params(m, &p);
	const int cpu = p.postcopy_cpu;
	/*
	 * Pinned to cpu (x-postcopy-cpu) if asked: the threads of one page
	 * request then wake each other on one CPU, without an inter-processor
	 * interrupt. Checked when the parameter was set; a failure here (the
	 * process's CPUs changed since) only costs latency.
	 */
	if (cpu >= 0) {
		cpu_set_t cs;
		CPU_ZERO(&cs);
		CPU_SET(cpu, &cs);
		int e = pthread_setaffinity_np(pthread_self(), sizeof(cs), &cs);
		if (e)
			ferry_warn("postcopy: cannot pin a fault-path thread to CPU %d: %s", cpu,
				   strerror(e));
	}
	/*
	 * A vCPU waits on this thread: run it before the (busy) vCPU threads.
	 * SCHED_FIFO at the lowest real-time priority, so that it preempts them
	 * the moment it wakes. Measured (bench/postcopy.py, preempt, 6 runs
	 * each): p99 fault latency 344-884 us, against 557-2359 us at nice -10
	 * and 786-1703 us with nice -10 plus a 100 us EEVDF slice. It sleeps
	 * in read()/poll() between faults, and the kernel's real-time
	 * throttling bounds it anyway. Without the right (CAP_SYS_NICE or
	 * RLIMIT_RTPRIO) nice -10; without that either, nothing breaks.
	 */
	struct sched_param sp = { .sched_priority = 1 };
	if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0)
		return;
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), -10))
		ferry_dbg("postcopy: cannot raise the priority of a fault-path thread: %s",
			  strerror(errno));
}

unsigned ferry__block_index(const ferry_vm_t *vm, const struct ferry_ram_block *rb)
{
	for (unsigned i = 0; i < vm->nblocks; i++)
		if (vm->blocks[i] == rb)
			return i;
	return 0;
}

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

int ferry__pc_dst_probe(ferry_vm_t *vm, char *err, size_t len)
{
	(void)vm;
	int fd = ferry__uffd_open();
	if (fd < 0) {
		snprintf(err, len, "postcopy needs userfaultfd: %s", ferry_strerror(fd));
		return fd;
	}
	struct uffdio_api api = {.api = UFFD_API};
	int r = ioctl(fd, UFFDIO_API, &api) < 0 ? -errno : 0;
	close(fd);
	if (r)
		snprintf(err, len, "postcopy needs userfaultfd: UFFDIO_API: %s", ferry_strerror(r));
	return r;
}

int ferry__pc_bitmap_decode(ferry_vm_t *vm, ferry_chan *c, const uint8_t *p, size_t len,
			    unsigned long **maps, unsigned *block, uint64_t *first,
			    uint64_t *npages)
{
	char name[FERRY_NAME_MAX + 1];
	const uint8_t *q;
	uint64_t f;
	size_t body;
	int r = ferry__wire_bitmap_decode(c, p, len, name, &f, &q, &body);
	if (r)
		return r;
	struct ferry_ram_block *rb = ferry_ram_block_find(vm, name);
	if (!rb)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "page bitmap for unknown RAM block '%s'",
					name);
	if (f % 64 || f >= rb->npages || body % 8 || body == 0 || body > FERRY_PC_BITMAP_CHUNK ||
	    body * 8 > ((rb->npages - f + 63) & ~(uint64_t)63))
		return ferry__chan_fail(c, FERRY_EBADSTREAM,
					"page bitmap of RAM block '%s' at page %llu, %zu bytes: "
					"outside the block (%llu pages)",
					rb->name, (unsigned long long)f, body,
					(unsigned long long)rb->npages);
	unsigned bi = ferry__block_index(vm, rb);
	uint64_t n = body * 8;
	if (n > rb->npages - f)
		n = rb->npages - f;
	for (size_t w = 0; w < body / FERRY_BITMAP_WORD_LEN; w++) {
		uint64_t v = ferry__wire_bitmap_word(q, w);
		uint64_t page0 = f + w * 64;
		if (page0 + 64 > rb->npages) /* bits past the block's end are ignored */
			v &= (1ULL << (rb->npages - page0)) - 1;
		maps[bi][f / 64 + w] |= v;
	}
	*block = bi;
	*first = f;
	*npages = n;
	return 0;
}

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

void ferry__pc_dst_set_rp(ferry_pc_dst *pc, ferry_chan *rp)
{
	pthread_mutex_lock(&pc->rp_lock);
	pc->rp = rp;
	pthread_mutex_unlock(&pc->rp_lock);
}

static int send_request(ferry_pc_dst *pc, unsigned bi, uint64_t page)
{
	const struct ferry_ram_block *rb = pc->vm->blocks[bi];
	uint8_t m[FERRY_RP_REQ_MAX];
	size_t l = ferry__wire_req_encode(m, page, 1, rb->name);
	return ferry__pc_rp_send(pc, FERRY_RP_REQ_PAGES, m, l, NULL, 0);
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
		for (unsigned i = 0; i < pc->nreq; i++) {
			if (pc->req[i].block != bi || pc->req[i].page != p)
				continue;
			uint64_t d = now - pc->req[i].t0;
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

int ferry__pc_place(ferry_pc_dst *pc, unsigned bi, uint64_t first, uint32_t n,
		    const uint8_t *data)
{
	struct ferry_ram_block *rb = pc->vm->blocks[bi];
	uint64_t done = 0;
	while (done < n) {
		uint64_t addr = (uint64_t)(uintptr_t)rb->host + ((first + done) << FERRY_PAGE_SHIFT);
		uint64_t len = (n - done) << FERRY_PAGE_SHIFT;
		int64_t res;
		int ret;
		if (data) {
			struct uffdio_copy cp = {
				.dst = addr,
				.src = (uint64_t)(uintptr_t)(data + (done << FERRY_PAGE_SHIFT)),
				.len = len,
			};
			ret = ioctl(pc->uffd, UFFDIO_COPY, &cp);
			res = cp.copy;
		} else if (pc->zeropage_ok) {
			struct uffdio_zeropage zp = {.range = {.start = addr, .len = len}};
			ret = ioctl(pc->uffd, UFFDIO_ZEROPAGE, &zp);
			res = zp.zeropage;
		} else {
			struct uffdio_copy cp = {
				.dst = addr, .src = (uint64_t)(uintptr_t)zero_page, .len = FERRY_PAGE_SIZE,
			};
			ret = ioctl(pc->uffd, UFFDIO_COPY, &cp);
			res = cp.copy;
		}
		int e = ret < 0 ? errno : 0;
		uint64_t k = res > 0 ? (uint64_t)res >> FERRY_PAGE_SHIFT : 0;
		if (!e && !k)
			k = len >> FERRY_PAGE_SHIFT;
		if (k)
			mark_placed(pc, bi, first + done, k);
		done += k;
		if (!e)
			continue;
		if (e == EEXIST) {
			/* That page is already there: someone placed it first. */
			mark_placed(pc, bi, first + done, 1);
			done++;
		} else if (e != EAGAIN && e != EINTR) {
			return -e;
		}
	}
	return 0;
}

bool ferry__pc_dst_complete(ferry_pc_dst *pc)
{
	pthread_mutex_lock(&pc->stat_lock);
	bool done = pc->placed_pages >= pc->npending;
	pthread_mutex_unlock(&pc->stat_lock);
	return done;
}

/* One fault: request the page, or resolve it here when the source has none. */
static void handle_fault(ferry_pc_dst *pc, uint64_t addr)
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
	if (test_and_set(pc->requested[bi], page))
		return; /* already asked for; the placement will wake this one too */
	pthread_mutex_lock(&pc->stat_lock);
	pc->requests++;
	if (pc->nreq == FERRY_PC_REQ_MAX) /* forget the oldest timing */
		memmove(&pc->req[0], &pc->req[1], sizeof(pc->req[0]) * --pc->nreq);
	pc->req[pc->nreq].block = bi;
	pc->req[pc->nreq].page = page;
	pc->req[pc->nreq].t0 = ferry__now_ns();
	pc->nreq++;
	pthread_mutex_unlock(&pc->stat_lock);
	if (test_atomic(pc->placed[bi], page)) {
		placed_requested(pc, bi, page, 1); /* raced with its placement */
		return;
	}
	/* While paused this fails: ferry__pc_dst_resync() asks again. */
	send_request(pc, bi, page);
}

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
		pthread_mutex_lock(&pc->rp_lock);
		bool quiet = pc->rp && ferry__now_ns() - pc->rp_last_ns >= pc->heartbeat_ms * 1000000ull;
		pthread_mutex_unlock(&pc->rp_lock);
		if (quiet)
			ferry__pc_rp_send(pc, FERRY_RP_HEARTBEAT, NULL, 0, NULL, 0);
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
				handle_fault(pc, msg[i].arg.pagefault.address);
	}
	return NULL;
}

int ferry__pc_dst_listen(ferry_pc_dst *pc, ferry_chan *rp, char *err, size_t len)
{
	ferry_vm_t *vm = pc->vm;
	int r;
	pc->npending = 0;
	for (unsigned i = 0; i < vm->nblocks; i++)
		pc->npending += ferry__bitmap_count(pc->pending[i], vm->blocks[i]->npages);
	pc->uffd = ferry__uffd_open();
	if (pc->uffd < 0) {
		r = pc->uffd;
		snprintf(err, len, "postcopy: userfaultfd: %s", ferry_strerror(r));
		return r;
	}
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(pc->uffd, UFFDIO_API, &api) < 0) {
		r = -errno;
		snprintf(err, len, "postcopy: UFFDIO_API: %s", ferry_strerror(r));
		return r;
	}
	pc->zeropage_ok = true;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		struct uffdio_register reg = {
			.range = {.start = (uintptr_t)rb->host, .len = rb->size},
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(pc->uffd, UFFDIO_REGISTER, &reg) < 0) {
			r = -errno;
			snprintf(err, len, "postcopy: cannot register RAM block '%s' for missing-page faults: %s",
				 rb->name, ferry_strerror(r));
			return r;
		}
		pc->registered = true;
		if (!(reg.ioctls & (1ULL << _UFFDIO_COPY))) {
			snprintf(err, len, "postcopy: RAM block '%s' does not support UFFDIO_COPY", rb->name);
			return -EOPNOTSUPP;
		}
		if (!(reg.ioctls & (1ULL << _UFFDIO_ZEROPAGE)))
			pc->zeropage_ok = false;
	}
	pc->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pc->wake_fd < 0) {
		r = -errno;
		snprintf(err, len, "postcopy: eventfd: %s", ferry_strerror(r));
		return r;
	}
	ferry_mig_params p;
	ferry__mig_params(pc->m, &p);
	pc->heartbeat_ms = p.link_timeout_ms / 4 < 25 ? 25 : p.link_timeout_ms / 4;
	ferry__pc_dst_set_rp(pc, rp);
	if ((r = -pthread_create(&pc->fault_thread, NULL, fault_thread, pc))) {
		snprintf(err, len, "postcopy: cannot start the fault thread: %s", ferry_strerror(r));
		return r;
	}
	pc->fault_started = true;
	return 0;
}

static int send_missing(void *opaque, const uint8_t *msg, size_t len)
{
	return ferry__pc_rp_send(opaque, FERRY_RP_MISSING, msg, len, NULL, 0);
}

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

void ferry__pc_dst_stats(ferry_pc_dst *pc, ferry_mig_info *info)
{
	pthread_mutex_lock(&pc->stat_lock);
	info->postcopy_faults = pc->faults;
	info->postcopy_requests = pc->requests;
	info->postcopy_local_zero = pc->local_zero;
	info->postcopy_latency_samples = pc->samples;
	info->postcopy_latency_max_us = pc->max_ns / 1000;
	info->postcopy_blocktime_ms = pc->blocked_ns / 1000000;
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
