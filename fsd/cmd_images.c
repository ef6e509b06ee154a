/* imgfs images, inspect, rmi, gc: looking after the store. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include "common/error.h"
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/lifecycle.h"
#include "fsd/image/ref.h"
#include "fsd/image/store.h"

/* Handles --help for subcommands that take no options; returns -1 to go on, else the
 * exit status. */
static int simple_opts(int argc, char **argv, const char *usage, int min_args, int max_args)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {}};
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		if (c == 'h') {
			fputs(usage, stdout);
			return 0;
		}
		fprintf(stderr, "Try 'imgfs %s --help'.\n", argv[0]);
		return 2;
	}
	if (argc - optind < min_args || argc - optind > max_args) {
		fputs(usage, stderr);
		return 2;
	}
	return -1;
}

/* Sum of the layer sizes of the manifest, or 0 when it cannot be read. */
static uint64_t image_size(struct store *s, const char *digest)
{
	_cleanup_free_ char *body = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	uint64_t total = 0;
	size_t len;

	if (store_read_blob(s, digest, MANIFEST_MAX_SIZE, &body, &len) < 0 ||
	    manifest_parse(body, len, NULL, &m, NULL) < 0)
		return 0;
	for (size_t i = 0; i < m->n_layers; i++)
		total += m->layers[i].size;
	return total;
}

static const char images_usage[] =
    "Usage: imgfs [--root DIR] images\n"
    "\n"
    "List the images in the store: reference, manifest digest (12 hex digits) and the\n"
    "compressed size of its layers; then the store's total size on disk, and how much of\n"
    "it is the decoded-data cache (what mounts inflated, kept for the next mount; bounded\n"
    "by $IMGFS_CACHE_MAX, dropped with the layers by `imgfs gc`).\n";

int cmd_images(int argc, char **argv)
{
	_cleanup_(store_freep) struct store *s = NULL;
	struct store_ref *refs = NULL;
	size_t n = 0;
	int r = simple_opts(argc, argv, images_usage, 0, 0);

	if (r >= 0)
		return r;
	if (open_store(&s) < 0)
		return 1;
	r = store_ref_list(s, &refs, &n);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot read the references of '%s'", s->root), 1;
	printf("%-60s %-12s %s\n", "REFERENCE", "DIGEST", "SIZE");
	for (size_t i = 0; i < n; i++) {
		char size[32];

		format_bytes(image_size(s, refs[i].desc.digest), size, sizeof(size));
		printf("%-60s %-12.12s %s\n", refs[i].name, refs[i].desc.digest + 7, size);
	}
	store_refs_free(refs, n);
	{
		char total[32], cache[32];

		format_bytes(store_disk_bytes(s), total, sizeof(total));
		format_bytes(store_unit_cache_bytes(s), cache, sizeof(cache));
		printf("store total: %s, of which decoded-data cache: %s\n", total, cache);
	}
	return 0;
}

static const char inspect_usage[] =
    "Usage: imgfs [--root DIR] inspect REF\n"
    "\n"
    "Print a JSON document about the stored image REF: its reference, manifest digest,\n"
    "media type, manifest and config.\n";

static json_t *load_blob_json(struct store *s, const char *digest, size_t max)
{
	_cleanup_free_ char *body = NULL;
	size_t len;

	if (store_read_blob(s, digest, max, &body, &len) < 0)
		return NULL;
	return json_loadb(body, len, 0, NULL);
}

int cmd_inspect(int argc, char **argv)
{
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_free_ char *body = NULL, *out = NULL;
	struct descriptor d = {0};
	struct error err = {""};
	json_t *doc, *manifest;
	size_t len;
	int r = simple_opts(argc, argv, inspect_usage, 1, 1);

	if (r >= 0)
		return r;
	r = parse_ref_arg(argv[optind], &ref);
	if (r)
		return r;
	if (open_store(&s) < 0)
		return 1;
	r = store_ref_get(s, ref->name, &d);
	if (r < 0) {
		if (r == -ENOENT)
			log_msg(LOG_ERR, "no such image '%s' in '%s'", ref->name, s->root);
		else
			log_errno(LOG_ERR, r, "cannot look up '%s'", ref->name);
		return 1;
	}
	r = store_read_blob(s, d.digest, MANIFEST_MAX_SIZE, &body, &len);
	if (r >= 0)
		r = manifest_parse(body, len, NULL, &m, &err);
	manifest = r >= 0 ? json_loadb(body, len, 0, NULL) : NULL;
	if (!manifest) {
		log_error(LOG_ERR, r < 0 ? r : -EBADMSG, &err, "cannot read manifest %s of '%s'",
		          d.digest, ref->name);
		descriptor_clear(&d);
		return 1;
	}
	doc = json_pack("{s:s, s:s, s:s, s:I, s:o}", "Name", ref->name, "Digest", d.digest,
	                "MediaType", d.media_type ? d.media_type : m->media_type, "Size",
	                (json_int_t)image_size(s, d.digest), "Manifest", manifest);
	if (doc && m->kind == MANIFEST_IMAGE) {
		json_t *cfg = load_blob_json(s, m->config.digest, CONFIG_MAX_SIZE);

		if (cfg)
			json_object_set_new(doc, "Config", cfg);
	}
	descriptor_clear(&d);
	out = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(doc);
	if (!out)
		return log_errno(LOG_ERR, -ENOMEM, "inspect '%s'", ref->name), 1;
	puts(out);
	return 0;
}

static const char rmi_usage[] =
    "Usage: imgfs [--root DIR] rmi REF\n"
    "\n"
    "Remove the reference REF from the store. Its blobs stay until `imgfs gc`, which\n"
    "keeps whatever another reference or a live mount still uses.\n";

int cmd_rmi(int argc, char **argv)
{
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(store_freep) struct store *s = NULL;
	int r = simple_opts(argc, argv, rmi_usage, 1, 1);

	if (r >= 0)
		return r;
	r = parse_ref_arg(argv[optind], &ref);
	if (r)
		return r;
	if (open_store(&s) < 0)
		return 1;
	r = store_ref_remove(s, ref->name);
	if (r == -ENOENT) {
		log_msg(LOG_ERR, "no such image '%s' in '%s'", ref->name, s->root);
		return 1;
	}
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot remove '%s'", ref->name), 1;
	printf("Untagged: %s\n", ref->name);
	return 0;
}

static const char gc_usage[] =
    "Usage: imgfs [--root DIR] gc\n"
    "\n"
    "Remove the blobs, layer indexes, merged trees and partial downloads that no\n"
    "reference and no live mount uses, and what mounts whose daemon died left in the\n"
    "store (a dead mount still mounted is left for `imgfs umount`). Waits for running\n"
    "pulls to finish.\n";

int cmd_gc(int argc, char **argv)
{
	_cleanup_(store_freep) struct store *s = NULL;
	unsigned removed = 0;
	uint64_t bytes = 0;
	char size[32];
	int r = simple_opts(argc, argv, gc_usage, 0, 0);

	if (r >= 0)
		return r;
	if (open_store(&s) < 0)
		return 1;
	/* Mounts whose daemon died keep nothing alive; their directories go first. */
	r = lifecycle_reap(s, NULL);
	if (r < 0)
		log_errno(LOG_WARNING, r, "cannot clean up the dead mounts of '%s'", s->root);
	r = store_gc(s, lifecycle_for_each_live, &removed, &bytes);
	if (r < 0)
		return log_errno(LOG_ERR, r, "gc of '%s' failed", s->root), 1;
	printf("Removed %u file%s, %s\n", removed, removed == 1 ? "" : "s",
	       format_bytes(bytes, size, sizeof(size)));
	return 0;
}
