/* Access to the read-only lower layer of a mount, as a small table of operations, so that
 * the filesystem core (fs.c) does not depend on how the lower tree is stored: the real one
 * wraps fsd/index/tree.h (lower_from_tree()), unit tests build one in memory.
 *
 * The contract is tree.h's: nodes are numbered 0 (the root) .. node_count-1, a hardlink
 * group is represented by its canonical node, st_ino of a node is its canonical node + 1.
 * The lower is immutable once opened: every operation must be thread-safe and may be called
 * concurrently. The core does not trust what the operations return (a corrupt tree must
 * not crash the daemon): node numbers are range-checked, names validated. */
#pragma once

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include "common/macros.h"

struct tree;

/* Called for each child of a directory; returns non-zero to stop the walk. next_off is the
 * offset of the entry after this one. */
typedef int (*lower_dirent_fn)(const char *name, uint32_t node, uint64_t next_off, void *userdata);

struct lower_ops {
	uint32_t (*node_count)(void *data);
	/* Child name of dir: 0 and *ret, -ENOENT, -ENOTDIR. */
	int (*lookup)(void *data, uint32_t dir, const char *name, uint32_t *ret);
	/* Parent directory of a directory node (the root is its own parent). */
	uint32_t (*parent)(void *data, uint32_t node);
	/* The node that carries a hardlink group's identity (the node itself when unlinked). */
	uint32_t (*canonical)(void *data, uint32_t node);
	int (*stat)(void *data, uint32_t node, struct stat *ret);
	/* Children of dir from position off (0 = first child, "." and ".." not included). */
	int (*readdir)(void *data, uint32_t dir, uint64_t off, lower_dirent_fn fn, void *userdata);
	/* Symlink target, NUL-terminated, into buf; returns its length or -errno. */
	int (*readlink)(void *data, uint32_t node, char *buf, size_t size);
	/* getxattr(2)/listxattr(2) conventions: size 0 asks for the length, -ERANGE, -ENODATA. */
	ssize_t (*getxattr)(void *data, uint32_t node, const char *name, void *buf, size_t size);
	ssize_t (*listxattr)(void *data, uint32_t node, char *buf, size_t size);
	/* Whether any node may carry an xattr called name: 1, 0, or -errno. May be NULL
	 * (then every name may be present). */
	int (*has_xattr_name)(void *data, const char *name);
	/* Up to size bytes of a regular file at off; 0 at the end of the file. */
	ssize_t (*read)(void *data, uint32_t node, void *buf, size_t size, uint64_t off);
	/* Hint that a regular file is about to be read whole (copy-up); may be NULL. */
	void (*prefetch)(void *data, uint32_t node);
	/* SEEK_DATA/SEEK_HOLE: the resulting offset or -ENXIO. */
	int64_t (*seek)(void *data, uint32_t node, uint64_t off, int whence);
	/* Releases data; may be NULL. */
	void (*close)(void *data);
};

struct lower {
	const struct lower_ops *ops;
	void *data;
};

/* A lower over an open tree; takes ownership of t (closed by ops->close). */
void lower_from_tree(struct tree *t, struct lower *ret);
