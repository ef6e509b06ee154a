/* The changes of a writable mount: copy-up, creation, removal (whiteouts), rename
 * (redirects, opaque directories), links, attributes, xattrs, data. Every change of the
 * namespace holds fs->ns for writing. See fs.h for the contract. */
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include "common/log.h"
#include "fs_internal.h"

/* ---- copy-up ---- */

struct lower_src_ctx {
	struct imgfs *fs;
	uint32_t node;
};

static ssize_t src_read(void *ctx, void *buf, size_t size, uint64_t off)
{
	struct lower_src_ctx *c = ctx;

	return c->fs->lower.ops->read(c->fs->lower.data, c->node, buf, size, off);
}

static int64_t src_seek(void *ctx, uint64_t off, int whence)
{
	struct lower_src_ctx *c = ctx;

	return c->fs->lower.ops->seek(c->fs->lower.data, c->node, off, whence);
}

static ssize_t src_listxattr(void *ctx, char *buf, size_t size)
{
	struct lower_src_ctx *c = ctx;

	return c->fs->lower.ops->listxattr(c->fs->lower.data, c->node, buf, size);
}

static ssize_t src_getxattr(void *ctx, const char *name, void *buf, size_t size)
{
	struct lower_src_ctx *c = ctx;

	return c->fs->lower.ops->getxattr(c->fs->lower.data, c->node, name, buf, size);
}

int copy_up(struct imgfs *fs, struct inode *inode, bool data)
{
	struct lower_src_ctx ctx = {.fs = fs, .node = inode->data};
	char link[PATH_MAX + 1];
	struct upper_src src = {
	    .node = inode->data,
	    .ctx = &ctx,
	    .read = src_read,
	    .seek = src_seek,
	    .listxattr = src_listxattr,
	    .getxattr = src_getxattr,
	};
	struct stat ust, lst;
	int dirfd = -1, r;
	bool linked;

	if (inode->upper)
		return 0;
	if (!inode->parent || inode->lower == NO_NODE || inode->unlinked)
		return -ESTALE;
	r = copy_up(fs, inode->parent, true);
	if (r < 0)
		return r;
	r = lower_stat(fs, inode->data, &lst);
	if (r < 0)
		return r;
	linked = !S_ISDIR(lst.st_mode) && lst.st_nlink > 1;
	src.st = lst;
	if (S_ISLNK(lst.st_mode)) {
		r = fs->lower.ops->readlink(fs->lower.data, inode->data, link, sizeof(link));
		if (r < 0)
			return r;
		if ((size_t)r >= sizeof(link))
			return -ENAMETOOLONG;
		link[r] = '\0';
		src.link = link;
	}
	/* A large file is read whole: its stored bytes in one sequential read-ahead, not
	 * in the decoder's 128 KiB reads from two threads (upper_copy_data()). */
	if (data && S_ISREG(lst.st_mode) && lst.st_size >= (1 << 20) && fs->lower.ops->prefetch)
		fs->lower.ops->prefetch(fs->lower.data, inode->data);
	r = upper_copy_up(fs->upper, &src, inode->parent->dirfd, inode->name, data,
	                  S_ISDIR(lst.st_mode) ? &dirfd : NULL);
	if (r < 0)
		return r;
	r = upper_stat(inode->parent->dirfd, inode->name, &ust);
	if (r < 0) {
		if (dirfd >= 0)
			close(dirfd);
		return r;
	}
	if (S_ISDIR(lst.st_mode)) {
		inode->dirfd = dirfd;
		inode->st_ino = (uint64_t)inode->data + 1;
	} else {
		/* A copy that leaves a hardlink group is a new file (overlayfs without an
		 * index); otherwise it keeps the image's inode number. */
		inode->st_ino = linked ? upper_st_ino(fs, ust.st_ino) : (uint64_t)inode->data + 1;
		if (linked)
			notify_attr(fs, inode->ino);
	}
	inode_set_upper(fs, inode, ust.st_ino);
	if (S_ISDIR(lst.st_mode))
		notify_attr(fs, inode->ino); /* now merged: link count 1 */
	return 0;
}

struct recover_ctx {
	struct imgfs *fs;
	struct lower_src_ctx src;
};

static int recover_src(void *ctx, uint32_t node, struct upper_src *ret)
{
	struct recover_ctx *c = ctx;
	struct stat st;
	int r;

	if (node >= c->fs->n_nodes)
		return -ENOENT;
	r = lower_stat(c->fs, node, &st);
	if (r < 0)
		return r;
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	c->src = (struct lower_src_ctx){.fs = c->fs, .node = node};
	*ret = (struct upper_src){
	    .st = st,
	    .node = node,
	    .ctx = &c->src,
	    .read = src_read,
	    .seek = src_seek,
	};
	return 0;
}

int imgfs_recover_copyups(struct imgfs *fs)
{
	struct recover_ctx c = {.fs = fs};

	if (!fs->upper)
		return 0;
	return upper_recover(fs->upper, recover_src, &c);
}

/* ---- helpers ---- */

/* The directory inode parent with a reference; -ENOTDIR for anything else. */
static int get_dir(struct imgfs *fs, uint64_t ino, struct inode **ret)
{
	struct inode *dir;
	int r = inode_get(fs, ino, &dir);

	if (r < 0)
		return r;
	if (!S_ISDIR(dir->type)) {
		inode_put(fs, dir, false);
		return -ENOTDIR;
	}
	*ret = dir;
	return 0;
}

static int check_name(const char *name)
{
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!valid_name(name))
		return -EINVAL;
	return 0;
}

/* With fs->ns held for writing: 0 when name is free in dir (*ret_whiteout says whether an
 * upper whiteout stands there, hiding a lower entry), -EEXIST when something is seen there,
 * or -errno. */
static int name_free(struct imgfs *fs, struct inode *dir, const char *name, bool *ret_whiteout)
{
	struct found f;
	int r;

	r = resolve(fs, dir, name, &f);
	if (r < 0)
		return r;
	found_done(&f);
	if (f.kind != FOUND_NONE)
		return -EEXIST;
	*ret_whiteout = f.whiteout;
	return 0;
}

/* Keeps an upper file reachable for open files once its name goes: for this process by
 * an O_PATH fd, for a process taking the mount over by a link work/orphan-INO when it is
 * the file's last name (see inode_restore()). */
static void keep_for_open_files(struct imgfs *fs, struct inode *inode, int dirfd, const char *name)
{
	char oname[32];
	struct stat st;

	if (S_ISDIR(inode->type) || inode->refs <= 1)
		return;
	if (inode->pathfd < 0)
		inode->pathfd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (!S_ISREG(inode->type) || inode->orphan ||
	    upper_fstatat(fs->upper, dirfd, name, AT_SYMLINK_NOFOLLOW, &st) < 0 || st.st_nlink != 1)
		return;
	orphan_name(inode->ino, oname);
	(void)unlinkat(upper_work_fd(fs->upper), oname, 0);
	if (linkat(dirfd, name, upper_work_fd(fs->upper), oname, 0) == 0)
		inode->orphan = true;
	else
		log_debug("cannot keep '%s' in the work directory: %d", name, -errno);
}

/* After one of inode's names was removed from the upper: unlinked when it was the last. */
static void name_removed(struct imgfs *fs, struct inode *inode)
{
	struct stat st;

	if (!S_ISDIR(inode->type) && inode->upper && inode->pathfd >= 0 &&
	    upper_fstatat(fs->upper, inode->pathfd, "", AT_EMPTY_PATH, &st) == 0 &&
	    st.st_nlink > (inode->orphan ? 1u : 0u))
		return;
	inode->unlinked = true;
	/* Its upper inode number may be reused by the upper filesystem. */
	inode_unindex(fs, inode);
}

struct empty_ctx {
	int dirfd; /* the upper directory, or -1 */
	int r;
};

static int empty_cb(const char *name, uint32_t node, uint64_t next_off, void *userdata)
{
	struct empty_ctx *c = userdata;
	struct stat st;

	(void)node, (void)next_off;
	if (!valid_name(name))
		return 0;
	if (c->dirfd >= 0 && upper_stat(c->dirfd, name, &st) >= 0 && upper_is_whiteout(&st))
		return 0;
	c->r = -ENOTEMPTY;
	return 1;
}

/* Whether directory inode is empty in the merged view: 0 or -ENOTEMPTY. */
static int dir_is_empty(struct imgfs *fs, struct inode *inode)
{
	struct empty_ctx c = {.dirfd = inode->upper ? inode->dirfd : -1};
	int r;

	if (inode->upper) {
		r = upper_dir_only_whiteouts(inode->dirfd);
		if (r < 0)
			return r;
	}
	if (inode->lower_dir != NO_NODE) {
		r = fs->lower.ops->readdir(fs->lower.data, inode->lower_dir, 0, empty_cb, &c);
		if (c.r < 0)
			return c.r;
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- creation ---- */

static int create_common(struct imgfs *fs, uint64_t parent, const char *name, struct upper_new *n,
                         const struct imgfs_cred *cred, struct imgfs_entry *ret, int *ret_fd)
{
	struct inode *dir, *child = NULL;
	/* A default ACL: a header and up to 2,047 entries in this buffer, plenty. */
	char acl[16384];
	struct found nf;
	struct stat dst;
	bool whiteout;
	int fd = -1, r;

	if (fs->ro)
		return -EROFS;
	r = check_name(name);
	if (r < 0)
		return r;
	r = get_dir(fs, parent, &dir);
	if (r < 0)
		return r;
	ns_wrlock(fs);
	r = name_free(fs, dir, name, &whiteout);
	if (r < 0)
		goto out;
	r = copy_up(fs, dir, true);
	if (r < 0)
		goto out;
	if (fstat(dir->dirfd, &dst) < 0) {
		r = -errno;
		goto out;
	}
	n->uid = cred->uid;
	n->gid = cred->gid;
	if (!S_ISLNK(n->mode)) {
		ssize_t len = fgetxattr(dir->dirfd, "system.posix_acl_default", acl, sizeof(acl));

		if (len > 0) {
			n->default_acl = acl;
			n->default_acl_size = (size_t)len;
		} else
			n->mode &= ~(cred->umask & 0777);
	}
	if (dst.st_mode & S_ISGID) {
		/* BSD group semantics of a setgid directory, as the kernel's
		 * inode_init_owner(). */
		n->gid = dst.st_gid;
		if (S_ISDIR(n->mode))
			n->mode |= S_ISGID;
		else if ((n->mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) && cred->uid != 0 &&
		         cred->gid != dst.st_gid)
			n->mode &= ~S_ISGID;
	}
	n->opaque = S_ISDIR(n->mode) && whiteout;
	r = upper_create(fs->upper, dir->dirfd, name, n, whiteout, &fd);
	if (r < 0)
		goto out;
	nf = (struct found){.kind = FOUND_UPPER,
	                    .lower = NO_NODE,
	                    .lower_dir = NO_NODE,
	                    .opaque = n->opaque,
	                    .type = n->mode & S_IFMT,
	                    .dirfd = -1};
	if (S_ISDIR(n->mode)) {
		nf.dirfd = fd;
		fd = -1;
	}
	r = upper_stat(dir->dirfd, name, &nf.ust);
	if (r >= 0)
		r = child_inode(fs, dir, name, &nf, &child);
	found_done(&nf);
	if (r >= 0)
		r = inode_entry(fs, child, ret);
out:
	pthread_rwlock_unlock(&fs->ns);
	if (child)
		inode_put(fs, child, r >= 0);
	inode_put(fs, dir, false);
	if (r >= 0 && ret_fd)
		*ret_fd = fd;
	else if (fd >= 0)
		close(fd);
	return r;
}

int imgfs_create(struct imgfs *fs, uint64_t parent, const char *name, mode_t mode, int flags,
                 const struct imgfs_cred *cred, struct imgfs_entry *ret,
                 struct imgfs_file **ret_file)
{
	struct upper_new n = {.mode = S_IFREG | (mode & 07777), .open_flags = flags};
	struct imgfs_entry e;
	struct imgfs_file *f;
	struct inode *inode;
	int fd = -1, r;

	r = create_common(fs, parent, name, &n, cred, &e, &fd);
	if (r < 0)
		return r;
	r = inode_get(fs, e.ino, &inode);
	if (r >= 0) {
		f = calloc(1, sizeof(*f));
		if (!f) {
			inode_put(fs, inode, false);
			r = -ENOMEM;
		}
	}
	if (r < 0) {
		close(fd);
		imgfs_forget(fs, e.ino, 1);
		return r;
	}
	f->inode = inode;
	f->fd = fd;
	f->writable = (flags & O_ACCMODE) != O_RDONLY;
	pthread_mutex_init(&f->lock, NULL);
	*ret = e;
	*ret_file = f;
	return 0;
}

int imgfs_mknod(struct imgfs *fs, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
                const struct imgfs_cred *cred, struct imgfs_entry *ret)
{
	struct upper_new n = {.mode = mode, .rdev = rdev, .open_flags = O_RDONLY};
	int fd = -1, r;

	if ((mode & S_IFMT) == 0)
		n.mode |= S_IFREG;
	if (S_ISDIR(n.mode))
		return -EINVAL;
	/* A whiteout cannot be made through the overlay. */
	if (S_ISCHR(n.mode) && rdev == 0)
		return -EPERM;
	if (!S_ISREG(n.mode) && !S_ISCHR(n.mode) && !S_ISBLK(n.mode) && !S_ISFIFO(n.mode) &&
	    !S_ISSOCK(n.mode))
		return -EINVAL;
	r = create_common(fs, parent, name, &n, cred, ret, &fd);
	if (fd >= 0)
		close(fd);
	return r;
}

int imgfs_mkdir(struct imgfs *fs, uint64_t parent, const char *name, mode_t mode,
                const struct imgfs_cred *cred, struct imgfs_entry *ret)
{
	struct upper_new n = {.mode = S_IFDIR | (mode & 07777)};

	return create_common(fs, parent, name, &n, cred, ret, NULL);
}

int imgfs_symlink(struct imgfs *fs, uint64_t parent, const char *name, const char *target,
                  const struct imgfs_cred *cred, struct imgfs_entry *ret)
{
	struct upper_new n = {.mode = S_IFLNK | 0777, .link = target};

	if (strlen(target) >= PATH_MAX)
		return -ENAMETOOLONG;
	return create_common(fs, parent, name, &n, cred, ret, NULL);
}

/* ---- removal ---- */

static int remove_common(struct imgfs *fs, uint64_t parent, const char *name, bool rmdir)
{
	struct inode *dir, *child = NULL;
	struct found f;
	int r;

	if (fs->ro)
		return -EROFS;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	r = get_dir(fs, parent, &dir);
	if (r < 0)
		return r;
	ns_wrlock(fs);
	r = resolve(fs, dir, name, &f);
	if (r < 0)
		goto out;
	if (f.kind == FOUND_NONE) {
		r = -ENOENT;
		goto out_found;
	}
	if (rmdir && !S_ISDIR(f.type)) {
		r = -ENOTDIR;
		goto out_found;
	}
	if (!rmdir && S_ISDIR(f.type)) {
		r = -EISDIR;
		goto out_found;
	}
	r = child_inode(fs, dir, name, &f, &child);
	if (r < 0)
		goto out_found;
	if (rmdir) {
		r = dir_is_empty(fs, child);
		if (r < 0)
			goto out_found;
	}
	r = copy_up(fs, dir, true);
	if (r < 0)
		goto out_found;
	if (f.kind == FOUND_UPPER) {
		keep_for_open_files(fs, child, dir->dirfd, name);
		/* Where the lower has this name, a whiteout must hide it. */
		r = upper_remove(fs->upper, dir->dirfd, name, rmdir, f.lower != NO_NODE);
	} else
		r = upper_whiteout(fs->upper, dir->dirfd, name);
	if (r >= 0)
		name_removed(fs, child);
out_found:
	found_done(&f);
out:
	pthread_rwlock_unlock(&fs->ns);
	if (child)
		inode_put(fs, child, false);
	inode_put(fs, dir, false);
	return r;
}

int imgfs_unlink(struct imgfs *fs, uint64_t parent, const char *name)
{
	return remove_common(fs, parent, name, false);
}

int imgfs_rmdir(struct imgfs *fs, uint64_t parent, const char *name)
{
	return remove_common(fs, parent, name, true);
}

/* ---- rename ---- */

/* The longest absolute redirect written, in bytes without the NUL: the default of the
 * kernel's overlayfs (module parameter redirect_max), whose rename answers EXDEV beyond it
 * so that mv copies instead. See docs/decisions/0301-redirect-max.md. */
#define REDIRECT_MAX 256

/* A directory about to move (samedir: within its parent), as the kernel's
 * ovl_rename()/ovl_set_redirect(): a lower one gets a redirect to its lower directory,
 * relative (its current name) within its parent, absolute (the lower directory's path)
 * elsewhere, -EXDEV when that is longer than REDIRECT_MAX; a redirect it has is kept when
 * it still serves (any within the parent, an absolute one anywhere). An upper-only one
 * moving into a merged directory becomes opaque (it must not merge with a lower directory
 * of its new name). */
static int prepare_dir_move(struct imgfs *fs, struct inode *d, struct inode *newparent,
                            bool samedir)
{
	char path[PATH_MAX];
	int r;

	if (d->lower_dir != NO_NODE) {
		r = upper_get_redirect(fs->upper, d->dirfd, path, sizeof(path));
		if (r < 0 && r != -ENODATA)
			return r;
		if (r > 0 && (samedir || path[0] == '/'))
			return 0;
		if (samedir)
			r = snprintf(path, sizeof(path), "%s", d->name);
		else {
			r = lower_path(fs, d->lower_dir, path, sizeof(path));
			if (r == -ENAMETOOLONG || r > REDIRECT_MAX)
				return -EXDEV;
			if (r < 0)
				return r;
		}
		/* As the kernel: a redirect that cannot be stored leaves the move to mv. */
		return upper_set_redirect(fs->upper, d->dirfd, path) < 0 ? -EXDEV : 0;
	}
	if (!d->opaque && newparent->lower_dir != NO_NODE) {
		r = upper_set_opaque(fs->upper, d->dirfd);
		if (r < 0)
			return r;
		d->opaque = true;
	}
	return 0;
}

static bool is_ancestor(struct inode *a, struct inode *d)
{
	for (; d; d = d->parent)
		if (d == a)
			return true;
	return false;
}

static void move_inode(struct imgfs *fs, struct inode *inode, struct inode *newparent,
                       char *newname)
{
	pthread_mutex_lock(&fs->lock);
	inode->parent->refs--; /* the caller holds it too: never the last reference */
	inode->parent = newparent;
	newparent->refs++;
	free(inode->name);
	inode->name = newname;
	pthread_mutex_unlock(&fs->lock);
}

int imgfs_rename(struct imgfs *fs, uint64_t parent, const char *name, uint64_t newparent,
                 const char *newname, unsigned flags)
{
	struct inode *odir = NULL, *ndir = NULL, *src = NULL, *tgt = NULL;
	struct found fo = {.dirfd = -1}, fn = {.dirfd = -1};
	char *name_src = NULL, *name_tgt = NULL;
	bool exchange = flags & IMGFS_RENAME_EXCHANGE;
	int r;

	if (fs->ro)
		return -EROFS;
	if (flags & ~(IMGFS_RENAME_NOREPLACE | IMGFS_RENAME_EXCHANGE))
		return -EINVAL;
	if ((flags & IMGFS_RENAME_NOREPLACE) && exchange)
		return -EINVAL;
	r = check_name(newname);
	if (r < 0)
		return r;
	r = get_dir(fs, parent, &odir);
	if (r < 0)
		return r;
	r = get_dir(fs, newparent, &ndir);
	if (r < 0) {
		inode_put(fs, odir, false);
		return r;
	}
	ns_wrlock(fs);
	r = resolve(fs, odir, name, &fo);
	if (r >= 0)
		r = resolve(fs, ndir, newname, &fn);
	if (r < 0)
		goto out;
	if (fo.kind == FOUND_NONE || (exchange && fn.kind == FOUND_NONE)) {
		r = -ENOENT;
		goto out;
	}
	if ((flags & IMGFS_RENAME_NOREPLACE) && fn.kind != FOUND_NONE) {
		r = -EEXIST;
		goto out;
	}
	r = child_inode(fs, odir, name, &fo, &src);
	if (r >= 0 && fn.kind != FOUND_NONE)
		r = child_inode(fs, ndir, newname, &fn, &tgt);
	if (r < 0)
		goto out;
	if (src == tgt) {
		r = 0;
		goto out;
	}
	if (S_ISDIR(src->type) && is_ancestor(src, ndir)) {
		r = -EINVAL;
		goto out;
	}
	if (exchange) {
		if (S_ISDIR(tgt->type) && is_ancestor(tgt, odir)) {
			r = -EINVAL;
			goto out;
		}
	} else if (tgt) {
		if (S_ISDIR(src->type) && !S_ISDIR(tgt->type)) {
			r = -ENOTDIR;
			goto out;
		}
		if (!S_ISDIR(src->type) && S_ISDIR(tgt->type)) {
			r = -EISDIR;
			goto out;
		}
		if (S_ISDIR(tgt->type)) {
			r = dir_is_empty(fs, tgt);
			if (r < 0)
				goto out;
		}
	}
	name_tgt = strdup(newname);
	name_src = strdup(name);
	if (!name_tgt || !name_src) {
		r = -ENOMEM;
		goto out;
	}
	r = copy_up(fs, src, true);
	if (r >= 0)
		r = copy_up(fs, ndir, true);
	if (r >= 0 && exchange)
		r = copy_up(fs, tgt, true);
	if (r >= 0 && S_ISDIR(src->type))
		r = prepare_dir_move(fs, src, ndir, odir == ndir);
	if (r >= 0 && exchange && S_ISDIR(tgt->type))
		r = prepare_dir_move(fs, tgt, odir, odir == ndir);
	if (r < 0)
		goto out;

	if (exchange) {
		if (renameat2(odir->dirfd, name, ndir->dirfd, newname, RENAME_EXCHANGE) < 0) {
			r = -errno;
			goto out;
		}
		move_inode(fs, src, ndir, TAKE_PTR(name_tgt));
		move_inode(fs, tgt, odir, TAKE_PTR(name_src));
		goto out;
	}

	if (tgt && tgt->upper) {
		if (S_ISDIR(tgt->type))
			r = upper_clear_whiteouts(tgt->dirfd);
		else
			keep_for_open_files(fs, tgt, ndir->dirfd, newname);
		if (r < 0)
			goto out;
	}
	if (fn.whiteout) {
		/* Swap with the whiteout: it then hides the lower entry of the old name,
		 * or goes when there is none. */
		if (renameat2(odir->dirfd, name, ndir->dirfd, newname, RENAME_EXCHANGE) < 0) {
			r = -errno;
			goto out;
		}
		if (fo.lower == NO_NODE)
			(void)unlinkat(odir->dirfd, name, 0);
	} else if (fo.lower != NO_NODE) {
		if (renameat2(odir->dirfd, name, ndir->dirfd, newname, RENAME_WHITEOUT) < 0) {
			if (errno != EINVAL) {
				r = -errno;
				goto out;
			}
			/* No RENAME_WHITEOUT here: two steps. */
			if (renameat(odir->dirfd, name, ndir->dirfd, newname) < 0) {
				r = -errno;
				goto out;
			}
			r = upper_whiteout(fs->upper, odir->dirfd, name);
			if (r < 0)
				goto out;
		}
	} else if (renameat(odir->dirfd, name, ndir->dirfd, newname) < 0) {
		r = -errno;
		goto out;
	}
	if (tgt)
		name_removed(fs, tgt);
	move_inode(fs, src, ndir, TAKE_PTR(name_tgt));
out:
	found_done(&fo);
	found_done(&fn);
	pthread_rwlock_unlock(&fs->ns);
	free(name_src);
	free(name_tgt);
	if (src)
		inode_put(fs, src, false);
	if (tgt)
		inode_put(fs, tgt, false);
	inode_put(fs, ndir, false);
	inode_put(fs, odir, false);
	return r;
}

/* ---- links ---- */

int imgfs_link(struct imgfs *fs, uint64_t ino, uint64_t newparent, const char *newname,
               struct imgfs_entry *ret)
{
	struct inode *src, *ndir;
	const char *oname;
	bool whiteout;
	int ofd, r;

	if (fs->ro)
		return -EROFS;
	r = check_name(newname);
	if (r < 0)
		return r;
	r = inode_get(fs, ino, &src);
	if (r < 0)
		return r;
	if (S_ISDIR(src->type)) {
		inode_put(fs, src, false);
		return -EPERM;
	}
	r = get_dir(fs, newparent, &ndir);
	if (r < 0) {
		inode_put(fs, src, false);
		return r;
	}
	ns_wrlock(fs);
	r = name_free(fs, ndir, newname, &whiteout);
	if (r < 0)
		goto out;
	r = copy_up(fs, src, true);
	if (r >= 0)
		r = copy_up(fs, ndir, true);
	if (r >= 0)
		r = upper_ref(src, &ofd, &oname);
	if (r < 0)
		goto out;
	r = upper_link(fs->upper, ofd, oname, ndir->dirfd, newname, whiteout);
	if (r < 0)
		goto out;
	if (src->pathfd < 0)
		src->pathfd = openat(ndir->dirfd, newname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	/* Its new name has no lower at its place: both show the upper's number, as they will
	 * to a process that looks them up afresh (child_inode()). */
	src->st_ino = upper_st_ino(fs, src->upper_ino);
	r = inode_entry(fs, src, ret);
out:
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, ndir, false);
	inode_put(fs, src, r >= 0);
	return r;
}

/* ---- attributes and data ---- */

int imgfs_setattr(struct imgfs *fs, uint64_t ino, struct imgfs_file *f, const struct stat *st,
                  unsigned valid, struct stat *ret)
{
	struct inode *inode;
	const char *name;
	char path[40];
	int dfd, r;

	if (fs->ro)
		return -EROFS;
	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	ns_wrlock(fs);
	r = copy_up(fs, inode, !((valid & IMGFS_SET_SIZE) && st->st_size == 0));
	if (r >= 0)
		r = upper_ref(inode, &dfd, &name);
	if (r < 0)
		goto out;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", dfd);
	/* A chown to -1, -1 changes nothing but the change time, which is what it asks. */
	if (valid & (IMGFS_SET_UID | IMGFS_SET_GID | IMGFS_SET_CTIME)) {
		uid_t uid = valid & IMGFS_SET_UID ? st->st_uid : (uid_t)-1;
		gid_t gid = valid & IMGFS_SET_GID ? st->st_gid : (gid_t)-1;

		if (fchownat(dfd, name, uid, gid,
		             AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH)) < 0) {
			r = -errno;
			goto out;
		}
	}
	if (valid & IMGFS_SET_MODE) {
		if (S_ISLNK(inode->type))
			r = -EOPNOTSUPP;
		else if (name[0]                ? fchmodat(dfd, name, st->st_mode & 07777, 0) < 0
		         : S_ISDIR(inode->type) ? fchmod(dfd, st->st_mode & 07777) < 0
		                                : chmod(path, st->st_mode & 07777) < 0)
			r = -errno;
		if (r < 0)
			goto out;
	}
	if (valid & IMGFS_SET_SIZE) {
		int fd = -1, tfd;

		if (!S_ISREG(inode->type)) {
			r = S_ISDIR(inode->type) ? -EISDIR : -EINVAL;
			goto out;
		}
		if (f && f->writable && f->fd >= 0)
			tfd = f->fd;
		else {
			fd = name[0] ? openat(dfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC)
			             : open(path, O_WRONLY | O_CLOEXEC);
			if (fd < 0) {
				r = -errno;
				goto out;
			}
			tfd = fd;
		}
		if (ftruncate(tfd, st->st_size) < 0)
			r = -errno;
		if (fd >= 0)
			close(fd);
		if (r < 0)
			goto out;
	}
	if (valid &
	    (IMGFS_SET_ATIME | IMGFS_SET_MTIME | IMGFS_SET_ATIME_NOW | IMGFS_SET_MTIME_NOW)) {
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

		if (valid & IMGFS_SET_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (valid & IMGFS_SET_ATIME)
			ts[0] = st->st_atim;
		if (valid & IMGFS_SET_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (valid & IMGFS_SET_MTIME)
			ts[1] = st->st_mtim;
		if (name[0]                ? utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0
		    : S_ISDIR(inode->type) ? futimens(dfd, ts) < 0
		                           : utimensat(AT_FDCWD, path, ts, 0) < 0) {
			r = -errno;
			goto out;
		}
	}
	r = stat_inode(fs, inode, -1, ret);
out:
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, inode, false);
	return r;
}

/* Accounts a write of n bytes at off to f's stretch of writes in order; returns in *ret_off
 * and *ret_len the range whose writeback is due (length 0: none). */
static void wb_account(struct imgfs_file *f, uint64_t off, size_t n, uint64_t *ret_off,
                       uint64_t *ret_len)
{
	*ret_len = 0;
	pthread_mutex_lock(&f->wb_lock);
	if (off != f->wb_end)
		/* Not where the last write ended: a new stretch. A range rewritten again and
		 * again (a database's pages) is therefore never pushed out while it changes. */
		f->wb_start = off;
	f->wb_end = off + n;
	if (f->wb_end - f->wb_start >= IMGFS_WRITEBACK_CHUNK) {
		*ret_off = f->wb_start;
		*ret_len = f->wb_end - f->wb_start;
		f->wb_start = f->wb_end;
	}
	pthread_mutex_unlock(&f->wb_lock);
}

/* What file_remove_privs() does for a writer without CAP_FSETID, on the upper file (the
 * daemon's own writes keep the bits: it has the capability). */
static int kill_suidgid(int fd, const struct imgfs_cred *writer)
{
	struct stat st;
	mode_t kill = 0;

	if (writer->uid == 0)
		return 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return 0;
	if (st.st_mode & S_ISUID)
		kill |= S_ISUID;
	if (st.st_mode & S_ISGID) {
		bool member = writer->gid == st.st_gid;

		for (size_t i = 0; writer->groups && i < writer->n_groups; i++)
			member = member || writer->groups[i] == st.st_gid;
		if ((st.st_mode & S_IXGRP) || !member)
			kill |= S_ISGID;
	}
	if (kill && fchmod(fd, st.st_mode & 07777 & ~kill) < 0)
		return -errno;
	return 0;
}

ssize_t imgfs_write_with(struct imgfs *fs, struct imgfs_file *f, uint64_t off, size_t size,
                         imgfs_write_fn fn, void *userdata, const struct imgfs_cred *writer,
                         struct imgfs_writeback *ret_wb)
{
	uint64_t wb_off, wb_len;
	ssize_t n;

	(void)fs;
	*ret_wb = (struct imgfs_writeback){.fd = -1};
	if (!f->writable || f->fd < 0)
		return -EBADF;
	if (size > SSIZE_MAX || off > (uint64_t)INT64_MAX - size)
		return -EFBIG;
	if (writer) {
		/* Before the data, as the kernel does: a failure writes nothing. */
		int r = kill_suidgid(f->fd, writer);

		if (r < 0)
			return r;
	}
	n = fn(f->fd, off, size, userdata);
	if (n <= 0)
		return n;
	wb_account(f, off, (size_t)n, &wb_off, &wb_len);
	if (wb_len > 0) {
		/* A descriptor of its own: f may be released before the writeback starts. */
		int fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 0);

		if (fd >= 0)
			*ret_wb = (struct imgfs_writeback){.fd = fd, .off = wb_off, .len = wb_len};
	}
	return n;
}

void imgfs_writeback(struct imgfs_writeback *wb)
{
	if (wb->fd < 0)
		return;
	(void)sync_file_range(wb->fd, (off_t)wb->off, (off_t)wb->len, SYNC_FILE_RANGE_WRITE);
	close(wb->fd);
	wb->fd = -1;
}

int imgfs_fallocate(struct imgfs *fs, struct imgfs_file *f, int mode, uint64_t off, uint64_t len)
{
	(void)fs;
	if (!f->writable || f->fd < 0)
		return -EBADF;
	if (fallocate(f->fd, mode, (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
}

int imgfs_fsync(struct imgfs *fs, struct imgfs_file *f, bool datasync)
{
	bool upper;
	int fd, r = 0;

	pthread_mutex_lock(&f->lock);
	fd = f->fd;
	if (fd >= 0 && (datasync ? fdatasync(fd) : fsync(fd)) < 0)
		r = -errno;
	pthread_mutex_unlock(&f->lock);
	if (r < 0 || !fs->upper)
		return r;
	/* The name too: a file created or copied up since the directory was last synced
	 * would otherwise be lost with its data. */
	pthread_rwlock_rdlock(&fs->ns);
	upper = f->inode->upper;
	if (fd >= 0 && f->inode->parent && f->inode->parent->dirfd >= 0 &&
	    fsync(f->inode->parent->dirfd) < 0)
		r = -errno;
	pthread_rwlock_unlock(&fs->ns);
	/* A copy-up not yet durable (also one made through another open file): its pending
	 * name goes now, so that recovery never rewrites what the user fsynced. */
	if (r >= 0 && upper && S_ISREG(f->inode->type))
		r = upper_sync_pending(fs->upper, f->inode->upper_ino);
	return r;
}

int imgfs_fsyncdir(struct imgfs *fs, uint64_t ino, bool datasync)
{
	struct inode *inode;
	int r;

	if (!fs->upper)
		return 0;
	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	pthread_rwlock_rdlock(&fs->ns);
	if (inode->upper && inode->dirfd >= 0 &&
	    (datasync ? fdatasync(inode->dirfd) : fsync(inode->dirfd)) < 0)
		r = -errno;
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, inode, false);
	return r;
}

/* ---- xattrs ---- */

static int xattr_change(struct imgfs *fs, uint64_t ino, const char *name, const void *value,
                        size_t size, int flags, bool remove)
{
	struct inode *inode;
	const char *n;
	int dfd, r;

	if (fs->ro)
		return -EROFS;
	if (fs_xattr_unsupported(fs, name))
		return -EOPNOTSUPP;
	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	ns_wrlock(fs);
	if (remove && !inode->upper) {
		char stored[XATTR_NAME_MAX + 1];

		/* Removing what is not there changes nothing: no copy-up (overlayfs). */
		r = upper_xattr_store_name(fs->upper, name, stored, sizeof(stored));
		if (r >= 0)
			r = (int)fs->lower.ops->getxattr(fs->lower.data, inode->data, stored, NULL,
			                                 0);
		else
			r = -ENODATA;
	}
	if (r >= 0)
		r = copy_up(fs, inode, true);
	if (r >= 0)
		r = upper_ref(inode, &dfd, &n);
	if (r >= 0) {
		const char *obj = S_ISDIR(inode->type) ? NULL : n;

		r = remove ? upper_removexattr(fs->upper, dfd, obj, name)
		           : upper_setxattr(fs->upper, dfd, obj, name, value, size, flags);
	}
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, inode, false);
	return r;
}

int imgfs_setxattr(struct imgfs *fs, uint64_t ino, const char *name, const void *value, size_t size,
                   int flags)
{
	return xattr_change(fs, ino, name, value, size, flags, false);
}

int imgfs_removexattr(struct imgfs *fs, uint64_t ino, const char *name)
{
	return xattr_change(fs, ino, name, NULL, 0, 0, true);
}
