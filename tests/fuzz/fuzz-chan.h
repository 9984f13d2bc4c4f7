/* SPDX-License-Identifier: MIT */
/*
 * What the targets that read a ferry_chan share (devstate, vmsd, rp, hs):
 * a channel over a memfd holding the input, read as a peer's bytes would
 * be, and the oracle for a refusal. Thread: libFuzzer's one thread.
 */
#ifndef FERRY_FUZZ_CHAN_H
#define FERRY_FUZZ_CHAN_H

#include <stdint.h>
#include <unistd.h>

#include "fuzz-check.h"
#include "stream/chan.h"

/* c reads data (size bytes) from the start: memfd (the target's own) holds it. */
static inline void fuzz_chan_open(ferry_chan *c, int memfd, const uint8_t *data, size_t size)
{
	CHECK(!ftruncate(memfd, 0) && pwrite(memfd, data, size, 0) == (ssize_t)size);
	CHECK(lseek(memfd, 0, SEEK_SET) == 0);
	CHECK(ferry__chan_init(c, dup(memfd)) == 0);
}

/* A refusal: r is the chan's sticky error, with a message, seen by every later read. */
static inline void fuzz_check_refused(ferry_chan *c, int r)
{
	uint8_t b;
	CHECK(r < 0 && c->in_err.code == r && c->in_err.msg[0]);
	CHECK(ferry__chan_get_u8(c, &b) == r);
}

#endif
