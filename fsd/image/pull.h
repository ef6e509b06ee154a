/* The one-pass pull pipeline: manifest negotiation, then per layer HTTP body → sha256 →
 * blob file → layer index builder, layers in parallel; then the merged tree; then the ref.
 * Also imports local sources (oci:DIR, docker-archive:FILE, rootfs tarballs) the same way. */
#pragma once

#include <signal.h>
#include "common/macros.h"
#include "manifest.h"
#include "ref.h"
#include "registry.h"
#include "store.h"

struct error;

struct pull_opts {
	const char *platform; /* "os/arch[/variant]" or NULL for the host's */
	bool insecure;
	bool quiet;        /* no progress output at all */
	unsigned parallel; /* concurrent layer downloads; 0: default (4) */
	/* When not NULL and set (by a signal handler), downloads stop with -EINTR; partial
	 * files stay for the next pull to resume. */
	const volatile sig_atomic_t *cancel;
	struct registry_opts reg;
};

/* Makes ref present in the store: pulls what is missing (or everything when force) and
 * ensures the layer indexes and the merged tree exist. On success sets *ret_manifest to the
 * image manifest's digest (malloc'ed) when ret_manifest is not NULL. Nothing is logged:
 * errors are returned as -errno with a reason in err (may be NULL) that names the URL,
 * file or digest that failed but not the image, which the caller adds when it reports:
 * log_error(LOG_ERR, r, &err, "%s", ref->name). */
int pull_image(struct store *s, const struct image_ref *ref, const struct pull_opts *opts,
               bool force, char **ret_manifest, struct error *err);

/* pull_image() for a mount. With lazy, when the registry publishes an index for every
 * layer (indexpush.h), only the manifest, the config and the indexes are fetched, the tree
 * is built from them, and 1 is returned with *ret_registry (free with registry_free();
 * may be NULL) for the mount to fetch the layers as they are read; the ref is not recorded
 * until they are complete. Otherwise (and without lazy) the image is pulled whole, with
 * one progress line saying why when an index was looked for, and 0 is returned. */
int pull_for_mount(struct store *s, const struct image_ref *ref, const struct pull_opts *opts,
                   bool force, bool lazy, char **ret_manifest, struct registry **ret_registry,
                   struct error *err);

/* After a lazy mount completed the layers of image manifest_digest: indexes them again from
 * their verified blobs (replacing the published indexes) and rebuilds the tree. Returns 0
 * when the tree is what the published indexes made, 1 when it differed (the published
 * indexes did not describe the layers; the store now has the right ones), -errno. */
int pull_reindex(struct store *s, const char *manifest_digest, struct error *err);

/* Like pull_image() but never touches the network: the ref must be in the store already
 * (local sources are imported). -ENOENT when it is not. */
int pull_resolve_local(struct store *s, const struct image_ref *ref, char **ret_manifest);
