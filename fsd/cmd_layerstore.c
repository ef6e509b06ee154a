/* imgfs layer-store: containers/storage's Additional Layer Store, served from imgfs's store.
 * The namespace is layerstore.c, its FUSE glue fuse_store.c; this file parses the command
 * line, resolves references for the store (registry, credentials, lazy or one-pass pull,
 * one tree per layer in overlay lower format) and runs the daemon through the mount life
 * cycle (lifecycle.h), supervised like an image mount: a worker that dies is replaced by
 * `imgfs layer-store --worker DIR`, which numbers the references and layers as the dead one
 * did (ROOT/mounts/NAME/slots, layerstore_save()) and takes the connection over. */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include "common/error.h"
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/daemon.h"
#include "fsd/fs/lower.h"
#include "fsd/fuse_store.h"
#include "fsd/image/als.h"
#include "fsd/image/lazyimage.h"
#include "fsd/image/manifest.h"
#include "fsd/image/pull.h"
#include "fsd/image/ref.h"
#include "fsd/image/registry.h"
#include "fsd/image/store.h"
#include "fsd/index/tree.h"
#include "fsd/layerstore.h"
#include "fsd/lifecycle.h"

#define CONFIG_MAX (4u << 20)
/* A registry that does not answer costs podman this much before it pulls itself. */
#define RESOLVE_TIMEOUT_S 10
#define RESOLVE_RETRIES 1
/* The state's "ref" of a layer store (it serves no one image). */
#define STATE_REF "layer-store"
/* ROOT/mounts/NAME/slots: the numbers of references and layers (layerstore_save()). */
#define SLOTS_FILE "slots"
#define SLOTS_MAX (64u << 20)

static const char usage[] =
    "Usage: imgfs [--root DIR] layer-store [-f] DIR\n"
    "\n"
    "Serve image layers at DIR as an additional layer store of containers/storage, so that\n"
    "podman and CRI-O run images from imgfs's store instead of downloading and extracting\n"
    "every layer. Configure them with\n"
    "\n"
    "    [storage.options]\n"
    "    additionallayerstores = [\"DIR:ref\"]\n"
    "\n"
    "in storage.conf (or `podman --storage-opt overlay.additionallayerstore=DIR:ref`);\n"
    "then `podman pull` and `podman run` work as usual.\n"
    "\n"
    "DIR/BASE64(REF)/DIGEST/ is layer DIGEST of image REF: diff/ (the layer in overlay\n"
    "format, read from its compressed blob, never extracted), info (JSON) and blob (the\n"
    "compressed bytes). An image is resolved at the first lookup of its name, with\n"
    "imgfs's registry client and credentials: lazily when the registry publishes layer\n"
    "indexes (`imgfs index push`), else pulled into the store in one pass. An image that\n"
    "cannot be resolved (unknown, not found, registry down or refusing) is absent, and\n"
    "podman then downloads it itself; one line in the log says why. Layers podman uses\n"
    "(and their images) are kept from `imgfs gc` while it holds them. Only the user who\n"
    "started the store may look names up in DIR (each lookup can start a pull): run it as\n"
    "the user podman or CRI-O runs as (root).\n"
    "\n"
    "The command returns once DIR serves; a daemon runs until `imgfs umount DIR`. It logs\n"
    "to ROOT/mounts/NAME/log; ROOT/mounts/NAME/layers lists `REF DIGEST USES` per layer.\n"
    "Like an image mount, the store survives its daemon: when the process serving it dies\n"
    "(killed, crashed) its supervisor starts a new one, which takes the FUSE connection\n"
    "over with the same inode numbers, open files and use counts; containers running on its\n"
    "layers see a pause, not an error. `imgfs status DIR` shows daemon-pid, supervisor-pid\n"
    "and restarts; `imgfs restart DIR` replaces the daemon (an upgrade installed since is\n"
    "picked up). With -f there is no supervisor.\n"
    "\n"
    "Options:\n"
    "  -f, --foreground   stay in the foreground, logging to standard error\n"
    "  -h, --help         show this help\n"
    "      --worker       internal: run by the store's supervisor (with the FUSE connection\n"
    "                     and a control socket) to take the store at DIR over from a daemon\n"
    "                     that died or is being replaced; DIR must be canonical\n";

/* A resolved image's blobs: lazily fetched ones through lazy, complete ones from blobs/. */
struct image_ctx {
	struct store *s;
	struct lazyimage *lazy; /* NULL: all complete */
	char **digests;
	int *fds; /* blobs/ opened at the first read; -1 until then */
	size_t n;
	pthread_mutex_t lock; /* protects fds */
};

static void image_ctx_free(void *p)
{
	struct image_ctx *c = p;

	if (!c)
		return;
	lazyimage_free(c->lazy);
	for (size_t i = 0; i < c->n; i++) {
		free(c->digests[i]);
		if (c->fds[i] >= 0)
			close(c->fds[i]);
	}
	free(c->digests);
	free(c->fds);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static ssize_t read_blob(void *p, size_t i, void *buf, size_t size, uint64_t off)
{
	struct image_ctx *c = p;
	ssize_t n;
	int fd, r = 0;

	if (i >= c->n)
		return -EIO;
	if (c->lazy) {
		n = lazyimage_read_blob(c->lazy, c->digests[i], buf, size, off);
		if (n != -ENOENT)
			return n;
	}
	pthread_mutex_lock(&c->lock);
	if (c->fds[i] < 0)
		r = store_open_blob(c->s, c->digests[i], &c->fds[i]);
	fd = c->fds[i];
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		return r;
	n = pread(fd, buf, size, (off_t)off);
	return n < 0 ? -errno : n;
}

static int als_compression(enum layer_compression c)
{
	switch (c) {
	case LAYER_GZIP:
		return ALS_COMPRESSION_GZIP;
	case LAYER_ZSTD:
		return ALS_COMPRESSION_ZSTD;
	default:
		return ALS_COMPRESSION_NONE;
	}
}

/* Layer d of an image for the store, from its tree in overlay lower format (buf, len;
 * taken): the tree is kept in memory (a memfd), opened, and the info file is made. */
static int keep_layer(const struct li_opener *op, const struct descriptor *d, const char *diff_id,
                      void *tree_buf, size_t len, struct ls_layer_desc *ret, struct error *err)
{
	_cleanup_free_ void *buf = tree_buf;
	_cleanup_close_ int fd = -1;
	struct li_index *li = NULL;
	struct tree *t = NULL;
	struct li_info info;
	int r;

	fd = memfd_create("imgfs-layer-tree", MFD_CLOEXEC);
	if (fd < 0 || write_full(fd, buf, len) < 0)
		return error_set(err, -errno, "%s: cannot keep its tree: %m", d->digest);
	r = tree_open_flags(op, fd, 0, &t);
	if (r < 0)
		return error_set(err, r, "%s: cannot open its tree: %s", d->digest, strerror(-r));
	r = op->open(op->ctx, d->digest, LI_OPEN_NO_DATA, &li);
	if (r < 0) {
		tree_close(t);
		return error_set(err, r, "%s: cannot open its index: %s", d->digest, strerror(-r));
	}
	li_get_info(li, &info);
	li_close(li);
	r = als_info_format(&(struct als_info){.compressed_digest = d->digest,
	                                       .compressed_size = d->size,
	                                       .diff_digest = diff_id,
	                                       .diff_size = info.total_out,
	                                       .compression = als_compression(d->compression)},
	                    &ret->info, &ret->info_len);
	if (r < 0) {
		tree_close(t);
		return error_set(err, r, "%s: invalid diff_id '%s'", d->digest, diff_id);
	}
	memcpy(ret->digest, d->digest, sizeof(ret->digest));
	ret->blob_size = d->size;
	lower_from_tree(t, &ret->lower);
	return 0;
}

struct build_ctx {
	const struct li_opener *op;
	const struct manifest *m;
	const struct image_config *cfg;
	struct ls_layer_desc *layers;
	struct error *err;
	size_t built; /* layers[0..built) are filled */
};

static int build_one(size_t i, void *buf, size_t len, void *userdata)
{
	struct build_ctx *bc = userdata;
	int r;

	r = keep_layer(bc->op, &bc->m->layers[i], bc->cfg->diff_ids[i], buf, len, &bc->layers[i],
	               bc->err);
	if (r >= 0)
		bc->built = i + 1;
	return r;
}

struct resolver {
	struct store *s;
	struct lifecycle *lc;
	struct layerstore *ls;
	pthread_mutex_t lock; /* serialises the files written by changed() */
};

/* The fill of a lazy image runs in threads that block every signal (as libfuse's workers
 * do), so that SIGTERM reaches the loop. */
static void start_fill(struct lazyimage *lazy, const char *name)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = lazyimage_start_fill(lazy);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0)
		log_errno(LOG_WARNING, r, "%s: cannot start the background fetch", name);
}

/* An image served before (a restored reference): from the store when its layers are all
 * there, else fetched as they are read, as a new lazy mount of it would be (*ret). */
static int open_served(struct resolver *rs, const struct image_ref *ref, const char *manifest,
                       struct lazyimage **ret, struct error *err)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct registry *reg = NULL;
	bool complete = true;
	int r;

	*ret = NULL;
	r = store_read_image_manifest(rs->s, manifest, &m, NULL, err);
	if (r < 0) {
		if (!error_isset(err))
			error_set(err, r, "%s: not in the store: %s", manifest, strerror(-r));
		return r;
	}
	for (size_t i = 0; complete && i < m->n_layers; i++)
		complete = store_has_blob(rs->s, m->layers[i].digest) &&
		           store_has_index(rs->s, m->layers[i].digest);
	if (complete)
		return 0;
	r = registry_new(
	    ref,
	    &(struct registry_opts){.max_retries = RESOLVE_RETRIES, .timeout_s = RESOLVE_TIMEOUT_S},
	    &reg);
	if (r < 0)
		return error_set(err, r, "cannot use the registry of %s: %s", ref->name,
		                 strerror(-r));
	return lazyimage_open_image(rs->s, manifest, ref->name, reg, ret, err);
}

static int resolve_image(struct resolver *rs, const char *name, const char *served, bool fresh,
                         struct ls_image *ret, struct error *err)
{
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_(image_config_freep) struct image_config *cfg = NULL;
	_cleanup_free_ char *manifest = NULL, *cfg_buf = NULL;
	_cleanup_free_ struct ls_layer_desc *layers = NULL;
	struct image_ctx *ctx = NULL;
	struct registry *reg = NULL;
	struct lazyimage *lazy = NULL;
	const struct li_opener *op;
	struct pull_opts po = {
	    .quiet = true, .reg = {.max_retries = RESOLVE_RETRIES, .timeout_s = RESOLVE_TIMEOUT_S}};
	size_t cfg_len, built = 0;
	int r;

	r = ref_parse(name, &ref, err);
	if (r < 0)
		return r;
	if (ref->transport != REF_REGISTRY)
		return error_set(err, -EINVAL, "not a registry reference");
	if (served) {
		r = open_served(rs, ref, served, &lazy, err);
		if (r < 0)
			return r;
		manifest = strdup(served);
		if (!manifest) {
			lazyimage_free(lazy);
			return -ENOMEM;
		}
	} else {
		r = pull_for_mount(rs->s, ref, &po, fresh, true, &manifest, &reg, err);
		if (r < 0)
			return r;
		if (r > 0) {
			r = lazyimage_open_image(rs->s, manifest, ref->name, reg, &lazy, err);
			if (r < 0)
				return r;
		}
	}
	r = store_read_image_manifest(rs->s, manifest, &m, NULL, err);
	if (r >= 0) {
		r = store_read_blob(rs->s, m->config.digest, CONFIG_MAX, &cfg_buf, &cfg_len);
		if (r < 0)
			error_set(err, r, "%s: cannot read the config: %s", m->config.digest,
			          strerror(-r));
	}
	if (r >= 0)
		r = image_config_parse(cfg_buf, cfg_len, &cfg, err);
	if (r >= 0 && cfg->n_diff_ids != m->n_layers)
		r = error_set(err, -EBADMSG, "%s: %zu layers but %zu diff_ids", manifest,
		              m->n_layers, cfg->n_diff_ids);
	if (r >= 0) {
		layers = calloc(m->n_layers ? m->n_layers : 1, sizeof(*layers));
		ctx = calloc(1, sizeof(*ctx));
		if (ctx) {
			pthread_mutex_init(&ctx->lock, NULL);
			ctx->s = rs->s;
			ctx->digests = calloc(m->n_layers + 1, sizeof(char *));
			ctx->fds = malloc(sizeof(int) * (m->n_layers + 1));
		}
		if (!layers || !ctx || !ctx->digests || !ctx->fds)
			r = -ENOMEM;
	}
	op = lazy ? lazyimage_opener(lazy) : store_layer_opener(rs->s);
	for (size_t i = 0; r >= 0 && i < m->n_layers; i++) {
		ctx->fds[i] = -1;
		ctx->digests[i] = strdup(m->layers[i].digest);
		ctx->n = i + 1;
		if (!ctx->digests[i])
			r = -ENOMEM;
	}
	if (r >= 0) {
		_cleanup_free_ const char **digests = calloc(m->n_layers + 1, sizeof(char *));
		struct build_ctx bc = {op, m, cfg, layers, err, 0};

		if (!digests)
			r = -ENOMEM;
		for (size_t i = 0; r >= 0 && i < m->n_layers; i++)
			digests[i] = m->layers[i].digest;
		if (r >= 0)
			r = tree_build_layers(op, digests, m->n_layers, build_one, &bc);
		if (r < 0 && !error_isset(err))
			error_set(err, r, "cannot build the layers' trees: %s", strerror(-r));
		built = bc.built;
	}
	if (r < 0) {
		for (size_t i = 0; layers && i < built; i++) {
			if (layers[i].lower.ops)
				layers[i].lower.ops->close(layers[i].lower.data);
			free(layers[i].info);
		}
		if (ctx)
			ctx->lazy = lazy;
		else
			lazyimage_free(lazy);
		image_ctx_free(ctx);
		return r;
	}
	ctx->lazy = lazy;
	if (lazy)
		start_fill(lazy, name);
	log_msg(LOG_INFO, "%s: %zu layer(s) of %s%s%s", name, m->n_layers, manifest,
	        lazy ? ", fetched as they are read" : "", served ? ", served before" : "");
	memcpy(ret->manifest, manifest, sizeof(ret->manifest));
	ret->layers = TAKE_PTR(layers);
	ret->n_layers = m->n_layers;
	ret->read_blob = read_blob;
	ret->free = image_ctx_free;
	ret->ctx = ctx;
	return 0;
}

static int resolve(void *userdata, const char *name, const char *manifest, bool fresh,
                   struct ls_image *ret)
{
	struct resolver *rs = userdata;
	struct error err = {""};
	int r;

	r = resolve_image(rs, name, manifest, fresh, ret, &err);
	if (r < 0 && manifest) {
		store_unlock(rs->s);
		return log_error(LOG_WARNING, r, &err, "%s: cannot serve %s again", name, manifest);
	}
	if (r < 0) {
		/* The pull took the store lock; nothing of this image needs it any more. */
		store_unlock(rs->s);
		return log_error(LOG_WARNING, r, &err, "%s: not served (podman pulls it itself)",
		                 name);
	}
	return 0;
}

struct text {
	char *p;
	size_t len, cap;
	bool failed;
};

static void text_layer(const char *ref, const char *digest, uint64_t uses, void *userdata)
{
	struct text *t = userdata;
	size_t need = strlen(ref) + strlen(digest) + 32;

	if (t->len + need > t->cap) {
		size_t cap = MAX(t->cap * 2, t->len + need);
		char *p = realloc(t->p, cap);

		if (!p) {
			t->failed = true;
			return;
		}
		t->p = p;
		t->cap = cap;
	}
	t->len += (size_t)snprintf(t->p + t->len, t->cap - t->len, "%s %s %" PRIu64 "\n", ref,
	                           digest, uses);
}

/* The held images (gc roots), ROOT/mounts/NAME/slots and ROOT/mounts/NAME/layers,
 * rewritten after every change, before the request that made it is answered (a number the
 * kernel learns is in the slots a new worker reads); then the store lock a pull took is
 * released: what it pulled is rooted now. */
static void changed(void *userdata)
{
	struct resolver *rs = userdata;
	struct text t = {0};
	char **held = NULL, *slots = NULL;
	size_t n = 0, len = 0;
	int r;

	pthread_mutex_lock(&rs->lock);
	r = layerstore_save(rs->ls, &slots, &len);
	if (r >= 0 && write_file_atomic(lifecycle_dir_fd(rs->lc), SLOTS_FILE, slots, len, 0644) < 0)
		r = -errno;
	if (r < 0)
		log_errno(LOG_WARNING, r, "cannot write %s/%s", lifecycle_dir_path(rs->lc),
		          SLOTS_FILE);
	free(slots);
	r = layerstore_held_manifests(rs->ls, &held, &n);
	if (r >= 0)
		r = lifecycle_set_held(rs->lc, (const char *const *)held, n);
	if (r < 0)
		log_errno(LOG_WARNING, r, "cannot write %s/held", lifecycle_dir_path(rs->lc));
	for (size_t i = 0; i < n; i++)
		free(held[i]);
	free(held);
	layerstore_for_each_layer(rs->ls, text_layer, &t);
	if (!t.failed &&
	    write_file_atomic(lifecycle_dir_fd(rs->lc), "layers", t.p ? t.p : "", t.len, 0644) < 0)
		log_errno(LOG_WARNING, -errno, "cannot write %s/layers",
		          lifecycle_dir_path(rs->lc));
	free(t.p);
	store_unlock(rs->s);
	pthread_mutex_unlock(&rs->lock);
}

struct serve_ctx {
	struct store *s;
	const char *dir;
	int conn_fd; /* a worker taking over: the connection; else -1 */
};

/* A worker taking over: the numbers the dead one gave out, and the kernel's FUSE_INIT. */
static int restore(struct lifecycle *lc, struct layerstore *ls, const char *dir, char **ret_init,
                   size_t *ret_init_len)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r;

	r = read_file_full(lifecycle_dir_fd(lc), SLOTS_FILE, SLOTS_MAX, &text, &len);
	if (r >= 0)
		r = layerstore_restore(ls, text, len);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot take over '%s': cannot restore %s/%s", dir,
		                 lifecycle_dir_path(lc), SLOTS_FILE);
	r = daemon_load_init(lc, ret_init, ret_init_len);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot take over '%s': cannot read %s/fuse-init", dir,
		                 lifecycle_dir_path(lc));
	return 0;
}

static int serve(struct lifecycle *lc, void *userdata)
{
	struct serve_ctx *sc = userdata;
	_cleanup_(fuse_ops_freep) struct fuse_ops_session *session = NULL;
	_cleanup_(layerstore_freep) struct layerstore *ls = NULL;
	_cleanup_free_ char *init = NULL;
	struct resolver rs = {.s = sc->s, .lc = lc};
	bool takeover = lifecycle_is_takeover(lc);
	size_t init_len = 0;
	struct rlimit rl;
	int r;

	/* Every layer served holds its index and blob (and those it takes directories
	 * from) open. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	pthread_mutex_init(&rs.lock, NULL);
	r = layerstore_new(
	    &(struct layerstore_opts){.resolve = resolve, .userdata = &rs, .changed = changed},
	    &ls);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot serve '%s'", sc->dir);
	rs.ls = ls;
	if (takeover) {
		r = restore(lc, ls, sc->dir, &init, &init_len);
		if (r < 0)
			return r; /* logged */
	} else {
		r = lifecycle_register(lc, &(struct mount_info){
		                               .ref = STATE_REF,
		                               .mountpoint = sc->dir,
		                               .ro = true,
		                           });
		if (r < 0)
			return log_errno(LOG_ERR, r, "cannot write %s/state",
			                 lifecycle_dir_path(lc));
	}
	changed(&rs);
	fuse_ops_route_logs();
	r = fuse_store_mount(ls,
	                     &(struct fuse_ops_opts){
	                         .mountpoint = sc->dir,
	                         .fsname = "imgfs-layer-store",
	                         /* root's podman mounts overlays of it for every user */
	                         .allow_other = geteuid() == 0,
	                         .suid_dev = geteuid() == 0,
	                         .supervised = lifecycle_supervised(lc),
	                         .state_dirfd = lifecycle_dir_fd(lc),
	                         .takeover = takeover,
	                         .conn_fd = sc->conn_fd,
	                         .init = init,
	                         .init_len = init_len,
	                     },
	                     &session);
	if (r < 0)
		return r; /* logged */
	if (lifecycle_supervised(lc) && !takeover) {
		r = daemon_save_init(lc, session);
		if (r < 0)
			return log_errno(LOG_ERR, r, "cannot write %s/fuse-init",
			                 lifecycle_dir_path(lc));
	}
	lifecycle_ready(lc, fuse_ops_conn_fd(session));
	if (chdir("/") < 0)
		log_errno(LOG_WARNING, -errno, "cannot change to /");
	log_msg(LOG_INFO, "%s at %s", takeover ? "took over the layer store" : "layer store",
	        sc->dir);
	r = fuse_ops_loop(session);
	if (r < 0)
		log_errno(LOG_ERR, r, "serving '%s' failed", sc->dir);
	fuse_ops_free(TAKE_PTR(session));
	layerstore_free(TAKE_PTR(ls));
	log_msg(LOG_INFO, "layer store at %s stopped", sc->dir);
	return r;
}

/* A worker executed by the store's supervisor: serves the store at dir (canonical; never
 * looked at: its daemon may be dead) over the connection the dead worker served. */
static int run_worker(const char *dir)
{
	_cleanup_(store_freep) struct store *s = NULL;
	struct mount_status st = {0};
	struct lifecycle *lc = NULL;
	int conn_fd = -1, r;

	if (open_store(&s) < 0)
		return 1;
	r = lifecycle_attach(s, dir, &lc, &conn_fd, &st);
	if (r < 0)
		return 1;
	if (st.manifest || !streq(st.ref, STATE_REF)) {
		r = log_errno(LOG_ERR, -EBADMSG, "cannot serve '%s': %s is not a layer store's",
		              dir, st.dir);
	} else {
		struct serve_ctx sc = {s, st.mountpoint, conn_fd};

		r = serve(lc, &sc);
	}
	mount_status_done(&st);
	lifecycle_detach(lc);
	return r < 0 ? 1 : 0;
}

int cmd_layer_store(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"foreground", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {"worker", no_argument, NULL, 'W'},
	    {},
	};
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_free_ char *dir = NULL, *root = NULL;
	bool foreground = false, worker = false;
	struct stat st;
	int c, r;

	while ((c = getopt_long(argc, argv, "fh", opts, NULL)) >= 0) {
		switch (c) {
		case 'f':
			foreground = true;
			break;
		case 'W':
			worker = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs("Try 'imgfs layer-store --help'.\n", stderr);
			return 2;
		}
	}
	if (argc - optind != 1) {
		fputs(usage, stderr);
		return 2;
	}
	if (worker)
		return run_worker(argv[optind]);
	if (mkdir(argv[optind], 0755) < 0 && errno != EEXIST) {
		log_errno(LOG_ERR, -errno, "cannot create '%s'", argv[optind]);
		return 1;
	}
	if (stat(argv[optind], &st) < 0 || !S_ISDIR(st.st_mode)) {
		if (errno == ENOTCONN)
			log_msg(LOG_ERR,
			        "cannot serve '%s': a dead mount is in the way; run 'imgfs umount "
			        "%s' first",
			        argv[optind], argv[optind]);
		else
			log_msg(LOG_ERR, "cannot serve '%s': not a directory", argv[optind]);
		return 1;
	}
	dir = realpath(argv[optind], NULL);
	if (!dir) {
		log_errno(LOG_ERR, -errno, "cannot serve '%s'", argv[optind]);
		return 1;
	}
	if (open_store(&s) < 0)
		return 1;
	root = realpath(s->root, NULL);
	if (!root) {
		log_errno(LOG_ERR, -errno, "cannot use the store '%s'", s->root);
		return 1;
	}
	struct serve_ctx sc = {s, dir, -1};
	const char *argv_worker[] = {"imgfs",    "--root", root, "layer-store",
	                             "--worker", dir,      NULL, NULL};

	/* A new worker logs as much as the first. */
	if (log_max_level >= LOG_DEBUG) {
		memmove(&argv_worker[4], &argv_worker[3], 3 * sizeof(*argv_worker));
		argv_worker[3] = "--debug";
	}

	r = lifecycle_start(s, &(struct lifecycle_opts){
	                           .mountpoint = dir,
	                           .foreground = foreground,
	                           .serve = serve,
	                           .userdata = &sc,
	                           .worker_argv = foreground ? NULL : argv_worker,
	                       });
	return r < 0 ? 1 : 0;
}
