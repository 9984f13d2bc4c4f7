/* SPDX-License-Identifier: MIT */
/*
 * Definitions shared by every public Ferry header: export attribute and the
 * error convention.
 *
 * Error convention (everywhere in libferry): a function returns 0 or a
 * positive value on success and a negative errno on failure. Ferry-specific
 * failures use the codes of FERRY_ERRNO_MAP below, in a range beyond errno.
 * ferry_strerror() and ferry_err_name() accept both kinds.
 */
#ifndef FERRY_COMMON_H
#define FERRY_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FERRY_BUILDING_LIBRARY)
#define FERRY_EXTERN __attribute__((visibility("default")))
#else
#define FERRY_EXTERN
#endif

/* Ferry's own error codes: name, value, message. */
#define FERRY_ERRNO_MAP(XX)                                                    \
	XX(EBADSTREAM, -4001, "corrupt or truncated migration stream")         \
	XX(EVERSION, -4002, "unsupported stream or device state version")      \
	XX(EMISMATCH, -4003, "source and destination configurations differ")   \
	XX(EPEER, -4004, "the migration peer reported a failure")              \
	XX(EBROKEN, -4005, "object is broken after an earlier failure")

enum {
#define FERRY_ERR_ENUM(name, val, msg) FERRY_##name = (val),
	FERRY_ERRNO_MAP(FERRY_ERR_ENUM)
#undef FERRY_ERR_ENUM
};

/*
 * Message for an error code (negative errno or FERRY_E*). Never NULL.
 * Thread: any.
 */
FERRY_EXTERN const char *ferry_strerror(int err);

/* Symbolic name ("ECONNREFUSED", "FERRY_EBADSTREAM"). Thread: any. */
FERRY_EXTERN const char *ferry_err_name(int err);

/* Version of the library at run time, as FERRY_VERSION_HEX. Thread: any. */
FERRY_EXTERN unsigned ferry_version(void);
FERRY_EXTERN const char *ferry_version_string(void);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_COMMON_H */
