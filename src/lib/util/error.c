/* SPDX-License-Identifier: MIT */
/*
 * Error names and messages for negative errno values and Ferry's own codes
 * (FERRY_ERRNO_MAP in ferry/common.h).
 */
#include "internal.h"

#include <limits.h>
#include <string.h>

/* The errno of a code of either sign (INT_MIN, which has no positive, as INT_MAX: unknown). */
static int errno_of(int err)
{
	return err == INT_MIN ? INT_MAX : err < 0 ? -err : err;
}

const char *ferry_strerror(int err)
{
	switch (err) {
#define FERRY_ERR_MSG(name, val, msg) \
	case (val):                    \
		return msg;
		FERRY_ERRNO_MAP(FERRY_ERR_MSG)
#undef FERRY_ERR_MSG
	default:
		break;
	}
	if (err == 0)
		return "success";
	/* strerror() is thread-safe in glibc for valid codes (static strings). */
	return strerror(errno_of(err));
}

const char *ferry_err_name(int err)
{
	switch (err) {
#define FERRY_ERR_NAME(name, val, msg) \
	case (val):                     \
		return "FERRY_" #name;
		FERRY_ERRNO_MAP(FERRY_ERR_NAME)
#undef FERRY_ERR_NAME
	default:
		break;
	}
	if (err == 0)
		return "OK";
	const char *n = strerrorname_np(errno_of(err));
	return n ? n : "EUNKNOWN";
}

unsigned ferry_version(void)
{
	return FERRY_VERSION_HEX;
}

const char *ferry_version_string(void)
{
#define FERRY_STR2(x) #x
#define FERRY_STR(x) FERRY_STR2(x)
	return FERRY_STR(FERRY_VERSION_MAJOR) "." FERRY_STR(FERRY_VERSION_MINOR) "." FERRY_STR(
		FERRY_VERSION_PATCH) "-" FERRY_VERSION_SUFFIX;
}
