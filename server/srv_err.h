/* srv_err.h -- the one table from a core error kind to an HTTP status. */
#ifndef LOUPE_SRV_ERR_H
#define LOUPE_SRV_ERR_H

#include "core_err.h"

/* HTTP status of an error kind (500 for an unknown kind). */
unsigned srv_err_status(core_err_kind kind);

#endif
