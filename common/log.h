/* log.h -- timestamped log lines on stderr, one write per line. */
#ifndef LOUPE_LOG_H
#define LOUPE_LOG_H

#include <stddef.h>

#if defined(__GNUC__)
#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LOG_PRINTF(a, b)
#endif

/* "2025-01-31T12:00:00.123Z " into buf (at least 32 bytes). */
void log_time(char *buf, size_t len);
/* One line "<time> <message>\n" on stderr. */
void log_line(const char *fmt, ...) LOG_PRINTF(1, 2);

#endif
