/* core_err.h -- the one error shape below HTTP: a kind (with a stable slug) and one sentence; server/ maps kinds to statuses. */
#ifndef LOUPE_CORE_ERR_H
#define LOUPE_CORE_ERR_H

#include <stddef.h>

#include "img.h"

/* What went wrong with a request, independent of HTTP. */
typedef enum {
    CORE_E_BAD_REQUEST,      /* malformed request in general */
    CORE_E_EMPTY_BODY,       /* a body is required and none came */
    CORE_E_BAD_IMAGE,        /* truncated or corrupted image data */
    CORE_E_BAD_DIMENSIONS,   /* image of width or height zero */
    CORE_E_BAD_JSON,         /* not JSON, or not the expected shape */
    CORE_E_BAD_INPUT,        /* well-formed but wrong values (pixel count, NaN, range) */
    CORE_E_BAD_PARAMETER,    /* a query parameter is invalid */
    CORE_E_UNAUTHORIZED,     /* missing or wrong bearer token */
    CORE_E_NOT_FOUND,        /* no such route or file */
    CORE_E_MODEL_NOT_FOUND,  /* no such model */
    CORE_E_METHOD,           /* route exists, method does not */
    CORE_E_TOO_LARGE,        /* body or image beyond a limit */
    CORE_E_MEDIA_TYPE,       /* unsupported content type or image format */
    CORE_E_UNPROCESSABLE,    /* valid but unusable */
    CORE_E_UNAVAILABLE,      /* not ready, draining or overloaded */
    CORE_E_NOMEM,            /* allocation failed */
    CORE_E_INTERNAL,         /* anything else on our side */
    CORE_E_BUSY,             /* the expensive routes' workers and queue are full: try later */
    CORE_E_CANCELLED,        /* the client left before the work ran */
    CORE_E_COUNT
} core_err_kind;

/* A failed operation: its kind and one sentence saying what was wrong. */
typedef struct {
    core_err_kind kind;
    char msg[512];
} core_fail;

/* Set f (kind and a printf message); returns -1 so callers can `return core_failf(...)`. */
int core_failf(core_fail *f, core_err_kind kind, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Stable machine-readable slug of an error kind ("bad_image", ...). */
const char *core_err_code(core_err_kind kind);
/* 1 when the kind is the caller's doing (bad input, parameter, missing model),
 * 0 for the server's side (out of memory, internal, unavailable, busy). */
int core_err_is_input(core_err_kind kind);
/* The error kind for a failed img_decode/img_to_gray status. */
core_err_kind core_err_from_img(int img_status);

#endif
