/* eStargz layers from the registry: footer and TOC fetched with Range requests, the index
 * and span table they make put in the store; see estargz.h. */
#include <stdio.h>
#include "fsd/image/estargz.h"
#include "fsd/image/manifest.h"
#include "fsd/image/registry.h"
#include "fsd/image/store.h"

static int fetch_layer(struct store *s, struct registry *reg, const struct descriptor *d,
                       struct error *err)
{
	_cleanup_free_ uint8_t *member = NULL;
	_cleanup_free_ void *index = NULL;
	_cleanup_(spans_freep) struct spans *sp = NULL;
	uint8_t footer[ESTARGZ_FOOTER_SIZE];
	struct error re = {""}, why = {""};
	size_t index_len = 0;
	uint64_t toc_off;
	int r;

	if (store_has_lazy_index(s, d->digest))
		return 0; /* complete here, or a lazy mount before this one did this */
	if (!d->toc_digest[0])
		return error_set(err, -ENOENT, "layer %s is not eStargz", d->digest);
	if (d->compression != LAYER_GZIP || d->size < ESTARGZ_FOOTER_SIZE)
		return error_set(err, -EBADMSG, "layer %s: an eStargz layer must be gzip",
		                 d->digest);
	r = registry_get_blob_range(reg, d->digest, d->size - ESTARGZ_FOOTER_SIZE,
	                            ESTARGZ_FOOTER_SIZE, footer, &re);
	if (r < 0)
		return error_set(err, r, "layer %s: eStargz footer: %s", d->digest,
		                 re.msg[0] ? re.msg : strerror(-r));
	r = estargz_footer_parse(footer, sizeof(footer), d->size, &toc_off, &why);
	if (r < 0)
		return error_set(err, r, "layer %s: %s", d->digest, why.msg);
	if (d->size - ESTARGZ_FOOTER_SIZE - toc_off > ESTARGZ_MAX_TOC)
		return error_set(err, -EBADMSG, "layer %s: its eStargz TOC is larger than %u bytes",
		                 d->digest, ESTARGZ_MAX_TOC);
	member = malloc(d->size - ESTARGZ_FOOTER_SIZE - toc_off + 1);
	if (!member)
		return -ENOMEM;
	r = registry_get_blob_range(reg, d->digest, toc_off,
	                            d->size - ESTARGZ_FOOTER_SIZE - toc_off, member, &re);
	if (r < 0)
		return error_set(err, r, "layer %s: eStargz TOC: %s", d->digest,
		                 re.msg[0] ? re.msg : strerror(-r));
	r = estargz_build(d->digest, d->size, toc_off, member,
	                  d->size - ESTARGZ_FOOTER_SIZE - toc_off, d->toc_digest, &index,
	                  &index_len, &sp, &why);
	if (r < 0)
		return error_set(err, r, "layer %s: %s", d->digest, why.msg);
	return store_put_lazy_index(s, d->digest, index, index_len, sp, err);
}

int estargz_fetch(struct store *s, struct registry *reg, const struct manifest *m,
                  struct error *err)
{
	for (size_t i = 0; i < m->n_layers; i++) {
		int r = fetch_layer(s, reg, &m->layers[i], err);

		if (r < 0)
			return r;
	}
	return 0;
}
