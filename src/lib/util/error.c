/* SPDX-License-Identifier: MIT */
/*
 * Error names and messages for negative errno values and Ferry's own codes
 * (FERRY_ERRNO_MAP in ferry/common.h), and the ferry_error that carries an
 * error's text inside the library (error.h).
 */
#include "util/error.h"

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

int ferry__error_setv(ferry_error *e, int code, const char *fmt, va_list ap)
{
	if (e->code)
		return e->code;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	e->code = code;
	return code;
}

int ferry__error_set(ferry_error *e, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = ferry__error_setv(e, code, fmt, ap);
	va_end(ap);
	return r;
}

int ferry__error_copy(ferry_error *dst, const ferry_error *src)
{
	return src->code ? ferry__error_set(dst, src->code, "%s", src->msg) : dst->code;
}

int ferry__error_out(int r, const ferry_error *e, char *buf, size_t len)
{
	if (r && buf && len)
		snprintf(buf, len, "%s", e->msg);
	return r;
}

const char *ferry__error_text(const ferry_error *e, int code)
{
	return e->msg[0] ? e->msg : ferry_strerror(code);
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
