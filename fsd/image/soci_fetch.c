/* SOCI indexes from the registry: the index manifest (the image manifest's annotation, else
 * its referrers), the zTOCs, and the index and span table they make put in the store; see
 * soci.h. */
#include <stdio.h>
#include "fsd/image/indexpush.h"
#include "fsd/image/manifest.h"
#include "fsd/image/registry.h"
#include "fsd/image/soci.h"
#include "fsd/image/store.h"

static int fetch_ztoc(struct store *s, struct registry *reg, const struct soci_ztoc *z,
                      const struct descriptor *d, struct error *err)
{
	_cleanup_free_ char *ztoc = NULL;
	_cleanup_free_ void *index = NULL;
	_cleanup_(spans_freep) struct spans *sp = NULL;
	struct error re = {""}, why = {""};
	size_t len = 0, index_len = 0;
	int r;

	if (store_has_lazy_index(s, d->digest))
		return 0; /* complete here, or a lazy mount before this one did this */
	r = registry_get_blob_mem(reg, z->digest, (size_t)z->size, &ztoc, &len, &re);
	if (r < 0)
		return error_set(err, r, "zTOC %s: %s", z->digest,
		                 re.msg[0] ? re.msg : strerror(-r));
	r = soci_build(d->digest, d->size, ztoc, len, &index, &index_len, &sp, &why);
	if (r < 0)
		return error_set(err, r, "layer %s: %s", d->digest, why.msg);
	return store_put_lazy_index(s, d->digest, index, index_len, sp, err);
}

/* The zTOCs of every layer of m from the SOCI index manifest digest. */
static int use_index(struct store *s, struct registry *reg, const char *digest, const char *subject,
                     const struct manifest *m, bool *unindexed, struct error *err)
{
	_cleanup_free_ char *body = NULL, *mt = NULL, *got = NULL;
	_cleanup_free_ struct soci_ztoc *z = NULL;
	struct error re = {""};
	size_t len = 0, n = 0;
	int r;

	r = registry_get_manifest(reg, digest, MANIFEST_MAX_SIZE, &body, &len, &mt, &got, &re);
	if (r < 0)
		return error_set(err, r, "SOCI index %s: %s", digest,
		                 re.msg[0] ? re.msg : strerror(-r));
	r = soci_index_parse(body, len, subject, &z, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < m->n_layers; i++) {
		const struct descriptor *d = &m->layers[i];
		const struct soci_ztoc *found = NULL;

		for (size_t k = 0; k < n && !found; k++)
			if (streq(z[k].layer, d->digest))
				found = &z[k];
		unindexed[i] = false;
		if (store_has_blob(s, d->digest) && store_has_index(s, d->digest))
			continue;
		if (!found || d->compression != LAYER_GZIP) {
			unindexed[i] = true; /* small layers have no zTOC: fetched whole */
			continue;
		}
		r = fetch_ztoc(s, reg, found, d, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int soci_fetch(struct store *s, struct registry *reg, const char *manifest_digest,
               const char *soci_index, const struct manifest *m, bool **ret_unindexed,
               struct error *err)
{
	_cleanup_free_ char(*found)[DIGEST_STR_LEN + 1] = NULL;
	_cleanup_free_ bool *unindexed = calloc(m->n_layers + 1, sizeof(bool));
	size_t n = 0;
	int r;

	if (!unindexed)
		return -ENOMEM;
	if (soci_index && soci_index[0]) {
		r = use_index(s, reg, soci_index, NULL, m, unindexed, err);
	} else {
		r = index_find_referrers(reg, manifest_digest, SOCI_TYPE_V1, "SOCI index", &found,
		                         &n, err);
		/* The newest first. */
		for (size_t k = n; r >= 0 && k-- > 0;) {
			struct error e = {""};

			r = use_index(s, reg, found[k], manifest_digest, m, unindexed, &e);
			if (r >= 0)
				break;
			if (k == 0 || r == -ENOMEM)
				return error_set(err, r, "%s", e.msg);
			r = 0;
		}
	}
	if (r < 0)
		return r;
	*ret_unindexed = TAKE_PTR(unindexed);
	return 0;
}
