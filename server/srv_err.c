/* srv_err.c -- error kinds to HTTP statuses: the only place that decides a status for an error. */
#include "srv_err.h"

static const unsigned status_of[CORE_E_COUNT] = {
    [CORE_E_BAD_REQUEST] = 400,
    [CORE_E_EMPTY_BODY] = 400,
    [CORE_E_BAD_IMAGE] = 400,
    [CORE_E_BAD_DIMENSIONS] = 400,
    [CORE_E_BAD_JSON] = 400,
    [CORE_E_BAD_INPUT] = 400,
    [CORE_E_BAD_PARAMETER] = 400,
    [CORE_E_UNAUTHORIZED] = 401,
    [CORE_E_NOT_FOUND] = 404,
    [CORE_E_MODEL_NOT_FOUND] = 404,
    [CORE_E_METHOD] = 405,
    [CORE_E_TOO_LARGE] = 413,
    [CORE_E_MEDIA_TYPE] = 415,
    [CORE_E_UNPROCESSABLE] = 422,
    [CORE_E_UNAVAILABLE] = 503,
    [CORE_E_NOMEM] = 500,
    [CORE_E_INTERNAL] = 500,
    [CORE_E_BUSY] = 429,
    /* nginx's code for a client that closed first; nobody receives it, the log and metrics do. */
    [CORE_E_CANCELLED] = 499,
};

unsigned srv_err_status(core_err_kind kind) {
    if ((int)kind < 0 || kind >= CORE_E_COUNT || !status_of[kind]) return 500;
    return status_of[kind];
}
