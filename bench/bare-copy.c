/* SPDX-License-Identifier: MIT */
/*
 * The bare program of issue 20: what this machine moves one-shot from
 * guest-like memory to preallocated (or, with --cold, fresh) memory over N
 * loopback TCP streams, with nothing a migration adds: no dirty tracking,
 * no zero check, no checksums, no framing. It is the limit a migration's
 * throughput is measured against (bench/vs-qemu's `bare` engine runs it
 * interleaved with QEMU and Ferry).
 *
 * Two processes, as a migration has: the parent receives, a forked child
 * sends. The child writes its MEM from user space (as a guest writes its
 * RAM) with bytes the parent can regenerate. Then two transfers, each
 * one-shot over N new connections, stream i carrying slice i (MEM/N):
 *  - direct: send() straight from the source memory, recv() straight into
 *    the destination memory (the kernel copies to and from those pages);
 *  - bounce: each side copies through a reused 1 MiB buffer in user space
 *    (one more copy each, but the kernel only touches that buffer).
 * On most machines direct is the faster; on a VM whose kernel pays for its
 * first access to each user page (util/kcopy.h in libferry) bounce is,
 * several times. The better of the two is the limit ("best").
 * Before each transfer the destination is made as a migration finds it:
 * preallocated by a write to each page from user space (--populate: with
 * MADV_POPULATE_WRITE, as QEMU's prealloc=on), or fresh (--cold, the pages
 * given back first). The parent checks every byte after each transfer,
 * outside the timing. CPU seconds are each process's own over the transfer.
 *
 * Cold, as a migration's destination finds it on a VM that hands freed
 * memory back to its host (free page reporting): pages given back are
 * reported over seconds, and until then the next allocation gets them
 * warm, ~10x cheaper to write first. So with --settle S each cold
 * destination is given back and then left until the kernel has reported
 * nothing for S seconds (at most 30), as bench/vs-qemu does before each
 * migration; without it the second transfer would land in the first's
 * pages while still warm. --memfd makes the destination a memfd mapped
 * MAP_SHARED, as guest RAM is (shmem pages, given back by punching holes).
 * With --cold, before the transfers (the sender holds its written source,
 * as a migration's does): "touch", the first-touch limit, with no network:
 * one thread per CPU each copies a 4 KiB page into every page of its slice
 * of the settled destination. A destination that must populate fresh
 * memory cannot go faster (issue 20's target 2), however many streams.
 *
 * Usage: bench-bare-copy [--mem 2G] [--streams N] [--cold [--settle S] | --populate]
 *                        [--memfd] [--only direct|bounce]  (one transfer: to profile it)
 *                        [--pin same|cross]  (each stream's threads on one CPU, or two)
 * Prints one JSON object: per variant gbps (MEM / seconds, 1e9 bytes/s),
 * seconds, cpu_s of sender and receiver, cpu_s_per_gib; best_gbps; with
 * --cold, touch: gbps, seconds, cpu_s, settled_s.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_STREAMS 16
#define PAGE 4096ul
#define CHUNK (1ul << 20)
#define VARIANTS 2

static const char *const variant_names[VARIANTS] = { "direct", "bounce" };

struct stream {
	int fd;
	uint8_t *p;
	size_t len;
	int bounce;
	int err;
	int cpu; /* --pin: the CPU its thread runs on, else -1 */
};

/* What the sender reports per variant through the pipe. */
struct sent {
	double t0, cpu_s;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what)
{
	fprintf(stderr, "bench-bare-copy: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The content of word i: a 64-bit mix of i (splitmix64's finalizer), incompressible. */
static uint64_t word(uint64_t i)
{
	uint64_t z = i + 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int dst_fd = -1; /* --memfd: the destination's memfd */

/*
 * --pin same|cross: stream i's sending thread runs on CPU i % CPUs, its
 * receiving thread on the same CPU or the next one. On loopback the
 * receiver copies what the sender just wrote into socket buffers, on the
 * same CPU presumably from its caches; across CPUs is closer to two hosts,
 * where nothing is shared (measured: 2 streams 6.8-6.9 GB/s same, 4.6
 * cross; unpinned, the scheduler keeps each stream on one CPU).
 */
enum { PIN_NONE, PIN_SAME, PIN_CROSS };
static int pin_mode;

static int pin_cpu(unsigned i, bool receiver)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (pin_mode == PIN_NONE || cpus < 1)
		return -1;
	return (int)((i + (receiver && pin_mode == PIN_CROSS)) % (unsigned long)cpus);
}

static void pin_self(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if ((errno = pthread_setaffinity_np(pthread_self(), sizeof(set), &set)))
		die("pthread_setaffinity_np");
}

static void *map_dst(size_t len)
{
	if (dst_fd < 0)
		return NULL;
	if (ftruncate(dst_fd, (off_t)len))
		die("ftruncate");
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, dst_fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

/* KiB reported to the host so far, or -1 where the kernel does not report. */
static long long reported_kib(void)
{
	FILE *f = fopen("/sys/module/page_reporting/parameters/reported_kib", "r");
	long long v = -1;
	if (f && fscanf(f, "%lld", &v) != 1)
		v = -1;
	if (f)
		fclose(f);
	return v;
}

/* Waits until nothing was reported for quiet seconds (30 at most); returns the seconds waited. */
static double settle(double quiet)
{
	double t0 = now_s(), changed = t0;
	long long last = reported_kib();
	if (quiet <= 0 || last < 0)
		return 0;
	while (now_s() - changed < quiet && now_s() - t0 < 30) {
		usleep(250000);
		long long cur = reported_kib();
		if (cur != last) {
			last = cur;
			changed = now_s();
		}
	}
	return now_s() - t0;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static int send_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return n < 0 ? errno : EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void *send_thread(void *arg)
{
	struct stream *s = arg;
	pin_self(s->cpu);
	if (!s->bounce) { /* one-shot: the whole slice in one call */
		s->err = send_all(s->fd, s->p, s->len);
		return NULL;
	}
	uint8_t *b = malloc(CHUNK);
	for (size_t off = 0; b && off < s->len && !s->err; off += CHUNK) {
		size_t k = s->len - off < CHUNK ? s->len - off : CHUNK;
		memcpy(b, s->p + off, k);
		s->err = send_all(s->fd, b, k);
	}
	s->err = b ? s->err : ENOMEM;
	free(b);
	return NULL;
}

static void *recv_thread(void *arg)
{
	struct stream *s = arg;
	pin_self(s->cpu);
	uint8_t *b = s->bounce ? malloc(CHUNK) : NULL;
	if (s->bounce && !b) {
		s->err = ENOMEM;
		return NULL;
	}
	for (size_t off = 0; off < s->len;) {
		size_t want = b ? (s->len - off < CHUNK ? s->len - off : CHUNK) : s->len - off;
		ssize_t n = recv(s->fd, b ? b : s->p + off, want, 0);
		if (n <= 0) {
			s->err = n < 0 ? errno : EPIPE;
			break;
		}
		if (b)
			memcpy(s->p + off, b, (size_t)n);
		off += (size_t)n;
	}
	free(b);
	return NULL;
}

static void run_streams(struct stream *st, unsigned n, void *(*fn)(void *))
{
	pthread_t t[MAX_STREAMS];
	for (unsigned i = 0; i < n; i++)
		if ((errno = pthread_create(&t[i], NULL, fn, &st[i])))
			die("pthread_create");
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i < n; i++)
		if (st[i].err) {
			errno = st[i].err;
			die("stream");
		}
}

/* Child: write the source, then per variant start the clock, connect and send. */
static void sender(size_t mem, unsigned n, uint16_t port, int wfd, int only)
{
	uint64_t *src = map(mem);
	for (size_t i = 0; i < mem / 8; i++)
		src[i] = word(i);
	if (write(wfd, "r", 1) != 1) /* written: the destination may start */
		exit(1);
	for (int v = 0; v < VARIANTS; v++) {
		if (only >= 0 && v != only)
			continue;
		char go;
		if (read(wfd, &go, 1) != 1) /* the destination is ready */
			exit(1);
		struct stream st[MAX_STREAMS];
		struct sent out = { now_s(), cpu_s() };
		for (unsigned i = 0; i < n; i++) {
			struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
						  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
			int fd = socket(AF_INET, SOCK_STREAM, 0);
			if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
				die("connect");
			st[i] = (struct stream){ .fd = fd, .p = (uint8_t *)src + i * (mem / n),
						 .len = mem / n, .bounce = v == 1, .cpu = pin_cpu(i, false) };
		}
		run_streams(st, n, send_thread);
		for (unsigned i = 0; i < n; i++)
			close(st[i].fd);
		out.cpu_s = cpu_s() - out.cpu_s;
		if (write(wfd, &out, sizeof(out)) != sizeof(out))
			exit(1);
	}
	exit(0);
}

static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	int shift = *end == 'G' ? 30 : *end == 'M' ? 20 : *end == 'K' ? 10 : 0;
	return (size_t)v << shift;
}

enum prep { PREP_TOUCH, PREP_POPULATE, PREP_COLD };
static const char *const prep_names[] = { "preallocated, written once from user space",
					  "preallocated with MADV_POPULATE_WRITE", "fresh (cold)" };

/* The destination as a migration finds it: every page dropped, then preallocated or not. */
static void prepare(uint8_t *dst, size_t mem, enum prep prep)
{
	if (dst_fd >= 0 ? fallocate(dst_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)mem)
			: madvise(dst, mem, MADV_DONTNEED))
		die("giving the destination's pages back");
	if (prep == PREP_TOUCH)
		for (size_t off = 0; off < mem; off += PAGE)
			((volatile uint8_t *)dst)[off] = 0;
	else if (prep == PREP_POPULATE && madvise(dst, mem, MADV_POPULATE_WRITE))
		die("madvise(MADV_POPULATE_WRITE)");
}

struct touch {
	uint8_t *p;
	size_t len;
};

static void *touch_thread(void *arg)
{
	struct touch *t = arg;
	uint8_t page[PAGE];
	memset(page, 0x5a, sizeof(page));
	for (size_t off = 0; off < t->len; off += PAGE)
		memcpy(t->p + off, page, PAGE);
	return NULL;
}

/* The first-touch limit: a thread per CPU writes its share of the settled cold destination. */
static void first_touch(uint8_t *dst, size_t mem, double quiet)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n = cpus < 1 ? 1 : cpus > MAX_STREAMS ? MAX_STREAMS : (unsigned)cpus;
	prepare(dst, mem, PREP_COLD);
	double waited = settle(quiet);
	struct touch t[MAX_STREAMS];
	pthread_t th[MAX_STREAMS];
	double t0 = now_s(), c0 = cpu_s();
	for (unsigned i = 0; i < n; i++) {
		size_t lo = mem / PAGE * i / n * PAGE, hi = mem / PAGE * (i + 1) / n * PAGE;
		t[i] = (struct touch){ dst + lo, hi - lo };
		if ((errno = pthread_create(&th[i], NULL, touch_thread, &t[i])))
			die("pthread_create");
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	double secs = now_s() - t0;
	printf("\"touch\": {\"gbps\": %.3f, \"seconds\": %.4f, \"cpu_s\": %.3f, \"threads\": %u, "
	       "\"settled_s\": %.1f}, ",
	       mem / secs / 1e9, secs, cpu_s() - c0, n, waited);
}

/* One variant on the parent's side: accept, receive, check. Prints its JSON member. */
static double receive(int ls, int sock, uint8_t *dst, size_t mem, unsigned n, int v,
		      double settled)
{
	struct stream st[MAX_STREAMS];
	if (write(sock, "g", 1) != 1)
		die("pipe");
	for (unsigned i = 0; i < n; i++) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0)
			die("accept");
		/* Accepted in connection order, which is slice order. */
		st[i] = (struct stream){ .fd = fd, .p = dst + i * (mem / n), .len = mem / n,
					 .bounce = v == 1, .cpu = pin_cpu(i, true) };
	}
	double c0 = cpu_s();
	run_streams(st, n, recv_thread);
	double t1 = now_s(), rcpu = cpu_s() - c0;
	struct sent in;
	if (read(sock, &in, sizeof(in)) != sizeof(in)) {
		fprintf(stderr, "bench-bare-copy: the sender failed\n");
		exit(1);
	}
	for (unsigned i = 0; i < n; i++)
		close(st[i].fd);
	const uint64_t *got = (const uint64_t *)dst;
	for (size_t i = 0; i < mem / 8; i++)
		if (got[i] != word(i)) {
			fprintf(stderr, "bench-bare-copy: %s: byte %zu differs\n", variant_names[v], i * 8);
			exit(1);
		}
	double secs = t1 - in.t0, gbps = mem / secs / 1e9;
	static int printed;
	printf("%s\"%s\": {\"gbps\": %.3f, \"seconds\": %.4f, \"cpu_s_sender\": %.3f, "
	       "\"cpu_s_receiver\": %.3f, \"cpu_s_per_gib\": %.3f, \"settled_s\": %.1f, "
	       "\"checked\": true}",
	       printed++ ? ", " : "", variant_names[v], gbps, secs, in.cpu_s, rcpu,
	       (in.cpu_s + rcpu) / ((double)mem / (1ul << 30)), settled);
	return gbps;
}

int main(int argc, char **argv)
{
	size_t mem = 2ul << 30;
	unsigned n = 1;
	enum prep prep = PREP_TOUCH;
	int only = -1;
	double quiet = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mem = parse_size(argv[++i]);
		else if (!strcmp(argv[i], "--streams") && i + 1 < argc)
			n = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--cold"))
			prep = PREP_COLD;
		else if (!strcmp(argv[i], "--settle") && i + 1 < argc)
			quiet = atof(argv[++i]);
		else if (!strcmp(argv[i], "--memfd") && (dst_fd = memfd_create("dst", MFD_CLOEXEC)) < 0)
			die("memfd_create");
		else if (!strcmp(argv[i], "--memfd"))
			continue;
		else if (!strcmp(argv[i], "--pin") && i + 1 < argc && !strcmp(argv[i + 1], "same"))
			pin_mode = PIN_SAME, i++;
		else if (!strcmp(argv[i], "--pin") && i + 1 < argc && !strcmp(argv[i + 1], "cross"))
			pin_mode = PIN_CROSS, i++;
		else if (!strcmp(argv[i], "--populate"))
			prep = PREP_POPULATE;
		else if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "direct"))
			only = 0, i++;
		else if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "bounce"))
			only = 1, i++;
		else {
			fprintf(stderr, "usage: bench-bare-copy [--mem 2G] [--streams N] "
					"[--cold [--settle S] | --populate] [--memfd] "
					"[--only direct|bounce] [--pin same|cross]\n");
			return 2;
		}
	}
	if (!n || n > MAX_STREAMS || !mem || mem % (n * PAGE)) {
		fprintf(stderr, "bench-bare-copy: streams 1..%d, mem a multiple of streams x 4 KiB\n",
			MAX_STREAMS);
		return 2;
	}
	uint8_t *dst = dst_fd >= 0 ? map_dst(mem) : map(mem);
	/* Not shared with the sender: a copy-on-write fault per page would be the limit. */
	if (madvise(dst, mem, MADV_DONTFORK))
		die("madvise(MADV_DONTFORK)");
	int ls = socket(AF_INET, SOCK_STREAM, 0), sp[2];
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, MAX_STREAMS) ||
	    getsockname(ls, (struct sockaddr *)&sa, &sl) || socketpair(AF_UNIX, SOCK_STREAM, 0, sp))
		die("socket");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sp[0]);
		sender(mem, n, ntohs(sa.sin_port), sp[1], only);
	}
	close(sp[1]);
	printf("{\"benchmark\": \"bare-copy\", \"mem_bytes\": %zu, \"streams\": %u, "
	       "\"destination\": \"%s%s\", ",
	       mem, n, prep_names[prep], dst_fd >= 0 ? ", memfd" : "");
	char ready;
	if (read(sp[0], &ready, 1) != 1) {
		fprintf(stderr, "bench-bare-copy: the sender failed\n");
		return 1;
	}
	if (prep == PREP_COLD && only < 0)
		first_touch(dst, mem, quiet); /* the sender holds its source, waiting for "g" */
	double best = 0;
	for (int v = 0; v < VARIANTS; v++) {
		if (only >= 0 && v != only)
			continue;
		prepare(dst, mem, prep);
		double settled = prep == PREP_COLD ? settle(quiet) : 0;
		double g = receive(ls, sp[0], dst, mem, n, v, settled);
		best = g > best ? g : best;
	}
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "bench-bare-copy: the sender failed\n");
		return 1;
	}
	printf(", \"best_gbps\": %.3f}\n", best);
	return 0;
}
