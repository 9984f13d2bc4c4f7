/* SPDX-License-Identifier: MIT */
/*
 * The destination's placer (place.h): precopy page placement strategies,
 * the placing threads mig/dst/place_N and their ordering queue (placeq.h).
 *
 * DESIGN (strategies):
 * Placement of precopy pages (the destination guest does not run). A block
 * that maps its fd at offset 0 (MAP_SHARED memfd) and is not allocated yet
 * gets brand-new pages: a first write through the mapping takes a page
 * fault per 4 KiB page that allocates, zeroes and maps it (inside recv(),
 * with the socket locked). Two placements avoid that; both receive the
 * page data of a record or packet into a bounce buffer first (one recv),
 * then:
 *  - FERRY_PLACE_UFFD: the block is registered with a userfaultfd in
 *    MISSING mode for the RAM phase, and each run of consecutive pages is
 *    placed with one UFFDIO_COPY, which allocates, fills and maps the
 *    pages without zeroing them first and without a file-wide lock, so
 *    the multifd receive threads place in parallel. A page that exists
 *    already (sent again in a later pass) answers EEXIST and is written
 *    through the mapping. Nothing may touch a missing page meanwhile: a
 *    user-space reader would wait until the RAM phase ends
 *    (ferry__place_end unregisters, which wakes it).
 *  - FERRY_PLACE_PWRITE: pwrite() per run into the file: no faults and no
 *    zeroing either, but the file's lock (i_rwsem) lets one writer in at a
 *    time, so receive threads queue on it (measured: two threads place no
 *    faster than one). The fallback when userfaultfd is unavailable.
 * Other blocks (anonymous memory, a file whose every page is allocated, as
 * with prealloc, or shmem huge pages on "advise", which only a fault
 * through a MADV_HUGEPAGE mapping gets) are received straight into the
 * mapping (FERRY_PLACE_MAPPING), or, with x-user-copy, into a bounce
 * buffer and then memcpy()'d there (FERRY_PLACE_COPY: on a machine whose
 * kernel pays dearly for its first write to each user page, util/kcopy.h).
 * docs/architecture.md has the numbers.
 *
 * DESIGN (placing threads):
 * The placement pipeline: precopy over the main connection alone (no
 * multifd, no postcopy) into blocks placed by userfaultfd or pwrite().
 * One thread would receive each record and then place it, and placing
 * costs the most: page allocation and a copy into fresh memory, whose
 * first write is expensive where the machine is itself a VM that hands
 * freed memory back to its host (see docs/architecture.md). So mig/dst/main
 * receives PAGES into a free slot and queues it, and PLACER_THREADS threads
 * (mig/dst/place_N) place the queued slots: on a two-CPU machine both CPUs
 * then take first-write faults, where one placing thread left the other
 * mostly idle.
 *
 * Order: every write to guest RAM and to `received` keeps the stream's
 * order where it matters, i.e. for the same page (a later pass's copy lands
 * after the earlier one). Placing threads take queued slots oldest first,
 * and a slot whose pages overlap a slot still being placed waits for it;
 * slots of distinct pages are placed in any order (placeq.h, unit-tested).
 * ZEROS runs queue too.
 * ferry__ram_load (ram-load.c) drains the queue before it returns, so between sections
 * nothing is in flight: device state, discards and postcopy see RAM as the
 * stream left it.
 *
 * Thread: ferry__place_setup/_end/_fini run on mig/dst/main; the page
 * functions on whichever thread received the data (mig/dst/main,
 * mig/dst/recv_N, mig/dst/place_N). RAM itself takes no lock: `received`
 * bits are set and tested atomically, and writers of one page are ordered
 * by the multifd sync or the placement queue. The placer's lock protects
 * its queue and failure (struct ferry_placer).
 */
#include "migration/place.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "migration/placeq.h"
#include "stream/format.h"

static const uint8_t zero_page[FERRY_PAGE_SIZE] __attribute__((aligned(FERRY_PAGE_SIZE)));

/*
 * Whether shmem transparent huge pages are only given to mappings that asked
 * for them (shmem_enabled "advise"): then a fault through a MADV_HUGEPAGE
 * mapping allocates 2 MiB at once while pwrite() or UFFDIO_COPY (no fault)
 * get 4 KiB pages, so placing through them would lose the huge pages. With
 * "never"/"deny" no path gets them; with "always"/"within_size"/"force"
 * pwrite does too.
 */
static bool shmem_thp_advise(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
	if (!f)
		return false;
	bool advise = fgets(buf, sizeof(buf), f) && strstr(buf, "[advise]");
	fclose(f);
	return advise;
}

static const char *place_name(unsigned p)
{
	return p == FERRY_PLACE_UFFD	 ? "userfaultfd"
	       : p == FERRY_PLACE_PWRITE ? "pwrite"
	       : p == FERRY_PLACE_COPY	 ? "copy"
					 : "mapping";
}

/* Opens vm->place_uffd and registers every FERRY_PLACE_UFFD block. */
static int place_uffd_open(ferry_vm_t *vm, ferry_error *err)
{
	int fd = ferry__uffd_open();
	if (fd < 0) {
		return ferry__error_set(err, fd, "userfaultfd: %s", ferry_strerror(fd));
	}
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int r = -errno;
		close(fd);
		return ferry__error_set(err, r, "UFFDIO_API: %s", ferry_strerror(r));
	}
	vm->place_uffd = fd;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		if (rb->place != FERRY_PLACE_UFFD)
			continue;
		struct uffdio_register reg = {
			.range = {.start = (uintptr_t)rb->host, .len = rb->size},
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
			int r = -errno;
			ferry__error_set(err, r, "cannot register RAM block '%.64s' with userfaultfd: %s",
					 rb->name, ferry_strerror(r));
			ferry__place_end(vm);
			ferry__place_fini(vm);
			return r;
		}
		vm->place_registered = true;
	}
	return 0;
}

int ferry__place_setup(ferry_vm_t *vm, uint32_t want, bool copy, uint32_t *used,
		       ferry_error *err)
{
	bool advise = shmem_thp_advise(), any = false;
	uint8_t direct = copy ? FERRY_PLACE_COPY : FERRY_PLACE_MAPPING;
	*used = FERRY_PLACE_AUTO;
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		/*
		 * Fully allocated RAM (prealloc) needs no page allocation: a
		 * recv() straight into it (already mapped) then saves the
		 * bounce copy.
		 */
		bool file = ferry__ram_maps_file(rb->host, rb->size, rb->fd);
		rb->place_filled = file && ferry__ram_file_fill(rb->fd, rb->size) == FERRY_FILL_ALL;
		bool fresh_file = !advise && file && !rb->place_filled;
		rb->place = !fresh_file			     ? direct
			    : want == FERRY_PLACE_AUTO ? FERRY_PLACE_UFFD
						       : (uint8_t)want;
		any |= rb->place == FERRY_PLACE_UFFD;
	}
	if (any) {
		ferry_error why = { 0 };
		int r = place_uffd_open(vm, &why);
		if (r && want == FERRY_PLACE_UFFD)
			return ferry__error_set(err, r, "x-placement userfaultfd: %.200s", why.msg);
		if (r) {
			ferry_dbg("destination: %s; placing with pwrite()", why.msg);
			for (unsigned i = 0; i < vm->nblocks; i++)
				if (vm->blocks[i]->place == FERRY_PLACE_UFFD)
					vm->blocks[i]->place = FERRY_PLACE_PWRITE;
		}
	}
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		if (rb->place != direct || *used == FERRY_PLACE_AUTO)
			*used = rb->place;
		ferry_dbg("destination: RAM block '%s' placed through %s", rb->name,
			  place_name(rb->place));
	}
	return 0;
}

void ferry__place_end(ferry_vm_t *vm)
{
	if (!vm->place_registered)
		return;
	/* Also wakes any thread that touched a missing page meanwhile. */
	for (unsigned i = 0; i < vm->nblocks; i++) {
		struct ferry_ram_block *rb = vm->blocks[i];
		struct uffdio_range rg = {.start = (uintptr_t)rb->host, .len = rb->size};
		if (rb->place == FERRY_PLACE_UFFD)
			ioctl(vm->place_uffd, UFFDIO_UNREGISTER, &rg);
	}
	vm->place_registered = false;
}

void ferry__place_fini(ferry_vm_t *vm)
{
	ferry__place_end(vm);
	if (vm->place_uffd >= 0)
		close(vm->place_uffd);
	vm->place_uffd = -1;
}

/* Placement failures: an errno and the page it hit, reported by the caller. */
#define FERRY_PLACE_MSG_MAX (FERRY_NAME_MAX + 320)
struct place_err {
	int err;
	uint64_t page;
};

static int place_err(struct place_err *pe, uint64_t page, int e)
{
	pe->err = e;
	pe->page = page;
	return e;
}

static void place_err_msg(const struct ferry_ram_block *rb, const struct place_err *pe, char *buf,
			  size_t len)
{
	snprintf(buf, len, "cannot write page %llu of RAM block '%s': %s",
		 (unsigned long long)pe->page, rb->name, ferry_strerror(pe->err));
}

static int place_fail(ferry_chan *c, const struct ferry_ram_block *rb, const struct place_err *pe)
{
	char msg[FERRY_PLACE_MSG_MAX];
	place_err_msg(rb, pe, msg, sizeof(msg));
	return ferry__chan_fail(c, pe->err, "%s", msg);
}

/*
 * UFFDIO_COPY of n pages from p to page. Pages already received (a later
 * pass's copy) are in the file and mapped or mappable without a
 * userfault, so they are written with memcpy: a failing UFFDIO_COPY per
 * page cost ~10% of a running guest's migration. (Postcopy discard clears
 * `received` for the pages it punches, so a hole is never written that
 * way: the write would block on the placement userfaultfd.) A page that
 * exists without its bit (EEXIST) is copied over too.
 */
static int place_uffd(struct place_err *pe, struct ferry_ram_block *rb, uint64_t page, uint32_t n,
		      const uint8_t *p)
{
	int uffd = rb->vm->place_uffd;
	while (n) {
		/* `received` bits of other pages may be set by other receive threads. */
		uint32_t k = 0;
		while (k < n && ferry__bitmap_test_atomic(rb->received, page + k))
			k++;
		if (k) {
			memcpy(rb->host + (page << FERRY_PAGE_SHIFT), p, (size_t)k << FERRY_PAGE_SHIFT);
			page += k;
			p += (size_t)k << FERRY_PAGE_SHIFT;
			n -= k;
			continue;
		}
		while (k < n && !ferry__bitmap_test_atomic(rb->received, page + k))
			k++;
		struct uffdio_copy cp = {
			.dst = (uintptr_t)rb->host + (page << FERRY_PAGE_SHIFT),
			.src = (uintptr_t)p,
			.len = (uint64_t)k << FERRY_PAGE_SHIFT,
			.mode = UFFDIO_COPY_MODE_DONTWAKE, /* nobody waits on these pages */
		};
		if (ioctl(uffd, UFFDIO_COPY, &cp) == 0) {
			page += k;
			p += (size_t)k << FERRY_PAGE_SHIFT;
			n -= k;
			continue;
		}
		int e = errno;
		if (cp.copy > 0) { /* a prefix was placed (the call says EAGAIN) */
			uint32_t k = (uint32_t)((uint64_t)cp.copy >> FERRY_PAGE_SHIFT);
			page += k;
			p += (size_t)k << FERRY_PAGE_SHIFT;
			n -= k;
			continue;
		}
		if (e == EEXIST) {
			/* Placed in an earlier pass: mapped, so a plain write is safe. */
			memcpy(rb->host + (page << FERRY_PAGE_SHIFT), p, FERRY_PAGE_SIZE);
			page++;
			p += FERRY_PAGE_SIZE;
			n--;
			continue;
		}
		if (e == EAGAIN || e == EINTR)
			continue; /* the mapping was changing */
		return place_err(pe, page, -e);
	}
	return 0;
}

static int place_buf(struct place_err *pe, struct ferry_ram_block *rb, const uint64_t *idx,
		     uint64_t first, uint32_t n, const uint8_t *buf)
{
	for (uint32_t i = 0; i < n;) {
		uint32_t k = idx ? ferry__place_run_end(idx, i, n) : n;
		uint64_t page = idx ? idx[i] : first + i;
		const uint8_t *p = buf + ((size_t)i << FERRY_PAGE_SHIFT);
		size_t len = (size_t)(k - i) << FERRY_PAGE_SHIFT;
		int r;
		if (rb->place == FERRY_PLACE_MAPPING || rb->place == FERRY_PLACE_COPY) {
			memcpy(rb->host + (page << FERRY_PAGE_SHIFT), p, len);
		} else if (rb->place == FERRY_PLACE_UFFD) {
			if ((r = place_uffd(pe, rb, page, k - i, p)))
				return r;
		} else {
			off_t off = (off_t)(page << FERRY_PAGE_SHIFT);
			while (len) {
				ssize_t w = pwrite(rb->fd, p, len, off);
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					return place_err(pe, (uint64_t)off >> FERRY_PAGE_SHIFT,
							 w < 0 ? -errno : -EIO);
				p += w;
				off += w;
				len -= (size_t)w;
			}
		}
		i = k;
	}
	return 0;
}

int ferry__place_buf(ferry_chan *c, struct ferry_ram_block *rb, const uint64_t *idx,
		     uint64_t first, uint32_t n, const uint8_t *buf)
{
	struct place_err pe;
	return place_buf(&pe, rb, idx, first, n, buf) ? place_fail(c, rb, &pe) : 0;
}

static int place_zero(struct place_err *pe, struct ferry_ram_block *rb, uint64_t page)
{
	uint8_t *a = rb->host + (page << FERRY_PAGE_SHIFT);
	/* Atomic: placing threads set bits of other pages in the same word. */
	if (!ferry__bitmap_test_atomic(rb->received, page))
		return 0; /* fresh RAM reads as zero */
	if (rb->place == FERRY_PLACE_UFFD) {
		/* The page may be a hole (it was zero before too): never fault it. */
		for (;;) {
			struct uffdio_zeropage zp = {
				.range = {.start = (uintptr_t)a, .len = FERRY_PAGE_SIZE},
				.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE,
			};
			if (ioctl(rb->vm->place_uffd, UFFDIO_ZEROPAGE, &zp) == 0)
				return 0;
			if (errno == EEXIST)
				break;
			if (errno != EAGAIN && errno != EINTR)
				return place_err(pe, page, -errno);
		}
	}
	memset(a, 0, FERRY_PAGE_SIZE);
	return 0;
}

int ferry__place_zero(ferry_chan *c, struct ferry_ram_block *rb, uint64_t page)
{
	struct place_err pe;
	return place_zero(&pe, rb, page) ? place_fail(c, rb, &pe) : 0;
}

int ferry__place_recv(ferry_chan *c, struct ferry_ram_block *rb, const uint64_t *idx,
		      uint64_t first, uint32_t n, uint8_t *bounce)
{
	int r;
	if (rb->place != FERRY_PLACE_MAPPING) {
		if ((r = ferry__chan_read_direct(c, bounce, (size_t)n << FERRY_PAGE_SHIFT)))
			return r;
		return ferry__place_buf(c, rb, idx, first, n, bounce);
	}
	for (uint32_t i = 0; i < n;) {
		uint32_t k = idx ? ferry__place_run_end(idx, i, n) : n;
		uint64_t page = idx ? idx[i] : first + i;
		if ((r = ferry__chan_read_direct(c, rb->host + (page << FERRY_PAGE_SHIFT),
						 (size_t)(k - i) << FERRY_PAGE_SHIFT)))
			return r;
		i = k;
	}
	return 0;
}

/*
 * Postcopy's placement: UFFDIO_COPY (or UFFDIO_ZEROPAGE) of whole pages,
 * which maps each page at once and wakes the threads that fault on it. A
 * page already there (EEXIST: placed first by another thread, e.g. a
 * requested page that arrived on the preempt channel and again in the
 * background) counts as placed.
 */
int ferry__place_atomic(const struct ferry_place_atomic *pa, struct ferry_ram_block *rb,
			uint64_t first, uint32_t n, const uint8_t *data)
{
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
			ret = ioctl(pa->uffd, UFFDIO_COPY, &cp);
			res = cp.copy;
		} else if (pa->zeropage) {
			struct uffdio_zeropage zp = {.range = {.start = addr, .len = len}};
			ret = ioctl(pa->uffd, UFFDIO_ZEROPAGE, &zp);
			res = zp.zeropage;
		} else {
			struct uffdio_copy cp = {
				.dst = addr, .src = (uint64_t)(uintptr_t)zero_page, .len = FERRY_PAGE_SIZE,
			};
			ret = ioctl(pa->uffd, UFFDIO_COPY, &cp);
			res = cp.copy;
		}
		int e = ret < 0 ? errno : 0;
		uint64_t k = res > 0 ? (uint64_t)res >> FERRY_PAGE_SHIFT : 0;
		if (!e && !k)
			k = len >> FERRY_PAGE_SHIFT;
		if (k)
			pa->placed(pa->opaque, first + done, k);
		done += k;
		if (!e)
			continue;
		if (e == EEXIST) {
			/* That page is already there: someone placed it first. */
			pa->placed(pa->opaque, first + done, 1);
			done++;
		} else if (e != EAGAIN && e != EINTR) {
			return -e;
		}
	}
	return 0;
}

#define PLACER_THREADS 2u

struct place_job {
	struct ferry_ram_block *rb;
	uint64_t first;
	uint32_t n;
	bool zero; /* a ZEROS run; else PAGES held in buf */
	uint64_t seq; /* the job's place in the stream */
	uint8_t *buf; /* FERRY_RAM_MAX_RUN pages, the slot's own */
};

struct ferry_placer {
	pthread_t thread[PLACER_THREADS];
	unsigned started;       /* threads running; mig/dst/main's */
	_Atomic unsigned named; /* for the threads' names */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a job was queued, taken or done, or stop */
	/*
	 * job[i] goes with q.slot[i]: a FREE slot outside q's ring belongs to
	 * mig/dst/main, a taken one to the placing thread that took it.
	 */
	struct place_job job[FERRY_PLACEQ_SLOTS];
	struct ferry_placeq q; /* protected by lock */
	bool stop;             /* protected by lock */
	uint64_t pushed;       /* protected by lock: jobs queued so far, the next seq */
	/*
	 * Protected by lock: the failure of the job earliest in the stream,
	 * sticky. Two threads place in any order, so a later job may fail
	 * first; the earlier one's failure replaces it, and only jobs after
	 * err_seq are dropped.
	 */
	int err;
	uint64_t err_seq;
	char msg[FERRY_PLACE_MSG_MAX]; /* protected by lock: err's message */
};

/* Thread: mig/dst/place_N. Places queued jobs until told to stop. */
static void *placer_main(void *arg)
{
	struct ferry_placer *pl = arg;
	char name[16];
	snprintf(name, sizeof(name), "mig/dst/place_%u", atomic_fetch_add(&pl->named, 1));
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&pl->lock);
	for (;;) {
		int i;
		while ((i = ferry__placeq_take(&pl->q)) < 0 &&
		       !(pl->stop && ferry__placeq_none_queued(&pl->q)))
			pthread_cond_wait(&pl->cond, &pl->lock);
		if (i < 0)
			break;
		struct place_job j = pl->job[i];
		/* After a failure, the jobs after it in the stream are only dropped. */
		bool skip = pl->err && j.seq > pl->err_seq;
		pthread_mutex_unlock(&pl->lock);
		struct place_err pe = {0};
		int r = 0;
		if (!skip && j.zero) {
			for (uint64_t p = j.first; p < j.first + j.n && !r; p++)
				r = place_zero(&pe, j.rb, p);
		} else if (!skip) {
			r = place_buf(&pe, j.rb, NULL, j.first, j.n, j.buf);
		}
		if (!skip && !r && !j.zero) /* holes stay holes: `received` only for data */
			ferry__bitmap_set_range_atomic((_Atomic unsigned long *)j.rb->received,
						       j.first, j.n);
		pthread_mutex_lock(&pl->lock);
		if (r && (!pl->err || j.seq < pl->err_seq)) {
			pl->err = r;
			pl->err_seq = j.seq;
			place_err_msg(j.rb, &pe, pl->msg, sizeof(pl->msg));
		}
		ferry__placeq_done(&pl->q, i);
		pthread_cond_broadcast(&pl->cond);
	}
	pthread_mutex_unlock(&pl->lock);
	ferry__log_thread_cpu();
	return NULL;
}

/*
 * The placer's failure, reported on c (0 if none). Called with pl->lock
 * held. Once something failed, it waits for the jobs in flight (an earlier
 * job may fail too and its failure is the one to report; later ones are
 * dropped), so the report names the first page of the stream that failed.
 */
static int placer_err(ferry_chan *c, struct ferry_placer *pl)
{
	if (!pl->err)
		return 0;
	while (pl->q.used)
		pthread_cond_wait(&pl->cond, &pl->lock);
	return ferry__chan_fail(c, pl->err, "%s", pl->msg);
}

struct ferry_placer *ferry__placer_start(void)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return NULL;
	struct ferry_placer *pl = calloc(1, sizeof(*pl));
	if (!pl)
		return NULL;
	unsigned i = 0, t = 0;
	for (; i < FERRY_PLACEQ_SLOTS; i++)
		if (!(pl->job[i].buf = malloc((size_t)FERRY_RAM_MAX_RUN << FERRY_PAGE_SHIFT)))
			break;
	pthread_mutex_init(&pl->lock, NULL);
	pthread_cond_init(&pl->cond, NULL);
	if (i == FERRY_PLACEQ_SLOTS)
		while (t < PLACER_THREADS && pthread_create(&pl->thread[t], NULL, placer_main, pl) == 0)
			t++;
	if (!t) {
		while (i--)
			free(pl->job[i].buf);
		pthread_mutex_destroy(&pl->lock);
		pthread_cond_destroy(&pl->cond);
		free(pl);
		return NULL;
	}
	pl->started = t;
	return pl;
}

uint64_t ferry__placer_cpu_ns(struct ferry_placer *pl)
{
	uint64_t ns = 0;
	for (unsigned t = 0; pl && t < pl->started; t++)
		ns += ferry__thread_cpu_ns(pl->thread[t]);
	return ns;
}

/* Thread: the filler (mig/dst/main); takes pl->lock. */
uint8_t *ferry__placer_slot(ferry_chan *c, struct ferry_placer *pl, int *r)
{
	pthread_mutex_lock(&pl->lock);
	int i;
	while ((i = ferry__placeq_free_slot(&pl->q)) < 0 && !pl->err)
		pthread_cond_wait(&pl->cond, &pl->lock);
	*r = placer_err(c, pl);
	uint8_t *buf = *r ? NULL : pl->job[i].buf;
	pthread_mutex_unlock(&pl->lock);
	return buf;
}

bool ferry__placer_clear_of(struct ferry_placer *pl, const struct ferry_ram_block *rb,
			    uint64_t first, uint32_t n)
{
	pthread_mutex_lock(&pl->lock);
	bool clear = !pl->err && !ferry__placeq_holds(&pl->q, rb, first, n);
	pthread_mutex_unlock(&pl->lock);
	return clear;
}

/*
 * Thread: the filler, after ferry__placer_slot. The free slot is still the
 * one it returned: only the filler pushes, and a slot done at the ring's
 * head moves head and used together.
 */
void ferry__placer_push(struct ferry_placer *pl, struct ferry_ram_block *rb, uint64_t first,
			uint32_t n, bool zero)
{
	pthread_mutex_lock(&pl->lock);
	struct place_job *j = &pl->job[ferry__placeq_free_slot(&pl->q)];
	*j = (struct place_job){
		.rb = rb, .first = first, .n = n, .zero = zero, .seq = pl->pushed++, .buf = j->buf};
	ferry__placeq_push(&pl->q, rb, first, n);
	pthread_cond_broadcast(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
}

/* Thread: the filler; takes pl->lock. */
int ferry__placer_drain(ferry_chan *c, struct ferry_placer *pl)
{
	pthread_mutex_lock(&pl->lock);
	while (pl->q.used)
		pthread_cond_wait(&pl->cond, &pl->lock);
	int r = placer_err(c, pl);
	pthread_mutex_unlock(&pl->lock);
	return r;
}

/* Thread: the filler, when it is done (the queue is drained or abandoned). */
void ferry__placer_stop(struct ferry_placer *pl)
{
	if (!pl)
		return;
	pthread_mutex_lock(&pl->lock);
	pl->stop = true;
	pthread_cond_broadcast(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
	for (unsigned t = 0; t < pl->started; t++)
		pthread_join(pl->thread[t], NULL);
	for (unsigned i = 0; i < FERRY_PLACEQ_SLOTS; i++)
		free(pl->job[i].buf);
	pthread_mutex_destroy(&pl->lock);
	pthread_cond_destroy(&pl->cond);
	free(pl);
}
