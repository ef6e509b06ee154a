/* OCI / Docker manifests, indexes and image configs. Every value comes from the network:
 * types are checked before use, counts are bounded, and each failure carries a reason. */
#include <inttypes.h>
#include <strings.h>
#include <jansson.h>
#include <stdio.h>
#include <sys/utsname.h>
#include "common/digest.h"
#include "common/error.h"
#include "manifest.h"

#define MT_SCHEMA1 "application/vnd.docker.distribution.manifest.v1+json"
#define MT_SCHEMA1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"

#define MAX_JSON_SIZE (64u << 20) /* callers bound sizes; this guards the parser itself */
#define MAX_SAFE_SIZE (UINT64_C(1) << 53)

/* Shortens a hostile string for quoting in a reason: printable ASCII only, at most 96. */
static const char *quote(const char *s, char *buf, size_t size)
{
	size_t j = 0;

	for (size_t i = 0; s[i] && j + 4 < size; i++) {
		unsigned char c = (unsigned char)s[i];

		if (j >= 96) {
			memcpy(buf + j, "...", 3);
			j += 3;
			break;
		}
		buf[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	buf[j] = '\0';
	return buf;
}

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

void platform_clear(struct platform *p)
{
	if (!p)
		return;
	free(p->os);
	free(p->architecture);
	free(p->variant);
	*p = (struct platform){0};
}

void descriptor_clear(struct descriptor *d)
{
	if (!d)
		return;
	free(d->media_type);
	free(d->digest);
	strv_free(d->urls);
	platform_clear(&d->platform);
	*d = (struct descriptor){0};
}

int descriptor_copy(const struct descriptor *src, struct descriptor *ret)
{
	struct descriptor d = *src;
	size_t n = 0;

	d.media_type = d.digest = NULL;
	d.urls = NULL;
	d.platform = (struct platform){0};
	if (!src->media_type || !src->digest)
		return -EINVAL;
	d.media_type = strdup(src->media_type);
	d.digest = strdup(src->digest);
	if (!d.media_type || !d.digest)
		goto oom;
	if (src->urls) {
		while (src->urls[n])
			n++;
		d.urls = calloc(n + 1, sizeof(*d.urls));
		if (!d.urls)
			goto oom;
		for (size_t i = 0; i < n; i++)
			if (!(d.urls[i] = strdup(src->urls[i])))
				goto oom;
	}
	if (src->has_platform) {
		d.platform.os = src->platform.os ? strdup(src->platform.os) : NULL;
		d.platform.architecture =
		    src->platform.architecture ? strdup(src->platform.architecture) : NULL;
		d.platform.variant = src->platform.variant ? strdup(src->platform.variant) : NULL;
		if ((src->platform.os && !d.platform.os) ||
		    (src->platform.architecture && !d.platform.architecture) ||
		    (src->platform.variant && !d.platform.variant))
			goto oom;
	}
	*ret = d;
	return 0;
oom:
	descriptor_clear(&d);
	return -ENOMEM;
}

void manifest_free(struct manifest *m)
{
	if (!m)
		return;
	free(m->media_type);
	descriptor_clear(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		descriptor_clear(&m->layers[i]);
	free(m->layers);
	for (size_t i = 0; i < m->n_manifests; i++)
		descriptor_clear(&m->manifests[i]);
	free(m->manifests);
	free(m);
}

void image_config_free(struct image_config *c)
{
	if (!c)
		return;
	platform_clear(&c->platform);
	strv_free(c->entrypoint);
	strv_free(c->cmd);
	strv_free(c->env);
	free(c->working_dir);
	free(c->user);
	strv_free(c->diff_ids);
	free(c);
}

/* Parses buf as one JSON object. Duplicate keys are refused: two parsers that pick
 * different duplicates would see different images behind the same digest. */
static int load_object(const char *buf, size_t len, json_t **ret, struct error *err)
{
	json_error_t jerr;
	json_t *root;

	if (!buf || len == 0)
		return error_set(err, -EINVAL, "empty document");
	if (len > MAX_JSON_SIZE)
		return error_set(err, -EFBIG, "document too large");
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root)
		return error_set(err, -EINVAL, "invalid JSON at line %d column %d: %s", jerr.line,
		                 jerr.column, jerr.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return error_set(err, -EINVAL, "not a JSON object");
	}
	*ret = root;
	return 0;
}

#define _cleanup_json_ _cleanup_(json_decrefp)

/* Reads an optional string member: 0 with *ret NULL when absent or null, -EINVAL when it
 * is another type. */
static int get_opt_string(json_t *obj, const char *key, const char **ret)
{
	json_t *v = json_object_get(obj, key);

	if (!v || json_is_null(v)) {
		*ret = NULL;
		return 0;
	}
	if (!json_is_string(v))
		return -EINVAL;
	*ret = json_string_value(v);
	return 0;
}

/* Strips parameters and blanks from a Content-Type into buf: "a/b; charset=x" -> "a/b". */
static const char *content_type_base(const char *ct, char *buf, size_t size)
{
	size_t n = 0;

	if (!ct)
		return NULL;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	while (ct[n] && ct[n] != ';' && ct[n] != ' ' && ct[n] != '\t')
		n++;
	if (n == 0 || n >= size)
		return NULL;
	memcpy(buf, ct, n);
	buf[n] = '\0';
	return buf;
}

static bool is_manifest_type(const char *mt)
{
	return streq(mt, MT_OCI_MANIFEST) || streq(mt, MT_DOCKER_MANIFEST);
}

static bool is_index_type(const char *mt)
{
	return streq(mt, MT_OCI_INDEX) || streq(mt, MT_DOCKER_LIST);
}

static bool is_schema1_type(const char *mt)
{
	return streq(mt, MT_SCHEMA1) || streq(mt, MT_SCHEMA1_SIGNED);
}

/* A Content-Type says something about the document only when it names a manifest type;
 * registries and static servers also answer application/json or octet-stream. */
static bool content_type_is_generic(const char *ct)
{
	return streq(ct, "application/json") || streq(ct, "application/octet-stream") ||
	       streq(ct, "text/plain") || streq(ct, "binary/octet-stream");
}

static int parse_platform_obj(json_t *p, struct platform *ret, struct error *err)
{
	const char *os = NULL, *arch = NULL, *variant = NULL;
	struct platform out = {0};

	if (!json_is_object(p))
		return error_set(err, -EINVAL, "descriptor platform is not an object");
	if (get_opt_string(p, "os", &os) < 0 || get_opt_string(p, "architecture", &arch) < 0 ||
	    get_opt_string(p, "variant", &variant) < 0)
		return error_set(
		    err, -EINVAL,
		    "descriptor platform has a non-string os, architecture or variant");
	if (!os || !arch)
		return error_set(err, -EINVAL, "descriptor platform lacks os or architecture");
	out.os = strdup(os);
	out.architecture = strdup(arch);
	out.variant = variant && *variant ? strdup(variant) : NULL;
	if (!out.os || !out.architecture || (variant && *variant && !out.variant)) {
		platform_clear(&out);
		return -ENOMEM;
	}
	*ret = out;
	return 0;
}

enum desc_kind {
	DESC_CHILD,  /* an index entry */
	DESC_CONFIG, /* a manifest's config */
	DESC_LAYER,  /* a manifest's layer */
};

struct layer_type {
	const char *media_type;
	enum layer_compression compression;
	bool foreign;
};

static const struct layer_type layer_types[] = {
    {"application/vnd.oci.image.layer.v1.tar", LAYER_TAR, false},
    {"application/vnd.oci.image.layer.v1.tar+gzip", LAYER_GZIP, false},
    {"application/vnd.oci.image.layer.v1.tar+zstd", LAYER_ZSTD, false},
    {"application/vnd.oci.image.layer.nondistributable.v1.tar", LAYER_TAR, true},
    {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", LAYER_GZIP, true},
    {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", LAYER_ZSTD, true},
    {"application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_GZIP, false},
    {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", LAYER_GZIP, true},
};

#define MAX_URLS 32

static int parse_urls(json_t *v, char ***ret, struct error *err)
{
	char **urls;
	size_t n;

	if (!json_is_array(v))
		return error_set(err, -EINVAL, "descriptor urls is not an array");
	n = json_array_size(v);
	if (n == 0) {
		*ret = NULL;
		return 0;
	}
	if (n > MAX_URLS)
		return error_set(err, -EINVAL, "descriptor has more than %d urls", MAX_URLS);
	urls = calloc(n + 1, sizeof(*urls));
	if (!urls)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *u = json_array_get(v, i);

		if (!json_is_string(u)) {
			strv_free(urls);
			return error_set(err, -EINVAL, "descriptor urls contains a non-string");
		}
		urls[i] = strdup(json_string_value(u));
		if (!urls[i]) {
			strv_free(urls);
			return -ENOMEM;
		}
	}
	*ret = urls;
	return 0;
}

static int parse_descriptor(json_t *j, enum desc_kind kind, struct descriptor *ret,
                            struct error *err)
{
	const char *mt = NULL, *digest = NULL;
	struct descriptor d = {0};
	json_t *size, *v;
	json_int_t sz;
	char q[128];
	int r;

	if (!json_is_object(j))
		return error_set(err, -EINVAL, "descriptor is not an object");
	if (get_opt_string(j, "mediaType", &mt) < 0 || !mt || !*mt)
		return error_set(err, -EINVAL, "descriptor lacks a mediaType string");
	if (get_opt_string(j, "digest", &digest) < 0 || !digest)
		return error_set(err, -EINVAL, "descriptor lacks a digest string");
	if (!digest_valid(digest)) {
		const char *colon = strchr(digest, ':');

		if (colon && !startswith(digest, "sha256:")) {
			char algo[40];
			size_t n = MIN((size_t)(colon - digest), sizeof(algo) - 1);

			memcpy(algo, digest, n);
			algo[n] = '\0';
			return error_set(err, -EPROTONOSUPPORT,
			                 "digest algorithm '%s' is not supported (only sha256)",
			                 quote(algo, q, sizeof(q)));
		}
		return error_set(err, -EINVAL, "invalid digest '%s'", quote(digest, q, sizeof(q)));
	}
	size = json_object_get(j, "size");
	if (!json_is_integer(size))
		return error_set(err, -EINVAL, "descriptor %s lacks an integer size", digest);
	sz = json_integer_value(size);
	if (sz < 0 || (uint64_t)sz > MAX_SAFE_SIZE)
		return error_set(err, -EINVAL, "descriptor %s has an invalid size", digest);

	if (kind == DESC_LAYER) {
		size_t i;

		for (i = 0; i < ARRAY_SIZE(layer_types); i++)
			if (streq(mt, layer_types[i].media_type))
				break;
		if (i == ARRAY_SIZE(layer_types))
			return error_set(err, -EPROTONOSUPPORT, "unsupported layer media type '%s'",
			                 quote(mt, q, sizeof(q)));
		d.compression = layer_types[i].compression;
		d.foreign = layer_types[i].foreign;
	} else if (kind == DESC_CONFIG) {
		if (!streq(mt, MT_OCI_CONFIG) && !streq(mt, MT_DOCKER_CONFIG))
			return error_set(err, -EPROTONOSUPPORT,
			                 "config media type '%s' is not an image config",
			                 quote(mt, q, sizeof(q)));
	}

	d.media_type = strdup(mt);
	d.digest = strdup(digest);
	d.size = (uint64_t)sz;
	if (!d.media_type || !d.digest) {
		descriptor_clear(&d);
		return -ENOMEM;
	}
	v = json_object_get(j, "annotations");
	if (kind == DESC_LAYER && json_is_object(v)) {
		const char *toc = json_string_value(json_object_get(v, MANIFEST_ANN_STARGZ_TOC));

		if (toc && digest_valid(toc))
			memcpy(d.toc_digest, toc, DIGEST_STR_LEN + 1);
	}
	v = json_object_get(j, "urls");
	if (v && !json_is_null(v)) {
		r = parse_urls(v, &d.urls, err);
		if (r < 0) {
			descriptor_clear(&d);
			return r;
		}
	}
	v = json_object_get(j, "platform");
	if (kind == DESC_CHILD && v && !json_is_null(v)) {
		r = parse_platform_obj(v, &d.platform, err);
		if (r < 0) {
			descriptor_clear(&d);
			return r;
		}
		d.has_platform = true;
	}
	*ret = d;
	return 0;
}

static int parse_descriptor_array(json_t *arr, enum desc_kind kind, size_t max, const char *what,
                                  struct descriptor **ret, size_t *ret_n, struct error *err)
{
	struct descriptor *v;
	size_t n;

	if (!json_is_array(arr))
		return error_set(err, -EINVAL, "%s is not an array", what);
	n = json_array_size(arr);
	if (n > max)
		return error_set(err, -EINVAL, "too many %s (%zu, at most %zu)", what, n, max);
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int r = parse_descriptor(json_array_get(arr, i), kind, &v[i], err);

		if (r < 0) {
			for (size_t k = 0; k < i; k++)
				descriptor_clear(&v[k]);
			free(v);
			return r;
		}
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int manifest_parse(const char *buf, size_t len, const char *content_type, struct manifest **ret,
                   struct error *err)
{
	_cleanup_json_ json_t *root = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	const char *json_mt = NULL, *mt;
	char ctbuf[256], q[128];
	const char *ct = content_type_base(content_type, ctbuf, sizeof(ctbuf));
	json_t *sv, *jmanifests, *jlayers, *jconfig;
	int r;

	if (len > MANIFEST_MAX_SIZE)
		return error_set(err, -EFBIG, "manifest larger than %u bytes", MANIFEST_MAX_SIZE);
	r = load_object(buf, len, &root, err);
	if (r < 0)
		return r;

	sv = json_object_get(root, "schemaVersion");
	if (json_is_integer(sv) && json_integer_value(sv) == 1)
		return error_set(err, -EPROTONOSUPPORT,
		                 "Docker schema 1 manifests are not supported");
	if (get_opt_string(root, "mediaType", &json_mt) < 0)
		return error_set(err, -EINVAL, "mediaType is not a string");
	if ((json_mt && is_schema1_type(json_mt)) || (ct && is_schema1_type(ct)))
		return error_set(err, -EPROTONOSUPPORT,
		                 "Docker schema 1 manifests are not supported");
	if (!json_is_integer(sv))
		return error_set(err, -EINVAL, "schemaVersion missing or not an integer");
	if (json_integer_value(sv) != 2)
		return error_set(err, -EPROTONOSUPPORT,
		                 "schemaVersion %" JSON_INTEGER_FORMAT " is not supported",
		                 json_integer_value(sv));
	if (ct && content_type_is_generic(ct))
		ct = NULL;

	jmanifests = json_object_get(root, "manifests");
	jlayers = json_object_get(root, "layers");
	jconfig = json_object_get(root, "config");
	if (json_mt && ct && !streq(json_mt, ct))
		return error_set(err, -EINVAL, "mediaType '%s' contradicts Content-Type '%s'",
		                 quote(json_mt, q, sizeof(q)), ct);
	mt = json_mt ? json_mt : ct;
	if (!mt) {
		/* OCI allows an absent mediaType; the shape then decides. */
		if (jmanifests && !jlayers && !jconfig)
			mt = MT_OCI_INDEX;
		else if (!jmanifests && jconfig)
			mt = MT_OCI_MANIFEST;
		else
			return error_set(err, -EINVAL,
			                 "no mediaType and the document is neither an index nor a "
			                 "manifest");
	}
	if (!is_manifest_type(mt) && !is_index_type(mt))
		return error_set(err, -EPROTONOSUPPORT, "unsupported manifest media type '%s'",
		                 quote(mt, q, sizeof(q)));

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->media_type = strdup(mt);
	if (!m->media_type)
		return -ENOMEM;

	if (is_index_type(mt)) {
		/* An index that also carries layers is ambiguous (CVE-2021-41190). */
		if (jlayers || jconfig)
			return error_set(err, -EINVAL, "index has layers or config");
		if (!jmanifests)
			return error_set(err, -EINVAL, "index lacks manifests");
		m->kind = MANIFEST_INDEX;
		r = parse_descriptor_array(jmanifests, DESC_CHILD, INDEX_MAX_MANIFESTS, "manifests",
		                           &m->manifests, &m->n_manifests, err);
		if (r < 0)
			return r;
	} else {
		if (jmanifests)
			return error_set(err, -EINVAL, "manifest has a manifests list");
		if (!jconfig)
			return error_set(err, -EINVAL, "manifest lacks config");
		if (!jlayers)
			return error_set(err, -EINVAL, "manifest lacks layers");
		m->kind = MANIFEST_IMAGE;
		r = parse_descriptor(jconfig, DESC_CONFIG, &m->config, err);
		if (r < 0)
			return r;
		r = parse_descriptor_array(jlayers, DESC_LAYER, MANIFEST_MAX_LAYERS, "layers",
		                           &m->layers, &m->n_layers, err);
		if (r < 0)
			return r;
		{
			const char *soci = json_string_value(json_object_get(
			    json_object_get(root, "annotations"), MANIFEST_ANN_SOCI_INDEX));

			if (soci && digest_valid(soci))
				memcpy(m->soci_index, soci, DIGEST_STR_LEN + 1);
		}
	}
	*ret = TAKE_PTR(m);
	return 0;
}

/* Platforms */

static int normalize_arch(const char *arch, const char *variant, char **ret_arch,
                          char **ret_variant)
{
	static const struct {
		const char *in, *arch, *variant;
	} aliases[] = {
	    {"x86_64", "amd64", NULL}, {"x86-64", "amd64", NULL},    {"aarch64", "arm64", NULL},
	    {"armhf", "arm", "v7"},    {"armel", "arm", "v6"},       {"i386", "386", NULL},
	    {"i686", "386", NULL},     {"armv7l", "arm", "v7"},      {"armv6l", "arm", "v6"},
	    {"armv5tel", "arm", "v5"}, {"ppc64el", "ppc64le", NULL},
	};
	const char *a = arch, *v = variant && *variant ? variant : NULL;
	char *out_a, *out_v = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(aliases); i++)
		if (streq(arch, aliases[i].in)) {
			a = aliases[i].arch;
			if (!v)
				v = aliases[i].variant;
			break;
		}
	if (streq(a, "arm64")) {
		if (!v || streq(v, "8"))
			v = "v8";
	} else if (streq(a, "arm")) {
		if (!v)
			v = "v7";
		else if (streq(v, "5") || streq(v, "6") || streq(v, "7") || streq(v, "8")) {
			static const char *const vs[] = {"v5", "v6", "v7", "v8"};

			v = vs[v[0] - '5'];
		}
	} else if (streq(a, "amd64") && v && streq(v, "v1")) {
		v = NULL;
	}
	out_a = strdup(a);
	if (v)
		out_v = strdup(v);
	if (!out_a || (v && !out_v)) {
		free(out_a);
		free(out_v);
		return -ENOMEM;
	}
	*ret_arch = out_a;
	*ret_variant = out_v;
	return 0;
}

static bool platform_field_valid(const char *s, size_t len)
{
	if (len == 0 || len > 32)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int platform_parse(const char *s, struct platform *ret)
{
	const char *p1, *p2;
	_cleanup_free_ char *os = NULL, *arch = NULL, *variant = NULL;
	struct platform out = {0};
	int r;

	if (!s)
		return -EINVAL;
	p1 = strchr(s, '/');
	if (!p1)
		return -EINVAL;
	p2 = strchr(p1 + 1, '/');
	if (p2 && strchr(p2 + 1, '/'))
		return -EINVAL;
	if (!platform_field_valid(s, (size_t)(p1 - s)))
		return -EINVAL;
	if (!platform_field_valid(p1 + 1, p2 ? (size_t)(p2 - p1 - 1) : strlen(p1 + 1)))
		return -EINVAL;
	if (p2 && !platform_field_valid(p2 + 1, strlen(p2 + 1)))
		return -EINVAL;
	os = strndup(s, (size_t)(p1 - s));
	arch = p2 ? strndup(p1 + 1, (size_t)(p2 - p1 - 1)) : strdup(p1 + 1);
	variant = p2 ? strdup(p2 + 1) : NULL;
	if (!os || !arch || (p2 && !variant))
		return -ENOMEM;
	for (char *c = os; *c; c++)
		*c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
	for (char *c = arch; *c; c++)
		*c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
	r = normalize_arch(arch, variant, &out.architecture, &out.variant);
	if (r < 0)
		return r;
	out.os = TAKE_PTR(os);
	*ret = out;
	return 0;
}

int platform_host(struct platform *ret)
{
	struct utsname u;
	struct platform out = {0};
	int r;

	if (uname(&u) < 0)
		return -errno;
	r = normalize_arch(u.machine, NULL, &out.architecture, &out.variant);
	if (r < 0)
		return r;
	out.os = strdup("linux");
	if (!out.os) {
		platform_clear(&out);
		return -ENOMEM;
	}
	*ret = out;
	return 0;
}

/* Variant "vN" as N, or -1. */
static int variant_level(const char *v)
{
	if (!v || v[0] != 'v' || v[1] < '0' || v[1] > '9' || v[2])
		return -1;
	return v[1] - '0';
}

/* How well an entry fits want: 0 not at all, higher is better. */
static int platform_score(const struct platform *entry, const struct platform *want)
{
	_cleanup_free_ char *arch = NULL, *variant = NULL;
	const char *wv = want->variant;

	if (!entry->os || !entry->architecture)
		return 0;
	if (streq(entry->os, "unknown") || streq(entry->architecture, "unknown"))
		return 0; /* attestation manifests (buildkit provenance, SBOMs) */
	if (strcasecmp(entry->os, want->os) != 0)
		return 0;
	if (normalize_arch(entry->architecture, entry->variant, &arch, &variant) < 0)
		return 0;
	if (!streq(arch, want->architecture))
		return 0;
	if ((!variant && !wv) || (variant && wv && streq(variant, wv)))
		return 100;
	/* An ARM CPU runs code built for older ARM variants. */
	if (streq(arch, "arm") && variant && wv) {
		int have = variant_level(variant), can = variant_level(wv);

		if (have >= 0 && can >= 0 && have < can)
			return 50 + have;
	}
	/* A host of unknown variant runs the baseline only. */
	return 0;
}

int manifest_select_platform(const struct manifest *m, const struct platform *want,
                             const struct descriptor **ret)
{
	const struct descriptor *best = NULL;
	int best_score = 0;

	if (!m || !want || !want->os || !want->architecture)
		return -EINVAL;
	if (m->kind != MANIFEST_INDEX)
		return -EINVAL;
	for (size_t i = 0; i < m->n_manifests; i++) {
		const struct descriptor *d = &m->manifests[i];
		int score;

		if (!d->has_platform)
			continue;
		if (!is_manifest_type(d->media_type) && !is_index_type(d->media_type))
			continue;
		score = platform_score(&d->platform, want);
		if (score > best_score) {
			best = d;
			best_score = score;
		}
	}
	if (!best)
		return -ENOENT;
	*ret = best;
	return 0;
}

/* Image config */

static int parse_strv(json_t *v, size_t max, const char *what, char ***ret, struct error *err)
{
	char **out;
	size_t n;

	if (!v || json_is_null(v)) {
		*ret = NULL;
		return 0;
	}
	if (!json_is_array(v))
		return error_set(err, -EINVAL, "%s is not an array of strings", what);
	n = json_array_size(v);
	if (n > max)
		return error_set(err, -EINVAL, "%s has too many entries (%zu, at most %zu)", what,
		                 n, max);
	out = calloc(n + 1, sizeof(*out));
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(v, i);

		if (!json_is_string(s)) {
			strv_free(out);
			return error_set(err, -EINVAL, "%s is not an array of strings", what);
		}
		out[i] = strdup(json_string_value(s));
		if (!out[i]) {
			strv_free(out);
			return -ENOMEM;
		}
	}
	*ret = out;
	return 0;
}

static int dup_opt_string(json_t *obj, const char *key, const char *what, char **ret,
                          struct error *err)
{
	const char *s;

	if (get_opt_string(obj, key, &s) < 0)
		return error_set(err, -EINVAL, "%s is not a string", what);
	if (!s) {
		*ret = NULL;
		return 0;
	}
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

int image_config_parse(const char *buf, size_t len, struct image_config **ret, struct error *err)
{
	_cleanup_json_ json_t *root = NULL;
	_cleanup_(image_config_freep) struct image_config *c = NULL;
	_cleanup_free_ char *os = NULL, *arch = NULL, *variant = NULL;
	json_t *cfg, *rootfs;
	const char *type = NULL;
	int r;

	if (len > CONFIG_MAX_SIZE)
		return error_set(err, -EFBIG, "config larger than %u bytes", CONFIG_MAX_SIZE);
	r = load_object(buf, len, &root, err);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;

	if ((r = dup_opt_string(root, "os", "os", &os, err)) < 0 ||
	    (r = dup_opt_string(root, "architecture", "architecture", &arch, err)) < 0 ||
	    (r = dup_opt_string(root, "variant", "variant", &variant, err)) < 0)
		return r;
	if (arch) {
		r = normalize_arch(arch, variant, &c->platform.architecture, &c->platform.variant);
		if (r < 0)
			return r;
	}
	c->platform.os = TAKE_PTR(os);

	cfg = json_object_get(root, "config");
	if (cfg && !json_is_null(cfg)) {
		if (!json_is_object(cfg))
			return error_set(err, -EINVAL, "config is not an object");
		if ((r = parse_strv(json_object_get(cfg, "Entrypoint"), CONFIG_MAX_ARGS,
		                    "config.Entrypoint", &c->entrypoint, err)) < 0 ||
		    (r = parse_strv(json_object_get(cfg, "Cmd"), CONFIG_MAX_ARGS, "config.Cmd",
		                    &c->cmd, err)) < 0 ||
		    (r = parse_strv(json_object_get(cfg, "Env"), CONFIG_MAX_ENV, "config.Env",
		                    &c->env, err)) < 0 ||
		    (r = dup_opt_string(cfg, "WorkingDir", "config.WorkingDir", &c->working_dir,
		                        err)) < 0 ||
		    (r = dup_opt_string(cfg, "User", "config.User", &c->user, err)) < 0)
			return r;
	}

	rootfs = json_object_get(root, "rootfs");
	if (rootfs && !json_is_null(rootfs)) {
		if (!json_is_object(rootfs))
			return error_set(err, -EINVAL, "rootfs is not an object");
		if (get_opt_string(rootfs, "type", &type) < 0)
			return error_set(err, -EINVAL, "rootfs.type is not a string");
		if (type && !streq(type, "layers"))
			return error_set(err, -EINVAL, "rootfs.type is not \"layers\"");
		r = parse_strv(json_object_get(rootfs, "diff_ids"), MANIFEST_MAX_LAYERS,
		               "rootfs.diff_ids", &c->diff_ids, err);
		if (r < 0)
			return r;
	}
	if (!c->diff_ids) {
		c->diff_ids = calloc(1, sizeof(*c->diff_ids));
		if (!c->diff_ids)
			return -ENOMEM;
	}
	for (char **d = c->diff_ids; *d; d++) {
		if (!digest_valid(*d)) {
			char q[128];

			return error_set(
			    err,
			    startswith(*d, "sha256:") || !strchr(*d, ':') ? -EINVAL
			                                                  : -EPROTONOSUPPORT,
			    "rootfs.diff_ids has an invalid or unsupported digest '%s'",
			    quote(*d, q, sizeof(q)));
		}
		c->n_diff_ids++;
	}
	*ret = TAKE_PTR(c);
	return 0;
}

char *platform_format(const struct platform *p)
{
	char *s;

	if (!p || !p->os || !p->architecture)
		return NULL;
	if (asprintf(&s, "%s/%s%s%s", p->os, p->architecture, p->variant ? "/" : "",
	             p->variant ? p->variant : "") < 0)
		return NULL;
	return s;
}
