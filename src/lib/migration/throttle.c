/* SPDX-License-Identifier: MIT */
/* Auto-converge decisions (see throttle.h). Thread: mig/src/main. */
#include "migration/throttle.h"

void ferry__throttle_init(ferry_throttle *t, uint64_t now_ns, uint64_t sent_total)
{
	*t = (ferry_throttle){ .period_start_ns = now_ns, .period_sent0 = sent_total };
}

unsigned ferry__throttle_next(const ferry_migration_params *p, unsigned pct, uint64_t dirty,
			      uint64_t sent, unsigned *high_cnt)
{
	/* Integer arithmetic on bytes: 100 x a period's bytes fits in 64 bits. */
	uint64_t threshold = sent / 100 * p->throttle_trigger_threshold +
			     sent % 100 * p->throttle_trigger_threshold / 100;
	if (dirty <= threshold || ++*high_cnt < 2)
		return pct;
	*high_cnt = 0;
	unsigned next;
	if (!pct) {
		next = p->cpu_throttle_initial;
	} else {
		unsigned inc = p->cpu_throttle_increment;
		if (p->cpu_throttle_tailslow) {
			/*
			 * vCPU time now (100 - pct) scaled by threshold/dirty is
			 * the time that would dirty exactly the threshold; step
			 * no further down than that.
			 */
			unsigned now = 100 - pct;
			unsigned ideal = (unsigned)((double)now * (double)threshold / (double)dirty);
			if (now - ideal < inc)
				inc = now - ideal;
		}
		next = pct + inc;
	}
	if (next > p->max_cpu_throttle)
		next = p->max_cpu_throttle;
	return next < pct ? pct : next;
}

bool ferry__throttle_sync(ferry_throttle *t, const ferry_migration_params *p, uint64_t now_ns,
			  uint64_t newly_bytes, uint64_t sent_total, unsigned *pct)
{
	t->period_dirty += newly_bytes;
	if (now_ns - t->period_start_ns < FERRY_THROTTLE_PERIOD_NS)
		return false;
	unsigned next = ferry__throttle_next(p, t->pct, t->period_dirty,
					     sent_total - t->period_sent0, &t->high_cnt);
	t->period_start_ns = now_ns;
	t->period_dirty = 0;
	t->period_sent0 = sent_total;
	if (next == t->pct)
		return false;
	t->pct = next;
	*pct = next;
	return true;
}
