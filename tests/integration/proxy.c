/* SPDX-License-Identifier: MIT */
/*
 * Fault-injecting forwarder (see proxy.h). One acceptor thread, two pump
 * threads per connection (one per direction). Settings are read by the
 * pumps under the proxy's lock before each chunk.
 */
#include "proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAXC 32

struct conn {
	int a, b; /* accepted side, target side */
	uint64_t fwd;
	unsigned delay_us;
	uint64_t cut_after; /* 0 = never */
	uint64_t flip_at;   /* forward offset of the byte to flip */
	uint8_t flip_mask;  /* 0 = none (or done) */
	bool cut;
	bool frozen; /* hold everything: a silent link */
	bool frozen_fwd; /* hold what goes toward the target only */
	int rec;     /* the forward direction's record file, or -1 */
	int rec_back; /* the backward direction's (stamped chunks), or -1 */
	proxy_back_fn *back_fn; /* rewrites the backward direction, or NULL */
	void *back_opaque;
	pthread_t t[2];
	bool started;
};

struct proxy {
	int lfd;
	char target[108];
	pthread_t acceptor;
	pthread_mutex_t lock;
	struct conn c[MAXC];
	unsigned n;
	bool stop;
	char rec[200]; /* record prefix, or empty */
};

struct pump {
	proxy *p;
	unsigned k;
	int from, to;
	bool forward; /* accepted -> target */
};

static int unix_connect(const char *path)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
		return s;
	if (s >= 0)
		close(s);
	return -1;
}

static void cut(proxy *p, unsigned k)
{
	struct conn *c = &p->c[k];
	if (!c->cut) {
		c->cut = true;
		shutdown(c->a, SHUT_RDWR);
		shutdown(c->b, SHUT_RDWR);
	}
}

/*
 * Appends a backward chunk to c's record: be32 forward bytes so far (what
 * the target had been sent when it wrote this), be16 length, the bytes;
 * a chunk over 65535 bytes as two. Thread: the backward pump.
 */
static bool record_back(struct conn *c, uint64_t fwd, const char *buf, size_t n)
{
	uint32_t at = fwd > UINT32_MAX ? UINT32_MAX : (uint32_t)fwd;
	for (size_t o = 0; o < n;) {
		size_t k = n - o > 65535 ? 65535 : n - o;
		uint8_t h[6] = { (uint8_t)(at >> 24), (uint8_t)(at >> 16), (uint8_t)(at >> 8), (uint8_t)at,
				 (uint8_t)(k >> 8), (uint8_t)k };
		if (write(c->rec_back, h, 6) != 6 || write(c->rec_back, buf + o, k) != (ssize_t)k)
			return false;
		o += k;
	}
	return true;
}

static void *pump_main(void *arg)
{
	struct pump *u = arg;
	proxy *p = u->p;
	char buf[65536 + PROXY_BACK_SLACK]; /* a chunk, and what a backward fn held back */
	bool gone = false; /* the target stopped taking bytes */
	for (;;) {
		ssize_t n = read(u->from, buf, sizeof(buf) - PROXY_BACK_SLACK);
		if (n <= 0)
			break;
		pthread_mutex_lock(&p->lock);
		struct conn *c = &p->c[u->k];
		unsigned d = u->forward ? c->delay_us : 0;
		while ((c->frozen || (u->forward && c->frozen_fwd)) && !c->cut) {
			pthread_mutex_unlock(&p->lock);
			usleep(1000);
			pthread_mutex_lock(&p->lock);
		}
		bool dead = c->cut;
		if (u->forward) {
			if (c->flip_mask && c->flip_at >= c->fwd && c->flip_at < c->fwd + (uint64_t)n) {
				buf[c->flip_at - c->fwd] ^= (char)c->flip_mask;
				c->flip_mask = 0;
			}
			c->fwd += (uint64_t)n;
			if (c->cut_after && c->fwd >= c->cut_after) {
				cut(p, u->k);
				dead = true;
			}
		}
		uint64_t fwd = c->fwd; /* for the backward record */
		proxy_back_fn *bf = u->forward ? NULL : c->back_fn;
		void *bo = c->back_opaque;
		pthread_mutex_unlock(&p->lock);
		if (dead)
			break;
		if (bf)
			n = (ssize_t)bf(bo, (uint8_t *)buf, (size_t)n, sizeof(buf));
		if (d)
			usleep(d);
		if (u->forward && c->rec >= 0 && write(c->rec, buf, (size_t)n) != n)
			break; /* a record must be whole: end the connection */
		if (!u->forward && c->rec_back >= 0 && !record_back(c, fwd, buf, (size_t)n))
			break;
		for (ssize_t o = 0; o < n;) {
			ssize_t w = send(u->to, buf + o, (size_t)(n - o), MSG_NOSIGNAL);
			if (w <= 0) {
				gone = true;
				goto out;
			}
			o += w;
		}
	}
out:
	shutdown(u->to, SHUT_WR);
	if (gone) /* the target is gone: the other side's writes must fail, as on a real link */
		shutdown(u->from, SHUT_RD);
	free(u);
	return NULL;
}

static void *accept_main(void *arg)
{
	proxy *p = arg;
	for (;;) {
		int a = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (a < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		int b = unix_connect(p->target);
		pthread_mutex_lock(&p->lock);
		if (b < 0 || p->n == MAXC || p->stop) {
			pthread_mutex_unlock(&p->lock);
			close(a);
			if (b >= 0)
				close(b);
			continue;
		}
		unsigned k = p->n++;
		struct conn *c = &p->c[k];
		c->a = a;
		c->b = b;
		c->rec = c->rec_back = -1;
		if (p->rec[0]) {
			char path[256];
			snprintf(path, sizeof(path), "%s-%u", p->rec, k);
			c->rec = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			snprintf(path, sizeof(path), "%s-%u.back", p->rec, k);
			c->rec_back = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		}
		for (int dir = 0; dir < 2; dir++) {
			struct pump *u = malloc(sizeof(*u));
			*u = (struct pump){ p, k, dir ? b : a, dir ? a : b, dir == 0 };
			pthread_create(&c->t[dir], NULL, pump_main, u);
		}
		c->started = true;
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

proxy *proxy_start(const char *listen_path, const char *target_path)
{
	proxy *p = calloc(1, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	snprintf(p->target, sizeof(p->target), "%s", target_path);
	p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", listen_path);
	unlink(listen_path);
	if (bind(p->lfd, (struct sockaddr *)&a, sizeof(a)) || listen(p->lfd, 16)) {
		close(p->lfd);
		free(p);
		return NULL;
	}
	pthread_create(&p->acceptor, NULL, accept_main, p);
	return p;
}

void proxy_set_delay(proxy *p, unsigned k, unsigned delay_us)
{
	pthread_mutex_lock(&p->lock);
	p->c[k].delay_us = delay_us;
	pthread_mutex_unlock(&p->lock);
}

void proxy_cut_after(proxy *p, unsigned k, uint64_t after)
{
	pthread_mutex_lock(&p->lock);
	if (k < p->n && p->c[k].fwd >= after)
		cut(p, k);
	else
		p->c[k].cut_after = after ? after : 1;
	pthread_mutex_unlock(&p->lock);
}

void proxy_flip_at(proxy *p, unsigned k, uint64_t at, uint8_t mask)
{
	pthread_mutex_lock(&p->lock);
	p->c[k].flip_at = at;
	p->c[k].flip_mask = mask;
	pthread_mutex_unlock(&p->lock);
}

void proxy_rewrite_back(proxy *p, unsigned k, proxy_back_fn *fn, void *opaque)
{
	pthread_mutex_lock(&p->lock);
	p->c[k].back_fn = fn;
	p->c[k].back_opaque = opaque;
	pthread_mutex_unlock(&p->lock);
}

uint64_t proxy_forwarded(proxy *p, unsigned k)
{
	pthread_mutex_lock(&p->lock);
	uint64_t n = p->c[k].fwd;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void proxy_freeze(proxy *p, unsigned k)
{
	pthread_mutex_lock(&p->lock);
	if (k < MAXC)
		p->c[k].frozen = true;
	pthread_mutex_unlock(&p->lock);
}

void proxy_freeze_forward(proxy *p, unsigned k)
{
	pthread_mutex_lock(&p->lock);
	if (k < MAXC)
		p->c[k].frozen_fwd = true;
	pthread_mutex_unlock(&p->lock);
}

void proxy_thaw(proxy *p, unsigned k)
{
	pthread_mutex_lock(&p->lock);
	if (k < MAXC)
		p->c[k].frozen = p->c[k].frozen_fwd = false;
	pthread_mutex_unlock(&p->lock);
}

void proxy_cut_now(proxy *p, unsigned k)
{
	pthread_mutex_lock(&p->lock);
	if (k < p->n)
		cut(p, k);
	pthread_mutex_unlock(&p->lock);
}

unsigned proxy_connections(proxy *p)
{
	pthread_mutex_lock(&p->lock);
	unsigned n = p->n;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void proxy_record(proxy *p, const char *prefix)
{
	pthread_mutex_lock(&p->lock);
	snprintf(p->rec, sizeof(p->rec), "%s", prefix);
	pthread_mutex_unlock(&p->lock);
}

void proxy_stop(proxy *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	for (unsigned k = 0; k < p->n; k++)
		cut(p, k);
	pthread_mutex_unlock(&p->lock);
	shutdown(p->lfd, SHUT_RDWR);
	pthread_join(p->acceptor, NULL);
	for (unsigned k = 0; k < p->n; k++) {
		pthread_join(p->c[k].t[0], NULL);
		pthread_join(p->c[k].t[1], NULL);
		close(p->c[k].a);
		close(p->c[k].b);
		if (p->c[k].rec >= 0)
			close(p->c[k].rec);
		if (p->c[k].rec_back >= 0)
			close(p->c[k].rec_back);
	}
	close(p->lfd);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
