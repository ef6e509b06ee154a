/* Local archives as image sources, never extracted: a rootfs tarball (gzip, zstd or
 * plain tar) becomes a one-layer image; a `docker save` / `podman save` archive
 * (docker-archive:FILE[:REF]) is read member by member. Both synthesise an OCI manifest
 * (and, for tarballs, an OCI config) so the pull pipeline treats them like a registry.
 * Errors: -errno, and a one-line reason naming the file written into err (struct error,
 * common/error.h; may be NULL). */
#pragma once

#include <stdint.h>
#include "common/macros.h"
#include "registry.h"

struct error;
struct archive_image;

/* Reads the archive at path (a tarball when docker_archive is false; else a docker save
 * archive, picking the image tagged ref_in_archive, or the only image when NULL).
 * Hashes every layer once. */
int archive_image_open(const char *path, bool docker_archive, const char *ref_in_archive,
                       struct archive_image **ret, struct error *err);
void archive_image_free(struct archive_image *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct archive_image *, archive_image_free);

/* Digest of the synthesised manifest. */
const char *archive_image_manifest_digest(const struct archive_image *a);
/* Returns a copy of a blob held in memory (manifest, config); -ENOENT for layers. */
int archive_image_get_mem(const struct archive_image *a, const char *digest, char **ret_body,
                          size_t *ret_len);
/* Streams layer digest from offset to fn; an error of fn is returned as is, without a
 * reason. */
int archive_image_get_layer(const struct archive_image *a, const char *digest, uint64_t offset,
                            registry_data_fn fn, void *userdata, struct error *err);
