/* SPDX-License-Identifier: MIT */
/*
 * Minimal logging to stderr with a level from FERRY_LOG (error, warn, info,
 * debug; default warn). Thread: any (one fprintf per message).
 */
#ifndef FERRY_UTIL_LOG_H
#define FERRY_UTIL_LOG_H

enum { FERRY_LOG_ERROR = 0, FERRY_LOG_WARN, FERRY_LOG_INFO, FERRY_LOG_DEBUG };

void ferry__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ferry__log_level(void);

#define ferry_err(...) ferry__log(FERRY_LOG_ERROR, __VA_ARGS__)
#define ferry_warn(...) ferry__log(FERRY_LOG_WARN, __VA_ARGS__)
#define ferry_info(...) ferry__log(FERRY_LOG_INFO, __VA_ARGS__)
#define ferry_dbg(...)                                    \
	do {                                              \
		if (ferry__log_level() >= FERRY_LOG_DEBUG) \
			ferry__log(FERRY_LOG_DEBUG, __VA_ARGS__); \
	} while (0)

/*
 * At a thread's end, at debug level: the CPU time it used ("thread done:
 * 12.3 ms of CPU"), for the per-thread accounting of a migration's cost.
 * The line's prefix names the thread.
 */
void ferry__log_thread_cpu(void);

#endif
