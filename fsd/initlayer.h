/* The init layer of `imgfs run`: the mountpoints a container needs (/proc, /sys, /dev,
 * /etc/hostname, /etc/hosts, /etc/resolv.conf) written into a fresh upper directory before
 * the mount, where the image lacks them, as Docker's init layer does. Entries the image
 * already has are left alone (the runner mounts over them, resolving symlinks inside the
 * rootfs); a missing parent directory is created, and a parent that the image has as a
 * directory is created in the upper with the image's mode, owner and times so that the
 * merged view of it does not change. A parent that the image has as something else (a
 * symlink) makes the entry skipped: the image's own link stays in charge. */
#pragma once

#include "fsd/index/tree.h"

/* Populates the upper directory open at upper_fd (O_DIRECTORY) from lower tree t.
 * Returns the number of entries created, or -errno. */
int initlayer_populate(const struct tree *t, int upper_fd);
