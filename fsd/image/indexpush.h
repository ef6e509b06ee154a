/* Publishing and finding an image's layer indexes in its registry (indexart.h has the
 * artifact's format).
 *
 * index_push(): computes each layer's span table from the blob in the store, uploads the
 * index and span table blobs the registry lacks, the artifact manifest (by digest), and,
 * where the registry has no referrers API, merges the artifact into the fallback tag
 * sha256-HEX of the image manifest. Pushing the same indexes twice uploads nothing.
 *
 * index_fetch(): finds an artifact for the image manifest (referrers API, else the
 * fallback tag), and stores every layer's index and span table in the store after checking
 * them (digests, the index's own layer digest and checksum, the span table's layer and
 * size): what a lazy mount needs before any layer byte. */
#pragma once

#include "common/error.h"
#include "fsd/image/manifest.h"
#include "fsd/image/registry.h"
#include "fsd/image/store.h"

/* Pushes the indexes of the image manifest manifest_digest (in the store, with every
 * layer's blob and index) to ref's repository. Sets *ret_artifact (malloc'ed digest) and
 * *ret_uploaded (bytes uploaded; 0 when everything was there). Layers in zstd are refused
 * (-EOPNOTSUPP): their index points into a re-encoded copy the registry does not have. */
int index_push(struct store *s, struct registry *reg, const char *manifest_digest,
               char **ret_artifact, uint64_t *ret_uploaded, struct error *err);

/* Finds and stores the indexes of image manifest m (digest manifest_digest) for a lazy
 * mount. -ENOENT (with a reason) when none is published or one does not cover every layer,
 * -EOPNOTSUPP for a layer that cannot be read lazily (zstd), -EBADMSG for a malformed or
 * mismatched one: the caller falls back to a full pull. */
int index_fetch(struct store *s, struct registry *reg, const char *manifest_digest,
                const struct manifest *m, struct error *err);

/* The digests of the referrers of manifest_digest whose artifactType is type, from the
 * referrers API, else the fallback tag sha256-HEX. -ENOENT ("no WHAT is published") when
 * there are none. *ret is an array of DIGEST_STR_LEN + 1 strings. */
int index_find_referrers(struct registry *reg, const char *manifest_digest, const char *type,
                         const char *what, char (**ret)[DIGEST_STR_LEN + 1], size_t *ret_n,
                         struct error *err);
