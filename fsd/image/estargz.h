/* eStargz layers: lazy mounts of images their publishers made seekable.
 *
 * An eStargz layer is an ordinary tar.gz whose gzip members start where a chunk of file
 * data does, followed by a table of contents, the tar entry `stargz.index.json` (JSON: every
 * entry's metadata, and per chunk of file data its compressed member offset `offset`, its
 * offset in that member's output `innerOffset`, its place in the file `chunkOffset` /
 * `chunkSize`, and the sha256 of its bytes `chunkDigest`) in a member of its own, and a
 * 51-byte footer: an empty gzip member whose extra field "SG" holds the TOC's offset as
 * 16 hex digits and "STARGZ". The layer descriptor's annotation
 * `containerd.io/snapshot/stargz/toc.digest` is the sha256 of the TOC's JSON.
 *
 * imgfs translates the TOC into what a lazy mount already reads: a layer index described
 * from it (layerindex.h, li_builder_new_described(): one access point per member, no
 * windows) and a chunked span table (spans.h: a span per member, checked by inflating it
 * and hashing each chunk), see docs/decisions/0602-estargz.md.
 *
 * Every byte comes from the network: everything is bounded and checked. */
#pragma once

#include <stdint.h>
#include "common/error.h"
#include "fsd/image/spans.h"

#define ESTARGZ_FOOTER_SIZE 51
#define ESTARGZ_TOC_NAME "stargz.index.json"
#define ESTARGZ_MAX_TOC (64u << 20) /* bytes of the TOC member, and of its JSON */

/* The TOC's offset from a footer (the last ESTARGZ_FOOTER_SIZE bytes of a blob of
 * blob_size bytes). -EBADMSG (reason in err) when it is not an eStargz footer, or the
 * offset is not inside the blob before the footer. */
int estargz_footer_parse(const void *buf, size_t len, uint64_t blob_size, uint64_t *ret_toc_off,
                         struct error *err);

/* From the TOC member (bytes [toc_off, blob_size - ESTARGZ_FOOTER_SIZE) of layer): checks
 * its JSON against toc_digest (NULL: unchecked, tests only), and returns the layer index
 * (malloc'ed, *ret_index_len bytes) and the chunked span table of the layer. -EBADMSG with
 * the reason in err for anything that is not a TOC imgfs can serve the layer from. */
int estargz_build(const char *layer, uint64_t blob_size, uint64_t toc_off, const void *member,
                  size_t len, const char *toc_digest, void **ret_index, size_t *ret_index_len,
                  struct spans **ret_spans, struct error *err);

/* An RFC 3339 time as eStargz and SOCI write it ("2006-01-02T15:04:05Z", also with
 * fractions of a second or a numeric offset); false for anything else. */
bool estargz_parse_time(const char *s, int64_t *ret_sec, uint32_t *ret_nsec);

struct store;
struct registry;
struct manifest;

/* Makes every layer of m that is not complete in the store ready for a lazy mount from its
 * eStargz TOC: footer and TOC fetched from reg, the index and the span table put in the
 * store. -ENOENT (reason in err) when a layer is not eStargz (no TOC annotation), -EBADMSG
 * for a bad footer or TOC, another -errno for a registry failure. */
int estargz_fetch(struct store *s, struct registry *reg, const struct manifest *m,
                  struct error *err);
