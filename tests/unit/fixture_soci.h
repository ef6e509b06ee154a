/* SOCI zTOCs for tests: zran checkpoints found as soci-snapshotter finds them (zlib's
 * inflate with Z_BLOCK: at the end of a deflate block, every `span` bytes of output, with
 * the bits still unread of the byte before, and the 32 KiB window), span digests, and the
 * file metadata, written as the flatbuffer of ztoc.fbs. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct soci_file {
	const char *name;
	const char *type; /* "reg", "dir", "symlink", ... */
	uint64_t offset;  /* of the data in the tar stream */
	uint64_t size;
	const char *link;
	int64_t mode;
	const char *mtime;
};

/* The zTOC of the gzip blob (len bytes, one member or several) holding a tar stream of the
 * files, with checkpoints every span bytes of output. Malloc'ed. v1: leave out the first
 * checkpoint, as version 1 of the format did. */
int soci_ztoc_build(const uint8_t *blob, size_t len, const struct soci_file *files, size_t n,
                    uint64_t span, int v1, uint8_t **ret, size_t *ret_len);
