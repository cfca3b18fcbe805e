/* srv_routes.h -- the request handlers behind the route table (srv_routes.c). */
#ifndef LOUPE_SRV_ROUTES_H
#define LOUPE_SRV_ROUTES_H

#include "srv_http.h"

/* srv_infer.c: image routes. */
void srv_h_predict(srv_req *r);          /* POST /v1/models/{m}/predict */
void srv_h_predict_default(srv_req *r);  /* POST /predict */
void srv_h_saliency(srv_req *r);         /* POST /v1/models/{m}/saliency */
void srv_h_layers(srv_req *r);           /* GET /v1/models/{m}/layers */
void srv_h_filters(srv_req *r);          /* GET|POST /v1/models/{m}/filters/{l}/{f} */
void srv_h_activations(srv_req *r);      /* POST /v1/models/{m}/activations/{l} */

/* srv_v2.c: KServe V2 / Open Inference Protocol. */
void srv_h_v2_server(srv_req *r);
void srv_h_v2_live(srv_req *r);
void srv_h_v2_ready(srv_req *r);
void srv_h_v2_model(srv_req *r);
void srv_h_v2_model_ready(srv_req *r);
void srv_h_v2_infer(srv_req *r);

/* The model named by the route's first parameter (retained), or NULL after
 * answering 404. */
reg_model *srv_route_model(srv_req *r);

#endif
