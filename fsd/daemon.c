/* The process that serves an image mount; see daemon.h. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/daemon.h"
#include "fsd/fs/fs.h"
#include "fsd/fs/upper.h"
#include "fsd/fuse_ops.h"
#include "fsd/image/lazyimage.h"
#include "fsd/image/store.h"
#include "fsd/index/tree.h"
#include "fsd/index/unitcache.h"
#include "fsd/lifecycle.h"

/* Whether a non-root user may ask for allow_other (fusermount3 reads /etc/fuse.conf). */
static bool user_allow_other(void)
{
	_cleanup_fclose_ FILE *f = fopen("/etc/fuse.conf", "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;

	while (f && getline(&line, &cap, f) > 0) {
		char *p = line + strspn(line, " \t");

		if (startswith(p, "user_allow_other") && strchr(" \t\n", p[16]))
			return true;
	}
	return false;
}

static int open_image_tree(struct store *s, const char *manifest, struct lazyimage *lazy,
                           struct tree **ret)
{
	_cleanup_close_ int fd = -1;
	char path[128];

	store_path("trees", manifest, path, sizeof(path));
	fd = openat(s->root_fd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* No checksum walk over the tree and its indexes: they were verified when the pull
	 * wrote them, and every record is range-checked where it is used. */
	return tree_open_flags(lazy ? lazyimage_opener(lazy) : store_layer_opener(s), fd, 0, ret);
}

/* Opens the writable layer: c->upper (kept across mounts) or ROOT/mounts/NAME/upper
 * (thrown away at umount), and a work directory on the same filesystem for atomic
 * copy-up. For --upper it is a hidden sibling of the upper directory when on its
 * filesystem, so that the copy-ups a killed daemon left pending are found by the next mount
 * of that upper (ROOT/mounts/NAME goes with `imgfs umount` of the dead mount); else, and
 * for a throwaway layer, ROOT/mounts/NAME/work. Logs its errors. */
static int open_upper(const struct mount_request *c, struct lifecycle *lc, char **ret_upper,
                      char **ret_work, struct upper **ret)
{
	_cleanup_free_ char *upper_path = NULL, *work_path = NULL;
	_cleanup_close_ int ufd = -1, wfd = -1;
	struct stat us, ws;
	struct rlimit rl;
	int r;

	/* Directories of the writable layer are held open while the kernel knows them. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (c->upper)
		upper_path = strdup(c->upper);
	else
		upper_path = path_join(lifecycle_dir_path(lc), "upper");
	if (!upper_path)
		return log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", c->mountpoint);
	if (!c->upper && mkdirat(lifecycle_dir_fd(lc), "upper", 0755) < 0 && errno != EEXIST)
		return log_errno(LOG_ERR, -errno, "cannot create '%s'", upper_path);
	ufd = open(upper_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ufd < 0 || fstat(ufd, &us) < 0)
		return log_errno(LOG_ERR, -errno, "cannot open the upper directory '%s'",
		                 upper_path);
	if (c->upper) {
		_cleanup_free_ char *parent = strdup(upper_path);
		char *slash = parent ? strrchr(parent, '/') : NULL;

		if (!slash)
			return log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", c->mountpoint);
		*slash = '\0';
		if (asprintf(&work_path, "%s/.%s.imgfs-work", parent[0] ? parent : "", slash + 1) <
		    0) {
			work_path = NULL;
			return log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", c->mountpoint);
		}
		if (mkdir(work_path, 0700) < 0 && errno != EEXIST)
			log_errno(LOG_DEBUG, -errno, "cannot create '%s'", work_path);
		wfd = open(work_path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (wfd >= 0 && (fstat(wfd, &ws) < 0 || ws.st_dev != us.st_dev)) {
			close(wfd);
			wfd = -1;
			(void)unlinkat(AT_FDCWD, work_path, AT_REMOVEDIR);
		}
		if (wfd < 0) {
			free(work_path);
			work_path = NULL;
		}
	}
	if (wfd < 0) {
		int dirfd = lifecycle_dir_fd(lc);
		const char *dir = lifecycle_dir_path(lc);

		if (mkdirat(dirfd, "work", 0700) < 0 && errno != EEXIST)
			return log_errno(LOG_ERR, -errno, "cannot create %s/work", dir);
		wfd = openat(dirfd, "work", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (wfd < 0 || fstat(wfd, &ws) < 0)
			return log_errno(LOG_ERR, -errno, "cannot open %s/work", dir);
		if (ws.st_dev != us.st_dev)
			return log_errno(LOG_ERR, -EXDEV,
			                 "no work directory on the filesystem of '%s' (tried a "
			                 "hidden sibling and %s/work)",
			                 upper_path, dir);
	}
	r = upper_open(TAKE_FD(ufd), TAKE_FD(wfd),
	               geteuid() == 0 ? UPPER_XATTR_TRUSTED : UPPER_XATTR_USER, ret);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot use the upper directory '%s'", upper_path);
	/* A throwaway layer is deleted at the next mount: copy-ups need not be durable.
	 * Pending copy-ups name the image they came from. */
	if (!c->upper)
		upper_set_volatile(*ret);
	(void)upper_set_image(*ret, digest_hex(c->manifest));
	*ret_upper = TAKE_PTR(upper_path);
	*ret_work = TAKE_PTR(work_path);
	return 0;
}

/* A mount's figures for `imgfs status`: ROOT/mounts/NAME/decoded (the decoded-data
 * cache) and, for a lazy mount, ROOT/mounts/NAME/lazy, rewritten while they change. */
struct decoded_stats {
	uint64_t units;
	struct unitcache_stats cache;
};

struct stats_writer {
	struct store *s;
	/* What the daemons before this one counted (a takeover goes on from there). */
	struct decoded_stats base_decoded;
	uint64_t base_demand, base_fill;
	struct decoded_stats last_decoded;
	struct lazyimage *lazy; /* NULL unless lazy */
	int dirfd;
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;
};

/* Replaces name in dirfd by text, atomically but without syncing: the figures of a live
 * daemon (only it writes them), worthless after a crash. */
static int write_figures(int dirfd, const char *name, const char *text, size_t len)
{
	char tmp[64];
	int fd, r = 0;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	r = write_full(fd, text, len);
	close(fd);
	if (r >= 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0)
		(void)unlinkat(dirfd, tmp, 0);
	return r;
}

static void write_decoded(struct stats_writer *w, bool force)
{
	struct decoded_stats d = {.units = li_decoded_units()};
	char text[256];
	int n;

	unitcache_get_stats(w->s->ucache, &d.cache);
	d.units += w->base_decoded.units;
	d.cache.hits += w->base_decoded.cache.hits;
	d.cache.stored += w->base_decoded.cache.stored;
	d.cache.corrupt += w->base_decoded.cache.corrupt;
	d.cache.evicted += w->base_decoded.cache.evicted;
	if (!force && !memcmp(&d, &w->last_decoded, sizeof(d)))
		return;
	n = snprintf(text, sizeof(text),
	             "{\"units\":%" PRIu64 ",\"cache_hits\":%" PRIu64 ",\"cache_stored\":%" PRIu64
	             ",\"cache_corrupt\":%" PRIu64 ",\"cache_evicted\":%" PRIu64 "}\n",
	             d.units, d.cache.hits, d.cache.stored, d.cache.corrupt, d.cache.evicted);
	if (write_figures(w->dirfd, "decoded", text, (size_t)n) == 0)
		w->last_decoded = d;
}

static void write_stats(struct stats_writer *w, struct lazyimage_stats *last)
{
	struct lazyimage_stats st;
	char text[256];
	int n;

	write_decoded(w, !last);
	if (!w->lazy)
		return;
	lazyimage_get_stats(w->lazy, &st);
	st.demand_bytes += w->base_demand;
	st.fill_bytes += w->base_fill;
	if (last && !memcmp(&st, last, sizeof(st)))
		return;
	n = snprintf(text, sizeof(text),
	             "{\"demand_bytes\":%" PRIu64 ",\"fill_bytes\":%" PRIu64 ",\"present\":%" PRIu64
	             ",\"total\":%" PRIu64 ",\"layers\":%zu,\"complete\":%zu}\n",
	             st.demand_bytes, st.fill_bytes, st.present, st.total, st.layers, st.complete);
	if (write_figures(w->dirfd, "lazy", text, (size_t)n) == 0 && last)
		*last = st;
}

static void *stats_thread(void *userdata)
{
	struct stats_writer *w = userdata;
	struct lazyimage_stats last = {0};

	pthread_mutex_lock(&w->lock);
	while (!w->stop) {
		struct timespec ts;

		pthread_mutex_unlock(&w->lock);
		write_stats(w, &last);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&w->lock);
		if (!w->stop)
			pthread_cond_timedwait(&w->wake, &w->lock, &ts);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Starts the figures of the mount and, for a lazy one, the fill; a failure costs the
 * fill, not the mount (reads still fetch what they need). A daemon taking over counts on
 * from what the dead one wrote last (at most 250 ms old). */
static void start_stats(struct store *s, struct lazyimage *lazy, struct lifecycle *lc,
                        struct stats_writer *w)
{
	sigset_t all, old;
	int r;

	/* SIGTERM, SIGINT and SIGHUP must reach the thread that serves (libfuse's loop
	 * notices them only there): these threads, and curl's resolver threads they start,
	 * block every signal, as libfuse's own workers do. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (lazy) {
		r = lazyimage_start_fill(lazy);
		if (r < 0)
			log_errno(LOG_WARNING, r, "cannot start the background fetch");
	}
	*w = (struct stats_writer){.s = s, .lazy = lazy, .dirfd = lifecycle_dir_fd(lc)};
	if (lifecycle_is_takeover(lc)) {
		struct mount_status f;

		lifecycle_figures(lc, &f);
		w->base_decoded = (struct decoded_stats){.units = f.decoded_units,
		                                         .cache = {.hits = f.cache_hits,
		                                                   .stored = f.cache_stored,
		                                                   .corrupt = f.cache_corrupt,
		                                                   .evicted = f.cache_evicted}};
		w->base_demand = f.demand_bytes;
		w->base_fill = f.fill_bytes;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->wake, NULL);
	write_stats(w, NULL);
	w->running = pthread_create(&w->thread, NULL, stats_thread, w) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void stop_stats(struct stats_writer *w)
{
	if (!w->running)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	write_stats(w, NULL);
	w->running = false;
}

struct serve_ctx {
	struct store *s;
	const struct mount_request *req;
	int conn_fd; /* a worker taking over: the connection; else -1 */
};

#define INIT_FILE "fuse-init"
#define INIT_MAX 128

int daemon_save_init(struct lifecycle *lc, struct fuse_ops_session *session)
{
	const void *init;
	size_t len;
	int r;

	r = fuse_ops_init_data(session, &init, &len);
	if (r < 0)
		return r;
	return write_file_replace(lifecycle_dir_fd(lc), INIT_FILE, init, len, 0600);
}

int daemon_load_init(struct lifecycle *lc, char **ret, size_t *ret_len)
{
	return read_file_full(lifecycle_dir_fd(lc), INIT_FILE, INIT_MAX, ret, ret_len);
}

/* Runs in the daemon, with the mount claimed: opens the tree and the upper, registers the
 * mount, mounts it and serves until unmounted. Returns 0 or -errno (logged). */
static int serve(struct lifecycle *lc, void *userdata)
{
	struct serve_ctx *sc = userdata;
	const struct mount_request *c = sc->req;
	_cleanup_free_ char *fsname = NULL;
	_cleanup_(fuse_ops_freep) struct fuse_ops_session *session = NULL;
	_cleanup_(imgfs_freep) struct imgfs *fs = NULL;
	_cleanup_free_ char *upper_path = NULL, *work_path = NULL, *init = NULL;
	size_t init_len = 0;
	struct upper *upper = NULL;
	struct tree *t = NULL;
	struct lower lower;
	struct stats_writer stats = {0};
	int r;

	/* What earlier mounts of the image decoded is read back, not decoded again. */
	store_enable_unit_cache(sc->s);
	r = open_image_tree(sc->s, c->manifest, c->lazy, &t);
	if (r < 0)
		return log_errno(LOG_ERR, r, "%s: cannot open the tree of %s", c->ref, c->manifest);
	lower_from_tree(t, &lower);
	if (!c->ro) {
		r = open_upper(c, lc, &upper_path, &work_path, &upper);
		if (r < 0) {
			tree_close(t);
			return r; /* logged */
		}
	}
	r = imgfs_new(&lower,
	              &(struct imgfs_opts){.upper = upper,
	                                   .no_security_labels =
	                                       access("/sys/fs/selinux/enforce", F_OK) != 0},
	              &fs);
	if (r < 0) {
		log_errno(LOG_ERR, r, "%s: cannot open the tree of %s", c->ref, c->manifest);
		goto out;
	}
	if (upper && !lifecycle_is_takeover(lc))
		(void)imgfs_drop_orphans(fs);
	/* A worker taking over recovers what the dead one left half-done, like a new mount of
	 * the same --upper. */
	if (c->upper || (lifecycle_is_takeover(lc) && upper)) {
		r = imgfs_recover_copyups(fs);
		if (r < 0) {
			log_errno(LOG_ERR, r, "cannot recover the copy-ups of '%s'", c->upper);
			goto out;
		}
		if (r > 0)
			log_msg(LOG_WARNING, "%d copied-up file(s) of '%s' rewritten after a crash",
			        r, c->upper);
	}
	if (!lifecycle_is_takeover(lc))
		r = lifecycle_register(lc, &(struct mount_info){
		                               .manifest = c->manifest,
		                               .ref = c->ref,
		                               .mountpoint = c->mountpoint,
		                               .upper = upper_path,
		                               .upper_given = c->upper != NULL,
		                               .ro = c->ro,
		                               .lazy = c->lazy != NULL,
		                               .extra_opts = c->extra_opts,
		                           });
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot write %s/state", lifecycle_dir_path(lc));
		goto out;
	}
	if (asprintf(&fsname, "imgfs:%s", c->ref) < 0) {
		fsname = NULL;
		r = log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", c->mountpoint);
		goto out;
	}
	fuse_ops_route_logs();
	if (lifecycle_is_takeover(lc)) {
		r = daemon_load_init(lc, &init, &init_len);
		if (r < 0) {
			log_errno(LOG_ERR, r, "cannot take over '%s': cannot read %s/%s",
			          c->mountpoint, lifecycle_dir_path(lc), INIT_FILE);
			goto out;
		}
	}
	r = fuse_ops_mount(fs,
	                   &(struct fuse_ops_opts){
	                       .mountpoint = c->mountpoint,
	                       .fsname = fsname,
	                       .allow_other = geteuid() == 0 || user_allow_other(),
	                       .suid_dev = geteuid() == 0,
	                       .extra = c->extra_opts,
	                       .supervised = lifecycle_supervised(lc),
	                       .state_dirfd = lifecycle_dir_fd(lc),
	                       .takeover = lifecycle_is_takeover(lc),
	                       .conn_fd = sc->conn_fd,
	                       .init = init,
	                       .init_len = init_len,
	                   },
	                   &session);
	if (r < 0)
		goto out; /* logged */
	if (lifecycle_supervised(lc) && !lifecycle_is_takeover(lc)) {
		r = daemon_save_init(lc, session);
		if (r < 0) {
			log_errno(LOG_ERR, r, "cannot write %s/%s", lifecycle_dir_path(lc),
			          INIT_FILE);
			goto out;
		}
	}
	lifecycle_ready(lc, fuse_ops_conn_fd(session));
	start_stats(sc->s, c->lazy, lc, &stats);
	if (chdir("/") < 0)
		log_errno(LOG_WARNING, -errno, "cannot change to /");
	log_msg(LOG_INFO, "%s %s (%s) at %s%s", lifecycle_is_takeover(lc) ? "took over" : "mounted",
	        c->ref, c->manifest, c->mountpoint, c->ro ? ", read-only" : "");

	r = fuse_ops_loop(session);
	if (r < 0)
		log_errno(LOG_ERR, r, "serving '%s' failed", c->mountpoint);
	stop_stats(&stats);
	fuse_ops_free(TAKE_PTR(session));
	imgfs_free(TAKE_PTR(fs));
	log_msg(LOG_INFO, "unmounted %s", c->mountpoint);
out:
	/* Empty unless a copy-up could not be made durable: then kept for recovery. */
	if (work_path)
		(void)unlinkat(AT_FDCWD, work_path, AT_REMOVEDIR);
	return r;
}

int daemon_mount(struct store *s, const struct mount_request *req)
{
	struct serve_ctx sc = {s, req, -1};
	_cleanup_free_ char *root = realpath(s->root, NULL);
	const char *argv[] = {"imgfs", "--root", root, "serve-worker", req->mountpoint, NULL, NULL};

	/* A new worker logs as much as the first. */
	if (log_max_level >= LOG_DEBUG) {
		argv[5] = argv[4];
		argv[4] = argv[3];
		argv[3] = "--debug";
	}

	if (!root)
		return log_errno(LOG_ERR, -errno, "cannot use the store '%s'", s->root);
	return lifecycle_start(s, &(struct lifecycle_opts){
	                              .mountpoint = req->mountpoint,
	                              .foreground = req->foreground,
	                              .keep_work = req->upper != NULL,
	                              .serve = serve,
	                              .userdata = &sc,
	                              .worker_argv = req->foreground ? NULL : argv,
	                          });
}

int daemon_take_over(struct store *s, struct lifecycle *lc, const struct mount_request *req,
                     int conn_fd)
{
	struct serve_ctx sc = {s, req, conn_fd};

	return serve(lc, &sc);
}
