/* The process that serves an image mount: opens the image's tree and the writable layer,
 * mounts them through FUSE and serves until unmounted. It is started, registered and
 * stopped by the mount life cycle (lifecycle.h); `imgfs mount` and `imgfs run` both mount
 * through daemon_mount(). */
#pragma once

#include "common/macros.h"

struct store;

struct mount_request {
	const char *ref;        /* the image's canonical name (for the state and mountinfo) */
	const char *manifest;   /* "sha256:…", in the store */
	const char *mountpoint; /* canonical path of an existing directory */
	const char *upper;      /* canonical path of a kept writable layer (--upper), or NULL
	                         * for a throwaway one in ROOT/mounts/NAME/upper */
	const char *extra_opts; /* more -o options, or NULL */
	struct lazyimage *lazy; /* the layers are fetched as they are read (lazyimage.h), or
	                         * NULL: all in the store. Borrowed; the daemon starts its fill */
	bool ro;
	bool foreground; /* serve in this process until unmounted */
};

/* Mounts the image: returns 0 once the mount is live (a daemon serves it in the
 * background) or, in the foreground, after it was unmounted; -errno when it could not be
 * mounted, logged naming the mountpoint or the image. */
int daemon_mount(struct store *s, const struct mount_request *req);

struct lifecycle;

/* In a worker executed by a mount's supervisor (lifecycle_attach()): serves req over the
 * connection conn_fd the dead or replaced worker served, until unmounted. Returns 0 or
 * -errno (logged). */
int daemon_take_over(struct store *s, struct lifecycle *lc, const struct mount_request *req,
                     int conn_fd);

struct fuse_ops_session;

/* The kernel's FUSE_INIT of a supervised mount (fuse_ops_init_data()), kept in
 * ROOT/mounts/NAME/fuse-init for the workers that take its connection over: written by the
 * first worker (any filesystem: the layer store's too), read by the next ones (malloc'ed).
 * Errors are -errno, not logged. */
int daemon_save_init(struct lifecycle *lc, struct fuse_ops_session *session);
int daemon_load_init(struct lifecycle *lc, char **ret, size_t *ret_len);
