/* fuse_ops.c's session for a filesystem other than struct imgfs (the layer store's glue,
 * fuse_store.c): the same mount options, loop and teardown (fuse_ops.h), with the caller's
 * libfuse operations. Includes libfuse: for the files directly in fsd/ only. */
#pragma once

#include <fuse_lowlevel.h>
#include "fsd/fuse_ops.h"

/* fuse_ops_mount() with ops (size bytes) as the operations and ctx as what fuse_ops_ctx()
 * returns in them; ro mounts read-only. */
int fuse_ops_mount_ll(const struct fuse_lowlevel_ops *ops, size_t size, void *ctx, bool ro,
                      const struct fuse_ops_opts *o, struct fuse_ops_session **ret);
/* The ctx given to fuse_ops_mount_ll(), from a request of its session. */
void *fuse_ops_ctx(fuse_req_t req);
