/* Where a pull reads from: a registry, an OCI image layout directory (oci:DIR[:TAG]),
 * a `docker save` archive or a rootfs tarball. Local sources look like a registry to the
 * pull pipeline: manifests by reference, blobs by digest from an offset.
 * Errors are -errno; err (struct error, common/error.h; may be NULL) receives a one-line
 * reason naming the URL or file that failed, but not the image: the caller adds that.
 * A source may be used from several threads at once. */
#pragma once

#include "pull.h"

struct error;

struct source;

/* Opens the source of ref: sets up the registry client, or opens and checks the local
 * layout or archive. Returns 0 and *ret (free with source_free()), or -errno. ref must
 * outlive the source. */
int source_open(const struct image_ref *ref, const struct pull_opts *opts, struct source **ret,
                struct error *err);
void source_free(struct source *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct source *, source_free);

/* The registry client of a registry source (borrowed), or NULL for a local source. */
struct registry *source_registry(const struct source *s);
/* Takes the registry client out of the source (the source keeps working until freed, but
 * must not be used for registry calls any more). */
struct registry *source_take_registry(struct source *s);

/* The reference to ask for first: a digest, a tag, or for local sources the digest of the
 * manifest that the ref names. */
const char *source_reference(const struct source *s);

int source_get_manifest(struct source *s, const char *reference, char **ret_body, size_t *ret_len,
                        char **ret_media_type, char **ret_digest, struct error *err);
int source_get_blob(struct source *s, const struct descriptor *d, uint64_t offset,
                    registry_data_fn fn, void *userdata, struct error *err);
int source_get_blob_mem(struct source *s, const char *digest, size_t max, char **ret_body,
                        size_t *ret_len, struct error *err);
