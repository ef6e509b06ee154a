/* Fixture layers built in memory for the fuzz targets of the layer index reader and the
 * merged tree: a small tar writer (ustar headers plus pax records) and the two layers the
 * targets start from, so that mutations land on valid structures first.
 *
 * Not thread-safe; the targets call it from one thread. Everything returns 0 or -errno. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include "fsd/index/layerindex.h"

struct fx_buf {
	uint8_t *data;
	size_t len, cap;
};

void fx_buf_free(struct fx_buf *b);
/* Appends len bytes of data, or len zeros when data is NULL. */
int fx_buf_append(struct fx_buf *b, const void *data, size_t len);

/* Deterministic, moderately compressible file contents: len bytes for seed into out. */
void fx_content(uint32_t seed, uint8_t *out, size_t len);

/* The lower fixture layer (variant 0): directories, regular files of several spans, a
 * symlink, a hardlink, an xattr, a pax 1.0 sparse file. The upper one (variant 1): a
 * whiteout, an opaque directory, a file replacing a lower one, a hardlink to a lower file.
 * The files and their contents are listed by fx_expect(). */
int fx_layer_tar(int variant, struct fx_buf *ret);

/* What a regular file of the fixture layers holds: its contents (seed and size), and for
 * the sparse file the data segment offsets. Returns false for a name not in the layer. */
struct fx_file {
	const char *path;
	uint32_t seed;
	size_t size;
	bool sparse; /* data only at [FX_SPARSE_A, +FX_SPARSE_LEN) and [FX_SPARSE_B, ...) */
};
#define FX_SPARSE_SIZE 40000u
#define FX_SPARSE_A 4096u
#define FX_SPARSE_B 30000u
#define FX_SPARSE_LEN 1000u
const struct fx_file *fx_expect(int variant, const char *path);
/* Expected byte at off of a fixture file. */
uint8_t fx_byte_at(const struct fx_file *f, uint64_t off);

/* Compresses a tar as the given compression: gzip as two members, the first with a sync
 * flush every 3 KiB (so that checkpoints fall between deflate blocks and at a member
 * start); zstd as one frame; tar unchanged. */
int fx_compress(enum li_compression comp, const struct fx_buf *tar, struct fx_buf *ret);

/* Builds the index of a layer with span bytes between access points. *ret_data is what
 * li_open() reads the data from: the seekable zstd copy for zstd, the layer itself else. */
int fx_index(enum li_compression comp, const struct fx_buf *layer, uint32_t span,
             struct fx_buf *ret_index, struct fx_buf *ret_data);

/* Writes len bytes to a new memfd; returns the fd or -errno. */
int fx_memfd(const char *name, const void *data, size_t len);
