/* SPDX-License-Identifier: MIT */
/*
 * The bare program of issue 20 for postcopy: the least a page fault served
 * over the network costs on this machine, with nothing a migration adds
 * (no page state, no return-path protocol, no checksums). It is the limit
 * Ferry's postcopy fault latency is measured against (bench/postcopy.py
 * --bare runs it interleaved with Ferry).
 *
 * Two processes, as a migration has, over loopback TCP (TCP_NODELAY). The
 * child is the source: it writes its MEM from user space (as a guest
 * writes its RAM) with words the parent can regenerate. The parent is the
 * destination: an anonymous MEM registered with a userfaultfd (MISSING),
 * N vCPU threads each reading one byte of each page of its own share of
 * FAULTS pages (disjoint, random order over MEM), so each of those pages
 * faults exactly once. The destination's threads:
 *  - bare/fault polls the userfaultfd, reads the fault messages and sends
 *    each page's index (8 bytes) to the source on the request connection;
 *  - bare/recv reads the reply (an 8-byte header, the 4 KiB page) and
 *    places it with UFFDIO_COPY, which wakes the vCPU;
 *  - bare/bg (busy, shared) reads the background stream, 64 KiB batches it
 *    places with UFFDIO_COPY (DONTWAKE) into pages nobody touches: a 64 MiB
 *    ring whose 2 MiB chunks are dropped (MADV_DONTNEED) before reuse.
 * The source answers each request with a page it first copies into a small
 * user buffer (a kernel that pays for its first access to each user page,
 * util/kcopy.h in libferry, then touches only that buffer; --direct sends
 * straight from the source memory instead).
 *
 * Variants, each a separate measurement over fresh connections:
 *  - idle: replies on a connection that carries nothing else (the preempt
 *    channel with nothing else going on);
 *  - busy: the same, while a second connection carries a background stream
 *    of pages at full speed (the preempt channel under load);
 *  - shared: no second channel: the replies go on the background stream's
 *    connection, queued behind it, with TCP_NOTSENT_LOWAT (256 KiB) on the
 *    source's socket, each requested page sent ahead of the next batch, and
 *    SO_RCVBUF (--rcvbuf, 256 KiB) on the destination's: on loopback the
 *    receive buffer, which grows to MiBs by itself, is most of the queue
 *    (postcopy without preempt).
 * Latency per fault is Ferry's: from bare/fault reading the fault message to
 * UFFDIO_COPY returning (CLOCK_MONOTONIC); the vCPU's, around its read, is
 * the second figure. After each variant, outside the timing, the parent
 * checks that each touched page faulted exactly once and holds the source's
 * bytes, and so does every background page still in the ring.
 *
 * Usage: bench-bare-fault [--mem 256M] [--vcpus 2] [--faults 20000]
 *        [--shared-faults FAULTS/10] [--rcvbuf 256K] [--variants idle,busy,shared]
 *        [--bg-mbps 0] [--pin CPU] [--direct]
 * (shared has fewer faults by default: each costs ~10 times more.) The
 * background goes at full speed, or paced to --bg-mbps (1e6 bytes/s), say
 * a migration's measured postcopy throughput. --pin CPU puts the fault
 * path's threads of both sides (bare/fault, the thread receiving replies,
 * the source's thread answering requests) on one CPU, as Ferry's parameter
 * x-postcopy-cpu, so that a request's wakeups are local.
 * Prints one JSON object: per variant faults, p50_us, p99_us, max_us,
 * vcpu_p50_us, vcpu_p99_us, seconds (the vCPUs' run), background_MBps.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define USAGE "bench-bare-fault [--mem 256M] [--vcpus 2] [--faults 20000] " \
	"[--shared-faults FAULTS/10] [--rcvbuf 256K] [--variants idle,busy,shared] " \
	"[--bg-mbps 0] [--pin CPU] [--direct]"
#define PAGE 4096ul
#define BATCH 16ul                  /* pages per background message */
#define RING (64ul << 20)           /* the background's destination */
#define CHUNK (2ul << 20)           /* dropped before reuse */
#define LOWAT (256 << 10)           /* shared: TCP_NOTSENT_LOWAT */
#define WARMUP_BATCHES 256          /* background placed before the vCPUs start */
#define MAX_VCPUS 64
#define BG_FLAG (1ull << 63)        /* header: a background batch, not a reply */
#define STOP UINT64_MAX             /* request: the variant is over */
#define VARIANTS 3

enum variant { IDLE, BUSY, SHARED };
static const char *const variant_names[VARIANTS] = { "idle", "busy", "shared" };

/* --pin: the CPU of the fault path's threads (-1: not pinned), and the CPUs before. */
static int pin_cpu = -1;
static cpu_set_t all_cpus;

static void die(const char *what)
{
	fprintf(stderr, "bench-bare-fault: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *what)
{
	fprintf(stderr, "bench-bare-fault: %s\n", what);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct timespec timespec_of(uint64_t ns)
{
	return (struct timespec){ (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
}

/* The content of word i: a 64-bit mix of i (splitmix64's finalizer), as bare-copy. */
static uint64_t word(uint64_t i)
{
	uint64_t z = i + 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Whether page pg of a page-sized buffer holds source page src. */
static int page_ok(const uint8_t *pg, uint64_t src)
{
	const uint64_t *w = (const uint64_t *)pg;
	for (size_t i = 0; i < PAGE / 8; i++)
		if (w[i] != word(src * (PAGE / 8) + i))
			return 0;
	return 1;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

/* The calling thread on pin_cpu, or back on all_cpus; nothing without --pin. */
static void pin(int on)
{
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(pin_cpu, &one);
	if (pin_cpu >= 0 && (errno = pthread_setaffinity_np(pthread_self(), sizeof(one),
							    on ? &one : &all_cpus)))
		die("pthread_setaffinity_np (--pin: a CPU this process may run on)");
}

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	if ((errno = pthread_create(t, NULL, fn, arg)))
		die("pthread_create");
}

static void send_all(int fd, const void *p, size_t len)
{
	const uint8_t *b = p;
	while (len) {
		ssize_t n = send(fd, b, len, MSG_NOSIGNAL);
		if (n <= 0)
			die("send");
		b += n;
		len -= (size_t)n;
	}
}

/* 1 with len bytes read, 0 at the end of the stream before any. */
static int recv_all(int fd, void *p, size_t len)
{
	ssize_t n = recv(fd, p, len, MSG_WAITALL);
	if (n == 0)
		return 0;
	if (n != (ssize_t)len)
		n < 0 ? die("recv") : fail("recv: connection cut mid-message");
	return 1;
}

static void nodelay(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		die("setsockopt(TCP_NODELAY)");
}

/* ---- the source (child) ---- */

struct source {
	const uint8_t *mem;
	uint64_t pages;
	int direct;
	unsigned bg_mbps;           /* the background's pace, 0: full speed */
	uint64_t bg_t0;
	int req, bg;                /* bg: -1 in idle */
	enum variant v;
	atomic_int stop;
	uint8_t *buf;               /* bounce for replies: header + page */
};

/* One message: header then len bytes of p, straight or through buf. */
static void send_msg(const struct source *s, int fd, uint64_t hdr, const uint8_t *p, size_t len,
		     uint8_t *buf)
{
	if (s->direct) {
		struct iovec iov[2] = { { &hdr, 8 }, { (void *)p, len } };
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0)
			die("sendmsg");
		if ((size_t)n < 8)
			fail("sendmsg: short header"); /* never, with a fresh socket buffer */
		send_all(fd, p + (n - 8), len - (size_t)(n - 8));
		return;
	}
	memcpy(buf, &hdr, 8);
	memcpy(buf + 8, p, len);
	send_all(fd, buf, 8 + len);
}

static void send_page(struct source *s, int fd, uint64_t pg)
{
	if (pg >= s->pages)
		fail("source: request out of range");
	send_msg(s, fd, pg, s->mem + pg * PAGE, PAGE, s->buf);
}

/* Requests available now (all of them if block), answered on fd; 1 after STOP. */
static int serve_requests(struct source *s, int fd, int block)
{
	uint64_t req[64];
	ssize_t n = recv(s->req, req, sizeof(req), block ? 0 : MSG_DONTWAIT);
	if (n < 0 && !block && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (n <= 0)
		n < 0 ? die("source: recv") : fail("source: request connection closed");
	while (n % 8) { /* a request cut in two: read its rest */
		ssize_t m = recv(s->req, (uint8_t *)req + n, (size_t)(8 - n % 8), MSG_WAITALL);
		if (m <= 0)
			die("source: recv");
		n += m;
	}
	for (ssize_t i = 0; i < n / 8; i++) {
		if (req[i] == STOP)
			return 1;
		send_page(s, fd, req[i]);
	}
	return 0;
}

/* When background batch seq is due (0: now, at full speed). */
static uint64_t due_ns(const struct source *s, uint64_t seq)
{
	return s->bg_mbps ? s->bg_t0 + seq * BATCH * PAGE * 1000 / s->bg_mbps : 0;
}

/* busy: the background stream, at full speed or --bg-mbps, until STOP. */
static void *bg_sender(void *arg)
{
	struct source *s = arg;
	uint8_t *buf = malloc(8 + BATCH * PAGE);
	if (!buf)
		fail("out of memory");
	pthread_setname_np(pthread_self(), "bare/src-bg");
	s->bg_t0 = now_ns();
	for (uint64_t seq = 0; !atomic_load(&s->stop); seq++) {
		uint64_t first = seq * BATCH % s->pages, due = due_ns(s, seq);
		struct timespec ts = timespec_of(due);
		if (due)
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		send_msg(s, s->bg, BG_FLAG | first, s->mem + first * PAGE, BATCH * PAGE, buf);
	}
	free(buf);
	return NULL;
}

/* shared: the requests until `due` (ns), at least those there now; 1 after STOP. */
static int serve_until(struct source *s, uint64_t due)
{
	struct pollfd fd = { .fd = s->req, .events = POLLIN };
	for (;;) {
		if (serve_requests(s, s->bg, 0))
			return 1;
		uint64_t t = now_ns();
		if (t >= due)
			return 0;
		struct timespec ts = timespec_of(due - t);
		if (ppoll(&fd, 1, &ts, NULL) < 0 && errno != EINTR)
			die("ppoll");
	}
}

/* shared: one thread, one connection; requests go ahead of the next batch. */
static void serve_shared(struct source *s)
{
	int lowat = LOWAT;
	if (setsockopt(s->bg, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat)))
		die("setsockopt(TCP_NOTSENT_LOWAT)");
	uint8_t *buf = malloc(8 + BATCH * PAGE);
	if (!buf)
		fail("out of memory");
	s->bg_t0 = now_ns();
	for (uint64_t seq = 0; !serve_until(s, due_ns(s, seq)); seq++) {
		uint64_t first = seq * BATCH % s->pages;
		send_msg(s, s->bg, BG_FLAG | first, s->mem + first * PAGE, BATCH * PAGE, buf);
	}
	free(buf);
}

static void serve(struct source *s)
{
	pthread_t bg;
	if (s->v == BUSY)
		start(&bg, bg_sender, s); /* not pinned */
	pin(1);
	if (s->v == SHARED) {
		serve_shared(s);
	} else {
		while (!serve_requests(s, s->req, 1))
			;
		atomic_store(&s->stop, 1);
		if (s->v == BUSY)
			pthread_join(bg, NULL);
	}
	pin(0);
	if (s->bg >= 0)
		shutdown(s->bg, SHUT_WR);
	shutdown(s->req, SHUT_WR);
}

static int dial(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		die("connect");
	nodelay(fd);
	return fd;
}

/* Child: write the source, then per variant connect (requests first) and serve. */
static void source(size_t mem, int direct, unsigned bg_mbps, unsigned which, uint16_t port, int ctl)
{
	uint64_t *src = map(mem);
	for (size_t i = 0; i < mem / 8; i++)
		src[i] = word(i);
	uint8_t buf[8 + PAGE];
	pthread_setname_np(pthread_self(), "bare/src");
	for (int v = 0; v < VARIANTS; v++) {
		if (!(which & 1u << v))
			continue;
		char go;
		if (read(ctl, &go, 1) != 1) /* the destination is ready */
			exit(1);
		struct source s = { .mem = (uint8_t *)src, .pages = mem / PAGE, .direct = direct,
				    .bg_mbps = bg_mbps, .req = dial(port),
				    .bg = v == IDLE ? -1 : dial(port),
				    .v = (enum variant)v, .buf = buf };
		serve(&s);
		char c;
		while (recv(s.req, &c, 1, 0) > 0) /* the destination closes when it is done */
			;
		close(s.req);
		if (s.bg >= 0)
			close(s.bg);
	}
	exit(0);
}

/* ---- the destination (parent) ---- */

struct dest {
	uint8_t *mem, *ring;
	uint64_t pages, faults;     /* faults: this variant's */
	int uffd, quit;             /* quit: eventfd, ends bare/fault */
	int req, bg;                /* bg: -1 in idle */
	uint64_t *touch;            /* the pages touched, vCPU i's every vcpus-th from i */
	unsigned vcpus;
	int rcvbuf;                 /* shared: SO_RCVBUF of the stream, 0 to leave it */
	uint8_t *faulted;           /* per page: 0 untouched, 1 to touch, 2 faulted, 3 placed */
	_Atomic uint64_t *t_fault;  /* per page: when bare/fault read its fault */
	uint64_t *lat;              /* per fault, ns, in placement order */
	atomic_uint_fast64_t nlat, nfault, bg_batches;
	atomic_int stopping;        /* STOP sent: the source may close */
	uint64_t *vlat;             /* per touch, ns, vCPU i's every vcpus-th from i */
	int64_t *ring_src;          /* per ring page: the source page it holds, or -1 */
	pthread_barrier_t go;       /* the vCPUs and the timer */
};

struct vcpu {
	struct dest *d;
	unsigned i;
};

static void place(int uffd, void *dst, const void *src, size_t len, int wake)
{
	struct uffdio_copy cp = { .dst = (uint64_t)(uintptr_t)dst, .src = (uint64_t)(uintptr_t)src,
				  .len = len, .mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE };
	while (ioctl(uffd, UFFDIO_COPY, &cp)) {
		if (errno != EAGAIN)
			die("UFFDIO_COPY");
		if (cp.copy > 0) { /* partly done: the rest */
			cp.dst += (uint64_t)cp.copy;
			cp.src += (uint64_t)cp.copy;
			cp.len -= (uint64_t)cp.copy;
		}
		cp.copy = 0;
	}
}

/* A requested page: placed, woken, timed. */
static void got_page(struct dest *d, uint64_t pg, const uint8_t *page)
{
	if (pg >= d->pages || d->faulted[pg] != 2)
		fail("a reply for a page not requested");
	place(d->uffd, d->mem + pg * PAGE, page, PAGE, 1);
	uint64_t t = now_ns();
	d->faulted[pg] = 3;
	d->lat[atomic_fetch_add(&d->nlat, 1)] = t - atomic_load_explicit(&d->t_fault[pg],
									  memory_order_acquire);
}

/* A background batch: into the ring's next slot, its chunk dropped first when entered. */
static void got_batch(struct dest *d, uint64_t first, const uint8_t *pages)
{
	uint64_t seq = atomic_load(&d->bg_batches), slot = seq * BATCH % (RING / PAGE);
	if (slot % (CHUNK / PAGE) == 0) {
		if (madvise(d->ring + slot * PAGE, CHUNK, MADV_DONTNEED))
			die("madvise(MADV_DONTNEED)");
		for (uint64_t i = 0; i < CHUNK / PAGE; i++)
			d->ring_src[slot + i] = -1;
	}
	if (first + BATCH > d->pages)
		fail("a background batch out of range");
	place(d->uffd, d->ring + slot * PAGE, pages, BATCH * PAGE, 0);
	for (uint64_t i = 0; i < BATCH; i++)
		d->ring_src[slot + i] = (int64_t)(first + i);
	atomic_store(&d->bg_batches, seq + 1);
}

struct conn {
	struct dest *d;
	int fd;
	const char *name;
	int replies;                /* carries the replies: pinned with --pin */
};

/* bare/recv, bare/bg: read framed messages until the source closes. */
static void *receiver(void *arg)
{
	struct conn *c = arg;
	uint8_t *buf = malloc(BATCH * PAGE);
	uint64_t hdr;
	if (!buf)
		fail("out of memory");
	pthread_setname_np(pthread_self(), c->name);
	if (c->replies)
		pin(1);
	for (;;) {
		if (!recv_all(c->fd, &hdr, 8)) {
			if (!atomic_load(&c->d->stopping))
				fail("the source closed the connection");
			break;
		}
		int bg = !!(hdr & BG_FLAG);
		if (!recv_all(c->fd, buf, bg ? BATCH * PAGE : PAGE))
			fail("recv: connection cut mid-message");
		if (bg)
			got_batch(c->d, hdr & ~BG_FLAG, buf);
		else
			got_page(c->d, hdr, buf);
	}
	free(buf);
	return NULL;
}

/* One batch of fault messages: each a page to request. */
static void on_faults(struct dest *d, const struct uffd_msg *msg, size_t n, uint64_t t)
{
	uint64_t req[64];
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (msg[i].event != UFFD_EVENT_PAGEFAULT)
			fail("an unexpected userfaultfd event");
		uintptr_t a = (uintptr_t)msg[i].arg.pagefault.address;
		uint64_t pg = (a - (uintptr_t)d->mem) / PAGE;
		if (a < (uintptr_t)d->mem || pg >= d->pages || d->faulted[pg] != 1)
			fail("a fault on a page not touched, or a second fault on one");
		d->faulted[pg] = 2;
		atomic_store_explicit(&d->t_fault[pg], t, memory_order_release);
		req[k++] = pg;
	}
	atomic_fetch_add(&d->nfault, k);
	send_all(d->req, req, k * 8);
}

/* bare/fault: poll, read, request, until told to quit. */
static void *fault_thread(void *arg)
{
	struct dest *d = arg;
	struct pollfd fds[2] = { { .fd = d->uffd, .events = POLLIN },
				 { .fd = d->quit, .events = POLLIN } };
	struct uffd_msg msg[64];
	pthread_setname_np(pthread_self(), "bare/fault");
	pin(1);
	for (;;) {
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			die("poll");
		if (fds[1].revents)
			return NULL;
		ssize_t n = read(d->uffd, msg, sizeof(msg));
		uint64_t t = now_ns();
		if (n < 0 && errno == EAGAIN)
			continue;
		if (n < 0 || n % sizeof(msg[0]))
			die("read(userfaultfd)");
		on_faults(d, msg, (size_t)n / sizeof(msg[0]), t);
	}
}

/* A vCPU: reads one byte of each of its pages, timing each read. */
static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct dest *d = v->d;
	char name[16];
	snprintf(name, sizeof(name), "bare/vcpu%u", v->i);
	pthread_setname_np(pthread_self(), name);
	pthread_barrier_wait(&d->go);
	for (uint64_t k = v->i; k < d->faults; k += d->vcpus) {
		const volatile uint8_t *p = d->mem + d->touch[k] * PAGE;
		uint64_t t0 = now_ns();
		(void)*p;
		d->vlat[k] = now_ns() - t0;
	}
	return NULL;
}

static uint64_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33 ^ *s;
}

/* FAULTS distinct pages in random order; every page dropped, to fault. */
static void choose(struct dest *d, uint64_t seed)
{
	uint64_t *all = malloc(d->pages * sizeof(*all));
	if (!all)
		fail("out of memory");
	for (uint64_t i = 0; i < d->pages; i++)
		all[i] = i;
	for (uint64_t i = d->pages - 1; i > 0; i--) {
		uint64_t j = rnd(&seed) % (i + 1), t = all[i];
		all[i] = all[j];
		all[j] = t;
	}
	memset(d->faulted, 0, d->pages);
	for (uint64_t k = 0; k < d->faults; k++) {
		d->touch[k] = all[k];
		d->faulted[all[k]] = 1;
	}
	free(all);
	if (madvise(d->mem, d->pages * PAGE, MADV_DONTNEED))
		die("madvise(MADV_DONTNEED)");
	atomic_store(&d->nlat, 0);
	atomic_store(&d->nfault, 0);
	atomic_store(&d->bg_batches, 0);
	for (uint64_t i = 0; i < RING / PAGE; i++)
		d->ring_src[i] = -1;
}

/* Outside the timing: each touched page faulted once and holds the source's; the ring too. */
static void check(struct dest *d, const char *name)
{
	if (atomic_load(&d->nfault) != d->faults || atomic_load(&d->nlat) != d->faults) {
		fprintf(stderr, "bench-bare-fault: %s: %llu faults, %llu placed, %llu touched\n",
			name,
			(unsigned long long)atomic_load(&d->nfault),
			(unsigned long long)atomic_load(&d->nlat), (unsigned long long)d->faults);
		exit(1);
	}
	for (uint64_t k = 0; k < d->faults; k++) {
		uint64_t pg = d->touch[k];
		if (d->faulted[pg] != 3 || !page_ok(d->mem + pg * PAGE, pg)) {
			fprintf(stderr, "bench-bare-fault: %s: page %llu differs\n", name,
				(unsigned long long)pg);
			exit(1);
		}
	}
	for (uint64_t i = 0; i < RING / PAGE; i++)
		if (d->ring_src[i] >= 0 && !page_ok(d->ring + i * PAGE, (uint64_t)d->ring_src[i])) {
			fprintf(stderr, "bench-bare-fault: %s: background page %llu differs\n",
				name, (unsigned long long)i);
			exit(1);
		}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest rank of a sorted array, in us. */
static double pct_us(const uint64_t *v, uint64_t n, unsigned p)
{
	uint64_t r = (n * p + 99) / 100;
	return v[r ? r - 1 : 0] / 1e3;
}

static void report(struct dest *d, int v, double secs, double bg_mbps, int first)
{
	uint64_t n = d->faults;
	qsort(d->lat, n, sizeof(*d->lat), cmp_u64);
	qsort(d->vlat, n, sizeof(*d->vlat), cmp_u64);
	printf("%s\"%s\": {\"faults\": %llu, \"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
	       "\"vcpu_p50_us\": %.1f, \"vcpu_p99_us\": %.1f, \"seconds\": %.3f",
	       first ? "" : ", ", variant_names[v], (unsigned long long)n, pct_us(d->lat, n, 50),
	       pct_us(d->lat, n, 99), d->lat[n - 1] / 1e3, pct_us(d->vlat, n, 50),
	       pct_us(d->vlat, n, 99), secs);
	if (v != IDLE)
		printf(", \"background_MBps\": %.0f", bg_mbps);
	printf(", \"checked\": true}");
	fflush(stdout);
}

/* The vCPUs' run, timed; after the background is going, if any (b0: its batches then). */
static double run_vcpus(struct dest *d, uint64_t *b0)
{
	pthread_t t[MAX_VCPUS];
	struct vcpu v[MAX_VCPUS];
	if ((errno = pthread_barrier_init(&d->go, NULL, d->vcpus + 1)))
		die("pthread_barrier_init");
	for (unsigned i = 0; i < d->vcpus; i++) {
		v[i] = (struct vcpu){ d, i };
		start(&t[i], vcpu_thread, &v[i]);
	}
	while (d->bg >= 0 && atomic_load(&d->bg_batches) < WARMUP_BATCHES)
		usleep(1000);
	uint64_t t0 = now_ns();
	*b0 = atomic_load(&d->bg_batches);
	pthread_barrier_wait(&d->go);
	for (unsigned i = 0; i < d->vcpus; i++)
		pthread_join(t[i], NULL);
	uint64_t t1 = now_ns();
	pthread_barrier_destroy(&d->go);
	return (t1 - t0) / 1e9;
}

/* The next connection, or exit 1 if the source has gone (ctl hung up). */
static int accept_one(int ls, int ctl)
{
	struct pollfd fds[2] = { { .fd = ls, .events = POLLIN }, { .fd = ctl, .events = POLLIN } };
	while (poll(fds, 2, -1) < 0)
		if (errno != EINTR)
			die("poll");
	if (fds[1].revents)
		fail("the source failed");
	int fd = accept(ls, NULL, NULL);
	if (fd < 0)
		die("accept");
	nodelay(fd);
	return fd;
}

/* One variant on the destination: accept, run, stop the source, check, print. */
static void variant(struct dest *d, int ls, int ctl, int v, uint64_t faults, int first)
{
	d->faults = faults;
	choose(d, 0x5eed + (uint64_t)v);
	atomic_store(&d->stopping, 0);
	if (send(ctl, "g", 1, MSG_NOSIGNAL) != 1)
		fail("the source failed");
	d->req = accept_one(ls, ctl); /* accepted in connection order: requests first */
	d->bg = v == IDLE ? -1 : accept_one(ls, ctl);
	if (v == SHARED && d->rcvbuf && setsockopt(d->bg, SOL_SOCKET, SO_RCVBUF, &d->rcvbuf,
						  sizeof(d->rcvbuf)))
		die("setsockopt(SO_RCVBUF)");
	struct conn cr = { d, d->req, "bare/recv", 1 }, cb = { d, d->bg, "bare/bg", v == SHARED };
	pthread_t tf, tr, tb;
	start(&tf, fault_thread, d);
	if (v != SHARED)
		start(&tr, receiver, &cr);
	if (v != IDLE)
		start(&tb, receiver, &cb);
	uint64_t b0;
	double secs = run_vcpus(d, &b0);
	double mbps = (atomic_load(&d->bg_batches) - b0) * BATCH * PAGE / 1e6 / secs;
	uint64_t stop = STOP, one = 1;
	atomic_store(&d->stopping, 1);
	send_all(d->req, &stop, 8);
	if (v != SHARED)
		pthread_join(tr, NULL);
	if (v != IDLE)
		pthread_join(tb, NULL);
	if (write(d->quit, &one, 8) != 8)
		die("eventfd");
	pthread_join(tf, NULL);
	if (read(d->quit, &one, 8) != 8)
		die("eventfd");
	close(d->req);
	if (d->bg >= 0)
		close(d->bg);
	check(d, variant_names[v]);
	report(d, v, secs, mbps, first);
}

/* The userfaultfd over mem and ring (missing pages), or exit 1 saying why not. */
static int open_uffd(struct dest *d)
{
#ifdef UFFD_USER_MODE_ONLY
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0 && errno == EINVAL) /* before 5.11 */
#else
	int fd = -1;
#endif
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		die("userfaultfd (unavailable: kernel without it, or not permitted)");
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(fd, UFFDIO_API, &api))
		die("UFFDIO_API");
	void *const at[2] = { d->mem, d->ring };
	const size_t len[2] = { d->pages * PAGE, RING };
	for (int i = 0; i < 2; i++) {
		struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)at[i], len[i] },
					       .mode = UFFDIO_REGISTER_MODE_MISSING };
		if (ioctl(fd, UFFDIO_REGISTER, &reg))
			die("UFFDIO_REGISTER");
		if (!(reg.ioctls & (1ull << _UFFDIO_COPY)))
			fail("UFFDIO_COPY not supported on anonymous memory");
	}
	return fd;
}

static void setup(struct dest *d)
{
	d->mem = map(d->pages * PAGE);
	d->ring = map(RING);
	d->touch = malloc(d->faults * sizeof(*d->touch));
	d->faulted = malloc(d->pages);
	d->t_fault = calloc(d->pages, sizeof(*d->t_fault));
	d->lat = malloc(d->faults * sizeof(*d->lat));
	d->vlat = malloc(d->faults * sizeof(*d->vlat));
	d->ring_src = malloc(RING / PAGE * sizeof(*d->ring_src));
	if (!d->touch || !d->faulted || !d->t_fault || !d->lat || !d->vlat || !d->ring_src)
		fail("out of memory");
	d->uffd = open_uffd(d);
	d->quit = eventfd(0, EFD_CLOEXEC);
	if (d->quit < 0)
		die("eventfd");
}

/* A comma-separated list of variant names as a mask; bit VARIANTS when one is unknown. */
static unsigned parse_variants(char *s)
{
	unsigned mask = 0;
	for (char *save, *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int v = 0;
		while (v < VARIANTS && strcmp(t, variant_names[v]))
			v++;
		mask |= 1u << v;
	}
	return mask;
}

static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	int shift = *end == 'G' ? 30 : *end == 'M' ? 20 : *end == 'K' ? 10 : 0;
	return (size_t)v << shift;
}

struct opts {
	size_t mem;
	uint64_t faults, shared_faults;
	unsigned which, bg_mbps;
	int direct;
};

/* The options into o and d (vcpus, rcvbuf, pages, faults to allocate for); exit 2 if wrong. */
static void parse(int argc, char **argv, struct opts *o, struct dest *d)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--direct")) {
			o->direct = 1;
			continue;
		}
		if (!val)
			a = "?";
		else
			i++;
		if (!strcmp(a, "--mem"))
			o->mem = parse_size(val);
		else if (!strcmp(a, "--vcpus"))
			d->vcpus = (unsigned)atoi(val);
		else if (!strcmp(a, "--faults"))
			o->faults = strtoull(val, NULL, 10);
		else if (!strcmp(a, "--shared-faults"))
			o->shared_faults = strtoull(val, NULL, 10);
		else if (!strcmp(a, "--variants"))
			o->which = parse_variants(argv[i]);
		else if (!strcmp(a, "--rcvbuf"))
			d->rcvbuf = (int)parse_size(val);
		else if (!strcmp(a, "--bg-mbps"))
			o->bg_mbps = (unsigned)atoi(val);
		else if (!strcmp(a, "--pin"))
			pin_cpu = atoi(val);
		else {
			fprintf(stderr, "usage: %s\n", USAGE);
			exit(2);
		}
	}
	d->pages = o->mem / PAGE;
	o->which = o->which ? o->which : (1u << VARIANTS) - 1;
	o->shared_faults = o->shared_faults ? o->shared_faults : (o->faults + 9) / 10;
	d->faults = o->faults > o->shared_faults ? o->faults : o->shared_faults; /* to allocate */
	if (sched_getaffinity(0, sizeof(all_cpus), &all_cpus))
		die("sched_getaffinity");
	if (pin_cpu >= CPU_SETSIZE || (pin_cpu >= 0 && !CPU_ISSET(pin_cpu, &all_cpus))) {
		fprintf(stderr, "bench-bare-fault: --pin %d: not a CPU this process may run on\n",
			pin_cpu);
		exit(2);
	}
	if (!d->vcpus || d->vcpus > MAX_VCPUS || o->mem % PAGE || d->pages < BATCH || !o->faults ||
	    d->faults > d->pages || o->which >= 1u << VARIANTS) {
		fprintf(stderr, "bench-bare-fault: vcpus 1..%d, mem a multiple of 4 KiB (64 KiB "
				"at least), faults 1..mem/4 KiB, variants of idle,busy,shared\n",
			MAX_VCPUS);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	struct opts o = { .mem = 256ul << 20, .faults = 20000 };
	struct dest d = { .vcpus = 2, .rcvbuf = LOWAT };
	parse(argc, argv, &o, &d);
	int ls = socket(AF_INET, SOCK_STREAM, 0), sp[2];
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 4) ||
	    getsockname(ls, (struct sockaddr *)&sa, &sl) || socketpair(AF_UNIX, SOCK_STREAM, 0, sp))
		die("socket");
	pid_t pid = fork(); /* before the destination maps anything: nothing shared */
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sp[0]);
		close(ls);
		source(o.mem, o.direct, o.bg_mbps, o.which, ntohs(sa.sin_port), sp[1]);
	}
	close(sp[1]);
	setup(&d);
	printf("{\"benchmark\": \"bare-fault\", \"mem_bytes\": %zu, \"vcpus\": %u, "
	       "\"source_send\": \"%s\", \"shared_notsent_lowat\": %d, \"shared_rcvbuf\": %d, "
	       "\"background_pace_MBps\": %u, \"pin_cpu\": %d, ",
	       o.mem, d.vcpus, o.direct ? "direct" : "bounce", LOWAT, d.rcvbuf, o.bg_mbps, pin_cpu);
	for (int v = 0, first = 1; v < VARIANTS; v++)
		if (o.which & 1u << v) {
			variant(&d, ls, sp[0], v, v == SHARED ? o.shared_faults : o.faults, first);
			first = 0;
		}
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("the source failed");
	printf("}\n");
	return 0;
}
