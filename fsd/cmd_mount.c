/* imgfs mount / umount: start the FUSE daemon for an image, and stop it.
 *
 * Every mount has a directory ROOT/mounts/NAME, NAME derived from the mountpoint's
 * canonical path (mount_name()), holding:
 *   state   JSON {manifest, ref, mountpoint, pid, upper, ro}, written atomically and held
 *           LOCK_SH by the daemon for its whole life: store gc keeps what it names;
 *   log     the daemon's log (timestamps, pid), truncated at each mount;
 *   upper/, work/  the throwaway writable layer (when no --upper is given).
 * The daemon holds LOCK_EX on the directory itself: that is how a second mount of the same
 * mountpoint is refused, how umount waits for the daemon to exit, and how a dead daemon
 * (SIGKILL) is told from a live one. */
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/fs/fs.h"
#include "fsd/index/tree.h"
#include "fsd/fs/upper.h"
#include "fsd/fuse_ops.h"
#include "fsd/image/pull.h"
#include "fsd/image/store.h"

#define MOUNT_NAME_MAX 64
#define DAEMON_EXIT_TIMEOUT_MS 30000

static const char mount_usage[] =
    "Usage: imgfs [--root DIR] mount [-f] [--ro] [--upper DIR] [-o OPT] REF MOUNTPOINT\n"
    "\n"
    "Show the root filesystem of image REF at MOUNTPOINT, pulling the image first when it\n"
    "is not in the store. Nothing is extracted: file data is inflated when it is read.\n"
    "The command returns once the mount is live; a daemon serves it until `imgfs umount`.\n"
    "\n"
    "Options:\n"
    "  -f, --foreground   stay in the foreground, logging to standard error\n"
    "  --ro               read-only view\n"
    "  --upper DIR        keep the writable layer in DIR (overlayfs format) instead of a\n"
    "                     throwaway one in the store\n"
    "  -o OPT[,OPT...]    extra FUSE/mount options\n"
    "  -h, --help         show this help\n"
    "\n"
    "As root the mount allows setuid binaries and device nodes, so it can serve as a\n"
    "container root filesystem; every user may read it (allow_other), with the image's\n"
    "permissions enforced by the kernel (default_permissions). The daemon logs to\n"
    "ROOT/mounts/NAME/log.\n";

static const char umount_usage[] =
    "Usage: imgfs [--root DIR] umount MOUNTPOINT\n"
    "\n"
    "Unmount an imgfs mount, wait for its daemon to exit and remove its state and its\n"
    "throwaway writable layer (a layer given with --upper is kept). Also cleans up a mount\n"
    "whose daemon died.\n";

struct mount_ctx {
	struct store *s;
	const struct image_ref *ref;
	const char *manifest;   /* "sha256:…" */
	const char *mountpoint; /* canonical path */
	char name[MOUNT_NAME_MAX];
	const char *extra_opts;
	const char *upper; /* canonical --upper DIR, or NULL: ROOT/mounts/NAME/upper */
	bool foreground;
	bool ro;
};

/* ROOT/mounts/NAME for a canonical mountpoint path: the first 12 hex digits of the path's
 * sha256 (unique per path) and the sanitised last component (readable), e.g.
 * "3f2a9c01b7e4-alpine". */
static void mount_name(const char *path, char *buf, size_t size)
{
	char digest[DIGEST_STR_LEN + 1], base[33];
	const char *b = strrchr(path, '/');
	size_t n = 0;

	sha256_buf(path, strlen(path), digest);
	b = b && b[1] ? b + 1 : "root";
	for (; *b && n < sizeof(base) - 1; b++) {
		char c = *b;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		base[n++] = ok ? c : '_';
	}
	base[n] = '\0';
	snprintf(buf, size, "%.12s-%s", digest_hex(digest), base);
}

/* Canonical path of a mountpoint, also when it is a dead FUSE mount (stat fails with
 * ENOTCONN): then the parent is resolved and the last component appended. */
static int canonical_mountpoint(const char *arg, char **ret)
{
	_cleanup_free_ char *copy = NULL, *dir = NULL;
	char *p, *slash;

	p = realpath(arg, NULL);
	if (p) {
		*ret = p;
		return 0;
	}
	if (errno != ENOTCONN && errno != EIO)
		return -errno;
	copy = strdup(arg);
	if (!copy)
		return -ENOMEM;
	while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
		copy[strlen(copy) - 1] = '\0';
	slash = strrchr(copy, '/');
	if (slash) {
		*slash = '\0';
		dir = realpath(slash == copy ? "/" : copy, NULL);
		slash++;
	} else {
		dir = realpath(".", NULL);
		slash = copy;
	}
	if (!dir)
		return -errno;
	if (!*slash || streq(slash, ".") || streq(slash, ".."))
		return -EINVAL;
	p = path_join(dir, slash);
	if (!p)
		return -ENOMEM;
	*ret = p;
	return 0;
}

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_mountinfo(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else
			*w++ = *s;
	}
	*w = '\0';
}

/* Whether path is a mountpoint, and whether the topmost mount there is an imgfs one. */
static int find_mount(const char *path, bool *ret_mounted, bool *ret_imgfs)
{
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ char *line = NULL;
	bool mounted = false, imgfs = false;
	size_t cap = 0;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char *fields[5], *save = NULL, *tok, *sep;
		int n = 0;

		sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		for (tok = strtok_r(line, " ", &save); tok && n < 5;
		     tok = strtok_r(NULL, " ", &save))
			fields[n++] = tok;
		if (n < 5)
			continue;
		unescape_mountinfo(fields[4]);
		if (!streq(fields[4], path))
			continue;
		mounted = true;
		tok = strtok_r(sep + 3, " ", &save);
		imgfs = tok && streq(tok, "fuse.imgfs");
	}
	*ret_mounted = mounted;
	*ret_imgfs = imgfs;
	return 0;
}

/* Whether the FUSE mount at path lost its daemon. stat() may still succeed from the
 * kernel's attribute cache; statfs always asks the daemon. */
static bool mount_is_dead(const char *path)
{
	struct statfs sf;

	return statfs(path, &sf) < 0 && errno == ENOTCONN;
}

/* Refuses to stack a mount on an imgfs mount, live or dead. */
static int check_mountpoint_free(const char *path)
{
	bool mounted, is_imgfs;
	int r;

	r = find_mount(path, &mounted, &is_imgfs);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot mount '%s': cannot read the mount table",
		                 path);
	if (!mounted || !is_imgfs)
		return 0;
	if (mount_is_dead(path))
		log_msg(
		    LOG_ERR,
		    "cannot mount '%s': a dead imgfs mount is in the way; run 'imgfs umount %s' "
		    "first",
		    path, path);
	else
		log_msg(LOG_ERR, "cannot mount '%s': already mounted; run 'imgfs umount %s' first",
		        path, path);
	return -EBUSY;
}

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

/* Opens ROOT/mounts/NAME (creating it) and takes LOCK_EX on it without waiting.
 * -EBUSY when a live daemon holds it. */
static int lock_mount_dir(struct store *s, const char *name, int *ret_fd)
{
	char path[sizeof("mounts/") + MOUNT_NAME_MAX];
	int r;

	snprintf(path, sizeof(path), "mounts/%s", name);
	for (int attempt = 0; attempt < 10; attempt++) {
		_cleanup_close_ int fd = -1;
		struct stat a, b;

		r = mkdir_p_at(s->root_fd, path, 0700);
		if (r < 0)
			return r;
		fd = openat(s->root_fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			return -errno;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) < 0)
			return errno == EWOULDBLOCK ? -EBUSY : -errno;
		/* A umount may have removed the directory between our open and lock. */
		if (fstat(fd, &a) < 0)
			return -errno;
		if (fstatat(s->root_fd, path, &b, AT_SYMLINK_NOFOLLOW) < 0 ||
		    a.st_ino != b.st_ino || a.st_dev != b.st_dev)
			continue;
		*ret_fd = TAKE_FD(fd);
		return 0;
	}
	return -EAGAIN;
}

/* Writes the state file atomically, locked LOCK_SH before it becomes visible. Not synced:
 * it describes a running daemon, and only a locked state (a live daemon, so no crash since
 * it was written) is ever believed; after a crash it is stale whatever it contains. */
static int write_state(int dirfd, const struct mount_ctx *c, const char *upper_path, int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *text = NULL;
	json_t *o;

	o = json_pack("{s:s, s:s, s:s, s:I, s:o, s:b, s:b}", "manifest", c->manifest, "ref",
	              c->ref->name, "mountpoint", c->mountpoint, "pid", (json_int_t)getpid(),
	              "upper", c->ro ? json_null() : json_string(upper_path), "upper_given",
	              c->upper != NULL, "ro", c->ro);
	if (!o)
		return -ENOMEM;
	text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!text)
		return -ENOMEM;
	fd =
	    openat(dirfd, "state.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_SH) < 0)
		return -errno;
	if (write_full(fd, text, strlen(text)) < 0 || write_full(fd, "\n", 1) < 0)
		return negative_errno();
	if (renameat(dirfd, "state.tmp", dirfd, "state") < 0)
		return -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static int open_image_tree(struct store *s, const char *manifest, struct tree **ret)
{
	_cleanup_close_ int fd = -1;
	char path[128];

	store_path("trees", manifest, path, sizeof(path));
	fd = openat(s->root_fd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* No checksum walk over the tree and its indexes: they were verified when the pull
	 * wrote them, and every record is range-checked where it is used. */
	return tree_open_flags(store_layer_opener(s), fd, 0, ret);
}

/* Opens the writable layer: c->upper (kept across mounts) or ROOT/mounts/NAME/upper
 * (thrown away at umount), and a work directory on the same filesystem for atomic
 * copy-up. For --upper it is a hidden sibling of the upper directory when on its
 * filesystem, so that the copy-ups a killed daemon left pending are found by the next mount
 * of that upper (ROOT/mounts/NAME goes with `imgfs umount` of the dead mount); else, and
 * for a throwaway layer, ROOT/mounts/NAME/work. Logs its errors. */
static int open_upper(struct mount_ctx *c, int dirfd, const char *dir, char **ret_upper,
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
	else if (asprintf(&upper_path, "%s/%s/upper", c->s->root, dir) < 0)
		upper_path = NULL;
	if (!upper_path)
		return log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", c->mountpoint);
	if (!c->upper && mkdirat(dirfd, "upper", 0755) < 0 && errno != EEXIST)
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
		if (mkdirat(dirfd, "work", 0700) < 0 && errno != EEXIST)
			return log_errno(LOG_ERR, -errno, "cannot create %s/%s/work", c->s->root,
			                 dir);
		wfd = openat(dirfd, "work", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (wfd < 0 || fstat(wfd, &ws) < 0)
			return log_errno(LOG_ERR, -errno, "cannot open %s/%s/work", c->s->root,
			                 dir);
		if (ws.st_dev != us.st_dev)
			return log_errno(LOG_ERR, -EXDEV,
			                 "no work directory on the filesystem of '%s' (tried a "
			                 "hidden sibling and %s/%s/work)",
			                 upper_path, c->s->root, dir);
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

/* Tells the waiting parent the mount is live (a NUL byte after any log lines). */
static void notify_ready(int *notify_fd)
{
	if (*notify_fd < 0)
		return;
	(void)write_full(*notify_fd, "", 1);
	close(*notify_fd);
	*notify_fd = -1;
}

/* Runs in the daemon: sets up ROOT/mounts/NAME, opens the tree, mounts and serves until
 * unmounted. notify_fd (or -1 in the foreground) carries log lines to the parent until the
 * mount is live. Returns 0 or -errno (logged). */
static int run_daemon(struct mount_ctx *c, int notify_fd)
{
	_cleanup_close_ int dirfd = -1, state_fd = -1, log_fd = -1;
	_cleanup_free_ char *fsname = NULL;
	_cleanup_(fuse_ops_freep) struct fuse_ops_session *session = NULL;
	_cleanup_(imgfs_freep) struct imgfs *fs = NULL;
	_cleanup_free_ char *upper_path = NULL, *work_path = NULL;
	struct upper *upper = NULL;
	struct tree *t = NULL;
	struct lower lower;
	char dir[sizeof("mounts/") + MOUNT_NAME_MAX];
	int r;

	snprintf(dir, sizeof(dir), "mounts/%s", c->name);
	r = lock_mount_dir(c->s, c->name, &dirfd);
	if (r == -EBUSY)
		return log_errno(LOG_ERR, r, "'%s' is already mounted (state in %s/%s)",
		                 c->mountpoint, c->s->root, dir);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot create %s/%s", c->s->root, dir);

	/* Leftovers of a daemon that died: its throwaway layer is of no use to anyone. */
	(void)unlinkat(dirfd, "state", 0);
	(void)rm_rf_at(dirfd, "upper");
	if (!c->upper)
		(void)rm_rf_at(dirfd, "work");
	log_fd = openat(dirfd, "log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (log_fd < 0) {
		r = log_errno(LOG_ERR, -errno, "cannot create %s/%s/log", c->s->root, dir);
		goto fail;
	}
	/* Hold the store while starting, so gc cannot take the tree away before the state
	 * file names it. */
	r = store_lock_shared(c->s);
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot lock the store '%s'", c->s->root);
		goto fail;
	}
	r = open_image_tree(c->s, c->manifest, &t);
	if (r < 0) {
		log_errno(LOG_ERR, r, "%s: cannot open the tree of %s", c->ref->name, c->manifest);
		goto fail;
	}
	lower_from_tree(t, &lower);
	if (!c->ro) {
		r = open_upper(c, dirfd, dir, &upper_path, &work_path, &upper);
		if (r < 0) {
			tree_close(t);
			goto fail; /* logged */
		}
	}
	r = imgfs_new(&lower, &(struct imgfs_opts){.ro = c->ro, .upper = upper}, &fs);
	if (r < 0) {
		log_errno(LOG_ERR, r, "%s: cannot open the tree of %s", c->ref->name, c->manifest);
		goto fail;
	}
	if (c->upper) {
		r = imgfs_recover_copyups(fs);
		if (r < 0) {
			log_errno(LOG_ERR, r, "cannot recover the copy-ups of '%s'", c->upper);
			goto fail;
		}
		if (r > 0)
			log_msg(LOG_WARNING, "%d copied-up file(s) of '%s' rewritten after a crash",
			        r, c->upper);
	}
	r = write_state(dirfd, c, upper_path, &state_fd);
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot write %s/%s/state", c->s->root, dir);
		goto fail;
	}
	(void)flock(c->s->lock_fd, LOCK_UN);

	if (asprintf(&fsname, "imgfs:%s", c->ref->name) < 0) {
		r = log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", c->mountpoint);
		goto fail;
	}
	fuse_ops_route_logs();
	r = fuse_ops_mount(fs,
	                   &(struct fuse_ops_opts){
	                       .mountpoint = c->mountpoint,
	                       .fsname = fsname,
	                       .allow_other = geteuid() == 0 || user_allow_other(),
	                       .suid_dev = geteuid() == 0,
	                       .extra = c->extra_opts,
	                   },
	                   &session);
	if (r < 0)
		goto fail; /* logged */

	if (notify_fd >= 0) {
		int null_fd;

		log_set_fd(log_fd, true);
		notify_ready(&notify_fd);
		null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null_fd >= 0) {
			dup2(null_fd, STDIN_FILENO);
			dup2(null_fd, STDOUT_FILENO);
			/* What libc, libfuse or a sanitizer print on stderr is kept in the log. */
			dup2(log_fd, STDERR_FILENO);
			close(null_fd);
		}
	}
	if (chdir("/") < 0)
		log_errno(LOG_WARNING, -errno, "cannot change to /");
	log_msg(LOG_INFO, "mounted %s (%s) at %s%s", c->ref->name, c->manifest, c->mountpoint,
	        c->ro ? ", read-only" : "");

	r = fuse_ops_loop(session);
	if (r < 0)
		log_errno(LOG_ERR, r, "serving '%s' failed", c->mountpoint);
	fuse_ops_free(TAKE_PTR(session));
	imgfs_free(TAKE_PTR(fs));
	log_msg(LOG_INFO, "unmounted %s", c->mountpoint);
	/* Still holding the directory lock: nobody else uses it. umount waits for the lock
	 * and finds it gone. */
	/* Empty unless a copy-up could not be made durable: then kept for recovery. */
	if (work_path)
		(void)unlinkat(AT_FDCWD, work_path, AT_REMOVEDIR);
	(void)rm_rf_at(c->s->root_fd, dir);
	return r;

fail:
	if (work_path)
		(void)unlinkat(AT_FDCWD, work_path, AT_REMOVEDIR);
	(void)rm_rf_at(c->s->root_fd, dir);
	return r;
}

/* The parent of the daemon: copies its log lines to stderr until the NUL that says the
 * mount is live (exit 0) or the end of the pipe (the daemon failed: exit 1). */
static int wait_for_daemon(pid_t pid, int fd, const char *mountpoint)
{
	char buf[4096];
	bool ready = false;
	int status;

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		char *nul;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		nul = memchr(buf, '\0', (size_t)n);
		if (nul) {
			ready = true;
			n = nul - buf;
		}
		(void)write_full(STDERR_FILENO, buf, (size_t)n);
		if (ready)
			break;
	}
	if (ready)
		return 0;
	if (waitpid(pid, &status, 0) == pid && WIFSIGNALED(status))
		log_msg(LOG_ERR, "cannot mount '%s': the daemon was killed by signal %d",
		        mountpoint, WTERMSIG(status));
	return 1;
}

int cmd_mount(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"foreground", no_argument, NULL, 'f'},
	    {"ro", no_argument, NULL, 'r'},
	    {"upper", required_argument, NULL, 'u'},
	    {"help", no_argument, NULL, 'h'},
	    {},
	};
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_free_ char *manifest = NULL, *mountpoint = NULL, *extra = NULL, *upper_real = NULL;
	struct mount_ctx ctx = {0};
	const char *upper = NULL;
	struct pull_opts po = {0};
	int pipefd[2], c, r;
	struct stat st;
	pid_t pid;

	while ((c = getopt_long(argc, argv, "fo:h", opts, NULL)) >= 0) {
		switch (c) {
		case 'f':
			ctx.foreground = true;
			break;
		case 'r':
			ctx.ro = true;
			break;
		case 'u':
			upper = optarg;
			break;
		case 'o': {
			size_t len = extra ? strlen(extra) : 0;
			char *n = realloc(extra, len + strlen(optarg) + 2);

			if (!n)
				return log_errno(LOG_ERR, -ENOMEM, "mount"), 1;
			sprintf(n + len, "%s%s", len ? "," : "", optarg);
			extra = n;
			break;
		}
		case 'h':
			fputs(mount_usage, stdout);
			return 0;
		default:
			fputs("Try 'imgfs mount --help'.\n", stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		fputs(mount_usage, stderr);
		return 2;
	}
	if (upper && ctx.ro) {
		log_msg(LOG_ERR, "cannot mount '%s': --upper needs a writable mount",
		        argv[optind + 1]);
		return 2;
	}
	if (upper) {
		if (mkdir(upper, 0755) < 0 && errno != EEXIST) {
			log_errno(LOG_ERR, -errno, "cannot create the upper directory '%s'", upper);
			return 1;
		}
		upper_real = realpath(upper, NULL);
		if (!upper_real) {
			log_errno(LOG_ERR, -errno, "cannot use the upper directory '%s'", upper);
			return 1;
		}
	}
	if (parse_ref_arg(argv[optind], &ref))
		return 2;
	if (stat(argv[optind + 1], &st) < 0) {
		if (errno == ENOTCONN)
			log_msg(LOG_ERR,
			        "cannot mount '%s': a dead mount is in the way; run 'imgfs umount "
			        "%s' first",
			        argv[optind + 1], argv[optind + 1]);
		else
			log_errno(LOG_ERR, -errno, "cannot mount '%s'", argv[optind + 1]);
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_msg(LOG_ERR, "cannot mount '%s': not a directory", argv[optind + 1]);
		return 1;
	}
	mountpoint = realpath(argv[optind + 1], NULL);
	if (!mountpoint) {
		log_errno(LOG_ERR, -errno, "cannot mount '%s'", argv[optind + 1]);
		return 1;
	}
	r = check_mountpoint_free(mountpoint);
	if (r < 0)
		return 1;
	if (open_store(&s) < 0)
		return 1;
	r = pull_image(s, ref, &po, false, &manifest);
	if (r < 0)
		return 1; /* logged, naming the image */

	ctx.s = s;
	ctx.ref = ref;
	ctx.manifest = manifest;
	ctx.mountpoint = mountpoint;
	ctx.extra_opts = extra;
	ctx.upper = upper_real;
	mount_name(mountpoint, ctx.name, sizeof(ctx.name));

	if (ctx.foreground)
		return run_daemon(&ctx, -1) < 0 ? 1 : 0;

	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		log_errno(LOG_ERR, -errno, "cannot mount '%s'", mountpoint);
		return 1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		log_errno(LOG_ERR, -errno, "cannot mount '%s'", mountpoint);
		close(pipefd[0]);
		close(pipefd[1]);
		return 1;
	}
	if (pid == 0) {
		/* The daemon: its own session, so the terminal's signals do not reach it;
		 * messages go to the parent until the mount is live. A parent interrupted
		 * meanwhile must not kill it half-way with SIGPIPE. */
		close(pipefd[0]);
		setsid();
		signal(SIGPIPE, SIG_IGN);
		log_set_fd(pipefd[1], false);
		r = run_daemon(&ctx, pipefd[1]);
		_exit(r < 0 ? 1 : 0);
	}
	close(pipefd[1]);
	r = wait_for_daemon(pid, pipefd[0], mountpoint);
	close(pipefd[0]);
	return r;
}

/* Reads the daemon's pid from a state file, or 0. */
static pid_t state_pid(int dirfd)
{
	_cleanup_free_ char *text = NULL;
	json_t *o, *v;
	pid_t pid = 0;

	if (read_file_full(dirfd, "state", 1 << 16, &text, NULL) < 0)
		return 0;
	o = json_loads(text, 0, NULL);
	v = json_object_get(o, "pid");
	if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= INT_MAX)
		pid = (pid_t)json_integer_value(v);
	json_decref(o);
	return pid;
}

/* Non-root: fusermount3 -u [-z] path. */
static int fusermount_unmount(const char *path, bool lazy)
{
	int status;
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", "--", path, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return WIFEXITED(status) && WEXITSTATUS(status) == 127 ? -ENOENT : -EBUSY;
	return 0;
}

static int unmount_path(const char *path, bool lazy)
{
	if (geteuid() != 0)
		return fusermount_unmount(path, lazy);
	if (umount2(path, (lazy ? MNT_DETACH : 0) | UMOUNT_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to timeout_ms for LOCK_EX on fd (the daemon holds it until it exits), polling
 * with a backoff from 1 ms: a fallback for when the daemon's pid is not known. */
static int wait_lock(int fd, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (int delay = 1;; delay = MIN(delay * 2, 50)) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK)
			return -errno;
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		(void)poll(NULL, 0, delay);
	}
}

/* Waits up to timeout_ms for the daemon (pid, which holds LOCK_EX on fd) to exit, then
 * takes the lock. A pidfd becomes readable the moment the process exits, so this returns
 * as soon as the daemon is gone, without polling; the lock then is free (an flock is
 * released when its holder's last fd closes). */
static int wait_daemon_exit(int fd, pid_t pid, int timeout_ms)
{
	_cleanup_close_ int pidfd = -1;
	int64_t deadline = now_ms() + timeout_ms;
	struct pollfd p;
	int r;

	if (pid > 0)
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return wait_lock(fd, timeout_ms);
	p = (struct pollfd){.fd = pidfd, .events = POLLIN};
	for (;;) {
		int64_t left = deadline - now_ms();

		r = poll(&p, 1, (int)MAX(left, (int64_t)0));
		if (r > 0 || (r < 0 && errno != EINTR) || left <= 0)
			break;
	}
	/* Exited, or not the lock's holder after all (a stale pid): the lock decides. */
	return wait_lock(fd, r > 0 ? 1000 : 0);
}

int cmd_umount(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {}};
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int dirfd = -1;
	char name[MOUNT_NAME_MAX], dir[sizeof("mounts/") + MOUNT_NAME_MAX];
	bool mounted = false, is_imgfs = false, daemon_alive = false;
	const char *arg;
	pid_t pid = 0;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		if (c == 'h') {
			fputs(umount_usage, stdout);
			return 0;
		}
		fputs("Try 'imgfs umount --help'.\n", stderr);
		return 2;
	}
	if (argc - optind != 1) {
		fputs(umount_usage, stderr);
		return 2;
	}
	arg = argv[optind];
	r = canonical_mountpoint(arg, &path);
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot unmount '%s'", arg);
		return 1;
	}
	if (open_store(&s) < 0)
		return 1;
	mount_name(path, name, sizeof(name));
	snprintf(dir, sizeof(dir), "mounts/%s", name);

	dirfd = openat(s->root_fd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd >= 0) {
		pid = state_pid(dirfd);
		if (flock(dirfd, LOCK_EX | LOCK_NB) < 0) {
			if (errno != EWOULDBLOCK) {
				log_errno(LOG_ERR, -errno, "cannot lock %s/%s", s->root, dir);
				return 1;
			}
			daemon_alive = true;
		}
	}
	r = find_mount(path, &mounted, &is_imgfs);
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot unmount '%s': cannot read the mount table", path);
		return 1;
	}
	if (mounted && !is_imgfs) {
		log_msg(LOG_ERR, "cannot unmount '%s': not an imgfs mount", path);
		return 1;
	}
	if (!mounted && dirfd < 0) {
		log_msg(LOG_ERR, "cannot unmount '%s': not mounted", path);
		return 1;
	}
	if (mounted) {
		/* A daemon that died leaves a mount that answers ENOTCONN; nothing can be
		 * flushed through it any more, so detach it even when processes still use it. */
		bool dead = !daemon_alive || mount_is_dead(path);

		r = unmount_path(path, dead);
		if (r == -EBUSY) {
			log_msg(LOG_ERR, "cannot unmount '%s': target is busy", path);
			return 1;
		}
		if (r < 0 && r != -EINVAL && r != -ENOENT) {
			log_errno(LOG_ERR, r, "cannot unmount '%s'", path);
			return 1;
		}
	}
	if (dirfd < 0) {
		if (mounted)
			log_msg(LOG_WARNING,
			        "'%s' had no state under %s (mounted with another --root?)", path,
			        s->root);
		return 0;
	}
	if (daemon_alive) {
		r = wait_daemon_exit(dirfd, pid, DAEMON_EXIT_TIMEOUT_MS);
		if (r < 0) {
			log_errno(LOG_ERR, r,
			          "'%s' is unmounted but its daemon (pid %d) did not exit", path,
			          (int)pid);
			return 1;
		}
	}
	r = rm_rf_at(s->root_fd, dir);
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot remove %s/%s", s->root, dir);
		return 1;
	}
	return 0;
}
