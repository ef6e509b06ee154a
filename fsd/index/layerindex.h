/* Per-layer random-access index, built in one streaming pass over the compressed layer
 * and read back through mmap without parsing.
 *
 * File format (little endian, versioned, checksummed; the caller stores it): header (magic,
 * version, layer digest, compression, sizes, section offsets, checksum of everything
 * after the header), entry table (path, type, mode, uid, gid, mtime, size, rdev, link
 * target, xattrs, hardlink target, data offset in the uncompressed tar stream, sparse
 * segment map), string table, and access points: gzip checkpoints (zran-style: compressed
 * bit offset, uncompressed offset, the 32 KiB window stored compressed), or the frame table
 * of the seekable zstd copy of a zstd layer (which the caller stores beside the index and
 * passes as the data at open), or nothing for a plain tar layer.
 *
 * Paths are normalised: relative to the layer root, no leading "./" or "/", no empty, "."
 * or ".." components (entries that would escape are dropped and counted, see
 * docs/decisions/0018-hostile-layer-entries.md). */
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include "common/macros.h"

#define LI_DEFAULT_SPAN (1u << 20)
/* gzip layers: 1.5 MiB keeps the index under 2 % of the layer for a cold small-file read
 * around 2 ms (docs/decisions/0017-sparse-windows-and-gzip-span.md). */
#define LI_GZIP_SPAN (3u << 19)

enum li_compression {
	LI_AUTO = 0, /* detect from the first bytes */
	LI_TAR,
	LI_GZIP,
	LI_ZSTD,
};

enum li_type {
	LI_REG = 1,
	LI_DIR,
	LI_SYMLINK,
	LI_HARDLINK, /* link target is another entry's path */
	LI_CHR,
	LI_BLK,
	LI_FIFO,
};

/* One entry, as handed out by li_entry_get(); strings point into the mmap'ed index and
 * stay valid as long as the index is open. */
struct li_entry {
	const char *path;
	enum li_type type;
	uint32_t mode; /* permission bits incl. setuid/setgid/sticky, no type bits */
	uint32_t uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t size; /* apparent size (sparse files: the full size) */
	uint32_t rdev_major, rdev_minor;
	const char *link;  /* symlink target or hardlink target path, else NULL */
	uint64_t data_off; /* offset of the data in the uncompressed stream */
	uint32_t n_xattrs;
	uint32_t n_segments; /* segments of a sparse file (0 and stored < size: all hole) */
	uint64_t stored;     /* bytes stored in the stream: size, or the sum of the segments */
};

/* Limits against decompression bombs and absurd layers; exceeding one fails the build
 * with -EFBIG. Defaults in li_limits_default(). */
struct li_limits {
	uint64_t max_out;      /* uncompressed bytes of the tar stream (64 GiB) */
	uint32_t max_entries;  /* tar entries (4 Mi) */
	uint32_t max_path;     /* bytes of a path or link target (4096) */
	uint64_t max_meta;     /* bytes of strings, xattrs and sparse maps together (512 MiB) */
	uint32_t max_xattrs;   /* xattrs of one entry (1024) */
	uint32_t max_segments; /* sparse segments of one entry (1 Mi) */
};

void li_limits_default(struct li_limits *ret);

struct li_builder;

/* Starts an index for a layer with the given compression and span (0: LI_GZIP_SPAN for
 * a gzip layer, else LI_DEFAULT_SPAN).
 * data_fd: where the seekable zstd copy goes for a zstd layer (else ignored, may be -1).
 * Thread safety: a builder is used by one thread at a time; it may run its own worker
 * thread internally. */
int li_builder_new(enum li_compression comp, uint32_t span, int data_fd, struct li_builder **ret);
/* Feeds the next len bytes of the compressed layer, in order. Returns -EBADMSG on corrupt
 * or truncated data, -EFBIG on a decompression bomb (limits in
 * docs/decisions/0018-hostile-layer-entries.md). */
int li_builder_feed(struct li_builder *b, const void *buf, size_t len);
/* Ends the input and serialises the index for layer_digest into a malloc'ed buffer,
 * to be written atomically by the caller. -EBADMSG when the stream ended early. */
int li_builder_finish(struct li_builder *b, const char *layer_digest, void **ret_buf,
                      size_t *ret_len);
/* Replaces the limits; only before the first li_builder_feed(). */
int li_builder_set_limits(struct li_builder *b, const struct li_limits *lim);
/* An index described instead of built from the layer's bytes: from a table of contents
 * that the layer's publisher made (eStargz), for a gzip layer of total_in compressed bytes
 * whose gzip members start where file data does. The uncompressed offsets are the
 * describer's: a member's output is laid out from its point on, so that a read decodes from
 * the member's first byte (no window needed), and they need not be those of the real tar
 * stream as long as every file's data is contiguous in them. Entries go through the same
 * checks as those of a tar stream (paths normalised, hostile ones dropped, limits).
 * li_builder_finish() then checks the points (the first at 0, both offsets increasing). */
int li_builder_new_described(uint32_t span, uint64_t total_in, uint64_t total_out,
                             struct li_builder **ret);
/* One entry as the describer knows it. */
struct li_desc_entry {
	const char *path;
	const char *link; /* symlink target, or hardlink target path */
	enum li_type type;
	uint32_t mode; /* permission bits; type bits are ignored */
	uint64_t uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t rdev_major, rdev_minor;
	uint64_t size;     /* regular files */
	uint64_t data_off; /* in the described uncompressed offsets */
	size_t n_xattrs;
	const char *const *xattr_names;
	const void *const *xattr_values;
	const size_t *xattr_lens;
};
/* Adds an entry, in the layer's order (a later entry of the same path wins, as in tar). */
int li_builder_describe_entry(struct li_builder *b, const struct li_desc_entry *d);
/* Adds an access point: a gzip member starts at compressed offset in_off, its output at
 * out_off. In increasing order of both. */
int li_builder_describe_member(struct li_builder *b, uint64_t in_off, uint64_t out_off);
/* Adds a zran checkpoint: compressed offset in_off, bits of the byte before it still to read
 * (that byte is read from the data), uncompressed offset out_off, and the window_len bytes
 * of output before it (at most 32 KiB). In increasing order of both offsets. */
int li_builder_describe_point(struct li_builder *b, uint64_t in_off, uint64_t out_off, uint8_t bits,
                              const void *window, size_t window_len);
/* What the index of a finished builder is made of (tests, measurements). */
struct li_build_stats {
	uint32_t points;
	uint32_t windows_whole; /* gzip windows stored whole: their sparse form failed its check */
	uint64_t window_bytes;  /* compressed windows */
	uint64_t entry_bytes;   /* entry, xattr and segment records */
	uint64_t string_bytes;  /* names, link targets, xattr values */
};
/* After a successful li_builder_finish(); -EINVAL before. */
int li_builder_stats(const struct li_builder *b, struct li_build_stats *ret);
void li_builder_free(struct li_builder *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct li_builder *, li_builder_free);

struct li_index;

/* Check the crc32 of the whole index at open (reads every byte of it). Without it only the
 * header and the section bounds are checked at open; every record is range-checked where it
 * is used anyway, so corruption gives -EBADMSG/-EIO or wrong data, never a wild read. */
#define LI_OPEN_VERIFY (1u << 0)

/* Maps an index file and checks magic, version, section bounds and, with LI_OPEN_VERIFY,
 * the checksum (-EBADMSG when wrong). data_fd is the layer blob (or the seekable zstd
 * copy); both fds are dup'ed. data_fd may be -1 for metadata-only use (tree_build); reads
 * then fail with -EBADF. O(1) without LI_OPEN_VERIFY, O(index size) with it. */
int li_open_flags(int index_fd, int data_fd, unsigned flags, struct li_index **ret);
/* li_open_flags(index_fd, data_fd, LI_OPEN_VERIFY, ret). */
int li_open(int index_fd, int data_fd, struct li_index **ret);
void li_close(struct li_index *idx);

/* Makes bytes [off, off + len) of the layer data present before they are read (a lazily
 * fetched blob); returns 0, or -errno (-EIO) that the read then returns. Called from any
 * thread that reads, with no lock of the index held. */
typedef int (*li_fetch_fn)(void *ctx, uint64_t off, uint64_t len);
/* Sets the fetch hook of idx (NULL: the data is all there). Call it before the first read;
 * ctx must outlive the index. */
void li_set_fetch(struct li_index *idx, li_fetch_fn fn, void *ctx);
/* Decoded units of the index's layer are looked up in c before they are decoded, and
 * stored there after (unitcache.h); c must outlive idx. NULL: none. */
struct unitcache;
void li_set_unit_cache(struct li_index *idx, struct unitcache *c);
/* Units decoded by this process (gzip spans or pieces, zstd frames): for `imgfs status`. */
uint64_t li_decoded_units(void);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct li_index *, li_close);

/* Reads the compression recorded in the header of an index file, without mapping it, so
 * that the caller knows which data to pass to li_open_flags(): the seekable zstd copy for
 * LI_ZSTD, else the layer blob. -EBADMSG when index_fd is not a layer index. */
int li_peek_compression(int index_fd, enum li_compression *ret);

/* For an li_opener: open the index alone, with no data (metadata-only use, tree_build());
 * reads then fail with -EBADF. li_open_flags() ignores it. */
#define LI_OPEN_NO_DATA (1u << 1)

/* How the caller finds the index of a layer: open() opens the index of layer digest with
 * its data and the flags (LI_OPEN_VERIFY, LI_OPEN_NO_DATA), and returns 0 and *ret (free
 * with li_close()), or -errno: -EINVAL for a malformed digest, -ENOENT for an index or data
 * that is not there. Where indexes and data are kept is the opener's business (the store's:
 * store_layer_opener()); ctx is passed back to open() unchanged. */
struct li_opener {
	int (*open)(void *ctx, const char *digest, unsigned flags, struct li_index **ret);
	void *ctx;
};

struct li_info {
	enum li_compression compression;
	uint32_t span;
	uint64_t total_in, total_out; /* compressed and uncompressed bytes of the layer */
	uint32_t n_entries, n_points;
	uint32_t dropped; /* hostile entries left out of the index */
	const char *digest;
};

void li_get_info(const struct li_index *idx, struct li_info *ret);
size_t li_entry_count(const struct li_index *idx);
int li_entry_get(const struct li_index *idx, size_t i, struct li_entry *ret);
/* xattr k of entry i: name and value (binary, value_len bytes), pointers into the map. */
int li_xattr_get(const struct li_index *idx, size_t i, uint32_t k, const char **ret_name,
                 const void **ret_value, size_t *ret_value_len);
/* Whether any entry of the layer carries an xattr called name: 1 or 0, -EBADMSG for a
 * corrupt record. O(xattrs of the layer). */
int li_has_xattr_name(const struct li_index *idx, const char *name);

/* Reads up to len bytes of regular entry i at file offset off (sparse holes read as zeros).
 * Returns the number of bytes read (0 at EOF) or -errno. Thread-safe; decoded spans are
 * kept in a bounded LRU cache shared by every index (size: li_cache_set_size()). */
ssize_t li_read(struct li_index *idx, size_t i, void *buf, size_t len, uint64_t off);
/* Reads len bytes of the uncompressed tar stream at off (for checks and tools). */
ssize_t li_read_stream(struct li_index *idx, void *buf, size_t len, uint64_t off);
/* SEEK_DATA / SEEK_HOLE for entry i: returns the resulting offset or -ENXIO. */
int64_t li_seek(struct li_index *idx, size_t i, uint64_t off, int whence);
/* Asks the kernel to read ahead the stored (compressed) bytes that regular entry i's data
 * is decoded from (posix_fadvise WILLNEED): one large sequential read at disk speed
 * instead of the decoder's 128 KiB reads, for a reader about to read the whole file. */
void li_prefetch(struct li_index *idx, size_t i);

/* The span cache: one process-wide LRU of decoded spans (gzip: from one checkpoint to the
 * next; zstd: one frame), 32 MiB by default; 0 disables caching. Safe to call any time;
 * a smaller size evicts at once (spans being copied out stay alive until done). */
void li_cache_set_size(size_t bytes);
