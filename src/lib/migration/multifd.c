/* SPDX-License-Identifier: MIT */
/*
 * Multifd channels, both sides (see multifd.h for the design).
 *
 * Thread (source): ferry__mf_send_start/_job/_sync/_stop run on
 * mig/src/main; send_thread is mig/src/send_N, one per channel;
 * ferry__mf_send_shutdown is called from any thread (cancel, a failing
 * channel); ferry__mf_send_stats under m->stats_lock by whoever reports
 * progress. s->lock protects each channel's job queue and the sender's
 * error and counters; c->cond wakes channel N, s->cond the migration thread.
 *
 * Thread (destination): ferry__mf_recv_start/_sync/_wait_error/_stop run
 * on mig/dst/main; recv_thread is mig/dst/recv_N, one per channel, and
 * places what it receives through place.h. r->lock protects the sync
 * rendezvous (at_sync, generation), quit, the first error and the
 * counters; r->cond is broadcast on each of their changes. Lock order:
 * m->stats_lock before r->lock (ferry__dst_stats).
 */
#include "migration/multifd.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include "migration/place.h"
#include "transport/transport.h"
#include "stream/wire.h"
#include "util/bufpool.h"
#include "util/zero.h"

#define HS_TIMEOUT_MS 10000
#define SYNC_SLICE_MS 100 /* ferry__mf_recv_sync looks at the main connection this often */

/*
 * Either side, the migration thread after its main connection failed: waits
 * up to timeout_ms for *err (protected by lock, signalled on cond) to be
 * set, copies it into *out under the lock and returns its code (0: none).
 */
static int wait_error(pthread_mutex_t *lock, pthread_cond_t *cond, const ferry_error *err,
		      int timeout_ms, ferry_error *out)
{
	struct timespec dl = ferry__deadline_ms((uint64_t)timeout_ms); /* cond is monotonic */
	pthread_mutex_lock(lock);
	while (!err->code)
		if (pthread_cond_timedwait(cond, lock, &dl))
			break;
	int e = err->code;
	ferry__error_copy(out, err);
	pthread_mutex_unlock(lock);
	return e;
}

/* ------------------------------------------------------------------ */
/* Source.                                                            */

static void send_fail(ferry_mf_sender *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Thread: mig/src/send_N. Records the first error (takes s->lock) and wakes every writer. */
static void send_fail(ferry_mf_sender *s, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pthread_mutex_lock(&s->lock);
	ferry__error_setv(&s->err, err, fmt, ap);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	va_end(ap);
	/*
	 * Wake everyone: the other channels, and the main connection's writer
	 * (SHUT_WR fails its blocked write). Not its reader: the return path
	 * may still bring the destination's SHUT, which says why.
	 */
	ferry__mf_send_shutdown(s);
	int fd = atomic_load(&s->m->chan_fd);
	if (fd >= 0)
		shutdown(fd, SHUT_WR);
}

/* One grant's worth of a packet's iovecs (ferry__rl_send). */
struct piece_ctx {
	ferry_mf_send_chan *c;
	const uint8_t *ref;
	bool staged; /* the pages are in c->stage already (packet_staged) */
};

/* Thread: mig/src/send_N (through ferry__rl_send). */
static int send_piece(void *ctx, struct iovec *iov, int cnt, int first)
{
	struct piece_ctx *p = ctx;
	ferry_mf_send_chan *c = p->c;
	uint64_t n = 0;
	for (int i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	bool stage = c->stage && !p->staged; /* not yet copied there by packet_staged */
	int r = c->tls		  ? ferry__tls_send_all(c->tls, iov, cnt, NULL)
		: c->pipefd[0] >= 0 ? ferry__sock_send_ref(c->fd, c->pipefd, iov, p->ref + first, cnt, NULL)
		: stage		  ? ferry__sock_send_staged(c->fd, iov, cnt, c->stage, FERRY_SEND_STAGE, NULL)
				  : ferry__sock_send_all(c->fd, iov, cnt, NULL);
	if (r)
		return r;
	/* Per piece, so that `transferred` moves while a packet is throttled. */
	pthread_mutex_lock(&c->s->lock);
	c->bytes += n;
	pthread_mutex_unlock(&c->s->lock);
	return 0;
}

/* A packet being built by send_packet: header, iovecs and the pages' split. */
struct out_packet {
	uint8_t hdr[FERRY_MF_HDR_MAX];
	size_t h;                            /* header bytes */
	struct iovec iov[2 + FERRY_MF_MAX_PAGES];
	uint8_t ref[2 + FERRY_MF_MAX_PAGES]; /* iovecs of guest RAM */
	int cnt;
	uint64_t normal[FERRY_MF_MAX_PAGES], zero[FERRY_MF_MAX_PAGES];
	uint32_t nn, nz, flags, clen;
	size_t idx_off, sums_off; /* in hdr: the index list, the checksums (stream/sum.h) */
	bool staged;		  /* the data pages are copied into the channel's stage */
};

/* Sorts j's pages into data and zero pages (here, not in the main thread) and names them. */
static void packet_pages(ferry_mf_send_chan *c, const ferry_mf_job *j, struct out_packet *p)
{
	for (uint32_t i = 0; i < j->n; i++) {
		const uint8_t *page = j->rb->host + (j->pages[i] << FERRY_PAGE_SHIFT);
		if (ferry__page_is_zero(page))
			p->zero[p->nz++] = j->pages[i];
		else
			p->normal[p->nn++] = j->pages[i];
	}
	p->h += ferry__wire_st_name(p->hdr + p->h, j->rb->name);
	p->idx_off = p->h;
	p->h += ferry__wire_st_indices(p->hdr + p->h, p->normal, p->nn);
	p->h += ferry__wire_st_indices(p->hdr + p->h, p->zero, p->nz);
	p->sums_off = p->h;
	if (c->s->m->chan.sums) /* filled in by packet_data */
		p->h += (size_t)p->nn * FERRY_SUM_LEN;
}

/* Folds packet num of channel c into the stream digest (stream/sum.h). */
static void packet_fold(ferry_mf_send_chan *c, const ferry_mf_job *j, const struct out_packet *p,
			uint64_t num)
{
	ferry_sums *sums = c->s->m->chan.sums;
	if (!sums)
		return;
	uint64_t v = j->sync ? ferry__wire_mf_value(NULL, NULL, 0, NULL, 0)
			     : ferry__wire_mf_value(j->rb->name, p->hdr + p->idx_off, p->nn + p->nz,
						    p->hdr + p->sums_off, p->nn);
	ferry__sum_fold(sums, FERRY_SUM_MULTIFD + c->id, num, v);
}

/* Whether to try zstd on nn data pages: not while backing off (those count as skipped). */
static bool zstd_wanted(ferry_mf_send_chan *c, uint32_t nn)
{
	ferry_mf_sender *s = c->s;
	if (!nn || s->compression != FERRY_COMPRESS_ZSTD)
		return false;
	if (!c->zskip)
		return true;
	c->zskip--;
	pthread_mutex_lock(&s->lock);
	s->compress_skipped += (uint64_t)nn * FERRY_PAGE_SIZE;
	pthread_mutex_unlock(&s->lock);
	return false;
}

/* Compresses the data pages into c->zbuf; *len: the compressed size. 0 or -EIO. */
static int zstd_pages(ferry_mf_send_chan *c, const ferry_mf_job *j, const struct out_packet *p,
		      size_t *len)
{
	ZSTD_CCtx *cc = c->cctx;
	ZSTD_CCtx_reset(cc, ZSTD_reset_session_only);
	ZSTD_outBuffer out = { c->zbuf, c->zcap, 0 };
	for (uint32_t i = 0; i < p->nn; i++) {
		ZSTD_inBuffer in = { j->rb->host + (p->normal[i] << FERRY_PAGE_SHIFT), FERRY_PAGE_SIZE,
				     0 };
		ZSTD_EndDirective mode = i + 1 == p->nn ? ZSTD_e_end : ZSTD_e_continue;
		size_t left;
		do {
			left = ZSTD_compressStream2(cc, &out, &in, mode);
			if (ZSTD_isError(left))
				return -EIO;
		} while (mode == ZSTD_e_end ? left != 0 : in.pos < in.size);
	}
	*len = out.pos;
	return 0;
}

/*
 * The data pages compressed, if that shrinks them by 1/16 at least: then
 * one iovec of c->zbuf and FERRY_MF_ZSTD. Otherwise the packet goes raw
 * and the next zbackoff packets do not try. 0 or -EIO.
 */
static int packet_zstd(ferry_mf_send_chan *c, const ferry_mf_job *j, struct out_packet *p)
{
	ferry_mf_sender *s = c->s;
	size_t len;
	int r = zstd_pages(c, j, p, &len);
	if (r)
		return r;
	size_t raw = (size_t)p->nn * FERRY_PAGE_SIZE;
	bool worth = len <= raw - raw / 16;
	pthread_mutex_lock(&s->lock);
	s->compress_in += raw;
	s->compress_out += worth ? len : raw;
	pthread_mutex_unlock(&s->lock);
	if (!worth) {
		c->zskip = c->zbackoff;
		c->zbackoff = c->zbackoff ? (c->zbackoff < 64 ? 2 * c->zbackoff : 64) : 1;
		return 0;
	}
	c->zbackoff = 0;
	p->flags |= FERRY_MF_ZSTD;
	p->clen = (uint32_t)len;
	p->iov[p->cnt].iov_base = c->zbuf;
	p->iov[p->cnt].iov_len = len;
	p->cnt++;
	return 0;
}

/*
 * Raw pages, also when zstd did not shrink them (random data): the
 * destination then reads them straight into guest RAM instead of
 * decompressing a stored copy. One iovec per run of consecutive pages.
 */
static void packet_raw(const ferry_mf_job *j, struct out_packet *p)
{
	for (uint32_t i = 0; i < p->nn;) {
		uint32_t k = ferry__place_run_end(p->normal, i, p->nn);
		p->iov[p->cnt].iov_base = j->rb->host + (p->normal[i] << FERRY_PAGE_SHIFT);
		p->iov[p->cnt].iov_len = (size_t)(k - i) << FERRY_PAGE_SHIFT;
		p->ref[p->cnt] = 1;
		p->cnt++;
		i = k;
	}
}

/*
 * Raw pages through the channel's stage (x-user-copy): copied there a few
 * at a time, each batch hashed from the copy while it is in L1, so that
 * every page is read from memory once, and the checksums are those of the
 * bytes sent. One iovec of c->stage then, sent as it is.
 */
enum { STAGE_BATCH = 8 }; /* pages: 32 KiB, within any L1d */
_Static_assert(FERRY_MF_MAX_PAGES * FERRY_PAGE_SIZE <= FERRY_SEND_STAGE,
	       "a multifd packet's pages fit the send stage");

static void packet_staged(ferry_mf_send_chan *c, const ferry_mf_job *j, struct out_packet *p)
{
	bool sums = c->s->m->chan.sums;
	for (uint32_t i = 0; i < p->nn; i += STAGE_BATCH) {
		uint32_t k = p->nn - i < STAGE_BATCH ? p->nn - i : STAGE_BATCH;
		uint8_t *to = c->stage + ((size_t)i << FERRY_PAGE_SHIFT);
		for (uint32_t q = 0; q < k; q++)
			memcpy(to + ((size_t)q << FERRY_PAGE_SHIFT),
			       j->rb->host + (p->normal[i + q] << FERRY_PAGE_SHIFT), FERRY_PAGE_SIZE);
		if (sums)
			ferry__wire_st_mf_sums(p->hdr + p->sums_off + (size_t)i * FERRY_SUM_LEN, j->rb,
					       p->normal + i, k, to);
	}
	if (p->nn) {
		p->iov[p->cnt].iov_base = c->stage;
		p->iov[p->cnt].iov_len = (size_t)p->nn << FERRY_PAGE_SHIFT;
		p->cnt++;
	}
	p->staged = true;
}

/* The data pages, compressed, staged or by reference, and their checksums. 0 or -EIO. */
static int packet_data(ferry_mf_send_chan *c, const ferry_mf_job *j, struct out_packet *p)
{
	int r = zstd_wanted(c, p->nn) ? packet_zstd(c, j, p) : 0;
	if (r)
		return r;
	if (!(p->flags & FERRY_MF_ZSTD)) { /* not compressed (or it did not compress) */
		if (c->stage)
			packet_staged(c, j, p);
		else
			packet_raw(j, p);
	}
	if (c->s->m->chan.sums && !p->staged)
		ferry__wire_st_mf_sums(p->hdr + p->sums_off, j->rb, p->normal, p->nn, NULL);
	return 0;
}

/* Encodes the header and writes the packet in grants of the limiter; counts its pages. */
static int packet_send(ferry_mf_send_chan *c, const ferry_mf_job *j, struct out_packet *p)
{
	ferry_mf_sender *s = c->s;
	ferry_wire_mf_pkt pkt = { .flags = p->flags, .normal = p->nn, .zero = p->nz,
				  .clen = p->clen, .num = c->packet_num++ };
	packet_fold(c, j, p, pkt.num);
	ferry__wire_mf_pkt_encode(p->hdr, &pkt);
	p->iov[0].iov_base = p->hdr;
	p->iov[0].iov_len = p->h;
	struct piece_ctx pc = { c, p->ref, p->staged };
	int r = ferry__rl_send(&s->m->rl, p->iov, p->cnt, send_piece, &pc);
	if (r)
		return r;
	pthread_mutex_lock(&s->lock);
	s->normal += p->nn;
	s->zero += p->nz;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* A device-state packet: the headers, then the buffer (freed here). */
static int send_dev_packet(ferry_mf_send_chan *c, ferry_mf_job *j)
{
	uint8_t hdr[FERRY_MF_DEV_PKT_LEN + FERRY_SUM_LEN];
	ferry_wire_dev_hdr h = { .dev = j->dev.dev, .index = j->dev.index, .len = j->dev.len };
	uint64_t num = c->packet_num++;
	size_t hl = ferry__wire_mf_dev_encode_sum(hdr, num, &h, j->dev.data, c->s->m->chan.sums);
	if (c->s->m->chan.sums)
		ferry__sum_fold(c->s->m->chan.sums, FERRY_SUM_MULTIFD + c->id, num,
				ferry__ld_be64(hdr + FERRY_MF_DEV_PKT_LEN));
	struct iovec iov[2] = { { hdr, hl }, { j->dev.data, j->dev.len } };
	uint8_t ref[2] = { 0, 0 };
	struct piece_ctx pc = { c, ref };
	int r = ferry__rl_send(&c->s->m->rl, iov, 2, send_piece, &pc);
	ferry__buf_put(j->dev.data);
	j->dev.data = NULL;
	return r;
}

/*
 * Builds and writes one packet for j (pages, SYNC or device state), in
 * grants of the migration's limiter: the cap is the total over all channels.
 * Thread: mig/src/send_N, without s->lock (the job at head is its own) but for the counters.
 */
static int send_packet(ferry_mf_send_chan *c, ferry_mf_job *j)
{
	if (j->dev.data)
		return send_dev_packet(c, j);
	struct out_packet p = { .h = FERRY_MF_HDR_LEN, .cnt = 1,
				.flags = j->sync ? FERRY_MF_SYNC : 0 };
	if (!j->sync)
		packet_pages(c, j, &p);
	int r = j->sync ? 0 : packet_data(c, j, &p);
	return r ? r : packet_send(c, j, &p);
}

/* Thread: mig/src/send_N. Sends its queued jobs (s->lock held only around the queue). */
static void *send_thread(void *arg)
{
	ferry_mf_send_chan *c = arg;
	ferry_mf_sender *s = c->s;
	char name[16];
	snprintf(name, sizeof(name), "mig/src/send_%u", c->id);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!c->queued && !s->quit)
			pthread_cond_wait(&c->cond, &s->lock);
		if (s->quit)
			break;
		ferry_mf_job *j = &c->jobs[c->head];
		pthread_mutex_unlock(&s->lock);
		int r = send_packet(c, j);
		if (r && ferry__error_link_dead(r))
			send_fail(s, r, "multifd channel %u: " FERRY_LINK_DEAD_FMT, c->id,
				  "destination");
		else if (r)
			send_fail(s, r, "multifd channel %u: %s", c->id,
				  ferry__error_lost_conn(r) ? "lost the connection to the destination"
							  : ferry_strerror(r));
		pthread_mutex_lock(&s->lock);
		c->head = (c->head + 1) % FERRY_MF_QUEUE;
		c->queued--;
		/*
		 * The migration thread and the save threads (ferry__mf_send_buf)
		 * wait on it: for a free slot (half the queue, FERRY_MF_QUEUE), or
		 * for all queues empty (send_sync).
		 */
		if (r || c->queued <= s->depth / 2)
			pthread_cond_broadcast(&s->cond);
		if (r)
			break;
	}
	pthread_mutex_unlock(&s->lock);
	ferry__log_thread_cpu();
	return NULL;
}

/* Thread: mig/src/main. */
int ferry__mf_send_start(ferry_mf_sender *s, struct ferry_migration *m, unsigned n,
			 uint32_t compression, int level, bool splice, bool stage,
			 ferry_error *err)
{
	memset(s, 0, sizeof(*s));
	s->m = m;
	s->n = n;
	s->compression = compression;
	s->level = level;
	pthread_mutex_init(&s->lock, NULL);
	ferry__cond_init_monotonic(&s->cond); /* timed waits: wait_error, free_slot */
	s->depth = 2;
	for (unsigned i = 0; i < n; i++) {
		s->ch[i].fd = -1;
		s->ch[i].pipefd[0] = s->ch[i].pipefd[1] = -1;
		pthread_cond_init(&s->ch[i].cond, NULL);
	}
	s->inited = true;
	for (unsigned i = 0; i < n; i++) {
		ferry_mf_send_chan *c = &s->ch[i];
		ferry_error cerr = { 0 };
		c->s = s;
		c->id = i;
		c->bytes = FERRY_MF_HS_LEN; /* both sides count the handshake */
		int r = ferry__sock_connect(m->uri, &c->fd, &m->cancel, &cerr);
		if (!r)
			ferry__mig_watch_peer(m, c->fd);
		if (!r && m->tls.creds)
			r = ferry__tls_open(&m->tls, c->fd, "destination", &c->tls, &cerr);
		if (r)
			return ferry__error_set(err, r, "multifd channel %u: %.170s", i, cerr.msg);
		uint8_t hs[FERRY_MF_HS_LEN];
		ferry__wire_mf_hs_encode(hs, m->vm->uuid, i, n);
		struct iovec iov = { hs, sizeof(hs) };
		if ((r = c->tls ? ferry__tls_send_all(c->tls, &iov, 1, NULL)
				: ferry__sock_send_all(c->fd, &iov, 1, NULL)))
			return ferry__error_set(err, r, "multifd channel %u handshake: %s", i,
						ferry_strerror(r));
		ferry__rl_charge(&m->rl, FERRY_MF_HS_LEN);
		if (compression == FERRY_COMPRESS_ZSTD) {
			c->cctx = ZSTD_createCCtx();
			c->zcap = ZSTD_compressBound((size_t)FERRY_MF_MAX_PAGES * FERRY_PAGE_SIZE);
			c->zbuf = malloc(c->zcap);
			if (!c->cctx || !c->zbuf)
				return -ENOMEM;
			ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level);
		}
		if (splice && ferry__pipe_open(c->pipefd))
			c->pipefd[0] = c->pipefd[1] = -1; /* copies then */
		if (stage && !splice && !c->tls && !(c->stage = malloc(FERRY_SEND_STAGE)))
			return -ENOMEM;
		if ((r = pthread_create(&c->thread, NULL, send_thread, c)))
			return -r;
		c->started = true;
	}
	return 0;
}

/*
 * How many jobs a channel may hold now (s->lock held): FERRY_MF_QUEUE, or
 * under a max-bandwidth so low that half of it would take a channel more
 * than QUEUE_DRAIN_MS, fewer, down to 2. The migration thread hands out
 * pages only into free slots, so its `remaining` stands still while half
 * a queue drains: a full queue of 8 at 40 MB/s on 2 channels froze it for
 * 160 ms (capcheck.h's t_mf_bandwidth_cap).
 */
#define QUEUE_DRAIN_MS 50
static unsigned queue_depth(ferry_mf_sender *s)
{
	uint64_t rate = ferry__rl_rate(&s->m->rl);
	if (!rate)
		return FERRY_MF_QUEUE;
	uint64_t half = rate / s->n * QUEUE_DRAIN_MS / 1000 / (FERRY_MF_MAX_PAGES * FERRY_PAGE_SIZE);
	return half >= FERRY_MF_QUEUE / 2 ? FERRY_MF_QUEUE : half >= 1 ? 2 * (unsigned)half : 2;
}

/*
 * The channel for a job (s->lock held), NULL if none will do now: an idle
 * one first, else the next with room. prefer >= 0 (a device's buffers,
 * device number mod channels): that channel while it has room, else only
 * an idle one. So each device's buffers travel in order on its channel
 * when the channels are busy, and a lone device still spreads over idle
 * channels. bench/devices.py's case (4 devices x 256 MiB on 2 channels,
 * read limit 512 ms): downtime 535-681 ms with 45-66 of 257 buffers per
 * device reordered when any channel with room would do (the destination's
 * load thread waits for a late buffer, and the receiver holding a later
 * one waits for room); 518-525 ms with none reordered when a device never
 * leaves its channel; 518-538 ms with 10-39 reordered like this.
 */
static ferry_mf_send_chan *pick_chan(ferry_mf_sender *s, int prefer)
{
	ferry_mf_send_chan *c = NULL;
	for (unsigned k = 0; k < s->n && (!c || c->queued); k++) {
		ferry_mf_send_chan *x = &s->ch[(s->next + k) % s->n];
		if (x->queued < s->depth && (!c || x->queued < c->queued))
			c = x;
	}
	ferry_mf_send_chan *p = prefer >= 0 ? &s->ch[prefer] : NULL;
	if (p && p->queued < s->depth)
		return p;
	return !p || (c && !c->queued) ? c : NULL; /* a device spills only onto an idle channel */
}

/*
 * With s->lock held: waits for a free job slot (pick_chan; prefer: -1 or a
 * channel); *e: 0, or the error (the sender's, or -ECANCELED: cancel, quit
 * or *abort) and NULL. With abort, waits in steps of POLL_MS (the flag is
 * not a condvar).
 */
#define POLL_MS 10
static ferry_mf_job *free_slot(ferry_mf_sender *s, const atomic_bool *abort, int prefer, int *e)
{
	for (;;) {
		if (s->err.code || ferry__mig_cancelled(s->m) || s->quit ||
		    (abort && atomic_load(abort))) {
			*e = s->err.code ? s->err.code : -ECANCELED;
			return NULL;
		}
		s->depth = queue_depth(s);
		/* Device buffers (abort != NULL) wait while a sync is queued. */
		ferry_mf_send_chan *c = abort && s->syncing ? NULL : pick_chan(s, prefer);
		if (c) {
			ferry_mf_job *j = &c->jobs[(c->head + c->queued) % FERRY_MF_QUEUE];
			j->sync = false;
			c->queued++;
			s->next = (c->id + 1) % s->n;
			pthread_cond_signal(&c->cond);
			*e = 0;
			return j;
		}
		if (!abort) {
			pthread_cond_wait(&s->cond, &s->lock);
			continue;
		}
		struct timespec dl = ferry__deadline_ms(POLL_MS);
		pthread_cond_timedwait(&s->cond, &s->lock, &dl);
	}
}

/*
 * Hands a job to the next idle channel (waits for one). 0 or the error.
 * Thread: mig/src/main; takes s->lock.
 */
static int send_job(ferry_mf_sender *s, const ferry_mf_job *job)
{
	int e;
	pthread_mutex_lock(&s->lock);
	ferry_mf_job *j = free_slot(s, NULL, -1, &e);
	if (j) { /* the channel waits for s->lock before it reads the job */
		j->rb = job->rb;
		j->n = job->n;
		j->dev.data = NULL;
		memcpy(j->pages, job->pages, job->n * sizeof(job->pages[0]));
	}
	pthread_mutex_unlock(&s->lock);
	return e;
}

/* Thread: a save thread (any); takes s->lock. */
int ferry__mf_send_buf(ferry_mf_sender *s, ferry_part_buf *b, const atomic_bool *abort)
{
	int e;
	pthread_mutex_lock(&s->lock);
	ferry_mf_job *j = free_slot(s, abort, (int)(b->dev % s->n), &e);
	if (j) {
		j->n = 0;
		j->dev = *b;
		b->data = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	ferry__buf_put(b->data);
	b->data = NULL;
	return e;
}

/* Thread: mig/src/main; takes s->lock. */
int ferry__mf_send_wait_error(ferry_mf_sender *s, int timeout_ms, ferry_error *out)
{
	return wait_error(&s->lock, &s->cond, &s->err, timeout_ms, out);
}

/* Thread: mig/src/main, with s->lock held. */
static int wait_all_idle(ferry_mf_sender *s)
{
	for (;;) {
		if (s->err.code)
			return s->err.code;
		if (ferry__mig_cancelled(s->m))
			return -ECANCELED;
		bool idle = true;
		for (unsigned k = 0; k < s->n; k++)
			idle &= !s->ch[k].queued;
		if (idle)
			return 0;
		pthread_cond_wait(&s->cond, &s->lock);
	}
}

/*
 * Waits for all channels to finish, then each sends a SYNC packet.
 * Thread: mig/src/main; takes s->lock.
 */
static int send_sync(ferry_mf_sender *s)
{
	pthread_mutex_lock(&s->lock);
	s->syncing = true;
	int r = wait_all_idle(s);
	if (!r) {
		for (unsigned k = 0; k < s->n; k++) {
			ferry_mf_send_chan *c = &s->ch[k];
			c->jobs[c->head].sync = true; /* idle: head is the next slot */
			c->jobs[c->head].dev.data = NULL;
			c->queued = 1;
			pthread_cond_signal(&c->cond);
		}
		r = wait_all_idle(s);
	}
	s->syncing = false;
	pthread_cond_broadcast(&s->cond); /* device buffers may go again */
	pthread_mutex_unlock(&s->lock);
	return r;
}

int ferry__mf_send_flush(ferry_mf_sender *s)
{
	return send_sync(s);
}

/* Thread: any (cancel, send_fail); only shutdown(2) on the fds, no lock. */
void ferry__mf_send_shutdown(ferry_mf_sender *s)
{
	if (!s->inited)
		return;
	for (unsigned i = 0; i < s->n; i++)
		if (s->ch[i].fd >= 0)
			shutdown(s->ch[i].fd, SHUT_RDWR);
}

/* Thread: mig/src/main; joins mig/src/send_N. */
void ferry__mf_send_stop(ferry_mf_sender *s)
{
	if (!s->inited)
		return;
	pthread_mutex_lock(&s->lock);
	s->quit = true;
	for (unsigned i = 0; i < s->n; i++)
		pthread_cond_signal(&s->ch[i].cond);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	ferry__mf_send_shutdown(s);
	for (unsigned i = 0; i < s->n; i++) {
		ferry_mf_send_chan *c = &s->ch[i];
		if (c->started)
			pthread_join(c->thread, NULL);
		for (unsigned k = 0; k < FERRY_MF_QUEUE; k++) /* device buffers never sent */
			ferry__buf_put(c->jobs[k].dev.data);
		ferry__tls_close(c->tls);
		c->tls = NULL;
		if (c->fd >= 0)
			close(c->fd);
		ZSTD_freeCCtx(c->cctx);
		free(c->zbuf);
		free(c->stage);
		pthread_cond_destroy(&c->cond);
		for (int k = 0; k < 2; k++)
			if (c->pipefd[k] >= 0)
				close(c->pipefd[k]);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s->job);
	s->job = NULL;
	s->inited = false;
}

/* Thread: any, with m->stats_lock held; takes s->lock. */
/* Bytes handed to the channels and not yet delivered: queued jobs, and what their sockets hold. */
uint64_t ferry__mf_send_inflight(ferry_mf_sender *s)
{
	if (!s->inited)
		return 0;
	uint64_t b = 0;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->n; i++) {
		const ferry_mf_send_chan *ch = &s->ch[i];
		for (unsigned k = 0; k < ch->queued; k++) {
			const ferry_mf_job *j = &ch->jobs[(ch->head + k) % FERRY_MF_QUEUE];
			b += j->dev.data ? j->dev.len : (uint64_t)j->n << FERRY_PAGE_SHIFT;
		}
		b += ferry__sock_outq(ch->fd);
	}
	pthread_mutex_unlock(&s->lock);
	return b;
}

void ferry__mf_send_stats(ferry_mf_sender *s, ferry_migration_info *info)
{
	if (!s->inited)
		return;
	pthread_mutex_lock(&s->lock);
	info->multifd_channels = s->n;
	info->multifd_bytes = 0;
	for (unsigned i = 0; i < s->n; i++) {
		info->channel_bytes[i] = s->ch[i].bytes;
		info->multifd_bytes += s->ch[i].bytes;
	}
	info->compress_in = s->compress_in;
	info->compress_out = s->compress_out;
	info->compress_skipped = s->compress_skipped;
	pthread_mutex_unlock(&s->lock);
}

/* ---- the multifd page sink (sink.h; mig/src/main) ---- */

static int sink_put(ferry_page_sink *ps, const struct ferry_ram_block *rb, uint64_t kind,
		    uint64_t first, uint32_t n, const uint64_t *sums)
{
	ferry_mf_sender *s = ferry_container_of(ps, ferry_mf_sender, sink);
	ferry_mf_job *j = s->job;
	(void)kind; /* the channels tell zero pages apart themselves */
	(void)sums; /* and checksum what they send (the saver computes none ahead for them) */
	for (uint64_t p = first; p < first + n; p++) {
		if (j->n && (j->rb != rb || j->n == FERRY_MF_MAX_PAGES)) {
			int r = send_job(s, j);
			j->n = 0;
			if (r)
				return r;
			if (ps->on_sent)
				ps->on_sent(ps->on_sent_opaque);
		}
		j->rb = rb;
		j->pages[j->n++] = p;
	}
	return 0;
}

/* The pass's last job, then every channel's SYNC, then the main stream's. */
static int sink_pass_end(ferry_page_sink *ps)
{
	ferry_mf_sender *s = ferry_container_of(ps, ferry_mf_sender, sink);
	int r = 0;
	if (s->job->n) {
		r = send_job(s, s->job);
		s->job->n = 0;
	}
	if (!r)
		r = send_sync(s);
	if (!r)
		ferry__wire_put_ram_flag(s->main, FERRY_RAM_MULTIFD_SYNC);
	/*
	 * Now, not with the next record: the receivers wait at their SYNC for
	 * this record, and device buffers queued behind the SYNC (save threads
	 * run during the last pass) go only once they read on.
	 */
	if (!r)
		r = ferry__chan_flush(s->main);
	return r;
}

static void sink_stats(ferry_page_sink *ps, ferry_migration_info *info)
{
	ferry_mf_sender *s = ferry_container_of(ps, ferry_mf_sender, sink);
	ferry__mf_send_stats(s, info);
	pthread_mutex_lock(&s->lock);
	info->normal += s->normal;
	info->duplicate += s->zero;
	pthread_mutex_unlock(&s->lock);
	info->transferred += info->multifd_bytes;
}

static uint64_t sink_bytes(ferry_page_sink *ps)
{
	ferry_mf_sender *s = ferry_container_of(ps, ferry_mf_sender, sink);
	uint64_t b = 0;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->n; i++)
		b += s->ch[i].bytes;
	pthread_mutex_unlock(&s->lock);
	return b;
}

static const ferry_page_sink_ops sink_ops = {
	.put = sink_put,
	.pass_end = sink_pass_end,
	.stats = sink_stats,
	.bytes = sink_bytes,
};

int ferry__mf_sink_init(ferry_mf_sender *s, ferry_chan *main, ferry_page_sink **out)
{
	if (!(s->job = calloc(1, sizeof(*s->job))))
		return -ENOMEM;
	s->main = main;
	s->sink = (ferry_page_sink){ .ops = &sink_ops, .finds_zero = true };
	*out = &s->sink;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Destination.                                                       */

/* Thread: mig/dst/recv_N. Records the first error (takes r->lock) and shuts every channel down. */
static void recv_fail(ferry_mf_receiver *r, int err, const char *msg)
{
	pthread_mutex_lock(&r->lock);
	ferry__error_set(&r->err, err, "%.250s", msg);
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	for (unsigned i = 0; i < r->n; i++)
		if (r->ch[i].started)
			ferry__chan_shutdown(&r->ch[i].in);
	int fd = atomic_load(&r->m->chan_fd);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

/*
 * Reads and checks a packet header (magic, version, flags, counts, the
 * compression against the migration's). Thread: mig/dst/recv_N.
 */
static int recv_header(ferry_mf_recv_chan *c, ferry_wire_mf_pkt *pkt)
{
	ferry_chan *in = &c->in;
	uint8_t h[FERRY_MF_HDR_LEN];
	int e;
	ferry__chan_ctx(in, "multifd packet");
	if ((e = ferry__chan_read(in, h, sizeof(h))))
		return e;
	ferry__wire_mf_pkt_decode(h, pkt);
	uint32_t magic = pkt->magic, ver = pkt->version, flags = pkt->flags;
	uint32_t nn = pkt->normal, nz = pkt->zero, clen = pkt->clen;
	if (magic != FERRY_MF_PKT_MAGIC)
		return ferry__chan_fail(in, FERRY_EBADSTREAM, "bad multifd packet magic 0x%08x", magic);
	if (ver != FERRY_MF_VERSION)
		return ferry__chan_fail(in, FERRY_EVERSION, "multifd packet version %u (supported: %u)",
					ver, FERRY_MF_VERSION);
	if (flags & ~(uint32_t)(FERRY_MF_SYNC | FERRY_MF_ZSTD | FERRY_MF_DEVICE))
		return ferry__chan_fail(in, FERRY_EBADSTREAM, "unknown multifd packet flags 0x%x", flags);
	if (flags & FERRY_MF_DEVICE)
		return flags != FERRY_MF_DEVICE || nn || nz || clen
			       ? ferry__chan_fail(in, FERRY_EBADSTREAM,
						  "multifd device-state packet with pages (flags 0x%x)", flags)
			       : 0;
	if (flags & FERRY_MF_SYNC)
		return nn || nz || clen || (flags & FERRY_MF_ZSTD)
			       ? ferry__chan_fail(in, FERRY_EBADSTREAM, "multifd sync packet with pages")
			       : 0;
	if (!nn && !nz)
		return ferry__chan_fail(in, FERRY_EBADSTREAM, "multifd packet without pages");
	if (nn > FERRY_MF_MAX_PAGES || nz > FERRY_MF_MAX_PAGES - nn)
		return ferry__chan_fail(in, FERRY_EBADSTREAM,
					"multifd packet with %u + %u pages (max %u)", nn, nz,
					FERRY_MF_MAX_PAGES);
	bool z = flags & FERRY_MF_ZSTD;
	/* Raw packets are fine in a zstd migration (data that did not compress). */
	if ((z && c->r->compression != FERRY_COMPRESS_ZSTD) || (!z && clen) || (z && !nn) ||
	    (z && clen > c->zcap))
		return ferry__chan_fail(in, FERRY_EBADSTREAM,
					"multifd packet compression (flags 0x%x, %u bytes) does not match the migration's",
					flags, clen);
	return 0;
}

/*
 * The packet's block and its n page indices, each checked against the
 * block; with checksums, its nn data pages' checksums into sums, the
 * packet folded as record *rec of the channel.
 */
static int recv_pages_of(ferry_mf_recv_chan *c, uint32_t n, uint32_t nn,
			 struct ferry_ram_block **rbp, uint64_t idx[FERRY_MF_MAX_PAGES],
			 uint8_t *sums, uint64_t *rec)
{
	ferry_chan *in = &c->in;
	char name[FERRY_NAME_MAX + 1];
	int e;
	if ((e = ferry__wire_get_name(in, FERRY_WIRE_BLOCK, name)))
		return e;
	struct ferry_ram_block *rb = ferry_ram_block_find(c->r->vm, name);
	if (!rb)
		return ferry__chan_fail(in, FERRY_EBADSTREAM, "multifd packet for unknown RAM block '%s'",
					name);
	uint8_t ib[FERRY_MF_INDEX_LEN * FERRY_MF_MAX_PAGES];
	if ((e = ferry__chan_read(in, ib, FERRY_MF_INDEX_LEN * (size_t)n)))
		return e;
	ferry__wire_ld_indices(ib, idx, n);
	for (uint32_t i = 0; i < n; i++) {
		if (idx[i] >= rb->npages)
			return ferry__chan_fail(in, FERRY_EBADSTREAM,
						"multifd page %llu outside RAM block '%s' (%llu pages)",
						(unsigned long long)idx[i], rb->name,
						(unsigned long long)rb->npages);
	}
	*rbp = rb;
	if (!in->sums)
		return 0;
	if ((e = ferry__chan_read(in, sums, (size_t)nn * FERRY_SUM_LEN)))
		return e;
	*rec = in->sum_seq;
	ferry__sum_fold_chan(in, ferry__wire_mf_value(rb->name, ib, n, sums, nn));
	return 0;
}

/* A packet's data pages: of rb, at idx[0..nn), their checksums, the packet's record number. */
struct recv_data {
	struct ferry_ram_block *rb;
	const uint64_t *idx;
	uint32_t nn;
	const uint8_t *sums;
	uint64_t rec;
};

/*
 * With checksums, data pages [i, i + k) of d checked where they landed
 * (data: their copies, one after another; NULL: guest RAM). Precopy, so
 * a bad page is marked, not fatal.
 */
static void recv_check(ferry_mf_recv_chan *c, const struct recv_data *d, uint32_t i, uint32_t k,
		       const uint8_t *data)
{
	if (c->in.sums)
		ferry__sum_check_pages(&c->in, d->rec, d->rb, d->idx + i, 0, k, data,
				       d->sums + (size_t)i * FERRY_SUM_LEN, false);
}

/*
 * clen bytes of zstd data holding nn pages: decompressed into guest RAM,
 * or for file-backed blocks into the bounce and then written like raw pages.
 */
static int recv_zstd(ferry_mf_recv_chan *c, const struct recv_data *d, uint32_t clen)
{
	ferry_chan *in = &c->in;
	struct ferry_ram_block *rb = d->rb;
	const uint64_t *idx = d->idx;
	uint32_t nn = d->nn;
	int e;
	if ((e = ferry__chan_read_direct(in, c->zbuf, clen))) /* no copy through in's buffer */
		return e;
	ZSTD_DCtx *dc = c->dctx;
	ZSTD_DCtx_reset(dc, ZSTD_reset_session_only);
	ZSTD_inBuffer zin = { c->zbuf, clen, 0 };
	for (uint32_t i = 0; i < nn; i++) {
		ZSTD_outBuffer out = { !ferry__place_in_mapping(rb) ? c->bounce + ((size_t)i << FERRY_PAGE_SHIFT)
						      : rb->host + (idx[i] << FERRY_PAGE_SHIFT),
				       FERRY_PAGE_SIZE, 0 };
		while (out.pos < out.size) {
			size_t ret = ZSTD_decompressStream(dc, &out, &zin);
			if (ZSTD_isError(ret))
				return ferry__chan_fail(in, FERRY_EBADSTREAM, "multifd zstd data: %s",
							ZSTD_getErrorName(ret));
			if (zin.pos == zin.size && out.pos < out.size)
				return ferry__chan_fail(in, FERRY_EBADSTREAM,
							"multifd zstd data ends after %u of %u pages", i, nn);
		}
	}
	if (zin.pos != zin.size)
		return ferry__chan_fail(in, FERRY_EBADSTREAM, "multifd zstd data longer than %u pages", nn);
	if (!ferry__place_in_mapping(rb) && (e = ferry__place_buf(in, rb, idx, 0, nn, c->bounce)))
		return e;
	recv_check(c, d, 0, nn, ferry__place_in_mapping(rb) ? NULL : c->bounce);
	return 0;
}

/*
 * Raw data pages: read into guest RAM (FERRY_PLACE_MAPPING), or into the
 * bounce and placed from there a batch at a time, each batch checked just
 * before it is placed: then the bounce is read from L1 (copies) or L2
 * (UFFDIO_COPY, whose calls cost too much for small batches) once, not
 * twice. 0 or a negative errno.
 */
static int recv_raw(ferry_mf_recv_chan *c, const struct recv_data *d)
{
	ferry_chan *in = &c->in;
	int e;
	if (ferry__place_in_mapping(d->rb) || !in->sums) {
		if ((e = ferry__place_recv(in, d->rb, d->idx, 0, d->nn, c->bounce)))
			return e;
		recv_check(c, d, 0, d->nn, ferry__place_in_mapping(d->rb) ? NULL : c->bounce);
		return 0;
	}
	if ((e = ferry__chan_read_direct(in, c->bounce, (size_t)d->nn << FERRY_PAGE_SHIFT)))
		return e;
	uint32_t batch = d->rb->place == FERRY_PLACE_COPY ? 8 : 64;
	for (uint32_t i = 0; i < d->nn; i += batch) {
		uint32_t k = d->nn - i < batch ? d->nn - i : batch;
		const uint8_t *b = c->bounce + ((size_t)i << FERRY_PAGE_SHIFT);
		recv_check(c, d, i, k, b);
		if ((e = ferry__place_buf(in, d->rb, d->idx + i, 0, k, b)))
			return e;
	}
	return 0;
}

/* The nz zero pages after the nn data pages placed; the data pages marked received; counters. */
static int recv_done(ferry_mf_recv_chan *c, struct ferry_ram_block *rb, const uint64_t *idx,
		     uint32_t nn, uint32_t nz)
{
	ferry_mf_receiver *r = c->r;
	int e;
	for (uint32_t i = nn; i < nn + nz; i++)
		if ((e = ferry__place_zero(&c->in, rb, idx[i])))
			return e;
	/*
	 * `received` (pages holding data: zero pages are left as they were,
	 * see ram-load.c) is shared by all receive threads: set bits atomically.
	 * Within a pass each page is sent once; across passes the sync orders
	 * these updates (the release happens under r->lock). One atomic OR per
	 * word of each run of consecutive pages, not one per page: the packets
	 * of two channels are often neighbours in the bitmap (a 1 MiB packet
	 * is 4 words of it, half a cache line), so each OR may take the line
	 * from the other receiver's CPU.
	 */
	for (uint32_t i = 0, k; i < nn; i = k) {
		k = ferry__place_run_end(idx, i, nn);
		ferry__bitmap_set_range_atomic((_Atomic unsigned long *)rb->received, idx[i], k - i);
	}
	pthread_mutex_lock(&r->lock);
	r->pages += nn;
	r->zeros += nz;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* A device-state packet's header and data, to its participant (load_buf). */
static int recv_dev(ferry_mf_recv_chan *c)
{
	ferry_chan *in = &c->in;
	ferry_wire_dev_hdr h;
	int e;
	ferry__chan_ctx(in, "multifd device state");
	uint64_t sum;
	if ((e = ferry__wire_get_mf_dev(in, &h)) || (e = ferry__wire_get_sum(in, &sum)))
		return e;
	ferry_part_buf b = { .dev = h.dev, .index = h.index, .flags = h.flags, .len = h.len };
	if (!(b.data = ferry__buf_get(c->r->m->bufs, h.len)))
		return ferry__chan_fail(in, -ENOMEM, "out of memory for device state");
	if ((e = ferry__chan_read_direct(in, b.data, h.len)) || /* no copy through in's buffer */
	    (e = ferry__wire_check_dev_sum(in, &h, b.data, sum))) {
		ferry__buf_put(b.data);
		return e;
	}
	return ferry__parts_load_buf(c->r->parts, in, &b);
}

/*
 * Thread: mig/dst/recv_N, without r->lock except for the counters.
 * Reads and places one packet (*sync: it was a SYNC). 0 or a negative errno.
 */
static int recv_packet(ferry_mf_recv_chan *c, bool *sync)
{
	ferry_wire_mf_pkt pkt;
	struct ferry_ram_block *rb = NULL;
	uint64_t idx[FERRY_MF_MAX_PAGES], rec = 0;
	uint8_t sums[FERRY_MF_MAX_PAGES * FERRY_SUM_LEN];
	int e = recv_header(c, &pkt);
	if (e)
		return e;
	if ((*sync = pkt.flags & FERRY_MF_SYNC)) {
		ferry__sum_fold_chan(&c->in, ferry__wire_mf_value(NULL, NULL, 0, NULL, 0));
		return 0;
	}
	if (pkt.flags & FERRY_MF_DEVICE)
		return recv_dev(c);
	if ((e = recv_pages_of(c, pkt.normal + pkt.zero, pkt.normal, &rb, idx, sums, &rec)))
		return e;
	struct recv_data d = { rb, idx, pkt.normal, sums, rec };
	if ((e = pkt.flags & FERRY_MF_ZSTD ? recv_zstd(c, &d, pkt.clen) : recv_raw(c, &d)))
		return e;
	ferry__sum_clear(c->in.sums, rb, idx + pkt.normal, 0, pkt.zero);
	return recv_done(c, rb, idx, pkt.normal, pkt.zero);
}

/* Thread: mig/dst/recv_N. Packets until an error or quit; waits under r->lock after each SYNC. */
static void *recv_thread(void *arg)
{
	ferry_mf_recv_chan *c = arg;
	ferry_mf_receiver *r = c->r;
	char name[16];
	snprintf(name, sizeof(name), "mig/dst/recv_%u", c->id);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		bool sync = false;
		int e = recv_packet(c, &sync);
		if (e < 0) {
			pthread_mutex_lock(&r->lock);
			bool quit = r->quit;
			pthread_mutex_unlock(&r->lock);
			if (!quit) {
				char msg[300];
				snprintf(msg, sizeof(msg), "multifd channel %u: %s", c->id,
					 ferry__error_text(&c->in.in_err, e));
				recv_fail(r, e, msg);
			}
			break;
		}
		if (sync) {
			pthread_mutex_lock(&r->lock);
			uint64_t gen = r->generation;
			r->at_sync++;
			pthread_cond_broadcast(&r->cond);
			while (r->generation == gen && !r->quit && !r->err.code)
				pthread_cond_wait(&r->cond, &r->lock);
			bool stop = r->quit || r->err.code;
			pthread_mutex_unlock(&r->lock);
			if (stop)
				break;
		}
	}
	ferry__log_thread_cpu();
	return NULL;
}

/* Why the handshake hs (got bytes) of a new connection is refused, or NULL; *id: its channel. */
static const char *hs_refusal(const ferry_mf_receiver *r, const uint8_t *hs, ssize_t got,
			      const uint8_t uuid[16], uint32_t *id)
{
	ferry_wire_mf_hs d;
	ferry__wire_mf_hs_decode(hs, &d);
	if (got != (ssize_t)FERRY_MF_HS_LEN)
		return "no handshake";
	if (d.magic != FERRY_MF_HS_MAGIC)
		return "not a multifd handshake";
	if (d.version != FERRY_MF_VERSION)
		return "unsupported multifd version";
	if (memcmp(d.uuid, uuid, FERRY_UUID_LEN))
		return "VM uuid of another migration";
	if ((*id = d.id) >= r->n || d.count != r->n)
		return "bad channel id";
	if (r->ch[*id].in.fd >= 0)
		return "duplicate channel id";
	return NULL;
}

/*
 * Reads a new connection's handshake into hs, through TLS when the
 * migration has it (*tls: the session, or NULL). Returns the bytes read,
 * or -1 (a failed TLS handshake, which *why then says).
 */
static ssize_t recv_hs(ferry_mf_receiver *r, int fd, uint8_t *hs, ferry_tls **tls,
		       ferry_error *why)
{
	*tls = NULL;
	if (!r->m->tls.creds)
		return recv(fd, hs, FERRY_MF_HS_LEN, MSG_WAITALL);
	if (ferry__tls_open(&r->m->tls, fd, "source", tls, why))
		return -1;
	size_t got = 0;
	while (got < FERRY_MF_HS_LEN) {
		ssize_t n = ferry__tls_recv(*tls, hs + got, FERRY_MF_HS_LEN - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/*
 * Takes connection fd as a channel if its handshake (due within 2 s)
 * belongs to this migration, else refuses it (*taken false). 0 or an error.
 */
static int take_channel(ferry_mf_receiver *r, int fd, const uint8_t uuid[16], bool *taken)
{
	ferry__sock_set_read_timeout(fd, 2000);
	uint8_t hs[FERRY_MF_HS_LEN] = { 0 };
	ferry_tls *tls;
	ferry_error terr = { 0 };
	ssize_t got = recv_hs(r, fd, hs, &tls, &terr);
	uint32_t id = 0;
	const char *why = got < 0 ? terr.msg : hs_refusal(r, hs, got, uuid, &id);
	*taken = !why;
	if (why) {
		ferry_warn("multifd: refused a connection: %s", why);
		ferry__tls_close(tls);
		close(fd);
		r->refused++;
		return 0;
	}
	ferry__sock_set_read_timeout(fd, 0);
	ferry_mf_recv_chan *c = &r->ch[id];
	c->r = r;
	c->id = id;
	int e = ferry__chan_init(&c->in, fd);
	if (e) {
		ferry__tls_close(tls);
		close(fd);
		return e;
	}
	c->in.tls = tls;
	/*
	 * A packet's header, block name, indices and checksums are read
	 * buffered, its pages straight into place (recv_raw): read ahead no
	 * further than the largest header, so that at most a few KiB of a
	 * packet's 1 MiB go through the buffer (with 64 KiB, 6% of the pages
	 * were copied twice).
	 */
	ferry__chan_read_ahead(&c->in, FERRY_MF_HDR_MAX);
	c->in.in_offset = FERRY_MF_HS_LEN; /* offsets count the handshake */
	c->in.peer = "source";
	ferry__mig_watch_peer(r->m, fd);
	if (r->m->chan.sums)
		ferry__sums_attach(&c->in, r->m->chan.sums, FERRY_SUM_MULTIFD + id);
	return 0;
}

/* Buffers (and zstd contexts) of every channel, then its thread. */
static int start_receivers(ferry_mf_receiver *r)
{
	for (unsigned i = 0; i < r->n; i++) {
		ferry_mf_recv_chan *c = &r->ch[i];
		c->bounce = malloc((size_t)FERRY_MF_MAX_PAGES << FERRY_PAGE_SHIFT);
		if (!c->bounce)
			return -ENOMEM;
		if (r->compression == FERRY_COMPRESS_ZSTD) {
			c->dctx = ZSTD_createDCtx();
			c->zcap = ZSTD_compressBound((size_t)FERRY_MF_MAX_PAGES * FERRY_PAGE_SIZE);
			c->zbuf = malloc(c->zcap);
			if (!c->dctx || !c->zbuf)
				return -ENOMEM;
		}
		int e = pthread_create(&c->thread, NULL, recv_thread, c);
		if (e)
			return -e;
		c->started = true;
	}
	return 0;
}

/* Thread: mig/dst/main, before any receive thread runs (r is its own until then). */
int ferry__mf_recv_start(ferry_mf_receiver *r, struct ferry_migration *m, ferry_parts *parts,
			 int listen_fd, const uint8_t uuid[16], unsigned n, uint32_t compression,
			 ferry_error *err)
{
	memset(r, 0, sizeof(*r));
	r->m = m;
	r->parts = parts;
	r->vm = m->vm;
	r->n = n;
	r->compression = compression;
	pthread_mutex_init(&r->lock, NULL);
	ferry__cond_init_monotonic(&r->cond); /* timed waits: wait_error, ferry__mf_recv_sync */
	r->inited = true;
	/*
	 * No channel connected yet, before any way out: ferry__mf_recv_stop
	 * closes every channel fd >= 0, and memset's 0 is the process's
	 * stdin (fuzz-stream found it: a MULTIFD command on a destination
	 * without a listener closed fd 0, then whatever reused it).
	 */
	for (unsigned i = 0; i < n; i++)
		r->ch[i].in.fd = -1;
	if (listen_fd < 0)
		return ferry__error_set(err, -EINVAL, "multifd needs a listening URI on the destination");
	uint64_t deadline = ferry__now_ns() + (uint64_t)HS_TIMEOUT_MS * 1000000;
	unsigned have = 0;
	while (have < n) {
		/* The main connection: its source gone, no channel comes. */
		int fd, e = ferry__sock_accept_by(listen_fd, deadline, atomic_load(&m->chan_fd), &fd);
		if (e == -ETIMEDOUT)
			return ferry__error_set(err, e, "only %u of %u multifd channels connected within %d s",
						have, n, HS_TIMEOUT_MS / 1000);
		if (e == -EPIPE)
			return ferry__error_set(err, e,
						"the source closed the connection with %u of %u multifd channels connected",
						have, n);
		if (e)
			return ferry__error_set(err, e, "multifd accept: %s", ferry_strerror(e));
		bool taken;
		if ((e = take_channel(r, fd, uuid, &taken)))
			return e;
		have += taken;
	}
	return start_receivers(r);
}

/*
 * Thread: mig/dst/main; takes r->lock. Without a receive thread (the
 * channels never all connected) nothing can report: no wait.
 */
int ferry__mf_recv_wait_error(ferry_mf_receiver *r, int timeout_ms, ferry_error *out)
{
	bool any = false;
	for (unsigned i = 0; i < r->n; i++)
		any |= r->ch[i].started; /* set by this thread (start_receivers) */
	return any ? wait_error(&r->lock, &r->cond, &r->err, timeout_ms, out) : 0;
}

/* Whether the source has closed the main connection (its FIN is here; data may be before it). */
static bool main_closed(ferry_mf_receiver *r)
{
	struct pollfd pfd = { .fd = r->m->chan.fd, .events = POLLRDHUP };
	return pfd.fd >= 0 && poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/*
 * Thread: mig/dst/main at MULTIFD_SYNC; takes r->lock. Waits in slices of
 * SYNC_SLICE_MS: a source that cancels sends its notice on the main
 * connection and closes it, and channels held up on their way (a silent
 * link, a frozen proxy) would otherwise keep this wait, and the notice
 * behind it, forever. -ENOTCONN then: the caller reads the last record.
 */
int ferry__mf_recv_sync(ferry_mf_receiver *r)
{
	pthread_mutex_lock(&r->lock);
	bool orphaned = false;
	while (r->at_sync < r->n && !r->err.code && !ferry__mig_cancelled(r->m) && !orphaned) {
		struct timespec dl = ferry__deadline_ms(SYNC_SLICE_MS);
		if (pthread_cond_timedwait(&r->cond, &r->lock, &dl) == ETIMEDOUT)
			orphaned = r->at_sync < r->n && main_closed(r);
	}
	int e = r->err.code		  ? r->err.code
		: ferry__mig_cancelled(r->m) ? -ECANCELED
		: orphaned		  ? -ENOTCONN
					  : 0;
	if (!e) {
		/* Parked at their SYNC: their offsets stand still until released. */
		r->load_bytes = r->load_cpu_ns = 0;
		for (unsigned i = 0; i < r->n; i++) {
			r->load_bytes += r->ch[i].in.in_offset;
			r->load_cpu_ns += ferry__thread_cpu_ns(r->ch[i].thread);
		}
		/* Every page of this pass is placed: let the next pass in. */
		r->at_sync = 0;
		r->generation++;
		pthread_cond_broadcast(&r->cond);
	}
	pthread_mutex_unlock(&r->lock);
	return e;
}

void ferry__mf_recv_load(ferry_mf_receiver *r, uint64_t *bytes, uint64_t *cpu_ns)
{
	*bytes = *cpu_ns = 0;
	if (!r->inited)
		return;
	pthread_mutex_lock(&r->lock);
	*bytes = r->load_bytes;
	*cpu_ns = r->load_cpu_ns;
	pthread_mutex_unlock(&r->lock);
}

/* Thread: mig/dst/main; joins mig/dst/recv_N. */
void ferry__mf_recv_quiesce(ferry_mf_receiver *r)
{
	if (!r->inited || r->joined)
		return;
	pthread_mutex_lock(&r->lock);
	r->quit = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	/* All woken first, then joined: their exits overlap. */
	for (unsigned i = 0; i < r->n; i++)
		if (r->ch[i].in.fd >= 0)
			ferry__chan_shutdown(&r->ch[i].in);
	for (unsigned i = 0; i < r->n; i++)
		if (r->ch[i].started) /* not cleared: recv_fail reads it unlocked */
			pthread_join(r->ch[i].thread, NULL);
	r->joined = true;
}

void ferry__mf_recv_stop(ferry_mf_receiver *r)
{
	if (!r->inited)
		return;
	ferry__mf_recv_quiesce(r);
	for (unsigned i = 0; i < r->n; i++) {
		ferry_mf_recv_chan *c = &r->ch[i];
		if (c->in.fd >= 0 || c->in.ibuf)
			ferry__chan_close(&c->in);
		ZSTD_freeDCtx(c->dctx);
		free(c->zbuf);
		free(c->bounce);
	}
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	r->inited = false;
}
