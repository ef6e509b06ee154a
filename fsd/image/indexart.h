/* The OCI artifact that publishes an image's layer indexes (`imgfs index push`), and the
 * referrers index that leads to it.
 *
 * The artifact is an OCI image manifest:
 *   artifactType  application/vnd.imgfs.layer-index.v1
 *   config        the empty descriptor (application/vnd.oci.empty.v1+json, "{}")
 *   subject       the image manifest
 *   layers        per image layer two blobs, each annotated io.imgfs.layer = the layer's
 *                 digest: the layer index (INDEXART_MT_INDEX, layerindex.h's format, or
 *                 INDEXART_MT_INDEX_GZIP, the same gzip-compressed) and its span table
 *                 (INDEXART_MT_SPANS, spans.h)
 * with no timestamp, so that the same indexes always make the same bytes: pushing twice
 * changes nothing.
 *
 * It is found through the referrers API (GET /v2/NAME/referrers/DIGEST), or where the
 * registry has none through the fallback tag sha256-HEX of the subject, an OCI image index
 * of referrers that every pusher merges into, never dropping another's entry.
 *
 * Every parser assumes hostile input: sizes and counts are bounded, digests checked. */
#pragma once

#include <stdint.h>
#include "common/digest.h"
#include "common/error.h"
#include "common/macros.h"

#define INDEXART_TYPE "application/vnd.imgfs.layer-index.v1"
#define INDEXART_MT_INDEX "application/vnd.imgfs.layer-index.v1.index"
/* The same, gzip-compressed: what imgfs pushes (an index is mostly zero-filled windows and
 * tables, a third of its size or less once compressed, and it is fetched before a mount). */
#define INDEXART_MT_INDEX_GZIP INDEXART_MT_INDEX "+gzip"
#define INDEXART_MT_SPANS "application/vnd.imgfs.layer-index.v1.spans"
#define INDEXART_ANNOTATION_LAYER "io.imgfs.layer"
#define OCI_EMPTY_MT "application/vnd.oci.empty.v1+json"
#define OCI_EMPTY_DIGEST "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
#define OCI_EMPTY_JSON "{}"

#define INDEXART_MAX_INDEX_SIZE (1ull << 30) /* a layer index: a few % of its layer */
#define INDEXART_MAX_SPANS_SIZE (64u << 20)

/* A blob of the artifact. */
struct indexart_blob {
	char digest[DIGEST_STR_LEN + 1];
	uint64_t size;
	bool gzip; /* the blob is gzip-compressed (the index only) */
};

struct indexart_layer {
	char layer[DIGEST_STR_LEN + 1];
	struct indexart_blob index, spans;
};

struct indexart {
	char subject[DIGEST_STR_LEN + 1];
	struct indexart_layer *layers;
	size_t n_layers;
};

void indexart_free(struct indexart *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct indexart *, indexart_free);

/* The artifact manifest for subject (the image manifest's media type, digest and size) and
 * its layers, as malloc'ed JSON. */
int indexart_encode(const char *subject_media_type, const char *subject_digest,
                    uint64_t subject_size, const struct indexart_layer *layers, size_t n,
                    char **ret_json, size_t *ret_len);

/* Parses an artifact manifest; it must be ours and name subject_digest as its subject.
 * -EBADMSG (reason in err) for anything else. */
int indexart_parse(const char *buf, size_t len, const char *subject_digest, struct indexart **ret,
                   struct error *err);

/* The entry for layer, or NULL. */
const struct indexart_layer *indexart_find(const struct indexart *a, const char *layer);

/* Digests of the manifests of artifactType INDEXART_TYPE in a referrers index (the answer
 * of the referrers API, or the fallback tag's index), in their order; *ret_n may be 0.
 * Entries of other types are skipped, malformed ones too; a document that is not an
 * image index is -EBADMSG. *ret is an array of DIGEST_STR_LEN + 1 strings. */
int indexart_referrers(const char *buf, size_t len, char (**ret)[DIGEST_STR_LEN + 1], size_t *ret_n,
                       struct error *err);

/* The same for artifacts of another type (a SOCI index's). */
int indexart_referrers_of(const char *buf, size_t len, const char *type,
                          char (**ret)[DIGEST_STR_LEN + 1], size_t *ret_n, struct error *err);

/* The fallback tag's index with the artifact (media type MT_OCI_MANIFEST, digest, size)
 * added: buf is the current index (NULL when the tag does not exist). Every other entry is
 * kept as it is. *ret_changed false (and *ret_json NULL) when it is there already. */
int indexart_referrers_add(const char *buf, size_t len, const char *digest, uint64_t size,
                           char **ret_json, size_t *ret_len, bool *ret_changed, struct error *err);
