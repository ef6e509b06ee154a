/* Publishing and finding layer indexes; see indexpush.h. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <zlib.h>
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/image/indexart.h"
#include "fsd/image/indexpush.h"
#include "fsd/image/spans.h"
#include "fsd/index/layerindex.h"

/* The registry's reason, where the registry gave one. */
static int reg_fail(struct error *err, int r, const struct error *re, const char *what)
{
	if (re->msg[0])
		return error_set(err, r, "%s", re->msg);
	return error_set(err, r, "%s: %s", what, strerror(-r));
}

/* gzip of buf (deterministic: the same bytes give the same blob). */
static int gzip_buf(const void *buf, size_t len, void **ret, size_t *ret_len)
{
	z_stream z = {0};
	uLong cap = compressBound((uLong)len) + 64;
	uint8_t *out = malloc(cap);
	int zr;

	if (!out)
		return -ENOMEM;
	if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		free(out);
		return -ENOMEM;
	}
	z.next_in = (Bytef *)buf;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	zr = deflate(&z, Z_FINISH);
	deflateEnd(&z);
	if (zr != Z_STREAM_END) {
		free(out);
		return -EIO;
	}
	*ret = out;
	*ret_len = cap - z.avail_out;
	return 0;
}

/* gunzip of a blob from the network: at most max bytes out, one gzip member, nothing
 * after it. -EBADMSG otherwise. */
static int gunzip_buf(const void *buf, size_t len, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *out = NULL;
	z_stream z = {0};
	size_t cap = MIN(max, MAX(len * 4, (size_t)4096)), n = 0;
	int zr;

	if (inflateInit2(&z, 15 + 16) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)buf;
	z.avail_in = (uInt)len;
	for (;;) {
		if (n == cap) {
			char *bigger;

			if (cap >= max) {
				inflateEnd(&z);
				return -EBADMSG; /* larger than any index may be */
			}
			cap = MIN(max, cap * 2);
			bigger = realloc(out, cap);
			if (!bigger) {
				inflateEnd(&z);
				return -ENOMEM;
			}
			out = bigger;
		}
		if (!out) {
			out = malloc(cap);
			if (!out) {
				inflateEnd(&z);
				return -ENOMEM;
			}
		}
		z.next_out = (Bytef *)out + n;
		z.avail_out = (uInt)MIN(cap - n, (size_t)UINT_MAX);
		zr = inflate(&z, Z_NO_FLUSH);
		n = (size_t)(z.next_out - (Bytef *)out);
		if (zr == Z_STREAM_END)
			break;
		if (zr != Z_OK && zr != Z_BUF_ERROR) {
			inflateEnd(&z);
			return -EBADMSG;
		}
		if (zr == Z_BUF_ERROR && z.avail_in == 0) {
			inflateEnd(&z);
			return -EBADMSG; /* truncated */
		}
	}
	inflateEnd(&z);
	if (z.avail_in != 0)
		return -EBADMSG;
	*ret = TAKE_PTR(out);
	*ret_len = n;
	return 0;
}

static void fallback_tag(const char *digest, char tag[DIGEST_STR_LEN + 1])
{
	snprintf(tag, DIGEST_STR_LEN + 1, "sha256-%s", digest_hex(digest));
}

/* Uploads buf as blob digest unless the registry has it; adds what it sent to *sent. */
static int push_blob(struct registry *reg, const char *digest, const void *buf, size_t len,
                     uint64_t *sent, struct error *err)
{
	struct error re = {""};
	int r = registry_has_blob(reg, digest, &re);

	if (r < 0)
		return reg_fail(err, r, &re, digest);
	if (r > 0)
		return 0;
	r = registry_put_blob(reg, digest, buf, len, &re);
	if (r < 0)
		return reg_fail(err, r, &re, digest);
	*sent += len;
	return 0;
}

/* The index a lazy mount reads, built again from the blob with access points every
 * LAZY_SPAN bytes instead of the pull's 1.5 MiB: a small file read over the network costs
 * the compressed bytes from the access point before it, so a third of the spacing is a
 * third of that, for an index about twice as large (decision 0601). */
#define LAZY_SPAN (512u << 10)
static int lazy_index(int fd, const struct descriptor *d, void **ret, size_t *ret_len)
{
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	_cleanup_free_ uint8_t *buf = malloc(1u << 20);
	uint64_t off = 0;
	int r;

	if (!buf)
		return -ENOMEM;
	r = li_builder_new(d->compression == LAYER_GZIP ? LI_GZIP : LI_TAR, LAZY_SPAN, -1, &b);
	while (r >= 0 && off < d->size) {
		ssize_t n = pread_full(fd, buf, (size_t)MIN((uint64_t)(1u << 20), d->size - off),
		                       (off_t)off);

		if (n <= 0)
			return n < 0 ? (int)n : -EIO;
		r = li_builder_feed(b, buf, (size_t)n);
		off += (uint64_t)n;
	}
	if (r < 0)
		return r;
	return li_builder_finish(b, d->digest, ret, ret_len);
}

/* The index and span table of one layer, as blobs to push. */
static int layer_blobs(struct store *s, const struct descriptor *d, struct indexart_layer *ret,
                       void **ret_index, size_t *ret_index_len, void **ret_spans,
                       size_t *ret_spans_len, struct error *err)
{
	_cleanup_(spans_freep) struct spans *sp = NULL;
	_cleanup_close_ int fd = -1;
	int r;

	if (d->compression == LAYER_ZSTD)
		return error_set(err, -EOPNOTSUPP,
		                 "layer %s is zstd: its index reads a re-encoded copy that the "
		                 "registry does not have",
		                 d->digest);
	r = store_open_blob(s, d->digest, &fd);
	if (r >= 0)
		r = lazy_index(fd, d, ret_index, ret_index_len);
	if (r < 0)
		return error_set(err, r, "layer %s: cannot index it for lazy reads: %s", d->digest,
		                 strerror(-r));
	if (r >= 0)
		r = spans_compute(fd, d->digest, d->size, SPANS_DEFAULT_SIZE, &sp);
	if (r >= 0)
		r = spans_encode(sp, ret_spans, ret_spans_len);
	if (r >= 0)
		r = store_put_spans(s, d->digest, *ret_spans, *ret_spans_len);
	if (r < 0)
		return error_set(err, r, "layer %s: cannot compute its span table: %s", d->digest,
		                 strerror(-r));
	{
		void *gz = NULL;
		size_t gz_len = 0;

		r = gzip_buf(*ret_index, *ret_index_len, &gz, &gz_len);
		if (r < 0)
			return error_set(err, r, "layer %s: cannot compress its index: %s",
			                 d->digest, strerror(-r));
		free(*ret_index);
		*ret_index = gz;
		*ret_index_len = gz_len;
	}
	memcpy(ret->layer, d->digest, DIGEST_STR_LEN + 1);
	sha256_buf(*ret_index, *ret_index_len, ret->index.digest);
	ret->index.size = *ret_index_len;
	ret->index.gzip = true;
	sha256_buf(*ret_spans, *ret_spans_len, ret->spans.digest);
	ret->spans.size = *ret_spans_len;
	return 0;
}

int index_push(struct store *s, struct registry *reg, const char *manifest_digest,
               char **ret_artifact, uint64_t *ret_uploaded, struct error *err)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_free_ struct indexart_layer *layers = NULL;
	_cleanup_free_ char *art = NULL, *tag_body = NULL, *tag_mt = NULL, *tag_digest = NULL;
	_cleanup_free_ char *merged = NULL, *refs = NULL;
	struct error re = {""};
	char art_digest[DIGEST_STR_LEN + 1], tag[DIGEST_STR_LEN + 1];
	size_t art_len, tag_len = 0, merged_len, refs_len, manifest_size;
	uint64_t sent = 0;
	bool changed;
	int r;

	r = store_read_image_manifest(s, manifest_digest, &m, &manifest_size, err);
	if (r < 0)
		return r;
	layers = calloc(m->n_layers ? m->n_layers : 1, sizeof(*layers));
	if (!layers)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_layers; i++) {
		_cleanup_free_ void *index = NULL, *spans = NULL;
		size_t index_len = 0, spans_len = 0;

		r = layer_blobs(s, &m->layers[i], &layers[i], &index, &index_len, &spans,
		                &spans_len, err);
		if (r < 0)
			return r;
		r = push_blob(reg, layers[i].index.digest, index, index_len, &sent, err);
		if (r >= 0)
			r = push_blob(reg, layers[i].spans.digest, spans, spans_len, &sent, err);
		if (r < 0)
			return r;
	}
	r = push_blob(reg, OCI_EMPTY_DIGEST, OCI_EMPTY_JSON, 2, &sent, err);
	if (r < 0)
		return r;
	r = indexart_encode(m->media_type, manifest_digest, manifest_size, layers, m->n_layers,
	                    &art, &art_len);
	if (r < 0)
		return error_set(err, r, "cannot encode the index artifact: %s", strerror(-r));
	sha256_buf(art, art_len, art_digest);
	r = registry_put_manifest(reg, art_digest, MT_OCI_MANIFEST, art, art_len, &re);
	if (r < 0)
		return reg_fail(err, r, &re, art_digest);

	/* A registry with the referrers API lists the artifact by its subject itself. */
	r = registry_get_referrers(reg, manifest_digest, MANIFEST_MAX_SIZE, &refs, &refs_len, &re);
	if (r < 0 && r != -ENOENT)
		return reg_fail(err, r, &re, "referrers");
	if (r == -ENOENT) {
		re.msg[0] = '\0';
		fallback_tag(manifest_digest, tag);
		r = registry_get_manifest(reg, tag, MANIFEST_MAX_SIZE, &tag_body, &tag_len, &tag_mt,
		                          &tag_digest, &re);
		if (r < 0 && r != -ENOENT)
			return reg_fail(err, r, &re, tag);
		r = indexart_referrers_add(r == -ENOENT ? NULL : tag_body, tag_len, art_digest,
		                           art_len, &merged, &merged_len, &changed, err);
		if (r < 0)
			return error_set(err, r, "tag %s: %s", tag, strerror(-r));
		if (changed) {
			r = registry_put_manifest(reg, tag, MT_OCI_INDEX, merged, merged_len, &re);
			if (r < 0)
				return reg_fail(err, r, &re, tag);
			sent += merged_len;
		}
	}
	*ret_artifact = strdup(art_digest);
	if (!*ret_artifact)
		return -ENOMEM;
	*ret_uploaded = sent;
	return 0;
}

static int find_artifacts(struct registry *reg, const char *manifest_digest,
                          char (**ret)[DIGEST_STR_LEN + 1], size_t *ret_n, struct error *err)
{
	return index_find_referrers(reg, manifest_digest, INDEXART_TYPE, "layer index", ret, ret_n,
	                            err);
}

int index_find_referrers(struct registry *reg, const char *manifest_digest, const char *type,
                         const char *what, char (**ret)[DIGEST_STR_LEN + 1], size_t *ret_n,
                         struct error *err)
{
	_cleanup_free_ char *body = NULL, *mt = NULL, *digest = NULL;
	struct error re = {""};
	char tag[DIGEST_STR_LEN + 1];
	size_t len = 0;
	int r;

	r = registry_get_referrers(reg, manifest_digest, MANIFEST_MAX_SIZE, &body, &len, &re);
	if (r == -ENOENT) {
		re.msg[0] = '\0';
		fallback_tag(manifest_digest, tag);
		r = registry_get_manifest(reg, tag, MANIFEST_MAX_SIZE, &body, &len, &mt, &digest,
		                          &re);
	}
	if (r == -ENOENT)
		return error_set(err, r, "no %s is published for %s", what, manifest_digest);
	if (r < 0)
		return reg_fail(err, r, &re, "referrers");
	r = indexart_referrers_of(body, len, type, ret, ret_n, err);
	if (r < 0)
		return r;
	if (*ret_n == 0) {
		free(*ret);
		*ret = NULL;
		return error_set(err, -ENOENT, "no %s is published for %s", what, manifest_digest);
	}
	return 0;
}

/* Checks an index blob against its layer: a layer index, intact, of that layer. */
static int check_index(const void *buf, size_t len, const struct descriptor *d, struct error *err)
{
	_cleanup_close_ int fd = memfd_create("index", MFD_CLOEXEC);
	_cleanup_(li_closep) struct li_index *li = NULL;
	struct li_info info;
	int r;

	if (fd < 0)
		return -errno;
	r = write_full(fd, buf, len);
	if (r < 0)
		return r;
	r = li_open_flags(fd, -1, LI_OPEN_VERIFY | LI_OPEN_NO_DATA, &li);
	if (r < 0)
		return error_set(err, -EBADMSG, "the published index of %s is not one: %s",
		                 d->digest, strerror(-r));
	li_get_info(li, &info);
	if (!info.digest || !streq(info.digest, d->digest))
		return error_set(err, -EBADMSG, "the published index of %s is of layer %s",
		                 d->digest, info.digest ? info.digest : "?");
	if (info.compression == LI_ZSTD ||
	    (info.compression == LI_GZIP) != (d->compression == LAYER_GZIP))
		return error_set(err, -EBADMSG,
		                 "the published index of %s does not match its compression",
		                 d->digest);
	if (info.total_in > d->size)
		return error_set(err, -EBADMSG, "the published index of %s reads past its end",
		                 d->digest);
	return 0;
}

static int fetch_layer(struct store *s, struct registry *reg, const struct indexart_layer *l,
                       const struct descriptor *d, struct error *err)
{
	_cleanup_free_ char *index = NULL, *table = NULL;
	_cleanup_(spans_freep) struct spans *sp = NULL;
	struct error re = {""};
	size_t index_len = 0, table_len = 0;
	int r;

	if (store_has_lazy_index(s, d->digest))
		return 0; /* complete here, or a lazy mount before this one fetched them */
	r = registry_get_blob_mem(reg, l->index.digest, (size_t)l->index.size, &index, &index_len,
	                          &re);
	if (r < 0)
		return reg_fail(err, r, &re, l->index.digest);
	if (l->index.gzip) {
		char *plain = NULL;

		r = gunzip_buf(index, index_len, INDEXART_MAX_INDEX_SIZE, &plain, &index_len);
		if (r < 0)
			return error_set(err, r, "the published index of %s does not decompress",
			                 d->digest);
		free(index);
		index = plain;
	}
	r = check_index(index, index_len, d, err);
	if (r < 0)
		return r;
	r = registry_get_blob_mem(reg, l->spans.digest, (size_t)l->spans.size, &table, &table_len,
	                          &re);
	if (r < 0)
		return reg_fail(err, r, &re, l->spans.digest);
	r = spans_parse(table, table_len, d->digest, d->size, &sp, err);
	if (r < 0)
		return r;
	return store_put_lazy_index_encoded(s, d->digest, index, index_len, table, table_len, err);
}

int index_fetch(struct store *s, struct registry *reg, const char *manifest_digest,
                const struct manifest *m, struct error *err)
{
	_cleanup_free_ char(*found)[DIGEST_STR_LEN + 1] = NULL;
	size_t n = 0;
	int r;

	for (size_t i = 0; i < m->n_layers; i++)
		if (m->layers[i].compression == LAYER_ZSTD &&
		    !store_has_blob(s, m->layers[i].digest))
			return error_set(err, -EOPNOTSUPP, "layer %s is zstd", m->layers[i].digest);
	r = find_artifacts(reg, manifest_digest, &found, &n, err);
	if (r < 0)
		return r;
	/* The newest entry first: a later push may have replaced an older span size. */
	for (size_t k = n; k-- > 0;) {
		_cleanup_free_ char *body = NULL, *mt = NULL, *digest = NULL;
		_cleanup_(indexart_freep) struct indexart *a = NULL;
		struct error re = {""};
		size_t len = 0;

		r = registry_get_manifest(reg, found[k], MANIFEST_MAX_SIZE, &body, &len, &mt,
		                          &digest, &re);
		if (r < 0) {
			reg_fail(err, r, &re, found[k]);
			continue;
		}
		r = indexart_parse(body, len, manifest_digest, &a, err);
		if (r < 0)
			continue;
		for (size_t i = 0; r >= 0 && i < m->n_layers; i++) {
			const struct indexart_layer *l = indexart_find(a, m->layers[i].digest);

			if (!l)
				r = error_set(err, -ENOENT, "the published index lacks layer %s",
				              m->layers[i].digest);
			else
				r = fetch_layer(s, reg, l, &m->layers[i], err);
		}
		if (r >= 0) {
			if (err)
				err->msg[0] = '\0';
			return 0;
		}
	}
	return r < 0 ? r : -ENOENT;
}
