/* SPDX-License-Identifier: MIT */
/*
 * tcp: and unix: transports (see transport.h). Plain blocking sockets: each
 * migration channel is owned by one thread, and cancellation is a
 * shutdown(2) from another thread, which wakes any blocked call.
 * A unix listener never takes over a path: only a missing one or a stale
 * socket (connect gets ECONNREFUSED) is bound; removing the file when done
 * is the caller's (it knows when the listener's life ends; ferry_sock_file).
 * The same code serves migration channels and, through ferry/transport.h,
 * control planes such as `ferry host`'s QMP listeners and client.
 *
 * Thread: any; every object (fd, ferry_sock_file) is its caller's.
 */
#include "transport/transport.h"
#include "util/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

struct target {
	int unix_;
	char host[256];
	char port[16];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static int parse(const char *uri, struct target *t, ferry_error *err)
{
	memset(t, 0, sizeof(*t));
	if (!uri) {
		return ferry__error_set(err, -EINVAL, "no URI given");
	}
	if (!strncmp(uri, "unix:", 5)) {
		const char *p = uri + 5;
		if (!*p || strlen(p) >= sizeof(t->path)) {
			return ferry__error_set(err, -EINVAL,
						"invalid unix socket path in '%s'", uri);
		}
		t->unix_ = 1;
		strcpy(t->path, p);
		return 0;
	}
	if (strncmp(uri, "tcp:", 4)) {
		return ferry__error_set(err, -EINVAL,
					"unsupported migration URI '%s' (expected tcp:HOST:PORT or unix:PATH)",
					uri);
	}
	const char *h = uri + 4, *colon;
	size_t hl;
	if (*h == '[') {
		const char *e = strchr(h, ']');
		if (!e || e[1] != ':') {
			return ferry__error_set(err, -EINVAL, "invalid IPv6 address in '%s'", uri);
		}
		hl = (size_t)(e - h - 1);
		h++;
		colon = e + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon) {
			return ferry__error_set(err, -EINVAL,
						"missing port in '%s' (expected tcp:HOST:PORT)",
						uri);
		}
		hl = (size_t)(colon - h);
	}
	const char *port = colon + 1;
	char *end;
	long pn = strtol(port, &end, 10);
	if (!*port || *end || pn < 0 || pn > 65535 || hl >= sizeof(t->host)) {
		return ferry__error_set(err, -EINVAL, "invalid port in '%s'", uri);
	}
	memcpy(t->host, h, hl);
	t->host[hl] = 0;
	snprintf(t->port, sizeof(t->port), "%ld", pn);
	return 0;
}

int ferry__uri_check(const char *uri, ferry_error *err)
{
	struct target t;
	return parse(uri, &t, err);
}

int ferry__uri_host(const char *uri, char *buf, size_t len)
{
	struct target t;
	ferry_error e = { 0 };
	int r = parse(uri, &t, &e);
	if (!r)
		snprintf(buf, len, "%s", t.unix_ ? "" : t.host);
	return r;
}

void ferry__sock_tune(int fd)
{
	int one = 1;
	/* Return-path messages are small and latency-sensitive. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/*
	 * Buffer sizes are left to the kernel's autotuning: fixed 4 and 16 MiB
	 * buffers measured no faster on loopback (2 GiB in 552-738 ms either way).
	 */
}

uint64_t ferry__sock_outq(int fd)
{
	int q = 0;
	/* TCP: not yet acknowledged; unix: not yet read by the peer. */
	if (fd < 0 || ioctl(fd, SIOCOUTQ, &q) < 0 || q < 0)
		return 0;
	return (uint64_t)q;
}

void ferry__sock_set_peer_timeout(int fd, unsigned ms)
{
	int dom = 0;
	socklen_t dl = sizeof(dom);
	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) ||
	    (dom != AF_INET && dom != AF_INET6))
		return;
	/*
	 * Data unacknowledged for ms, or an idle connection whose peer stopped
	 * answering keepalive probes (the first after ms / 3, at least 1 s):
	 * the peer host is gone, -ETIMEDOUT. A peer that is up but does not
	 * read keeps answering, so this is no stall detector.
	 */
	unsigned ut = ms;
	int on = ms ? 1 : 0, idle = ms / 3000 ? (int)(ms / 3000) : 1, intvl = 1, cnt = 3;
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	if (on) {
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	}
}

void ferry__sock_set_read_timeout(int fd, unsigned ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void ferry__sock_set_link_timeout(int fd, unsigned ms)
{
	/*
	 * Half the timeout per blocking call: detection may take two calls
	 * (a partial read, then the wait for the rest).
	 */
	unsigned half = ms / 2;
	struct timeval tv = {.tv_sec = half / 1000, .tv_usec = (long)(half % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	ferry__sock_set_peer_timeout(fd, ms);
}

static int unix_addr(const struct target *t, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	strcpy(sa->sun_path, t->path);
	return 0;
}

/* getaddrinfo for a tcp: target; passive = for listening (empty host = any). */
static int resolve(const struct target *t, bool passive, struct addrinfo **ai, ferry_error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = passive ? AI_PASSIVE : 0 };
	int g = getaddrinfo(passive && !t->host[0] ? NULL : t->host, t->port, &hints, ai);
	if (g)
		return ferry__error_set(err, -EHOSTUNREACH, "cannot resolve '%s': %s", t->host,
					gai_strerror(g));
	return 0;
}

int ferry__sock_bound(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV];
	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -errno;
	if (ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *su = (const struct sockaddr_un *)&ss;
		snprintf(buf, len, "unix:%.*s", (int)(sl - offsetof(struct sockaddr_un, sun_path)),
			 su->sun_path);
		return 0;
	}
	int g = getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			    NI_NUMERICHOST | NI_NUMERICSERV);
	if (g)
		return -EINVAL;
	snprintf(buf, len, ss.ss_family == AF_INET6 ? "tcp:[%s]:%s" : "tcp:%s:%s", host, port);
	return 0;
}

/*
 * Prepares a unix socket path for bind(): nothing there is fine; a socket
 * nobody answers on is a stale file and removed; a live server's socket
 * (-EADDRINUSE) and any other kind of file (-ENOTSOCK) are refused and left
 * alone. Messages: "cannot listen on 'URI': WHY".
 */
static int claim_path(const char *uri, const struct sockaddr_un *sa, ferry_error *err)
{
	struct stat st;
	const char *path = sa->sun_path;
	int r;
	if (lstat(path, &st)) {
		if (errno == ENOENT)
			return 0;
		r = -errno;
		return ferry__error_set(err, r,
					"cannot listen on '%s': %s: %s", uri, path, strerror(-r));
	}
	if (!S_ISSOCK(st.st_mode)) {
		return ferry__error_set(err, -ENOTSOCK,
					"cannot listen on '%s': %s exists and is not a socket",
					uri, path);
	}
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		r = -errno;
		return ferry__error_set(err, r, "socket: %s", strerror(-r));
	}
	int c = connect(s, (const struct sockaddr *)sa, sizeof(*sa)), e = errno;
	close(s);
	if (!c || e == EAGAIN) { /* EAGAIN: a live server with a full backlog */
		return ferry__error_set(err, -EADDRINUSE,
					"cannot listen on '%s': %s is in use by another server",
					uri, path);
	}
	if (e != ECONNREFUSED) {
		return ferry__error_set(err, -e,
					"cannot listen on '%s': %s: %s", uri, path, strerror(e));
	}
	if (unlink(path) && errno != ENOENT) { /* stale: its server is gone */
		r = -errno;
		return ferry__error_set(err, r,
					"cannot listen on '%s': cannot remove the stale socket %s: %s",
					uri, path, strerror(-r));
	}
	return 0;
}

/* Binds and listens on a claimed unix path; a failed listen removes the file. */
static int listen_unix(const char *uri, const struct sockaddr_un *sa, int *fd, ferry_error *err)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), r;
	if (s < 0) {
		r = -errno;
		return ferry__error_set(err, r, "socket: %s", strerror(-r));
	}
	if (bind(s, (const struct sockaddr *)sa, sizeof(*sa))) {
		r = -errno;
		close(s);
		return ferry__error_set(err, r, "cannot listen on '%s': %s", uri, strerror(-r));
	}
	if (listen(s, 16)) {
		r = -errno;
		close(s);
		unlink(sa->sun_path); /* ours: bind just created it */
		return ferry__error_set(err, r, "cannot listen on '%s': %s", uri, strerror(-r));
	}
	*fd = s;
	return 0;
}

int ferry__sock_listen(const char *uri, int *fd, ferry_error *err)
{
	struct target t;
	int r = parse(uri, &t, err);
	if (r)
		return r;
	if (t.unix_) {
		struct sockaddr_un sa;
		unix_addr(&t, &sa);
		if ((r = claim_path(uri, &sa, err)))
			return r;
		return listen_unix(uri, &sa, fd, err);
	}
	struct addrinfo *ai, *a;
	if ((r = resolve(&t, true, &ai, err)))
		return r;
	r = -EADDRNOTAVAIL;
	for (a = ai; a; a = a->ai_next) {
		int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (s < 0) {
			r = -errno;
			continue;
		}
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, a->ai_addr, a->ai_addrlen) == 0 && listen(s, 16) == 0) {
			freeaddrinfo(ai);
			*fd = s;
			return 0;
		}
		r = -errno;
		close(s);
	}
	freeaddrinfo(ai);
	return ferry__error_set(err, r, "cannot listen on '%s': %s", uri, strerror(-r));
}

/*
 * connect(2) that a cancel flag can interrupt: non-blocking connect, then
 * poll in 100 ms slices checking *cancel. A unix socket whose listener's
 * backlog is full answers EAGAIN: retried every 10 ms. Returns 0, -ECANCELED
 * or the connect error; the socket is blocking again on success.
 */
static int connect_cancellable(int s, const struct sockaddr *sa, socklen_t len,
			       const atomic_bool *cancel)
{
	int fl = fcntl(s, F_GETFL);
	if (fl < 0 || fcntl(s, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	int r;
	for (;;) {
		if (cancel && atomic_load(cancel))
			return -ECANCELED;
		if (connect(s, sa, len) == 0) {
			r = 0;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			struct timespec ts = { 0, 10000000L };
			nanosleep(&ts, NULL);
			continue;
		}
		if (errno != EINPROGRESS)
			return -errno;
		for (;;) {
			if (cancel && atomic_load(cancel))
				return -ECANCELED;
			struct pollfd p = { .fd = s, .events = POLLOUT };
			int n = poll(&p, 1, 100);
			if (n < 0 && errno != EINTR)
				return -errno;
			if (n > 0)
				break;
		}
		int e = 0;
		socklen_t el = sizeof(e);
		if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
			return -errno;
		r = -e;
		break;
	}
	if (r == 0 && fcntl(s, F_SETFL, fl) < 0)
		r = -errno;
	return r;
}

int ferry__sock_connect(const char *uri, int *fd, const atomic_bool *cancel, ferry_error *err)
{
	struct target t;
	int r = parse(uri, &t, err);
	if (r)
		return r;
	if (t.unix_) {
		struct sockaddr_un sa;
		unix_addr(&t, &sa);
		int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0) {
			r = -errno;
			return ferry__error_set(err, r, "socket: %s", strerror(-r));
		}
		if ((r = connect_cancellable(s, (struct sockaddr *)&sa, sizeof(sa), cancel))) {
			close(s);
			return ferry__error_set(err, r,
						"cannot connect to '%s': %s", uri, strerror(-r));
		}
		*fd = s;
		return 0;
	}
	struct addrinfo *ai, *a;
	if ((r = resolve(&t, false, &ai, err)))
		return r;
	r = -ECONNREFUSED;
	for (a = ai; a; a = a->ai_next) {
		int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (s < 0) {
			r = -errno;
			continue;
		}
		if ((r = connect_cancellable(s, a->ai_addr, a->ai_addrlen, cancel)) == 0) {
			freeaddrinfo(ai);
			ferry__sock_tune(s);
			*fd = s;
			return 0;
		}
		close(s);
		if (r == -ECANCELED)
			break;
	}
	freeaddrinfo(ai);
	return ferry__error_set(err, r, "cannot connect to '%s': %s", uri, strerror(-r));
}

int ferry__sock_accept(int lfd, int *fd)
{
	for (;;) {
		int s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (s >= 0) {
			ferry__sock_tune(s);
			*fd = s;
			return 0;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		return -errno;
	}
}

int ferry__sock_accept_by(int lfd, uint64_t deadline_ns, int peer_fd, int *fd)
{
	for (;;) {
		uint64_t now = ferry__now_ns();
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		struct pollfd p[2] = { { .fd = lfd, .events = POLLIN },
				       { .fd = peer_fd, .events = POLLRDHUP } };
		int n = poll(p, 2, (int)((deadline_ns - now) / 1000000 + 1));
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n <= 0)
			continue;
		if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			return -EINVAL; /* shut down: cancelled */
		if (p[0].revents & POLLIN)
			return ferry__sock_accept(lfd, fd);
		if (p[1].revents)
			return -EPIPE;
	}
}

/* ------------------------------------------------------------------ */
/* The public face (ferry/transport.h), for control planes.            */

static int sock_listen_flags(const char *addr, unsigned flags, int *fd, ferry_error *err)
{
	if (flags & ~FERRY_SOCK_NONBLOCK)
		return ferry__error_set(err, -EINVAL, "unknown flags 0x%x", flags);
	int s, r = ferry__sock_listen(addr, &s, err);
	if (r)
		return r;
	if ((flags & FERRY_SOCK_NONBLOCK) && fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK)) {
		r = -errno;
		close(s);
		return ferry__error_set(err, r, "cannot listen on '%s': %s", addr, strerror(-r));
	}
	*fd = s;
	return 0;
}

int ferry_sock_listen(const char *addr, unsigned flags, int *fd, char *err, size_t err_len)
{
	ferry_error e = { 0 };
	return ferry__error_out(sock_listen_flags(addr, flags, fd, &e), &e, err, err_len);
}

int ferry_sock_connect(const char *addr, int *fd, char *err, size_t err_len)
{
	ferry_error e = { 0 };
	return ferry__error_out(ferry__sock_connect(addr, fd, NULL, &e), &e, err, err_len);
}

int ferry_sock_bound(int fd, char *buf, size_t len)
{
	return ferry__sock_bound(fd, buf, len);
}

void ferry_sock_file_note(ferry_sock_file *f, const char *addr)
{
	struct stat st;
	memset(f, 0, sizeof(*f));
	if (strncmp(addr, "unix:", 5))
		return;
	const char *path = addr + 5;
	if (strlen(path) >= sizeof(f->path) || lstat(path, &st) || !S_ISSOCK(st.st_mode))
		return;
	strcpy(f->path, path);
	f->dev = st.st_dev;
	f->ino = st.st_ino;
}

void ferry_sock_file_remove(ferry_sock_file *f)
{
	struct stat st;
	if (f->path[0] && !lstat(f->path, &st) && st.st_dev == f->dev && st.st_ino == f->ino)
		unlink(f->path);
	f->path[0] = 0;
}

static int send_iov(int fd, struct iovec *iov, int cnt, int flags, uint64_t *sent)
{
	while (cnt > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | flags);
		if (n < 0 && errno == ENOTSOCK) /* a file (postcopy package) */
			n = writev(fd, iov, cnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (sent)
			*sent += (uint64_t)n;
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

int ferry__sock_send_all(int fd, struct iovec *iov, int cnt, uint64_t *sent)
{
	return send_iov(fd, iov, cnt, 0, sent);
}

/* One piece of the stage; more: MSG_MORE (another piece follows at once). */
static int send_stage(int fd, uint8_t *stage, size_t len, bool more, uint64_t *sent)
{
	struct iovec one = { stage, len };
	return send_iov(fd, &one, 1, more ? MSG_MORE : 0, sent);
}

int ferry__sock_send_staged(int fd, const struct iovec *iov, int cnt, uint8_t *stage, size_t cap,
			    uint64_t *sent)
{
	size_t fill = 0;
	for (int i = 0; i < cnt; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;
		while (len) {
			size_t k = len < cap - fill ? len : cap - fill;
			memcpy(stage + fill, p, k);
			fill += k;
			p += k;
			len -= k;
			if (fill < cap)
				continue;
			int r = send_stage(fd, stage, fill, len || i + 1 < cnt, sent);
			if (r)
				return r;
			fill = 0;
		}
	}
	return fill ? send_stage(fd, stage, fill, false, sent) : 0;
}

int ferry__pipe_open(int pipefd[2])
{
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	/* 1 MiB holds a whole multifd packet (fewer calls); 64 KiB works too. */
	(void)fcntl(pipefd[1], F_SETPIPE_SZ, 1 << 20);
	return 0;
}

/* vmsplice + splice of iov[0..cnt) (all by reference). */
static int splice_iov(int fd, const int pipefd[2], struct iovec *iov, int cnt, bool more,
		      uint64_t *sent)
{
	while (cnt > 0) {
		ssize_t n = vmsplice(pipefd[1], iov, (unsigned long)cnt, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* Consume what the pipe took before draining it. */
		size_t left = (size_t)n;
		while (cnt > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + left;
			iov->iov_len -= left;
		}
		unsigned flags = SPLICE_F_MOVE | (more || cnt > 0 ? SPLICE_F_MORE : 0);
		for (size_t todo = (size_t)n; todo;) {
			ssize_t w = splice(pipefd[0], NULL, fd, NULL, todo, flags);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return -errno;
			if (w == 0)
				return -EPIPE;
			todo -= (size_t)w;
			if (sent)
				*sent += (uint64_t)w;
		}
	}
	return 0;
}

int ferry__sock_send_ref(int fd, const int pipefd[2], struct iovec *iov, const uint8_t *ref,
			 int cnt, uint64_t *sent)
{
	for (int i = 0; i < cnt;) {
		int j = i + 1;
		while (j < cnt && !ref[j] == !ref[i])
			j++;
		int r = ref[i] ? splice_iov(fd, pipefd, iov + i, j - i, j < cnt, sent)
			       : send_iov(fd, iov + i, j - i, j < cnt ? MSG_MORE : 0, sent);
		if (r)
			return r;
		i = j;
	}
	return 0;
}
