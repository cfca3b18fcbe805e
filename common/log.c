/* log.c -- log lines: the line is formatted first, then written with one call so threads never interleave. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void log_time(char *buf, size_t len) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static int json_mode;

void log_set_json(int on) { json_mode = on; }
int log_is_json(void) { return json_mode; }

/* Append the n bytes of piece to out at *at if they fit with a NUL; returns 0 when full. */
static int put(char *out, size_t outlen, size_t *at, const char *piece, size_t n) {
    if (*at + n + 1 > outlen) return 0;
    memcpy(out + *at, piece, n);
    *at += n;
    return 1;
}

static void escape(const char *s, char *out, size_t outlen, int json) {
    size_t at = 0;
    if (!outlen) return;
    while (*s) {
        unsigned char c = (unsigned char)*s;
        int n = utf8_seq_len(s);
        char e[8];
        int ok;
        if (n > 1) {
            ok = put(out, outlen, &at, s, (size_t)n);
        } else if (n == 1 && c >= 0x20 && c != 0x7f && c != '\\' && !(json && c == '"')) {
            ok = put(out, outlen, &at, s, 1);
        } else if (json && (c == '"' || c == '\\')) {
            e[0] = '\\';
            e[1] = (char)c;
            ok = put(out, outlen, &at, e, 2);
        } else {
            snprintf(e, sizeof e, json ? "\\u%04x" : "\\x%02x", c);
            ok = put(out, outlen, &at, e, strlen(e));
            n = 1;
        }
        if (!ok) break;
        s += n > 0 ? n : 1;
    }
    out[at] = 0;
}

void log_escape_text(const char *s, char *out, size_t outlen) { escape(s, out, outlen, 0); }
void log_escape_json(const char *s, char *out, size_t outlen) { escape(s, out, outlen, 1); }

/* Write one formatted line (the '\n' added) with one call. */
static void emit(char *line, int n, size_t size) {
    if (n < 0) return;
    if ((size_t)n >= size - 1) n = (int)size - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void log_line(const char *fmt, ...) {
    char line[2048], ts[40], msg[1536];
    log_time(ts, sizeof ts);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int n;
    if (json_mode) {
        char esc[1900];
        log_escape_json(msg, esc, sizeof esc);
        n = snprintf(line, sizeof line, "{\"time\":\"%s\",\"msg\":\"%s\"}", ts, esc);
        if (n >= (int)sizeof line) return; /* cannot happen: the escapes fit */
    } else {
        n = snprintf(line, sizeof line, "%s %s", ts, msg);
    }
    emit(line, n, sizeof line);
}

void log_json(const char *fmt, ...) {
    char line[4096], ts[40];
    log_time(ts, sizeof ts);
    int n = snprintf(line, sizeof line, "{\"time\":\"%s\",", ts);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 2, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)(n + m) >= sizeof line - 2) return; /* a cut object would not parse: drop it */
    n += m;
    line[n++] = '}';
    emit(line, n, sizeof line);
}
