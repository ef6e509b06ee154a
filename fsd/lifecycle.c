/* The life cycle of a mount; see lifecycle.h. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/image/store.h"
#include "fsd/lifecycle.h"

#define DAEMON_EXIT_TIMEOUT_MS 30000
#define STATE_MAX_SIZE (1 << 16)
#define MOUNT_DIR_MAX (sizeof("mounts/") + LIFECYCLE_NAME_MAX)
#define RESTART_TIMEOUT_MS 30000
/* How a supervisor hands the connection and its end of the control socket to a worker it
 * executes: "CONN_FD,CTL_FD". */
#define HANDOFF_ENV "IMGFS_HANDOFF"

/* Worker -> supervisor messages on the control socket (SOCK_SEQPACKET). */
enum ctl_kind {
	CTL_REGISTERED = 1, /* with the state fd (LOCK_SH): the first worker registered */
	CTL_READY = 2,      /* serving; the first worker passes the connection fd */
};

struct lifecycle {
	struct store *s;
	char name[LIFECYCLE_NAME_MAX];
	char rel[MOUNT_DIR_MAX]; /* "mounts/NAME", below the store's root */
	char *dir_path;          /* ROOT/mounts/NAME, absolute */
	int dir_fd;              /* LOCK_EX for the daemon's life */
	int state_fd;            /* LOCK_SH for the daemon's life */
	int log_fd;
	int notify_fd; /* to the waiting parent until ready, else -1 */
	bool store_locked;
	bool registered;
	bool linked;      /* the runtime link, written by lifecycle_register() */
	pid_t supervisor; /* supervised mounts: the supervisor's pid, else 0 */
	int ctl_fd;       /* in a worker of a supervised mount: to the supervisor, else -1 */
	bool attached;    /* a worker executed by the supervisor (lifecycle_attach()) */
	bool ready;       /* lifecycle_ready() was called */
};

void lifecycle_name(const char *mountpoint, char buf[LIFECYCLE_NAME_MAX])
{
	char digest[DIGEST_STR_LEN + 1], base[33];
	const char *b = strrchr(mountpoint, '/');
	size_t n = 0;

	sha256_buf(mountpoint, strlen(mountpoint), digest);
	b = b && b[1] ? b + 1 : "root";
	for (; *b && n < sizeof(base) - 1; b++) {
		char c = *b;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		base[n++] = ok ? c : '_';
	}
	base[n] = '\0';
	snprintf(buf, LIFECYCLE_NAME_MAX, "%.12s-%s", digest_hex(digest), base);
}

int lifecycle_canonical_path(const char *arg, char **ret)
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

/* The runtime directory's mounts/, or NULL when there is none (non-root without
 * $XDG_RUNTIME_DIR). Malloc'ed. */
static char *runtime_mounts_dir(void)
{
	const char *env = getenv("IMGFS_RUNTIME_DIR"), *xdg = getenv("XDG_RUNTIME_DIR");
	char *p = NULL;

	if (env && *env)
		return path_join(env, "mounts");
	if (geteuid() == 0)
		return strdup("/run/imgfs/mounts");
	if (xdg && *xdg && asprintf(&p, "%s/imgfs/mounts", xdg) < 0)
		p = NULL;
	return p;
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

/* Opens ROOT/mounts/NAME (creating it) and takes LOCK_EX on it without waiting.
 * -EBUSY when a live daemon holds it. */
static int lock_mount_dir(struct store *s, const char *name, int *ret_fd)
{
	char path[MOUNT_DIR_MAX];
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
		/* A stop may have removed the directory between our open and lock. */
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

static void remove_runtime_link(const char *name, const char *dir);
static int unmount_path(const char *path, bool lazy);

static void lifecycle_free(struct lifecycle *lc)
{
	if (!lc)
		return;
	if (lc->ctl_fd >= 0)
		close(lc->ctl_fd);
	if (lc->attached) {
		lc->linked = false;
		if (lc->dir_fd >= 0)
			close(TAKE_FD(lc->dir_fd));
	}
	if (lc->store_locked)
		(void)flock(lc->s->lock_fd, LOCK_UN);
	if (lc->linked)
		remove_runtime_link(lc->name, lc->dir_path);
	/* Still holding the directory lock: nobody else uses it. A stop waits for the lock
	 * and finds the directory gone. */
	if (lc->dir_fd >= 0)
		(void)rm_rf_at(lc->s->root_fd, lc->rel);
	free(lc->dir_path);
	if (lc->state_fd >= 0)
		close(lc->state_fd);
	if (lc->log_fd >= 0)
		close(lc->log_fd);
	if (lc->notify_fd >= 0)
		close(lc->notify_fd);
	if (lc->dir_fd >= 0)
		close(lc->dir_fd);
	free(lc);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct lifecycle *, lifecycle_free);

/* Claims ROOT/mounts/NAME for o->mountpoint and locks the store shared. */
static int claim(struct store *s, const struct lifecycle_opts *o, int notify_fd,
                 struct lifecycle **ret)
{
	_cleanup_(lifecycle_freep) struct lifecycle *lc = NULL;
	_cleanup_free_ char *root = NULL;
	int r;

	lc = calloc(1, sizeof(*lc));
	if (!lc)
		return log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", o->mountpoint);
	*lc = (struct lifecycle){.s = s,
	                         .dir_fd = -1,
	                         .state_fd = -1,
	                         .log_fd = -1,
	                         .notify_fd = notify_fd,
	                         .ctl_fd = -1};
	lifecycle_name(o->mountpoint, lc->name);
	r = lock_mount_dir(s, lc->name, &lc->dir_fd);
	if (r == -EBUSY)
		return log_errno(LOG_ERR, r, "'%s' is already mounted (state in %s/mounts/%s)",
		                 o->mountpoint, s->root, lc->name);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot create %s/mounts/%s", s->root, lc->name);
	snprintf(lc->rel, sizeof(lc->rel), "mounts/%s", lc->name);
	root = realpath(s->root, NULL);
	if (!root)
		return log_errno(LOG_ERR, -errno, "cannot use the store '%s'", s->root);
	lc->dir_path = path_join(root, lc->rel);
	if (!lc->dir_path)
		return log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", o->mountpoint);
	/* Leftovers of a daemon that died: its throwaway layer is of no use to anyone. */
	(void)unlinkat(lc->dir_fd, "state", 0);
	(void)unlinkat(lc->dir_fd, "worker", 0);
	(void)rm_rf_at(lc->dir_fd, "upper");
	if (!o->keep_work)
		(void)rm_rf_at(lc->dir_fd, "work");
	lc->log_fd =
	    openat(lc->dir_fd, "log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (lc->log_fd < 0)
		return log_errno(LOG_ERR, -errno, "cannot create %s/log", lc->dir_path);
	r = store_lock_shared(s);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot lock the store '%s'", s->root);
	lc->store_locked = true;
	*ret = TAKE_PTR(lc);
	return 0;
}

int lifecycle_dir_fd(const struct lifecycle *lc)
{
	return lc->dir_fd;
}

const char *lifecycle_dir_path(const struct lifecycle *lc)
{
	return lc->dir_path;
}

/* Points the runtime directory's mounts/NAME at ROOT/mounts/NAME. A hint only: a failure
 * leaves umount to find the mount through --root. */
static void write_runtime_link(struct lifecycle *lc)
{
	_cleanup_free_ char *dir = runtime_mounts_dir(), *tmp = NULL, *link = NULL;

	if (!dir || mkdir_p_at(AT_FDCWD, dir, 0700) < 0)
		return;
	link = path_join(dir, lc->name);
	if (!link)
		return;
	if (asprintf(&tmp, "%s.%d.tmp", link, (int)getpid()) < 0) {
		tmp = NULL;
		return;
	}
	(void)unlink(tmp);
	if (symlink(lc->dir_path, tmp) < 0 || rename(tmp, link) < 0) {
		log_errno(LOG_DEBUG, -errno, "cannot write the runtime link '%s'", link);
		(void)unlink(tmp);
		return;
	}
	lc->linked = true;
}

/* One control message, with fd (>= 0) passed along. */
static int ctl_send(int sock, enum ctl_kind kind, int fd)
{
	uint32_t k = kind;
	struct iovec iov = {.iov_base = &k, .iov_len = sizeof(k)};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = sizeof(u.buf);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	for (;;) {
		if (sendmsg(sock, &m, MSG_NOSIGNAL) >= 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

/* Receives one control message: its kind, and the fd passed along (-1 when none).
 * 0 at the end of the stream (the worker is gone). */
static int ctl_recv(int sock, uint32_t *ret_kind, int *ret_fd)
{
	uint32_t k = 0;
	struct iovec iov = {.iov_base = &k, .iov_len = sizeof(k)};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {.msg_iov = &iov,
	                   .msg_iovlen = 1,
	                   .msg_control = u.buf,
	                   .msg_controllen = sizeof(u.buf)};
	ssize_t n;

	*ret_fd = -1;
	do
		n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)) && *ret_fd < 0)
			memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	if (n == 0)
		return 0;
	if (n != sizeof(k)) {
		if (*ret_fd >= 0)
			close(TAKE_FD(*ret_fd));
		return -EBADMSG;
	}
	*ret_kind = k;
	return 1;
}

/* Not synced: the state describes a running daemon, and only a locked state (a live
 * daemon, so no crash since it was written) is ever believed; after a crash it is stale
 * whatever it contains. */
int lifecycle_register(struct lifecycle *lc, const struct mount_info *info)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *text = NULL;
	json_t *o;

	if ((info->manifest && !digest_valid(info->manifest)) || lc->registered)
		return -EINVAL;
	/* pid: the process whose exit a stop waits for, the supervisor when there is one. */
	/* worker: the process serving now, until the supervisor writes ROOT/mounts/NAME/worker. */
	o = json_pack("{s:o, s:s, s:s, s:I, s:I, s:o, s:b, s:b, s:b, s:b, s:o}", "manifest",
	              info->manifest ? json_string(info->manifest) : json_null(), "ref", info->ref,
	              "mountpoint", info->mountpoint, "pid",
	              (json_int_t)(lc->supervisor ? lc->supervisor : getpid()), "worker",
	              (json_int_t)getpid(), "upper",
	              info->upper ? json_string(info->upper) : json_null(), "upper_given",
	              info->upper_given, "ro", info->ro, "lazy", info->lazy, "supervised",
	              lc->supervisor != 0, "opts",
	              info->extra_opts ? json_string(info->extra_opts) : json_null());
	if (!o)
		return -ENOMEM;
	text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!text)
		return -ENOMEM;
	fd = openat(lc->dir_fd, "state.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
	            0644);
	if (fd < 0)
		return -errno;
	/* Locked before it becomes visible: gc never sees it unlocked while we live. */
	if (flock(fd, LOCK_SH) < 0)
		return -errno;
	if (write_full(fd, text, strlen(text)) < 0 || write_full(fd, "\n", 1) < 0)
		return negative_errno();
	if (renameat(lc->dir_fd, "state.tmp", lc->dir_fd, "state") < 0)
		return -errno;
	lc->state_fd = TAKE_FD(fd);
	lc->registered = true;
	write_runtime_link(lc);
	if (lc->store_locked) {
		(void)flock(lc->s->lock_fd, LOCK_UN);
		lc->store_locked = false;
	}
	/* The supervisor keeps the lock for as long as the mount lives, whatever the worker. */
	if (lc->ctl_fd >= 0)
		return ctl_send(lc->ctl_fd, CTL_REGISTERED, lc->state_fd);
	return 0;
}

int lifecycle_set_held(struct lifecycle *lc, const char *const *manifests, size_t n)
{
	_cleanup_free_ char *text = malloc(n * (DIGEST_STR_LEN + 1) + 1);
	size_t len = 0;

	if (!text)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!digest_valid(manifests[i]))
			return -EINVAL;
		len += (size_t)sprintf(text + len, "%s\n", manifests[i]);
	}
	return write_file_atomic(lc->dir_fd, "held", text, len, 0644);
}

/* Messages to the log, stdin and stdout to /dev/null, stderr to the log (what libc,
 * libfuse or a sanitizer print there is kept). */
static void redirect_to_log(int log_fd)
{
	int null_fd;

	log_set_fd(log_fd, true);
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd >= 0) {
		dup2(null_fd, STDIN_FILENO);
		dup2(null_fd, STDOUT_FILENO);
		dup2(log_fd, STDERR_FILENO);
		close(null_fd);
	}
}

bool lifecycle_supervised(const struct lifecycle *lc)
{
	return lc->supervisor != 0 || lc->attached;
}

bool lifecycle_is_takeover(const struct lifecycle *lc)
{
	return lc->attached;
}

/* A thread of the first worker: it dies with its supervisor, as the later workers do
 * (PR_SET_PDEATHSIG), though the supervisor is its child. The supervisor never writes on
 * the control socket: it polls readable or hung up only once the supervisor is gone. */
static void *watch_supervisor(void *arg)
{
	struct pollfd p = {.fd = (int)(intptr_t)arg, .events = POLLIN};

	while (poll(&p, 1, -1) < 0 && errno == EINTR)
		;
	log_msg(LOG_ERR, "the supervisor of this mount is gone; ending");
	(void)kill(getpid(), SIGKILL);
	return NULL;
}

void lifecycle_ready(struct lifecycle *lc, int conn_fd)
{
	if (lc->ready)
		return;
	lc->ready = true;
	/* The supervisor gets the connection before the parent hears the mount is live: a
	 * worker killed from then on is replaced. */
	if (lc->ctl_fd >= 0)
		(void)ctl_send(lc->ctl_fd, CTL_READY, lc->attached ? -1 : conn_fd);
	if (lc->notify_fd < 0)
		return;
	redirect_to_log(lc->log_fd);
	(void)write_full(lc->notify_fd, "", 1);
	close(TAKE_FD(lc->notify_fd));
	if (lc->ctl_fd >= 0 && !lc->attached) {
		pthread_t t;

		if (pthread_create(&t, NULL, watch_supervisor, (void *)(intptr_t)lc->ctl_fd) == 0)
			pthread_detach(t);
	}
}

/* The daemon: claims the mount and serves it. notify_fd is -1 in the foreground. */
static int run_daemon(struct store *s, const struct lifecycle_opts *o, int notify_fd)
{
	_cleanup_(lifecycle_freep) struct lifecycle *lc = NULL;
	int r;

	r = claim(s, o, notify_fd, &lc);
	if (r < 0) {
		if (notify_fd >= 0)
			close(notify_fd);
		return r;
	}
	r = o->serve(lc, o->userdata);
	if (r >= 0 && !lc->registered)
		r = log_errno(LOG_ERR, -EINVAL, "'%s' was served without a state", o->mountpoint);
	return r;
}

/* ---- the supervisor of a mount ---- */

/* A worker that crashes (SIGSEGV and the like, not a kill) CRASH_LIMIT times within
 * CRASH_WINDOW_MS is not replaced again: a request that crashes every worker would
 * otherwise keep the mount in a loop of restarts. */
#define CRASH_LIMIT 5
#define CRASH_WINDOW_MS 60000
/* The exit status of a child that could not execute the worker. */
#define WORKER_EXEC_FAILED 127

struct supervisor {
	struct lifecycle *lc;
	const struct lifecycle_opts *o;
	char *exe;    /* the binary to execute for a new worker, as it was named at start */
	int conn_fd;  /* the connection, once the first worker passed it; else -1 */
	int ctl_fd;   /* our end of the current worker's control socket, or -1 */
	pid_t worker; /* the current worker, 0 when none */
	int pidfd;    /* the first worker's, which is our parent, not our child; else -1 */
	bool serving; /* the current worker said it serves */
	bool ever_ready;
	bool stopping;   /* asked to stop: no new worker */
	bool restarting; /* the current worker is being replaced on request */
	unsigned restarts;
	uint64_t crash_ms[CRASH_LIMIT]; /* when the last workers crashed (a ring) */
	unsigned n_crashes;
};

/* The path of the running binary, without the " (deleted)" the kernel appends once it was
 * replaced: the name an upgrade installs the new binary under. */
static char *self_exe(void)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	if (n > 10 && streq(buf + n - 10, " (deleted)"))
		buf[n - 10] = '\0';
	return strdup(buf);
}

/* ROOT/mounts/NAME/worker: the worker serving now and how many came before it. */
static void write_worker_file(struct supervisor *sv)
{
	char text[128];
	int n = snprintf(text, sizeof(text), "{\"pid\":%d,\"restarts\":%u}\n", (int)sv->worker,
	                 sv->restarts);

	(void)write_file_replace(sv->lc->dir_fd, "worker", text, (size_t)n, 0644);
}

/* Whether the connection still serves a mount: the kernel flags the device with POLLERR
 * once the filesystem is unmounted or the connection aborted. */
static bool conn_alive(int fd)
{
	struct pollfd p = {.fd = fd, .events = 0};

	if (fd < 0)
		return false;
	return !(poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLNVAL)));
}

/* In a child of the supervisor: dies with it, and gets the signals it blocked back. */
static void worker_child_setup(pid_t supervisor, const sigset_t *mask)
{
	signal(SIGPIPE, SIG_IGN);
	sigprocmask(SIG_SETMASK, mask, NULL);
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != supervisor)
		_exit(1);
}

/* Moves fd to target (which may be taken by something else that is then closed). */
static int move_fd(int fd, int target)
{
	if (fd == target)
		return fcntl(fd, F_SETFD, 0) < 0 ? -errno : 0;
	if (dup2(fd, target) < 0)
		return -errno;
	return 0;
}

/* Executes a new worker with the connection and a control socket. */
static int spawn_worker(struct supervisor *sv, const sigset_t *mask)
{
	int sp[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int r = -errno;

		close(sp[0]);
		close(sp[1]);
		return r;
	}
	if (pid == 0) {
		size_t n = 0;
		const char **argv;
		int conn, ctl;

		worker_child_setup(sv->lc->supervisor, mask);
		/* Above the numbers they move to, so that neither overwrites the other. */
		conn = fcntl(sv->conn_fd, F_DUPFD_CLOEXEC, 10);
		ctl = fcntl(sp[1], F_DUPFD_CLOEXEC, 10);
		if (conn < 0 || ctl < 0 || move_fd(conn, 3) < 0 || move_fd(ctl, 4) < 0 ||
		    setenv(HANDOFF_ENV, "3,4", 1) < 0) {
			log_errno(LOG_ERR, -errno, "cannot start a new daemon for '%s'",
			          sv->o->mountpoint);
			_exit(126);
		}
		while (sv->o->worker_argv[n])
			n++;
		argv = calloc(n + 1, sizeof(*argv));
		if (!argv)
			_exit(126);
		argv[0] = sv->exe;
		for (size_t i = 1; i < n; i++)
			argv[i] = sv->o->worker_argv[i];
		execv(sv->exe, (char *const *)argv);
		_exit(WORKER_EXEC_FAILED); /* the supervisor says why */
	}
	close(sp[1]);
	sv->ctl_fd = sp[0];
	sv->worker = pid;
	sv->serving = false;
	return 0;
}

/* A message of the current worker. */
static void handle_ctl(struct supervisor *sv)
{
	struct lifecycle *lc = sv->lc;
	uint32_t kind = 0;
	int fd = -1, r;

	r = ctl_recv(sv->ctl_fd, &kind, &fd);
	if (r <= 0) {
		/* The worker is gone (its exit is handled on SIGCHLD). */
		close(TAKE_FD(sv->ctl_fd));
		return;
	}
	if (kind == CTL_REGISTERED && fd >= 0 && !lc->registered) {
		lc->state_fd = TAKE_FD(fd);
		lc->registered = true;
		lc->linked = true;
		lc->store_locked = false; /* the worker released it, for both of us */
	} else if (kind == CTL_READY && lc->registered && (fd >= 0 || sv->conn_fd >= 0)) {
		if (sv->conn_fd < 0)
			sv->conn_fd = TAKE_FD(fd);
		sv->serving = true;
		/* A later worker: named in ROOT/mounts/NAME/worker, and logged. The first one
		 * is named in the state and tells the waiting parent itself: nothing to write at
		 * the moment the waiting command wakes up. */
		if (sv->ever_ready) {
			write_worker_file(sv);
			log_msg(LOG_INFO, "daemon %d took over '%s' (restart %u)", (int)sv->worker,
			        sv->o->mountpoint, sv->restarts);
		}
		sv->ever_ready = true;
	}
	if (fd >= 0)
		close(fd);
}

/* The worker exited: the mount ends, or a new worker takes over. status: its wait status,
 * NULL for the first worker (not our child, so its status is not ours to know). Returns 1
 * to go on, 0 when the mount ended, -errno when it failed (logged). */
static int worker_exited(struct supervisor *sv, const int *wstatus, const sigset_t *mask)
{
	bool was_serving = sv->serving;
	pid_t was = sv->worker;
	int status = wstatus ? *wstatus : 0, r;

	sv->worker = 0;
	sv->serving = false;
	if (sv->ctl_fd >= 0)
		close(TAKE_FD(sv->ctl_fd));
	if (sv->pidfd >= 0)
		close(TAKE_FD(sv->pidfd));
	/* The first worker died before the mount was live: its parent, waiting, says so. */
	if (!sv->ever_ready)
		return -EIO;
	if (sv->stopping || !conn_alive(sv->conn_fd))
		return 0; /* unmounted */
	if (!was_serving && wstatus && WIFEXITED(status) &&
	    WEXITSTATUS(status) == WORKER_EXEC_FAILED && access(sv->exe, X_OK) < 0) {
		log_msg(
		    LOG_ERR,
		    "'%s' is dead: cannot execute '%s' for a new daemon: %s; run 'imgfs umount %s'",
		    sv->o->mountpoint, sv->exe, strerror(errno), sv->o->mountpoint);
		return -EIO;
	}
	if (!was_serving && wstatus) {
		log_msg(LOG_ERR,
		        "'%s' is dead: its new daemon could not start (exit status %d); run "
		        "'imgfs umount %s'",
		        sv->o->mountpoint,
		        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
		        sv->o->mountpoint);
		return -EIO;
	}
	if (wstatus && WIFSIGNALED(status) && !sv->restarting &&
	    (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS ||
	     WTERMSIG(status) == SIGABRT || WTERMSIG(status) == SIGILL ||
	     WTERMSIG(status) == SIGFPE || WTERMSIG(status) == SIGSYS)) {
		uint64_t now = monotonic_ms();

		sv->crash_ms[sv->n_crashes++ % CRASH_LIMIT] = now;
		if (sv->n_crashes >= CRASH_LIMIT &&
		    now - sv->crash_ms[sv->n_crashes % CRASH_LIMIT] < CRASH_WINDOW_MS) {
			log_msg(
			    LOG_ERR,
			    "'%s' is dead: its daemon crashed %d times within %d s (last: signal "
			    "%d); run 'imgfs umount %s'",
			    sv->o->mountpoint, CRASH_LIMIT, CRASH_WINDOW_MS / 1000,
			    WTERMSIG(status), sv->o->mountpoint);
			return -EIO;
		}
	}
	if (sv->restarting)
		log_msg(LOG_INFO, "replacing the daemon of '%s' with '%s'", sv->o->mountpoint,
		        sv->exe);
	else if (!wstatus)
		log_msg(LOG_WARNING, "the daemon of '%s' (pid %d) ended; starting a new one",
		        sv->o->mountpoint, (int)was);
	else if (WIFSIGNALED(status))
		log_msg(LOG_WARNING,
		        "the daemon of '%s' was killed by signal %d; starting a new one",
		        sv->o->mountpoint, WTERMSIG(status));
	else
		log_msg(LOG_WARNING, "the daemon of '%s' exited with status %d; starting a new one",
		        sv->o->mountpoint, WEXITSTATUS(status));
	sv->restarting = false;
	sv->restarts++;
	r = spawn_worker(sv, mask);
	if (r < 0)
		return log_errno(LOG_ERR, r, "'%s' is dead: cannot start a new daemon",
		                 sv->o->mountpoint);
	return 1;
}

/* SIGKILL to the current worker; through its pidfd when it is not our child (a pid alone
 * could be another process's once it was reaped). */
static void kill_worker(struct supervisor *sv)
{
	if (sv->pidfd >= 0)
		(void)syscall(SYS_pidfd_send_signal, sv->pidfd, SIGKILL, NULL, 0);
	else if (sv->worker > 0)
		(void)kill(sv->worker, SIGKILL);
}

/* A stop asked by signal: unmount (detached, as umount does for a busy mount) and let the
 * worker end; when the mount is not ours to unmount here, end the worker. */
static void supervisor_stop(struct supervisor *sv)
{
	sv->stopping = true;
	if (sv->ever_ready && unmount_path(sv->o->mountpoint, true) == 0)
		return;
	kill_worker(sv);
}

/* Closes every fd above stderr but those in keep. */
static void close_others(const int *keep, size_t n)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int self = d ? dirfd(d) : -1;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);
		bool kept = false;

		if (*end || end == de->d_name || fd <= STDERR_FILENO || fd == self)
			continue;
		for (size_t i = 0; i < n; i++)
			kept = kept || keep[i] == fd;
		if (!kept)
			close((int)fd);
	}
	closedir(d);
}

/* The supervisor, forked by the first worker (first) once the mount is claimed: keeps the
 * claim and, from CTL_READY on, the connection; runs a new worker each time the current one
 * dies, until the mount is unmounted. ctl_fd: our end of the first worker's control socket.
 * Returns 0 when the mount ended, -errno when it failed: then lc is to be cleaned up here,
 * unless the first worker is alive to do it (it kills us first, see run_supervised()). */
static int supervise(struct lifecycle *lc, const struct lifecycle_opts *o, pid_t first, int ctl_fd)
{
	struct store *s = lc->s;
	_cleanup_close_ int sigfd = -1;
	struct supervisor sv = {
	    .lc = lc, .o = o, .conn_fd = -1, .ctl_fd = ctl_fd, .worker = first, .pidfd = -1};
	sigset_t block, old;
	int r = 0;

	lc->supervisor = getpid();
	/* The parent hears from the first worker, and sees the pipe's end only once that
	 * worker is gone. */
	if (lc->notify_fd >= 0)
		close(TAKE_FD(lc->notify_fd));
	redirect_to_log(lc->log_fd);
	sv.exe = self_exe();
	sv.pidfd = (int)syscall(SYS_pidfd_open, first, 0);
	if (!sv.exe || sv.pidfd < 0 || getppid() != first)
		return log_errno(LOG_ERR, -errno, "cannot supervise '%s'", o->mountpoint);
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, &old);
	sigfd = signalfd(-1, &block, SFD_CLOEXEC);
	if (sigfd < 0)
		return log_errno(LOG_ERR, -errno, "cannot supervise '%s'", o->mountpoint);
	{
		/* Nothing else the command opened stays with the supervisor: an OFD lock a
		 * worker takes on a file of a shared description (a lazy blob) would outlive it. */
		const int keep[] = {lc->dir_fd, lc->log_fd, s->root_fd, s->lock_fd,
		                    sigfd,      sv.ctl_fd,  sv.pidfd};

		close_others(keep, ARRAY_SIZE(keep));
	}
	for (;;) {
		struct pollfd p[3] = {{.fd = sigfd, .events = POLLIN},
		                      {.fd = sv.ctl_fd, .events = POLLIN},
		                      {.fd = sv.pidfd, .events = POLLIN}};
		struct signalfd_siginfo si;

		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = log_errno(LOG_ERR, -errno, "supervising '%s' failed", o->mountpoint);
			break;
		}
		if (sv.ctl_fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			handle_ctl(&sv);
		if (sv.pidfd >= 0 && (p[2].revents & POLLIN)) {
			/* The first worker exited. What it said before counts first. */
			while (sv.ctl_fd >= 0 &&
			       poll(&(struct pollfd){.fd = sv.ctl_fd, .events = POLLIN}, 1, 0) == 1)
				handle_ctl(&sv);
			r = worker_exited(&sv, NULL, &old);
			if (r <= 0)
				break;
		}
		if (!(p[0].revents & POLLIN) || read(sigfd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			supervisor_stop(&sv);
		} else if (si.ssi_signo == SIGHUP) {
			if (sv.worker > 0 && sv.serving) {
				sv.restarting = true;
				kill_worker(&sv);
			}
		} else if (si.ssi_signo == SIGCHLD) {
			int status;
			pid_t pid;
			bool done = false;

			while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
				if (pid != sv.worker || sv.pidfd >= 0)
					continue;
				while (sv.ctl_fd >= 0 &&
				       poll(&(struct pollfd){.fd = sv.ctl_fd, .events = POLLIN}, 1,
				            0) == 1)
					handle_ctl(&sv);
				r = worker_exited(&sv, &status, &old);
				if (r <= 0) {
					done = true;
					break;
				}
			}
			if (done)
				break;
		}
	}
	if (sv.worker > 0) {
		kill_worker(&sv);
		if (sv.pidfd < 0)
			(void)waitpid(sv.worker, NULL, 0);
	}
	if (sv.pidfd >= 0)
		close(sv.pidfd);
	if (sv.ctl_fd >= 0)
		close(sv.ctl_fd);
	/* Closing the last fd of a connection still mounted aborts it: a dead mount. */
	if (sv.conn_fd >= 0)
		close(sv.conn_fd);
	if (r < 0 && sv.ever_ready) {
		/* Left for `imgfs umount`, which detaches the dead mount and cleans up; the
		 * directory's fd goes with this process. */
		lc->dir_fd = -1;
		lc->linked = false;
	}
	free(sv.exe);
	return r;
}

/* A supervised mount: this process claims it, forks its supervisor and serves as the first
 * worker. The supervisor is off the mount's critical path: it starts while the image is
 * opened, and gets the connection before the parent hears the mount is live. */
static int run_supervised(struct store *s, const struct lifecycle_opts *o, int notify_fd)
{
	_cleanup_(lifecycle_freep) struct lifecycle *lc = NULL;
	pid_t self = getpid(), pid;
	int sp[2], r;

	r = claim(s, o, notify_fd, &lc);
	if (r < 0) {
		if (notify_fd >= 0)
			close(notify_fd);
		return r;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return log_errno(LOG_ERR, -errno, "cannot mount '%s'", o->mountpoint);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		r = log_errno(LOG_ERR, -errno, "cannot mount '%s'", o->mountpoint);
		close(sp[0]);
		close(sp[1]);
		return r;
	}
	if (pid == 0) {
		close(sp[1]);
		r = supervise(lc, o, self, sp[0]);
		if (r < 0 && getppid() == self)
			_exit(1); /* the first worker lives: the claim is its to clean up */
		lifecycle_free(TAKE_PTR(lc));
		_exit(r < 0 ? 1 : 0);
	}
	close(sp[0]);
	lc->supervisor = pid;
	lc->ctl_fd = sp[1];
	r = o->serve(lc, o->userdata);
	if (lc->ready) {
		/* The claim is the supervisor's now: it cleans up once the mount is gone. */
		TAKE_PTR(lc);
		return r;
	}
	/* Failed before the mount was live: nothing for the supervisor to keep. */
	(void)kill(pid, SIGKILL);
	(void)waitpid(pid, NULL, 0);
	if (r >= 0)
		r = log_errno(LOG_ERR, -EINVAL, "'%s' was served without being ready",
		              o->mountpoint);
	return r;
}

/* The parent of the daemon: copies its log lines to stderr until the NUL that says the
 * mount is live (0) or the end of the pipe (the daemon failed: -EIO, already logged). */
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
	return -EIO;
}

int lifecycle_start(struct store *s, const struct lifecycle_opts *o)
{
	int pipefd[2], r;
	pid_t pid;

	r = check_mountpoint_free(o->mountpoint);
	if (r < 0)
		return r;
	if (o->foreground)
		return run_daemon(s, o, -1);
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return log_errno(LOG_ERR, -errno, "cannot mount '%s'", o->mountpoint);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		r = log_errno(LOG_ERR, -errno, "cannot mount '%s'", o->mountpoint);
		close(pipefd[0]);
		close(pipefd[1]);
		return r;
	}
	if (pid == 0) {
		/* The daemon: its own session, so the terminal's signals do not reach it;
		 * messages go to the parent until the mount is live. A parent interrupted
		 * meanwhile must not kill it half-way with SIGPIPE. */
		close(pipefd[0]);
		setsid();
		signal(SIGPIPE, SIG_IGN);
		log_set_fd(pipefd[1], false);
		r = store_reopen_lock(s);
		if (r < 0) {
			log_errno(LOG_ERR, r, "cannot open the lock of the store '%s'", s->root);
			_exit(1);
		}
		r = o->worker_argv ? run_supervised(s, o, pipefd[1]) : run_daemon(s, o, pipefd[1]);
		_exit(r < 0 ? 1 : 0);
	}
	close(pipefd[1]);
	r = wait_for_daemon(pid, pipefd[0], o->mountpoint);
	close(pipefd[0]);
	return r;
}

/* The state file of ROOT/mounts/NAME (dirfd), parsed; NULL when missing or not JSON. */
static json_t *read_state(int dirfd)
{
	_cleanup_free_ char *text = NULL;

	if (read_file_full(dirfd, "state", STATE_MAX_SIZE, &text, NULL) < 0)
		return NULL;
	return json_loads(text, 0, NULL);
}

enum state_lock {
	STATE_NONE,     /* no state file (a daemon starting, or none) */
	STATE_UNLOCKED, /* its daemon is gone */
	STATE_LOCKED,   /* a live daemon holds it */
};

/* Whether a daemon holds the state file of ROOT/mounts/NAME (dirfd): only the daemon
 * ever locks it, for its whole life. */
static enum state_lock state_lock(int dirfd)
{
	_cleanup_close_ int fd = openat(dirfd, "state", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return STATE_NONE;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return STATE_UNLOCKED; /* released with fd */
	return errno == EWOULDBLOCK ? STATE_LOCKED : STATE_UNLOCKED;
}

static pid_t state_pid(json_t *state)
{
	json_t *v = json_object_get(state, "pid");

	if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= INT_MAX)
		return (pid_t)json_integer_value(v);
	return 0;
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

/* Waits up to timeout_ms for LOCK_EX on fd (the daemon holds it until it exits), polling
 * with a backoff from 1 ms: a fallback for when the daemon's pid is not known. */
static int wait_lock(int fd, int timeout_ms)
{
	int64_t deadline = (int64_t)monotonic_ms() + timeout_ms;

	for (int delay = 1;; delay = MIN(delay * 2, 50)) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK)
			return -errno;
		if ((int64_t)monotonic_ms() >= deadline)
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
	int64_t deadline = (int64_t)monotonic_ms() + timeout_ms;
	struct pollfd p;
	int r;

	if (pid > 0)
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return wait_lock(fd, timeout_ms);
	p = (struct pollfd){.fd = pidfd, .events = POLLIN};
	for (;;) {
		int64_t left = deadline - (int64_t)monotonic_ms();

		r = poll(&p, 1, (int)MAX(left, (int64_t)0));
		if (r > 0 || (r < 0 && errno != EINTR) || left <= 0)
			break;
	}
	/* Exited, or not the lock's holder after all (a stale pid): the lock decides. */
	return wait_lock(fd, r > 0 ? 1000 : 0);
}

/* ROOT/mounts/NAME of the mount at path: through the runtime link when it leads to a
 * state that names path, else below s. Sets *ret_fd (or -1 when there is none) and
 * *ret_dir (its path, for messages). */
static int open_mount_dir(struct store *s, const char *path, const char *name, int *ret_fd,
                          char **ret_dir)
{
	_cleanup_free_ char *rt = runtime_mounts_dir(), *target = NULL;
	_cleanup_close_ int fd = -1;

	if (rt) {
		_cleanup_free_ char *link = path_join(rt, name);

		target = link ? realpath(link, NULL) : NULL;
		if (target)
			fd = open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			json_t *st = read_state(fd);
			json_t *mp = json_object_get(st, "mountpoint");
			bool ours = json_is_string(mp) && streq(json_string_value(mp), path);

			json_decref(st);
			if (!ours) {
				close(TAKE_FD(fd));
				free(TAKE_PTR(target));
			}
		}
	}
	if (fd < 0 && s) {
		free(target);
		if (asprintf(&target, "%s/mounts/%s", s->root, name) < 0) {
			target = NULL;
			return -ENOMEM;
		}
		fd = openat(s->root_fd, target + strlen(s->root) + 1,
		            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 && errno != ENOENT)
			return -errno;
	}
	*ret_fd = TAKE_FD(fd);
	*ret_dir = *ret_fd >= 0 ? TAKE_PTR(target) : NULL;
	return 0;
}

/* Removes the runtime link NAME when it still leads to dir (another store's mount of the
 * same mountpoint may have taken the name since). Call it before dir is removed. */
static void remove_runtime_link(const char *name, const char *dir)
{
	_cleanup_free_ char *rt = runtime_mounts_dir();
	_cleanup_free_ char *link = rt ? path_join(rt, name) : NULL;
	_cleanup_free_ char *a = link ? realpath(link, NULL) : NULL;
	_cleanup_free_ char *b = a ? realpath(dir, NULL) : NULL;

	if (b && streq(a, b))
		(void)unlink(link);
}

int lifecycle_stop(struct store *s, const char *arg)
{
	_cleanup_free_ char *path = NULL, *dir = NULL;
	_cleanup_close_ int dirfd = -1;
	char name[LIFECYCLE_NAME_MAX];
	bool mounted = false, is_imgfs = false, daemon_alive = false;
	pid_t pid = 0;
	int r;

	r = lifecycle_canonical_path(arg, &path);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot unmount '%s'", arg);
	lifecycle_name(path, name);
	r = open_mount_dir(s, path, name, &dirfd, &dir);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot unmount '%s'", path);
	if (dirfd >= 0) {
		json_t *st = read_state(dirfd);

		pid = state_pid(st);
		json_decref(st);
		if (flock(dirfd, LOCK_EX | LOCK_NB) < 0) {
			if (errno != EWOULDBLOCK)
				return log_errno(LOG_ERR, -errno, "cannot lock '%s'", dir);
			/* Held: by the daemon, or for a moment by a status or a gc. Only a
			 * locked state (or none yet: a daemon starting) is a live daemon. */
			daemon_alive = state_lock(dirfd) != STATE_UNLOCKED;
		}
		if (!daemon_alive)
			pid = 0; /* a dead daemon's pid may be another process's by now */
	}
	r = find_mount(path, &mounted, &is_imgfs);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot unmount '%s': cannot read the mount table",
		                 path);
	if (mounted && !is_imgfs) {
		log_msg(LOG_ERR, "cannot unmount '%s': not an imgfs mount", path);
		return -EINVAL;
	}
	if (!mounted && dirfd < 0) {
		log_msg(LOG_ERR, "cannot unmount '%s': not mounted", path);
		return -ENOENT;
	}
	if (mounted) {
		/* A daemon that died leaves a mount that answers ENOTCONN; nothing can be
		 * flushed through it any more, so detach it even when processes still use it.
		 * A live daemon's mount is asked only when it is busy: statfs is a round trip
		 * to the daemon, on the path of every umount. */
		r = unmount_path(path, !daemon_alive);
		if (r == -EBUSY && daemon_alive && mount_is_dead(path))
			r = unmount_path(path, true);
		if (r == -EBUSY) {
			log_msg(LOG_ERR, "cannot unmount '%s': target is busy", path);
			return r;
		}
		if (r < 0 && r != -EINVAL && r != -ENOENT)
			return log_errno(LOG_ERR, r, "cannot unmount '%s'", path);
	} else if (daemon_alive && pid > 0) {
		/* Served, but not mounted in this mount namespace (unmounted behind the
		 * daemon's back, or mounted in another one): the daemon ends on SIGTERM. */
		(void)kill(pid, SIGTERM);
	}
	if (dirfd < 0) {
		log_msg(LOG_WARNING, "'%s' had no state (mounted by an older imgfs?)", path);
		return 0;
	}
	if (daemon_alive) {
		r = wait_daemon_exit(dirfd, pid, DAEMON_EXIT_TIMEOUT_MS);
		if (r < 0)
			return log_errno(LOG_ERR, r,
			                 "'%s' is unmounted but its daemon (pid %d) did not exit",
			                 path, (int)pid);
	}
	remove_runtime_link(name, dir);
	r = rm_rf_at(AT_FDCWD, dir);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot remove '%s'", dir);
	return 0;
}

void mount_status_done(struct mount_status *st)
{
	free(st->dir);
	free(st->mountpoint);
	free(st->ref);
	free(st->manifest);
	free(st->upper);
	free(st->extra_opts);
	*st = (struct mount_status){0};
}

static char *json_strdup(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static uint64_t json_u64(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
	                                                       : 0;
}

/* A JSON object the daemon keeps in ROOT/mounts/NAME/name; NULL when missing or garbled. */
static json_t *read_side_file(int dirfd, const char *name)
{
	_cleanup_free_ char *text = NULL;
	json_t *j;

	if (read_file_full(dirfd, name, STATE_MAX_SIZE, &text, NULL) < 0)
		return NULL;
	j = json_loads(text, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* The figures a lazy mount's daemon keeps in ROOT/mounts/NAME/lazy. */
static void read_lazy(int dirfd, struct mount_status *st)
{
	json_t *j = read_side_file(dirfd, "lazy");

	if (!j)
		return;
	st->lazy = true;
	st->demand_bytes = json_u64(j, "demand_bytes");
	st->fill_bytes = json_u64(j, "fill_bytes");
	st->present = json_u64(j, "present");
	st->total = json_u64(j, "total");
	json_decref(j);
}

/* What the daemon decoded and found in the decoded-data cache: ROOT/mounts/NAME/decoded. */
static void read_decoded(int dirfd, struct mount_status *st)
{
	json_t *j = read_side_file(dirfd, "decoded");

	if (!j)
		return;
	st->decoded = true;
	st->decoded_units = json_u64(j, "units");
	st->cache_hits = json_u64(j, "cache_hits");
	st->cache_stored = json_u64(j, "cache_stored");
	st->cache_corrupt = json_u64(j, "cache_corrupt");
	st->cache_evicted = json_u64(j, "cache_evicted");
	json_decref(j);
}

/* The process a JSON number names, when it is alive; else 0. */
static pid_t live_pid(json_t *v)
{
	json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;

	return n > 0 && n <= INT_MAX && kill((pid_t)n, 0) == 0 ? (pid_t)n : 0;
}

/* The worker a supervisor runs now (ROOT/mounts/NAME/worker): daemon-pid, restarts. Until
 * the supervisor wrote it, st->pid is left as the state says. */
static void read_worker(int dirfd, struct mount_status *st)
{
	json_t *j;

	j = read_side_file(dirfd, "worker");
	if (!j)
		return;
	st->pid = live_pid(json_object_get(j, "pid"));
	st->restarts = (unsigned)MIN(json_u64(j, "restarts"), (uint64_t)UINT_MAX);
	json_decref(j);
}

int lifecycle_status(struct store *s, const char *arg, struct mount_status *ret)
{
	_cleanup_free_ char *path = NULL, *dir = NULL;
	_cleanup_close_ int dirfd = -1;
	struct mount_status st = {0};
	char name[LIFECYCLE_NAME_MAX];
	bool is_imgfs = false;
	int r;

	r = lifecycle_canonical_path(arg, &path);
	if (r < 0)
		return r;
	lifecycle_name(path, name);
	r = open_mount_dir(s, path, name, &dirfd, &dir);
	if (r < 0)
		return r;
	r = find_mount(path, &st.mounted, &is_imgfs);
	if (r < 0)
		return r;
	st.mounted = st.mounted && is_imgfs;
	if (dirfd < 0 && !st.mounted)
		return -ENOENT;
	if (dirfd >= 0) {
		json_t *j = read_state(dirfd);

		st.alive = state_lock(dirfd) == STATE_LOCKED;
		st.pid = st.alive ? state_pid(j) : 0;
		if (st.alive && json_is_true(json_object_get(j, "supervised"))) {
			st.supervisor_pid = st.pid;
			st.pid = live_pid(json_object_get(j, "worker"));
			read_worker(dirfd, &st);
		}
		st.extra_opts = json_strdup(j, "opts");
		st.ref = json_strdup(j, "ref");
		st.manifest = json_strdup(j, "manifest");
		st.upper = json_strdup(j, "upper");
		st.ro = json_is_true(json_object_get(j, "ro"));
		st.upper_given = json_is_true(json_object_get(j, "upper_given"));
		json_decref(j);
		read_lazy(dirfd, &st);
		read_decoded(dirfd, &st);
	}
	st.dir = TAKE_PTR(dir);
	st.mountpoint = TAKE_PTR(path);
	*ret = st;
	return 0;
}

/* Calls fn(s, dirfd of ROOT/mounts/NAME, NAME, userdata) for each mount directory. */
static int for_each_mount_dir(struct store *s,
                              int (*fn)(struct store *s, int dirfd, const char *name, void *ud),
                              void *ud)
{
	_cleanup_close_ int dfd =
	    openat(s->root_fd, "mounts", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	int r = 0;

	if (dfd < 0)
		return errno == ENOENT ? 0 : -errno;
	r = opendir_fd(TAKE_FD(dfd), &d);
	if (r < 0)
		return r;
	while (r >= 0 && (de = readdir(d))) {
		_cleanup_close_ int fd = -1;

		if (de->d_name[0] == '.')
			continue;
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		r = fn(s, fd, de->d_name, ud);
	}
	closedir(d);
	return r;
}

struct live_walk {
	int (*fn)(const char *manifest, void *userdata);
	void *userdata;
};

/* The manifests a live daemon holds besides its state's (lifecycle_set_held()). */
static int visit_held(int dirfd, struct live_walk *w)
{
	_cleanup_close_ int fd = openat(dirfd, "held", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	_cleanup_fclose_ FILE *f = NULL;
	char line[128];
	int r = 0;

	if (fd < 0)
		return 0;
	f = fdopen(TAKE_FD(fd), "re");
	if (!f)
		return -errno;
	while (r >= 0 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (digest_valid(line))
			r = w->fn(line, w->userdata);
	}
	return r;
}

static int visit_live(struct store *s, int dirfd, const char *name, void *ud)
{
	struct live_walk *w = ud;
	_cleanup_close_ int fd = -1;
	json_t *st, *m;
	int r = 0;

	(void)s;
	(void)name;
	fd = openat(dirfd, "state", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	/* Live when a daemon holds LOCK_SH on it. */
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno != EWOULDBLOCK)
		return -errno;
	st = read_state(dirfd);
	m = json_object_get(st, "manifest");
	if (json_is_string(m) && digest_valid(json_string_value(m)))
		r = w->fn(json_string_value(m), w->userdata);
	json_decref(st);
	if (r >= 0)
		r = visit_held(dirfd, w);
	return r;
}

int lifecycle_for_each_live(struct store *s, int (*fn)(const char *manifest, void *userdata),
                            void *userdata)
{
	struct live_walk w = {fn, userdata};

	return for_each_mount_dir(s, visit_live, &w);
}

static int reap_one(struct store *s, int dirfd, const char *name, void *ud)
{
	unsigned *removed = ud;
	_cleanup_free_ char *path = NULL;
	json_t *st, *mp, *given;
	bool mounted = false, is_imgfs = false, keep = false;
	int r;

	if (flock(dirfd, LOCK_EX | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? 0 : -errno; /* live, or being started */
	st = read_state(dirfd);
	mp = json_object_get(st, "mountpoint");
	given = json_object_get(st, "upper_given");
	if (json_is_string(mp) && find_mount(json_string_value(mp), &mounted, &is_imgfs) == 0 &&
	    mounted && is_imgfs)
		keep = true; /* a dead mount still in the way: lifecycle_stop() detaches it */
	/* Copy-ups of a kept upper that a crash left pending in work/: the next mount of
	 * that upper recovers them. */
	if (json_is_true(given) && faccessat(dirfd, "work", F_OK, AT_SYMLINK_NOFOLLOW) == 0 &&
	    unlinkat(dirfd, "work", AT_REMOVEDIR) < 0 && errno == ENOTEMPTY)
		keep = true;
	json_decref(st);
	if (keep)
		return 0;
	if (asprintf(&path, "%s/mounts/%s", s->root, name) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	remove_runtime_link(name, path);
	r = rm_rf_at(s->root_fd, path + strlen(s->root) + 1);
	if (r < 0)
		return r;
	(*removed)++;
	return 0;
}

int lifecycle_reap(struct store *s, unsigned *ret_removed)
{
	unsigned removed = 0;
	int r = for_each_mount_dir(s, reap_one, &removed);

	if (ret_removed)
		*ret_removed = removed;
	return r;
}

/* ---- workers executed by a supervisor ---- */

int lifecycle_attach(struct store *s, const char *mountpoint, struct lifecycle **ret,
                     int *ret_conn_fd, struct mount_status *ret_state)
{
	_cleanup_(lifecycle_freep) struct lifecycle *lc = NULL;
	_cleanup_free_ char *root = NULL;
	const char *env = getenv(HANDOFF_ENV);
	struct mount_status st = {0};
	int conn = -1, ctl = -1;
	json_t *j;

	if (!env || sscanf(env, "%d,%d", &conn, &ctl) != 2 || conn < 0 || ctl < 0 ||
	    fcntl(conn, F_GETFD) < 0 || fcntl(ctl, F_GETFD) < 0) {
		log_msg(LOG_ERR, "cannot serve '%s': not started by the supervisor of a mount",
		        mountpoint);
		return -EINVAL;
	}
	(void)fcntl(conn, F_SETFD, FD_CLOEXEC);
	(void)fcntl(ctl, F_SETFD, FD_CLOEXEC);
	unsetenv(HANDOFF_ENV);
	lc = calloc(1, sizeof(*lc));
	if (!lc)
		return -ENOMEM;
	*lc = (struct lifecycle){.s = s,
	                         .dir_fd = -1,
	                         .state_fd = -1,
	                         .log_fd = -1,
	                         .notify_fd = -1,
	                         .ctl_fd = ctl,
	                         .attached = true};
	lifecycle_name(mountpoint, lc->name);
	snprintf(lc->rel, sizeof(lc->rel), "mounts/%s", lc->name);
	root = realpath(s->root, NULL);
	lc->dir_path = root ? path_join(root, lc->rel) : NULL;
	if (!lc->dir_path)
		return log_errno(LOG_ERR, -errno, "cannot serve '%s': no store at '%s'", mountpoint,
		                 s->root);
	lc->dir_fd = openat(s->root_fd, lc->rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (lc->dir_fd < 0)
		return log_errno(LOG_ERR, -errno, "cannot serve '%s': cannot open '%s'", mountpoint,
		                 lc->dir_path);
	lc->log_fd = openat(lc->dir_fd, "log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (lc->log_fd >= 0)
		redirect_to_log(lc->log_fd);
	j = read_state(lc->dir_fd);
	if (!json_is_object(j)) {
		json_decref(j);
		return log_errno(LOG_ERR, -EBADMSG, "cannot serve '%s': no state in '%s'",
		                 mountpoint, lc->dir_path);
	}
	st.ref = json_strdup(j, "ref");
	st.manifest = json_strdup(j, "manifest");
	st.upper = json_strdup(j, "upper");
	st.mountpoint = json_strdup(j, "mountpoint");
	st.extra_opts = json_strdup(j, "opts");
	st.ro = json_is_true(json_object_get(j, "ro"));
	st.upper_given = json_is_true(json_object_get(j, "upper_given"));
	st.lazy = json_is_true(json_object_get(j, "lazy"));
	st.supervisor_pid = state_pid(j);
	json_decref(j);
	st.dir = strdup(lc->dir_path);
	if (!st.ref || !st.mountpoint || !streq(st.mountpoint, mountpoint) ||
	    (st.manifest && !digest_valid(st.manifest))) {
		mount_status_done(&st);
		return log_errno(LOG_ERR, -EBADMSG, "cannot serve '%s': a bad state in '%s'",
		                 mountpoint, lc->dir_path);
	}
	lc->supervisor = st.supervisor_pid;
	lc->registered = true;
	*ret_conn_fd = conn;
	*ret_state = st;
	*ret = TAKE_PTR(lc);
	return 0;
}

void lifecycle_figures(struct lifecycle *lc, struct mount_status *ret)
{
	*ret = (struct mount_status){0};
	read_lazy(lc->dir_fd, ret);
	read_decoded(lc->dir_fd, ret);
}

void lifecycle_detach(struct lifecycle *lc)
{
	lifecycle_free(lc);
}

int lifecycle_restart(struct store *s, const char *arg)
{
	_cleanup_free_ char *path = NULL, *dir = NULL;
	_cleanup_close_ int dirfd = -1;
	struct mount_status before = {0}, now = {0};
	char name[LIFECYCLE_NAME_MAX];
	int64_t deadline;
	int r;

	r = lifecycle_canonical_path(arg, &path);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot restart '%s'", arg);
	lifecycle_name(path, name);
	r = open_mount_dir(s, path, name, &dirfd, &dir);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot restart '%s'", path);
	if (dirfd < 0) {
		log_msg(LOG_ERR, "cannot restart '%s': not an imgfs mount", path);
		return -ENOENT;
	}
	{
		json_t *j = read_state(dirfd);
		bool supervised = json_is_true(json_object_get(j, "supervised"));

		before.supervisor_pid = supervised ? state_pid(j) : 0;
		json_decref(j);
	}
	if (state_lock(dirfd) != STATE_LOCKED) {
		log_msg(LOG_ERR, "cannot restart '%s': its daemon is dead; run 'imgfs umount %s'",
		        path, path);
		return -ESRCH;
	}
	if (before.supervisor_pid <= 0) {
		log_msg(LOG_ERR,
		        "cannot restart '%s': it runs in the foreground, without a supervisor",
		        path);
		return -EINVAL;
	}
	read_worker(dirfd, &before);
	if (kill(before.supervisor_pid, SIGHUP) < 0)
		return log_errno(LOG_ERR, -errno,
		                 "cannot restart '%s': cannot signal its supervisor %d", path,
		                 (int)before.supervisor_pid);
	deadline = (int64_t)monotonic_ms() + RESTART_TIMEOUT_MS;
	for (;;) {
		(void)poll(NULL, 0, 20);
		now = (struct mount_status){0};
		if (state_lock(dirfd) != STATE_LOCKED) {
			log_msg(LOG_ERR, "'%s' died while its daemon was replaced; see %s/log",
			        path, dir);
			return -EIO;
		}
		read_worker(dirfd, &now);
		if (now.restarts > before.restarts && now.pid > 0)
			return 0;
		if ((int64_t)monotonic_ms() >= deadline) {
			log_msg(LOG_ERR,
			        "cannot restart '%s': no new daemon within %d s; see %s/log", path,
			        RESTART_TIMEOUT_MS / 1000, dir);
			return -ETIMEDOUT;
		}
	}
}
