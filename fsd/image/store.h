/* The content-addressed store, an OCI image layout (skopeo, umoci, oras read it):
 *
 *   ROOT/oci-layout, ROOT/index.json   refs: annotation org.opencontainers.image.ref.name
 *   ROOT/blobs/sha256/HEX              manifests, configs, layer blobs as served
 *   ROOT/idx/sha256/HEX                per-layer index (fsd/index/layerindex.h), by layer
 *                                      digest
 *   ROOT/idx/sha256/HEX.zst            its seekable zstd copy, for a zstd layer
 *   ROOT/trees/sha256/HEX              merged tree per manifest (fsd/index/tree.h)
 *   ROOT/mounts/NAME/                  live mounts (fsd/lifecycle.h, their only writer)
 *   ROOT/tmp/                          partial downloads (resumable), temporary files
 *   ROOT/lock                          flock: LOCK_SH while pulling, LOCK_EX by gc
 *
 * Every write is atomic (tmp file, fsync, rename, fsync dir). A blob appears in blobs/
 * only after its digest was verified. index.json is rewritten under an exclusive flock
 * of ROOT/index.lock, so concurrent processes never lose a ref. Whoever writes to blobs/,
 * idx/, trees/ or tmp/ holds the store lock shared (store_lock_shared()): gc, holding it
 * exclusive, treats whatever it finds there as finished or abandoned.
 *
 * Refs: an index.json entry carries org.opencontainers.image.ref.name = the canonical
 * reference when that fits the OCI ref.name grammar (every registry reference except IPv6
 * hosts and Docker names with "__"), so `skopeo inspect oci:ROOT:NAME` and
 * `umoci unpack --image ROOT:NAME` find it. Other names (oci:…, docker-archive:…, tarball
 * paths) get a valid alias (store_ref_annotation()) as ref.name and the canonical name in
 * io.imgfs.ref.name. Entries written by other tools are kept and known by their ref.name.
 * Thread safety: a struct store may be shared by threads; it holds no mutable state
 * besides its fds. */
#pragma once

#include <stdint.h>
#include "common/error.h"
#include "common/macros.h"
#include "fsd/index/layerindex.h"
#include "manifest.h"

struct spans;

struct store {
	char *root;
	int root_fd;                   /* O_PATH|O_DIRECTORY */
	int lock_fd;                   /* ROOT/lock, flock'ed LOCK_SH while the store is open */
	struct li_opener layer_opener; /* store_layer_opener() */
	struct unitcache *ucache;      /* store_enable_unit_cache(), else NULL */
};

/* Opens (creating the layout when missing) the store at root. Takes no lock: a pull calls
 * store_lock_shared() for its duration; gc takes the lock exclusive. What live mounts use
 * reaches gc through its roots callback. */
int store_open(const char *root, struct store **ret);
void store_free(struct store *s);
/* A new open of ROOT/lock for a forked child: flock()s belong to the open file, so the
 * child's lock and unlock must not act on the one it shares with its parent. */
int store_reopen_lock(struct store *s);
/* Takes the store lock shared (waits for a running gc); held until store_free(). */
int store_lock_shared(struct store *s);
/* Releases the lock store_lock_shared() took (a long-lived daemon that pulls now and then
 * must not keep gc waiting once what it pulled is otherwise rooted). */
void store_unlock(struct store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct store *, store_free);

/* The decoded-data cache, ROOT/cache/sha256 (fsd/index/unitcache.h): after this call,
 * layer indexes opened with their data look up decoded units there and store what they
 * decode (a mount's daemon calls it). Bounded by $IMGFS_CACHE_MAX (bytes, with an
 * optional K, M or G suffix; 0 turns the cache off), else UNITCACHE_DEFAULT_MAX. A cache
 * that cannot be set up is logged and left out. */
void store_enable_unit_cache(struct store *s);
/* The bound store_enable_unit_cache() uses; -EINVAL for a malformed $IMGFS_CACHE_MAX. */
int store_unit_cache_max(uint64_t *ret);
/* Bytes the decoded-data cache holds. */
uint64_t store_unit_cache_bytes(struct store *s);
/* Bytes on disk of the store's blobs, indexes, trees, partial downloads and cache (not
 * of the mounts' upper layers). */
uint64_t store_disk_bytes(struct store *s);

/* The default root: $IMGFS_ROOT, else /var/lib/imgfs (root) or $XDG_DATA_HOME/imgfs
 * (~/.local/share/imgfs). Returns a malloc'ed string. */
int store_default_root(char **ret);

/* True when blobs/sha256/HEX of digest exists. */
bool store_has_blob(struct store *s, const char *digest);
/* Opens blobs/… read-only. */
int store_open_blob(struct store *s, const char *digest, int *ret_fd);
/* Reads a small blob (manifest, config) into memory (NUL-terminated, free()); -EFBIG
 * beyond max, -EBADMSG when the content no longer matches its digest. */
int store_read_blob(struct store *s, const char *digest, size_t max, char **ret_buf,
                    size_t *ret_len);
/* Verifies buf against digest and stores it atomically (no-op when present). -EBADMSG
 * on mismatch, and nothing is written. */
int store_put_blob(struct store *s, const char *digest, const void *buf, size_t len);

/* True when idx/sha256/HEX, the index of layer digest, exists. */
bool store_has_index(struct store *s, const char *digest);
/* Opens (creating, truncating) a temporary file in ROOT/tmp for the seekable zstd copy of
 * layer digest, O_RDWR, for this process; its name, relative to the root, goes to name
 * (size bytes; 160 are enough) for store_put_index() or store_discard_temp(). */
int store_open_zst_temp(struct store *s, const char *digest, char *name, size_t size, int *ret_fd);
/* Removes a temporary file named by store_open_zst_temp(); errors are ignored. */
void store_discard_temp(struct store *s, const char *name);
/* Stores the index of layer digest atomically (write it before the blob: a blob in blobs/
 * always has its index). For a zstd layer, zst_fd/zst_name (from store_open_zst_temp()) is
 * fsync'ed and renamed beside the index first; zst_fd -1: none. */
int store_put_index(struct store *s, const char *digest, const void *buf, size_t len, int zst_fd,
                    const char *zst_name);

/* True when trees/sha256/HEX, the merged tree of manifest_digest, exists. */
bool store_has_tree(struct store *s, const char *manifest_digest);
/* Stores the merged tree of manifest_digest atomically. */
int store_put_tree(struct store *s, const char *manifest_digest, const void *buf, size_t len);

/* ROOT/tmp/HEX.partial, relative to the root, for a valid digest (error messages). Returns
 * buf. */
const char *store_partial_path(const char *digest, char *buf, size_t size);
/* Opens (creating) ROOT/tmp/HEX.partial for a download of digest, O_RDWR, positioned
 * nowhere in particular; *ret_size is its current size (bytes already downloaded).
 * The caller holds an exclusive flock on the returned fd while writing, so two pulls of
 * the same blob do not interleave: -EAGAIN-free, the second waits. */
int store_open_partial(struct store *s, const char *digest, int *ret_fd, uint64_t *ret_size);
/* fsyncs fd and renames the partial file of digest into blobs/, then fsyncs the dir.
 * The caller verified the digest. */
int store_commit_partial(struct store *s, const char *digest, int fd);
/* A lazily fetched blob: ROOT/tmp/HEX.lazy, a sparse file of the blob's size (extended when
 * shorter), opened O_RDWR and held LOCK_SH (every process serving it holds it; gc keeps a
 * locked one). Which of its bytes are there is the span table's business (spans.h). */
int store_open_lazy(struct store *s, const char *digest, uint64_t size, int *ret_fd);
/* fsyncs fd (the lazy file of digest, verified complete by the caller) and renames it into
 * blobs/. -ESTALE when the path no longer names fd (another process committed it). */
int store_commit_lazy(struct store *s, const char *digest, int fd);
/* Reads and parses the image manifest digest (an index is -EINVAL). Sets *ret (free with
 * manifest_free()) and *ret_size (its bytes; ret_size may be NULL). Reasons name it. */
int store_read_image_manifest(struct store *s, const char *digest, struct manifest **ret,
                              size_t *ret_size, struct error *err);
/* Reads the merged tree of manifest_digest into a malloc'ed buffer; -ENOENT when none. */
int store_read_tree(struct store *s, const char *manifest_digest, char **ret_buf, size_t *ret_len);
/* Reads the index of layer digest (its file, as stored) into a malloc'ed buffer. */
int store_read_index(struct store *s, const char *digest, size_t max, char **ret_buf,
                     size_t *ret_len);
/* Removes the lazy file of digest when it is still fd's (its bytes are not the layer's). */
int store_discard_lazy(struct store *s, const char *digest, int fd);
/* Stores the span table of layer digest atomically (idx/sha256/HEX.spans). */
int store_put_spans(struct store *s, const char *digest, const void *buf, size_t len);
/* Reads the span table of layer digest into a malloc'ed buffer; -ENOENT when none. */
int store_read_spans(struct store *s, const char *digest, void **ret_buf, size_t *ret_len);
/* True when a lazy mount of layer digest needs no index fetched: the blob and its index
 * are here, or its index and a readable span table are (a lazy mount before stored them). */
bool store_has_lazy_index(struct store *s, const char *digest);
/* Stores what a lazy mount of layer digest reads by: the span table sp, encoded, then the
 * index (index_len bytes), each atomically. Returns 0, or -errno with a reason naming the
 * layer in err (none when encoding the table fails: -ENOMEM). */
int store_put_lazy_index(struct store *s, const char *digest, const void *index, size_t index_len,
                         const struct spans *sp, struct error *err);
/* The same with the span table already encoded (table_len bytes, e.g. as published). */
int store_put_lazy_index_encoded(struct store *s, const char *digest, const void *index,
                                 size_t index_len, const void *table, size_t table_len,
                                 struct error *err);

/* Removes the partial file of digest (after a digest mismatch). */
int store_discard_partial(struct store *s, const char *digest);

/* Opens the index of layer digest (idx/) with its data: the seekable zstd copy beside the
 * index for a zstd layer, else the blob; with LI_OPEN_NO_DATA, the index alone. flags as
 * for li_open_flags(). Returns 0 and *ret (free with li_close()), -EINVAL for a malformed
 * digest, -ENOENT when the index or its data is missing, -EBADMSG for a corrupt index. */
int store_open_layer_index(struct store *s, const char *digest, unsigned flags,
                           struct li_index **ret);
/* The index of layer digest with data_fd as its data (a lazily fetched blob; dup'ed). */
int store_open_layer_index_data(struct store *s, const char *digest, int data_fd, unsigned flags,
                                struct li_index **ret);
/* The li_opener for tree_build() and tree_open_flags(): store_open_layer_index() on s.
 * Borrowed; valid as long as s. */
const struct li_opener *store_layer_opener(struct store *s);

/* Path relative to the root for kind "blobs", "idx" or "trees" of digest, in buf.
 * Returns buf, or NULL (and buf "") when digest is not a valid sha256 digest. */
const char *store_path(const char *kind, const char *digest, char *buf, size_t size);

/* Refs in index.json. name is the canonical reference (struct image_ref.name).
 * store_ref_set replaces any entry of that name (and any entry of another tool with the
 * same ref.name) in place, else appends; only media_type, digest and size of manifest are
 * recorded. Read-modify-write under the index lock; never loses a concurrent update. */
int store_ref_set(struct store *s, const char *name, const struct descriptor *manifest);
/* Returns 0 and the manifest descriptor, -ENOENT when no such ref. */
int store_ref_get(struct store *s, const char *name, struct descriptor *ret);
int store_ref_remove(struct store *s, const char *name);
struct store_ref {
	char *name;
	struct descriptor desc;
};
/* Lists every ref; *ret is an array of *ret_n entries (free with store_refs_free()). */
int store_ref_list(struct store *s, struct store_ref **ret, size_t *ret_n);
void store_refs_free(struct store_ref *refs, size_t n);

/* True when s fits the OCI org.opencontainers.image.ref.name grammar (which skopeo and
 * umoci enforce): components of alphanumerics joined by one of -._:@+ or "--", separated
 * by '/'. */
bool store_ref_name_valid(const char *s);
/* The ref.name recorded for the canonical name: name itself when valid, else its runs of
 * alphanumerics joined by '-' plus '-' and 16 hex digits of sha256(name)
 * ("/srv/rootfs.tar.gz" -> "srv-rootfs-tar-gz-0123456789abcdef"). Malloc'ed. */
int store_ref_annotation(const char *name, char **ret);

/* Calls keep(digest, ctx) for each manifest that is in use outside the refs (a live
 * mount's); returns keep's first negative result, or 0. */
typedef int (*store_roots_fn)(struct store *s, int (*keep)(const char *digest, void *ctx),
                              void *ctx);

/* Removes blobs, idx, trees and tmp files not reachable from a ref or from a manifest
 * that roots (may be NULL) names, asked for with the store locked exclusive. Reachable: every
 * index.json entry (named or not), and recursively every descriptor of a stored manifest or index
 * (config, layers, child manifests, subject); idx/HEX and idx/HEX.zst belong to layer HEX,
 * trees/HEX to manifest HEX. Partial files locked by a pull are kept, other tmp/ files
 * removed, and so are the temporary files a killed writer of index.json or oci-layout
 * left in the root; mounts/ is never touched. Takes the store lock exclusive for the duration
 * (waits for pulls and mounts to finish starting) and releases it at the end (a shared
 * lock held before by this store is released too). Reports what it removed through
 * *ret_removed / *ret_bytes (may be NULL). */
int store_gc(struct store *s, store_roots_fn roots, unsigned *ret_removed, uint64_t *ret_bytes);
