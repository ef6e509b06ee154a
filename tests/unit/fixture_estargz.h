/* A small eStargz writer for tests, laid out as stargz-snapshotter's estargz package writes
 * layers: tar headers in the open gzip member, each chunk of file data starting a member of
 * its own (the padding and the next headers follow in it), the TOC `stargz.index.json` in a
 * member of its own with the end-of-archive blocks, and the 51-byte footer. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include "common/digest.h"

struct esgz_file {
	const char *name;
	char type; /* '0' file, '5' directory, '2' symlink (data is the target) */
	const void *data;
	size_t size;
};

struct esgz {
	uint8_t *blob; /* malloc'ed */
	size_t len;
	uint64_t toc_off;
	char *toc_json; /* malloc'ed */
	char toc_digest[DIGEST_STR_LEN + 1];
};

/* Writes the layer of files, chunk_size bytes of data per chunk. 0 or -errno. */
int esgz_build(const struct esgz_file *files, size_t n, size_t chunk_size, struct esgz *ret);
void esgz_free(struct esgz *e);

/* A ustar header (mtime 2020-01-01, uid and gid 0; link: a symlink's target or NULL), as
 * the writer puts before each file. */
void esgz_tar_header(uint8_t h[512], const char *name, char type, uint64_t size, unsigned mode,
                     const char *link);

/* The TOC member for json (any bytes): a gzip member holding a ustar header for
 * stargz.index.json, json, its padding and the end-of-archive blocks. Malloc'ed. */
int esgz_toc_member(const char *json, size_t json_len, uint8_t **ret, size_t *ret_len);
