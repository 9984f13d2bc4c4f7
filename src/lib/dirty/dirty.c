/* SPDX-License-Identifier: MIT */
/*
 * Dirty-page tracking (see dirty.h): finds the guest pages written since the
 * last harvest, and the pages of a RAM block that were ever populated.
 *
 * DESIGN: in WP_ASYNC mode each tracker owns one userfaultfd opened with
 * UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED (plus
 * UFFD_FEATURE_WP_HUGETLBFS_SHMEM when offered, which memfd/shmem RAM
 * needs). track_start registers the block in WP mode and write-protects all
 * of it; WP_UNPOPULATED makes that cover never-touched pages too (the kernel
 * installs uffd-wp PTE markers), so the first write to any page is seen. In
 * async mode a write to a protected page never reaches a handler: the kernel
 * just drops the protection. A harvest is then one PAGEMAP_SCAN walk over the
 * block asking for PAGE_IS_WRITTEN pages with PM_SCAN_WP_MATCHING, which
 * re-protects each page in the same page-table walk that reports it, under
 * the page-table lock: a write is either before the walk reached the page (and
 * reported now) or after (and faults, so it is reported next time). Nothing
 * is lost and no signal or fault thread is involved. The output vector holds
 * SCAN_VEC_LEN regions (adjacent written pages merge into one region); when
 * it fills, the scan is restarted from the end of the last returned region,
 * not from walk_end, which is stale in that case on the kernel tested (6.18:
 * it holds an earlier, PMD-aligned internal stop, usually behind the last
 * region, sometimes ahead of it). The kernel stops at the first written page
 * it could not report and leaves it unprotected, so restarting at the last
 * region's end loses nothing. Writes into a protected anonymous THP split it,
 * so precision stays one 4 KiB page. EXPLICIT mode just drains the atomic log
 * that ferry_ram_mark_dirty() fills.
 *
 * Whether WP_ASYNC works is probed once per process by a real round trip on a
 * small mapping (open, UFFDIO_API, register, protect, write one page,
 * PAGEMAP_SCAN): the build headers say nothing about the running kernel,
 * and offered feature bits alone do not prove the whole path works.
 *
 * ferry__ram_scan_populated() uses PAGEMAP_SCAN without any WP flag (present
 * or swapped PTEs) plus SEEK_DATA/SEEK_HOLE on the backing file, which finds
 * pages written through other mappings (or with pwrite) that this process
 * never mapped. While a block is tracked in WP_ASYNC mode its never-touched
 * pages carry uffd-wp PTE markers, which PAGEMAP_SCAN reports as
 * PAGE_IS_SWAPPED (seen on 6.18), indistinguishable from real swap or
 * migration entries. So when /proc/self/maps shows the range is a MAP_SHARED
 * mapping of fd at matching offsets, the file's extents alone are used: they
 * are exact (every populated page of a shared mapping is in the file) and
 * markers do not show there. Anonymous RAM scanned while tracked comes out
 * all populated: safe, just nothing skipped. (Scanning before track_start
 * instead would lose pages first written between the two calls.)
 *
 * /proc/self/pagemap is opened in the process that creates a tracker; after
 * fork() a child must make its own.
 *
 * Thread: a tracker is used by one thread at a time; the probe is
 * thread-safe (pthread_once); ferry__ram_scan_populated() is reentrant.
 */
#include "dirty/dirty.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "dirty/uffd-compat.h"
#include "util/bitmap.h"
#include "util/log.h"

/* Host page granule of PAGEMAP_SCAN output and of the dirty bitmaps. */
#define PG_SHIFT FERRY_PAGE_SHIFT
#define PG_SIZE ((uint64_t)FERRY_PAGE_SIZE)
#define BPL FERRY_BITS_PER_LONG

/* page_region entries per PAGEMAP_SCAN call (24 bytes each: 96 KiB). */
#define SCAN_VEC_LEN 4096

#define WP_FEATURES ((uint64_t)(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED))

/* Probe results; written once under probe_once, read-only afterwards. */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool wp_async_ok;
static uint64_t uffd_features_offered;

static bool range_ok(const void *host, uint64_t size)
{
	return !((uintptr_t)host & (PG_SIZE - 1)) && !(size & (PG_SIZE - 1)) &&
	       (uintptr_t)host + size >= (uintptr_t)host;
}

/*
 * Sets bits [start, start + n) and returns how many of them were clear: one
 * pass over the words, so counting costs nothing extra.
 */
static uint64_t set_range_count(unsigned long *map, uint64_t start, uint64_t n)
{
	uint64_t added = 0, end = start + n;
	if (!n)
		return 0;
	for (uint64_t w = start / BPL, we = (end - 1) / BPL; w <= we; w++) {
		unsigned long m = ~0UL;
		if (w == start / BPL)
			m &= ~0UL << (start % BPL);
		if (w == we && end % BPL)
			m &= ~0UL >> (BPL - end % BPL);
		added += (uint64_t)__builtin_popcountl(m & ~map[w]);
		map[w] |= m;
	}
	return added;
}

/*
 * Opens a userfaultfd. Only faults from user mode would ever be delivered
 * (UFFD_USER_MODE_ONLY), which is what unprivileged processes may ask for and
 * all async WP needs: async write faults are resolved in the kernel, whoever
 * writes. Tries the syscall, then /dev/userfaultfd (whose permissions, not
 * vm.unprivileged_userfaultfd, decide). Returns the fd or a negative errno.
 */
int ferry__uffd_open(void)
{
	const int flags = O_CLOEXEC | O_NONBLOCK;
	int fd, err = ENOSYS;

#ifdef SYS_userfaultfd
	fd = (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
	if (fd >= 0)
		return fd;
	err = errno;
	if (err == EINVAL) { /* before 5.11: no UFFD_USER_MODE_ONLY */
		fd = (int)syscall(SYS_userfaultfd, flags);
		if (fd >= 0)
			return fd;
		err = errno;
	}
#endif
#ifdef USERFAULTFD_IOC_NEW
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags | UFFD_USER_MODE_ONLY);
		if (fd < 0 && errno == EINVAL)
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		if (fd < 0)
			err = errno;
		close(dev);
		if (fd >= 0)
			return fd;
	}
#endif
	return -err;
}

/* UFFDIO_API handshake (once per fd). *offered = every feature the kernel has. */
static int uffd_api(int fd, uint64_t features, uint64_t *offered)
{
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return -errno;
	if (offered)
		*offered = api.features;
	return 0;
}

/* Opens the WP_ASYNC resources of a tracker: a set-up userfaultfd and pagemap. */
static int wp_open(int *uffd_out, int *pagemap_out)
{
	uint64_t features = WP_FEATURES;
	if (uffd_features_offered & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
		features |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

	int uffd = ferry__uffd_open();
	if (uffd < 0)
		return uffd;
	int r = uffd_api(uffd, features, NULL);
	if (r < 0) {
		close(uffd);
		return r;
	}
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0) {
		r = -errno;
		close(uffd);
		return r;
	}
	*uffd_out = uffd;
	*pagemap_out = pm;
	return 0;
}

static void wp_unregister(int uffd, void *host, uint64_t size)
{
	struct uffdio_range range = {.start = (uintptr_t)host, .len = size};
	if (ioctl(uffd, UFFDIO_UNREGISTER, &range) < 0 && errno != EINVAL && errno != ENOMEM)
		ferry_dbg("dirty: UFFDIO_UNREGISTER: %s", strerror(errno));
}

/* Registers [host, host + size) in WP mode (no page is protected yet). */
static int wp_register(int uffd, void *host, uint64_t size)
{
	struct uffdio_register reg = {
		.range = {.start = (uintptr_t)host, .len = size},
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	if (!(reg.ioctls & (1ULL << _UFFDIO_WRITEPROTECT))) {
		wp_unregister(uffd, host, size);
		return -EOPNOTSUPP;
	}
	return 0;
}

/*
 * Write-protects every page of a registered range. With WP_UNPOPULATED this
 * also covers never-populated pages (the kernel installs PTE markers), so no
 * first write is missed.
 */
static int wp_protect(int uffd, void *host, uint64_t size)
{
	struct uffdio_writeprotect wp = {
		.range = {.start = (uintptr_t)host, .len = size},
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};
	int r;
	do
		r = ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
	while (r < 0 && (errno == EAGAIN || errno == EINTR));
	return r < 0 ? -errno : 0;
}

/*
 * PAGEMAP_SCAN over [host, host + size) with the given flags and masks; sets
 * in bitmap the pages of every returned region and adds to *newly how many
 * were not set before (bitmap NULL: adds how many pages were returned).
 * Restarts after a full output vector from the end of the last region (see
 * DESIGN: walk_end is stale then). vec holds SCAN_VEC_LEN entries. Returns
 * 0 or a negative errno (-ENOTTY: no PAGEMAP_SCAN in this kernel).
 */
static int pagemap_scan(int pagemap_fd, struct page_region *vec, void *host, uint64_t size,
			uint64_t flags, uint64_t category_mask, uint64_t anyof_mask,
			uint64_t return_mask, unsigned long *bitmap, uint64_t *newly)
{
	const uint64_t base = (uintptr_t)host, end = base + size, npages = size >> PG_SHIFT;
	uint64_t cur = base;

	while (cur < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.flags = flags,
			.start = cur,
			.end = end,
			.vec = (uintptr_t)vec,
			.vec_len = SCAN_VEC_LEN,
			.category_mask = category_mask,
			.category_anyof_mask = anyof_mask,
			.return_mask = return_mask,
		};
		long n;
		do
			n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return -errno;

		for (long i = 0; i < n; i++) {
			uint64_t s = vec[i].start < base ? base : vec[i].start;
			uint64_t e = vec[i].end > end ? end : vec[i].end;
			if (e <= s)
				continue;
			uint64_t first = (s - base) >> PG_SHIFT;
			uint64_t last = (e - base + PG_SIZE - 1) >> PG_SHIFT;
			if (last > npages)
				last = npages;
			*newly += bitmap ? set_range_count(bitmap, first, last - first) : last - first;
		}
		if (n < SCAN_VEC_LEN)
			break; /* short vector: the walk reached end */
		uint64_t next = vec[n - 1].end;
		if (next <= cur) /* no progress: never loop forever */
			return -EIO;
		cur = next;
	}
	return 0;
}

/*
 * The probe proper: UFFDIO_API must offer both WP features, and a round trip
 * on a 4-page mapping (memfd when shmem WP is offered, else anonymous) must
 * report exactly the page written. Returns 0 if WP_ASYNC works.
 */
/* The kernel offers userfaultfd with the WP_ASYNC features; 0 or a negative errno. */
static int probe_features(void)
{
	int fd = ferry__uffd_open();
	if (fd < 0) {
		ferry_dbg("dirty: no userfaultfd: %s", strerror(-fd));
		return fd;
	}
	int r = uffd_api(fd, 0, &uffd_features_offered);
	close(fd);
	if (r < 0) {
		ferry_dbg("dirty: UFFDIO_API: %s", strerror(-r));
		return r;
	}
	if ((uffd_features_offered & WP_FEATURES) != WP_FEATURES) {
		ferry_dbg("dirty: userfaultfd features 0x%llx lack WP_ASYNC/WP_UNPOPULATED",
			  (unsigned long long)uffd_features_offered);
		return -EOPNOTSUPP;
	}
	return 0;
}

/*
 * Probe memory of the kind guest RAM will be (shmem when it can be
 * write-protected) in *mem; 0, or -errno of memfd_create/ftruncate, or
 * -ENOMEM (mmap).
 */
static int probe_map(uint64_t size, void **mem, int *mfd)
{
	if (uffd_features_offered & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) {
		*mfd = memfd_create("ferry-dirty-probe", MFD_CLOEXEC);
		if (*mfd < 0 || ftruncate(*mfd, (off_t)size) < 0)
			return -errno;
		*mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, *mfd, 0);
	} else {
		*mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	return *mem == MAP_FAILED ? -ENOMEM : 0;
}

/*
 * On protected memory, a scan finds nothing written; after one write, it
 * finds exactly that page. 0, -EPROTO on a wrong answer, or the scan's error.
 */
static int probe_scan(int pm, struct page_region *vec, void *mem, uint64_t size)
{
	const uint64_t wpflags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
	unsigned long bm[1] = {0};
	uint64_t newly = 0;
	int r = pagemap_scan(pm, vec, mem, size, wpflags, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN, bm,
			     &newly);
	if (r == 0 && newly != 0)
		r = -EPROTO;
	if (r == 0) {
		((volatile char *)mem)[2 * PG_SIZE] = 1;
		r = pagemap_scan(pm, vec, mem, size, wpflags, PAGE_IS_WRITTEN, 0,
				 PAGE_IS_WRITTEN, bm, &newly);
		if (r == 0 && (newly != 1 || bm[0] != 1UL << 2))
			r = -EPROTO;
	}
	return r;
}

/* A WP_ASYNC + PAGEMAP_SCAN round trip on four pages; 0 or a negative errno. */
static int probe_round_trip(void)
{
	const uint64_t size = 4 * PG_SIZE;
	int uffd = -1, pm = -1, mfd = -1;
	void *mem = MAP_FAILED;
	struct page_region *vec = NULL;

	int r = wp_open(&uffd, &pm);
	if (r < 0)
		goto out;
	if ((r = probe_map(size, &mem, &mfd)) < 0)
		goto out;
	vec = malloc(SCAN_VEC_LEN * sizeof(*vec));
	if (!vec) {
		r = -ENOMEM;
		goto out;
	}
	r = wp_register(uffd, mem, size);
	if (r == 0 && (r = wp_protect(uffd, mem, size)) < 0)
		wp_unregister(uffd, mem, size);
	if (r < 0)
		goto out;
	r = probe_scan(pm, vec, mem, size);
	wp_unregister(uffd, mem, size);
	if (r < 0)
		ferry_dbg("dirty: WP_ASYNC round trip failed: %s", strerror(-r));
out:
	free(vec);
	if (mem != MAP_FAILED)
		munmap(mem, size);
	if (mfd >= 0)
		close(mfd);
	if (pm >= 0)
		close(pm);
	if (uffd >= 0)
		close(uffd);
	return r;
}

static int probe(void)
{
	int r = probe_features();
	return r ? r : probe_round_trip();
}

static void probe_run(void)
{
	wp_async_ok = probe() == 0;
	ferry_dbg("dirty: userfaultfd WP_ASYNC + PAGEMAP_SCAN %s",
		  wp_async_ok ? "available" : "unavailable");
}

/* Thread: any. */
bool ferry__dirty_wp_async_supported(void)
{
	pthread_once(&probe_once, probe_run);
	return wp_async_ok;
}

/* Thread: any (the tracker is not yet shared). */
int ferry__dirty_tracker_init(ferry_dirty_tracker *t, ferry_dirty_mode requested)
{
	t->mode = FERRY_DIRTY_EXPLICIT;
	t->uffd = -1;
	t->pagemap_fd = -1;

	switch (requested) {
	case FERRY_DIRTY_AUTO:
		if (!ferry__dirty_wp_async_supported())
			return 0;
		break;
	case FERRY_DIRTY_WP_ASYNC:
		if (!ferry__dirty_wp_async_supported())
			return -EOPNOTSUPP;
		break;
	case FERRY_DIRTY_EXPLICIT:
		return 0;
	default:
		return -EINVAL;
	}
	int r = wp_open(&t->uffd, &t->pagemap_fd);
	if (r < 0)
		return r;
	t->mode = FERRY_DIRTY_WP_ASYNC;
	return 0;
}

/* Thread: the tracker's user. Idempotent. */
void ferry__dirty_tracker_fini(ferry_dirty_tracker *t)
{
	if (t->uffd >= 0)
		close(t->uffd); /* also drops every registration */
	if (t->pagemap_fd >= 0)
		close(t->pagemap_fd);
	t->uffd = -1;
	t->pagemap_fd = -1;
}

/*
 * Runs a WP-mode uffd operation on a range after the checks both
 * register and protect need. Thread: the tracker's user.
 */
static int wp_op(ferry_dirty_tracker *t, void *host, uint64_t size,
		 int (*op)(int uffd, void *host, uint64_t size), const char *what)
{
	if (!range_ok(host, size))
		return -EINVAL;
	if (t->mode != FERRY_DIRTY_WP_ASYNC || !size)
		return 0;
	if (t->uffd < 0)
		return -EBADF;
	int r = op(t->uffd, host, size);
	if (r < 0)
		ferry_warn("dirty: cannot %s %p+0x%llx: %s", what, host, (unsigned long long)size,
			   strerror(-r));
	return r;
}

int ferry__dirty_track_register(ferry_dirty_tracker *t, void *host, uint64_t size)
{
	return wp_op(t, host, size, wp_register, "register for write-protect");
}

int ferry__dirty_track_protect(ferry_dirty_tracker *t, void *host, uint64_t size)
{
	return wp_op(t, host, size, wp_protect, "write-protect");
}

int ferry__dirty_track_start(ferry_dirty_tracker *t, void *host, uint64_t size)
{
	int r = ferry__dirty_track_register(t, host, size);
	if (r == 0) {
		r = ferry__dirty_track_protect(t, host, size);
		if (r < 0)
			ferry__dirty_track_stop(t, host, size);
	}
	return r;
}

/* Thread: the tracker's user. */
void ferry__dirty_track_stop(ferry_dirty_tracker *t, void *host, uint64_t size)
{
	if (t->mode != FERRY_DIRTY_WP_ASYNC || t->uffd < 0 || !size || !range_ok(host, size))
		return;
	wp_unregister(t->uffd, host, size);
}

/* Thread: the tracker's user; explicit_log may be written concurrently. */
int ferry__dirty_harvest(ferry_dirty_tracker *t, void *host, uint64_t size,
			 _Atomic unsigned long *explicit_log, unsigned long *bitmap,
			 uint64_t *newly)
{
	*newly = 0;
	if (!range_ok(host, size))
		return -EINVAL;
	if (t->mode != FERRY_DIRTY_WP_ASYNC) {
		if (!explicit_log)
			return -EINVAL;
		*newly = ferry__bitmap_drain_atomic(bitmap, explicit_log, size >> PG_SHIFT);
		return 0;
	}
	if (t->pagemap_fd < 0)
		return -EBADF;
	if (!size)
		return 0;
	struct page_region *vec = malloc(SCAN_VEC_LEN * sizeof(*vec));
	if (!vec)
		return -ENOMEM;
	/*
	 * category_mask = PAGE_IS_WRITTEN with return_mask the same is also
	 * the kernel's fast path for exactly this use.
	 */
	int r = pagemap_scan(t->pagemap_fd, vec, host, size,
			     PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, PAGE_IS_WRITTEN, 0,
			     PAGE_IS_WRITTEN, bitmap, newly);
	free(vec);
	if (r < 0)
		ferry_warn("dirty: PAGEMAP_SCAN harvest of %p+0x%llx: %s", host,
			   (unsigned long long)size, strerror(-r));
	return r;
}

int ferry__dirty_peek(ferry_dirty_tracker *t, void *host, uint64_t size,
		      _Atomic unsigned long *explicit_log, uint64_t *written)
{
	*written = 0;
	if (!range_ok(host, size))
		return -EINVAL;
	if (t->mode != FERRY_DIRTY_WP_ASYNC) {
		if (!explicit_log)
			return -EINVAL;
		*written = ferry__bitmap_count_atomic(explicit_log, size >> PG_SHIFT);
		return 0;
	}
	if (t->pagemap_fd < 0)
		return -EBADF;
	struct page_region *vec = size ? malloc(SCAN_VEC_LEN * sizeof(*vec)) : NULL;
	if (size && !vec)
		return -ENOMEM;
	/* The harvest's walk without PM_SCAN_WP_MATCHING: nothing is re-protected. */
	int r = size ? pagemap_scan(t->pagemap_fd, vec, host, size, 0, PAGE_IS_WRITTEN, 0,
				    PAGE_IS_WRITTEN, NULL, written)
		     : 0;
	free(vec);
	return r;
}

/*
 * ORs the data extents of fd over [file_off, file_off + size) into bitmap
 * (bit 0 = the page at file_off). Works on a private
 * open file description (via /proc/self/fd) so the caller's file offset is
 * not moved; restores it otherwise. Returns 0 or a negative errno.
 */
static int scan_file_extents(int fd, uint64_t file_off, uint64_t size, unsigned long *bitmap)
{
	const uint64_t npages = size >> PG_SHIFT;
	char path[40];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int own = open(path, O_RDONLY | O_CLOEXEC);
	int sfd = own >= 0 ? own : fd;
	off_t saved = own >= 0 ? 0 : lseek(fd, 0, SEEK_CUR);
	if (saved < 0)
		return -errno;

	int r = 0;
	uint64_t off = 0, dummy = 0; /* off is relative to file_off */
	while (off < size) {
		off_t d = lseek(sfd, (off_t)(file_off + off), SEEK_DATA);
		if (d < 0) {
			if (errno != ENXIO) /* ENXIO: no data at or after off */
				r = -errno;
			break;
		}
		if ((uint64_t)d >= file_off + size)
			break;
		off_t h = lseek(sfd, d, SEEK_HOLE);
		if (h < 0) {
			r = -errno;
			break;
		}
		uint64_t first = ((uint64_t)d - file_off) >> PG_SHIFT;
		uint64_t last = ((uint64_t)h - file_off + PG_SIZE - 1) >> PG_SHIFT;
		if (last > npages)
			last = npages;
		if (last > first)
			dummy += set_range_count(bitmap, first, last - first);
		if ((uint64_t)h <= file_off + off) /* defensive: no progress */
			break;
		off = (uint64_t)h - file_off;
	}
	(void)dummy;
	if (own >= 0)
		close(own);
	else
		lseek(fd, saved, SEEK_SET);
	return r;
}

/*
 * True if [host, host + size) is entirely MAP_SHARED mappings of fd's file
 * with file offset == file_off + offset in the range (from /proc/self/maps). Then every
 * populated page is in the file, so its data extents are the whole answer.
 */
static bool shared_mapping_of(int fd, uint64_t file_off, const void *host, uint64_t size)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return false;
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return false;

	const uint64_t base = (uintptr_t)host, end = base + size;
	uint64_t cur = base;
	char *line = NULL;
	size_t cap = 0;
	while (cur < end && getline(&line, &cap, f) > 0) {
		unsigned long long vs, ve, off, ino;
		unsigned maj, min;
		char perms[5];
		if (sscanf(line, "%llx-%llx %4s %llx %x:%x %llu", &vs, &ve, perms, &off, &maj,
			   &min, &ino) != 7)
			break;
		if (ve <= cur)
			continue;
		if (vs > cur)
			break; /* a gap: unmapped part */
		/* File offset of cur in this VMA must equal cur's block offset. */
		if (perms[3] != 's' || makedev(maj, min) != st.st_dev ||
		    ino != (unsigned long long)st.st_ino || off + (cur - vs) != file_off + (cur - base))
			break;
		cur = ve;
	}
	free(line);
	fclose(f);
	return cur >= end;
}

/* Thread: any (reentrant). */
bool ferry__ram_maps_file(void *host, uint64_t size, int fd)
{
	struct stat st;
	if (fd < 0 || !range_ok(host, size) || fstat(fd, &st) < 0 || (uint64_t)st.st_size != size)
		return false;
	return shared_mapping_of(fd, 0, host, size);
}

ferry_file_fill ferry__ram_file_fill(int fd, uint64_t size)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size)
		return FERRY_FILL_SOME;
	if (st.st_blocks == 0)
		return FERRY_FILL_NONE;
	return (uint64_t)st.st_blocks * 512 >= size ? FERRY_FILL_ALL : FERRY_FILL_SOME;
}

/*
 * Shortcut for the common extremes: shmem counts allocated blocks, so a
 * file with every byte (or none) allocated needs no walk (a SEEK_DATA walk
 * visits every page, about 10 ms per GiB here). True when it answered.
 */
static bool file_extremes(int fd, uint64_t file_off, uint64_t size, unsigned long *bitmap,
			  uint64_t *count)
{
	const uint64_t npages = size >> PG_SHIFT;
	struct stat st;
	if (fstat(fd, &st) || file_off != 0 || (uint64_t)st.st_size != size)
		return false;
	if ((uint64_t)st.st_blocks * 512 >= size) {
		ferry__bitmap_set_range(bitmap, 0, npages);
		*count = npages;
		return true;
	}
	if (st.st_blocks == 0) {
		*count = ferry__bitmap_count(bitmap, npages);
		return true;
	}
	return false;
}

int ferry__ram_scan_populated(void *host, uint64_t size, int fd, uint64_t file_off,
			      unsigned long *bitmap, uint64_t *count)
{
	const uint64_t npages = size >> PG_SHIFT;
	bool pm_ok = false, fd_ok = fd < 0;
	uint64_t dummy = 0;
	int r;

	*count = 0;
	if (!range_ok(host, size))
		return -EINVAL;
	if (!size)
		return 0;

	/*
	 * A shared mapping of fd: the file's extents are exact, and PAGEMAP_SCAN
	 * would add nothing but uffd-wp markers (reported as swapped) when the
	 * block is being tracked.
	 */
	bool file_only = fd >= 0 && shared_mapping_of(fd, file_off, host, size);
	int pm = file_only ? -1 : open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm >= 0) {
		struct page_region *vec = malloc(SCAN_VEC_LEN * sizeof(*vec));
		if (!vec) {
			close(pm);
			return -ENOMEM;
		}
		r = pagemap_scan(pm, vec, host, size, 0, 0, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
				 PAGE_IS_PRESENT | PAGE_IS_SWAPPED, bitmap, &dummy);
		free(vec);
		close(pm);
		pm_ok = r == 0;
		if (r < 0 && r != -ENOTTY)
			ferry_dbg("dirty: PAGEMAP_SCAN populated scan: %s", strerror(-r));
	}
	if (file_only && file_extremes(fd, file_off, size, bitmap, count))
		return 0;
	if (fd >= 0) {
		r = scan_file_extents(fd, file_off, size, bitmap);
		fd_ok = r == 0;
		if (r < 0)
			ferry_dbg("dirty: SEEK_DATA scan of fd %d: %s", fd, strerror(-r));
	}
	/*
	 * Without an answer for every way a page can be populated, assume all
	 * are: reading a never-touched page costs time, skipping a written one
	 * loses data.
	 */
	if (!fd_ok || (!pm_ok && !file_only))
		ferry__bitmap_fill(bitmap, npages);
	*count = ferry__bitmap_count(bitmap, npages);
	return 0;
}
