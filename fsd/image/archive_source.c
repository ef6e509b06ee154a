#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include "archive_source.h"
#include "common/digest.h"
#include "common/error.h"
#include "common/fileio.h"
#include "manifest.h"

#define CHUNK (256u << 10)
#define DOCKER_MANIFEST_MAX (1u << 20)
#define MAX_MEMBERS 100000

struct member {
	char *name;
	char *link; /* symlink/hardlink target inside the archive, else NULL */
	char digest[DIGEST_STR_LEN + 1];
	uint64_t size;
	unsigned char magic[4];
	char *body; /* small .json members, kept for the config */
	size_t body_len;
};

struct layer {
	char digest[DIGEST_STR_LEN + 1];
	uint64_t size;
	const char *member; /* docker archive: member name; tarball: NULL (the whole file) */
};

struct archive_image {
	char *path;
	char *manifest, *config;
	size_t manifest_len, config_len;
	char manifest_digest[DIGEST_STR_LEN + 1], config_digest[DIGEST_STR_LEN + 1];
	struct layer *layers;
	size_t n_layers;
	struct member *members;
	size_t n_members;
};

void archive_image_free(struct archive_image *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n_members; i++) {
		free(a->members[i].name);
		free(a->members[i].link);
		free(a->members[i].body);
	}
	free(a->members);
	free(a->layers);
	free(a->manifest);
	free(a->config);
	free(a->path);
	free(a);
}

static const char *layer_media_type(const unsigned char *m, size_t n)
{
	if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b)
		return "application/vnd.oci.image.layer.v1.tar+gzip";
	if (n >= 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
		return "application/vnd.oci.image.layer.v1.tar+zstd";
	if ((n >= 3 && memcmp(m, "BZh", 3) == 0) || (n >= 4 && memcmp(m,
	                                                              "\xfd"
	                                                              "7zX",
	                                                              4) == 0))
		return NULL; /* bzip2, xz: no random-access index for them */
	return "application/vnd.oci.image.layer.v1.tar";
}

static int synthesise_manifest(struct archive_image *a, const char *const *media_types)
{
	json_t *layers = json_array(), *m;
	int r = 0;

	if (!layers)
		return -ENOMEM;
	for (size_t i = 0; i < a->n_layers; i++)
		json_array_append_new(
		    layers, json_pack("{s:s, s:s, s:I}", "mediaType", media_types[i], "digest",
		                      a->layers[i].digest, "size", (json_int_t)a->layers[i].size));
	m = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
	              MT_OCI_MANIFEST, "config", "mediaType", MT_OCI_CONFIG, "digest",
	              a->config_digest, "size", (json_int_t)a->config_len, "layers", layers);
	if (!m)
		return -ENOMEM;
	a->manifest = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(m);
	if (!a->manifest)
		return -ENOMEM;
	a->manifest_len = strlen(a->manifest);
	sha256_buf(a->manifest, a->manifest_len, a->manifest_digest);
	return r;
}

/* Tarball: hashes the file (the layer digest) and its decompressed stream (the diff_id) in
 * one pass: libarchive's raw format reads through our callback, which hashes what it hands
 * over. */
struct tar_reader {
	int fd;
	char buf[CHUNK];
	struct sha256 *blob;
	uint64_t size;
	unsigned char magic[4];
	size_t magic_len;
};

static la_ssize_t tar_read_cb(struct archive *ar, void *ud, const void **ret)
{
	struct tar_reader *t = ud;
	ssize_t n = read_full(t->fd, t->buf, sizeof(t->buf));

	if (n < 0) {
		if (ar)
			archive_set_error(ar, (int)-n, "read error");
		return -1;
	}
	if (t->magic_len < sizeof(t->magic)) {
		size_t k = MIN(sizeof(t->magic) - t->magic_len, (size_t)n);

		memcpy(t->magic + t->magic_len, t->buf, k);
		t->magic_len += k;
	}
	sha256_update(t->blob, t->buf, (size_t)n);
	t->size += (uint64_t)n;
	*ret = t->buf;
	return n;
}

static int open_tarball(struct archive_image *a, struct error *err)
{
	_cleanup_(sha256_freep) struct sha256 *blob = sha256_new(), *diff = sha256_new();
	_cleanup_free_ struct tar_reader *t = calloc(1, sizeof(*t));
	_cleanup_free_ char *buf = malloc(CHUNK);
	_cleanup_close_ int fd = -1;
	struct archive *ar;
	struct archive_entry *e;
	struct platform host = {0};
	char diff_id[DIGEST_STR_LEN + 1];
	const char *mt;
	json_t *cfg;
	int r = 0;

	if (!blob || !diff || !t || !buf)
		return -ENOMEM;
	fd = open(a->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return error_set(err, r, "cannot open '%s': %s", a->path, strerror(-r));
	}
	t->fd = fd;
	t->blob = blob;
	ar = archive_read_new();
	if (!ar)
		return -ENOMEM;
	archive_read_support_filter_gzip(ar);
	archive_read_support_filter_zstd(ar);
	archive_read_support_format_raw(ar);
	if (archive_read_open(ar, t, NULL, tar_read_cb, NULL) != ARCHIVE_OK ||
	    archive_read_next_header(ar, &e) != ARCHIVE_OK) {
		r = error_set(err, -EBADMSG, "'%s': %s", a->path, archive_error_string(ar));
		archive_read_free(ar);
		return r;
	}
	for (;;) {
		la_ssize_t n = archive_read_data(ar, buf, CHUNK);

		if (n < 0) {
			r = error_set(err, -EBADMSG, "'%s': %s", a->path, archive_error_string(ar));
			break;
		}
		if (n == 0)
			break;
		sha256_update(diff, buf, (size_t)n);
	}
	archive_read_free(ar);
	if (r < 0)
		return r;
	/* Bytes after the end of the compressed stream still belong to the blob. */
	for (;;) {
		const void *p;
		la_ssize_t n = tar_read_cb(NULL, t, &p);

		if (n <= 0)
			break;
	}
	mt = layer_media_type(t->magic, t->magic_len);
	if (!mt)
		return error_set(err, -EPROTONOSUPPORT,
		                 "'%s': compression not supported (use gzip, zstd or plain tar)",
		                 a->path);
	a->layers = calloc(1, sizeof(*a->layers));
	if (!a->layers)
		return -ENOMEM;
	a->n_layers = 1;
	sha256_final(blob, a->layers[0].digest);
	a->layers[0].size = t->size;
	sha256_final(diff, diff_id);
	r = platform_host(&host);
	if (r < 0)
		return r;
	cfg = json_pack("{s:s, s:s, s:{}, s:{s:s, s:[s]}}", "architecture", host.architecture, "os",
	                host.os, "config", "rootfs", "type", "layers", "diff_ids", diff_id);
	platform_clear(&host);
	if (!cfg)
		return -ENOMEM;
	a->config = json_dumps(cfg, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(cfg);
	if (!a->config)
		return -ENOMEM;
	a->config_len = strlen(a->config);
	sha256_buf(a->config, a->config_len, a->config_digest);
	return synthesise_manifest(a, (const char *const[]){mt});
}

static struct archive *open_archive(const char *path)
{
	struct archive *ar = archive_read_new();

	if (!ar)
		return NULL;
	archive_read_support_filter_gzip(ar);
	archive_read_support_filter_zstd(ar);
	archive_read_support_format_tar(ar);
	if (archive_read_open_filename(ar, path, CHUNK) != ARCHIVE_OK) {
		archive_read_free(ar);
		return NULL;
	}
	return ar;
}

/* Normalises a member name: strips "./" prefixes. */
static const char *member_name(const char *n)
{
	while (startswith(n, "./"))
		n += 2;
	return n;
}

static struct member *find_member(struct archive_image *a, const char *name, unsigned depth)
{
	name = member_name(name);
	for (size_t i = 0; i < a->n_members; i++) {
		struct member *m = &a->members[i];

		if (!streq(m->name, name))
			continue;
		if (m->link && depth < 8)
			return find_member(a, m->link, depth + 1);
		return m->link ? NULL : m;
	}
	return NULL;
}

/* Scans a docker save archive: hashes every member, keeps small .json members. */
static int scan_docker_archive(struct archive_image *a, struct error *err)
{
	_cleanup_free_ char *buf = malloc(CHUNK);
	struct archive *ar = open_archive(a->path);
	struct archive_entry *e;
	int r = 0, k;

	if (!buf || !ar) {
		if (ar)
			archive_read_free(ar);
		return error_set(err, buf ? -EIO : -ENOMEM, "cannot open '%s'", a->path);
	}
	while ((k = archive_read_next_header(ar, &e)) == ARCHIVE_OK) {
		_cleanup_(sha256_freep) struct sha256 *h = NULL;
		struct member *m;
		const char *link;
		mode_t type = archive_entry_filetype(e);

		if (type != AE_IFREG && type != AE_IFLNK)
			continue;
		if (a->n_members >= MAX_MEMBERS) {
			r = -EFBIG;
			break;
		}
		if (a->n_members % 64 == 0) {
			struct member *nm = realloc(a->members, (a->n_members + 64) * sizeof(*nm));

			if (!nm) {
				r = -ENOMEM;
				break;
			}
			a->members = nm;
		}
		m = &a->members[a->n_members++];
		memset(m, 0, sizeof(*m));
		m->name = strdup(member_name(archive_entry_pathname(e)));
		link = archive_entry_hardlink(e);
		if (!link && type == AE_IFLNK) {
			/* a symlink member names a sibling relative to its directory */
			const char *target = archive_entry_symlink(e);
			const char *slash = m->name ? strrchr(m->name, '/') : NULL;
			char *joined = NULL;

			if (target && slash && !startswith(target, "../") &&
			    asprintf(&joined, "%.*s/%s", (int)(slash - m->name), m->name, target) >=
			        0)
				m->link = joined;
			else if (target && startswith(target, "../"))
				m->link = strdup(target + 3);
			else if (target)
				m->link = strdup(target);
		} else if (link) {
			m->link = strdup(link);
		}
		if (!m->name) {
			r = -ENOMEM;
			break;
		}
		if (m->link)
			continue;
		h = sha256_new();
		if (!h) {
			r = -ENOMEM;
			break;
		}
		for (;;) {
			la_ssize_t n = archive_read_data(ar, buf, CHUNK);

			if (n < 0) {
				r = -EBADMSG;
				break;
			}
			if (n == 0)
				break;
			if (m->size < sizeof(m->magic))
				memcpy(m->magic + m->size, buf,
				       MIN(sizeof(m->magic) - (size_t)m->size, (size_t)n));
			if (strstr(m->name, ".json") &&
			    m->body_len + (size_t)n <= CONFIG_MAX_SIZE) {
				char *nb = realloc(m->body, m->body_len + (size_t)n + 1);

				if (!nb) {
					r = -ENOMEM;
					break;
				}
				m->body = nb;
				memcpy(m->body + m->body_len, buf, (size_t)n);
				m->body_len += (size_t)n;
				m->body[m->body_len] = '\0';
			}
			sha256_update(h, buf, (size_t)n);
			m->size += (uint64_t)n;
		}
		if (r < 0)
			break;
		sha256_final(h, m->digest);
	}
	if (r == 0 && k != ARCHIVE_EOF)
		r = -EBADMSG;
	if (r == -EBADMSG)
		error_set(err, r, "'%s': %s", a->path,
		          archive_error_string(ar) ? archive_error_string(ar) : "corrupt archive");
	else if (r == -EFBIG)
		error_set(err, r, "'%s': more than %u members", a->path, MAX_MEMBERS);
	archive_read_free(ar);
	return r;
}

static int open_docker_archive(struct archive_image *a, const char *want, struct error *err)
{
	_cleanup_free_ const char **types = NULL;
	struct member *mf, *cm;
	json_t *root, *img = NULL, *layers;
	json_error_t jerr;
	size_t i, n_imgs;
	int r;

	r = scan_docker_archive(a, err);
	if (r < 0)
		return r;
	mf = find_member(a, "manifest.json", 0);
	if (!mf || !mf->body)
		return error_set(err, -EINVAL,
		                 "'%s' is not a docker save archive (no manifest.json)", a->path);
	root = json_loadb(mf->body, mf->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_array(root)) {
		r = error_set(err, -EINVAL, "'%s': manifest.json: %s", a->path,
		              root ? "not an array" : jerr.text);
		json_decref(root);
		return r;
	}
	n_imgs = json_array_size(root);
	for (i = 0; i < n_imgs && !img; i++) {
		json_t *it = json_array_get(root, i), *tag;
		size_t j;

		if (!want) {
			img = n_imgs == 1 ? it : NULL;
			break;
		}
		json_array_foreach(json_object_get(it, "RepoTags"), j, tag)
		{
			const char *s = json_string_value(tag);

			if (s && (streq(s, want) || (startswith(want, "docker.io/") &&
			                             streq(s, want + strlen("docker.io/")))))
				img = it;
		}
	}
	if (!img) {
		if (want)
			r = error_set(err, -ENOENT, "'%s' has no image tagged '%s'", a->path, want);
		else
			r = error_set(err, -ENOENT,
			              "'%s' holds %zu images: name one with docker-archive:%s:REF",
			              a->path, n_imgs, a->path);
		json_decref(root);
		return r;
	}
	cm = json_string_value(json_object_get(img, "Config"))
	         ? find_member(a, json_string_value(json_object_get(img, "Config")), 0)
	         : NULL;
	layers = json_object_get(img, "Layers");
	if (!cm || !cm->body || !json_is_array(layers) || json_array_size(layers) == 0 ||
	    json_array_size(layers) > MANIFEST_MAX_LAYERS) {
		r = error_set(err, -EINVAL, "'%s': manifest.json names no usable config or layers",
		              a->path);
		json_decref(root);
		return r;
	}
	a->config = malloc(cm->body_len + 1);
	a->layers = calloc(json_array_size(layers), sizeof(*a->layers));
	types = calloc(json_array_size(layers), sizeof(*types));
	if (!a->config || !a->layers || !types) {
		json_decref(root);
		return -ENOMEM;
	}
	memcpy(a->config, cm->body, cm->body_len + 1);
	a->config_len = cm->body_len;
	memcpy(a->config_digest, cm->digest, sizeof(a->config_digest));
	for (i = 0; i < json_array_size(layers); i++) {
		const char *name = json_string_value(json_array_get(layers, i));
		struct member *lm = name ? find_member(a, name, 0) : NULL;

		if (!lm || !(types[i] = layer_media_type(lm->magic, MIN(lm->size, (uint64_t)4)))) {
			r = error_set(err, -EINVAL, "'%s': layer '%s' is missing or unsupported",
			              a->path, name ? name : "?");
			json_decref(root);
			return r;
		}
		memcpy(a->layers[i].digest, lm->digest, sizeof(lm->digest));
		a->layers[i].size = lm->size;
		a->layers[i].member = lm->name;
		a->n_layers++;
	}
	json_decref(root);
	return synthesise_manifest(a, types);
}

int archive_image_open(const char *path, bool docker_archive, const char *ref_in_archive,
                       struct archive_image **ret, struct error *err)
{
	_cleanup_(archive_image_freep) struct archive_image *a = calloc(1, sizeof(*a));
	int r;

	if (!a || !(a->path = strdup(path)))
		return -ENOMEM;
	r = docker_archive ? open_docker_archive(a, ref_in_archive, err) : open_tarball(a, err);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(a);
	return 0;
}

const char *archive_image_manifest_digest(const struct archive_image *a)
{
	return a->manifest_digest;
}

int archive_image_get_mem(const struct archive_image *a, const char *digest, char **ret_body,
                          size_t *ret_len)
{
	const char *src;
	size_t len;

	if (streq(digest, a->manifest_digest)) {
		src = a->manifest;
		len = a->manifest_len;
	} else if (streq(digest, a->config_digest)) {
		src = a->config;
		len = a->config_len;
	} else {
		return -ENOENT;
	}
	*ret_body = malloc(len + 1);
	if (!*ret_body)
		return -ENOMEM;
	memcpy(*ret_body, src, len + 1);
	*ret_len = len;
	return 0;
}

static int deliver(const char *buf, size_t n, uint64_t *pos, uint64_t offset, registry_data_fn fn,
                   void *userdata)
{
	uint64_t skip = *pos < offset ? MIN(offset - *pos, (uint64_t)n) : 0;

	*pos += n;
	if (skip == n)
		return 0;
	return fn(buf + skip, n - (size_t)skip, userdata);
}

int archive_image_get_layer(const struct archive_image *a, const char *digest, uint64_t offset,
                            registry_data_fn fn, void *userdata, struct error *err)
{
	_cleanup_free_ char *buf = malloc(CHUNK);
	const struct layer *l = NULL;
	struct archive *ar;
	struct archive_entry *e;
	uint64_t pos = 0;
	int r = -ENOENT;

	for (size_t i = 0; i < a->n_layers && !l; i++)
		if (streq(a->layers[i].digest, digest))
			l = &a->layers[i];
	if (!l || !buf)
		return l ? -ENOMEM : -ENOENT;
	if (!l->member) {
		_cleanup_close_ int fd = open(a->path, O_RDONLY | O_CLOEXEC);

		if (fd < 0) {
			r = -errno;
			return error_set(err, r, "cannot open '%s': %s", a->path, strerror(-r));
		}
		for (pos = offset;;) {
			ssize_t n = pread_full(fd, buf, CHUNK, (off_t)pos);

			if (n <= 0)
				return (int)n;
			r = fn(buf, (size_t)n, userdata);
			if (r < 0)
				return r;
			pos += (uint64_t)n;
		}
	}
	ar = open_archive(a->path);
	if (!ar)
		return error_set(err, -EIO, "cannot open '%s'", a->path);
	while (archive_read_next_header(ar, &e) == ARCHIVE_OK) {
		if (!streq(member_name(archive_entry_pathname(e)), l->member))
			continue;
		for (r = 0;;) {
			la_ssize_t n = archive_read_data(ar, buf, CHUNK);

			if (n < 0) {
				r = error_set(err, -EBADMSG, "'%s': %s", a->path,
				              archive_error_string(ar));
			}
			if (n <= 0)
				break;
			r = deliver(buf, (size_t)n, &pos, offset, fn, userdata);
			if (r < 0)
				break;
		}
		break;
	}
	archive_read_free(ar);
	return r;
}
