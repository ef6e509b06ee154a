/* The Additional Layer Store's filesystem, without FUSE: one namespace that multiplexes the
 * layers of every image reference podman or CRI-O asks for (fsd/image/als.h has the
 * protocol):
 *
 *   /                          the store root: lists the references resolved so far
 *   /BASE64(REF)/              resolved at its first lookup (all its layers at once)
 *   /BASE64(REF)/DIGEST/       one layer: diff/, info, blob; `use` and rmdir count
 *   /BASE64(REF)/DIGEST/diff/  the layer's own struct imgfs (fs.h), read-only, over its
 *                              tree in overlay lower format (tree_build_layer())
 *
 * Inode numbers (FUSE node ids) are 64 bits: the high 32 bits name a slot, the low 32 bits
 * a number inside it. Slot 0 is the store's own namespace: 1 the root, 2 + r the r-th
 * reference, LS_LAYER_BASE + 4g (+1 info, +2 blob) the g-th layer directory. Slot g + 1 is
 * layer g's diff/, whose inode i is the layer filesystem's inode i (the root, 1, is
 * diff/ itself); st_ino is made unique the same way, so that files of different layers
 * never look like hardlinks of each other through an overlay mount. References and layers
 * are never freed while the store lives, so a number, once handed out, stays valid; names
 * are what lasts across restarts: a restarted store resolves a reference again at its
 * first lookup, so the paths podman keeps (symlinks into DIR/.../diff) work again.
 *
 * Numbers also last across the processes that serve one mount (a worker that takes the
 * connection over): layerstore_save() writes the table of references and layers (with the
 * manifest each layer came from and its use count) and layerstore_restore() makes a new
 * store number them the same, unresolved. A restored reference or layer is resolved again
 * at the first request that needs it, at the image manifest it was served from (the
 * resolver is told which), not at what its tag names now.
 *
 * A reference is resolved by the caller's resolver (the command: registry, store, lazy
 * pull), outside every lock but its own: other references are served meanwhile, and a
 * concurrent lookup of the same reference waits for the resolution. A failed resolution
 * is remembered for LS_FAILURE_TTL_MS (lookups answer -ENOENT without trying again), so
 * podman's stats of diff, info and blob cost one attempt.
 *
 * Every function returns >= 0 or -errno and is thread-safe. */
#pragma once

#include <stdint.h>
#include <sys/statvfs.h>
#include "common/digest.h"
#include "common/macros.h"
#include "fsd/fs/fs.h"

#define LS_ROOT_INO 1u
#define LS_LAYER_BASE 0x10000000u
#define LS_FAILURE_TTL_MS 5000

/* One layer as the resolver hands it over. */
struct ls_layer_desc {
	char digest[DIGEST_STR_LEN + 1]; /* compressed, as in the manifest */
	struct lower lower;              /* its tree in overlay lower format; taken over */
	char *info;                      /* the info file (als_info_format()); taken over */
	size_t info_len;
	uint64_t blob_size;
};

/* A resolved reference: its layers, bottom first, and how to read their blobs. */
struct ls_image {
	char manifest[DIGEST_STR_LEN + 1];
	struct ls_layer_desc *layers; /* malloc'ed, taken over with what it holds */
	size_t n_layers;
	/* Bytes of layer i's compressed blob; fewer only at its end. Thread-safe. */
	ssize_t (*read_blob)(void *ctx, size_t layer, void *buf, size_t size, uint64_t off);
	/* Releases ctx once the store is freed; may be NULL. */
	void (*free)(void *ctx);
	void *ctx;
};

/* Resolves ref (as podman spelled it). manifest: NULL, or the image manifest ref must
 * resolve to (a reference restored by layerstore_restore(), served from that image before).
 * fresh: the last resolution of ref did not have a layer that was asked for (a tag that
 * moved): ask the registry again. Fills *ret or returns -errno after logging one line that
 * names ref and the reason. */
typedef int (*ls_resolve_fn)(void *userdata, const char *ref, const char *manifest, bool fresh,
                             struct ls_image *ret);

struct layerstore_opts {
	ls_resolve_fn resolve;
	void *userdata;
	/* Told (without locks held) when the references podman holds changed: a `use` or an
	 * rmdir, or a new image. May be NULL. */
	void (*changed)(void *userdata);
};

struct layerstore;
struct ls_file;
struct ls_dir;

int layerstore_new(const struct layerstore_opts *o, struct layerstore **ret);
/* Frees everything; open files and directories must have been released. */
void layerstore_free(struct layerstore *ls);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct layerstore *, layerstore_free);

/* As imgfs_lookup() (fs.h). In the root, a name that is not canonical base64 of a
 * reference, or a reference that cannot be resolved: -ENOENT. In a reference, a digest
 * that is not one of its layers: -ENOENT. In a layer, `use`: -ENOENT (it never exists). */
int layerstore_lookup(struct layerstore *ls, uint64_t parent, const char *name,
                      struct imgfs_entry *ret);
void layerstore_forget(struct layerstore *ls, uint64_t ino, uint64_t nlookup);
int layerstore_getattr(struct layerstore *ls, uint64_t ino, struct stat *ret);
int layerstore_readlink(struct layerstore *ls, uint64_t ino, char *buf, size_t size);
/* Regular files only, read-only (-EROFS for writing). */
int layerstore_open(struct layerstore *ls, uint64_t ino, int flags, struct ls_file **ret);
ssize_t layerstore_read(struct layerstore *ls, struct ls_file *f, void *buf, size_t size,
                        uint64_t off);
void layerstore_release(struct layerstore *ls, struct ls_file *f);
int layerstore_opendir(struct layerstore *ls, uint64_t ino, struct ls_dir **ret);
/* As imgfs_readdir() without plus mode: ".", "..", then the entries, from offset off. */
int layerstore_readdir(struct layerstore *ls, struct ls_dir *d, uint64_t off, imgfs_dirent_fn fn,
                       void *userdata);
void layerstore_releasedir(struct layerstore *ls, struct ls_dir *d);
ssize_t layerstore_getxattr(struct layerstore *ls, uint64_t ino, const char *name, void *buf,
                            size_t size);
ssize_t layerstore_listxattr(struct layerstore *ls, uint64_t ino, char *buf, size_t size);
int layerstore_statfs(struct layerstore *ls, uint64_t ino, struct statvfs *ret);

/* Creating `use` in a layer directory takes one reference on the layer and answers
 * -ENOENT (podman expects it); any other creation is -EROFS. */
int layerstore_create(struct layerstore *ls, uint64_t parent, const char *name);
/* rmdir of a layer directory drops one reference (when it has any) and answers -ENOENT;
 * anything else is -EROFS. */
int layerstore_rmdir(struct layerstore *ls, uint64_t parent, const char *name);

/* The table of references and layers, as text (malloc'ed, *ret_len bytes): what
 * layerstore_restore() needs to number them the same in another process. It changes when
 * a reference is resolved and at each `use` and rmdir (the changed callback). */
int layerstore_save(struct layerstore *ls, char **ret, size_t *ret_len);
/* In a new store, before anything was looked up: numbers the references and layers of a
 * saved table (text, len bytes) as they were, with their use counts, unresolved until a
 * request needs them. -EBADMSG when text is not such a table (nothing is restored). */
int layerstore_restore(struct layerstore *ls, const char *text, size_t len);

/* Calls fn for every layer of every resolved reference with its reference count. */
typedef void (*ls_layer_fn)(const char *ref, const char *digest, uint64_t uses, void *userdata);
void layerstore_for_each_layer(struct layerstore *ls, ls_layer_fn fn, void *userdata);
/* The image manifests to keep from gc: those of references whose layers are held, and of
 * references resolved but never used yet (a pull in progress), restored ones included. A malloc'ed
 * array of malloc'ed strings (free with strv_free-like loop), *ret_n entries. */
int layerstore_held_manifests(struct layerstore *ls, char ***ret, size_t *ret_n);
