/* OCI / Docker manifests, indexes and image configs (JSON via jansson).
 * Parsers assume hostile input: sizes are bounded (MANIFEST_MAX_SIZE, CONFIG_MAX_SIZE),
 * duplicate JSON keys are refused, malformed documents and descriptors are -EINVAL and
 * what is well-formed but not supported (Docker schema 1, unknown media types, digest
 * algorithms other than sha256) is -EPROTONOSUPPORT. On failure the parsers write a
 * one-line reason naming the offending value into err (struct error, may be NULL); the
 * caller adds which document it was. */
#pragma once

#include <stdint.h>
#include "common/digest.h"
#include "common/macros.h"

struct error;

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"

#define MANIFEST_MAX_SIZE (4u << 20) /* as containerd: manifests and indexes up to 4 MiB */
#define CONFIG_MAX_SIZE (8u << 20)
#define MANIFEST_MAX_LAYERS 1024 /* more is refused: overlayfs and Docker stop near 128 */
#define INDEX_MAX_MANIFESTS 4096 /* entries of one index */
#define CONFIG_MAX_ARGS 4096     /* Entrypoint, Cmd */
#define CONFIG_MAX_ENV 4096

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
	char *digest; /* validated "sha256:…" */
	uint64_t size;
	char **urls; /* NULL-terminated, or NULL */
	bool has_platform;
	struct platform platform;
	enum layer_compression compression; /* layers only */
	bool foreign;                       /* non-distributable layer media type */
	/* layers: the annotation MANIFEST_ANN_STARGZ_TOC (an eStargz layer's table of
	 * contents), when it is a valid digest; else "" */
	char toc_digest[DIGEST_STR_LEN + 1];
};

#define MANIFEST_ANN_STARGZ_TOC "containerd.io/snapshot/stargz/toc.digest"
#define MANIFEST_ANN_SOCI_INDEX "com.amazon.soci.index-digest"

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
	/* the annotation MANIFEST_ANN_SOCI_INDEX (a SOCI v2 index), when a valid digest */
	char soci_index[DIGEST_STR_LEN + 1];
	/* MANIFEST_INDEX */
	struct descriptor *manifests;
	size_t n_manifests;
};

/* Parses a manifest or index: OCI index, OCI manifest, Docker manifest list, Docker schema
 * 2. content_type (may be NULL, parameters ignored) is the HTTP Content-Type; a generic one
 * (application/json, application/octet-stream, text/plain) says nothing. The JSON's own
 * mediaType wins when present and must not contradict a specific Content-Type; with
 * neither, the document's shape decides (OCI allows an absent mediaType). schemaVersion
 * must be 2. An index must not carry layers/config and a manifest no manifests list.
 * Layers map their media type to compression + foreign; the config must be an OCI or
 * Docker image config. Returns 0 and *ret (free with manifest_free()), or -errno. */
int manifest_parse(const char *buf, size_t len, const char *content_type, struct manifest **ret,
                   struct error *err);
void manifest_free(struct manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct manifest *, manifest_free);
/* Frees the members of d and zeroes it; accepts a zeroed descriptor. */
void descriptor_clear(struct descriptor *d);
/* Deep copy of src into *ret (clear with descriptor_clear()). -EINVAL without digest. */
int descriptor_copy(const struct descriptor *src, struct descriptor *ret);

/* Parses "os/arch[/variant]"; missing variant for arm64 means "v8", for arm "v7"
 * (as containerd's platform matcher does). Aliases are normalised to GOARCH names
 * (x86_64 -> amd64, aarch64 -> arm64, armhf -> arm/v7); amd64 "v1" is no variant.
 * Returns 0 and fills *ret (clear with platform_clear()), -EINVAL when malformed. */
int platform_parse(const char *s, struct platform *ret);
/* The platform of this host (uname machine mapped to GOARCH names). */
int platform_host(struct platform *ret);
void platform_clear(struct platform *p);
/* "os/arch[/variant]" as a malloc'ed string, or NULL (ENOMEM or incomplete platform). */
char *platform_format(const struct platform *p);

/* Picks the best manifest of an index for want: exact os/arch, then variant compatible
 * (arm64 v8 accepts no variant; an arm vN host accepts older arm variants, the newest
 * first), skipping attestation manifests ("unknown/unknown") and entries that are not
 * manifests or indexes. Ties go to the first entry. want is normalised (platform_parse /
 * platform_host). Returns 0 and a pointer into m (valid while m lives), -ENOENT when
 * nothing fits, -EINVAL when m is not an index. */
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
	char **diff_ids; /* NULL-terminated */
	size_t n_diff_ids;
};

/* Parses an OCI / Docker image config: os/architecture/variant (normalised),
 * config.Entrypoint/Cmd/Env (arrays of strings, null = absent), WorkingDir, User,
 * rootfs.diff_ids (sha256 digests; an empty array when absent). Counts are bounded.
 * Returns 0 and *ret (free with image_config_free()), or -errno with a reason in err. */
int image_config_parse(const char *buf, size_t len, struct image_config **ret, struct error *err);
void image_config_free(struct image_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct image_config *, image_config_free);
