/* SPDX-License-Identifier: MIT */
/*
 * Destination placement benchmark: how fast can SIZE bytes of received guest
 * RAM be written into brand-new guest memory?
 *
 * An incoming migration writes every page of the destination's guest RAM
 * exactly once, into memory that has never been touched.  Ferry's guest RAM
 * (like QEMU's with a memory-backend-memfd) is a memfd mapped MAP_SHARED,
 * so each first write takes a shmem page fault that allocates, zeroes and
 * maps one 4 KiB page.  On a small VM under a paravirtual hypervisor this
 * first touch, not the network or the copy, is what limits the incoming
 * side (~1 GB/s).  This program measures the alternatives the issue asks
 * about, each on a brand-new memfd of SIZE bytes (default 2 GiB), placing
 * non-zero data taken from a 1 MiB source buffer (2 MiB for the 2 MiB
 * UFFDIO_COPY calls, which need a contiguous source):
 *
 *  - fault_4k: plain memcpy into the fresh mapping (today's behaviour);
 *  - populate_write_then_copy: madvise(MADV_POPULATE_WRITE) over the whole
 *    range first (what a destination can do before the migration starts,
 *    like QEMU's prealloc=on), then memcpy into already-mapped memory;
 *  - fallocate_then_copy: fallocate() the memfd (allocates the shmem pages
 *    but does not map them), then memcpy (minor faults only);
 *  - pwrite: pwrite() 1 MiB chunks into the memfd: bulk placement through
 *    the page cache with no page faults at all; the first read of one byte
 *    per page through the mapping afterwards (the guest's first access) is
 *    timed and reported separately;
 *  - uffdio_copy_4k / uffdio_copy_2m: the mapping registered with
 *    userfaultfd in MISSING mode and filled with UFFDIO_COPY, 4 KiB or
 *    2 MiB per ioctl (how a postcopy destination places pages);
 *  - thp_shmem: madvise(MADV_HUGEPAGE) on the mapping, then memcpy; only
 *    effective when /sys/kernel/mm/transparent_hugepage/shmem_enabled is
 *    advise, always or within_size (reported as "shmem_enabled");
 *  - anon_thp: for reference, an anonymous MAP_PRIVATE mapping with
 *    MADV_HUGEPAGE, then memcpy (not usable as shareable guest RAM).
 *
 * Placement GB/s = SIZE (1e9 bytes) / (prep + copy time).  Where a strategy
 * has a preparation step, prep_ms and copy_ms are reported separately: prep
 * is work a destination can do before the migration starts.  Creating the
 * memfd, ftruncate() and mmap() are common to all and not timed.  Each
 * strategy runs RUNS times (each on a new memfd, unmapped and closed
 * afterwards); the medians are reported.  For the THP strategies,
 * huge_mib is how much of the mapping ended up PMD-mapped (from
 * /proc/self/smaps_rollup), to show whether THP actually took effect.
 *
 * Usage: bench-placement [MiB (default 2048)] [runs (default 3)]
 * Prints one JSON object on stdout.  Needs userfaultfd for the uffdio_*
 * strategies (reported as errors otherwise).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define PS 4096ul
#define HUGE (2ul << 20)
#define CHUNK (1ul << 20)
#define MAXRUNS 64

static size_t size;
static uint8_t *src; /* HUGE bytes: the 1 MiB pattern twice */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Maps len bytes (fd >= 0: MAP_SHARED of fd; else anonymous MAP_PRIVATE) at a 2 MiB boundary. */
static uint8_t *map_aligned(int fd, size_t len)
{
	uint8_t *res = mmap(NULL, len + HUGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return NULL;
	uint8_t *p = (uint8_t *)(((uintptr_t)res + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
	void *m = fd >= 0 ? mmap(p, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
			  : mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (m == MAP_FAILED) {
		munmap(res, len + HUGE);
		return NULL;
	}
	if (p > res)
		munmap(res, (size_t)(p - res));
	if (p + len < res + len + HUGE)
		munmap(p + len, (size_t)(res + len + HUGE - (p + len)));
	return p;
}

static void copy_all(uint8_t *dst)
{
	for (size_t o = 0; o < size; o += CHUNK)
		memcpy(dst + o, src, size - o < CHUNK ? size - o : CHUNK);
}

/* Spot-checks the placed data (untimed): the start of every 64 MiB. */
static bool check(const uint8_t *dst)
{
	for (size_t o = 0; o < size; o += 64ul << 20) {
		size_t n = size - o < CHUNK ? size - o : CHUNK;
		if (memcmp(dst + o, src, n))
			return false;
	}
	return true;
}

/* kB of PMD-mapped memory of this process (shmem or anon), from smaps_rollup. */
static long huge_kb(const char *field)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	long kb = -1;
	size_t fl = strlen(field);
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, fl) && line[fl] == ':')
			kb = strtol(line + fl + 1, NULL, 10);
	fclose(f);
	return kb;
}

static void sysfs_word(const char *path, char *out, size_t n)
{
	char buf[256] = "";
	FILE *f = fopen(path, "r");
	snprintf(out, n, "unavailable");
	if (!f)
		return;
	if (fgets(buf, sizeof(buf), f)) {
		char *a = strchr(buf, '['), *b = a ? strchr(a, ']') : NULL;
		if (a && b) {
			*b = 0;
			snprintf(out, n, "%s", a + 1);
		}
	}
	fclose(f);
}

static int uffd_open(const char **how)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	*how = "syscall";
	if (fd < 0) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev < 0)
			return -1;
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | UFFD_USER_MODE_ONLY);
		close(dev);
		*how = "/dev/userfaultfd";
	}
	if (fd < 0)
		return -1;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

enum strat {
	FAULT_4K,
	POPULATE,
	FALLOCATE,
	PWRITE,
	UFFD_4K,
	UFFD_2M,
	THP_SHMEM,
	ANON_THP,
	NSTRAT
};

static const char *const names[NSTRAT] = {
	"fault_4k", "populate_write_then_copy", "fallocate_then_copy", "pwrite",
	"uffdio_copy_4k", "uffdio_copy_2m", "thp_shmem", "anon_thp",
};
static const bool has_prep[NSTRAT] = { false, true, true, false, true, true, true, true };

struct result {
	double prep, copy, extra; /* seconds; extra = pwrite's first read */
	long huge_kb;
	char err[128];
};

static void run(enum strat s, struct result *r)
{
	const char *how = NULL;
	int fd = -1, uffd = -1;
	uint8_t *p = NULL;
	double t0 = 0, t1 = 0, t2;

	memset(r, 0, sizeof(*r));
	r->huge_kb = -1;
	if (s != ANON_THP) {
		fd = memfd_create("bench-placement", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
			snprintf(r->err, sizeof(r->err), "memfd: %s", strerror(errno));
			goto out;
		}
		p = map_aligned(fd, size);
	} else {
		/* For anon, mmap + madvise are the "prep". */
		t0 = now();
		p = map_aligned(-1, size);
	}
	if (!p) {
		snprintf(r->err, sizeof(r->err), "mmap: %s", strerror(errno));
		goto out;
	}

	if (s != ANON_THP)
		t0 = now();
	switch (s) {
	case FAULT_4K:
		t1 = now();
		copy_all(p);
		break;
	case POPULATE:
		if (madvise(p, size, MADV_POPULATE_WRITE)) {
			snprintf(r->err, sizeof(r->err), "MADV_POPULATE_WRITE: %s", strerror(errno));
			goto out;
		}
		t1 = now();
		copy_all(p);
		break;
	case FALLOCATE:
		if (fallocate(fd, 0, 0, (off_t)size)) {
			snprintf(r->err, sizeof(r->err), "fallocate: %s", strerror(errno));
			goto out;
		}
		t1 = now();
		copy_all(p);
		break;
	case PWRITE:
		t1 = now();
		for (size_t o = 0; o < size;) {
			size_t n = size - o < CHUNK ? size - o : CHUNK;
			ssize_t w = pwrite(fd, src, n, (off_t)o);
			if (w <= 0) {
				snprintf(r->err, sizeof(r->err), "pwrite: %s", w ? strerror(errno) : "short");
				goto out;
			}
			o += (size_t)w;
		}
		break;
	case UFFD_4K:
	case UFFD_2M: {
		uffd = uffd_open(&how);
		if (uffd < 0) {
			snprintf(r->err, sizeof(r->err), "userfaultfd: %s", strerror(errno));
			goto out;
		}
		struct uffdio_register reg = { .range = { (uintptr_t)p, size },
					       .mode = UFFDIO_REGISTER_MODE_MISSING };
		if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 || !(reg.ioctls & (1ull << _UFFDIO_COPY))) {
			snprintf(r->err, sizeof(r->err), "UFFDIO_REGISTER: %s", strerror(errno));
			goto out;
		}
		t1 = now();
		const size_t step = s == UFFD_4K ? PS : HUGE;
		for (size_t o = 0; o < size;) {
			size_t n = size - o < step ? size - o : step;
			struct uffdio_copy c = { .dst = (uintptr_t)p + o, .src = (uintptr_t)src + (o % HUGE),
						 .len = n, .mode = 0 };
			if (ioctl(uffd, UFFDIO_COPY, &c) < 0 && c.copy <= 0 && errno != EAGAIN) {
				snprintf(r->err, sizeof(r->err), "UFFDIO_COPY at %zu: %s", o, strerror(errno));
				goto out;
			}
			if (c.copy > 0)
				o += (size_t)c.copy;
		}
		break;
	}
	case THP_SHMEM:
	case ANON_THP:
		if (madvise(p, size, MADV_HUGEPAGE)) {
			snprintf(r->err, sizeof(r->err), "MADV_HUGEPAGE: %s", strerror(errno));
			goto out;
		}
		t1 = now();
		copy_all(p);
		break;
	default:
		goto out;
	}
	t2 = now();
	r->prep = t1 - t0;
	r->copy = t2 - t1;

	if (s == PWRITE) {
		volatile uint8_t sink = 0;
		double a = now();
		for (size_t o = 0; o < size; o += PS)
			sink ^= ((volatile uint8_t *)p)[o];
		r->extra = now() - a;
		(void)sink;
	}
	if (s == THP_SHMEM)
		r->huge_kb = huge_kb("ShmemPmdMapped");
	else if (s == ANON_THP)
		r->huge_kb = huge_kb("AnonHugePages");
	if (!check(p))
		snprintf(r->err, sizeof(r->err), "placed data differs from the source");
out:
	if (uffd >= 0) {
		/* Closing the uffd unregisters the range. */
		close(uffd);
	}
	if (p)
		munmap(p, size);
	if (fd >= 0)
		close(fd);
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 2048;
	int runs = argc > 2 ? atoi(argv[2]) : 3;
	if (mib < 2 || mib % 2 || runs < 1 || runs > MAXRUNS) {
		fprintf(stderr, "usage: %s [MiB, even, >= 2 (default 2048)] [runs 1..%d (default 3)]\n", argv[0],
			MAXRUNS);
		return 2;
	}
	size = (size_t)mib << 20;
	if (posix_memalign((void **)&src, HUGE, HUGE)) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < CHUNK; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t v = x | 1; /* never a zero word: every page is non-zero */
		memcpy(src + i, &v, 8);
	}
	memcpy(src + CHUNK, src, CHUNK);

	char shmem_thp[32], anon_thp[32];
	sysfs_word("/sys/kernel/mm/transparent_hugepage/shmem_enabled", shmem_thp, sizeof(shmem_thp));
	sysfs_word("/sys/kernel/mm/transparent_hugepage/enabled", anon_thp, sizeof(anon_thp));
	struct utsname u;
	uname(&u);
	const char *uffd_how = "unavailable";
	int probe = uffd_open(&uffd_how);
	if (probe >= 0)
		close(probe);
	else
		uffd_how = "unavailable";

	printf("{\n \"benchmark\": \"placement\",\n \"size_bytes\": %zu,\n \"runs\": %d,\n", size, runs);
	printf(" \"kernel\": \"%s\",\n \"shmem_enabled\": \"%s\",\n \"thp_enabled\": \"%s\",\n", u.release,
	       shmem_thp, anon_thp);
	printf(" \"userfaultfd\": \"%s\",\n \"strategies\": {", uffd_how);
	for (int s = 0; s < NSTRAT; s++) {
		double g[MAXRUNS], prep[MAXRUNS], copy[MAXRUNS], extra[MAXRUNS], huge[MAXRUNS];
		struct result r;
		int ok = 0;
		char err[128] = "";
		for (int i = 0; i < runs; i++) {
			run((enum strat)s, &r);
			if (r.err[0]) {
				snprintf(err, sizeof(err), "%s", r.err);
				break;
			}
			g[ok] = (double)size / (r.prep + r.copy) / 1e9;
			prep[ok] = r.prep * 1e3;
			copy[ok] = r.copy * 1e3;
			extra[ok] = r.extra * 1e3;
			huge[ok] = (double)r.huge_kb / 1024;
			ok++;
		}
		printf("%s\n  \"%s\": {", s ? "," : "", names[s]);
		if (err[0]) {
			printf("\"error\": \"%s\"}", err);
			continue;
		}
		printf("\"gbps\": [");
		for (int i = 0; i < ok; i++)
			printf("%s%.3f", i ? ", " : "", g[i]);
		printf("], \"gbps_median\": %.3f", median(g, ok));
		if (has_prep[s])
			printf(", \"prep_ms\": %.1f, \"copy_ms\": %.1f, \"copy_only_gbps\": %.3f", median(prep, ok),
			       median(copy, ok), (double)size / (median(copy, ok) / 1e3) / 1e9);
		else
			printf(", \"ms\": %.1f", median(copy, ok));
		if (s == PWRITE)
			printf(", \"first_read_ms\": %.1f, \"gbps_incl_first_read\": %.3f", median(extra, ok),
			       (double)size / ((median(copy, ok) + median(extra, ok)) / 1e3) / 1e9);
		if (s == THP_SHMEM || s == ANON_THP)
			printf(", \"huge_mib\": %.0f", median(huge, ok));
		printf("}");
	}
	printf("\n }\n}\n");
	free(src);
	return 0;
}
