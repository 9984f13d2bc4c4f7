/* SPDX-License-Identifier: MIT */
/*
 * The switchover's rate (see estimate.h for the design and its figures).
 *
 * Thread: any (pure).
 */
#include "migration/estimate.h"

uint64_t ferry__switch_rate(const ferry_rate_evidence *e)
{
	uint64_t bw = e->pass_bps;
	if (e->e2e_bps && e->e2e_bps < bw)
		bw = e->e2e_bps; /* the destination saw the pass go slower */
	if (!e->max_bandwidth)
		return bw;
	bw = bw / 10 * 9; /* headroom under a cap, see estimate.h */
	return bw < e->max_bandwidth ? bw : e->max_bandwidth;
}
