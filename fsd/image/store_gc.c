/* Garbage collection of the store: marks what refs and the caller's roots reach, then sweeps
 * blobs/, idx/, trees/, tmp/ and the root's stray temporary files. The contract is
 * store_gc() in store.h. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "fsd/index/unitcache.h"
#include "store.h"
#include "store_internal.h"

#define GC_MAX_DEPTH 8

struct digest_set {
	char (*hex)[DIGEST_HEX_LEN + 1];
	size_t n, cap;
	bool sorted; /* after marking: looked up by bsearch */
};

static int hex_cmp(const void *a, const void *b)
{
	return memcmp(a, b, DIGEST_HEX_LEN);
}

static bool set_has(const struct digest_set *set, const char *hex)
{
	if (set->n == 0)
		return false; /* bsearch may not be handed a NULL array, even an empty one */
	if (set->sorted)
		return bsearch(hex, set->hex, set->n, sizeof(*set->hex), hex_cmp) != NULL;
	for (size_t i = 0; i < set->n; i++)
		if (memcmp(set->hex[i], hex, DIGEST_HEX_LEN) == 0)
			return true;
	return false;
}

/* Adds hex; returns 1 when it was new. */
static int set_add(struct digest_set *set, const char *hex)
{
	if (set_has(set, hex))
		return 0;
	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 64;
		void *p = realloc(set->hex, cap * sizeof(*set->hex));

		if (!p)
			return -ENOMEM;
		set->hex = p;
		set->cap = cap;
	}
	memcpy(set->hex[set->n], hex, DIGEST_HEX_LEN);
	set->hex[set->n][DIGEST_HEX_LEN] = '\0';
	set->n++;
	return 1;
}

static int mark_digest(struct store *s, struct digest_set *set, const char *digest, int depth);

/* Marks every descriptor found in a JSON document (config, layers, manifests, subject…),
 * so that artifacts of other tools survive as well as our images. */
static int mark_json(struct store *s, struct digest_set *set, json_t *j, int depth)
{
	const char *key;
	json_t *v;
	size_t i;
	int r;

	if (json_is_array(j)) {
		json_array_foreach(j, i, v)
		{
			r = mark_json(s, set, v, depth);
			if (r < 0)
				return r;
		}
		return 0;
	}
	if (!json_is_object(j))
		return 0;
	if (json_is_string(json_object_get(j, "mediaType")) &&
	    digest_valid(store_json_str(j, "digest"))) {
		r = mark_digest(s, set, store_json_str(j, "digest"), depth + 1);
		if (r < 0)
			return r;
	}
	json_object_foreach(j, key, v)
	{
		if (json_is_object(v) || json_is_array(v)) {
			r = mark_json(s, set, v, depth);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int mark_digest(struct store *s, struct digest_set *set, const char *digest, int depth)
{
	_cleanup_free_ char *buf = NULL;
	json_auto_t *j = NULL;
	json_error_t jerr;
	size_t len = 0;
	int r;

	r = set_add(set, digest_hex(digest));
	if (r <= 0)
		return r;
	if (depth > GC_MAX_DEPTH)
		return 0;
	/* Manifests and indexes are small JSON; layers are not read (they fail the size cap or
	 * the parse cheaply: only the first bytes are inspected). */
	{
		char path[128], first;
		_cleanup_close_ int fd = -1;

		store_path("blobs", digest, path, sizeof(path));
		fd = openat(s->root_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || pread(fd, &first, 1, 0) != 1 || first != '{')
			return 0;
	}
	if (store_read_blob(s, digest, MANIFEST_MAX_SIZE, &buf, &len) < 0)
		return 0;
	j = json_loadb(buf, len, 0, &jerr);
	if (!j)
		return 0;
	/* Only manifests and indexes reference blobs; a config is a leaf. */
	if (!json_object_get(j, "layers") && !json_object_get(j, "manifests") &&
	    !json_object_get(j, "blobs") && !json_object_get(j, "subject"))
		return 0;
	return mark_json(s, set, j, depth);
}

/* Opens directory dir of the store for readdir: 0 and *ret (closedir()), 0 and *ret NULL
 * when there is no such directory, or -errno. */
static int open_dir(struct store *s, const char *dir, DIR **ret)
{
	_cleanup_close_ int dfd = openat(s->root_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (dfd < 0) {
		if (errno != ENOENT)
			return -errno;
		*ret = NULL;
		return 0;
	}
	d = fdopendir(dfd);
	if (!d)
		return -errno;
	TAKE_FD(dfd);
	*ret = d;
	return 0;
}

struct mark_ctx {
	struct store *s;
	struct digest_set *set;
};

static int mark_root(const char *digest, void *userdata)
{
	struct mark_ctx *m = userdata;

	return digest_valid(digest) ? mark_digest(m->s, m->set, digest, 0) : -EINVAL;
}

struct sweep {
	struct store *s;
	struct digest_set *live;
	unsigned removed;
	uint64_t bytes;
};

static bool is_hex64(const char *name, size_t len)
{
	if (len < DIGEST_HEX_LEN)
		return false;
	for (size_t i = 0; i < DIGEST_HEX_LEN; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return false;
	return true;
}

enum sweep_kind {
	SWEEP_BLOBS, /* HEX */
	SWEEP_IDX,   /* HEX, HEX.zst, HEX.spans */
	SWEEP_TREES, /* HEX */
	SWEEP_TMP,   /* HEX.partial and HEX.lazy unless locked, anything else */
	SWEEP_CACHE, /* HEX: a layer's decoded units (fsd/index/unitcache.h) */
};

static bool keep_entry(struct sweep *sw, enum sweep_kind kind, int dfd, const char *name)
{
	size_t len = strlen(name);

	switch (kind) {
	case SWEEP_BLOBS:
	case SWEEP_TREES:
	case SWEEP_CACHE:
		return len == DIGEST_HEX_LEN && is_hex64(name, len) && set_has(sw->live, name);
	case SWEEP_IDX:
		return is_hex64(name, len) &&
		       (len == DIGEST_HEX_LEN || streq(name + DIGEST_HEX_LEN, ".zst") ||
		        streq(name + DIGEST_HEX_LEN, ".spans")) &&
		       set_has(sw->live, name);
	case SWEEP_TMP: {
		_cleanup_close_ int fd = -1;

		if (!(len > 8 && streq(name + len - 8, ".partial")) &&
		    !(len > 5 && streq(name + len - 5, ".lazy")))
			return false;
		fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		/* A partial being written is locked by its pull; a lazy blob by every mount
		 * that serves it. */
		return fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0;
	}
	}
	return true;
}

static int sweep_dir(struct sweep *sw, const char *dir, enum sweep_kind kind)
{
	DIR *d;
	struct dirent *de;
	int r;

	r = open_dir(sw->s, dir, &d);
	if (r < 0 || !d)
		return r;
	while ((errno = 0, de = readdir(d))) {
		struct stat st;

		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (keep_entry(sw, kind, dirfd(d), de->d_name))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int sub = openat(
			    dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			int k;

			/* A layer's decoded units: their bytes count, not the directory's. */
			if (sub >= 0 && kind == SWEEP_CACHE)
				st.st_size = (off_t)unitcache_dir_bytes(sub);
			k = rm_rf_at(dirfd(d), de->d_name);
			if (k < 0 && r == 0)
				r = k;
		} else if (unlinkat(dirfd(d), de->d_name, 0) < 0) {
			if (errno != ENOENT && r == 0)
				r = -errno;
			continue;
		}
		sw->removed++;
		sw->bytes += (uint64_t)st.st_size;
	}
	closedir(d);
	if (r == 0)
		r = fsync_dir_at(sw->s->root_fd, dir);
	return r;
}

/* Removes the temporary files a killed writer of index.json or oci-layout left in the
 * root (write_file_atomic's ".NAME.tmp-PID-RAND"). Writers of index.json hold the index
 * lock, taken here too; oci-layout is written only by a store_open() that found it
 * missing, and gc's own store_open() made sure it is there. */
static int sweep_root_temps(struct sweep *sw)
{
	_cleanup_close_ int lfd = -1;
	DIR *d;
	struct dirent *de;
	int r;

	r = store_open_index_lock(sw->s, &lfd);
	if (r < 0)
		return r;
	r = open_dir(sw->s, ".", &d);
	if (r < 0)
		return r;
	if (!d)
		return -ENOENT; /* the root itself is gone */
	while ((errno = 0, de = readdir(d))) {
		struct stat st;

		if (!startswith(de->d_name, ".index.json.tmp-") &&
		    !startswith(de->d_name, ".oci-layout.tmp-"))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || unlinkat(dirfd(d), de->d_name, 0) < 0)
			continue;
		sw->removed++;
		sw->bytes += (uint64_t)st.st_size;
	}
	closedir(d);
	return 0;
}

int store_gc(struct store *s, store_roots_fn roots, unsigned *ret_removed, uint64_t *ret_bytes)
{
	struct digest_set live = {0};
	struct mark_ctx mark = {s, &live};
	struct sweep sw = {.s = s, .live = &live};
	json_auto_t *root = NULL;
	json_t *manifests;
	int r;

	r = store_flock_retry(s->lock_fd, LOCK_EX);
	if (r < 0)
		return r;
	r = store_index_load(s, &root);
	if (r < 0)
		goto out;
	/* Every entry of index.json is a root, named or not, ours or another tool's. */
	manifests = json_object_get(root, "manifests");
	for (size_t i = 0; r >= 0 && i < json_array_size(manifests); i++) {
		const char *digest = store_json_str(json_array_get(manifests, i), "digest");

		if (digest_valid(digest))
			r = mark_digest(s, &live, digest, 0);
	}
	if (r >= 0 && roots)
		r = roots(s, mark_root, &mark);
	if (r < 0)
		goto out;
	if (live.n)
		qsort(live.hex, live.n, sizeof(*live.hex), hex_cmp);
	live.sorted = true;
	r = sweep_dir(&sw, "blobs/sha256", SWEEP_BLOBS);
	if (r >= 0)
		r = sweep_dir(&sw, "idx/sha256", SWEEP_IDX);
	if (r >= 0)
		r = sweep_dir(&sw, "trees/sha256", SWEEP_TREES);
	if (r >= 0)
		r = sweep_dir(&sw, "tmp", SWEEP_TMP);
	if (r >= 0)
		r = sweep_dir(&sw, "cache/sha256", SWEEP_CACHE);
	if (r >= 0)
		r = sweep_root_temps(&sw);
	if (r >= 0) {
		if (ret_removed)
			*ret_removed = sw.removed;
		if (ret_bytes)
			*ret_bytes = sw.bytes;
	}
out:
	free(live.hex);
	flock(s->lock_fd, LOCK_UN);
	return r;
}
