/* srv_input.c -- an image route's body and ?invert= to core_input_from_body. */
#include "srv_input.h"

int srv_input_read(srv_req *r, const core_model *m, core_input *in, core_fail *f) {
    img_invert inv;
    if (core_input_parse_invert(srv_req_query(r, "invert"), &inv, f)) return -1;
    return core_input_from_body(m, &r->ctx->limits, r->content_type, r->multipart_image, r->body, r->body_len, inv,
                                in, f);
}
