/* The layers of a lazily mounted image; see lazyimage.h. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include "common/log.h"
#include "fsd/image/lazyimage.h"
#include "fsd/image/store.h"
#include "fsd/index/layerindex.h"

struct layer {
	struct lazyimage *owner;
	char digest[DIGEST_STR_LEN + 1];
	struct lazyblob *blob; /* NULL: complete in the store */
	uint64_t size;
};

struct lazyimage {
	struct store *s;
	struct lazyimage_opts o;
	struct layer *layers;
	size_t n;
	struct li_opener opener;
	pthread_t filler;
	bool filling;
	pthread_mutex_t lock; /* protects stop */
	bool stop;
};

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

int lazyimage_open(struct store *s, const char *const *layers, size_t n,
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
		r = spans_parse(table, len, l->digest, UINT64_MAX, &sp, err);
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

	for (size_t i = 0; i < li->n && !stopping(li); i++) {
		struct layer *l = &li->layers[i];
		unsigned pause_ms = 500;
		int r;

		if (!l->blob)
			continue;
		while (!stopping(li) && (r = lazyblob_fill(l->blob)) != 0) {
			if (r > 0) {
				pause_ms = 500;
				continue;
			}
			log_msg(LOG_WARNING, "%s: the background fetch failed; again in %u s",
			        l->digest, pause_ms / 1000);
			for (unsigned t = 0; t < pause_ms && !stopping(li); t += 100)
				(void)poll(NULL, 0, 100);
			pause_ms = MIN(pause_ms * 2, 30000u);
		}
	}
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
		pthread_join(li->filler, NULL);
	}
	for (size_t i = 0; i < li->n; i++)
		lazyblob_free(li->layers[i].blob);
	free(li->layers);
	pthread_mutex_destroy(&li->lock);
	free(li);
}
