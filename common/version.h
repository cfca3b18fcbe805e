/* version.h -- Loupe's version, as `loupe --version` and the V2 server metadata report it. */
#ifndef LOUPE_VERSION_H
#define LOUPE_VERSION_H

#define LOUPE_VERSION "0.1.0"

#endif
