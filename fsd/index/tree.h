/* The merged lower tree of an image: the layer indexes of a manifest merged at pull time
 * (whiteouts `.wh.NAME`, opaque dirs `.wh..wh..opq`, later layers win, hardlinks resolved,
 * including across layers) into one file, stored by the caller, that is mmap'ed at mount
 * time, so mounting does no work proportional to the image. The layer indexes come from
 * the caller's struct li_opener (layerindex.h); the tree names its layers by digest only.
 *
 * Nodes are numbered 0 (the root) .. n-1; a directory's children are contiguous and sorted
 * by name (lookup is a binary search, readdir an index). Hardlinked nodes share one
 * canonical node, which carries st_ino and st_nlink. Everything is read-only after
 * tree_open(), so every function is thread-safe. */
#pragma once

#include <stdint.h>
#include <sys/stat.h>
#include "common/macros.h"
#include "fsd/index/layerindex.h"

#define TREE_ROOT 0u

/* Builds the tree for the layers (bottom first), whose indexes opener opens (verified,
 * without their data: LI_OPEN_VERIFY | LI_OPEN_NO_DATA), and returns the serialised tree in
 * a malloc'ed buffer that the caller stores atomically. -EINVAL for a malformed digest;
 * the opener's error when an index cannot be opened. */
int tree_build(const struct li_opener *opener, const char *const *layer_digests, size_t n_layers,
               void **ret_buf, size_t *ret_len);

/* Builds the tree of ONE layer, the last of layer_digests (bottom first), in overlay lower
 * format, as containers/storage's overlay driver expects a layer's diff directory: nothing
 * merged or hidden; a whiteout `.wh.NAME` becomes NAME, a character device 0/0; an opaque
 * marker `.wh..wh..opq` makes its directory carry the xattr trusted.overlay.opaque=y
 * (tree_getxattr()); other `.wh..wh.` entries (aufs bookkeeping) are left out; a directory
 * made over a whiteout of the same layer is opaque. A directory the layer implies without
 * an entry of its own takes the attributes the layers below give it (extraction onto them
 * would keep those), so their indexes are read too, and the tree names the layers it takes
 * something from. Same contract as tree_build() otherwise. */
int tree_build_layer(const struct li_opener *opener, const char *const *layer_digests,
                     size_t n_layers, void **ret_buf, size_t *ret_len);

/* tree_build_layer() for every layer of an image at once, each index opened and replayed
 * once: fn(i, buf, len, userdata) gets the serialised tree of layer i (bottom first) and
 * takes buf (free() it); its negative result stops the build and is returned. */
typedef int (*tree_layer_fn)(size_t i, void *buf, size_t len, void *userdata);
int tree_build_layers(const struct li_opener *opener, const char *const *layer_digests,
                      size_t n_layers, tree_layer_fn fn, void *userdata);

/* The xattr of an opaque directory in a tree_build_layer() tree. */
#define TREE_OPAQUE_XATTR "trusted.overlay.opaque"

struct tree;

/* Verify the tree and its layer indexes at open: the crc32 of every file and every node
 * (reads all of them, O(image metadata)). Without it, opening costs O(layers): the header,
 * the section bounds and the root are checked, and each node is checked when it is used,
 * so a corrupt tree gives -EBADMSG from the accessor (or wrong data), never a wild read. */
#define TREE_OPEN_VERIFY (1u << 0)

/* Maps a tree file and opens the layer indexes it names, with their data, through opener
 * (with LI_OPEN_VERIFY under TREE_OPEN_VERIFY); the opener is not used after the call.
 * -EBADMSG when the file is not a tree (or, with TREE_OPEN_VERIFY, is corrupt); the
 * opener's error when a layer cannot be opened. */
int tree_open_flags(const struct li_opener *opener, int tree_fd, unsigned flags, struct tree **ret);
/* tree_open_flags(opener, tree_fd, TREE_OPEN_VERIFY, ret). */
int tree_open(const struct li_opener *opener, int tree_fd, struct tree **ret);
void tree_close(struct tree *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tree *, tree_close);

uint32_t tree_node_count(const struct tree *t);
/* Child name of dir; -ENOENT, -ENOTDIR, -EBADMSG (corrupt node; as for every accessor). */
int tree_lookup(const struct tree *t, uint32_t dir, const char *name, uint32_t *ret);
uint32_t tree_parent(const struct tree *t, uint32_t node);
/* Attributes; st_ino is the canonical node + 1 (so the root is 1, FUSE_ROOT_ID). */
int tree_stat(const struct tree *t, uint32_t node, struct stat *ret);
/* The node that carries a hardlink group's identity (the node itself when not linked). */
uint32_t tree_canonical(const struct tree *t, uint32_t node);

/* Calls fn for the children of dir from position off on (0 = first child; "." and ".." are
 * the caller's business); fn returns non-zero to stop. next_off is the position after it. */
typedef int (*tree_dirent_fn)(const char *name, uint32_t node, uint64_t next_off, void *userdata);
int tree_readdir(const struct tree *t, uint32_t dir, uint64_t off, tree_dirent_fn fn,
                 void *userdata);

/* Symlink target into buf (NUL-terminated); returns its length, -EINVAL if not a link. */
int tree_readlink(const struct tree *t, uint32_t node, char *buf, size_t size);
/* Extended attributes, with getxattr(2)/listxattr(2) conventions: size 0 asks for the
 * length; -ERANGE when buf is too small; -ENODATA when missing. */
ssize_t tree_getxattr(const struct tree *t, uint32_t node, const char *name, void *buf,
                      size_t size);
ssize_t tree_listxattr(const struct tree *t, uint32_t node, char *buf, size_t size);
/* Whether any layer of the image has an entry with an xattr called name (whether or not
 * the merge kept that entry): 1 or 0, or -errno for a corrupt index. */
int tree_has_xattr_name(const struct tree *t, const char *name);
/* li_prefetch() of a regular file's data; nothing for other nodes. */
void tree_prefetch(const struct tree *t, uint32_t node);
/* File data through the layer index span reader; thread-safe. */
ssize_t tree_read(const struct tree *t, uint32_t node, void *buf, size_t size, uint64_t off);
int64_t tree_seek(const struct tree *t, uint32_t node, uint64_t off, int whence);
