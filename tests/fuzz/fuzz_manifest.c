/* Fuzzes manifest_parse, manifest_select_platform and image_config_parse: any input is
 * either rejected with a reason or yields descriptors whose digests and sizes are valid
 * and whose counts respect the bounds. */
#include <stdint.h>
#include "common/digest.h"
#include "common/error.h"
#include "fsd/image/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const content_types[] = {
    NULL,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    "application/json; charset=utf-8",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
};

static const char *const platforms[] = {"linux/amd64", "linux/arm64", "linux/arm/v6", "linux/arm",
                                        "windows/amd64"};

static void check_descriptor(const struct descriptor *d)
{
	if (!d->media_type || !digest_valid(d->digest) || d->size > (UINT64_C(1) << 53))
		abort();
	if (d->has_platform && (!d->platform.os || !d->platform.architecture))
		abort();
}

static void fuzz_manifest(const char *buf, size_t len, const char *ct)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct error err = {""};
	int r = manifest_parse(buf, len, ct, &m, &err);

	if (r < 0) {
		if (r != -ENOMEM && !error_isset(&err))
			abort();
		return;
	}
	if (!m->media_type)
		abort();
	if (m->kind == MANIFEST_IMAGE) {
		if (m->n_layers > MANIFEST_MAX_LAYERS || m->n_manifests)
			abort();
		check_descriptor(&m->config);
		for (size_t i = 0; i < m->n_layers; i++)
			check_descriptor(&m->layers[i]);
		return;
	}
	if (m->n_manifests > INDEX_MAX_MANIFESTS || m->n_layers)
		abort();
	for (size_t i = 0; i < m->n_manifests; i++)
		check_descriptor(&m->manifests[i]);
	for (size_t i = 0; i < ARRAY_SIZE(platforms); i++) {
		struct platform want = {0};
		const struct descriptor *d = NULL;

		if (platform_parse(platforms[i], &want) < 0)
			abort();
		r = manifest_select_platform(m, &want, &d);
		if (r == 0 && (d < m->manifests || d >= m->manifests + m->n_manifests))
			abort();
		if (r < 0 && r != -ENOENT)
			abort();
		platform_clear(&want);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(image_config_freep) struct image_config *c = NULL;
	const char *buf = (const char *)data;
	struct error err = {""};
	size_t n = 0;
	int r;

	if (size > MANIFEST_MAX_SIZE)
		return 0;
	/* The first byte picks the Content-Type; the whole input is also tried without. */
	if (size > 0)
		fuzz_manifest(buf + 1, size - 1,
		              content_types[data[0] % ARRAY_SIZE(content_types)]);
	fuzz_manifest(buf, size, NULL);

	r = image_config_parse(buf, size, &c, &err);
	if (r < 0) {
		if (r != -ENOMEM && !error_isset(&err))
			abort();
		return 0;
	}
	for (char **d = c->diff_ids; *d; d++, n++)
		if (!digest_valid(*d))
			abort();
	if (n != c->n_diff_ids || n > MANIFEST_MAX_LAYERS)
		abort();
	return 0;
}
