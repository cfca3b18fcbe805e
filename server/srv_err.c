/* srv_err.c -- error kinds to HTTP statuses: the only place that decides a status for an error. */
#include "srv_err.h"

static const struct {
    srv_err_kind kind;
    unsigned status;
    const char *code;
} err_table[SRV_E_COUNT] = {
    {SRV_E_BAD_REQUEST, 400, "bad_request"},
    {SRV_E_EMPTY_BODY, 400, "empty_body"},
    {SRV_E_BAD_IMAGE, 400, "bad_image"},
    {SRV_E_BAD_DIMENSIONS, 400, "bad_dimensions"},
    {SRV_E_BAD_JSON, 400, "bad_json"},
    {SRV_E_BAD_INPUT, 400, "bad_input"},
    {SRV_E_BAD_PARAMETER, 400, "bad_parameter"},
    {SRV_E_UNAUTHORIZED, 401, "unauthorized"},
    {SRV_E_NOT_FOUND, 404, "not_found"},
    {SRV_E_MODEL_NOT_FOUND, 404, "model_not_found"},
    {SRV_E_METHOD, 405, "method_not_allowed"},
    {SRV_E_TOO_LARGE, 413, "payload_too_large"},
    {SRV_E_MEDIA_TYPE, 415, "unsupported_media_type"},
    {SRV_E_UNPROCESSABLE, 422, "unprocessable"},
    {SRV_E_UNAVAILABLE, 503, "unavailable"},
    {SRV_E_NOMEM, 500, "out_of_memory"},
    {SRV_E_INTERNAL, 500, "internal"},
    {SRV_E_BUSY, 429, "too_many_requests"},
};

unsigned srv_err_status(srv_err_kind kind) {
    if ((int)kind < 0 || kind >= SRV_E_COUNT) return 500;
    return err_table[kind].status;
}

const char *srv_err_code(srv_err_kind kind) {
    if ((int)kind < 0 || kind >= SRV_E_COUNT) return "internal";
    return err_table[kind].code;
}

srv_err_kind srv_err_from_img(int img_status) {
    switch (img_status) {
    case IMG_ERR_EMPTY: return SRV_E_EMPTY_BODY;
    case IMG_ERR_FORMAT: return SRV_E_MEDIA_TYPE;
    case IMG_ERR_CORRUPT: return SRV_E_BAD_IMAGE;
    case IMG_ERR_DIMENSIONS: return SRV_E_BAD_DIMENSIONS;
    case IMG_ERR_TOO_LARGE: return SRV_E_TOO_LARGE;
    case IMG_ERR_NOMEM: return SRV_E_NOMEM;
    default: return SRV_E_INTERNAL;
    }
}
