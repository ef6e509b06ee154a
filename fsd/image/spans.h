/* The span table of a layer blob: the sha256 of every span_size bytes of the compressed
 * blob as the registry serves it, so that bytes fetched with HTTP Range are verified before
 * use, long before the whole blob (and its digest) is there. imgfs publishes it beside the
 * layer index (`imgfs index push`) and keeps it in the store next to the index.
 *
 * File format (little endian):
 *   magic "IMGFSSPN", u32 version (1), u32 span_size (a power of two, 64 KiB..16 MiB),
 *   u64 blob_size, char layer[72] (the blob's digest, NUL-padded), u64 n_spans
 *   (= ceil(blob_size / span_size)), then n_spans 32-byte sha256 digests; span i covers
 *   [i * span_size, min((i + 1) * span_size, blob_size)).
 * Every value comes from the network: spans_parse() checks all of it. */
#pragma once

#include <stdint.h>
#include "common/digest.h"
#include "common/error.h"
#include "common/macros.h"

#define SPANS_DEFAULT_SIZE (64u << 10)
#define SPANS_MIN_SIZE (64u << 10)
#define SPANS_MAX_SIZE (16u << 20)

/* Version 2, chunked (a layer whose publisher made a table of contents with a digest of
 * every chunk of file data, as eStargz does): spans of their own sizes, each starting at a
 * gzip member, checked by inflating them: the sha256 of each chunk (bytes [inner, inner +
 * size) of the span's inflated output) must be the chunk's digest. A span without chunks
 * (tar headers only) cannot be checked: it is fetched whenever it is needed and is never
 * taken as there from the file alone; its bytes are never a file's data.
 *
 *   magic "IMGFSSPN", u32 version (2), u32 check, u64 blob_size, char layer[72], u64 n_spans,
 *   u64 n_chunks, then n_spans of {u64 offset, u32 first_chunk, u32 n_chunks} (offsets
 *   increasing from 0, a span ends where the next starts; the chunks of span i follow those
 *   of span i - 1), then n_chunks of {u64 inner, u64 size, u8 sha256[32]} (increasing,
 *   not overlapping, inner + size at most SPANS_MAX_OUT).
 *
 * The u32 after the version says how the spans are checked: 0 as above; 1 (SPANS_COMPRESSED,
 * a SOCI zTOC's span digests) by the sha256 of the span's compressed bytes: each span has
 * one chunk or none, whose inner is 0 and whose size is the bytes the digest covers, from
 * the span's offset: up to the next span's offset, or one byte more (a zran checkpoint that
 * starts inside a byte: that byte ends one span and starts the next). */
#define SPANS_MAX_CHUNKED_SPAN (64u << 20) /* compressed bytes of one span */
#define SPANS_MAX_OUT (256u << 20)         /* bytes a check may inflate */

struct spans_chunk {
	uint64_t inner, size;
	uint8_t digest[32];
};

struct spans {
	char layer[DIGEST_STR_LEN + 1];
	uint64_t blob_size;
	uint32_t span_size; /* 0 when chunked */
	uint64_t n_spans;
	uint8_t (*digest)[32]; /* n_spans entries, malloc'ed (fixed spans) */
	/* chunked: */
	uint64_t *off;           /* n_spans offsets, or NULL for fixed spans */
	uint32_t *first, *count; /* the chunks of span i: chunks[first[i] ..+count[i]) */
	struct spans_chunk *chunks;
	uint64_t n_chunks;
	uint64_t max_len; /* the longest span */
	uint32_t check;   /* chunked: SPANS_INFLATED or SPANS_COMPRESSED */
};

enum {
	SPANS_INFLATED = 0,   /* chunks checked in the span's inflated output */
	SPANS_COMPRESSED = 1, /* the span's compressed bytes checked */
};

void spans_free(struct spans *sp);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct spans *, spans_free);

/* Hashes the blob of digest layer, size bytes read from fd, in spans of span_size.
 * Returns 0 and *ret (free with spans_free()), or -errno (-EIO when fd is short). */
int spans_compute(int fd, const char *layer, uint64_t size, uint32_t span_size, struct spans **ret);

/* Serialises sp into a malloc'ed buffer. */
int spans_encode(const struct spans *sp, void **ret_buf, size_t *ret_len);

/* Parses a span table; -EBADMSG (with a reason in err) for anything that is not one, or
 * one whose layer or size is not those expected (expected_layer may be NULL, expected_size
 * UINT64_MAX when unknown). */
int spans_parse(const void *buf, size_t len, const char *expected_layer, uint64_t expected_size,
                struct spans **ret, struct error *err);

/* A chunked table of n_spans spans and n_chunks chunks, zero-filled (the caller fills in
 * off, first, count, chunks and then calls spans_chunked_check()). */
int spans_new_chunked(const char *layer, uint64_t size, uint64_t n_spans, uint64_t n_chunks,
                      struct spans **ret);
/* Checks a chunked table's form (what spans_parse() checks): 0 or -EBADMSG with a reason. */
int spans_chunked_check(struct spans *sp, struct error *err);

/* The span that holds byte off (< blob_size). */
uint64_t spans_find(const struct spans *sp, uint64_t off);
/* Whether span i can be checked by its bytes (fixed spans always; chunked ones that hold
 * chunks). */
bool spans_checkable(const struct spans *sp, uint64_t i);

/* The bytes span i is counted for: up to the next span's offset (spans of SPANS_COMPRESSED
 * tables may overlap by a byte). */
uint64_t spans_owned(const struct spans *sp, uint64_t i);

/* Byte range of span i: [*ret_off, *ret_off + *ret_len). */
void spans_range(const struct spans *sp, uint64_t i, uint64_t *ret_off, uint64_t *ret_len);

/* Whether buf (the whole of span i) has the span's digest. */
bool spans_check(const struct spans *sp, uint64_t i, const void *buf, size_t len);
