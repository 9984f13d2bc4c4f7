/* SPDX-License-Identifier: MIT */
/*
 * The switchover's rate (see estimate.h for the design and its figures).
 *
 * Thread: any (pure).
 */
#include "migration/estimate.h"

/* The floor: the pass's rate, or its end to end rate when slower; 90% under a cap. */
static uint64_t floor_rate(const ferry_rate_evidence *e)
{
	uint64_t bw = e->pass_bps;
	if (e->e2e_bps && e->e2e_bps < bw)
		bw = e->e2e_bps; /* the destination saw the pass go slower */
	return e->max_bandwidth ? bw / 10 * 9 : bw;
}

/* The lift: the destination's rate, within the first pass's and the cap, at 70%. */
static uint64_t lift_rate(const ferry_rate_evidence *e, uint64_t floor)
{
	uint64_t stop = e->dest_bps < e->first_bps ? e->dest_bps : e->first_bps;
	if (e->max_bandwidth && stop > e->max_bandwidth)
		stop = e->max_bandwidth;
	stop = stop / 10 * 7;
	if (floor && stop > floor / 100 * FERRY_LIFT_MAX_PCT)
		stop = floor / 100 * FERRY_LIFT_MAX_PCT;
	return stop;
}

uint64_t ferry__switch_rate(const ferry_rate_evidence *e)
{
	uint64_t floor = floor_rate(e), lift = lift_rate(e, floor);
	uint64_t bw = lift > floor ? lift : floor;
	if (e->max_bandwidth && bw > e->max_bandwidth)
		bw = e->max_bandwidth; /* a cap lowered since (migrate-set-parameters) */
	return bw;
}
