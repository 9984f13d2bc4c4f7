/* SPDX-License-Identifier: MIT */
/*
 * The fuzz targets' oracle (tests/fuzz/fuzz-*.c): CHECK(c) aborts, naming
 * the condition and where it is, when c does not hold, so that libFuzzer
 * records the input as a crash. Thread: any.
 */
#ifndef FERRY_FUZZ_CHECK_H
#define FERRY_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                   \
	do {                                                                       \
		if (!(c)) {                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,     \
				__LINE__, #c);                                     \
			abort();                                                   \
		}                                                                  \
	} while (0)

#endif
