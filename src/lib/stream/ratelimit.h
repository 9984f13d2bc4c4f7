/* SPDX-License-Identifier: MIT */
/*
 * The bandwidth limiter of one migration (max-bandwidth): every byte that a
 * limited channel hands to the kernel is granted here first, so the cap
 * holds over the sum of the main connection and all multifd channels, at
 * every moment rather than on average.
 *
 * DESIGN: pacing by a virtual clock (GCRA, a token bucket with no idle
 * credit). `tat_ns` is the time at which every byte granted so far is paid
 * for at the cap. A grant of n bytes starts at max(tat_ns, now) and moves
 * tat_ns on by n / cap; the caller sleeps until its start, so that grants
 * leave in the order they were asked for (fair between the multifd send
 * threads) and none is ever forgotten: bytes sent without a grant
 * (ferry__rl_charge) are debt, paid by the next grants' waits. A grant is at
 * most FERRY_RL_BURST_NS worth of the cap, so no 100 ms window carries more
 * than cap * (100 + 5) ms, whatever the callers' write sizes: they split
 * their writes into grants (ferry__rl_send). When idle nothing is saved up,
 * so there is no burst after a pause either.
 *
 * Waits are naps of at most FERRY_RL_NAP_NS that look at the migration's
 * cancel flag and at the cap (ferry__rl_set_rate from
 * migrate-set-parameters takes effect within a nap; a cap lifted to
 * unlimited ends the waits). A cancel does not lift the cap at once: the
 * sender stops at its next record boundary, at most one flush later, and
 * the cap holds until then. Only a cancel older than FERRY_RL_CANCEL_NS (a
 * tiny cap, or debt that would take longer) gets its grants at once, so a
 * cancel never waits on the cap for longer than that.
 *
 * It also measures: bytes per 1 ms slot over the last FERRY_RL_SLOTS slots,
 * and the largest sum of 100 consecutive slots seen (the peak 100 ms
 * window, ferry_migration_info.bandwidth_peak_window_bytes). That is recorded
 * when a grant is handed out, immediately before the caller writes it.
 *
 * Thread: any; all state below is protected by `lock`. The clock is
 * injectable (tests run it fake).
 */
#ifndef FERRY_STREAM_RATELIMIT_H
#define FERRY_STREAM_RATELIMIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define FERRY_RL_WINDOW_NS 100000000ull /* the window the cap must hold in */
#define FERRY_RL_BURST_NS 5000000ull    /* largest grant: this long at the cap */
#define FERRY_RL_NAP_NS 5000000ull      /* longest sleep between cancel checks */
#define FERRY_RL_SLOT_NS 1000000ull     /* measuring resolution */
#define FERRY_RL_SLOTS 100u             /* FERRY_RL_WINDOW_NS / FERRY_RL_SLOT_NS */
#define FERRY_RL_MIN_GRANT 1024u
#define FERRY_RL_CANCEL_NS 1000000000ull /* a cancel waits on the cap at most this long */        /* grants are never smaller (tiny caps) */

typedef struct ferry_rl_clock {
	uint64_t (*now_ns)(void *opaque);
	void (*sleep_ns)(void *opaque, uint64_t ns);
	void *opaque;
} ferry_rl_clock;

typedef struct ferry_ratelimit {
	pthread_mutex_t lock;
	/* Protected by lock. */
	uint64_t rate;      /* bytes/s; 0 = unlimited */
	bool off;           /* not limited for now (postcopy), still measured */
	uint64_t tat_ns;    /* when everything granted so far is paid for */
	uint64_t slot[FERRY_RL_SLOTS]; /* bytes per slot, ring indexed by slot number */
	uint64_t slot_cur;  /* number (now / FERRY_RL_SLOT_NS) of the newest slot */
	uint64_t win_sum;   /* sum of the ring: the last 100 slots */
	uint64_t peak;      /* largest win_sum seen */
	uint64_t total;     /* bytes granted or charged */
	uint64_t waited_ns; /* time callers slept for the cap, summed over threads */
	uint64_t cancel_ns; /* when a grant first saw the cancel flag (0: not yet) */
	/* Set at init, read-only after. */
	const atomic_bool *cancel; /* NULL: never cancelled */
	ferry_rl_clock clk;
} ferry_ratelimit;

/*
 * rate: bytes/s (0 unlimited). cancel: flag to watch while waiting (may be
 * NULL). clk: NULL for CLOCK_MONOTONIC and nanosleep. Cannot fail.
 */
void ferry__rl_init(ferry_ratelimit *rl, uint64_t rate, const atomic_bool *cancel,
		    const ferry_rl_clock *clk);
void ferry__rl_destroy(ferry_ratelimit *rl);
/* New cap, effective for the next grant and for waits under way. Thread: any. */
void ferry__rl_set_rate(ferry_ratelimit *rl, uint64_t rate);
/* Suspends (true) or restores the limit; bytes are still measured. */
void ferry__rl_set_off(ferry_ratelimit *rl, bool off);
/*
 * Waits until up to `want` bytes may be sent and returns how many (1..want;
 * want itself when unlimited or cancelled for FERRY_RL_CANCEL_NS). The caller writes them right
 * away. want must be > 0.
 */
size_t ferry__rl_take(ferry_ratelimit *rl, size_t want);
/* Records n bytes sent without a grant: measured, and paid for as debt. */
void ferry__rl_charge(ferry_ratelimit *rl, size_t n);
/*
 * Sends iov[0..cnt) in grants: send(ctx, iov + i, k, i) writes iovecs
 * [i, i + k) of the array, the last one possibly shortened, and returns 0 or
 * a negative errno (which this returns). iov is consumed like
 * ferry__sock_send_all's. rl NULL: one call with everything.
 */
int ferry__rl_send(ferry_ratelimit *rl, struct iovec *iov, int cnt,
		   int (*send)(void *ctx, struct iovec *iov, int cnt, int first), void *ctx);
/* The cap in force now (bytes/s): 0 when unlimited or suspended. Thread: any. */
uint64_t ferry__rl_rate(ferry_ratelimit *rl);
/* The largest number of bytes in any 100 ms window so far. */
uint64_t ferry__rl_peak(ferry_ratelimit *rl);
/* Bytes granted or charged so far, and the summed waiting time (ns). */
void ferry__rl_stats(ferry_ratelimit *rl, uint64_t *total, uint64_t *waited_ns);

#endif /* FERRY_STREAM_RATELIMIT_H */
