/* The OCI-layout store. The layout is what skopeo, umoci and oras read; idx/, trees/,
 * mounts/, tmp/ and the two lock files are ours and ignored by them. Garbage collection is
 * in store_gc.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/index/unitcache.h"
#include "spans.h"
#include "store.h"
#include "store_internal.h"

#define ANNOTATION_REF "org.opencontainers.image.ref.name"
#define ANNOTATION_IMGFS_REF "io.imgfs.ref.name"
#define INDEX_MAX_SIZE (64u << 20)
#define REF_NAME_MAX 4096

static const char *const store_dirs[] = {"blobs/sha256", "idx/sha256", "trees/sha256", "mounts",
                                         "tmp"};

int store_flock_retry(int fd, int op)
{
	while (flock(fd, op) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

void store_free(struct store *s)
{
	if (!s)
		return;
	if (s->root_fd >= 0)
		close(s->root_fd);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	unitcache_free(s->ucache);
	free(s->root);
	free(s);
}

int store_unit_cache_max(uint64_t *ret)
{
	const char *v = getenv("IMGFS_CACHE_MAX");
	unsigned long long n;
	char *end;

	*ret = UNITCACHE_DEFAULT_MAX;
	if (!v || !*v)
		return 0;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || v[0] == '-')
		return -EINVAL;
	switch (*end) {
	case 'K':
	case 'k':
		n = n > UINT64_MAX >> 10 ? UINT64_MAX : n << 10;
		end++;
		break;
	case 'M':
	case 'm':
		n = n > UINT64_MAX >> 20 ? UINT64_MAX : n << 20;
		end++;
		break;
	case 'G':
	case 'g':
		n = n > UINT64_MAX >> 30 ? UINT64_MAX : n << 30;
		end++;
		break;
	}
	if (*end)
		return -EINVAL;
	*ret = n;
	return 0;
}

void store_enable_unit_cache(struct store *s)
{
	_cleanup_close_ int fd = -1;
	uint64_t max;
	int r;

	if (s->ucache)
		return;
	r = store_unit_cache_max(&max);
	if (r < 0) {
		log_msg(LOG_WARNING,
		        "IMGFS_CACHE_MAX='%s' is not a size: the decoded-data cache is off",
		        getenv("IMGFS_CACHE_MAX"));
		return;
	}
	if (max == 0)
		return;
	r = mkdir_p_at(s->root_fd, "cache/sha256", 0755);
	if (r >= 0) {
		fd = openat(s->root_fd, "cache/sha256",
		            O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		r = fd < 0 ? -errno : unitcache_open(fd, max, &s->ucache);
	}
	if (r < 0)
		log_errno(LOG_WARNING, r, "cannot use the decoded-data cache in '%s/cache'",
		          s->root);
}

/* Disk usage of everything under dirfd (no symlinks followed, one filesystem). */
static uint64_t du_at(int dirfd, int depth)
{
	DIR *d;
	struct dirent *de;
	uint64_t bytes = 0;

	if (depth > 8 || opendir_fd(dirfd, &d) < 0)
		return 0;
	while ((de = readdir(d))) {
		struct stat st;

		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		bytes += (uint64_t)st.st_blocks * 512;
		if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int sub = openat(
			    dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0)
				bytes += du_at(sub, depth + 1);
		}
	}
	closedir(d);
	return bytes;
}

uint64_t store_disk_bytes(struct store *s)
{
	static const char *const dirs[] = {"blobs", "idx", "trees", "tmp", "cache"};
	uint64_t bytes = 0;

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		_cleanup_close_ int fd =
		    openat(s->root_fd, dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

		if (fd >= 0)
			bytes += du_at(fd, 0);
	}
	return bytes;
}

uint64_t store_unit_cache_bytes(struct store *s)
{
	_cleanup_close_ int fd =
	    openat(s->root_fd, "cache/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	return fd < 0 ? 0 : unitcache_dir_bytes(fd);
}

const char *store_path(const char *kind, const char *digest, char *buf, size_t size)
{
	int n;

	if (!digest_valid(digest))
		goto bad;
	n = snprintf(buf, size, "%s/sha256/%s", kind, digest_hex(digest));
	if (n < 0 || (size_t)n >= size)
		goto bad;
	return buf;
bad:
	if (size)
		buf[0] = '\0';
	return NULL;
}

/* idx/sha256/HEX.SUFFIX, a file kept beside a layer's index: ".zst", the seekable zstd copy
 * of a zstd layer; ".spans", its span table. */
static const char *idx_file_path(const char *digest, const char *suffix, char *buf, size_t size)
{
	char idx[128];
	int n;

	if (!store_path("idx", digest, idx, sizeof(idx)))
		return NULL;
	n = snprintf(buf, size, "%s%s", idx, suffix);
	return n >= 0 && (size_t)n < size ? buf : NULL;
}

int store_open_index_lock(struct store *s, int *ret_fd)
{
	_cleanup_close_ int fd =
	    openat(s->root_fd, "index.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	int r;

	if (fd < 0)
		return -errno;
	r = store_flock_retry(fd, LOCK_EX);
	if (r < 0)
		return r;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static int write_json_atomic(struct store *s, const char *path, json_t *j)
{
	_cleanup_free_ char *buf = json_dumps(j, JSON_COMPACT);

	if (!buf)
		return -ENOMEM;
	return write_file_atomic(s->root_fd, path, buf, strlen(buf), 0644);
}

static json_t *empty_index(void)
{
	return json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
	                 "manifests");
}

int store_index_load(struct store *s, json_t **ret)
{
	_cleanup_free_ char *buf = NULL;
	json_error_t jerr;
	json_t *root, *manifests;
	size_t len = 0;
	int r;

	r = read_file_full(s->root_fd, "index.json", INDEX_MAX_SIZE, &buf, &len);
	if (r == -ENOENT) {
		root = empty_index();
		if (!root)
			return -ENOMEM;
		*ret = root;
		return 0;
	}
	if (r < 0)
		return r;
	root = json_loadb(buf, len, 0, &jerr);
	if (!root)
		return -EBADMSG;
	manifests = json_object_get(root, "manifests");
	if (!json_is_object(root) || (manifests && !json_is_array(manifests))) {
		json_decref(root);
		return -EBADMSG;
	}
	if (!manifests && json_object_set_new(root, "manifests", json_array()) < 0) {
		json_decref(root);
		return -ENOMEM;
	}
	*ret = root;
	return 0;
}

static int ensure_layout(struct store *s)
{
	_cleanup_free_ char *buf = NULL;
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	_cleanup_close_ int lfd = -1;
	json_error_t jerr;
	json_t *j;
	bool ok;
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(store_dirs); i++) {
		r = mkdir_p_at(s->root_fd, store_dirs[i], 0755);
		if (r < 0)
			return r;
	}
	r = read_file_full(s->root_fd, "oci-layout", 4096, &buf, NULL);
	if (r == -ENOENT) {
		r = write_file_atomic(s->root_fd, "oci-layout", layout, strlen(layout), 0644);
		if (r < 0)
			return r;
	} else if (r < 0) {
		return r;
	} else {
		j = json_loads(buf, 0, &jerr);
		ok = j && json_is_string(json_object_get(j, "imageLayoutVersion")) &&
		     startswith(json_string_value(json_object_get(j, "imageLayoutVersion")), "1.");
		json_decref(j);
		if (!ok)
			return -EPROTONOSUPPORT;
	}
	if (faccessat(s->root_fd, "index.json", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	r = store_open_index_lock(s, &lfd);
	if (r < 0)
		return r;
	if (faccessat(s->root_fd, "index.json", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	j = empty_index();
	if (!j)
		return -ENOMEM;
	r = write_json_atomic(s, "index.json", j);
	json_decref(j);
	return r;
}

static int open_layer_index(void *ctx, const char *digest, unsigned flags, struct li_index **ret)
{
	return store_open_layer_index(ctx, digest, flags, ret);
}

int store_open(const char *root, struct store **ret)
{
	_cleanup_(store_freep) struct store *s = NULL;
	int r;

	if (!root || !*root)
		return -EINVAL;
	r = mkdir_p_at(AT_FDCWD, root, 0700);
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->root_fd = s->lock_fd = -1;
	s->layer_opener = (struct li_opener){.open = open_layer_index, .ctx = s};
	s->root = strdup(root);
	if (!s->root)
		return -ENOMEM;
	s->root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->root_fd < 0)
		return -errno;
	r = ensure_layout(s);
	if (r < 0)
		return r;
	s->lock_fd = openat(s->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (s->lock_fd < 0)
		return -errno;
	*ret = TAKE_PTR(s);
	return 0;
}

int store_reopen_lock(struct store *s)
{
	int fd = openat(s->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);

	if (fd < 0)
		return -errno;
	close(s->lock_fd);
	s->lock_fd = fd;
	return 0;
}

int store_lock_shared(struct store *s)
{
	return store_flock_retry(s->lock_fd, LOCK_SH);
}

void store_unlock(struct store *s)
{
	(void)flock(s->lock_fd, LOCK_UN);
}

int store_default_root(char **ret)
{
	const char *e = getenv("IMGFS_ROOT");
	char *r;

	if (e && *e)
		r = strdup(e);
	else if (geteuid() == 0)
		r = strdup("/var/lib/imgfs");
	else if ((e = getenv("XDG_DATA_HOME")) && e[0] == '/')
		r = path_join(e, "imgfs");
	else if ((e = getenv("HOME")) && e[0] == '/')
		r = path_join(e, ".local/share/imgfs");
	else
		return -ENOENT;
	if (!r)
		return -ENOMEM;
	*ret = r;
	return 0;
}

/* Blobs */

bool store_has_blob(struct store *s, const char *digest)
{
	char path[128];
	struct stat st;

	if (!store_path("blobs", digest, path, sizeof(path)))
		return false;
	return fstatat(s->root_fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* Opens path below the root read-only. */
static int open_file(struct store *s, const char *path, int *ret_fd)
{
	int fd = openat(s->root_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

int store_open_blob(struct store *s, const char *digest, int *ret_fd)
{
	char path[128];

	if (!store_path("blobs", digest, path, sizeof(path)))
		return -EINVAL;
	return open_file(s, path, ret_fd);
}

int store_read_blob(struct store *s, const char *digest, size_t max, char **ret_buf,
                    size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	char path[128], got[DIGEST_STR_LEN + 1];
	size_t len = 0;
	int r;

	if (!store_path("blobs", digest, path, sizeof(path)))
		return -EINVAL;
	r = read_file_full(s->root_fd, path, max, &buf, &len);
	if (r < 0)
		return r;
	/* Small blobs are checked again: a flipped bit in a manifest must not become a
	 * different image. */
	sha256_buf(buf, len, got);
	if (!streq(got, digest))
		return -EBADMSG;
	*ret_buf = TAKE_PTR(buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

int store_put_blob(struct store *s, const char *digest, const void *buf, size_t len)
{
	char path[128], got[DIGEST_STR_LEN + 1];

	if (!store_path("blobs", digest, path, sizeof(path)))
		return -EINVAL;
	sha256_buf(buf, len, got);
	if (!streq(got, digest))
		return -EBADMSG;
	if (store_has_blob(s, digest))
		return 0;
	return write_file_atomic(s->root_fd, path, buf, len, 0644);
}

/* Layer indexes */

int store_open_layer_index_data(struct store *s, const char *digest, int data_fd, unsigned flags,
                                struct li_index **ret)
{
	_cleanup_close_ int ifd = -1;
	char path[160];
	int r;

	if (!store_path("idx", digest, path, sizeof(path)))
		return -EINVAL;
	r = open_file(s, path, &ifd);
	if (r < 0)
		return r;
	r = li_open_flags(ifd, data_fd, flags, ret);
	if (r >= 0 && data_fd >= 0)
		li_set_unit_cache(*ret, s->ucache);
	return r;
}

int store_open_layer_index(struct store *s, const char *digest, unsigned flags,
                           struct li_index **ret)
{
	_cleanup_close_ int ifd = -1, dfd = -1;
	enum li_compression comp;
	char path[160];
	int r;

	if (!store_path("idx", digest, path, sizeof(path)))
		return -EINVAL;
	r = open_file(s, path, &ifd);
	if (r < 0)
		return r;
	if (!(flags & LI_OPEN_NO_DATA)) {
		r = li_peek_compression(ifd, &comp);
		if (r < 0)
			return r;
		if (comp == LI_ZSTD)
			r = open_file(s, idx_file_path(digest, ".zst", path, sizeof(path)), &dfd);
		else
			r = store_open_blob(s, digest, &dfd);
		if (r < 0)
			return r;
	}
	r = li_open_flags(ifd, dfd, flags, ret);
	if (r >= 0 && dfd >= 0)
		li_set_unit_cache(*ret, s->ucache);
	return r;
}

const struct li_opener *store_layer_opener(struct store *s)
{
	return &s->layer_opener;
}

bool store_has_index(struct store *s, const char *digest)
{
	char path[128];

	if (!store_path("idx", digest, path, sizeof(path)))
		return false;
	return faccessat(s->root_fd, path, F_OK, 0) == 0;
}

int store_open_zst_temp(struct store *s, const char *digest, char *name, size_t size, int *ret_fd)
{
	int fd;

	if (!digest_valid(digest))
		return -EINVAL;
	snprintf(name, size, "tmp/%s.zst.%d", digest_hex(digest), (int)getpid());
	fd = openat(s->root_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

void store_discard_temp(struct store *s, const char *name)
{
	unlinkat(s->root_fd, name, 0);
}

int store_put_index(struct store *s, const char *digest, const void *buf, size_t len, int zst_fd,
                    const char *zst_name)
{
	char path[128];

	if (!store_path("idx", digest, path, sizeof(path)))
		return -EINVAL;
	if (zst_fd >= 0) {
		char zpath[140];

		if (fsync(zst_fd) < 0)
			return -errno;
		idx_file_path(digest, ".zst", zpath, sizeof(zpath));
		if (renameat(s->root_fd, zst_name, s->root_fd, zpath) < 0)
			return -errno;
	}
	return write_file_atomic(s->root_fd, path, buf, len, 0644);
}

/* Trees */

bool store_has_tree(struct store *s, const char *manifest_digest)
{
	char path[128];

	if (!store_path("trees", manifest_digest, path, sizeof(path)))
		return false;
	return faccessat(s->root_fd, path, F_OK, 0) == 0;
}

int store_put_tree(struct store *s, const char *manifest_digest, const void *buf, size_t len)
{
	char path[128];

	if (!store_path("trees", manifest_digest, path, sizeof(path)))
		return -EINVAL;
	return write_file_atomic(s->root_fd, path, buf, len, 0644);
}

/* Partial downloads */

const char *store_partial_path(const char *digest, char *buf, size_t size)
{
	snprintf(buf, size, "tmp/%s.partial", digest_hex(digest));
	return buf;
}

int store_open_partial(struct store *s, const char *digest, int *ret_fd, uint64_t *ret_size)
{
	char path[128];

	if (!digest_valid(digest))
		return -EINVAL;
	store_partial_path(digest, path, sizeof(path));
	for (;;) {
		_cleanup_close_ int fd = -1;
		struct stat st, st_path;
		int r;

		fd = openat(s->root_fd, path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0)
			return -errno;
		r = store_flock_retry(fd, LOCK_EX);
		if (r < 0)
			return r;
		/* The previous holder may have committed (renamed) or discarded (unlinked) the
		 * file we waited on: then lock whatever the path names now. */
		if (fstat(fd, &st) < 0)
			return -errno;
		if (fstatat(s->root_fd, path, &st_path, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			return -errno;
		}
		if (st.st_dev != st_path.st_dev || st.st_ino != st_path.st_ino)
			continue;
		if (!S_ISREG(st.st_mode))
			return -EINVAL;
		*ret_size = (uint64_t)st.st_size;
		*ret_fd = TAKE_FD(fd);
		return 0;
	}
}

/* fsyncs fd, the file at from (relative to the root) that is blob digest once renamed into
 * blobs/, and renames it there. -ESTALE when from no longer names fd. */
static int commit_file(struct store *s, const char *from, const char *digest, int fd)
{
	char to[128];
	struct stat st, st_path;
	int r;

	if (!store_path("blobs", digest, to, sizeof(to)))
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (fstatat(s->root_fd, from, &st_path, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? -ESTALE : -errno;
	if (st.st_dev != st_path.st_dev || st.st_ino != st_path.st_ino)
		return -ESTALE;
	if (fsync(fd) < 0)
		return -errno;
	if (renameat(s->root_fd, from, s->root_fd, to) < 0)
		return errno == ENOENT ? -ESTALE : -errno; /* another process was first */
	r = fsync_dir_at(s->root_fd, "blobs/sha256");
	if (r < 0)
		return r;
	return fsync_dir_at(s->root_fd, "tmp");
}

int store_commit_partial(struct store *s, const char *digest, int fd)
{
	char from[128];

	if (!digest_valid(digest))
		return -EINVAL;
	return commit_file(s, store_partial_path(digest, from, sizeof(from)), digest, fd);
}

static const char *lazy_path(const char *digest, char *buf, size_t size)
{
	snprintf(buf, size, "tmp/%s.lazy", digest_hex(digest));
	return buf;
}

int store_open_lazy(struct store *s, const char *digest, uint64_t size, int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	char path[128];
	struct stat st;
	int r;

	if (!digest_valid(digest) || size > INT64_MAX)
		return -EINVAL;
	lazy_path(digest, path, sizeof(path));
	fd = openat(s->root_fd, path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	r = store_flock_retry(fd, LOCK_SH);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size != size && ftruncate(fd, (off_t)size) < 0)
		return -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int store_commit_lazy(struct store *s, const char *digest, int fd)
{
	char from[128];

	if (!digest_valid(digest))
		return -EINVAL;
	return commit_file(s, lazy_path(digest, from, sizeof(from)), digest, fd);
}

int store_discard_lazy(struct store *s, const char *digest, int fd)
{
	char path[128];
	struct stat st, st_path;

	if (!digest_valid(digest))
		return -EINVAL;
	lazy_path(digest, path, sizeof(path));
	if (fstat(fd, &st) < 0 || fstatat(s->root_fd, path, &st_path, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (st.st_dev != st_path.st_dev || st.st_ino != st_path.st_ino)
		return -ESTALE;
	if (unlinkat(s->root_fd, path, 0) < 0)
		return -errno;
	return 0;
}

int store_read_image_manifest(struct store *s, const char *digest, struct manifest **ret,
                              size_t *ret_size, struct error *err)
{
	_cleanup_free_ char *body = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	size_t len = 0;
	int r;

	r = store_read_blob(s, digest, MANIFEST_MAX_SIZE, &body, &len);
	if (r < 0)
		return error_set(err, r, "manifest %s is not in the store: %s", digest,
		                 strerror(-r));
	r = manifest_parse(body, len, NULL, &m, err);
	if (r >= 0 && m->kind != MANIFEST_IMAGE)
		r = error_set(err, -EINVAL, "%s is not an image manifest", digest);
	if (r < 0)
		return error_set(err, r, "manifest %s: %s", digest, strerror(-r));
	*ret = TAKE_PTR(m);
	if (ret_size)
		*ret_size = len;
	return 0;
}

int store_read_tree(struct store *s, const char *manifest_digest, char **ret_buf, size_t *ret_len)
{
	char path[128];

	if (!store_path("trees", manifest_digest, path, sizeof(path)))
		return -EINVAL;
	return read_file_full(s->root_fd, path, (size_t)4 << 30, ret_buf, ret_len);
}

int store_read_index(struct store *s, const char *digest, size_t max, char **ret_buf,
                     size_t *ret_len)
{
	char path[128];

	if (!store_path("idx", digest, path, sizeof(path)))
		return -EINVAL;
	return read_file_full(s->root_fd, path, max, ret_buf, ret_len);
}

int store_put_spans(struct store *s, const char *digest, const void *buf, size_t len)
{
	char path[160];

	if (!idx_file_path(digest, ".spans", path, sizeof(path)))
		return -EINVAL;
	return write_file_atomic(s->root_fd, path, buf, len, 0644);
}

int store_read_spans(struct store *s, const char *digest, void **ret_buf, size_t *ret_len)
{
	char path[160], *buf = NULL;
	int r;

	if (!idx_file_path(digest, ".spans", path, sizeof(path)))
		return -EINVAL;
	r = read_file_full(s->root_fd, path, 64u << 20, &buf, ret_len);
	if (r < 0)
		return r;
	*ret_buf = buf;
	return 0;
}

bool store_has_lazy_index(struct store *s, const char *digest)
{
	_cleanup_free_ void *have = NULL;
	size_t have_len = 0;

	if (!store_has_index(s, digest))
		return false;
	return store_has_blob(s, digest) || store_read_spans(s, digest, &have, &have_len) == 0;
}

int store_put_lazy_index_encoded(struct store *s, const char *digest, const void *index,
                                 size_t index_len, const void *table, size_t table_len,
                                 struct error *err)
{
	int r = store_put_spans(s, digest, table, table_len);

	if (r >= 0)
		r = store_put_index(s, digest, index, index_len, -1, NULL);
	if (r < 0)
		return error_set(err, r, "cannot store the index of %s: %s", digest, strerror(-r));
	return 0;
}

int store_put_lazy_index(struct store *s, const char *digest, const void *index, size_t index_len,
                         const struct spans *sp, struct error *err)
{
	_cleanup_free_ void *table = NULL;
	size_t table_len = 0;
	int r = spans_encode(sp, &table, &table_len);

	if (r < 0)
		return r;
	return store_put_lazy_index_encoded(s, digest, index, index_len, table, table_len, err);
}

int store_discard_partial(struct store *s, const char *digest)
{
	char path[128];

	if (!digest_valid(digest))
		return -EINVAL;
	store_partial_path(digest, path, sizeof(path));
	if (unlinkat(s->root_fd, path, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* Refs */

/* The grammar of org.opencontainers.image.ref.name (image-spec annotations.md), which
 * skopeo's and umoci's oci: readers enforce:
 *   ref ::= component ("/" component)*; component ::= alnum (separator alnum)*;
 *   alnum ::= [A-Za-z0-9]+; separator ::= [-._:@+] | "--" */
bool store_ref_name_valid(const char *s)
{
	bool need_alnum = true;

	if (!s || !*s)
		return false;
	for (const char *p = s; *p;) {
		char c = *p;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
			need_alnum = false;
			p++;
			continue;
		}
		if (need_alnum)
			return false;
		if (c == '-' && p[1] == '-')
			p += 2;
		else if (c == '/' || strchr("-._:@+", c))
			p++;
		else
			return false;
		need_alnum = true;
	}
	return !need_alnum;
}

int store_ref_annotation(const char *name, char **ret)
{
	char digest[DIGEST_STR_LEN + 1];
	char *out, *o;
	size_t n = 0;
	bool sep = false;

	if (!name || !*name)
		return -EINVAL;
	if (store_ref_name_valid(name)) {
		out = strdup(name);
		if (!out)
			return -ENOMEM;
		*ret = out;
		return 0;
	}
	/* Runs of alphanumerics joined by '-', then a hash of the whole name so that two names
	 * that differ only in punctuation stay apart. */
	sha256_buf(name, strlen(name), digest);
	out = malloc(96 + 1 + 16 + 1);
	if (!out)
		return -ENOMEM;
	o = out;
	for (const char *p = name; *p && n < 96; p++) {
		char c = *p;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
			if (sep && o != out) {
				*o++ = '-';
				n++;
			}
			sep = false;
			*o++ = c;
			n++;
		} else {
			sep = true;
		}
	}
	if (o != out)
		*o++ = '-';
	memcpy(o, digest_hex(digest), 16);
	o[16] = '\0';
	*ret = out;
	return 0;
}

const char *store_json_str(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The name imgfs knows an index.json entry by: our own annotation when the canonical
 * name could not be the ref.name, else the ref.name (also for entries of other tools). */
static const char *entry_name(json_t *entry)
{
	json_t *ann = json_object_get(entry, "annotations");
	const char *n;

	if (!json_is_object(ann))
		return NULL;
	n = store_json_str(ann, ANNOTATION_IMGFS_REF);
	return n ? n : store_json_str(ann, ANNOTATION_REF);
}

static const char *entry_ref_annotation(json_t *entry)
{
	return store_json_str(json_object_get(entry, "annotations"), ANNOTATION_REF);
}

static int entry_descriptor(json_t *entry, struct descriptor *ret)
{
	const char *mt = store_json_str(entry, "mediaType"),
	           *digest = store_json_str(entry, "digest");
	json_t *size = json_object_get(entry, "size");
	struct descriptor d = {0};

	if (!mt || !digest_valid(digest) || !json_is_integer(size) || json_integer_value(size) < 0)
		return -EBADMSG;
	d.media_type = strdup(mt);
	d.digest = strdup(digest);
	d.size = (uint64_t)json_integer_value(size);
	if (!d.media_type || !d.digest) {
		descriptor_clear(&d);
		return -ENOMEM;
	}
	*ret = d;
	return 0;
}

static bool ref_name_ok(const char *name)
{
	size_t n;

	if (!name)
		return false;
	n = strlen(name);
	if (n == 0 || n > REF_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return false;
	return true;
}

int store_ref_set(struct store *s, const char *name, const struct descriptor *manifest)
{
	_cleanup_close_ int lfd = -1;
	_cleanup_free_ char *ann_name = NULL;
	json_auto_t *root = NULL;
	json_t *manifests, *entry, *ann;
	size_t i, pos = SIZE_MAX;
	int r;

	if (!ref_name_ok(name) || !manifest || !manifest->media_type ||
	    !digest_valid(manifest->digest) || manifest->size > (UINT64_C(1) << 53))
		return -EINVAL;
	r = store_ref_annotation(name, &ann_name);
	if (r < 0)
		return r;
	entry = json_pack("{s:s, s:s, s:I}", "mediaType", manifest->media_type, "digest",
	                  manifest->digest, "size", (json_int_t)manifest->size);
	ann = json_object();
	if (!entry || !ann || json_object_set_new(entry, "annotations", ann) < 0) {
		json_decref(entry);
		return -ENOMEM;
	}
	if (json_object_set_new(ann, ANNOTATION_REF, json_string(ann_name)) < 0 ||
	    (!streq(ann_name, name) &&
	     json_object_set_new(ann, ANNOTATION_IMGFS_REF, json_string(name)) < 0)) {
		json_decref(entry);
		return -ENOMEM;
	}

	r = store_open_index_lock(s, &lfd);
	if (r >= 0)
		r = store_index_load(s, &root);
	if (r < 0) {
		json_decref(entry);
		return r;
	}
	manifests = json_object_get(root, "manifests");
	/* One entry per name, and one per ref.name: an entry of another tool with the same
	 * ref.name would make `oci:ROOT:NAME` ambiguous for skopeo and umoci. */
	for (i = 0; i < json_array_size(manifests);) {
		json_t *e = json_array_get(manifests, i);
		const char *en = entry_name(e), *er = entry_ref_annotation(e);

		if ((en && streq(en, name)) || (er && streq(er, ann_name))) {
			if (pos == SIZE_MAX)
				pos = i;
			json_array_remove(manifests, i);
			continue;
		}
		i++;
	}
	if (pos == SIZE_MAX)
		r = json_array_append_new(manifests, entry);
	else
		r = json_array_insert_new(manifests, pos, entry);
	if (r < 0)
		return -ENOMEM;
	return write_json_atomic(s, "index.json", root);
}

int store_ref_get(struct store *s, const char *name, struct descriptor *ret)
{
	json_auto_t *root = NULL;
	json_t *manifests;
	int r;

	if (!name)
		return -EINVAL;
	r = store_index_load(s, &root);
	if (r < 0)
		return r;
	manifests = json_object_get(root, "manifests");
	for (size_t i = 0; i < json_array_size(manifests); i++) {
		json_t *e = json_array_get(manifests, i);
		const char *en = entry_name(e);

		if (en && streq(en, name))
			return entry_descriptor(e, ret);
	}
	return -ENOENT;
}

int store_ref_remove(struct store *s, const char *name)
{
	_cleanup_close_ int lfd = -1;
	json_auto_t *root = NULL;
	json_t *manifests;
	bool found = false;
	int r;

	if (!name)
		return -EINVAL;
	r = store_open_index_lock(s, &lfd);
	if (r < 0)
		return r;
	r = store_index_load(s, &root);
	if (r < 0)
		return r;
	manifests = json_object_get(root, "manifests");
	for (size_t i = 0; i < json_array_size(manifests);) {
		const char *en = entry_name(json_array_get(manifests, i));

		if (en && streq(en, name)) {
			json_array_remove(manifests, i);
			found = true;
			continue;
		}
		i++;
	}
	if (!found)
		return -ENOENT;
	return write_json_atomic(s, "index.json", root);
}

void store_refs_free(struct store_ref *refs, size_t n)
{
	if (!refs)
		return;
	for (size_t i = 0; i < n; i++) {
		free(refs[i].name);
		descriptor_clear(&refs[i].desc);
	}
	free(refs);
}

int store_ref_list(struct store *s, struct store_ref **ret, size_t *ret_n)
{
	json_auto_t *root = NULL;
	json_t *manifests;
	struct store_ref *refs;
	size_t n = 0, cap;
	int r;

	r = store_index_load(s, &root);
	if (r < 0)
		return r;
	manifests = json_object_get(root, "manifests");
	cap = json_array_size(manifests);
	refs = calloc(cap ? cap : 1, sizeof(*refs));
	if (!refs)
		return -ENOMEM;
	for (size_t i = 0; i < cap; i++) {
		json_t *e = json_array_get(manifests, i);
		const char *en = entry_name(e);

		if (!en)
			continue; /* an unnamed entry is no ref */
		r = entry_descriptor(e, &refs[n].desc);
		if (r == -EBADMSG)
			continue; /* another tool's entry we cannot use (sha512 …) */
		if (r < 0)
			goto fail;
		refs[n].name = strdup(en);
		n++;
		if (!refs[n - 1].name) {
			r = -ENOMEM;
			goto fail;
		}
	}
	*ret = refs;
	*ret_n = n;
	return 0;
fail:
	store_refs_free(refs, n);
	return r;
}
