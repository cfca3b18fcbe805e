/* core_err.c -- error kinds, their slugs, and the failure record every core operation fills in. */
#include "core_err.h"

#include <stdarg.h>
#include <stdio.h>

static const struct {
    core_err_kind kind;
    const char *code;
} err_table[CORE_E_COUNT] = {
    {CORE_E_BAD_REQUEST, "bad_request"},
    {CORE_E_EMPTY_BODY, "empty_body"},
    {CORE_E_BAD_IMAGE, "bad_image"},
    {CORE_E_BAD_DIMENSIONS, "bad_dimensions"},
    {CORE_E_BAD_JSON, "bad_json"},
    {CORE_E_BAD_INPUT, "bad_input"},
    {CORE_E_BAD_PARAMETER, "bad_parameter"},
    {CORE_E_UNAUTHORIZED, "unauthorized"},
    {CORE_E_NOT_FOUND, "not_found"},
    {CORE_E_MODEL_NOT_FOUND, "model_not_found"},
    {CORE_E_METHOD, "method_not_allowed"},
    {CORE_E_TOO_LARGE, "payload_too_large"},
    {CORE_E_MEDIA_TYPE, "unsupported_media_type"},
    {CORE_E_UNPROCESSABLE, "unprocessable"},
    {CORE_E_UNAVAILABLE, "unavailable"},
    {CORE_E_NOMEM, "out_of_memory"},
    {CORE_E_INTERNAL, "internal"},
    {CORE_E_BUSY, "too_many_requests"},
    {CORE_E_CANCELLED, "client_closed_request"},
};

const char *core_err_code(core_err_kind kind) {
    if ((int)kind < 0 || kind >= CORE_E_COUNT) return "internal";
    return err_table[kind].code;
}

core_err_kind core_err_from_img(int img_status) {
    switch (img_status) {
    case IMG_ERR_EMPTY: return CORE_E_EMPTY_BODY;
    case IMG_ERR_FORMAT: return CORE_E_MEDIA_TYPE;
    case IMG_ERR_CORRUPT: return CORE_E_BAD_IMAGE;
    case IMG_ERR_DIMENSIONS: return CORE_E_BAD_DIMENSIONS;
    case IMG_ERR_TOO_LARGE: return CORE_E_TOO_LARGE;
    case IMG_ERR_NOMEM: return CORE_E_NOMEM;
    default: return CORE_E_INTERNAL;
    }
}

int core_failf(core_fail *f, core_err_kind kind, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    f->kind = kind;
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int core_err_is_input(core_err_kind kind) {
    return kind != CORE_E_NOMEM && kind != CORE_E_INTERNAL && kind != CORE_E_UNAVAILABLE && kind != CORE_E_BUSY && kind != CORE_E_CANCELLED &&
           kind >= 0 && kind < CORE_E_COUNT;
}
