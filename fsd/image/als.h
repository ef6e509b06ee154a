/* containers/storage's Additional Layer Store protocol (1.43, podman 4.x): the names in a
 * store directory and the `info` file of a layer. Pure functions, no I/O.
 *
 *   STORE/BASE64(REF)/LAYER-DIGEST/diff/   the layer alone, in overlay lower format
 *   STORE/BASE64(REF)/LAYER-DIGEST/info    JSON, see als_info_format()
 *   STORE/BASE64(REF)/LAYER-DIGEST/blob    the compressed blob as the registry serves it
 *   STORE/BASE64(REF)/LAYER-DIGEST/use     created to take a reference (answered ENOENT)
 *   rmdir STORE/BASE64(REF)/LAYER-DIGEST   drops one (answered ENOENT)
 *
 * BASE64 is standard base64 with padding (Go's base64.StdEncoding) of the reference as
 * podman resolved it ("docker.io/library/alpine:latest", "host:port/name@sha256:…"). */
#pragma once

#include <stdint.h>
#include "common/macros.h"

/* The longest reference accepted in a name (a name is at most 255 bytes: 188 decoded). */
#define ALS_REF_MAX 191

/* Standard padded base64 of s, malloc'ed. */
int als_ref_encode(const char *s, char **ret);
/* Decodes a directory name into the reference it names (malloc'ed, NUL-terminated).
 * -EINVAL unless name is canonical padded standard base64 (the one spelling
 * als_ref_encode() gives) of 1..ALS_REF_MAX printable ASCII bytes without spaces. */
int als_ref_decode(const char *name, char **ret);

/* The entries of a layer directory. */
enum als_entry {
	ALS_NONE,
	ALS_DIFF,
	ALS_INFO,
	ALS_BLOB,
	ALS_USE,
};
enum als_entry als_entry_of(const char *name);

/* containers/storage's archive.Compression values, as `info` carries them. */
#define ALS_COMPRESSION_NONE 0
#define ALS_COMPRESSION_GZIP 2
#define ALS_COMPRESSION_ZSTD 4

struct als_info {
	const char *compressed_digest; /* the blob's, as in the manifest */
	uint64_t compressed_size;
	const char *diff_digest; /* the image config's diff_id for the layer */
	uint64_t diff_size;      /* bytes of the uncompressed tar */
	int compression;         /* ALS_COMPRESSION_* */
};

/* The `info` file: {"compressed-diff-digest":…, "compressed-size":…, "diff-digest":…,
 * "diff-size":…, "compression":…} and a newline, malloc'ed in *ret (length *ret_len).
 * -EINVAL when a digest is not a valid sha256 digest. */
int als_info_format(const struct als_info *in, char **ret, size_t *ret_len);
