/* The layer index artifact and the referrers index: what imgfs pushes parses back to the
 * same layers; foreign, malformed and mismatched documents are refused with a reason; the
 * fallback tag's index gains our entry once and keeps every other. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include "fsd/image/indexart.h"
#include "fsd/image/manifest.h"

static void digest_of(const char *s, char out[DIGEST_STR_LEN + 1])
{
	sha256_buf(s, strlen(s), out);
}

static void make_layers(struct indexart_layer *l, size_t n)
{
	char name[32];

	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "layer%zu", i);
		digest_of(name, l[i].layer);
		snprintf(name, sizeof(name), "index%zu", i);
		digest_of(name, l[i].index.digest);
		l[i].index.size = 1000 + i;
		snprintf(name, sizeof(name), "spans%zu", i);
		digest_of(name, l[i].spans.digest);
		l[i].spans.size = 200 + i;
	}
}

static void test_round_trip(void **state)
{
	struct indexart_layer layers[3];
	_cleanup_free_ char *json = NULL, *again = NULL;
	_cleanup_(indexart_freep) struct indexart *a = NULL;
	char subject[DIGEST_STR_LEN + 1], other[DIGEST_STR_LEN + 1];
	struct error err = {""};
	size_t len, len2;

	(void)state;
	memset(layers, 0, sizeof(layers));
	make_layers(layers, 3);
	layers[1].index.gzip = true; /* the media type says so */
	digest_of("manifest", subject);
	assert_int_equal(indexart_encode(MT_OCI_MANIFEST, subject, 1234, layers, 3, &json, &len),
	                 0);
	/* The same input, the same bytes: a second push changes nothing. */
	assert_int_equal(indexart_encode(MT_OCI_MANIFEST, subject, 1234, layers, 3, &again, &len2),
	                 0);
	assert_int_equal(len, len2);
	assert_memory_equal(json, again, len);
	assert_null(strstr(json, "created"));

	assert_int_equal(indexart_parse(json, len, subject, &a, &err), 0);
	assert_int_equal(a->n_layers, 3);
	for (size_t i = 0; i < 3; i++) {
		const struct indexart_layer *l = indexart_find(a, layers[i].layer);

		assert_non_null(l);
		assert_string_equal(l->index.digest, layers[i].index.digest);
		assert_int_equal(l->index.size, layers[i].index.size);
		assert_int_equal(l->index.gzip, layers[i].index.gzip);
		assert_string_equal(l->spans.digest, layers[i].spans.digest);
		assert_int_equal(l->spans.size, layers[i].spans.size);
	}
	digest_of("another layer", other);
	assert_null(indexart_find(a, other));
	/* Another image's artifact. */
	assert_int_equal(indexart_parse(json, len, other, &a, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "not about"));
}

static void test_hostile(void **state)
{
	static const char *bad[] = {
	    "",
	    "[]",
	    "{\"schemaVersion\":2}",
	    /* another artifact type */
	    "{\"schemaVersion\":2,\"artifactType\":\"application/x\",\"subject\":{\"digest\":"
	    "\"SUBJECT\"},\"layers\":[]}",
	    /* an index blob without its span table */
	    "{\"schemaVersion\":2,\"artifactType\":\"application/vnd.imgfs.layer-index.v1\","
	    "\"subject\":{\"digest\":\"SUBJECT\"},\"layers\":[{\"mediaType\":\"application/"
	    "vnd.imgfs.layer-index.v1.index\",\"digest\":\"SUBJECT\",\"size\":1,"
	    "\"annotations\":{\"io.imgfs.layer\":\"SUBJECT\"}}]}",
	    /* a negative size */
	    "{\"schemaVersion\":2,\"artifactType\":\"application/vnd.imgfs.layer-index.v1\","
	    "\"subject\":{\"digest\":\"SUBJECT\"},\"layers\":[{\"mediaType\":\"application/"
	    "vnd.imgfs.layer-index.v1.index\",\"digest\":\"SUBJECT\",\"size\":-1,"
	    "\"annotations\":{\"io.imgfs.layer\":\"SUBJECT\"}}]}",
	    /* a bad layer annotation */
	    "{\"schemaVersion\":2,\"artifactType\":\"application/vnd.imgfs.layer-index.v1\","
	    "\"subject\":{\"digest\":\"SUBJECT\"},\"layers\":[{\"mediaType\":\"application/"
	    "vnd.imgfs.layer-index.v1.index\",\"digest\":\"SUBJECT\",\"size\":1,"
	    "\"annotations\":{\"io.imgfs.layer\":\"sha256:../../x\"}}]}",
	    /* duplicate keys */
	    "{\"schemaVersion\":2,\"schemaVersion\":2}",
	};
	char subject[DIGEST_STR_LEN + 1];

	(void)state;
	digest_of("manifest", subject);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		_cleanup_free_ char *doc = strdup(bad[i]);
		struct indexart *a = NULL;
		struct error err = {""};
		char *p;

		while ((p = strstr(doc, "SUBJECT"))) {
			/* Same length as a digest is not needed: rebuild the string. */
			char *n = NULL;

			*p = '\0';
			assert_true(asprintf(&n, "%s%s%s", doc, subject, p + 7) > 0);
			free(doc);
			doc = n;
		}
		assert_int_equal(indexart_parse(doc, strlen(doc), subject, &a, &err), -EBADMSG);
		assert_null(a);
		assert_true(err.msg[0] != '\0');
	}
}

static void test_referrers(void **state)
{
	static const char *foreign =
	    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
	    "\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	    "\"digest\":\"sha256:1111111111111111111111111111111111111111111111111111111111111111"
	    "\",\"size\":10,\"artifactType\":\"application/vnd.amazon.soci.index.v1+json\","
	    "\"annotations\":{\"x\":\"y\"}}]}";
	_cleanup_free_ char *merged = NULL, *again = NULL;
	_cleanup_free_ char(*found)[DIGEST_STR_LEN + 1] = NULL;
	char ours[DIGEST_STR_LEN + 1];
	size_t len, n;
	bool changed;

	(void)state;
	digest_of("artifact", ours);
	assert_int_equal(indexart_referrers(foreign, strlen(foreign), &found, &n, NULL), 0);
	assert_int_equal(n, 0);
	free(TAKE_PTR(found));
	assert_int_equal(indexart_referrers_add(foreign, strlen(foreign), ours, 77, &merged, &len,
	                                        &changed, NULL),
	                 0);
	assert_true(changed);
	/* The other tool's referrer stays, annotations and all. */
	assert_non_null(strstr(merged, "application/vnd.amazon.soci.index.v1+json"));
	assert_non_null(strstr(merged, "\"x\":\"y\""));
	assert_int_equal(indexart_referrers(merged, len, &found, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_string_equal(found[0], ours);
	/* Twice: nothing to change. */
	assert_int_equal(
	    indexart_referrers_add(merged, len, ours, 77, &again, &len, &changed, NULL), 0);
	assert_false(changed);
	assert_null(again);
	/* No tag yet. */
	assert_int_equal(indexart_referrers_add(NULL, 0, ours, 77, &again, &len, &changed, NULL),
	                 0);
	assert_true(changed);
	assert_int_equal(indexart_referrers("{\"manifests\":3}", 15, &found, &n, NULL), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_hostile),
	    cmocka_unit_test(test_referrers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
