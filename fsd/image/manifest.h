/* OCI / Docker manifests, indexes and image configs (JSON via jansson).
 * Parsers assume hostile input: sizes are bounded by the caller, unknown media types and
 * malformed descriptors are -EINVAL / -EPROTONOSUPPORT with a static reason. */
#pragma once

#include <stdint.h>
#include "common/macros.h"

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"

#define MANIFEST_MAX_SIZE (4u << 20) /* as containerd: manifests and indexes up to 4 MiB */
#define CONFIG_MAX_SIZE (8u << 20)
#define MANIFEST_MAX_LAYERS 1024 /* more is refused: overlayfs and Docker stop near 128 */

enum layer_compression {
	LAYER_TAR,
	LAYER_GZIP,
	LAYER_ZSTD,
};

struct platform {
	char *os;           /* "linux" */
	char *architecture; /* "amd64" */
	char *variant;      /* "v8" or NULL */
};

struct descriptor {
	char *media_type;
	char *digest;   /* validated "sha256:…" */
	uint64_t size;
	char **urls;    /* NULL-terminated, or NULL */
	bool has_platform;
	struct platform platform;
	enum layer_compression compression; /* layers only */
	bool foreign;   /* non-distributable layer media type */
};

enum manifest_kind {
	MANIFEST_IMAGE, /* OCI manifest or Docker schema 2 */
	MANIFEST_INDEX, /* OCI index or Docker manifest list */
};

struct manifest {
	enum manifest_kind kind;
	char *media_type;
	/* MANIFEST_IMAGE */
	struct descriptor config;
	struct descriptor *layers;
	size_t n_layers;
	/* MANIFEST_INDEX */
	struct descriptor *manifests;
	size_t n_manifests;
};

/* Parses a manifest or index. content_type (may be NULL) is the HTTP Content-Type; the
 * JSON's own mediaType wins when present and they must not contradict. */
int manifest_parse(const char *buf, size_t len, const char *content_type, struct manifest **ret,
		   const char **ret_reason);
void manifest_free(struct manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct manifest *, manifest_free);

/* Parses "os/arch[/variant]"; missing variant for arm64 means "v8", for arm "v7"
 * (as containerd's platform matcher does). */
int platform_parse(const char *s, struct platform *ret);
/* The platform of this host (uname machine mapped to GOARCH names). */
int platform_host(struct platform *ret);
void platform_clear(struct platform *p);

/* Picks the best manifest of an index for want: exact os/arch, then variant compatible
 * (arm64 v8 accepts no variant), skipping attestation manifests ("unknown/unknown").
 * Returns 0 and a pointer into m, or -ENOENT. */
int manifest_select_platform(const struct manifest *m, const struct platform *want,
			     const struct descriptor **ret);

/* The parts of an image config that imgfs uses. */
struct image_config {
	struct platform platform;
	char **entrypoint; /* NULL-terminated, or NULL */
	char **cmd;
	char **env;
	char *working_dir;
	char *user;
	char **diff_ids;   /* NULL-terminated */
	size_t n_diff_ids;
};

int image_config_parse(const char *buf, size_t len, struct image_config **ret,
		       const char **ret_reason);
void image_config_free(struct image_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct image_config *, image_config_free);
