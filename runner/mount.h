/* Executes a setup plan (plan.h) in the container's mount namespace. Needs CAP_SYS_ADMIN
 * there; runs in the child only. Error messages name the step that failed. */
#pragma once

#include "runner/plan.h"

enum root_want {
	ROOT_EXISTING, /* the path must exist */
	ROOT_DIR,      /* create missing components as directories */
	ROOT_FILE,     /* as ROOT_DIR, but the last component is created as an empty file */
};

/* Opens path (absolute or relative, resolved inside root_fd as if root_fd were "/"; symlinks
 * are followed but cannot leave it, magic links are refused) as an O_PATH fd, creating what
 * is missing as want says; a dangling symlink's target is created inside the root.
 * Returns 0 and sets *ret_fd, or -errno (-EROFS when the root is read-only, -ELOOP). */
int root_open(int root_fd, const char *path, enum root_want want, int *ret_fd);

/* Makes every mount a slave of the host's (so nothing propagates back), then binds the rootfs
 * (rootfs_fd, any fd of the directory) recursively onto itself. Returns 0 and sets
 * *ret_root_fd to an O_PATH fd of the new mount's root, or -errno with e->msg set. */
int mount_prepare_root(int rootfs_fd, int *ret_root_fd, struct runner_error *e);

/* Executes p's steps in order under root_fd (from mount_prepare_root()).
 * Returns 0 or -errno with e->msg naming the step. */
int mount_run_plan(int root_fd, const struct setup_plan *p, struct runner_error *e);

/* pivot_root into root_fd and detaches the old root; the cwd becomes "/". */
int mount_pivot(int root_fd, struct runner_error *e);

/* Reads the regular file at path inside root_fd (resolved like root_open()) into a
 * NUL-terminated malloc'ed buffer. Returns 0 and sets *ret, -ENOENT when missing,
 * -EFBIG when larger than max, -EINVAL when not a regular file, or another -errno. */
int root_read_file(int root_fd, const char *path, size_t max, char **ret);
