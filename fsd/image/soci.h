/* SOCI indexes: lazy mounts of images indexed by AWS's soci-snapshotter.
 *
 * A SOCI index is an OCI image manifest beside the image: v2 is named by the image
 * manifest's annotation `com.amazon.soci.index-digest`; v1 is a referrer of the image
 * manifest (artifactType `application/vnd.amazon.soci.index.v1+json`, found with the
 * referrers API or the fallback tag). Its layers are zTOCs, each annotated with the digest
 * of the image layer it indexes (`com.amazon.soci.image-layer-digest`); layers smaller than
 * the indexer's threshold have none.
 *
 * A zTOC is a flatbuffer (soci-snapshotter's ztoc/fbs/ztoc.fbs): the sizes of the layer
 * (compressed, uncompressed), a TOC of file metadata (name, type, offset and size in the
 * uncompressed tar stream, link name, mode, owner, RFC 3339 time, device numbers, PAX
 * records for xattrs) and the compression info: zran checkpoints (per checkpoint the
 * compressed offset, the uncompressed offset, the bits of the byte before it still to
 * read, and the 32 KiB window before it) and the sha256 of each span's compressed bytes.
 *
 * imgfs translates a zTOC into what a lazy mount reads (docs/decisions/0603-soci.md): a
 * layer index described from it (layerindex.h: its entries at their real tar offsets, a
 * point per checkpoint) and a span table of SPANS_COMPRESSED spans (spans.h). Every byte of
 * a zTOC comes from the network: the flatbuffer reader bounds every offset. */
#pragma once

#include <stdint.h>
#include "common/digest.h"
#include "common/error.h"
#include "fsd/image/spans.h"

#define SOCI_ANN_INDEX_DIGEST "com.amazon.soci.index-digest"
#define SOCI_ANN_LAYER_DIGEST "com.amazon.soci.image-layer-digest"
#define SOCI_TYPE_V1 "application/vnd.amazon.soci.index.v1+json"
#define SOCI_TYPE_V2 "application/vnd.amazon.soci.index.v2+json"
#define SOCI_MAX_ZTOC (256u << 20)

/* From the zTOC of layer (blob_size bytes): the layer index (malloc'ed) and the span table.
 * -EBADMSG with the reason in err for anything that is not a zTOC of a gzip layer of that
 * size that imgfs can serve the layer from. */
int soci_build(const char *layer, uint64_t blob_size, const void *ztoc, size_t len,
               void **ret_index, size_t *ret_index_len, struct spans **ret_spans,
               struct error *err);

/* A zTOC of a SOCI index manifest. */
struct soci_ztoc {
	char layer[DIGEST_STR_LEN + 1]; /* the image layer it indexes */
	char digest[DIGEST_STR_LEN + 1];
	uint64_t size;
};

/* The zTOCs of a SOCI index manifest (v1 or v2; its subject, if it names one, must be
 * manifest_digest unless that is NULL). -EBADMSG (reason in err) for anything else. */
int soci_index_parse(const char *json, size_t len, const char *manifest_digest,
                     struct soci_ztoc **ret, size_t *ret_n, struct error *err);

struct store;
struct registry;
struct manifest;

/* Finds the SOCI index of image manifest m (digest manifest_digest; soci_index: its
 * annotation, or "") and stores the index and span table of every layer with a zTOC that
 * is not complete in the store. *ret_unindexed[i] is set for layers without one (malloc'ed,
 * m->n_layers entries): the caller fetches those whole. -ENOENT (reason in err) when there
 * is no SOCI index, -EBADMSG for a bad one, another -errno for a registry failure. */
int soci_fetch(struct store *s, struct registry *reg, const char *manifest_digest,
               const char *soci_index, const struct manifest *m, bool **ret_unindexed,
               struct error *err);
