/* SPDX-License-Identifier: MIT */
/*
 * Ferry version macros.
 *
 * Rule (as libuv's): the same FERRY_VERSION_MAJOR means ABI-stable; a minor
 * release only adds symbols. FERRY_VERSION_AT_LEAST(maj, min) is true when the
 * headers are at least that version.
 */
#ifndef FERRY_VERSION_H
#define FERRY_VERSION_H

#define FERRY_VERSION_MAJOR 0
#define FERRY_VERSION_MINOR 1
#define FERRY_VERSION_PATCH 0
#define FERRY_VERSION_IS_RELEASE 0
#define FERRY_VERSION_SUFFIX "dev"

#define FERRY_VERSION_HEX \
	((FERRY_VERSION_MAJOR << 16) | (FERRY_VERSION_MINOR << 8) | FERRY_VERSION_PATCH)

#define FERRY_VERSION_AT_LEAST(maj, min) \
	(FERRY_VERSION_MAJOR > (maj) || \
	 (FERRY_VERSION_MAJOR == (maj) && FERRY_VERSION_MINOR >= (min)))

#endif /* FERRY_VERSION_H */
