/* Setup plan executor: mounts by file descriptor, inside the rootfs only.
 *
 * Why by fd: an image is hostile input. Its /proc, /dev or /etc/hosts may be symlinks to
 * host paths ("/etc/hosts -> /tmp/HOSTFILE"); a mount given a path string would follow them
 * out of the rootfs onto the host. Every target is therefore opened with
 * openat2(RESOLVE_IN_ROOT), which resolves symlinks as if the rootfs were "/", and the mount
 * is made on that fd (through /proc/self/fd/N, or move_mount() for clones). */
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <limits.h>
#include "common/fileio.h"
#include "runner/mount.h"
#include "runner/util.h"

#define MAX_SYMLINK_HOPS 40
#define MAX_OURS 64
#define MAX_SHADOWS 32

enum root_want {
	ROOT_EXISTING, /* the path must exist */
	ROOT_DIR,      /* create missing components as directories */
	ROOT_FILE,     /* as ROOT_DIR, but the last component is created as an empty file */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

static int openat2_in_root(int root_fd, const char *path, int *ret_fd)
{
	struct open_how how = {
	    .flags = O_PATH | O_CLOEXEC,
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int fd;

	do
		fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

/* Splits path into its parent ("/" at least) and last component, in buffers of PATH_MAX. */
static int split_path(const char *path, char *dir, char *base)
{
	size_t len = strlen(path);
	const char *slash;

	while (len > 1 && path[len - 1] == '/')
		len--;
	if (len == 0 || len >= PATH_MAX)
		return -EINVAL;
	memcpy(dir, path, len);
	dir[len] = '\0';
	slash = strrchr(dir, '/');
	snprintf(base, PATH_MAX, "%s", slash ? slash + 1 : dir);
	if (!base[0] || streq(base, ".") || streq(base, ".."))
		return -EINVAL;
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		dir[slash - dir] = '\0';
	return 0;
}

static bool same_inode(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* State of one plan execution: what every step needs, looked up once. */
struct run_state {
	int root_fd;      /* borrowed, or new_root once the root is shadowed */
	int new_root;     /* the root's shadow (owned), or -1 */
	struct stat root; /* of root_fd */
	int files_fs;     /* detached tmpfs of the generated files, or -1 */
	int null_fd;      /* the container's /dev/null (for masks), or -1 */
	int dir_fd;       /* parent directory of the previous mknod/symlink step, or -1 */
	char dir[PATH_MAX], base[PATH_MAX];
	char cached_dir[PATH_MAX]; /* the path dir_fd was opened for */
	/* Filesystems the runner mounted and may create entries in: its tmpfs mounts (/dev,
	 * the v1 /sys/fs/cgroup) and the shadows. */
	dev_t ours[MAX_OURS];
	size_t n_ours;
	/* The shadows (shadow_dir()): made read-only at the end when the directory they
	 * cover is on a read-only mount. */
	int shadow_fd[MAX_SHADOWS];
	bool shadow_rdonly[MAX_SHADOWS];
	size_t n_shadows;
};

static bool is_ours(const struct run_state *x, dev_t dev)
{
	for (size_t i = 0; i < x->n_ours; i++)
		if (x->ours[i] == dev)
			return true;
	return false;
}

static int add_ours(struct run_state *x, dev_t dev)
{
	if (is_ours(x, dev))
		return 0;
	if (x->n_ours == MAX_OURS)
		return -E2BIG;
	x->ours[x->n_ours++] = dev;
	return 0;
}

static int attach(int tree_fd, int target_fd)
{
	if (move_mount(tree_fd, "", target_fd, "",
	               MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		return -errno;
	return 0;
}

/* Copies entry name of dir (a directory fd) into the shadow sfd: a symlink as a symlink
 * with the same text; anything else as an empty placeholder with the original bound on
 * it (recursively, so mounts below come along). */
static int shadow_entry(int dir, int sfd, const char *name)
{
	_cleanup_close_ int tree = -1, target = -1;
	char link[PATH_MAX];
	struct stat st;
	ssize_t n;
	int fd;

	if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno; /* gone meanwhile */
	if (S_ISLNK(st.st_mode)) {
		n = readlinkat(dir, name, link, sizeof(link) - 1);
		if (n < 0)
			return -errno;
		link[n] = '\0';
		if (symlinkat(link, sfd, name) < 0)
			return -errno;
		(void)!fchownat(sfd, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
		return 0;
	}
	if (S_ISDIR(st.st_mode)) {
		if (mkdirat(sfd, name, 0755) < 0)
			return -errno;
	} else {
		fd = openat(sfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
		close(fd);
	}
	tree = open_tree(dir, name,
	                 OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
	if (tree < 0)
		return -errno;
	target = openat(sfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (target < 0)
		return -errno;
	return attach(tree, target);
}

/* Covers the directory dfd with a shadow: a tmpfs with dfd's mode and owner holding every
 * entry of dfd (shadow_entry()), so that a missing mount point can be created without
 * touching the rootfs. Reads and writes of the existing entries reach the originals; new
 * entries directly in the directory are the container's own (gone with it), and renaming
 * over one of the bound entries fails (EBUSY), as over Docker's bound /etc/hosts.
 * Returns a borrowed O_PATH fd of the shadow's root, or -errno. */
static int shadow_dir(struct run_state *x, int dfd)
{
	_cleanup_close_ int fsfd = -1, mnt = -1, dir = -1, sfd = -1;
	_cleanup_(closedirp) DIR *d = NULL;
	struct statfs sfs;
	struct stat st, sst;
	struct dirent *de;
	char mode[16];
	int r;

	if (x->n_shadows == MAX_SHADOWS)
		return -E2BIG;
	if (fstat(dfd, &st) < 0 || fstatfs(dfd, &sfs) < 0)
		return -errno;
	dir = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return -errno;
	fsfd = fsopen("tmpfs", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return -errno;
	snprintf(mode, sizeof(mode), "%o", (unsigned)(st.st_mode & 07777));
	/* Bounded like /dev: what the container adds here lives in memory. */
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "source", "tmpfs", 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_SET_STRING, "mode", mode, 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_SET_STRING, "size", "65536k", 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return -errno;
	mnt = fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	if (mnt < 0)
		return -errno;
	/* Unmapped ids (rootless) cannot be set; the shadow's root then stays ours. */
	(void)!fchownat(mnt, "", st.st_uid, st.st_gid, AT_EMPTY_PATH);
	sfd = openat(mnt, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return -errno;
	d = fdopendir(dir);
	if (!d)
		return -errno;
	dir = -1; /* owned by d now */
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de)
			break;
		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		r = shadow_entry(dirfd(d), sfd, de->d_name);
		if (r < 0)
			return r;
	}
	if (errno)
		return -errno;
	r = attach(mnt, dfd);
	if (r < 0)
		return r;
	if (fstat(mnt, &sst) < 0)
		return -errno;
	r = add_ours(x, sst.st_dev);
	if (r < 0)
		return r;
	/* A directory fd opened before may name what the shadow now covers. */
	if (x->dir_fd >= 0)
		close(TAKE_FD(x->dir_fd));
	if (st.st_dev == x->root.st_dev && st.st_ino == x->root.st_ino) {
		/* The root itself: everything from now on is resolved from the shadow. */
		closep(&x->new_root);
		x->new_root = fcntl(mnt, F_DUPFD_CLOEXEC, 3);
		if (x->new_root < 0)
			return -errno;
		x->root_fd = x->new_root;
		x->root = sst;
	}
	x->shadow_rdonly[x->n_shadows] = sfs.f_flags & ST_RDONLY;
	x->shadow_fd[x->n_shadows] = TAKE_FD(mnt);
	return x->shadow_fd[x->n_shadows++];
}

/* Creates base (a directory, or with want ROOT_FILE an empty file) in the directory dfd:
 * directly on a filesystem of the runner's, else in a shadow of dfd. */
static int create_in(struct run_state *x, int dfd, const char *base, enum root_want want)
{
	struct stat st;
	int fd;

	if (fstat(dfd, &st) < 0)
		return -errno;
	if (!is_ours(x, st.st_dev)) {
		dfd = shadow_dir(x, dfd);
		if (dfd < 0)
			return dfd;
	}
	if (want != ROOT_FILE)
		return mkdirat(dfd, base, 0755) < 0 ? -errno : 0;
	fd = openat(dfd, base, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

static int root_open_depth(struct run_state *x, const char *path, enum root_want want, int depth,
                           int *ret_fd)
{
	_cleanup_free_ char *cur = NULL, *dir = NULL, *base = NULL, *link = NULL;
	int r;

	if (depth > PATH_MAX / 2)
		return -ELOOP;
	cur = strdup(path);
	dir = malloc(PATH_MAX);
	base = malloc(PATH_MAX);
	link = malloc(PATH_MAX);
	if (!cur || !dir || !base || !link)
		return -ENOMEM;
	for (int hops = 0; hops < MAX_SYMLINK_HOPS; hops++) {
		_cleanup_close_ int dfd = -1;
		struct stat st;
		ssize_t n;

		r = openat2_in_root(x->root_fd, cur, ret_fd);
		if (r != -ENOENT || want == ROOT_EXISTING)
			return r;
		r = split_path(cur, dir, base);
		if (r < 0)
			return r;
		r = root_open_depth(x, dir, ROOT_DIR, depth + 1, &dfd);
		if (r < 0)
			return r;
		if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				return -errno;
			r = create_in(x, dfd, base, want);
			if (r < 0 && r != -EEXIST)
				return r;
			continue;
		}
		if (!S_ISLNK(st.st_mode))
			continue; /* created meanwhile: resolve it again */
		/* It exists but did not resolve: a dangling symlink. Create its target,
		 * resolved inside the root like everything else. */
		n = readlinkat(dfd, base, link, PATH_MAX - 1);
		if (n < 0)
			return -errno;
		link[n] = '\0';
		free(cur);
		if (link[0] == '/')
			cur = strdup(link);
		else if (asprintf(&cur, "%s/%s", dir, link) < 0)
			cur = NULL;
		if (!cur)
			return -ENOMEM;
	}
	return -ELOOP;
}

/* Opens path (absolute or relative, resolved inside the root as if it were "/"; symlinks
 * are followed but cannot leave it, magic links are refused) as an O_PATH fd, creating
 * what is missing as want says, never in the rootfs itself (create_in()); a dangling
 * symlink's target is created inside the root. Returns 0 and sets *ret_fd, or -errno
 * (-ELOOP for too many symlinks). */
static int root_open(struct run_state *x, const char *path, enum root_want want, int *ret_fd)
{
	return root_open_depth(x, path, want, 0, ret_fd);
}

/* Opens a step's target, refusing one that resolves to the root itself (a "/proc -> /"
 * symlink would otherwise bury the whole rootfs under proc). Sets *ret_st to its stat. */
static int open_target(struct run_state *x, const struct setup_step *s, enum root_want want,
                       int *ret_fd, struct stat *ret_st)
{
	_cleanup_close_ int fd = -1;
	int r = root_open(x, s->target, want, &fd);

	if (r < 0)
		return r;
	if (fstat(fd, ret_st) < 0)
		return -errno;
	if (ret_st->st_dev == x->root.st_dev && ret_st->st_ino == x->root.st_ino)
		return -ELOOP;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Opens the parent directory of target (created when missing) and sets x->base to the last
 * component. Consecutive mknod and symlink steps share the fd: they add entries to a
 * directory but never change what its path resolves to. Returns a borrowed fd or -errno. */
static int parent_dir(struct run_state *x, const char *target)
{
	int r = split_path(target, x->dir, x->base);

	if (r < 0)
		return r;
	if (x->dir_fd >= 0 && streq(x->dir, x->cached_dir))
		return x->dir_fd;
	if (x->dir_fd >= 0)
		close(TAKE_FD(x->dir_fd));
	r = root_open(x, x->dir, ROOT_DIR, &x->dir_fd);
	if (r < 0)
		return r;
	memcpy(x->cached_dir, x->dir, sizeof(x->cached_dir));
	return x->dir_fd;
}

static void fd_path(int fd, char buf[32])
{
	snprintf(buf, 32, "/proc/self/fd/%d", fd);
}

static int set_rdonly(int fd, bool recursive)
{
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};

	if (mount_setattr(fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr,
	                  sizeof(attr)) < 0)
		return -errno;
	return 0;
}

/* Clones the tree at (dirfd, path) and, when rdonly, makes the clone read-only before it
 * becomes visible anywhere. */
static int clone_tree(int dirfd, const char *path, bool recursive, bool rdonly, int *ret_fd)
{
	_cleanup_close_ int t = -1;
	int r;

	t = open_tree(dirfd, path,
	              OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (path[0] ? 0 : AT_EMPTY_PATH) |
	                  (recursive ? AT_RECURSIVE : 0));
	if (t < 0)
		return -errno;
	if (rdonly) {
		r = set_rdonly(t, recursive);
		if (r < 0)
			return r;
	}
	*ret_fd = TAKE_FD(t);
	return 0;
}

static int do_mount(struct run_state *x, const struct setup_step *s)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	char p[32];
	int r = open_target(x, s, ROOT_DIR, &fd, &st);

	if (r < 0)
		return r;
	fd_path(fd, p);
	if (mount(s->source, p, s->fstype, s->flags, s->data) < 0)
		return -errno;
	if (!streq(s->fstype, "tmpfs"))
		return 0;
	/* Later steps create their mount points on this tmpfs (/dev/pts, ...). */
	closep(&fd);
	r = root_open(x, s->target, ROOT_EXISTING, &fd);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return -errno;
	return add_ours(x, st.st_dev);
}

static int do_bind(struct run_state *x, const struct setup_step *s)
{
	_cleanup_close_ int fd = -1, src = -1;
	struct stat st, tst;
	int r;

	r = clone_tree(AT_FDCWD, s->source, s->opts & STEP_REC, s->opts & STEP_RDONLY, &src);
	if (r < 0)
		return r;
	if (fstat(src, &st) < 0)
		return -errno;
	r = open_target(x, s, S_ISDIR(st.st_mode) ? ROOT_DIR : ROOT_FILE, &fd, &tst);
	if (r < 0)
		return r;
	return attach(src, fd);
}

static int do_mknod(struct run_state *x, const struct setup_step *s)
{
	int dfd = parent_dir(x, s->target);

	if (dfd < 0)
		return dfd;
	if (mknodat(dfd, x->base, s->mode, s->dev) < 0)
		return -errno;
	/* mknod is subject to the umask; the devices must be 0666. */
	if (fchmodat(dfd, x->base, s->mode & 07777, 0) < 0)
		return -errno;
	return 0;
}

static int do_symlink(struct run_state *x, const struct setup_step *s)
{
	int dfd = parent_dir(x, s->target);

	if (dfd < 0)
		return dfd;
	if (symlinkat(s->source, dfd, x->base) < 0)
		return -errno;
	return 0;
}

static int do_mask(struct run_state *x, const struct setup_step *s)
{
	_cleanup_close_ int fd = -1, tree = -1;
	struct stat st;
	char p[32];
	int r;

	r = open_target(x, s, ROOT_EXISTING, &fd, &st);
	if (r < 0)
		return r;
	if (S_ISDIR(st.st_mode)) {
		fd_path(fd, p);
		if (mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL) < 0)
			return -errno;
		return 0;
	}
	if (x->null_fd < 0) {
		r = root_open(x, "/dev/null", ROOT_EXISTING, &x->null_fd);
		if (r < 0)
			return r;
	}
	r = clone_tree(x->null_fd, "", false, false, &tree);
	if (r < 0)
		return r;
	return attach(tree, fd);
}

static int do_readonly(struct run_state *x, const struct setup_step *s)
{
	_cleanup_close_ int fd = -1, tree = -1;
	struct stat st;
	int r;

	r = open_target(x, s, ROOT_EXISTING, &fd, &st);
	if (r < 0)
		return r;
	r = clone_tree(fd, "", true, true, &tree);
	if (r < 0)
		return r;
	return attach(tree, fd);
}

static int do_remount_ro(struct run_state *x, const struct setup_step *s)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	int r = open_target(x, s, ROOT_EXISTING, &fd, &st);

	if (r < 0)
		return r;
	return set_rdonly(fd, false);
}

/* Generated files live on one detached tmpfs that is never attached anywhere: each file is
 * cloned from it onto its target, so nothing of it is left on the host. */
static int do_file(struct run_state *x, const struct setup_step *s, size_t idx)
{
	_cleanup_close_ int fd = -1, f = -1, tree = -1;
	int *files_fs = &x->files_fs;
	struct statfs sfs;
	struct stat st;
	char name[32];
	int r;

	if (*files_fs < 0) {
		_cleanup_close_ int fsfd = fsopen("tmpfs", FSOPEN_CLOEXEC);

		if (fsfd < 0)
			return -errno;
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, "mode", "0755", 0) < 0 ||
		    fsconfig(fsfd, FSCONFIG_SET_STRING, "size", "1m", 0) < 0 ||
		    fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
			return -errno;
		*files_fs = fsmount(fsfd, FSMOUNT_CLOEXEC,
		                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
		if (*files_fs < 0)
			return -errno;
	}
	r = open_target(x, s, ROOT_FILE, &fd, &st);
	if (r < 0)
		return r;
	/* A symlink into /proc or /sys would put our file over a kernel interface. */
	if (fstatfs(fd, &sfs) < 0)
		return -errno;
	if (sfs.f_type == PROC_SUPER_MAGIC || sfs.f_type == SYSFS_MAGIC)
		return -EPERM;
	snprintf(name, sizeof(name), "step%zu", idx);
	f = openat(*files_fs, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	if (f < 0)
		return -errno;
	r = write_full(f, s->source, strlen(s->source));
	if (r < 0)
		return r;
	r = clone_tree(*files_fs, name, false, false, &tree);
	if (r < 0)
		return r;
	return attach(tree, fd);
}

static const char *step_name(enum step_type t)
{
	switch (t) {
	case STEP_MOUNT:
		return "mount";
	case STEP_BIND:
		return "bind";
	case STEP_MKNOD:
		return "mknod";
	case STEP_SYMLINK:
		return "symlink";
	case STEP_MKDIR:
		return "mkdir";
	case STEP_MASK:
		return "mask";
	case STEP_READONLY:
		return "make read-only";
	case STEP_REMOUNT_RO:
		return "remount read-only";
	case STEP_FILE:
		return "bind generated file on";
	}
	return "?";
}

static void run_state_free(struct run_state *x)
{
	if (!x)
		return;
	closep(&x->files_fs);
	closep(&x->null_fd);
	closep(&x->dir_fd);
	closep(&x->new_root);
	for (size_t i = 0; i < x->n_shadows; i++)
		closep(&x->shadow_fd[i]);
	free(x);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct run_state *, run_state_free);

int mount_run_plan(int *root_fd, const struct setup_plan *p, struct error *e)
{
	_cleanup_(run_state_freep) struct run_state *x = calloc(1, sizeof(*x));
	int r;

	if (!x)
		return runner_errf(e, -ENOMEM, "cannot set up the container");
	x->root_fd = *root_fd;
	x->files_fs = x->null_fd = x->dir_fd = x->new_root = -1;
	if (fstat(x->root_fd, &x->root) < 0)
		return runner_errf(e, -errno, "cannot stat the rootfs");

	for (size_t i = 0; i < p->n; i++) {
		const struct setup_step *s = &p->steps[i];
		_cleanup_close_ int fd = -1;

		r = 0;
		/* Only mknod and symlink steps keep the directory they worked in (parent_dir()). */
		if (s->type != STEP_MKNOD && s->type != STEP_SYMLINK && x->dir_fd >= 0)
			close(TAKE_FD(x->dir_fd));
		switch (s->type) {
		case STEP_MOUNT:
			r = do_mount(x, s);
			break;
		case STEP_BIND:
			r = do_bind(x, s);
			break;
		case STEP_MKNOD:
			r = do_mknod(x, s);
			break;
		case STEP_SYMLINK:
			r = do_symlink(x, s);
			break;
		case STEP_MKDIR:
			r = root_open(x, s->target, ROOT_DIR, &fd);
			break;
		case STEP_MASK:
			r = do_mask(x, s);
			break;
		case STEP_READONLY:
			r = do_readonly(x, s);
			break;
		case STEP_REMOUNT_RO:
			r = do_remount_ro(x, s);
			break;
		case STEP_FILE:
			r = do_file(x, s, i);
			break;
		}
		if (r == -ENOENT && (s->opts & STEP_OPTIONAL))
			continue;
		if (r == -ELOOP)
			return runner_errf(e, r,
			                   "cannot %s '%s': it resolves to the rootfs itself "
			                   "or through too many symlinks",
			                   step_name(s->type), s->target);
		if (r < 0) {
			if (s->type == STEP_MOUNT)
				return runner_errf(e, r, "cannot mount %s on '%s'", s->fstype,
				                   s->target);
			if (s->type == STEP_BIND)
				return runner_errf(e, r, "cannot bind '%s' on '%s'", s->source,
				                   s->target);
			return runner_errf(e, r, "cannot %s '%s'", step_name(s->type), s->target);
		}
	}
	/* Shadows of directories on read-only mounts become read-only too, now that every
	 * mount point exists. */
	for (size_t i = 0; i < x->n_shadows; i++) {
		if (!x->shadow_rdonly[i])
			continue;
		r = set_rdonly(x->shadow_fd[i], false);
		if (r < 0)
			return runner_errf(e, r, "cannot make a mount point directory read-only");
	}
	if (x->new_root >= 0) {
		close(*root_fd);
		*root_fd = TAKE_FD(x->new_root);
	}
	return 0;
}

int mount_prepare_root(int rootfs_fd, int *ret_root_fd, struct error *e)
{
	_cleanup_close_ int tree = -1;
	int r;

	_cleanup_close_ int fd = -1;
	char link[32], path[PATH_MAX];
	ssize_t n;

	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return runner_errf(e, -errno, "cannot make '/' a slave mount");
	/* rootfs_fd names a mount of the namespace we were cloned from, which open_tree()
	 * refuses: reopen the same directory by path in ours, and check it is the same. */
	fd_path(rootfs_fd, link);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return runner_errf(e, -errno, "cannot find the rootfs");
	path[n] = '\0';
	fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || !same_inode(fd, rootfs_fd))
		return runner_errf(e, fd < 0 ? -errno : -ESTALE, "cannot reopen the rootfs '%s'",
		                   path);
	r = clone_tree(fd, "", true, false, &tree);
	if (r < 0)
		return runner_errf(e, r, "cannot bind the rootfs onto itself");
	r = attach(tree, fd);
	if (r < 0)
		return runner_errf(e, r, "cannot bind the rootfs onto itself");
	/* The clone's fd now names the root of the attached bind mount: everything below is
	 * resolved from it, so nothing lands on the mount it covers. */
	*ret_root_fd = TAKE_FD(tree);
	return 0;
}

int mount_pivot(int root_fd, struct error *e)
{
	if (fchdir(root_fd) < 0)
		return runner_errf(e, -errno, "cannot enter the rootfs");
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return runner_errf(e, -errno, "cannot pivot_root into the rootfs");
	/* The old root is stacked on "/" now; it is a slave, so detaching it does not
	 * propagate to the host. */
	if (umount2(".", MNT_DETACH) < 0)
		return runner_errf(e, -errno, "cannot detach the old root");
	if (chdir("/") < 0)
		return runner_errf(e, -errno, "cannot chdir to '/'");
	return 0;
}

int root_read_file(int root_fd, const char *path, size_t max, char **ret)
{
	struct open_how how = {
	    .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	_cleanup_close_ int fd = -1;
	struct stat st;

	/* O_NONBLOCK: a FIFO planted at /etc/passwd must not hang us. */
	fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	_cleanup_free_ char *buf = malloc(max + 1);
	if (!buf)
		return -ENOMEM;
	ssize_t n = read_full(fd, buf, max + 1);
	if (n < 0)
		return (int)n;
	if ((size_t)n > max)
		return -EFBIG;
	buf[n] = '\0';
	*ret = TAKE_PTR(buf);
	return 0;
}
