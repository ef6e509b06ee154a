/* The Additional Layer Store's filesystem; see layerstore.h. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include "common/log.h"
#include "fsd/image/als.h"
#include "fsd/layerstore.h"

#define SLOT(ino) ((uint32_t)((ino) >> 32))
#define LOCAL(ino) ((uint32_t)(ino))
#define MAX_REFS (LS_LAYER_BASE - 2)
#define MAX_LAYERS ((UINT32_MAX - LS_LAYER_BASE) / 4)
#define SAVE_MAGIC "imgfs-layer-store 1"

enum ref_state {
	REF_UNRESOLVED,
	REF_RESOLVING,
	REF_RESOLVED,
	REF_FAILED,
};

/* A resolution's image, kept for its blob reader. */
struct image_rec {
	struct ls_image im;
};

struct ls_ref;

struct ls_layer {
	struct ls_ref *ref;
	uint32_t g; /* its number among all layers */
	char digest[DIGEST_STR_LEN + 1];
	char manifest[DIGEST_STR_LEN + 1]; /* the image it was resolved from */
	/* NULL (and info, img too) for a layer restored and not resolved again yet; set once
	 * under ls->lock, never changed after */
	struct imgfs *fs;
	char *info;
	size_t info_len;
	uint64_t blob_size;
	struct image_rec *img; /* whose read_blob serves it, as layer idx */
	size_t idx;
	uint64_t uses; /* podman's references; protected by ls->lock */
};

struct ls_ref {
	uint32_t r;
	char *name, *b64;
	enum ref_state state;  /* protected by ls->lock, as everything below */
	uint64_t failed_ms;    /* when the last resolution failed */
	uint64_t refreshed_ms; /* when a fresh resolution was last made */
	bool ever_used;        /* a layer was `use`d once */
	struct ls_layer **layers;
	size_t n_layers;
	struct image_rec **imgs;
	size_t n_imgs;
	/* Restored (layerstore_restore()): the manifests of its layers not resolved again */
	char **pending;
	size_t n_pending;
};

struct layerstore {
	struct layerstore_opts o;
	pthread_mutex_t lock; /* protects the arrays, ref states, uses */
	pthread_cond_t resolved;
	struct ls_ref **refs;
	size_t n_refs;
	struct ls_layer **layers;
	size_t n_layers;
	struct timespec started;
};

enum node_kind {
	NODE_ROOT,
	NODE_REF,
	NODE_LAYER,
	NODE_INFO,
	NODE_BLOB,
	NODE_DIFF, /* inside a layer's diff/ (its root included) */
};

struct node {
	enum node_kind kind;
	struct ls_ref *ref;
	struct ls_layer *layer;
	uint64_t inner; /* NODE_DIFF: the layer filesystem's inode */
};

struct ls_file {
	enum node_kind kind;
	struct ls_layer *layer;
	struct imgfs_file *f;
};

struct ls_dir {
	struct node n;
	struct imgfs_dir *d;
};

int layerstore_new(const struct layerstore_opts *o, struct layerstore **ret)
{
	struct layerstore *ls = calloc(1, sizeof(*ls));

	if (!ls)
		return -ENOMEM;
	ls->o = *o;
	pthread_mutex_init(&ls->lock, NULL);
	pthread_cond_init(&ls->resolved, NULL);
	clock_gettime(CLOCK_REALTIME, &ls->started);
	*ret = ls;
	return 0;
}

static void free_image(struct image_rec *rec)
{
	if (!rec)
		return;
	for (size_t i = 0; i < rec->im.n_layers; i++) {
		struct ls_layer_desc *d = &rec->im.layers[i];

		if (d->lower.ops && d->lower.ops->close)
			d->lower.ops->close(d->lower.data);
		free(d->info);
	}
	free(rec->im.layers);
	if (rec->im.free)
		rec->im.free(rec->im.ctx);
	free(rec);
}

/* Frees every reference and layer. */
static void clear(struct layerstore *ls)
{
	for (size_t g = 0; g < ls->n_layers; g++) {
		if (ls->layers[g]->fs)
			imgfs_free(ls->layers[g]->fs);
		free(ls->layers[g]->info);
		free(ls->layers[g]);
	}
	free(ls->layers);
	for (size_t r = 0; r < ls->n_refs; r++) {
		struct ls_ref *ref = ls->refs[r];

		for (size_t i = 0; i < ref->n_imgs; i++)
			free_image(ref->imgs[i]);
		free(ref->imgs);
		for (size_t i = 0; i < ref->n_pending; i++)
			free(ref->pending[i]);
		free(ref->pending);
		free(ref->layers);
		free(ref->name);
		free(ref->b64);
		free(ref);
	}
	free(ls->refs);
	ls->refs = NULL;
	ls->layers = NULL;
	ls->n_refs = ls->n_layers = 0;
}

void layerstore_free(struct layerstore *ls)
{
	if (!ls)
		return;
	clear(ls);
	pthread_cond_destroy(&ls->resolved);
	pthread_mutex_destroy(&ls->lock);
	free(ls);
}

/* ---- inode numbers ---- */

static uint64_t ref_ino(const struct ls_ref *ref)
{
	return 2u + ref->r;
}

static uint64_t layer_ino(const struct ls_layer *l, enum node_kind kind)
{
	uint64_t base = LS_LAYER_BASE + 4ull * l->g;

	return kind == NODE_INFO ? base + 1 : kind == NODE_BLOB ? base + 2 : base;
}

static uint64_t diff_ino(const struct ls_layer *l, uint64_t inner)
{
	return ((uint64_t)(l->g + 1) << 32) | (inner & UINT32_MAX);
}

static int settle_ref(struct layerstore *ls, struct ls_ref *ref, const struct ls_layer *l);

/* What inode ino is, with the lock held; -ESTALE when it names nothing (yet). */
static int node_locked(struct layerstore *ls, uint64_t ino, struct node *ret)
{
	uint32_t slot = SLOT(ino), local = LOCAL(ino);
	int r = 0;

	if (slot > 0) {
		if (slot - 1 >= ls->n_layers || local == 0)
			r = -ESTALE;
		else
			*ret = (struct node){NODE_DIFF, ls->layers[slot - 1]->ref,
			                     ls->layers[slot - 1], local};
	} else if (local == LS_ROOT_INO) {
		*ret = (struct node){.kind = NODE_ROOT};
	} else if (local >= 2 && local < LS_LAYER_BASE) {
		if (local - 2 >= ls->n_refs ||
		    (!ls->refs[local - 2]->n_imgs && !ls->refs[local - 2]->n_pending))
			r = -ESTALE;
		else
			*ret = (struct node){.kind = NODE_REF, .ref = ls->refs[local - 2]};
	} else if (local >= LS_LAYER_BASE) {
		uint32_t g = (local - LS_LAYER_BASE) / 4, k = (local - LS_LAYER_BASE) % 4;

		if (g >= ls->n_layers || k == 3)
			r = -ESTALE;
		else
			*ret = (struct node){k == 0   ? NODE_LAYER
			                     : k == 1 ? NODE_INFO
			                              : NODE_BLOB,
			                     ls->layers[g]->ref, ls->layers[g], 0};
	} else {
		r = -ESTALE;
	}
	return r;
}

/* Whether n is restored and not resolved again: a layer without its filesystem, or a
 * reference with none of its images. */
static bool unsettled(const struct node *n)
{
	if (n->layer)
		return !n->layer->fs;
	return n->ref && !n->ref->n_imgs && n->ref->n_pending;
}

/* What inode ino is; -ESTALE when it names nothing (yet). settle: a restored reference or
 * layer is resolved again first (-EIO when that fails); else it may come back unresolved
 * (its layer's fs NULL). */
static int node_get(struct layerstore *ls, uint64_t ino, bool settle, struct node *ret)
{
	int r;

	pthread_mutex_lock(&ls->lock);
	r = node_locked(ls, ino, ret);
	if (r == 0 && settle && unsettled(ret)) {
		r = settle_ref(ls, ret->ref, ret->layer);
		/* the arrays may have grown meanwhile */
		if (r == 0)
			r = node_locked(ls, ino, ret);
		if (r == 0 && unsettled(ret))
			r = -EIO;
	}
	pthread_mutex_unlock(&ls->lock);
	return r;
}

static int node_of(struct layerstore *ls, uint64_t ino, struct node *ret)
{
	return node_get(ls, ino, true, ret);
}

/* ---- attributes ---- */

static void synthetic_stat(struct layerstore *ls, uint64_t ino, mode_t mode, uint64_t size,
                           struct stat *ret)
{
	*ret = (struct stat){
	    .st_ino = ino,
	    .st_mode = mode,
	    .st_nlink = S_ISDIR(mode) ? 2 : 1,
	    .st_uid = geteuid(), /* the store's own files are its owner's */
	    .st_gid = getegid(),
	    .st_size = (off_t)size,
	    .st_blksize = 4096,
	    .st_blocks = (blkcnt_t)((size + 511) / 512),
	    .st_atim = ls->started,
	    .st_mtim = ls->started,
	    .st_ctim = ls->started,
	};
}

static int diff_getattr(const struct ls_layer *l, uint64_t inner, struct stat *ret)
{
	int r = l->fs ? imgfs_getattr(l->fs, inner, ret) : -EIO;

	if (r < 0)
		return r;
	ret->st_ino = diff_ino(l, ret->st_ino);
	return 0;
}

static int node_stat(struct layerstore *ls, const struct node *n, struct stat *ret)
{
	switch (n->kind) {
	case NODE_ROOT:
		/* Only root (podman, CRI-O) may look names up: each one can start a pull. */
		synthetic_stat(ls, LS_ROOT_INO, S_IFDIR | 0700, 4096, ret);
		return 0;
	case NODE_REF:
		synthetic_stat(ls, ref_ino(n->ref), S_IFDIR | 0755, 4096, ret);
		return 0;
	case NODE_LAYER:
		synthetic_stat(ls, layer_ino(n->layer, NODE_LAYER), S_IFDIR | 0755, 4096, ret);
		return 0;
	case NODE_INFO:
		synthetic_stat(ls, layer_ino(n->layer, NODE_INFO), S_IFREG | 0444,
		               n->layer->info_len, ret);
		return 0;
	case NODE_BLOB:
		synthetic_stat(ls, layer_ino(n->layer, NODE_BLOB), S_IFREG | 0444,
		               n->layer->blob_size, ret);
		return 0;
	case NODE_DIFF:
		return diff_getattr(n->layer, n->inner, ret);
	}
	return -EIO;
}

int layerstore_getattr(struct layerstore *ls, uint64_t ino, struct stat *ret)
{
	struct node n;
	int r = node_of(ls, ino, &n);

	return r < 0 ? r : node_stat(ls, &n, ret);
}

static int synthetic_entry(struct layerstore *ls, const struct node *n, struct imgfs_entry *ret)
{
	int r = node_stat(ls, n, &ret->st);

	if (r < 0)
		return r;
	ret->ino = ret->st.st_ino;
	ret->generation = 0;
	return 0;
}

/* ---- resolution ---- */

static uint64_t now_ms(void)
{
	return monotonic_ms();
}

static struct ls_ref *find_ref(struct layerstore *ls, const char *b64)
{
	for (size_t r = 0; r < ls->n_refs; r++)
		if (streq(ls->refs[r]->b64, b64))
			return ls->refs[r];
	return NULL;
}

static struct ls_layer *find_layer(const struct ls_ref *ref, const char *digest)
{
	for (size_t i = 0; i < ref->n_layers; i++)
		if (streq(ref->layers[i]->digest, digest))
			return ref->layers[i];
	return NULL;
}

/* Makes the layers of a resolved image part of ref (those it does not have yet); takes
 * rec over. Called with the lock held. */
static int attach(struct layerstore *ls, struct ls_ref *ref, struct image_rec *rec)
{
	struct image_rec **imgs;
	struct ls_layer **all, **mine;
	size_t n = rec->im.n_layers;

	imgs = reallocarray(ref->imgs, ref->n_imgs + 1, sizeof(*imgs));
	if (!imgs)
		goto nomem;
	ref->imgs = imgs;
	mine = reallocarray(ref->layers, ref->n_layers + n + 1, sizeof(*mine));
	if (!mine)
		goto nomem;
	ref->layers = mine;
	all = reallocarray(ls->layers, ls->n_layers + n + 1, sizeof(*all));
	if (!all)
		goto nomem;
	ls->layers = all;
	if (ls->n_layers + n > MAX_LAYERS)
		goto nomem;
	ref->imgs[ref->n_imgs++] = rec;
	for (size_t i = 0; i < n; i++) {
		struct ls_layer_desc *d = &rec->im.layers[i];
		struct ls_layer *l = find_layer(ref, d->digest);
		struct imgfs *fs;
		bool restored = l != NULL;
		int r;

		if (l && l->fs)
			continue;
		/* a layer restored unresolved keeps its number: it is filled in */
		if (!l) {
			l = calloc(1, sizeof(*l));
			if (!l)
				return -ENOMEM;
		}
		r = imgfs_new(&d->lower, &(struct imgfs_opts){.no_security_labels = true}, &fs);
		d->lower = (struct lower){0}; /* taken, also on failure */
		if (r < 0) {
			if (!restored)
				free(l);
			return r;
		}
		l->info = TAKE_PTR(d->info);
		l->info_len = d->info_len;
		l->blob_size = d->blob_size;
		l->img = rec;
		l->idx = i;
		l->fs = fs;
		if (restored)
			continue;
		l->ref = ref;
		l->g = (uint32_t)ls->n_layers;
		memcpy(l->digest, d->digest, sizeof(l->digest));
		memcpy(l->manifest, rec->im.manifest, sizeof(l->manifest));
		ls->layers[ls->n_layers++] = l;
		ref->layers[ref->n_layers++] = l;
	}
	return 0;
nomem:
	free_image(rec);
	return -ENOMEM;
}

/* Drops manifest from ref's restored images still to resolve. */
static void settled(struct ls_ref *ref, const char *manifest)
{
	for (size_t i = 0; i < ref->n_pending; i++) {
		if (!streq(ref->pending[i], manifest))
			continue;
		free(ref->pending[i]);
		ref->pending[i] = ref->pending[--ref->n_pending];
		return;
	}
}

/* Resolves ref (manifest: at that image, a restored one; fresh: ask again for a moved tag)
 * with the lock held, dropping it while the resolver runs; the caller has set ref->state
 * to REF_RESOLVING. */
static int resolve_locked(struct layerstore *ls, struct ls_ref *ref, const char *manifest,
                          bool fresh)
{
	struct image_rec *rec = calloc(1, sizeof(*rec));
	char pinned[DIGEST_STR_LEN + 1] = "", got[DIGEST_STR_LEN + 1] = "";
	int r;

	if (!rec) {
		ref->state = ref->n_imgs ? REF_RESOLVED : REF_UNRESOLVED;
		pthread_cond_broadcast(&ls->resolved);
		return -ENOMEM;
	}
	if (manifest)
		snprintf(pinned, sizeof(pinned), "%s", manifest);
	pthread_mutex_unlock(&ls->lock);
	r = ls->o.resolve(ls->o.userdata, ref->name, manifest ? pinned : NULL, fresh, &rec->im);
	pthread_mutex_lock(&ls->lock);
	if (r >= 0)
		memcpy(got, rec->im.manifest, sizeof(got));
	if (r < 0)
		free(rec);
	else
		r = attach(ls, ref, rec);
	if (r < 0) {
		ref->failed_ms = now_ms();
		ref->state = ref->n_imgs      ? REF_RESOLVED
		             : ref->n_pending ? REF_UNRESOLVED
		                              : REF_FAILED;
	} else {
		ref->state = REF_RESOLVED;
		settled(ref, got);
		if (manifest)
			settled(ref, pinned);
	}
	if (fresh)
		ref->refreshed_ms = now_ms();
	pthread_cond_broadcast(&ls->resolved);
	return r;
}

static int new_ref(struct layerstore *ls, const char *b64, struct ls_ref **ret)
{
	_cleanup_free_ char *name = NULL;
	struct ls_ref **refs, *ref;
	int r;

	r = als_ref_decode(b64, &name);
	if (r < 0)
		return r == -EINVAL ? -ENOENT : r;
	if (ls->n_refs >= MAX_REFS)
		return -ENOSPC;
	refs = reallocarray(ls->refs, ls->n_refs + 1, sizeof(*refs));
	if (!refs)
		return -ENOMEM;
	ls->refs = refs;
	ref = calloc(1, sizeof(*ref));
	if (!ref)
		return -ENOMEM;
	ref->b64 = strdup(b64);
	if (!ref->b64) {
		free(ref);
		return -ENOMEM;
	}
	ref->name = TAKE_PTR(name);
	ref->r = (uint32_t)ls->n_refs;
	ls->refs[ls->n_refs++] = ref;
	*ret = ref;
	return 0;
}

static bool is_pending(const struct ls_ref *ref, const char *manifest)
{
	for (size_t i = 0; i < ref->n_pending; i++)
		if (streq(ref->pending[i], manifest))
			return true;
	return false;
}

/* Resolves again, with the lock held (dropped while resolving), the image restored layer l
 * of ref came from, or (l NULL) one of ref's restored images when it has none resolved;
 * waits for a resolution in progress. A failure is not tried again within
 * LS_FAILURE_TTL_MS. */
static int settle_ref(struct layerstore *ls, struct ls_ref *ref, const struct ls_layer *l)
{
	for (;;) {
		const char *want;

		if (ref->state == REF_RESOLVING) {
			pthread_cond_wait(&ls->resolved, &ls->lock);
			continue;
		}
		if (l)
			want = is_pending(ref, l->manifest) ? l->manifest : NULL;
		else
			want = !ref->n_imgs && ref->n_pending ? ref->pending[0] : NULL;
		if (!want)
			return 0;
		if (ref->failed_ms && now_ms() - ref->failed_ms < LS_FAILURE_TTL_MS)
			return -EIO;
		ref->state = REF_RESOLVING;
		if (resolve_locked(ls, ref, want, false) < 0)
			return -EIO;
	}
}

/* The reference named b64 in the root, resolved (waiting for a resolution in progress,
 * making one when none was made or the last failed long enough ago). */
static int lookup_ref(struct layerstore *ls, const char *b64, struct ls_ref **ret)
{
	struct ls_ref *ref;
	bool notify = false;
	int r = 0;

	pthread_mutex_lock(&ls->lock);
	ref = find_ref(ls, b64);
	if (!ref)
		r = new_ref(ls, b64, &ref);
	while (r == 0) {
		if (ref->state == REF_RESOLVING) {
			pthread_cond_wait(&ls->resolved, &ls->lock);
			continue;
		}
		if (!ref->n_imgs && ref->n_pending) {
			/* restored: served from those images before, so from them again */
			r = settle_ref(ls, ref, NULL) < 0 ? -ENOENT : 0;
			continue;
		}
		if (ref->state == REF_RESOLVED)
			break;
		if (ref->state == REF_FAILED && now_ms() - ref->failed_ms < LS_FAILURE_TTL_MS) {
			r = -ENOENT;
			break;
		}
		ref->state = REF_RESOLVING;
		r = resolve_locked(ls, ref, NULL, false);
		r = r < 0 ? -ENOENT : 0;
		notify = r == 0;
	}
	pthread_mutex_unlock(&ls->lock);
	if (notify && ls->o.changed)
		ls->o.changed(ls->o.userdata);
	if (r == 0)
		*ret = ref;
	return r;
}

/* Layer digest of a resolved ref; when it has none of that digest, one fresh resolution
 * (a tag that moved since a resolution from the store) per LS_FAILURE_TTL_MS. */
static int lookup_layer(struct layerstore *ls, struct ls_ref *ref, const char *digest,
                        struct ls_layer **ret)
{
	struct ls_layer *l;
	bool notify = false;

	if (!digest_valid(digest))
		return -ENOENT;
	pthread_mutex_lock(&ls->lock);
	for (;;) {
		l = find_layer(ref, digest);
		if (l)
			break;
		if (ref->state == REF_RESOLVING) {
			pthread_cond_wait(&ls->resolved, &ls->lock);
			continue;
		}
		if (ref->refreshed_ms && now_ms() - ref->refreshed_ms < LS_FAILURE_TTL_MS)
			break;
		ref->state = REF_RESOLVING;
		notify = resolve_locked(ls, ref, NULL, true) >= 0;
	}
	pthread_mutex_unlock(&ls->lock);
	if (notify && ls->o.changed)
		ls->o.changed(ls->o.userdata);
	if (!l) {
		log_msg(LOG_INFO, "%s: %s is not one of its layers", ref->name, digest);
		return -ENOENT;
	}
	*ret = l;
	return 0;
}

/* ---- the namespace ---- */

int layerstore_lookup(struct layerstore *ls, uint64_t parent, const char *name,
                      struct imgfs_entry *ret)
{
	struct node p, n = {0};
	struct ls_layer *l;
	struct ls_ref *ref = NULL;
	int r;

	r = node_of(ls, parent, &p);
	if (r < 0)
		return r;
	switch (p.kind) {
	case NODE_ROOT:
		if (streq(name, ".") || streq(name, ".."))
			return synthetic_entry(ls, &p, ret);
		r = lookup_ref(ls, name, &ref);
		if (r < 0)
			return r;
		n = (struct node){.kind = NODE_REF, .ref = ref};
		return synthetic_entry(ls, &n, ret);
	case NODE_REF:
		if (streq(name, "."))
			return synthetic_entry(ls, &p, ret);
		if (streq(name, ".."))
			return synthetic_entry(ls, &(struct node){.kind = NODE_ROOT}, ret);
		r = lookup_layer(ls, p.ref, name, &l);
		if (r < 0)
			return r;
		n = (struct node){NODE_LAYER, p.ref, l, 0};
		return synthetic_entry(ls, &n, ret);
	case NODE_LAYER:
		if (streq(name, "."))
			return synthetic_entry(ls, &p, ret);
		if (streq(name, ".."))
			return synthetic_entry(ls, &(struct node){.kind = NODE_REF, .ref = p.ref},
			                       ret);
		switch (als_entry_of(name)) {
		case ALS_INFO:
			n = (struct node){NODE_INFO, p.ref, p.layer, 0};
			return synthetic_entry(ls, &n, ret);
		case ALS_BLOB:
			n = (struct node){NODE_BLOB, p.ref, p.layer, 0};
			return synthetic_entry(ls, &n, ret);
		case ALS_DIFF:
			r = imgfs_lookup(p.layer->fs, IMGFS_ROOT_INO, ".", ret);
			break;
		default:
			return -ENOENT;
		}
		break;
	case NODE_DIFF:
		if (p.inner == IMGFS_ROOT_INO && streq(name, ".."))
			return synthetic_entry(ls, &(struct node){NODE_LAYER, p.ref, p.layer, 0},
			                       ret);
		r = imgfs_lookup(p.layer->fs, p.inner, name, ret);
		break;
	default:
		return -ENOTDIR;
	}
	if (r < 0)
		return r;
	ret->ino = diff_ino(p.layer, ret->ino);
	ret->st.st_ino = diff_ino(p.layer, ret->st.st_ino);
	return 0;
}

void layerstore_forget(struct layerstore *ls, uint64_t ino, uint64_t nlookup)
{
	struct node n;

	/* a restored layer not resolved again knows nothing to forget */
	if (node_get(ls, ino, false, &n) == 0 && n.kind == NODE_DIFF && n.layer->fs)
		imgfs_forget(n.layer->fs, n.inner, nlookup);
}

int layerstore_readlink(struct layerstore *ls, uint64_t ino, char *buf, size_t size)
{
	struct node n;
	int r = node_of(ls, ino, &n);

	if (r < 0)
		return r;
	if (n.kind != NODE_DIFF)
		return -EINVAL;
	return imgfs_readlink(n.layer->fs, n.inner, buf, size);
}

int layerstore_open(struct layerstore *ls, uint64_t ino, int flags, struct ls_file **ret)
{
	_cleanup_free_ struct ls_file *f = NULL;
	struct node n;
	int r;

	r = node_of(ls, ino, &n);
	if (r < 0)
		return r;
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		return -EROFS;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->kind = n.kind;
	f->layer = n.layer;
	switch (n.kind) {
	case NODE_INFO:
	case NODE_BLOB:
		break;
	case NODE_DIFF:
		r = imgfs_open(n.layer->fs, n.inner, flags, &f->f);
		if (r < 0)
			return r;
		break;
	default:
		return -EISDIR;
	}
	*ret = TAKE_PTR(f);
	return 0;
}

ssize_t layerstore_read(struct layerstore *ls, struct ls_file *f, void *buf, size_t size,
                        uint64_t off)
{
	struct ls_layer *l = f->layer;
	size_t done = 0;

	(void)ls;
	switch (f->kind) {
	case NODE_INFO:
		if (off >= l->info_len)
			return 0;
		size = MIN(size, l->info_len - (size_t)off);
		memcpy(buf, l->info + off, size);
		return (ssize_t)size;
	case NODE_BLOB:
		if (off >= l->blob_size)
			return 0;
		size = (size_t)MIN((uint64_t)size, l->blob_size - off);
		while (done < size) {
			ssize_t n = l->img->im.read_blob(l->img->im.ctx, l->idx, (char *)buf + done,
			                                 size - done, off + done);

			if (n < 0)
				return n;
			if (n == 0)
				break;
			done += (size_t)n;
		}
		return (ssize_t)done;
	case NODE_DIFF:
		return imgfs_read(l->fs, f->f, buf, size, off);
	default:
		return -EISDIR;
	}
}

void layerstore_release(struct layerstore *ls, struct ls_file *f)
{
	(void)ls;
	if (!f)
		return;
	if (f->f)
		imgfs_release(f->layer->fs, f->f);
	free(f);
}

int layerstore_opendir(struct layerstore *ls, uint64_t ino, struct ls_dir **ret)
{
	_cleanup_free_ struct ls_dir *d = calloc(1, sizeof(*d));
	int r;

	if (!d)
		return -ENOMEM;
	r = node_of(ls, ino, &d->n);
	if (r < 0)
		return r;
	if (d->n.kind == NODE_INFO || d->n.kind == NODE_BLOB)
		return -ENOTDIR;
	if (d->n.kind == NODE_DIFF) {
		r = imgfs_opendir(d->n.layer->fs, d->n.inner, &d->d);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(d);
	return 0;
}

struct diff_walk {
	const struct ls_layer *l;
	imgfs_dirent_fn fn;
	void *userdata;
};

static int diff_dirent(const char *name, const struct imgfs_entry *ent, uint64_t next_off,
                       void *userdata)
{
	struct diff_walk *w = userdata;
	struct imgfs_entry e = *ent;

	if (e.ino)
		e.ino = diff_ino(w->l, e.ino);
	e.st.st_ino = diff_ino(w->l, e.st.st_ino);
	return w->fn(name, &e, next_off, w->userdata);
}

/* Child i of a synthetic directory, with the lock held: 0 and its name and stat, or 1 at
 * the end. */
static int synthetic_child(struct layerstore *ls, const struct node *dir, size_t i,
                           const char **ret_name, struct stat *ret_st)
{
	struct node n = {0};
	size_t k = 0;

	switch (dir->kind) {
	case NODE_ROOT:
		for (size_t r = 0; r < ls->n_refs; r++) {
			if ((!ls->refs[r]->n_imgs && !ls->refs[r]->n_pending) || k++ != i)
				continue;
			n = (struct node){.kind = NODE_REF, .ref = ls->refs[r]};
			*ret_name = ls->refs[r]->b64;
			return node_stat(ls, &n, ret_st);
		}
		return 1;
	case NODE_REF:
		if (i >= dir->ref->n_layers)
			return 1;
		n = (struct node){NODE_LAYER, dir->ref, dir->ref->layers[i], 0};
		*ret_name = dir->ref->layers[i]->digest;
		return node_stat(ls, &n, ret_st);
	case NODE_LAYER: {
		static const char *const names[] = {"blob", "diff", "info"};

		if (i >= ARRAY_SIZE(names))
			return 1;
		*ret_name = names[i];
		if (i == 1)
			return diff_getattr(dir->layer, IMGFS_ROOT_INO, ret_st);
		n = (struct node){i == 0 ? NODE_BLOB : NODE_INFO, dir->ref, dir->layer, 0};
		return node_stat(ls, &n, ret_st);
	}
	default:
		return -ENOTDIR;
	}
}

int layerstore_readdir(struct layerstore *ls, struct ls_dir *d, uint64_t off, imgfs_dirent_fn fn,
                       void *userdata)
{
	struct imgfs_entry e = {0};
	int r = 0;

	if (d->n.kind == NODE_DIFF) {
		struct diff_walk w = {d->n.layer, fn, userdata};

		return imgfs_readdir(d->n.layer->fs, d->d, off, false, diff_dirent, &w);
	}
	for (; off < 2; off++) {
		e.st.st_mode = S_IFDIR;
		e.st.st_ino =
		    LS_ROOT_INO; /* a placeholder: readdir's "." and ".." are not looked up */
		if (fn(off == 0 ? "." : "..", &e, off + 1, userdata))
			return 0;
	}
	pthread_mutex_lock(&ls->lock);
	for (;; off++) {
		const char *name = NULL;
		struct stat st;

		r = synthetic_child(ls, &d->n, off - 2, &name, &st);
		if (r != 0)
			break;
		e.st = st;
		if (fn(name, &e, off + 1, userdata))
			break;
	}
	pthread_mutex_unlock(&ls->lock);
	return r < 0 ? r : 0;
}

void layerstore_releasedir(struct layerstore *ls, struct ls_dir *d)
{
	(void)ls;
	if (!d)
		return;
	if (d->d)
		imgfs_releasedir(d->n.layer->fs, d->d);
	free(d);
}

ssize_t layerstore_getxattr(struct layerstore *ls, uint64_t ino, const char *name, void *buf,
                            size_t size)
{
	struct node n;
	int r = node_of(ls, ino, &n);

	if (r < 0)
		return r;
	if (n.kind != NODE_DIFF)
		return -ENODATA;
	return imgfs_getxattr(n.layer->fs, n.inner, name, buf, size);
}

ssize_t layerstore_listxattr(struct layerstore *ls, uint64_t ino, char *buf, size_t size)
{
	struct node n;
	int r = node_of(ls, ino, &n);

	if (r < 0)
		return r;
	if (n.kind != NODE_DIFF)
		return 0;
	return imgfs_listxattr(n.layer->fs, n.inner, buf, size);
}

int layerstore_statfs(struct layerstore *ls, uint64_t ino, struct statvfs *ret)
{
	(void)ls;
	(void)ino;
	*ret = (struct statvfs){.f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255};
	return 0;
}

int layerstore_create(struct layerstore *ls, uint64_t parent, const char *name)
{
	struct node p;
	uint64_t uses;
	int r = node_of(ls, parent, &p);

	if (r < 0)
		return r;
	if (p.kind != NODE_LAYER || als_entry_of(name) != ALS_USE)
		return -EROFS;
	pthread_mutex_lock(&ls->lock);
	uses = ++p.layer->uses;
	p.ref->ever_used = true;
	pthread_mutex_unlock(&ls->lock);
	log_msg(LOG_INFO, "%s: %s used (%" PRIu64 ")", p.ref->name, p.layer->digest, uses);
	if (ls->o.changed)
		ls->o.changed(ls->o.userdata);
	return -ENOENT;
}

int layerstore_rmdir(struct layerstore *ls, uint64_t parent, const char *name)
{
	struct node p;
	struct ls_layer *l;
	uint64_t uses = 0;
	int r = node_of(ls, parent, &p);

	if (r < 0)
		return r;
	if (p.kind != NODE_REF)
		return -EROFS;
	pthread_mutex_lock(&ls->lock);
	l = find_layer(p.ref, name);
	if (l && l->uses > 0)
		uses = --l->uses;
	pthread_mutex_unlock(&ls->lock);
	if (!l)
		return -ENOENT;
	log_msg(LOG_INFO, "%s: %s released (%" PRIu64 ")", p.ref->name, l->digest, uses);
	if (ls->o.changed)
		ls->o.changed(ls->o.userdata);
	return -ENOENT;
}

void layerstore_for_each_layer(struct layerstore *ls, ls_layer_fn fn, void *userdata)
{
	pthread_mutex_lock(&ls->lock);
	for (size_t g = 0; g < ls->n_layers; g++)
		fn(ls->layers[g]->ref->name, ls->layers[g]->digest, ls->layers[g]->uses, userdata);
	pthread_mutex_unlock(&ls->lock);
}

int layerstore_held_manifests(struct layerstore *ls, char ***ret, size_t *ret_n)
{
	char **out = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	pthread_mutex_lock(&ls->lock);
	for (size_t i = 0; i < ls->n_refs && r == 0; i++) {
		struct ls_ref *ref = ls->refs[i];
		uint64_t uses = 0;

		for (size_t k = 0; k < ref->n_layers; k++)
			uses += ref->layers[k]->uses;
		if (uses == 0 && ref->ever_used)
			continue;
		for (size_t k = 0; k < ref->n_imgs + ref->n_pending && r == 0; k++) {
			const char *m = k < ref->n_imgs ? ref->imgs[k]->im.manifest
			                                : ref->pending[k - ref->n_imgs];

			if (n == cap) {
				char **p = reallocarray(out, cap ? cap * 2 : 8, sizeof(*p));

				if (!p) {
					r = -ENOMEM;
					break;
				}
				out = p;
				cap = cap ? cap * 2 : 8;
			}
			out[n] = strdup(m);
			if (!out[n])
				r = -ENOMEM;
			else
				n++;
		}
	}
	pthread_mutex_unlock(&ls->lock);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(out[i]);
		free(out);
		return r;
	}
	*ret = out;
	*ret_n = n;
	return 0;
}

/* ---- the table that lasts across processes ---- */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_printf(struct buf *b, const char *fmt, ...) _printf_(2, 3);
static int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -EINVAL;
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return 0;
		}
		size_t cap = MAX(b->cap * 2, b->len + (size_t)n + 256);
		char *p = realloc(b->p, cap);

		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
}

/* SAVE_MAGIC, then a line per reference in number order, `ref USED BASE64`, then a line
 * per layer in number order, `layer REF MANIFEST DIGEST USES` (REF: the reference's
 * number). */
int layerstore_save(struct layerstore *ls, char **ret, size_t *ret_len)
{
	struct buf b = {0};
	int r;

	pthread_mutex_lock(&ls->lock);
	r = buf_printf(&b, "%s\n", SAVE_MAGIC);
	for (size_t i = 0; r >= 0 && i < ls->n_refs; i++)
		r = buf_printf(&b, "ref %d %s\n", ls->refs[i]->ever_used, ls->refs[i]->b64);
	for (size_t g = 0; r >= 0 && g < ls->n_layers; g++) {
		const struct ls_layer *l = ls->layers[g];

		r = buf_printf(&b, "layer %" PRIu32 " %s %s %" PRIu64 "\n", l->ref->r, l->manifest,
		               l->digest, l->uses);
	}
	pthread_mutex_unlock(&ls->lock);
	if (r < 0) {
		free(b.p);
		return r;
	}
	*ret = b.p;
	*ret_len = b.len;
	return 0;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EBADMSG;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EBADMSG;
	*ret = v;
	return 0;
}

static int add_pending(struct ls_ref *ref, const char *manifest)
{
	char **p;

	for (size_t i = 0; i < ref->n_pending; i++)
		if (streq(ref->pending[i], manifest))
			return 0;
	p = reallocarray(ref->pending, ref->n_pending + 1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	ref->pending = p;
	p[ref->n_pending] = strdup(manifest);
	if (!p[ref->n_pending])
		return -ENOMEM;
	ref->n_pending++;
	return 0;
}

/* One line of a saved table (NUL-terminated, without its newline), with the lock held. */
static int restore_line(struct layerstore *ls, char *line)
{
	char *f[6] = {0}, *save = NULL;
	size_t n = 0;
	uint64_t v = 0, uses = 0;
	struct ls_ref *ref;
	struct ls_layer *l, **all, **mine;
	int r;

	for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		if (n == ARRAY_SIZE(f))
			return -EBADMSG;
		f[n++] = t;
	}
	if (n == 3 && streq(f[0], "ref")) {
		if (parse_u64(f[1], 1, &v) < 0 || find_ref(ls, f[2]))
			return -EBADMSG;
		r = new_ref(ls, f[2], &ref);
		if (r < 0)
			return r == -ENOENT ? -EBADMSG : r;
		ref->ever_used = v;
		return 0;
	}
	if (n != 5 || !streq(f[0], "layer") || parse_u64(f[1], UINT32_MAX, &v) < 0 ||
	    v >= ls->n_refs || !digest_valid(f[2]) || !digest_valid(f[3]) ||
	    strlen(f[2]) > DIGEST_STR_LEN || strlen(f[3]) > DIGEST_STR_LEN ||
	    parse_u64(f[4], UINT64_MAX, &uses) < 0 || ls->n_layers >= MAX_LAYERS)
		return -EBADMSG;
	ref = ls->refs[v];
	if (find_layer(ref, f[3]))
		return -EBADMSG;
	all = reallocarray(ls->layers, ls->n_layers + 1, sizeof(*all));
	if (!all)
		return -ENOMEM;
	ls->layers = all;
	mine = reallocarray(ref->layers, ref->n_layers + 1, sizeof(*mine));
	if (!mine)
		return -ENOMEM;
	ref->layers = mine;
	r = add_pending(ref, f[2]);
	if (r < 0)
		return r;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ref = ref;
	l->g = (uint32_t)ls->n_layers;
	snprintf(l->digest, sizeof(l->digest), "%s", f[3]);
	snprintf(l->manifest, sizeof(l->manifest), "%s", f[2]);
	l->uses = uses;
	ls->layers[ls->n_layers++] = l;
	ref->layers[ref->n_layers++] = l;
	return 0;
}

int layerstore_restore(struct layerstore *ls, const char *text, size_t len)
{
	_cleanup_free_ char *copy = NULL;
	char *line, *next;
	int r = 0;

	if (len < strlen(SAVE_MAGIC) + 1 || memchr(text, '\0', len) ||
	    memcmp(text, SAVE_MAGIC "\n", strlen(SAVE_MAGIC) + 1) != 0)
		return -EBADMSG;
	copy = strndup(text, len);
	if (!copy)
		return -ENOMEM;
	pthread_mutex_lock(&ls->lock);
	if (ls->n_refs || ls->n_layers)
		r = -EBUSY;
	for (line = copy + strlen(SAVE_MAGIC) + 1; r >= 0 && *line; line = next) {
		next = strchr(line, '\n');
		if (!next) {
			r = -EBADMSG; /* cut short */
			break;
		}
		*next++ = '\0';
		r = restore_line(ls, line);
	}
	if (r < 0 && r != -EBUSY)
		clear(ls);
	pthread_mutex_unlock(&ls->lock);
	return r;
}
