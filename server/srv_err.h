/* srv_err.h -- the daemon's error kinds and the one table that maps each to an HTTP status and a slug. */
#ifndef LOUPE_SRV_ERR_H
#define LOUPE_SRV_ERR_H

#include "img.h"

/* What went wrong with a request, independent of HTTP. */
typedef enum {
    SRV_E_BAD_REQUEST,      /* malformed request in general */
    SRV_E_EMPTY_BODY,       /* a body is required and none came */
    SRV_E_BAD_IMAGE,        /* truncated or corrupted image data */
    SRV_E_BAD_DIMENSIONS,   /* image of width or height zero */
    SRV_E_BAD_JSON,         /* not JSON, or not the expected shape */
    SRV_E_BAD_INPUT,        /* well-formed but wrong values (pixel count, NaN, range) */
    SRV_E_BAD_PARAMETER,    /* a query parameter is invalid */
    SRV_E_UNAUTHORIZED,     /* missing or wrong bearer token */
    SRV_E_NOT_FOUND,        /* no such route or file */
    SRV_E_MODEL_NOT_FOUND,  /* no such model */
    SRV_E_METHOD,           /* route exists, method does not */
    SRV_E_TOO_LARGE,        /* body or image beyond a limit */
    SRV_E_MEDIA_TYPE,       /* unsupported content type or image format */
    SRV_E_UNPROCESSABLE,    /* valid but unusable */
    SRV_E_UNAVAILABLE,      /* not ready, draining or overloaded */
    SRV_E_NOMEM,            /* allocation failed */
    SRV_E_INTERNAL,         /* anything else on our side */
    SRV_E_BUSY,             /* the expensive routes' workers and queue are full: try later */
    SRV_E_COUNT
} srv_err_kind;

/* HTTP status of an error kind (500 for an unknown kind). */
unsigned srv_err_status(srv_err_kind kind);
/* Stable machine-readable slug of an error kind ("bad_image", ...). */
const char *srv_err_code(srv_err_kind kind);
/* The error kind for a failed img_decode/img_to_gray status. */
srv_err_kind srv_err_from_img(int img_status);

#endif
