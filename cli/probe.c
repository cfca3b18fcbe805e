/* probe.c -- `loupe probe URL`: one HTTP GET, exit 0 on a 2xx answer. For container HEALTHCHECKs
 * and scripts on images that have no curl. */
#define _GNU_SOURCE /* getaddrinfo, clock_gettime, SOCK_NONBLOCK under -std=c11 */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static void probe_usage(FILE *f) {
    fprintf(f, "usage: loupe probe [--timeout SECONDS] URL\n\n"
               "GET URL (http://HOST[:PORT]/PATH) once. Exit 0 when the answer is 2xx, 1 when it is\n"
               "another status or there is no answer within the timeout (default 5 s), 2 on a bad\n"
               "command line. The status line goes to stdout, the reason for a failure to stderr.\n"
               "Example (a Dockerfile HEALTHCHECK): loupe probe http://127.0.0.1:8080/readyz\n");
}

/* Split http://host[:port][/path] into its parts (host without brackets for IPv6).
 * Returns 0, or -1 with the reason in err. */
static int parse_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen, const char **path,
                     char *err, size_t errlen) {
    if (!strncmp(url, "https://", 8)) {
        snprintf(err, errlen, "https is not supported: probe the daemon's plain port, or run it without --tls-cert");
        return -1;
    }
    if (strncmp(url, "http://", 7)) {
        snprintf(err, errlen, "'%s' is not an http:// URL", url);
        return -1;
    }
    const char *h = url + 7, *slash = strchr(h, '/');
    *path = slash ? slash : "/";
    size_t n = slash ? (size_t)(slash - h) : strlen(h);
    const char *hend = h + n, *colon;
    if (*h == '[') {
        const char *close = memchr(h, ']', n);
        if (!close) {
            snprintf(err, errlen, "unclosed '[' in '%s'", url);
            return -1;
        }
        colon = close + 1 < hend && close[1] == ':' ? close + 1 : NULL;
        n = (size_t)(close - h - 1);
        h++;
    } else {
        colon = memchr(h, ':', n);
        if (colon) n = (size_t)(colon - h);
    }
    if (!n || n >= hostlen) {
        snprintf(err, errlen, "no host in '%s'", url);
        return -1;
    }
    memcpy(host, h, n);
    host[n] = 0;
    size_t pn = colon ? (size_t)(hend - colon - 1) : 0;
    if (colon && (!pn || pn >= portlen || strspn(colon + 1, "0123456789") < pn)) {
        snprintf(err, errlen, "bad port in '%s'", url);
        return -1;
    }
    if (colon) {
        memcpy(port, colon + 1, pn);
        port[pn] = 0;
    } else {
        snprintf(port, portlen, "80");
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait until fd is ready for events or the deadline passes; 0 ready, -1 timed out or failed. */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) return -1;
        struct pollfd p = {fd, events, 0};
        int rc = poll(&p, 1, (int)(left * 1000) + 1);
        if (rc > 0) return 0;
        if (rc < 0 && errno != EINTR) return -1;
    }
}

/* Connect to host:port before the deadline; the socket, or -1 with the reason in err. */
static int connect_to(const char *host, const char *port, double deadline, char *err, size_t errlen) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    snprintf(err, errlen, "cannot connect to %s:%s", host, port);
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (connect(fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS) soerr = errno;
        else if (wait_fd(fd, POLLOUT, deadline)) soerr = ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl)) soerr = errno;
        if (soerr) {
            snprintf(err, errlen, "cannot connect to %s:%s: %s", host, port, strerror(soerr));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

int probe_main(int argc, char **argv) {
    double timeout = 5;
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            probe_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            char *end;
            timeout = strtod(argv[++i], &end);
            if (*end || end == argv[i] || !(timeout > 0 && timeout <= 3600)) {
                fprintf(stderr, "loupe probe: --timeout must be a number of seconds in (0, 3600]\n");
                return 2;
            }
        } else if (argv[i][0] == '-' || url) {
            fprintf(stderr, "loupe probe: unexpected argument '%s'\n", argv[i]);
            probe_usage(stderr);
            return 2;
        } else {
            url = argv[i];
        }
    }
    if (!url) {
        probe_usage(stderr);
        return 2;
    }
    char host[256], port[8], err[512];
    const char *path;
    if (parse_url(url, host, sizeof host, port, sizeof port, &path, err, sizeof err)) {
        fprintf(stderr, "loupe probe: %s\n", err);
        return 2;
    }
    double deadline = now_s() + timeout;
    int fd = connect_to(host, port, deadline, err, sizeof err);
    if (fd < 0) {
        fprintf(stderr, "loupe probe: %s\n", err);
        return 1;
    }
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: loupe-probe\r\nConnection: close\r\n\r\n", path,
                     host, port);
    if (n < 0 || (size_t)n >= sizeof req) {
        fprintf(stderr, "loupe probe: the URL is too long\n");
        close(fd);
        return 2;
    }
    size_t sent = 0;
    while (sent < (size_t)n) {
        ssize_t k = send(fd, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == EINTR) && !wait_fd(fd, POLLOUT, deadline)) continue;
        if (k <= 0) {
            fprintf(stderr, "loupe probe: cannot send to %s:%s: %s\n", host, port, k < 0 ? strerror(errno) : "closed");
            close(fd);
            return 1;
        }
        sent += (size_t)k;
    }
    /* The status line is all a probe needs: "HTTP/1.x NNN reason". */
    char line[512];
    size_t got = 0;
    while (got + 1 < sizeof line && !memchr(line, '\n', got)) {
        if (wait_fd(fd, POLLIN, deadline)) {
            fprintf(stderr, "loupe probe: no answer from %s:%s within %g s\n", host, port, timeout);
            close(fd);
            return 1;
        }
        ssize_t k = recv(fd, line + got, sizeof line - 1 - got, 0);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    line[got] = 0;
    char *eol = strpbrk(line, "\r\n");
    if (eol) *eol = 0;
    int status = 0;
    if (strncmp(line, "HTTP/1.", 7) || sscanf(line + 8, " %3d", &status) != 1) {
        fprintf(stderr, "loupe probe: %s:%s did not answer HTTP\n", host, port);
        return 1;
    }
    printf("%s\n", line);
    return status >= 200 && status < 300 ? 0 : 1;
}
