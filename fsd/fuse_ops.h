/* The FUSE glue: the only module that speaks libfuse. It mounts a struct imgfs (fsd/fs/fs.h)
 * with the libfuse low-level API and serves it with the multithreaded loop, translating
 * each request into a core call and the result into a fuse_reply_*. No filesystem logic
 * lives here. This header does not include libfuse, so its users need not either. */
#pragma once

#include "common/macros.h"
#include "fsd/fs/fs.h"

struct fuse_ops_opts {
	const char *mountpoint;
	const char *fsname;   /* shown in mountinfo, e.g. "imgfs:docker.io/library/alpine:latest" */
	bool allow_other;     /* let every user see the mount (a container rootfs needs it) */
	bool suid_dev;        /* honour setuid bits and device nodes (root only) */
	const char *extra;    /* more -o options from the user, or NULL */
	unsigned max_threads; /* worker threads; 0: default */
	/* The connection outlives this process (a supervisor keeps it): every thread reads
	 * the one device fd the supervisor also holds (requests read from a cloned fd are
	 * aborted when it closes), no signal handlers (a signal ends the process and a new one
	 * takes over), and the filesystem is never unmounted from here. The kernel's
	 * FUSE_INIT is kept (fuse_ops_init_data()). */
	bool supervised;
	int state_dirfd; /* supervised: the mount's directory, for the handle table */
	/* Take over the connection conn_fd of a dead process instead of mounting: init is the
	 * kernel's FUSE_INIT (its fuse_init_in) that process received. The requests it read
	 * and did not answer are asked for again (FUSE_NOTIFY_RESEND). Implies supervised. */
	bool takeover;
	int conn_fd;
	const void *init;
	size_t init_len;
};

struct fuse_ops_session;

/* Routes libfuse's own messages into common/log.h. */
void fuse_ops_route_logs(void);

/* Creates a session for fs and mounts it at o->mountpoint (read-only when fs is). fs is
 * borrowed and must outlive the session. SIGINT, SIGTERM and SIGHUP end the loop.
 * Errors are logged, naming the mountpoint, and returned as -errno. */
int fuse_ops_mount(struct imgfs *fs, const struct fuse_ops_opts *o, struct fuse_ops_session **ret);

/* The connection (the /dev/fuse fd), borrowed. */
int fuse_ops_conn_fd(struct fuse_ops_session *s);

/* The kernel's fuse_init_in as received at the mount (supervised sessions that mounted);
 * -ENOENT when there is none. */
int fuse_ops_init_data(struct fuse_ops_session *s, const void **ret, size_t *ret_len);

/* Serves requests until the filesystem is unmounted or a signal ends the session.
 * Returns 0, or -errno when the loop failed. */
int fuse_ops_loop(struct fuse_ops_session *s);

/* Unmounts (when still mounted) and frees the session. */
void fuse_ops_free(struct fuse_ops_session *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct fuse_ops_session *, fuse_ops_free);
