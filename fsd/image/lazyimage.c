/* The layers of a lazily mounted image; see lazyimage.h. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include "common/log.h"
#include "fsd/image/lazyimage.h"
#include "fsd/image/manifest.h"
#include "fsd/image/pull.h"
#include "fsd/image/registry.h"
#include "fsd/image/store.h"
#include "fsd/index/layerindex.h"

#define DEFAULT_FILL_DELAY_MS 3000
#define LAZY_RETRIES 2
#define LAZY_TIMEOUT_S 10

struct layer {
	struct lazyimage *owner;
	char digest[DIGEST_STR_LEN + 1];
	struct lazyblob *blob; /* NULL: complete in the store */
	uint64_t size;
};

struct lazyimage {
	struct store *s;
	/* lazyimage_open_image(): what it fetches from and records at the end */
	struct registry *reg;
	char *ref_name;
	struct descriptor manifest;
	struct lazyimage_opts o;
	struct layer *layers;
	size_t n;
	struct li_opener opener;
	pthread_t filler;
	bool filling;
	pthread_mutex_t lock; /* protects stop */
	bool stop;
};

/* How long the fill waits after a read had to fetch: $IMGFS_LAZY_FILL_DELAY_MS, else 3 s,
 * so that a container's start is not slowed down by bytes it does not read. */
static unsigned lazy_fill_delay_ms(void)
{
	const char *v = getenv("IMGFS_LAZY_FILL_DELAY_MS");
	char *end;
	unsigned long n;

	if (!v || !*v)
		return DEFAULT_FILL_DELAY_MS;
	n = strtoul(v, &end, 10);
	return *end || n > 3600000 ? DEFAULT_FILL_DELAY_MS : (unsigned)n;
}

static int fetch_layer(void *ctx, uint64_t off, uint64_t len, void *buf, struct error *err)
{
	struct layer *l = ctx;

	return l->owner->o.fetch(l->owner->o.ctx, l->digest, off, len, buf, err);
}

static struct layer *find(struct lazyimage *li, const char *digest)
{
	for (size_t i = 0; i < li->n; i++)
		if (streq(li->layers[i].digest, digest))
			return &li->layers[i];
	return NULL;
}

static int open_index(void *ctx, const char *digest, unsigned flags, struct li_index **ret)
{
	struct lazyimage *li = ctx;
	struct layer *l = find(li, digest);
	int r;

	if (!l || !l->blob || (flags & LI_OPEN_NO_DATA))
		return store_open_layer_index(li->s, digest, flags, ret);
	r = store_open_layer_index_data(li->s, digest, lazyblob_fd(l->blob), flags, ret);
	if (r < 0)
		return r;
	li_set_fetch(*ret, lazyblob_ensure, l->blob);
	return 0;
}

ssize_t lazyimage_read_blob(struct lazyimage *li, const char *digest, void *buf, size_t size,
                            uint64_t off)
{
	struct layer *l = find(li, digest);
	ssize_t n;
	int r;

	if (!l || !l->blob)
		return -ENOENT;
	if (off >= l->size)
		return 0;
	size = (size_t)MIN((uint64_t)size, l->size - off);
	r = lazyblob_ensure(l->blob, off, size);
	if (r < 0)
		return r;
	n = pread(lazyblob_fd(l->blob), buf, size, (off_t)off);
	return n < 0 ? -errno : n;
}

int lazyimage_open(struct store *s, const char *const *layers, const uint64_t *sizes, size_t n,
                   const struct lazyimage_opts *o, struct lazyimage **ret, struct error *err)
{
	_cleanup_(lazyimage_freep) struct lazyimage *li = NULL;
	int r;

	li = calloc(1, sizeof(*li));
	if (!li)
		return -ENOMEM;
	pthread_mutex_init(&li->lock, NULL);
	li->s = s;
	li->o = *o;
	li->opener = (struct li_opener){.open = open_index, .ctx = li};
	li->layers = calloc(n ? n : 1, sizeof(*li->layers));
	if (!li->layers)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ void *table = NULL;
		struct layer *l = &li->layers[li->n];
		struct spans *sp = NULL;
		size_t len = 0;

		if (find(li, layers[i]))
			continue; /* the same layer twice in one image */
		l->owner = li;
		memcpy(l->digest, layers[i], DIGEST_STR_LEN + 1);
		li->n++;
		if (store_has_blob(s, l->digest))
			continue;
		r = store_read_spans(s, l->digest, &table, &len);
		if (r < 0)
			return error_set(err, r, "%s: no span table in the store", l->digest);
		r = spans_parse(table, len, l->digest, sizes[i], &sp, err);
		if (r < 0)
			return r;
		l->size = sp->blob_size;
		r = lazyblob_open(s, sp,
		                  &(struct lazyblob_opts){.fetch = fetch_layer,
		                                          .ctx = l,
		                                          .fill_delay_ms = o->fill_delay_ms},
		                  &l->blob);
		if (r == -EEXIST)
			continue; /* completed by another process meanwhile */
		if (r < 0)
			return error_set(err, r, "%s: cannot open its lazy blob: %s", l->digest,
			                 strerror(-r));
	}
	*ret = TAKE_PTR(li);
	return 0;
}

static bool stopping(struct lazyimage *li)
{
	bool stop;

	pthread_mutex_lock(&li->lock);
	stop = li->stop;
	pthread_mutex_unlock(&li->lock);
	return stop;
}

/* Layer by layer, bottom first (what a container reads first is mostly in the lower
 * layers' /usr, /lib). A failed step is retried after a pause: the registry may be back. */
static void *fill_thread(void *userdata)
{
	struct lazyimage *li = userdata;

	bool complete = true;

	for (size_t i = 0; i < li->n && !stopping(li); i++) {
		struct layer *l = &li->layers[i];
		unsigned pause_ms = 500;
		int r = 0;

		if (!l->blob)
			continue;
		while (!stopping(li) && (r = lazyblob_fill(l->blob)) != 0) {
			if (r > 0) {
				pause_ms = 500;
				continue;
			}
			if (r == -ECANCELED)
				break;
			log_msg(LOG_WARNING, "%s: the background fetch failed; again in %u s",
			        l->digest, pause_ms / 1000);
			for (unsigned t = 0; t < pause_ms && !stopping(li); t += 100)
				(void)poll(NULL, 0, 100);
			pause_ms = MIN(pause_ms * 2, 30000u);
		}
		complete &= r == 0;
	}
	if (complete && !stopping(li) && li->o.complete)
		li->o.complete(li->o.ctx);
	return NULL;
}

int lazyimage_start_fill(struct lazyimage *li)
{
	int r;

	if (li->filling)
		return 0;
	r = pthread_create(&li->filler, NULL, fill_thread, li);
	if (r != 0)
		return -r;
	li->filling = true;
	return 0;
}

const struct li_opener *lazyimage_opener(struct lazyimage *li)
{
	return &li->opener;
}

void lazyimage_get_stats(struct lazyimage *li, struct lazyimage_stats *ret)
{
	*ret = (struct lazyimage_stats){.layers = li->n};
	for (size_t i = 0; i < li->n; i++) {
		struct lazyblob_stats st;

		if (!li->layers[i].blob) {
			ret->complete++;
			continue;
		}
		lazyblob_get_stats(li->layers[i].blob, &st);
		ret->demand_bytes += st.demand_bytes;
		ret->fill_bytes += st.fill_bytes;
		ret->present += st.present;
		ret->total += st.size;
		ret->complete += st.committed;
	}
}

void lazyimage_free(struct lazyimage *li)
{
	if (!li)
		return;
	if (li->filling) {
		pthread_mutex_lock(&li->lock);
		li->stop = true;
		pthread_mutex_unlock(&li->lock);
		for (size_t i = 0; i < li->n; i++)
			if (li->layers[i].blob)
				lazyblob_stop(li->layers[i].blob);
		pthread_join(li->filler, NULL);
	}
	for (size_t i = 0; i < li->n; i++)
		lazyblob_free(li->layers[i].blob);
	free(li->layers);
	registry_free(li->reg);
	free(li->ref_name);
	descriptor_clear(&li->manifest);
	pthread_mutex_destroy(&li->lock);
	free(li);
}

static int fetch_range(void *ctx, const char *layer, uint64_t off, uint64_t len, void *buf,
                       struct error *err)
{
	struct lazyimage *li = ctx;

	return registry_get_blob_range(li->reg, layer, off, len, buf, err);
}

/* Once every layer is verified: the published indexes, which only their own digests and
 * the span tables vouched for, are replaced by indexes built from the layers themselves
 * (a few tenths of a second per 100 MB), and the ref is recorded: from now on the image
 * is what a whole pull would have made. */
static void record_ref(void *ctx)
{
	struct lazyimage *li = ctx;
	struct error err = {""};
	int r = pull_reindex(li->s, li->manifest.digest, &err);

	if (r < 0) {
		log_error(LOG_WARNING, r, &err, "%s: complete, but not indexed again",
		          li->ref_name);
		return;
	}
	if (r > 0)
		log_msg(LOG_ERR,
		        "%s: the published layer indexes do not describe its layers; the store "
		        "now has indexes built from the layers (a new mount uses them)",
		        li->ref_name);
	r = store_ref_set(li->s, li->ref_name, &li->manifest);

	if (r < 0)
		log_errno(LOG_WARNING, r, "%s: complete, but the reference cannot be recorded",
		          li->ref_name);
	else
		log_msg(LOG_INFO, "%s: every layer fetched and verified", li->ref_name);
}

int lazyimage_open_image(struct store *s, const char *manifest_digest, const char *ref_name,
                         struct registry *reg, struct lazyimage **ret, struct error *err)
{
	_cleanup_(registry_freep) struct registry *owned = reg;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_free_ const char **layers = NULL;
	_cleanup_free_ uint64_t *sizes = NULL;
	struct lazyimage *li = NULL;
	size_t len = 0;
	int r;

	r = store_read_image_manifest(s, manifest_digest, &m, &len, err);
	if (r < 0)
		return r;
	layers = calloc(m->n_layers + 1, sizeof(*layers));
	sizes = calloc(m->n_layers + 1, sizeof(*sizes));
	if (!layers || !sizes)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_layers; i++) {
		layers[i] = m->layers[i].digest;
		sizes[i] = m->layers[i].size;
	}
	r = lazyimage_open(s, layers, sizes, m->n_layers,
	                   &(struct lazyimage_opts){.fetch = fetch_range,
	                                            .fill_delay_ms = lazy_fill_delay_ms(),
	                                            .complete = record_ref},
	                   &li, err);
	if (r < 0)
		return r;
	/* The callbacks' ctx is the image itself, known only now. A read waits for its
	 * fetch: bounded to about half a minute when the registry is gone, then EIO; what
	 * is here stays readable, and the fill tries again later. */
	li->o.ctx = li;
	li->reg = TAKE_PTR(owned);
	registry_set_limits(li->reg, LAZY_RETRIES, LAZY_TIMEOUT_S);
	li->ref_name = strdup(ref_name);
	li->manifest.media_type = strdup(m->media_type);
	li->manifest.digest = strdup(manifest_digest);
	li->manifest.size = len;
	if (!li->ref_name || !li->manifest.media_type || !li->manifest.digest) {
		lazyimage_free(li);
		return -ENOMEM;
	}
	*ret = li;
	return 0;
}

int lazyimage_pull(struct store *s, const struct image_ref *ref, const struct pull_opts *po,
                   bool lazy, char **ret_manifest, struct lazyimage **ret_lazy, struct error *err)
{
	_cleanup_free_ char *manifest = NULL;
	struct registry *reg = NULL;
	int r;

	r = pull_for_mount(s, ref, po, false, lazy, &manifest, &reg, err);
	if (r < 0)
		return r;
	*ret_lazy = NULL;
	if (r > 0) {
		r = lazyimage_open_image(s, manifest, ref->name, reg, ret_lazy, err);
		if (r < 0)
			return r;
	}
	*ret_manifest = TAKE_PTR(manifest);
	return 0;
}
