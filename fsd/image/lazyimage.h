/* The layers of a lazily mounted image: one lazyblob (lazyblob.h) per layer whose blob is
 * not in the store yet, an li_opener that gives the merged tree those blobs as data (and
 * the store's blobs for the layers that are complete), and one background thread that
 * fills the blobs, layer by layer, at lower priority than reads.
 *
 * Thread-safe once opened; the opener and the stats may be used from any thread. */
#pragma once

#include <stdint.h>
#include "common/error.h"
#include "common/macros.h"
#include "fsd/image/lazyblob.h"

struct store;
struct li_opener;
struct lazyimage;

/* Fetches bytes [off, off + len) of blob layer into buf: the registry client's Range GET.
 * Called from several threads at once. */
typedef int (*lazyimage_fetch_fn)(void *ctx, const char *layer, uint64_t off, uint64_t len,
                                  void *buf, struct error *err);

struct lazyimage_opts {
	lazyimage_fetch_fn fetch;
	void *ctx;
	unsigned fill_delay_ms; /* lazyblob_opts.fill_delay_ms */
	/* Called by the fill once every layer is complete in blobs/ (from its thread). */
	void (*complete)(void *ctx);
};

struct registry;

/* lazyimage_open() for the image manifest manifest_digest in the store, fetching from reg
 * (taken over, also on failure). Once every layer is complete the ref name is recorded in
 * the store for that manifest, so that the image is an ordinary one from then on. */
int lazyimage_open_image(struct store *s, const char *manifest_digest, const char *ref_name,
                         struct registry *reg, struct lazyimage **ret, struct error *err);

struct image_ref;
struct pull_opts;

/* Makes ref ready to mount: pull_for_mount() (pull.h), and when it left the layers to the
 * mount, lazyimage_open_image(). Sets *ret_manifest, and *ret_lazy (NULL when the image
 * is whole in the store). */
int lazyimage_pull(struct store *s, const struct image_ref *ref, const struct pull_opts *po,
                   bool lazy, char **ret_manifest, struct lazyimage **ret_lazy, struct error *err);

/* Opens the lazy blobs of layers (n digests, of the manifest's sizes; those complete in
 * the store are read from there), with the span tables the store keeps beside their
 * indexes, which must be of those sizes. -ENOENT when a
 * layer missing from blobs/ has no span table. */
int lazyimage_open(struct store *s, const char *const *layers, const uint64_t *sizes, size_t n,
                   const struct lazyimage_opts *o, struct lazyimage **ret, struct error *err);
/* Stops the fill (waits for its current request) and frees everything. */
void lazyimage_free(struct lazyimage *li);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct lazyimage *, lazyimage_free);

/* The opener for tree_open_flags(); valid as long as li. */
const struct li_opener *lazyimage_opener(struct lazyimage *li);

/* Up to size bytes of the compressed blob of layer digest at off, fetching the spans they
 * need first (as a read through the opener would): the byte count (fewer only at the end
 * of the blob), -ENOENT when the layer is not a lazy one of li (complete in the store:
 * read blobs/), -errno. Thread-safe. */
ssize_t lazyimage_read_blob(struct lazyimage *li, const char *digest, void *buf, size_t size,
                            uint64_t off);

/* Starts the background fill; it ends when every blob is complete and in blobs/. */
int lazyimage_start_fill(struct lazyimage *li);

/* Bytes of all layers: fetched for reads, fetched by the fill, there, and in all. */
struct lazyimage_stats {
	uint64_t demand_bytes, fill_bytes, present, total;
	size_t layers, complete;
};
void lazyimage_get_stats(struct lazyimage *li, struct lazyimage_stats *ret);
