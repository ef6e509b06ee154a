/* The layer store's FUSE glue (fuse_store.c): mounts a struct layerstore (layerstore.h)
 * with fuse_ops.c's session; serve it with fuse_ops_loop(), end it with fuse_ops_free(). */
#pragma once

#include "fsd/fuse_ops.h"

struct layerstore;

/* Mounts ls (borrowed; it must outlive the session) at o->mountpoint. Errors are logged,
 * naming the mountpoint, and returned as -errno. */
int fuse_store_mount(struct layerstore *ls, const struct fuse_ops_opts *o,
                     struct fuse_ops_session **ret);
