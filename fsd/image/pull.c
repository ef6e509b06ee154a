/* The pull pipeline. See pull.h.
 *
 * Per layer: bytes from the source → sha256 → ROOT/tmp/HEX.partial → layer index builder.
 * The index is written before the blob is committed, so a blob in blobs/ always has its
 * index (a crash in between leaves an index without a blob, which gc removes and the next
 * pull rewrites). A partial file left by an interrupted pull is re-read through the hasher
 * and the builder, then the download resumes with a Range request. */
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include "common/digest.h"
#include "common/error.h"
#include "common/fileio.h"
#include "fsd/index/layerindex.h"
#include "fsd/index/tree.h"
#include "estargz.h"
#include "soci.h"
#include "indexpush.h"
#include "progress.h"
#include "pull.h"
#include "source.h"

#define DEFAULT_PARALLEL 4
#define WRITEBACK_CHUNK (8u << 20) /* start writing a blob back to disk every 8 MiB */

struct layer_job {
	const struct descriptor *desc;
	int slot; /* progress bar */
	int result;
	struct error err;
};

struct pull_ctx {
	struct store *store;
	struct source *src;
	struct progress *progress;
	const volatile sig_atomic_t *cancel;
	struct error *err; /* the caller's, for the first failure */
	struct layer_job *jobs;
	size_t n_jobs;
	pthread_mutex_t lock; /* protects next_job and failed */
	size_t next_job;
	bool failed;
};

struct layer_stream {
	struct sha256 *hash;
	struct li_builder *builder;
	int fd;
	uint64_t done, limit;
	struct progress *progress;
	int slot;
	const volatile sig_atomic_t *cancel;
	int builder_err;    /* first builder error: the data is not a valid layer */
	int write_err;      /* writing the downloaded bytes to fd failed (full disk) */
	uint64_t written;   /* bytes written to fd by this stream */
	uint64_t flushed;   /* of those, handed to writeback */
	uint64_t fd_offset; /* offset of fd where this stream started writing */
};

/* Starts the writeback of what was written since the last call (when there is at least
 * WRITEBACK_CHUNK of it, or always with force) without waiting for it: the fsync before
 * the blob is committed then finds little left to write, instead of the whole layer. */
static void start_writeback(struct layer_stream *ls, bool force)
{
	uint64_t n = ls->written - ls->flushed;

	if (n == 0 || (!force && n < WRITEBACK_CHUNK))
		return;
	/* Only a hint: errors surface at the fsync. */
	(void)sync_file_range(ls->fd, (off_t)(ls->fd_offset + ls->flushed), (off_t)n,
	                      SYNC_FILE_RANGE_WRITE);
	ls->flushed = ls->written;
}

static int stream_bytes(const void *buf, size_t len, void *userdata)
{
	struct layer_stream *ls = userdata;
	int r;

	if (ls->cancel && *ls->cancel)
		return -EINTR;
	if (ls->done + len > ls->limit)
		return -EFBIG;
	sha256_update(ls->hash, buf, len);
	if (ls->fd >= 0) {
		r = write_full(ls->fd, buf, len);
		if (r < 0)
			return ls->write_err = r;
		ls->written += len;
		start_writeback(ls, false);
	}
	/* A builder error does not stop the download at once: the digest decides whether the
	 * registry sent the wrong bytes (an error naming the digest) or a hostile layer. */
	if (!ls->builder_err) {
		r = li_builder_feed(ls->builder, buf, len);
		if (r < 0)
			ls->builder_err = r;
	}
	ls->done += len;
	progress_update(ls->progress, ls->slot, ls->done);
	return 0;
}

/* Feeds the bytes already on disk in fd (a partial download or a blob missing its index). */
static int replay_file(struct layer_stream *ls, int fd, uint64_t size)
{
	char *buf = malloc(1u << 20);
	uint64_t off = 0;
	int saved = ls->fd, r = 0;

	if (!buf)
		return -ENOMEM;
	ls->fd = -1; /* the bytes are on disk already */
	while (off < size) {
		ssize_t n = pread_full(fd, buf, MIN((uint64_t)(1u << 20), size - off), (off_t)off);

		if (n < 0) {
			r = (int)n;
			break;
		}
		if (n == 0) {
			r = -EIO;
			break;
		}
		r = stream_bytes(buf, (size_t)n, ls);
		if (r < 0)
			break;
		off += (uint64_t)n;
	}
	ls->fd = saved;
	free(buf);
	return r;
}

static enum li_compression li_comp(enum layer_compression c)
{
	switch (c) {
	case LAYER_GZIP:
		return LI_GZIP;
	case LAYER_ZSTD:
		return LI_ZSTD;
	case LAYER_TAR:
		return LI_TAR;
	}
	return LI_AUTO;
}

/* The one-line reason for a layer whose bytes the index builder refused (r is -EBADMSG or
 * -EFBIG, from li_builder_feed() or li_builder_finish()). */
static void layer_refused(struct layer_job *job, const char *digest, int r)
{
	if (r == -EFBIG)
		error_set(
		    &job->err, r,
		    "layer %s exceeds a limit of the layer index (uncompressed size, entries, "
		    "path or link length)",
		    digest);
	else
		error_set(&job->err, r,
		          "layer %s is corrupt or truncated (not a valid compressed tar stream)",
		          digest);
}

/* The one-line reason for a failed write r of the partial file of a layer. Returns r. */
static int partial_unwritable(struct layer_job *job, struct store *s, const char *digest, int r)
{
	char path[128];

	return error_set(&job->err, r, "cannot write %s/%s: %s", s->root,
	                 store_partial_path(digest, path, sizeof(path)), strerror(-r));
}

static int write_index(struct store *s, const char *digest, struct li_builder *b, int zst_fd,
                       const char *zst_tmp)
{
	_cleanup_free_ void *buf = NULL;
	size_t len = 0;
	int r;

	r = li_builder_finish(b, digest, &buf, &len);
	if (r < 0)
		return r;
	return store_put_index(s, digest, buf, len, zst_fd, zst_tmp);
}

static void layer_stream_clear(struct layer_stream *ls)
{
	sha256_free(ls->hash);
	li_builder_free(ls->builder);
	ls->hash = NULL;
	ls->builder = NULL;
}

/* (Re)starts the stream of job's layer: a fresh hasher and index builder; the seekable
 * zstd copy, when there is one (zfd), starts empty again. fd receives the downloaded
 * bytes (-1: they are on disk already). */
static int layer_stream_start(struct layer_stream *ls, struct pull_ctx *ctx,
                              const struct layer_job *job, int fd, int zfd)
{
	layer_stream_clear(ls);
	*ls = (struct layer_stream){.fd = fd,
	                            .limit = job->desc->size,
	                            .progress = ctx->progress,
	                            .slot = job->slot,
	                            .cancel = ctx->cancel};
	ls->hash = sha256_new();
	if (!ls->hash)
		return -ENOMEM;
	if (zfd >= 0 && ftruncate(zfd, 0) < 0)
		return -errno;
	return li_builder_new(li_comp(job->desc->compression), 0, zfd, &ls->builder);
}

/* Opens the temporary seekable zstd copy for a zstd layer into *ret_fd; -1 for others. */
static int open_zst_for(struct store *s, const struct descriptor *d, char *name, size_t size,
                        int *ret_fd)
{
	int fd = -1;

	name[0] = '\0';
	if (d->compression == LAYER_ZSTD) {
		int r = store_open_zst_temp(s, d->digest, name, size, &fd);

		if (r < 0)
			return r;
	}
	*ret_fd = fd;
	return 0;
}

/* Indexes a blob that is in the store but has no index (a pull killed in between). */
static int index_existing_blob(struct pull_ctx *ctx, struct layer_job *job)
{
	const struct descriptor *d = job->desc;
	_cleanup_(layer_stream_clear) struct layer_stream ls = {0};
	_cleanup_close_ int fd = -1, zfd = -1;
	char zname[160], got[DIGEST_STR_LEN + 1];
	int r;

	r = store_open_blob(ctx->store, d->digest, &fd);
	if (r < 0)
		return r;
	r = open_zst_for(ctx->store, d, zname, sizeof(zname), &zfd);
	if (r < 0)
		return r;
	r = layer_stream_start(&ls, ctx, job, -1, zfd);
	if (r < 0)
		return r;
	r = replay_file(&ls, fd, d->size);
	if (r < 0)
		return r;
	sha256_final(ls.hash, got);
	if (!streq(got, d->digest))
		return -EBADMSG;
	if (ls.builder_err)
		return ls.builder_err;
	return write_index(ctx->store, d->digest, ls.builder, zfd, zname);
}

static int fetch_layer(struct pull_ctx *ctx, struct layer_job *job)
{
	const struct descriptor *d = job->desc;
	_cleanup_(layer_stream_clear) struct layer_stream ls = {0};
	_cleanup_close_ int fd = -1, zfd = -1;
	char zname[160], got[DIGEST_STR_LEN + 1];
	uint64_t have = 0;
	int r;

	r = store_open_partial(ctx->store, d->digest, &fd, &have);
	if (r < 0)
		return error_set(&job->err, r, "cannot create a partial file for layer %s",
		                 d->digest);
	/* Another pull may have finished this blob while we waited for the partial's lock. */
	if (store_has_blob(ctx->store, d->digest) && store_has_index(ctx->store, d->digest)) {
		store_discard_partial(ctx->store, d->digest);
		return 1;
	}
	r = open_zst_for(ctx->store, d, zname, sizeof(zname), &zfd);
	if (r < 0)
		return r;
	r = layer_stream_start(&ls, ctx, job, fd, zfd);
	if (r < 0)
		return r;
	if (have > d->size)
		have = 0; /* a partial longer than the blob is garbage */
	if (have > 0 && replay_file(&ls, fd, have) < 0)
		have = 0;
	if (have == 0) {
		if (ftruncate(fd, 0) < 0)
			return -errno;
		r = layer_stream_start(&ls, ctx, job, fd, zfd);
		if (r < 0)
			return r;
	}
	if (lseek(fd, (off_t)have, SEEK_SET) < 0)
		return -errno;
	ls.fd_offset = have;
	if (have < d->size) {
		struct error serr = {""};

		r = source_get_blob(ctx->src, d, have, stream_bytes, &ls, &serr);
		if (r < 0 && ls.write_err) {
			/* Not the source's fault: say which file could not be written. */
			partial_unwritable(job, ctx->store, d->digest, ls.write_err);
			return r;
		}
		if (r < 0)
			return error_set(&job->err, r, "%s", serr.msg);
	}
	if (ls.done != d->size) {
		store_discard_partial(ctx->store, d->digest);
		return error_set(&job->err, -EBADMSG,
		                 "layer %s: got %" PRIu64 " bytes, expected %" PRIu64, d->digest,
		                 ls.done, d->size);
	}
	sha256_final(ls.hash, got);
	if (!streq(got, d->digest)) {
		store_discard_partial(ctx->store, d->digest);
		if (zname[0])
			store_discard_temp(ctx->store, zname);
		return error_set(
		    &job->err, -EBADMSG,
		    "layer %s: digest mismatch, the source sent content with digest %s", d->digest,
		    got);
	}
	/* Flush the blob while the index worker finishes the last bytes in its ring, rather
	 * than after it: store_commit_partial()'s fsync then has nothing left to do. */
	start_writeback(&ls, true);
	if (fdatasync(fd) < 0) {
		r = -errno;
		return partial_unwritable(job, ctx->store, d->digest, r);
	}
	r = ls.builder_err;
	if (r == 0)
		r = write_index(ctx->store, d->digest, ls.builder, zfd, zname);
	if (r == -EBADMSG || r == -EFBIG) {
		/* the builder refused the data, possibly only at the end of the stream */
		layer_refused(job, d->digest, r);
		store_discard_partial(ctx->store, d->digest);
		if (zname[0])
			store_discard_temp(ctx->store, zname);
		return r;
	}
	if (r < 0)
		return error_set(&job->err, r, "cannot index layer %s: %s", d->digest,
		                 strerror(-r));
	r = store_commit_partial(ctx->store, d->digest, fd);
	if (r < 0)
		return error_set(&job->err, r, "cannot store layer %s", d->digest);
	return r;
}

static void *layer_worker(void *userdata)
{
	struct pull_ctx *ctx = userdata;

	for (;;) {
		struct layer_job *job;
		int r;

		pthread_mutex_lock(&ctx->lock);
		if (ctx->failed || ctx->next_job >= ctx->n_jobs) {
			pthread_mutex_unlock(&ctx->lock);
			return NULL;
		}
		job = &ctx->jobs[ctx->next_job++];
		pthread_mutex_unlock(&ctx->lock);

		if (store_has_blob(ctx->store, job->desc->digest)) {
			if (store_has_index(ctx->store, job->desc->digest)) {
				progress_finish(ctx->progress, job->slot, "exists");
				continue;
			}
			r = index_existing_blob(ctx, job);
			if (r == -EBADMSG || r == -EFBIG)
				layer_refused(job, job->desc->digest, r);
			else if (r < 0)
				error_set(&job->err, r, "cannot index layer %s", job->desc->digest);
		} else {
			r = fetch_layer(ctx, job);
		}
		job->result = r < 0 ? r : 0;
		progress_finish(ctx->progress, job->slot,
		                r < 0 ? "failed" : (r > 0 ? "exists" : "done"));
		if (r < 0) {
			pthread_mutex_lock(&ctx->lock);
			ctx->failed = true;
			pthread_mutex_unlock(&ctx->lock);
		}
	}
}

static int fetch_layers(struct pull_ctx *ctx, const struct manifest *m, unsigned parallel)
{
	pthread_t threads[16];
	unsigned n_threads;
	int r = 0;

	ctx->jobs = calloc(m->n_layers ? m->n_layers : 1, sizeof(*ctx->jobs));
	if (!ctx->jobs)
		return -ENOMEM;
	ctx->n_jobs = m->n_layers;
	for (size_t i = 0; i < m->n_layers; i++) {
		ctx->jobs[i].desc = &m->layers[i];
		ctx->jobs[i].slot =
		    progress_add(ctx->progress, m->layers[i].digest, m->layers[i].size);
	}
	n_threads = MIN(MAX(parallel, 1u), (unsigned)ARRAY_SIZE(threads));
	n_threads = (unsigned)MIN((size_t)n_threads, MAX(m->n_layers, (size_t)1));
	for (unsigned i = 0; i < n_threads; i++) {
		if (pthread_create(&threads[i], NULL, layer_worker, ctx) != 0) {
			n_threads = i;
			ctx->failed = true;
			r = -EAGAIN;
			break;
		}
	}
	for (unsigned i = 0; i < n_threads; i++)
		pthread_join(threads[i], NULL);
	for (size_t i = 0; i < ctx->n_jobs; i++) {
		struct layer_job *job = &ctx->jobs[i];

		if (job->result < 0) {
			if (!error_isset(&job->err))
				return error_set(ctx->err, job->result, "layer %s: %s",
				                 job->desc->digest, strerror(-job->result));
			return error_set(ctx->err, job->result, "%s", job->err.msg);
		}
	}
	if (r < 0)
		return error_set(ctx->err, r, "cannot start a download thread: %s", strerror(-r));
	return r;
}

/* The merged tree of m's layers, serialised (malloc'ed), from their indexes in the store. */
static int build_tree(struct store *s, const struct manifest *m, void **ret_buf, size_t *ret_len)
{
	_cleanup_free_ const char **digests = calloc(m->n_layers + 1, sizeof(*digests));

	if (!digests)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_layers; i++)
		digests[i] = m->layers[i].digest;
	return tree_build(store_layer_opener(s), digests, m->n_layers, ret_buf, ret_len);
}

static int ensure_tree(struct store *s, const char *manifest_digest, const struct manifest *m)
{
	_cleanup_free_ void *buf = NULL;
	size_t len = 0;
	int r;

	if (store_has_tree(s, manifest_digest))
		return 0;
	r = build_tree(s, m, &buf, &len);
	if (r < 0)
		return r;
	return store_put_tree(s, manifest_digest, buf, len);
}

/* Fetches a manifest blob by reference through src, verifying it against want_digest when
 * given, and stores it. */
static int fetch_manifest(struct pull_ctx *ctx, const char *reference, const char *want_digest,
                          struct manifest **ret_m, char **ret_digest, char **ret_mt,
                          size_t *ret_size)
{
	_cleanup_free_ char *body = NULL, *mt = NULL, *digest = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct error err = {""};
	size_t len = 0;
	int r;

	r = source_get_manifest(ctx->src, reference, &body, &len, &mt, &digest, &err);
	if (r == -EFBIG && error_isset(&err))
		return error_set(ctx->err, r, "%s (manifests are limited to %u bytes)", err.msg,
		                 MANIFEST_MAX_SIZE);
	if (r == -EFBIG)
		return error_set(ctx->err, r, "manifest larger than %u bytes: %s",
		                 MANIFEST_MAX_SIZE, strerror(-r));
	if (r < 0 && error_isset(&err))
		return error_set(ctx->err, r, "%s", err.msg);
	if (r < 0)
		return error_set(ctx->err, r, "cannot get manifest '%s': %s", reference,
		                 strerror(-r));
	if (want_digest && !streq(digest, want_digest))
		return error_set(ctx->err, -EBADMSG,
		                 "manifest %s has digest %s, not what was asked for: %s",
		                 want_digest, digest, strerror(EBADMSG));
	r = manifest_parse(body, len, mt, &m, &err);
	if (r < 0)
		return error_set(ctx->err, r, "bad manifest %s: %s", digest,
		                 error_isset(&err) ? err.msg : strerror(-r));
	r = store_put_blob(ctx->store, digest, body, len);
	if (r < 0)
		return error_set(ctx->err, r, "cannot store manifest %s: %s", digest, strerror(-r));
	if (ret_mt)
		*ret_mt = strdup(m->media_type);
	*ret_size = len;
	*ret_m = TAKE_PTR(m);
	*ret_digest = TAKE_PTR(digest);
	return 0;
}

static int fetch_config(struct pull_ctx *ctx, const struct manifest *m)
{
	_cleanup_free_ char *body = NULL;
	_cleanup_(image_config_freep) struct image_config *cfg = NULL;
	struct error err = {""};
	size_t len = 0;
	int r;

	if (store_has_blob(ctx->store, m->config.digest)) {
		r = store_read_blob(ctx->store, m->config.digest, CONFIG_MAX_SIZE, &body, &len);
	} else {
		if (m->config.size > CONFIG_MAX_SIZE)
			return error_set(ctx->err, -EFBIG, "config %s is larger than %u bytes: %s",
			                 m->config.digest, CONFIG_MAX_SIZE, strerror(EFBIG));
		/* The descriptor's size bounds the body, as for layers: a Content-Length beyond
		 * it fails at once instead of waiting for bytes the blob does not have. */
		r = source_get_blob_mem(ctx->src, m->config.digest,
		                        m->config.size ? (size_t)m->config.size : CONFIG_MAX_SIZE,
		                        &body, &len, ctx->err);
		if (r < 0)
			return error_set(ctx->err, r, "cannot get config %s: %s", m->config.digest,
			                 strerror(-r));
		r = store_put_blob(ctx->store, m->config.digest, body, len);
	}
	if (r < 0)
		return error_set(ctx->err, r, "cannot store config %s: %s", m->config.digest,
		                 strerror(-r));
	r = image_config_parse(body, len, &cfg, &err);
	if (r < 0)
		return error_set(ctx->err, r, "bad image config %s: %s", m->config.digest,
		                 error_isset(&err) ? err.msg : strerror(-r));
	if (cfg->n_diff_ids != m->n_layers)
		return error_set(ctx->err, -EBADMSG, "config %s lists %zu layers, the manifest %zu",
		                 m->config.digest, cfg->n_diff_ids, m->n_layers);
	return 0;
}

/* True when the ref's manifest, config, layers, indexes and tree are all in the store. */
static bool image_complete(struct store *s, const char *manifest_digest)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;

	if (store_read_image_manifest(s, manifest_digest, &m, NULL, NULL) < 0)
		return false;
	if (!store_has_blob(s, m->config.digest))
		return false;
	for (size_t i = 0; i < m->n_layers; i++)
		if (!store_has_blob(s, m->layers[i].digest) ||
		    !store_has_index(s, m->layers[i].digest))
			return false;
	return store_has_tree(s, manifest_digest);
}

int pull_resolve_local(struct store *s, const struct image_ref *ref, char **ret_manifest)
{
	struct descriptor d = {0};
	char *digest;
	int r;

	r = store_ref_get(s, ref->name, &d);
	if (r < 0)
		return r;
	if (!image_complete(s, d.digest)) {
		descriptor_clear(&d);
		return -ENOENT;
	}
	digest = TAKE_PTR(d.digest);
	descriptor_clear(&d);
	if (ret_manifest)
		*ret_manifest = digest;
	else
		free(digest);
	return 0;
}

/* Fetches whole (and indexes) the layers of m that unindexed marks: those a SOCI index
 * leaves out (soci-snapshotter indexes no small layer). */
static int fetch_unindexed(struct pull_ctx *ctx, const struct manifest *m, const bool *unindexed)
{
	_cleanup_free_ struct descriptor *layers = calloc(m->n_layers + 1, sizeof(*layers));
	struct manifest sub = {.kind = MANIFEST_IMAGE};
	int r;

	if (!layers)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_layers; i++)
		if (unindexed[i])
			layers[sub.n_layers++] = m->layers[i]; /* borrowed */
	if (sub.n_layers == 0)
		return 0;
	sub.layers = layers;
	free(ctx->jobs);
	ctx->jobs = NULL;
	r = fetch_layers(ctx, &sub, DEFAULT_PARALLEL);
	free(ctx->jobs);
	ctx->jobs = NULL;
	ctx->n_jobs = 0;
	return r;
}

/* Whether some layer of m not in the store says it is eStargz. */
static bool estargz_layers(const struct manifest *m)
{
	for (size_t i = 0; i < m->n_layers; i++)
		if (m->layers[i].toc_digest[0])
			return true;
	return false;
}

/* The layers' indexes in place of their blobs, when the registry publishes them all (ours,
 * else eStargz TOCs): then
 * the tree is built from them and the layers are left to the mount. Returns 1 when so, 0
 * when the image has to be pulled whole (said in one line), -errno on a failure that is
 * not merely a missing index. */
static int try_lazy(struct pull_ctx *ctx, const struct image_ref *ref, const struct manifest *m,
                    const char *digest)
{
	struct error why = {""};
	const char *kind = "";
	int r;

	if (!source_registry(ctx->src))
		return 0;
	r = index_fetch(ctx->store, source_registry(ctx->src), digest, m, &why);
	if (r < 0 && r != -ENOMEM && estargz_layers(m)) {
		/* No index of ours, but the image's publisher made its layers seekable. */
		why = (struct error){""};
		r = estargz_fetch(ctx->store, source_registry(ctx->src), m, &why);
		if (r >= 0)
			kind = "eStargz ";
	}
	if (r < 0 && r != -ENOMEM) {
		/* Nor eStargz, but perhaps indexed by soci-snapshotter. */
		struct error sw = {""};
		bool *unindexed = NULL;
		int rs = soci_fetch(ctx->store, source_registry(ctx->src), digest, m->soci_index, m,
		                    &unindexed, &sw);

		if (rs >= 0) {
			r = fetch_unindexed(ctx, m, unindexed);
			free(unindexed);
			if (r < 0)
				return r;
			kind = "SOCI-indexed ";
		} else if (rs == -ENOMEM || rs != -ENOENT || m->soci_index[0]) {
			why = sw;
			r = rs;
		}
	}
	if (r == -ENOMEM)
		return error_set(ctx->err, r, "%s", strerror(-r));
	if (r < 0) {
		/* No index, a bad one, or a registry that would not give it: the whole pull
		 * says what is wrong with the registry, if anything. */
		progress_note(ctx->progress, "%s: %s; pulling it whole", ref->name,
		              error_isset(&why) ? why.msg : "no layer index");
		return 0;
	}
	r = ensure_tree(ctx->store, digest, m);
	if (r == -ENOMEM)
		return error_set(ctx->err, r, "cannot build the merged tree: %s", strerror(-r));
	if (r < 0) {
		progress_note(ctx->progress,
		              "%s: the published layer indexes do not merge (%s); "
		              "pulling it whole",
		              ref->name, strerror(-r));
		return 0;
	}
	progress_note(ctx->progress, "%s: %s, %slayers fetched as they are read", ref->name, digest,
	              kind);
	return 1;
}

int pull_reindex(struct store *s, const char *manifest_digest, struct error *err)
{
	_cleanup_(progress_freep) struct progress *progress = progress_new(PROGRESS_QUIET);
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_free_ char *old = NULL;
	_cleanup_free_ void *tree = NULL;
	struct pull_ctx ctx = {.store = s, .progress = progress, .err = err};
	size_t old_len = 0, tree_len = 0;
	int r;

	if (!progress)
		return -ENOMEM;
	r = store_read_image_manifest(s, manifest_digest, &m, NULL, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < m->n_layers; i++) {
		struct layer_job job = {.desc = &m->layers[i], .slot = -1};

		r = index_existing_blob(&ctx, &job);
		if (r < 0)
			return error_set(err, r, "layer %s: cannot index it: %s",
			                 m->layers[i].digest,
			                 error_isset(&job.err) ? job.err.msg : strerror(-r));
	}
	r = build_tree(s, m, &tree, &tree_len);
	if (r < 0)
		return error_set(err, r, "cannot build the merged tree: %s", strerror(-r));
	(void)store_read_tree(s, manifest_digest, &old, &old_len);
	if (old && old_len == tree_len && memcmp(old, tree, tree_len) == 0)
		return 0;
	r = store_put_tree(s, manifest_digest, tree, tree_len);
	if (r < 0)
		return error_set(err, r, "cannot store the merged tree: %s", strerror(-r));
	return 1;
}

int pull_image(struct store *s, const struct image_ref *ref, const struct pull_opts *opts,
               bool force, char **ret_manifest, struct error *err)
{
	int r = pull_for_mount(s, ref, opts, force, false, ret_manifest, NULL, err);

	return r < 0 ? r : 0;
}

int pull_for_mount(struct store *s, const struct image_ref *ref, const struct pull_opts *opts,
                   bool force, bool lazy, char **ret_manifest, struct registry **ret_registry,
                   struct error *err)
{
	_cleanup_(source_freep) struct source *src = NULL;
	_cleanup_(progress_freep) struct progress *progress = NULL;
	_cleanup_(manifest_freep) struct manifest *top = NULL, *img = NULL;
	_cleanup_free_ char *top_digest = NULL, *img_digest = NULL, *img_mt = NULL;
	struct platform want = {0};
	struct pull_ctx ctx = {.store = s, .err = err};
	struct descriptor ref_desc = {0};
	size_t img_size = 0;
	int r;

	if (!force && pull_resolve_local(s, ref, ret_manifest) == 0)
		return 0;
	r = store_lock_shared(s);
	if (r < 0)
		return error_set(err, r, "cannot lock the store '%s': %s", s->root, strerror(-r));
	progress = progress_new(opts->quiet ? PROGRESS_QUIET : PROGRESS_AUTO);
	if (!progress)
		return -ENOMEM;
	r = source_open(ref, opts, &src, err);
	if (r < 0)
		return r;
	ctx.src = src;
	ctx.progress = progress;
	ctx.cancel = opts->cancel;
	pthread_mutex_init(&ctx.lock, NULL);

	r = opts->platform ? platform_parse(opts->platform, &want) : platform_host(&want);
	if (r < 0) {
		error_set(err, r, "invalid platform '%s': %s",
		          opts->platform ? opts->platform : "host", strerror(-r));
		goto out;
	}
	r = fetch_manifest(&ctx, source_reference(src), ref->digest, &top, &top_digest, NULL,
	                   &img_size);
	if (r < 0)
		goto out;
	if (top->kind == MANIFEST_INDEX) {
		const struct descriptor *d = NULL;

		r = manifest_select_platform(top, &want, &d);
		if (r < 0) {
			error_set(err, r, "no manifest for platform %s/%s%s%s", want.os,
			          want.architecture, want.variant ? "/" : "",
			          want.variant ? want.variant : "");
			goto out;
		}
		r = fetch_manifest(&ctx, d->digest, d->digest, &img, &img_digest, &img_mt,
		                   &img_size);
		if (r < 0)
			goto out;
		if (img->kind != MANIFEST_IMAGE) {
			r = error_set(err, -EBADMSG, "index entry %s is not an image manifest: %s",
			              d->digest, strerror(EBADMSG));
			goto out;
		}
	} else {
		img = TAKE_PTR(top);
		img_digest = TAKE_PTR(top_digest);
		img_mt = strdup(img->media_type);
	}
	if (!img_mt) {
		r = -ENOMEM;
		goto out;
	}
	progress_note(progress, "%s: manifest %s, %zu layer%s", ref->name, img_digest,
	              img->n_layers, img->n_layers == 1 ? "" : "s");
	r = fetch_config(&ctx, img);
	if (r < 0)
		goto out;
	if (lazy) {
		r = try_lazy(&ctx, ref, img, img_digest);
		if (r < 0)
			goto out;
		if (r > 0) {
			/* The ref is recorded once the layers are complete: until then the
			 * store is not an image that skopeo or umoci could read. */
			if (ret_manifest) {
				*ret_manifest = strdup(img_digest);
				if (!*ret_manifest) {
					r = -ENOMEM;
					goto out;
				}
			}
			if (ret_registry)
				*ret_registry = source_take_registry(src);
			goto out;
		}
	}
	r = fetch_layers(&ctx, img, opts->parallel ? opts->parallel : DEFAULT_PARALLEL);
	if (r < 0)
		goto out;
	r = ensure_tree(s, img_digest, img);
	if (r < 0) {
		error_set(err, r, "cannot build the merged tree: %s", strerror(-r));
		goto out;
	}
	ref_desc.media_type = img_mt;
	ref_desc.digest = img_digest;
	ref_desc.size = img_size;
	r = store_ref_set(s, ref->name, &ref_desc);
	if (r < 0) {
		error_set(err, r, "cannot record the reference: %s", strerror(-r));
		goto out;
	}
	progress_note(progress, "%s: pulled %s", ref->name, img_digest);
	if (ret_manifest) {
		*ret_manifest = strdup(img_digest);
		if (!*ret_manifest)
			r = -ENOMEM;
	}
out:
	platform_clear(&want);
	free(ctx.jobs);
	pthread_mutex_destroy(&ctx.lock);
	return r;
}
