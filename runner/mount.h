/* Executes a setup plan (plan.h) in the container's mount namespace. Needs CAP_SYS_ADMIN
 * there; runs in the child only. Error messages name the step that failed. */
#pragma once

#include "runner/plan.h"

/* Makes every mount a slave of the host's (so nothing propagates back), then binds the rootfs
 * (rootfs_fd, any fd of the directory) recursively onto itself. Returns 0 and sets
 * *ret_root_fd to an O_PATH fd of the new mount's root, or -errno with e->msg set. */
int mount_prepare_root(int rootfs_fd, int *ret_root_fd, struct error *e);

/* Executes p's steps in order under *root_fd (from mount_prepare_root()). Nothing is
 * created in the rootfs: a missing mount point is made in a "shadow" of its parent
 * directory, a tmpfs mounted over it that holds binds of the directory's entries (made
 * read-only at the end when the directory is on a read-only mount). When the root itself
 * is shadowed, *root_fd is replaced by (closed, and set to) the shadow's root.
 * Returns 0 or -errno with e->msg naming the step. */
int mount_run_plan(int *root_fd, const struct setup_plan *p, struct error *e);

/* pivot_root into root_fd and detaches the old root; the cwd becomes "/". */
int mount_pivot(int root_fd, struct error *e);

/* Reads the regular file at path inside root_fd (resolved as if root_fd were "/";
 * symlinks cannot leave it, magic links are refused) into a
 * NUL-terminated malloc'ed buffer. Returns 0 and sets *ret, -ENOENT when missing,
 * -EFBIG when larger than max, -EINVAL when not a regular file, or another -errno. */
int root_read_file(int root_fd, const char *path, size_t max, char **ret);
