/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the bandwidth limiter (src/lib/stream/ratelimit.c) on a
 * fake clock: writes of mixed sizes (many bigger than one grant) never put
 * more than 110% of the cap into any 100 ms window, checked against a log of
 * every grant, not the limiter's own measure (which is checked against the
 * log too); bytes sent without a grant are debt that later grants pay;
 * a cap changed mid-way holds from then on; unlimited grants do not wait,
 * cancelled ones only after FERRY_RL_CANCEL_NS; ferry__rl_send splits iovecs into grants in order.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "stream/ratelimit.h"

#define MS 1000000ull
#define MB 1000000ull

typedef struct fake {
	uint64_t now;
	uint64_t sleeps;
} fake;

static uint64_t fake_now(void *o) { return ((fake *)o)->now; }
static void fake_sleep(void *o, uint64_t ns)
{
	((fake *)o)->now += ns;
	((fake *)o)->sleeps++;
}

/* Every grant: when and how much. */
typedef struct glog {
	uint64_t t[200000];
	uint64_t n[200000];
	size_t len;
} glog;

static fake clk_state;
static glog lg;

static void setup_rl(ferry_ratelimit *rl, uint64_t rate, const atomic_bool *cancel)
{
	clk_state = (fake){ .now = 1000 * MS };
	lg.len = 0;
	ferry_rl_clock clk = { fake_now, fake_sleep, &clk_state };
	ferry__rl_init(rl, rate, cancel, &clk);
}

/* One write of n bytes, as a channel does it: grants until all is sent. */
static void write_n(ferry_ratelimit *rl, size_t n)
{
	while (n) {
		size_t k = ferry__rl_take(rl, n);
		assert_true(k >= 1 && k <= n);
		assert_true(lg.len < 200000);
		lg.t[lg.len] = clk_state.now;
		lg.n[lg.len++] = k;
		n -= k;
	}
}

/* Largest sum of grants within any [t, t + 100 ms) of the log from index `from`. */
static uint64_t max_window(size_t from, size_t to)
{
	uint64_t best = 0, sum = 0;
	size_t lo = from;
	for (size_t hi = from; hi < to; hi++) {
		sum += lg.n[hi];
		while (lg.t[hi] - lg.t[lo] >= FERRY_RL_WINDOW_NS)
			sum -= lg.n[lo++];
		if (sum > best)
			best = sum;
	}
	return best;
}

static const size_t sizes[] = { 37, 4096, 65536, 1u << 20, 3u << 20, 200, 12288, 700000 };

static void t_mixed_sizes(void **s)
{
	(void)s;
	ferry_ratelimit rl;
	uint64_t cap = 10 * MB; /* grants of at most 50 kB */
	setup_rl(&rl, cap, NULL);
	uint64_t t0 = clk_state.now, total = 0;
	for (int round = 0; round < 6; round++)
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			write_n(&rl, sizes[i]);
			total += sizes[i];
		}
	/* No window above 110% (in fact 105%: one grant above the cap's 100 ms). */
	uint64_t w = max_window(0, lg.len);
	assert_true(w <= cap / 10 + cap * FERRY_RL_BURST_NS / 1000000000u);
	assert_true(w * 100 <= cap / 10 * 110);
	/* The limiter's own measure agrees with the log (1 ms slots: within a grant). */
	uint64_t peak = ferry__rl_peak(&rl);
	assert_true(peak <= w);
	assert_true(peak + cap * FERRY_RL_BURST_NS / 1000000000u >= w);
	/* Not slower than the cap either: the whole took total / cap, to 1%. */
	uint64_t took = clk_state.now - t0, ideal = total * 1000000000ull / cap;
	assert_true(took * 100 >= ideal * 99 - 100);
	assert_true(took <= ideal + FERRY_RL_BURST_NS);
	uint64_t tot, waited;
	ferry__rl_stats(&rl, &tot, &waited);
	assert_int_equal(tot, total);
	assert_true(waited >= took - FERRY_RL_BURST_NS);
	ferry__rl_destroy(&rl);
}

static void t_debt_carried(void **s)
{
	(void)s;
	ferry_ratelimit rl;
	uint64_t cap = 10 * MB;
	setup_rl(&rl, cap, NULL);
	uint64_t t0 = clk_state.now;
	/* 2 MB went out in one piece without a grant: 200 ms of debt. */
	ferry__rl_charge(&rl, 2 * MB);
	assert_int_equal(ferry__rl_peak(&rl), 2 * MB);
	write_n(&rl, 1);
	assert_int_equal(lg.t[0], t0 + 200 * MS);
	/* Long waits are naps that look at cancel and the cap again. */
	assert_true(clk_state.sleeps >= 200 * MS / FERRY_RL_NAP_NS);
	/* Then the cap, not more: the debt was not forgiven after one nap. */
	size_t from = lg.len;
	write_n(&rl, 5 * MB);
	assert_true(max_window(from, lg.len) * 100 <= cap / 10 * 110);
	uint64_t took = clk_state.now - t0;
	assert_true(took >= (2 * MB + 5 * MB - 60000) * 1000000000ull / cap);
	ferry__rl_destroy(&rl);
}

static void t_cap_change(void **s)
{
	(void)s;
	ferry_ratelimit rl;
	uint64_t hi = 50 * MB, lo = 8 * MB;
	setup_rl(&rl, hi, NULL);
	write_n(&rl, 20 * MB); /* 400 ms */
	size_t mid = lg.len;
	assert_true(max_window(0, mid) * 100 <= hi / 10 * 110);
	/* Lowered (migrate-set-parameters): debt in bytes is kept, the new cap holds at once. */
	ferry__rl_set_rate(&rl, lo);
	write_n(&rl, 4 * MB);
	assert_true(max_window(mid, lg.len) * 100 <= lo / 10 * 110);
	/* Windows straddling the change hold the higher cap. */
	assert_true(max_window(0, lg.len) * 100 <= hi / 10 * 110);
	/* Lifted: no more waiting, one grant per write. */
	ferry__rl_set_rate(&rl, 0);
	uint64_t before = clk_state.now, n = lg.len;
	write_n(&rl, 64 * MB);
	assert_int_equal(clk_state.now, before);
	assert_int_equal(lg.len, n + 1);
	/* Set again: paced from now, nothing owed for the unlimited bytes. */
	ferry__rl_set_rate(&rl, lo);
	write_n(&rl, 1);
	assert_int_equal(clk_state.now, before);
	ferry__rl_destroy(&rl);
}

static void t_off_and_cancel(void **s)
{
	(void)s;
	ferry_ratelimit rl;
	atomic_bool cancel = false;
	setup_rl(&rl, 1 * MB, &cancel);
	/* Off (postcopy): not limited, still measured. */
	ferry__rl_set_off(&rl, true);
	uint64_t t0 = clk_state.now;
	write_n(&rl, 8 * MB);
	assert_int_equal(clk_state.now, t0);
	assert_int_equal(ferry__rl_peak(&rl), 8 * MB);
	ferry__rl_set_off(&rl, false);
	write_n(&rl, 100000); /* 100 ms at 1 MB/s */
	assert_true(clk_state.now >= t0 + 90 * MS);
	/* Cancelled: the cap still holds (the sender stops at its next record)... */
	atomic_store(&cancel, true);
	uint64_t t1 = clk_state.now;
	write_n(&rl, 100000);
	assert_true(clk_state.now >= t1 + 90 * MS);
	/* ...for FERRY_RL_CANCEL_NS; after that grants come at once, debt or not. */
	ferry__rl_charge(&rl, 50 * MB); /* 50 s of debt at 1 MB/s */
	uint64_t t2 = clk_state.now;
	assert_int_equal(ferry__rl_take(&rl, 1000), 1000);
	assert_true(clk_state.now <= t1 + FERRY_RL_CANCEL_NS + FERRY_RL_NAP_NS);
	assert_true(clk_state.now >= t2);
	assert_int_equal(ferry__rl_take(&rl, 5 * MB), 5 * MB);
	uint64_t t3 = clk_state.now;
	assert_int_equal(ferry__rl_take(&rl, 5 * MB), 5 * MB);
	assert_int_equal(clk_state.now, t3);
	ferry__rl_destroy(&rl);
}

/* ferry__rl_send: the pieces concatenate to the input, in order, each one grant. */
typedef struct sink {
	uint8_t buf[1 << 20];
	size_t len;
	unsigned calls;
	size_t biggest;
} sink;

static int sink_send(void *ctx, struct iovec *iov, int cnt, int first)
{
	sink *k = ctx;
	(void)first;
	size_t n = 0;
	for (int i = 0; i < cnt; i++) {
		memcpy(k->buf + k->len, iov[i].iov_base, iov[i].iov_len);
		k->len += iov[i].iov_len;
		n += iov[i].iov_len;
	}
	k->calls++;
	if (n > k->biggest)
		k->biggest = n;
	return 0;
}

static void t_send_split(void **s)
{
	(void)s;
	static uint8_t src[600000];
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i * 7 + i / 251);
	size_t lens[] = { 10, 0, 4096, 250000, 3, 0, 200000, 145891 };
	struct iovec iov[8];
	size_t off = 0;
	for (int i = 0; i < 8; i++) {
		iov[i].iov_base = src + off;
		iov[i].iov_len = lens[i];
		off += lens[i];
	}
	assert_int_equal(off, sizeof(src));
	ferry_ratelimit rl;
	setup_rl(&rl, 2 * MB, NULL); /* grants of 10 kB */
	static sink k;
	memset(&k, 0, sizeof(k));
	assert_int_equal(ferry__rl_send(&rl, iov, 8, sink_send, &k), 0);
	assert_int_equal(k.len, sizeof(src));
	assert_memory_equal(k.buf, src, sizeof(src));
	assert_int_equal(k.biggest, 10000);
	assert_int_equal(k.calls, (sizeof(src) + 9999) / 10000);
	/* Without a limiter: one call. */
	memset(&k, 0, sizeof(k));
	struct iovec one = { src, 1000 };
	assert_int_equal(ferry__rl_send(NULL, &one, 1, sink_send, &k), 0);
	assert_int_equal(k.calls, 1);
	ferry__rl_destroy(&rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_mixed_sizes),
		cmocka_unit_test(t_debt_carried),
		cmocka_unit_test(t_cap_change),
		cmocka_unit_test(t_off_and_cancel),
		cmocka_unit_test(t_send_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
