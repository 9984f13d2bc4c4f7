/* SPDX-License-Identifier: MIT */
/*
 * The guest-physical address map: which RAM block, at which host address,
 * backs a guest-physical range.
 *
 * DESIGN: the embedder places each RAM block at a guest-physical base; the
 * map is a table of [gpa, end) slots sorted by gpa, built once and never
 * changed, so lookups are a binary search over at most FERRY_GPA_MAP_MAX
 * entries with no lock and no callback. A range is valid only if it lies
 * entirely inside one slot: virtio buffers that span two blocks are
 * refused rather than split, which keeps every iovec inside one mapping.
 * All arithmetic is done as `len > end - gpa` so no sum can overflow.
 *
 * Thread: any (the map is immutable after creation).
 */
#include "virtio-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int slot_cmp(const void *a, const void *b)
{
	const struct gpa_slot *x = a, *y = b;
	return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

int ferry_gpa_map_create(const ferry_gpa_region *regions, unsigned n, ferry_gpa_map_t **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!regions || !n || n > FERRY_GPA_MAP_MAX)
		return -EINVAL;
	struct ferry_gpa_map *m = calloc(1, sizeof(*m) + n * sizeof(m->slot[0]));
	if (!m)
		return -ENOMEM;
	m->n = n;
	for (unsigned i = 0; i < n; i++) {
		const ferry_gpa_region *r = &regions[i];
		struct gpa_slot *s = &m->slot[i];
		if (!r->rb || r->gpa % FERRY_PAGE_SIZE)
			goto bad;
		uint64_t size = ferry_ram_block_size(r->rb);
		if (!size || size > UINT64_MAX - r->gpa)
			goto bad;
		s->gpa = r->gpa;
		s->end = r->gpa + size;
		s->host = ferry_ram_block_host(r->rb);
		s->rb = r->rb;
		s->name = ferry_ram_block_name(r->rb);
	}
	qsort(m->slot, n, sizeof(m->slot[0]), slot_cmp);
	for (unsigned i = 1; i < n; i++)
		if (m->slot[i].gpa < m->slot[i - 1].end)
			goto bad; /* overlap */
	*out = m;
	return 0;
bad:
	free(m);
	return -EINVAL;
}

void ferry_gpa_map_destroy(ferry_gpa_map_t *map)
{
	free(map);
}

int ferry__gpa_lookup(const struct ferry_gpa_map *m, uint64_t gpa, uint64_t len,
		      const struct gpa_slot **slot, const struct gpa_slot **next)
{
	/* The last slot whose start is <= gpa. */
	unsigned lo = 0, hi = m->n;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (m->slot[mid].gpa <= gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -EFAULT;
	const struct gpa_slot *s = &m->slot[lo - 1];
	if (gpa >= s->end || !len)
		return -EFAULT;
	*slot = s;
	if (len <= s->end - gpa)
		return 0;
	/*
	 * Runs past the block. If blocks directly following it cover the rest,
	 * it straddles (named by the first two), else part of it is a hole.
	 */
	uint64_t rest = len - (s->end - gpa);
	for (unsigned i = lo; i < m->n && m->slot[i].gpa == m->slot[i - 1].end; i++) {
		if (rest <= m->slot[i].end - m->slot[i].gpa) {
			if (next)
				*next = &m->slot[lo];
			return -EXDEV;
		}
		rest -= m->slot[i].end - m->slot[i].gpa;
	}
	return -EFAULT;
}

void *ferry_gpa_map_translate(const ferry_gpa_map_t *map, uint64_t gpa, uint64_t len,
			      ferry_ram_block_t **rb, uint64_t *offset)
{
	const struct gpa_slot *s;
	if (!map || ferry__gpa_lookup(map, gpa, len, &s, NULL) < 0)
		return NULL;
	if (rb)
		*rb = s->rb;
	if (offset)
		*offset = gpa - s->gpa;
	return s->host + (gpa - s->gpa);
}

void ferry_gpa_map_mark_dirty(const ferry_gpa_map_t *map, uint64_t gpa, uint64_t len)
{
	/* Block by block, so a range over several blocks marks each part. */
	while (map && len) {
		const struct gpa_slot *s, *nx;
		int r = ferry__gpa_lookup(map, gpa, len, &s, &nx);
		if (r == -EFAULT)
			return;
		uint64_t part = r == 0 ? len : s->end - gpa; /* -EXDEV: up to the block's end */
		ferry_ram_mark_dirty(s->rb, gpa - s->gpa, part);
		gpa += part;
		len -= part;
	}
}
