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
/* One line "<time> <message>\n" on stderr; with JSON lines on,
 * {"time": "...", "msg": "<message>"}. */
void log_line(const char *fmt, ...) LOG_PRINTF(1, 2);

/* Write JSON lines from now on (--log-format json); set once at start-up. */
void log_set_json(int on);
int log_is_json(void);

/* Copy s into out (outlen bytes, always NUL-terminated, cut at a whole
 * escape) so that no client byte can end or forge a line:
 *  - text: control bytes, DEL, '\\' and bytes outside well-formed UTF-8 become \xNN;
 *  - json: the inside of a JSON string: '"', '\\' and control bytes escaped,
 *    bytes outside well-formed UTF-8 as \u00NN of the byte (never invalid JSON). */
void log_escape_text(const char *s, char *out, size_t outlen);
void log_escape_json(const char *s, char *out, size_t outlen);

/* One JSON line {"time": "...", <fields>} on stderr; fields are JSON members,
 * already escaped ("\"status\":200,\"path\":\"/x\""). */
void log_json(const char *fmt, ...) LOG_PRINTF(1, 2);

#endif
