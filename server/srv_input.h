/* srv_input.h -- an image route's request (query and body) handed to core_input. */
#ifndef LOUPE_SRV_INPUT_H
#define LOUPE_SRV_INPUT_H

#include "core_input.h"
#include "srv_http.h"

/* Read r's body as an image for model m, honouring ?invert=. Returns 0 and
 * fills in (free with core_input_free), or -1 with f. Runs on a worker. */
int srv_input_read(srv_req *r, const core_model *m, core_input *in, core_fail *f);

#endif
