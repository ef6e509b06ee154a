#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include "common/digest.h"
#include "common/error.h"
#include "common/fileio.h"
#include "archive_source.h"
#include "source.h"

#define OCI_INDEX_MAX (4u << 20)
#define CHUNK (1u << 20)

struct source {
	const struct image_ref *ref;
	struct registry *reg;          /* REF_REGISTRY */
	int dir_fd;                    /* REF_OCI: the layout directory */
	struct archive_image *archive; /* REF_DOCKER_ARCHIVE, REF_TARBALL */
	char *first_reference;         /* what source_reference() returns */
};

void source_free(struct source *s)
{
	if (!s)
		return;
	registry_free(s->reg);
	archive_image_free(s->archive);
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	free(s->first_reference);
	free(s);
}

/* Finds the manifest that an OCI layout's index.json names for tag: the entry whose
 * org.opencontainers.image.ref.name is tag, or the only entry when tag is NULL. */
static int oci_find_tag(int dir_fd, const char *dir, const char *tag, char **ret_digest,
                        struct error *err)
{
	_cleanup_free_ char *buf = NULL;
	json_t *root, *manifests, *m;
	json_error_t jerr;
	const char *found = NULL;
	size_t len, i, n_found = 0;
	int r;

	r = read_file_full(dir_fd, "index.json", OCI_INDEX_MAX, &buf, &len);
	if (r < 0)
		return error_set(err, r, "cannot read '%s/index.json': %s", dir, strerror(-r));
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return error_set(err, -EINVAL, "'%s/index.json': %s (line %d)", dir, jerr.text,
		                 jerr.line);
	manifests = json_object_get(root, "manifests");
	json_array_foreach(manifests, i, m)
	{
		const char *name = json_string_value(json_object_get(
		    json_object_get(m, "annotations"), "org.opencontainers.image.ref.name"));
		const char *digest = json_string_value(json_object_get(m, "digest"));

		if (!digest)
			continue;
		if (tag ? (name && streq(name, tag)) : true) {
			found = digest;
			n_found++;
		}
	}
	if (n_found == 0 || (!tag && n_found > 1)) {
		json_decref(root);
		if (tag)
			return error_set(err, -ENOENT, "'%s' has no image tagged '%s'", dir, tag);
		return error_set(err, -ENOENT, "'%s' holds %zu images: name one with oci:%s:TAG",
		                 dir, n_found, dir);
	}
	if (!digest_valid(found)) {
		r = error_set(err, -EINVAL, "'%s/index.json': unsupported digest '%s'", dir, found);
		json_decref(root);
		return r;
	}
	*ret_digest = strdup(found);
	json_decref(root);
	return *ret_digest ? 0 : -ENOMEM;
}

int source_open(const struct image_ref *ref, const struct pull_opts *opts, struct source **ret,
                struct error *err)
{
	_cleanup_(source_freep) struct source *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->ref = ref;
	s->dir_fd = -1;
	switch (ref->transport) {
	case REF_REGISTRY: {
		struct registry_opts ro = opts->reg;

		ro.insecure = ro.insecure || opts->insecure;
		r = registry_new(ref, &ro, &s->reg);
		if (r < 0)
			return error_set(err, r, "cannot set up the registry client: %s",
			                 strerror(-r));
		s->first_reference = strdup(ref->digest ? ref->digest : ref->tag);
		break;
	}
	case REF_OCI:
		s->dir_fd = open(ref->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->dir_fd < 0) {
			r = -errno;
			return error_set(err, r, "cannot open OCI layout '%s': %s", ref->path,
			                 strerror(-r));
		}
		if (ref->digest) {
			s->first_reference = strdup(ref->digest);
		} else {
			r = oci_find_tag(s->dir_fd, ref->path, ref->tag, &s->first_reference, err);
			if (r < 0)
				return r;
		}
		break;
	case REF_DOCKER_ARCHIVE:
	case REF_TARBALL:
		r = archive_image_open(ref->path, ref->transport == REF_DOCKER_ARCHIVE, ref->tag,
		                       &s->archive, err);
		if (r < 0)
			return r;
		s->first_reference = strdup(archive_image_manifest_digest(s->archive));
		break;
	default:
		return error_set(err, -EOPNOTSUPP, "this kind of source cannot be pulled yet");
	}
	if (!s->first_reference)
		return -ENOMEM;
	*ret = TAKE_PTR(s);
	return 0;
}

struct registry *source_registry(const struct source *s)
{
	return s->reg;
}

struct registry *source_take_registry(struct source *s)
{
	return TAKE_PTR(s->reg);
}

const char *source_reference(const struct source *s)
{
	return s->first_reference;
}

/* Hands the registry client's reason (each of its requests replaces the last one's) on to
 * err, where the first reason wins. */
static int error_from_registry(struct error *err, int r, const struct error *rerr)
{
	return r < 0 && rerr->msg[0] ? error_set(err, r, "%s", rerr->msg) : r;
}

static int oci_open_blob(struct source *s, const char *digest, int *ret_fd, struct error *err)
{
	char path[128];
	int fd;

	if (!digest_valid(digest))
		return -EINVAL;
	snprintf(path, sizeof(path), "blobs/sha256/%s", digest_hex(digest));
	fd = openat(s->dir_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		int r = -errno;

		return error_set(err, r, "cannot open '%s/%s': %s", s->ref->path, path,
		                 strerror(-r));
	}
	*ret_fd = fd;
	return 0;
}

static int oci_read_blob(struct source *s, const char *digest, size_t max, char **ret_body,
                         size_t *ret_len, struct error *err)
{
	_cleanup_free_ char *body = NULL;
	char got[DIGEST_STR_LEN + 1], path[128];
	size_t len = 0;
	int r;

	if (!digest_valid(digest))
		return -EINVAL;
	snprintf(path, sizeof(path), "blobs/sha256/%s", digest_hex(digest));
	r = read_file_full(s->dir_fd, path, max, &body, &len);
	if (r < 0)
		return error_set(err, r, "cannot read '%s/%s': %s", s->ref->path, path,
		                 strerror(-r));
	sha256_buf(body, len, got);
	if (!streq(got, digest))
		return error_set(err, -EBADMSG, "'%s': blob %s has digest %s", s->ref->path, digest,
		                 got);
	*ret_body = TAKE_PTR(body);
	*ret_len = len;
	return 0;
}

int source_get_manifest(struct source *s, const char *reference, char **ret_body, size_t *ret_len,
                        char **ret_media_type, char **ret_digest, struct error *err)
{
	struct error rerr = {""};
	int r;

	if (s->reg) {
		r = registry_get_manifest(s->reg, reference, MANIFEST_MAX_SIZE, ret_body, ret_len,
		                          ret_media_type, ret_digest, &rerr);
		return error_from_registry(err, r, &rerr);
	}
	if (s->archive)
		r = archive_image_get_mem(s->archive, reference, ret_body, ret_len);
	else
		r = oci_read_blob(s, reference, MANIFEST_MAX_SIZE, ret_body, ret_len, err);
	if (r < 0)
		return r;
	*ret_media_type = NULL; /* the JSON's mediaType decides */
	*ret_digest = strdup(reference);
	if (!*ret_digest) {
		free(*ret_body);
		return -ENOMEM;
	}
	return 0;
}

int source_get_blob(struct source *s, const struct descriptor *d, uint64_t offset,
                    registry_data_fn fn, void *userdata, struct error *err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	struct error rerr = {""};
	uint64_t off = offset;
	int r;

	if (s->reg) {
		r = registry_get_blob(s->reg, d->digest, offset, d->size,
		                      d->foreign ? d->urls : NULL, fn, userdata, &rerr);
		return error_from_registry(err, r, &rerr);
	}
	if (s->archive)
		return archive_image_get_layer(s->archive, d->digest, offset, fn, userdata, err);
	r = oci_open_blob(s, d->digest, &fd, err);
	if (r < 0)
		return r;
	buf = malloc(CHUNK);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = pread_full(fd, buf, CHUNK, (off_t)off);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return 0;
		r = fn(buf, (size_t)n, userdata);
		if (r < 0)
			return r;
		off += (uint64_t)n;
	}
}

int source_get_blob_mem(struct source *s, const char *digest, size_t max, char **ret_body,
                        size_t *ret_len, struct error *err)
{
	struct error rerr = {""};
	int r;

	if (s->reg) {
		r = registry_get_blob_mem(s->reg, digest, max, ret_body, ret_len, &rerr);
		return error_from_registry(err, r, &rerr);
	}
	if (s->archive)
		return archive_image_get_mem(s->archive, digest, ret_body, ret_len);
	return oci_read_blob(s, digest, max, ret_body, ret_len, err);
}
