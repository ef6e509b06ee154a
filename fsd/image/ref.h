/* Image references: parsing and Docker-compatible normalisation.
 *
 *   alpine                     -> docker.io/library/alpine:latest
 *   localhost:5000/a/b@sha256:… -> domain localhost:5000, path a/b, digest
 *   oci:DIR[:TAG]              -> a local OCI image layout
 *   docker-archive:FILE[:REF]  -> a `docker save` archive
 *   ./x.tar.gz, /x.tar         -> a rootfs tarball (a path that names an existing file,
 *                                 or starts with '/', './' or '../')
 *
 * Rules follow the distribution/reference grammar: lowercase path components separated
 * by '/', '.', '_', '__' or '-'s; tags [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; a first
 * component is a domain when it contains '.' or ':' or is "localhost"; total name length
 * at most 255. Hostile input is rejected with -EINVAL and a reason (common/error.h). */
#pragma once

#include "common/macros.h"

struct error;

enum ref_transport {
	REF_REGISTRY,       /* a registry reference */
	REF_OCI,            /* oci:DIR[:TAG] */
	REF_DOCKER_ARCHIVE, /* docker-archive:FILE[:REF] */
	REF_TARBALL,        /* a rootfs tarball path */
};

struct image_ref {
	enum ref_transport transport;
	char *domain; /* REF_REGISTRY: "docker.io", "localhost:5000", "[::1]:5000" */
	char *path;   /* REF_REGISTRY: "library/alpine"; REF_OCI/ARCHIVE/TARBALL: the file/dir */
	char *tag;    /* "latest" by default; NULL when only a digest was given.
	               * REF_OCI: the TAG or NULL; REF_DOCKER_ARCHIVE: the REF inside the
	               * archive as written ("busybox:latest") or NULL; REF_TARBALL: NULL */
	char *digest; /* "sha256:…" or NULL */
	char *name;   /* canonical form, see ref_parse() */
};

/* Parses s. On success *ret (free with ref_free()) holds the parts and ->name the
 * canonical form: "docker.io/library/alpine:latest", "host:5000/a/b@sha256:…"
 * ("name:tag@digest" keeps both), "oci:/abs/dir:tag", "docker-archive:/abs/file[:ref]",
 * or the absolute tarball path. On failure returns -EINVAL (or -ENOMEM) and, for -EINVAL,
 * writes a one-line reason into err (may be NULL), which does not quote s: the caller
 * names the reference it reports. */
int ref_parse(const char *s, struct image_ref **ret, struct error *err);
void ref_free(struct image_ref *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct image_ref *, ref_free);

/* The host to connect to for domain: "docker.io" -> "registry-1.docker.io", others as is. */
const char *ref_registry_host(const struct image_ref *r);

/* True when the registry is on loopback ("localhost", 127.0.0.0/8, [::1]) and is therefore
 * spoken to over plain HTTP. */
bool ref_registry_is_loopback(const struct image_ref *r);
