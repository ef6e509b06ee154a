/* Manifest, index and config parsing: each kind, the platform selection matrix, and
 * malformed or hostile documents with the reason a user would see. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include "common/digest.h"
#include "common/error.h"
#include "fsd/image/manifest.h"

#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"
#define D1 "sha256:" H1
#define D2 "sha256:" H2

#define CONFIG_DESC "{\"mediaType\":\"" MT_OCI_CONFIG "\",\"digest\":\"" D1 "\",\"size\":7}"
#define LAYER(mt, dig) "{\"mediaType\":\"" mt "\",\"digest\":\"" dig "\",\"size\":100}"
#define OCI_GZ "application/vnd.oci.image.layer.v1.tar+gzip"

static const char oci_manifest[] =
    "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"config\":" CONFIG_DESC
    ",\"layers\":[" LAYER(OCI_GZ, D2) "," LAYER(
        "application/vnd.oci.image.layer.v1.tar+zstd",
        D1) "," LAYER("application/vnd.oci.image.layer.v1.tar", D2) "]}";

static int parse(const char *json, const char *ct, struct manifest **ret, struct error *err)
{
	*err = (struct error){""};
	return manifest_parse(json, strlen(json), ct, ret, err);
}

static void test_oci_manifest(void **state)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(parse(oci_manifest, MT_OCI_MANIFEST, &m, &err), 0);
	assert_int_equal(m->kind, MANIFEST_IMAGE);
	assert_string_equal(m->media_type, MT_OCI_MANIFEST);
	assert_string_equal(m->config.digest, D1);
	assert_string_equal(m->config.media_type, MT_OCI_CONFIG);
	assert_int_equal(m->config.size, 7);
	assert_int_equal(m->n_layers, 3);
	assert_int_equal(m->layers[0].compression, LAYER_GZIP);
	assert_int_equal(m->layers[1].compression, LAYER_ZSTD);
	assert_int_equal(m->layers[2].compression, LAYER_TAR);
	assert_false(m->layers[0].foreign);
	assert_string_equal(m->layers[0].digest, D2);
	assert_int_equal(m->layers[0].size, 100);
	assert_int_equal(m->n_manifests, 0);
}

static void test_docker_manifest(void **state)
{
	static const char json[] =
	    "{\"schemaVersion\":2,\"mediaType\":\"" MT_DOCKER_MANIFEST "\",\"config\":{"
	    "\"mediaType\":\"" MT_DOCKER_CONFIG "\",\"size\":1457,\"digest\":\"" D1 "\"},"
	    "\"layers\":[" LAYER(
	        "application/vnd.docker.image.rootfs.diff.tar.gzip",
	        D2) ","
	            "{\"mediaType\":\"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\","
	            "\"size\":5678,\"digest\":\"" D1 "\",\"urls\":[\"https://example.com/a\","
	            "\"https://example.com/b\"]}]}";
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(parse(json, NULL, &m, &err), 0);
	assert_int_equal(m->kind, MANIFEST_IMAGE);
	assert_string_equal(m->media_type, MT_DOCKER_MANIFEST);
	assert_int_equal(m->n_layers, 2);
	assert_int_equal(m->layers[0].compression, LAYER_GZIP);
	assert_false(m->layers[0].foreign);
	assert_null(m->layers[0].urls);
	assert_int_equal(m->layers[1].compression, LAYER_GZIP);
	assert_true(m->layers[1].foreign);
	assert_string_equal(m->layers[1].urls[0], "https://example.com/a");
	assert_string_equal(m->layers[1].urls[1], "https://example.com/b");
	assert_null(m->layers[1].urls[2]);
}

static void test_nondistributable(void **state)
{
	static const char *const types[] = {
	    "application/vnd.oci.image.layer.nondistributable.v1.tar",
	    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
	};
	static const enum layer_compression comp[] = {LAYER_TAR, LAYER_GZIP, LAYER_ZSTD};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		_cleanup_(manifest_freep) struct manifest *m = NULL;
		_cleanup_free_ char *json = NULL;
		struct error err = {""};

		assert_true(asprintf(&json,
		                     "{\"schemaVersion\":2,\"config\":" CONFIG_DESC ",\"layers\":["
		                     "{\"mediaType\":\"%s\",\"digest\":\"" D2 "\",\"size\":1}]}",
		                     types[i]) > 0);
		assert_int_equal(parse(json, MT_OCI_MANIFEST, &m, &err), 0);
		assert_true(m->layers[0].foreign);
		assert_int_equal(m->layers[0].compression, comp[i]);
	}
}

static const char oci_index[] =
    "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":["
    "{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":610,"
    "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
    "{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":566,"
    "\"annotations\":{\"vnd.docker.reference.type\":\"attestation-manifest\"},"
    "\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"}}]}";

static void test_oci_index(void **state)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(parse(oci_index, NULL, &m, &err), 0);
	assert_int_equal(m->kind, MANIFEST_INDEX);
	assert_string_equal(m->media_type, MT_OCI_INDEX);
	assert_int_equal(m->n_manifests, 2);
	assert_true(m->manifests[0].has_platform);
	assert_string_equal(m->manifests[0].platform.os, "linux");
	assert_string_equal(m->manifests[0].platform.architecture, "amd64");
	assert_null(m->manifests[0].platform.variant);
	assert_int_equal(m->manifests[1].size, 566);
}

static void test_docker_list(void **state)
{
	static const char json[] =
	    "{\"manifests\":[{\"digest\":\"" D1 "\",\"mediaType\":\"" MT_DOCKER_MANIFEST "\","
	    "\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\"},"
	    "\"size\":527}],\"mediaType\":\"" MT_DOCKER_LIST "\",\"schemaVersion\":2}";
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(parse(json, MT_DOCKER_LIST "; charset=utf-8", &m, &err), 0);
	assert_int_equal(m->kind, MANIFEST_INDEX);
	assert_string_equal(m->media_type, MT_DOCKER_LIST);
	assert_string_equal(m->manifests[0].platform.variant, "v7");
}

/* Without a mediaType in the JSON, the Content-Type or the document's shape decides. */
static void test_media_type_sources(void **state)
{
	static const char no_mt_manifest[] =
	    "{\"schemaVersion\":2,\"config\":" CONFIG_DESC ",\"layers\":[]}";
	static const char no_mt_index[] = "{\"schemaVersion\":2,\"manifests\":[]}";
	struct error err = {""};

	(void)state;
	{
		_cleanup_(manifest_freep) struct manifest *m = NULL;

		assert_int_equal(parse(no_mt_manifest, MT_DOCKER_MANIFEST, &m, &err), 0);
		assert_string_equal(m->media_type, MT_DOCKER_MANIFEST);
	}
	{
		_cleanup_(manifest_freep) struct manifest *m = NULL;

		assert_int_equal(parse(no_mt_manifest, "application/json", &m, &err), 0);
		assert_string_equal(m->media_type, MT_OCI_MANIFEST);
	}
	{
		_cleanup_(manifest_freep) struct manifest *m = NULL;

		assert_int_equal(parse(no_mt_index, NULL, &m, &err), 0);
		assert_int_equal(m->kind, MANIFEST_INDEX);
		assert_string_equal(m->media_type, MT_OCI_INDEX);
		assert_int_equal(m->n_manifests, 0);
	}
	{
		_cleanup_(manifest_freep) struct manifest *m = NULL;

		assert_int_equal(parse(oci_manifest, MT_OCI_INDEX, &m, &err), -EINVAL);
		assert_null(m);
		assert_string_equal(err.msg, "mediaType '" MT_OCI_MANIFEST
		                             "' contradicts Content-Type '" MT_OCI_INDEX "'");
	}
	{
		_cleanup_(manifest_freep) struct manifest *m = NULL;

		/* A manifest body served as an index type: the shape contradicts. */
		assert_int_equal(parse(no_mt_manifest, MT_OCI_INDEX, &m, &err), -EINVAL);
		assert_string_equal(err.msg, "index has layers or config");
	}
}

struct bad_case {
	const char *json;
	const char *content_type;
	int err;
	const char *reason;
};

#define MANIFEST_WITH_LAYER(l)                                                                     \
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"config\":" CONFIG_DESC       \
	",\"layers\":[" l "]}"

static const struct bad_case bad[] = {
    {"{\"schemaVersion\":1,\"name\":\"library/busybox\",\"fsLayers\":[]}", NULL, -EPROTONOSUPPORT,
     "Docker schema 1 manifests are not supported"},
    {"{\"schemaVersion\":2}", "application/vnd.docker.distribution.manifest.v1+prettyjws",
     -EPROTONOSUPPORT, "Docker schema 1 manifests are not supported"},
    {"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.cncf.helm.chart.v1\",\"layers\":[]}",
     NULL, -EPROTONOSUPPORT,
     "unsupported manifest media type 'application/vnd.cncf.helm.chart.v1'"},
    {"{\"schemaVersion\":2,\"config\":{}}", "application/x-foo", -EPROTONOSUPPORT,
     "unsupported manifest media type 'application/x-foo'"},
    {"{\"mediaType\":\"" MT_OCI_MANIFEST "\"}", NULL, -EINVAL,
     "schemaVersion missing or not an integer"},
    {"{\"schemaVersion\":\"2\",\"mediaType\":\"" MT_OCI_MANIFEST "\"}", NULL, -EINVAL,
     "schemaVersion missing or not an integer"},
    {"{\"schemaVersion\":3,\"mediaType\":\"" MT_OCI_MANIFEST "\"}", NULL, -EPROTONOSUPPORT,
     "schemaVersion 3 is not supported"},
    {"{\"schemaVersion\":2,\"mediaType\":7}", NULL, -EINVAL, "mediaType is not a string"},
    {"{\"schemaVersion\":2}", NULL, -EINVAL,
     "no mediaType and the document is neither an index nor a manifest"},
    {"[1,2]", NULL, -EINVAL, "not a JSON object"},
    {"", NULL, -EINVAL, "empty document"},
    {"{\"schemaVersion\":2,\"schemaVersion\":2}", NULL, -EINVAL, NULL},
    {"{\"schemaVersion\":2,", NULL, -EINVAL, NULL},
    {"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"layers\":[]}", NULL, -EINVAL,
     "manifest lacks config"},
    {"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"config\":" CONFIG_DESC "}", NULL,
     -EINVAL, "manifest lacks layers"},
    {"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"config\":" CONFIG_DESC
     ",\"layers\":[],\"manifests\":[]}",
     NULL, -EINVAL, "manifest has a manifests list"},
    {"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\"}", NULL, -EINVAL,
     "index lacks manifests"},
    {"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":{}}", NULL, -EINVAL,
     "manifests is not an array"},
    {MANIFEST_WITH_LAYER(LAYER("application/vnd.oci.image.layer.v1.tar+bzip2", D1)), NULL,
     -EPROTONOSUPPORT,
     "unsupported layer media type 'application/vnd.oci.image.layer.v1.tar+bzip2'"},
    {MANIFEST_WITH_LAYER(LAYER(OCI_GZ, "sha512:abcd")), NULL, -EPROTONOSUPPORT,
     "digest algorithm 'sha512' is not supported (only sha256)"},
    {MANIFEST_WITH_LAYER(LAYER(OCI_GZ, "sha256:ABCD")), NULL, -EINVAL,
     "invalid digest 'sha256:ABCD'"},
    {MANIFEST_WITH_LAYER(LAYER(OCI_GZ, "sha256:" H1 "0")), NULL, -EINVAL,
     "invalid digest 'sha256:" H1 "0'"},
    {MANIFEST_WITH_LAYER("{\"mediaType\":\"" OCI_GZ "\",\"digest\":\"" D1 "\",\"size\":-1}"), NULL,
     -EINVAL, "descriptor " D1 " has an invalid size"},
    {MANIFEST_WITH_LAYER("{\"mediaType\":\"" OCI_GZ "\",\"digest\":\"" D1
                         "\",\"size\":9007199254740993}"),
     NULL, -EINVAL, "descriptor " D1 " has an invalid size"},
    {MANIFEST_WITH_LAYER("{\"mediaType\":\"" OCI_GZ "\",\"digest\":\"" D1 "\",\"size\":1.5}"), NULL,
     -EINVAL, "descriptor " D1 " lacks an integer size"},
    {MANIFEST_WITH_LAYER("{\"mediaType\":\"" OCI_GZ "\",\"digest\":\"" D1 "\"}"), NULL, -EINVAL,
     "descriptor " D1 " lacks an integer size"},
    {MANIFEST_WITH_LAYER("{\"digest\":\"" D1 "\",\"size\":1}"), NULL, -EINVAL,
     "descriptor lacks a mediaType string"},
    {MANIFEST_WITH_LAYER("{\"mediaType\":\"" OCI_GZ "\",\"digest\":5,\"size\":1}"), NULL, -EINVAL,
     "descriptor lacks a digest string"},
    {MANIFEST_WITH_LAYER("\"x\""), NULL, -EINVAL, "descriptor is not an object"},
    {MANIFEST_WITH_LAYER("{\"mediaType\":\"" OCI_GZ "\",\"digest\":\"" D1
                         "\",\"size\":1,\"urls\":[1]}"),
     NULL, -EINVAL, "descriptor urls contains a non-string"},
    {"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"config\":{\"mediaType\":"
     "\"application/vnd.cncf.helm.config.v1+json\",\"digest\":\"" D1 "\",\"size\":1},"
     "\"layers\":[]}",
     NULL, -EPROTONOSUPPORT,
     "config media type 'application/vnd.cncf.helm.config.v1+json' is not an image config"},
    {"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX
     "\",\"manifests\":[{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D1
     "\",\"size\":1,\"platform\":{\"os\":\"linux\"}}]}",
     NULL, -EINVAL, "descriptor platform lacks os or architecture"},
    {"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX
     "\",\"manifests\":[{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D1
     "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":[]}}]}",
     NULL, -EINVAL, "descriptor platform has a non-string os, architecture or variant"},
};

static void test_bad_manifests(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct manifest *m = NULL;
		struct error err = {""};
		int r = parse(bad[i].json, bad[i].content_type, &m, &err);

		if (r != bad[i].err || !error_isset(&err) ||
		    (bad[i].reason && strcmp(err.msg, bad[i].reason) != 0))
			fail_msg("case %zu: %d (%s), want %d (%s)", i, r, err.msg, bad[i].err,
			         bad[i].reason ? bad[i].reason : "any");
		assert_null(m);
	}
}

/* Builds a manifest with n layers. */
static char *many_layers(size_t n)
{
	size_t cap = 256 + n * 160, len;
	char *s = malloc(cap);

	assert_non_null(s);
	len = (size_t)snprintf(s, cap,
	                       "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST
	                       "\",\"config\":" CONFIG_DESC ",\"layers\":[");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(s + len, cap - len, "%s" LAYER(OCI_GZ, D2), i ? "," : "");
	snprintf(s + len, cap - len, "]}");
	return s;
}

static void test_layer_bound(void **state)
{
	_cleanup_free_ char *ok = many_layers(MANIFEST_MAX_LAYERS);
	_cleanup_free_ char *too = many_layers(MANIFEST_MAX_LAYERS + 1);
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct manifest *m2 = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(parse(ok, NULL, &m, &err), 0);
	assert_int_equal(m->n_layers, MANIFEST_MAX_LAYERS);
	assert_int_equal(parse(too, NULL, &m2, &err), -EINVAL);
	assert_string_equal(err.msg, "too many layers (1025, at most 1024)");
}

static void test_size_bound(void **state)
{
	size_t n = MANIFEST_MAX_SIZE + 1;
	_cleanup_free_ char *big = malloc(n);
	struct manifest *m = NULL;
	struct error err = {""};

	(void)state;
	assert_non_null(big);
	memset(big, ' ', n);
	assert_int_equal(manifest_parse(big, n, NULL, &m, &err), -EFBIG);
	assert_true(error_isset(&err));
}

static void test_max_safe_size(void **state)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(parse(MANIFEST_WITH_LAYER("{\"mediaType\":\"" OCI_GZ "\",\"digest\":\"" D1
	                                           "\",\"size\":9007199254740992}"),
	                       NULL, &m, &err),
	                 0);
	assert_int_equal(m->layers[0].size, UINT64_C(1) << 53);
}

/* Platforms */

static void test_platform_parse(void **state)
{
	static const struct {
		const char *in, *os, *arch, *variant;
	} ok[] = {
	    {"linux/amd64", "linux", "amd64", NULL},    {"linux/arm64", "linux", "arm64", "v8"},
	    {"linux/arm64/v8", "linux", "arm64", "v8"}, {"linux/arm", "linux", "arm", "v7"},
	    {"linux/arm/v6", "linux", "arm", "v6"},     {"linux/arm/7", "linux", "arm", "v7"},
	    {"Linux/X86_64", "linux", "amd64", NULL},   {"linux/aarch64", "linux", "arm64", "v8"},
	    {"linux/armhf", "linux", "arm", "v7"},      {"linux/amd64/v1", "linux", "amd64", NULL},
	    {"linux/amd64/v3", "linux", "amd64", "v3"}, {"linux/riscv64", "linux", "riscv64", NULL},
	};
	static const char *const bad_in[] = {"",
	                                     "linux",
	                                     "linux/",
	                                     "/amd64",
	                                     "linux/amd64/",
	                                     "linux/amd64/v8/x",
	                                     "linux/am d64",
	                                     "linux//v7"};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		struct platform p = {0};

		assert_int_equal(platform_parse(ok[i].in, &p), 0);
		assert_string_equal(p.os, ok[i].os);
		assert_string_equal(p.architecture, ok[i].arch);
		if (ok[i].variant)
			assert_string_equal(p.variant, ok[i].variant);
		else
			assert_null(p.variant);
		platform_clear(&p);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad_in); i++) {
		struct platform p = {0};

		if (platform_parse(bad_in[i], &p) != -EINVAL)
			fail_msg("'%s' accepted", bad_in[i]);
	}
}

static void test_platform_host(void **state)
{
	struct platform p = {0};
	_cleanup_free_ char *s = NULL;

	(void)state;
	assert_int_equal(platform_host(&p), 0);
	assert_string_equal(p.os, "linux");
	s = platform_format(&p);
	assert_non_null(s);
#if defined(__x86_64__)
	assert_string_equal(s, "linux/amd64");
#elif defined(__aarch64__)
	assert_string_equal(s, "linux/arm64/v8");
#endif
	platform_clear(&p);
}

/* Index entries: os/arch[/variant] or "-" for no platform, and the digest index. */
struct entry {
	const char *platform;
	const char *media_type;
};

static struct manifest *make_index(const struct entry *e, size_t n)
{
	char *json = NULL;
	size_t cap = 256 + n * 400, len;
	struct manifest *m = NULL;
	struct error err = {""};

	json = malloc(cap);
	assert_non_null(json);
	len = (size_t)snprintf(json, cap, "{\"schemaVersion\":2,\"manifests\":[");
	for (size_t i = 0; i < n; i++) {
		char os[32] = "", arch[32] = "", var[32] = "", plat[160] = "";

		if (!streq(e[i].platform, "-")) {
			int k = sscanf(e[i].platform, "%31[^/]/%31[^/]/%31s", os, arch, var);

			assert_true(k >= 2);
			snprintf(plat, sizeof(plat),
			         ",\"platform\":{\"os\":\"%s\",\"architecture\":\"%s\"%s%s%s}", os,
			         arch, k == 3 ? ",\"variant\":\"" : "", k == 3 ? var : "",
			         k == 3 ? "\"" : "");
		}
		len += (size_t)snprintf(
		    json + len, cap - len,
		    "%s{\"mediaType\":\"%s\",\"digest\":\"sha256:%064zx\","
		    "\"size\":1%s}",
		    i ? "," : "", e[i].media_type ? e[i].media_type : MT_OCI_MANIFEST, i, plat);
	}
	snprintf(json + len, cap - len, "]}");
	assert_int_equal(manifest_parse(json, strlen(json), NULL, &m, &err), 0);
	free(json);
	return m;
}

/* Returns the index of the selected entry, or -1 for -ENOENT. */
static int select_for(const struct entry *e, size_t n, const char *want)
{
	_cleanup_(manifest_freep) struct manifest *m = make_index(e, n);
	struct platform p = {0};
	const struct descriptor *d = NULL;
	int r;

	assert_int_equal(platform_parse(want, &p), 0);
	r = manifest_select_platform(m, &p, &d);
	platform_clear(&p);
	if (r == -ENOENT)
		return -1;
	assert_int_equal(r, 0);
	return (int)strtol(d->digest + 7, NULL, 16);
}

static void test_select_matrix(void **state)
{
	static const struct entry typical[] = {
	    {"unknown/unknown", NULL}, {"linux/amd64", NULL},    {"linux/arm/v6", NULL},
	    {"linux/arm/v7", NULL},    {"linux/arm64/v8", NULL}, {"linux/386", NULL},
	    {"windows/amd64", NULL},   {"linux/ppc64le", NULL},
	};
	static const struct entry arm64_plain[] = {{"linux/amd64", NULL}, {"linux/arm64", NULL}};
	static const struct entry arm_plain[] = {{"linux/arm", NULL}, {"linux/arm/v6", NULL}};
	static const struct entry arm_old[] = {{"linux/arm/v5", NULL}, {"linux/arm/v6", NULL}};
	static const struct entry dup[] = {{"linux/amd64", NULL}, {"linux/amd64", NULL}};
	static const struct entry attest_only[] = {{"unknown/unknown", NULL}, {"-", NULL}};
	static const struct entry amd64_v3[] = {{"linux/amd64/v3", NULL}, {"linux/amd64", NULL}};
	static const struct entry not_manifest[] = {
	    {"linux/amd64", "application/vnd.oci.image.layer.v1.tar"}, {"linux/amd64", NULL}};
	static const struct entry docker_names[] = {{"linux/x86_64", NULL},
	                                            {"linux/aarch64", NULL}};

	(void)state;
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "linux/amd64"), 1);
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "linux/arm64"), 4);
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "linux/arm64/v8"), 4);
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "linux/arm"), 3);
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "linux/arm/v6"), 2);
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "linux/386"), 5);
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "windows/amd64"), 6);
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "linux/s390x"), -1);
	assert_int_equal(select_for(typical, ARRAY_SIZE(typical), "linux/arm/v5"), -1);
	/* arm64 images without a variant are v8. */
	assert_int_equal(select_for(arm64_plain, 2, "linux/arm64/v8"), 1);
	/* arm without a variant is v7: an exact v7 match beats the compatible v6. */
	assert_int_equal(select_for(arm_plain, 2, "linux/arm/v7"), 0);
	assert_int_equal(select_for(arm_plain, 2, "linux/arm/v6"), 1);
	/* A v7 host runs v6 and v5 images, the newest first. */
	assert_int_equal(select_for(arm_old, 2, "linux/arm/v7"), 1);
	/* Ties: first match. */
	assert_int_equal(select_for(dup, 2, "linux/amd64"), 0);
	assert_int_equal(select_for(attest_only, 2, "linux/amd64"), -1);
	/* A host without a known amd64 level takes the baseline image. */
	assert_int_equal(select_for(amd64_v3, 2, "linux/amd64"), 1);
	assert_int_equal(select_for(amd64_v3, 2, "linux/amd64/v3"), 0);
	assert_int_equal(select_for(not_manifest, 2, "linux/amd64"), 1);
	assert_int_equal(select_for(docker_names, 2, "linux/amd64"), 0);
	assert_int_equal(select_for(docker_names, 2, "linux/arm64"), 1);
}

static void test_select_not_index(void **state)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct platform p = {0};
	const struct descriptor *d = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(parse(oci_manifest, NULL, &m, &err), 0);
	assert_int_equal(platform_parse("linux/amd64", &p), 0);
	assert_int_equal(manifest_select_platform(m, &p, &d), -EINVAL);
	assert_null(d);
	platform_clear(&p);
}

/* Configs */

static void test_config(void **state)
{
	static const char json[] =
	    "{\"architecture\":\"arm64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\","
	    "\"A=b c\"],\"Entrypoint\":[\"/bin/sh\",\"-c\"],\"Cmd\":[\"echo hi\"],"
	    "\"WorkingDir\":\"/srv\",\"User\":\"1000:1000\",\"OnBuild\":null},\"rootfs\":{"
	    "\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]},\"history\":[]}";
	_cleanup_(image_config_freep) struct image_config *c = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(image_config_parse(json, strlen(json), &c, &err), 0);
	assert_string_equal(c->platform.os, "linux");
	assert_string_equal(c->platform.architecture, "arm64");
	assert_string_equal(c->platform.variant, "v8");
	assert_string_equal(c->env[0], "PATH=/bin");
	assert_string_equal(c->env[1], "A=b c");
	assert_null(c->env[2]);
	assert_string_equal(c->entrypoint[0], "/bin/sh");
	assert_string_equal(c->entrypoint[1], "-c");
	assert_null(c->entrypoint[2]);
	assert_string_equal(c->cmd[0], "echo hi");
	assert_string_equal(c->working_dir, "/srv");
	assert_string_equal(c->user, "1000:1000");
	assert_int_equal(c->n_diff_ids, 2);
	assert_string_equal(c->diff_ids[1], D2);
	assert_null(c->diff_ids[2]);
}

static void test_config_minimal(void **state)
{
	static const char json[] = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{"
	                           "\"Cmd\":null,\"Entrypoint\":null,\"Env\":null,"
	                           "\"WorkingDir\":null}}";
	_cleanup_(image_config_freep) struct image_config *c = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(image_config_parse(json, strlen(json), &c, &err), 0);
	assert_null(c->cmd);
	assert_null(c->entrypoint);
	assert_null(c->env);
	assert_null(c->working_dir);
	assert_null(c->user);
	assert_non_null(c->diff_ids);
	assert_null(c->diff_ids[0]);
	assert_int_equal(c->n_diff_ids, 0);
}

static char *deep_nesting(size_t depth)
{
	char *s = malloc(2 * depth + 64);
	size_t len;

	assert_non_null(s);
	len = (size_t)sprintf(s, "{\"config\":{\"Env\":");
	for (size_t i = 0; i < depth; i++)
		s[len++] = '[';
	for (size_t i = 0; i < depth; i++)
		s[len++] = ']';
	strcpy(s + len, "}}");
	return s;
}

static char *huge_env(size_t n)
{
	char *s = malloc(n * 4 + 64);
	size_t len;

	assert_non_null(s);
	len = (size_t)sprintf(s, "{\"config\":{\"Env\":[");
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(s + len, "%s\"\"", i ? "," : "");
	strcpy(s + len, "]}}");
	return s;
}

static void test_config_hostile(void **state)
{
	static const struct {
		const char *json;
		const char *reason;
	} cases[] = {
	    {"{\"config\":{\"Env\":[\"A=1\",2]}}", "config.Env is not an array of strings"},
	    {"{\"config\":{\"Cmd\":\"sh\"}}", "config.Cmd is not an array of strings"},
	    {"{\"config\":{\"Entrypoint\":{}}}", "config.Entrypoint is not an array of strings"},
	    {"{\"config\":{\"WorkingDir\":[]}}", "config.WorkingDir is not a string"},
	    {"{\"config\":{\"User\":0}}", "config.User is not a string"},
	    {"{\"config\":[]}", "config is not an object"},
	    {"{\"os\":1}", "os is not a string"},
	    {"{\"architecture\":true}", "architecture is not a string"},
	    {"{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:zz\"]}}",
	     "rootfs.diff_ids has an invalid or unsupported digest 'sha256:zz'"},
	    {"{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":\"" D1 "\"}}",
	     "rootfs.diff_ids is not an array of strings"},
	    {"{\"rootfs\":{\"type\":\"squash\",\"diff_ids\":[]}}", "rootfs.type is not \"layers\""},
	    {"{\"rootfs\":7}", "rootfs is not an object"},
	    {"{\"config\":{\"Env\":[\"A\\u0000B\"]}}", NULL},
	    {"{\"os\":\"linux\",\"os\":\"windows\"}", NULL},
	    {"\"just a string\"", "not a JSON object"},
	    {"{\"config\":{\"Env\":[\"unterminated", NULL},
	};
	_cleanup_free_ char *deep = deep_nesting(100000);
	_cleanup_free_ char *env_ok = huge_env(CONFIG_MAX_ENV);
	_cleanup_free_ char *env_big = huge_env(CONFIG_MAX_ENV + 1);
	struct image_config *c = NULL;
	struct error err = {""};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int r;

		err = (struct error){""};
		r = image_config_parse(cases[i].json, strlen(cases[i].json), &c, &err);
		if (r != -EINVAL || !error_isset(&err) ||
		    (cases[i].reason && strcmp(err.msg, cases[i].reason) != 0))
			fail_msg("case %zu: %d (%s)", i, r, err.msg);
		assert_null(c);
	}
	err = (struct error){""};
	assert_int_equal(image_config_parse(deep, strlen(deep), &c, &err), -EINVAL);
	assert_true(error_isset(&err));
	err = (struct error){""};
	assert_int_equal(image_config_parse(env_big, strlen(env_big), &c, &err), -EINVAL);
	assert_string_equal(err.msg, "config.Env has too many entries (4097, at most 4096)");
	assert_int_equal(image_config_parse(env_ok, strlen(env_ok), &c, &err), 0);
	assert_string_equal(c->env[CONFIG_MAX_ENV - 1], "");
	image_config_free(c);
	{
		static const char sha512[] = "{\"rootfs\":{\"diff_ids\":[\"sha512:00\"]}}";

		err = (struct error){""};
		assert_int_equal(image_config_parse(sha512, strlen(sha512), &c, &err),
		                 -EPROTONOSUPPORT);
		assert_string_equal(
		    err.msg, "rootfs.diff_ids has an invalid or unsupported digest 'sha512:00'");
	}
}

static void test_descriptor_copy(void **state)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct descriptor d = {0};
	struct error err = {""};

	(void)state;
	assert_int_equal(parse(oci_index, NULL, &m, &err), 0);
	assert_int_equal(descriptor_copy(&m->manifests[0], &d), 0);
	assert_string_equal(d.digest, D1);
	assert_ptr_not_equal(d.digest, m->manifests[0].digest);
	assert_string_equal(d.platform.architecture, "amd64");
	assert_int_equal(d.size, 610);
	descriptor_clear(&d);
	assert_null(d.digest);
	descriptor_clear(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_oci_manifest),     cmocka_unit_test(test_docker_manifest),
	    cmocka_unit_test(test_nondistributable), cmocka_unit_test(test_oci_index),
	    cmocka_unit_test(test_docker_list),      cmocka_unit_test(test_media_type_sources),
	    cmocka_unit_test(test_bad_manifests),    cmocka_unit_test(test_layer_bound),
	    cmocka_unit_test(test_size_bound),       cmocka_unit_test(test_max_safe_size),
	    cmocka_unit_test(test_platform_parse),   cmocka_unit_test(test_platform_host),
	    cmocka_unit_test(test_select_matrix),    cmocka_unit_test(test_select_not_index),
	    cmocka_unit_test(test_config),           cmocka_unit_test(test_config_minimal),
	    cmocka_unit_test(test_config_hostile),   cmocka_unit_test(test_descriptor_copy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
