/* SPDX-License-Identifier: MIT */
/*
 * The migration bandwidth limiter (see ratelimit.h for the design).
 */
#include "stream/ratelimit.h"

#include <string.h>

#include "util/clock.h"

static uint64_t real_now(void *opaque)
{
	(void)opaque;
	return ferry__now_ns();
}

static void real_sleep(void *opaque, uint64_t ns)
{
	(void)opaque;
	ferry__sleep_ns(ns);
}

void ferry__rl_init(ferry_ratelimit *rl, uint64_t rate, const atomic_bool *cancel,
		    const ferry_rl_clock *clk)
{
	memset(rl, 0, sizeof(*rl));
	pthread_mutex_init(&rl->lock, NULL);
	rl->rate = rate;
	rl->cancel = cancel;
	if (clk)
		rl->clk = *clk;
	else
		rl->clk = (ferry_rl_clock){ real_now, real_sleep, NULL };
	rl->slot_cur = rl->clk.now_ns(rl->clk.opaque) / FERRY_RL_SLOT_NS;
}

void ferry__rl_destroy(ferry_ratelimit *rl)
{
	pthread_mutex_destroy(&rl->lock);
}

/* ns that n bytes take at rate (rate > 0). */
static uint64_t ns_for(uint64_t n, uint64_t rate)
{
	return (uint64_t)((unsigned __int128)n * 1000000000u / rate);
}

/* Adds n bytes sent at now to the window measure. Caller holds rl->lock. */
static void record(ferry_ratelimit *rl, uint64_t now, uint64_t n)
{
	uint64_t s = now / FERRY_RL_SLOT_NS;
	if (s >= rl->slot_cur + FERRY_RL_SLOTS) {
		memset(rl->slot, 0, sizeof(rl->slot));
		rl->win_sum = 0;
		rl->slot_cur = s;
	}
	for (; rl->slot_cur < s; rl->slot_cur++) { /* slots that left the window */
		uint64_t *old = &rl->slot[(rl->slot_cur + 1) % FERRY_RL_SLOTS];
		rl->win_sum -= *old;
		*old = 0;
	}
	/* A thread that read the clock before another took the lock: its slot is the newest. */
	rl->slot[rl->slot_cur % FERRY_RL_SLOTS] += n;
	rl->win_sum += n;
	if (rl->win_sum > rl->peak)
		rl->peak = rl->win_sum;
	rl->total += n;
}

/* Whether grants wait for the cap now; a cancel lifts it FERRY_RL_CANCEL_NS later. */
static bool limited(ferry_ratelimit *rl, uint64_t now)
{
	if (!rl->rate || rl->off)
		return false;
	if (!rl->cancel || !atomic_load_explicit(rl->cancel, memory_order_relaxed))
		return true;
	if (!rl->cancel_ns)
		rl->cancel_ns = now;
	return now - rl->cancel_ns < FERRY_RL_CANCEL_NS;
}

void ferry__rl_set_rate(ferry_ratelimit *rl, uint64_t rate)
{
	pthread_mutex_lock(&rl->lock);
	uint64_t now = rl->clk.now_ns(rl->clk.opaque);
	if (rl->rate && rate && rl->tat_ns > now) {
		/* Debt is bytes: what was owed at the old cap is owed at the new one. */
		uint64_t debt = (uint64_t)((unsigned __int128)(rl->tat_ns - now) * rl->rate /
					   1000000000u);
		rl->tat_ns = now + ns_for(debt, rate);
	} else if (!rl->rate) {
		rl->tat_ns = now; /* nothing is owed for bytes sent while unlimited */
	}
	rl->rate = rate;
	pthread_mutex_unlock(&rl->lock);
}

void ferry__rl_set_off(ferry_ratelimit *rl, bool off)
{
	pthread_mutex_lock(&rl->lock);
	rl->off = off;
	rl->tat_ns = rl->clk.now_ns(rl->clk.opaque);
	pthread_mutex_unlock(&rl->lock);
}

size_t ferry__rl_take(ferry_ratelimit *rl, size_t want)
{
	uint64_t waited = 0;
	pthread_mutex_lock(&rl->lock);
	for (;;) {
		uint64_t now = rl->clk.now_ns(rl->clk.opaque);
		if (!limited(rl, now)) {
			record(rl, now, want);
			break;
		}
		if (rl->tat_ns <= now) {
			/* Paid up: one grant of at most FERRY_RL_BURST_NS at the cap. */
			uint64_t burst = rl->rate * FERRY_RL_BURST_NS / 1000000000u;
			if (burst < FERRY_RL_MIN_GRANT)
				burst = FERRY_RL_MIN_GRANT;
			if (want > burst)
				want = (size_t)burst;
			rl->tat_ns = now + ns_for(want, rl->rate);
			record(rl, now, want);
			break;
		}
		uint64_t d = rl->tat_ns - now;
		if (d > FERRY_RL_NAP_NS)
			d = FERRY_RL_NAP_NS;
		pthread_mutex_unlock(&rl->lock);
		rl->clk.sleep_ns(rl->clk.opaque, d);
		waited += d;
		pthread_mutex_lock(&rl->lock);
	}
	rl->waited_ns += waited;
	pthread_mutex_unlock(&rl->lock);
	return want;
}

void ferry__rl_charge(ferry_ratelimit *rl, size_t n)
{
	pthread_mutex_lock(&rl->lock);
	uint64_t now = rl->clk.now_ns(rl->clk.opaque);
	record(rl, now, n);
	if (limited(rl, now))
		rl->tat_ns = (rl->tat_ns > now ? rl->tat_ns : now) + ns_for(n, rl->rate);
	pthread_mutex_unlock(&rl->lock);
}

int ferry__rl_send(ferry_ratelimit *rl, struct iovec *iov, int cnt,
		   int (*send)(void *ctx, struct iovec *iov, int cnt, int first), void *ctx)
{
	if (!rl)
		return send(ctx, iov, cnt, 0);
	size_t left = 0;
	for (int i = 0; i < cnt; i++)
		left += iov[i].iov_len;
	int i = 0;
	while (left) {
		size_t n = ferry__rl_take(rl, left);
		/* iovecs i..j hold the grant; iov[j] (not empty) its end. */
		int j = i;
		size_t acc = 0;
		while (acc + iov[j].iov_len < n)
			acc += iov[j++].iov_len;
		uint8_t *base = iov[j].iov_base;
		size_t len = iov[j].iov_len, part = n - acc;
		iov[j].iov_len = part;
		int r = send(ctx, iov + i, j - i + 1, i);
		if (r)
			return r;
		left -= n;
		/* send consumed iov[i..j]; what is left of iov[j] comes next. */
		iov[j].iov_base = base + part;
		iov[j].iov_len = len - part;
		i = part == len ? j + 1 : j;
	}
	return 0;
}

uint64_t ferry__rl_rate(ferry_ratelimit *rl)
{
	pthread_mutex_lock(&rl->lock);
	uint64_t r = rl->off ? 0 : rl->rate;
	pthread_mutex_unlock(&rl->lock);
	return r;
}

uint64_t ferry__rl_peak(ferry_ratelimit *rl)
{
	pthread_mutex_lock(&rl->lock);
	uint64_t p = rl->peak;
	pthread_mutex_unlock(&rl->lock);
	return p;
}

void ferry__rl_stats(ferry_ratelimit *rl, uint64_t *total, uint64_t *waited_ns)
{
	pthread_mutex_lock(&rl->lock);
	*total = rl->total;
	*waited_ns = rl->waited_ns;
	pthread_mutex_unlock(&rl->lock);
}
