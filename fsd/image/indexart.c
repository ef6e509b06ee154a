/* The layer index artifact and the referrers index; see indexart.h. */
#include <inttypes.h>
#include <jansson.h>
#include "fsd/image/indexart.h"
#include "fsd/image/manifest.h"

#define MAX_DOC (4u << 20) /* as manifests */
#define MAX_SAFE_SIZE (UINT64_C(1) << 53)

void indexart_free(struct indexart *a)
{
	if (!a)
		return;
	free(a->layers);
	free(a);
}

static json_t *blob_desc(const char *media_type, const struct indexart_blob *b, const char *layer)
{
	return json_pack("{s:s, s:s, s:I, s:{s:s}}", "mediaType", media_type, "digest", b->digest,
	                 "size", (json_int_t)b->size, "annotations", INDEXART_ANNOTATION_LAYER,
	                 layer);
}

int indexart_encode(const char *subject_media_type, const char *subject_digest,
                    uint64_t subject_size, const struct indexart_layer *layers, size_t n,
                    char **ret_json, size_t *ret_len)
{
	json_auto_t *doc = NULL;
	json_t *arr;
	char *text;

	if (!digest_valid(subject_digest))
		return -EINVAL;
	doc = json_pack("{s:i, s:s, s:s, s:{s:s, s:s, s:i}, s:{s:s, s:s, s:I}, s:[]}",
	                "schemaVersion", 2, "mediaType", MT_OCI_MANIFEST, "artifactType",
	                INDEXART_TYPE, "config", "mediaType", OCI_EMPTY_MT, "digest",
	                OCI_EMPTY_DIGEST, "size", 2, "subject", "mediaType", subject_media_type,
	                "digest", subject_digest, "size", (json_int_t)subject_size, "layers");
	if (!doc)
		return -ENOMEM;
	arr = json_object_get(doc, "layers");
	for (size_t i = 0; i < n; i++) {
		if (!digest_valid(layers[i].layer) || !digest_valid(layers[i].index.digest) ||
		    !digest_valid(layers[i].spans.digest))
			return -EINVAL;
		const char *mt = layers[i].index.gzip ? INDEXART_MT_INDEX_GZIP : INDEXART_MT_INDEX;

		if (json_array_append_new(arr, blob_desc(mt, &layers[i].index, layers[i].layer)) <
		        0 ||
		    json_array_append_new(
		        arr, blob_desc(INDEXART_MT_SPANS, &layers[i].spans, layers[i].layer)) < 0)
			return -ENOMEM;
	}
	text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text)
		return -ENOMEM;
	*ret_json = text;
	*ret_len = strlen(text);
	return 0;
}

static const char *str_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int load(const char *buf, size_t len, json_t **ret, struct error *err)
{
	json_error_t jerr;
	json_t *j;

	if (len > MAX_DOC)
		return error_set(err, -EBADMSG, "larger than %u bytes", MAX_DOC);
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return error_set(err, -EBADMSG, "not JSON: %s (line %d)", jerr.text, jerr.line);
	if (!json_is_object(j)) {
		json_decref(j);
		return error_set(err, -EBADMSG, "not a JSON object");
	}
	*ret = j;
	return 0;
}

/* A descriptor's digest and size, checked. */
static int desc_get(json_t *d, uint64_t max, struct indexart_blob *ret, struct error *err)
{
	const char *digest = str_of(d, "digest");
	json_t *size = json_object_get(d, "size");

	if (!digest_valid(digest))
		return error_set(err, -EBADMSG, "a descriptor has no valid sha256 digest");
	if (!json_is_integer(size) || json_integer_value(size) < 0 ||
	    (uint64_t)json_integer_value(size) > max)
		return error_set(err, -EBADMSG, "descriptor %s: bad size", digest);
	memcpy(ret->digest, digest, DIGEST_STR_LEN + 1);
	ret->size = (uint64_t)json_integer_value(size);
	return 0;
}

int indexart_parse(const char *buf, size_t len, const char *subject_digest, struct indexart **ret,
                   struct error *err)
{
	_cleanup_(indexart_freep) struct indexart *a = NULL;
	json_auto_t *doc = NULL;
	json_t *layers, *subject, *d;
	const char *mt, *at;
	size_t i;
	int r;

	r = load(buf, len, &doc, err);
	if (r < 0)
		return r;
	mt = str_of(doc, "mediaType");
	at = str_of(doc, "artifactType");
	if (!json_is_integer(json_object_get(doc, "schemaVersion")) ||
	    json_integer_value(json_object_get(doc, "schemaVersion")) != 2 ||
	    (mt && !streq(mt, MT_OCI_MANIFEST)))
		return error_set(err, -EBADMSG, "not an OCI image manifest");
	if (!at || !streq(at, INDEXART_TYPE))
		return error_set(err, -EBADMSG, "artifact type is not %s", INDEXART_TYPE);
	subject = json_object_get(doc, "subject");
	if (!json_is_object(subject) || !str_of(subject, "digest") ||
	    !streq(str_of(subject, "digest"), subject_digest))
		return error_set(err, -EBADMSG, "the artifact is not about %s", subject_digest);
	layers = json_object_get(doc, "layers");
	if (!json_is_array(layers) || json_array_size(layers) > 2 * MANIFEST_MAX_LAYERS)
		return error_set(err, -EBADMSG, "bad layers list");
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	memcpy(a->subject, subject_digest, DIGEST_STR_LEN + 1);
	a->layers = calloc(json_array_size(layers) / 2 + 1, sizeof(*a->layers));
	if (!a->layers)
		return -ENOMEM;
	json_array_foreach(layers, i, d)
	{
		const char *layer =
		    str_of(json_object_get(d, "annotations"), INDEXART_ANNOTATION_LAYER);
		const char *dmt = str_of(d, "mediaType");
		struct indexart_layer *l = NULL;
		bool is_index, gzip = false;

		if (!json_is_object(d) || !dmt || !digest_valid(layer))
			return error_set(err, -EBADMSG, "layer %zu: bad descriptor", i);
		if (streq(dmt, INDEXART_MT_INDEX))
			is_index = true;
		else if (streq(dmt, INDEXART_MT_INDEX_GZIP))
			is_index = gzip = true;
		else if (streq(dmt, INDEXART_MT_SPANS))
			is_index = false;
		else
			continue; /* a later version's blob */
		for (size_t k = 0; k < a->n_layers; k++)
			if (streq(a->layers[k].layer, layer))
				l = &a->layers[k];
		if (!l) {
			if (a->n_layers >= json_array_size(layers) / 2 + 1)
				return error_set(err, -EBADMSG, "more layers than blobs");
			l = &a->layers[a->n_layers++];
			memcpy(l->layer, layer, DIGEST_STR_LEN + 1);
		}
		r = desc_get(d,
		             is_index ? INDEXART_MAX_INDEX_SIZE : (uint64_t)INDEXART_MAX_SPANS_SIZE,
		             is_index ? &l->index : &l->spans, err);
		if (r < 0)
			return r;
		if (is_index)
			l->index.gzip = gzip;
	}
	for (size_t k = 0; k < a->n_layers; k++)
		if (!a->layers[k].index.digest[0] || !a->layers[k].spans.digest[0])
			return error_set(err, -EBADMSG, "layer %s lacks its index or span table",
			                 a->layers[k].layer);
	*ret = TAKE_PTR(a);
	return 0;
}

const struct indexart_layer *indexart_find(const struct indexart *a, const char *layer)
{
	for (size_t k = 0; k < a->n_layers; k++)
		if (streq(a->layers[k].layer, layer))
			return &a->layers[k];
	return NULL;
}

static int load_index(const char *buf, size_t len, json_t **ret, json_t **ret_manifests,
                      struct error *err)
{
	json_t *doc, *manifests;
	const char *mt;
	int r;

	r = load(buf, len, &doc, err);
	if (r < 0)
		return r;
	mt = str_of(doc, "mediaType");
	manifests = json_object_get(doc, "manifests");
	if ((mt && !streq(mt, MT_OCI_INDEX)) || !json_is_array(manifests) ||
	    json_array_size(manifests) > INDEX_MAX_MANIFESTS) {
		json_decref(doc);
		return error_set(err, -EBADMSG, "not an OCI image index");
	}
	*ret = doc;
	*ret_manifests = manifests;
	return 0;
}

int indexart_referrers(const char *buf, size_t len, char (**ret)[DIGEST_STR_LEN + 1], size_t *ret_n,
                       struct error *err)
{
	return indexart_referrers_of(buf, len, INDEXART_TYPE, ret, ret_n, err);
}

int indexart_referrers_of(const char *buf, size_t len, const char *type,
                          char (**ret)[DIGEST_STR_LEN + 1], size_t *ret_n, struct error *err)
{
	json_auto_t *doc = NULL;
	json_t *manifests, *d;
	char(*v)[DIGEST_STR_LEN + 1];
	size_t i, n = 0;
	int r;

	r = load_index(buf, len, &doc, &manifests, err);
	if (r < 0)
		return r;
	v = calloc(json_array_size(manifests) + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	json_array_foreach(manifests, i, d)
	{
		const char *at = str_of(d, "artifactType"), *digest = str_of(d, "digest");

		if (at && streq(at, type) && digest_valid(digest))
			memcpy(v[n++], digest, DIGEST_STR_LEN + 1);
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int indexart_referrers_add(const char *buf, size_t len, const char *digest, uint64_t size,
                           char **ret_json, size_t *ret_len, bool *ret_changed, struct error *err)
{
	json_auto_t *doc = NULL;
	json_t *manifests, *d;
	char *text;
	size_t i;
	int r;

	if (!digest_valid(digest) || size > MAX_SAFE_SIZE)
		return -EINVAL;
	if (buf) {
		r = load_index(buf, len, &doc, &manifests, err);
		if (r < 0)
			return r;
	} else {
		doc = json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
		                "manifests");
		if (!doc)
			return -ENOMEM;
		manifests = json_object_get(doc, "manifests");
	}
	json_array_foreach(manifests, i, d)
	{
		const char *other = str_of(d, "digest");

		if (other && streq(other, digest)) {
			*ret_json = NULL;
			*ret_len = 0;
			*ret_changed = false;
			return 0;
		}
	}
	if (json_array_append_new(manifests,
	                          json_pack("{s:s, s:s, s:I, s:s}", "mediaType", MT_OCI_MANIFEST,
	                                    "digest", digest, "size", (json_int_t)size,
	                                    "artifactType", INDEXART_TYPE)) < 0)
		return -ENOMEM;
	text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text)
		return -ENOMEM;
	*ret_json = text;
	*ret_len = strlen(text);
	*ret_changed = true;
	return 0;
}
