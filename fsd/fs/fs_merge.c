/* The merged view of a writable mount: what a name is (upper entry first, a whiteout hides
 * the lower one, an opaque directory hides the lower children, a redirect names the lower
 * directory a moved directory merges with), the inode objects handed out for names, their
 * attributes, and merged listings. See fs.h for the contract, fs_internal.h for the
 * objects. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/xattr.h>
#include "common/fileio.h"
#include "common/log.h"
#include "fs_internal.h"

#define MAX_LOWER_DEPTH 4096

void found_done(struct found *f)
{
	if (f->dirfd >= 0)
		close(f->dirfd);
	f->dirfd = -1;
}

static int lower_type(struct imgfs *fs, uint32_t node, mode_t *ret)
{
	struct stat st;
	int r = lower_stat(fs, node, &st);

	if (r < 0)
		return r;
	*ret = st.st_mode & S_IFMT;
	return 0;
}

static int lower_child(struct imgfs *fs, uint32_t dir, const char *name, uint32_t *ret)
{
	uint32_t node;
	int r;

	r = fs->lower.ops->lookup(fs->lower.data, dir, name, &node);
	if (r < 0)
		return r == -ENOTDIR ? -ENOENT : r;
	if (node >= fs->n_nodes)
		return -EIO;
	*ret = node;
	return 0;
}

/* The lower directory a redirect names, from dir (the parent of the redirected directory),
 * or NO_NODE when it names nothing. */
static uint32_t follow_redirect(struct imgfs *fs, struct inode *dir, char *redirect)
{
	uint32_t node;
	char *save = NULL, *c;
	mode_t type;

	if (redirect[0] != '/') {
		if (dir->lower_dir == NO_NODE || strchr(redirect, '/') ||
		    lower_child(fs, dir->lower_dir, redirect, &node) < 0)
			return NO_NODE;
	} else {
		node = 0;
		for (c = strtok_r(redirect, "/", &save); c; c = strtok_r(NULL, "/", &save))
			if (!valid_name(c) || lower_child(fs, node, c, &node) < 0)
				return NO_NODE;
	}
	if (lower_type(fs, node, &type) < 0 || !S_ISDIR(type))
		return NO_NODE;
	return node;
}

int resolve(struct imgfs *fs, struct inode *dir, const char *name, struct found *ret)
{
	struct found f = {.kind = FOUND_NONE, .lower = NO_NODE, .lower_dir = NO_NODE, .dirfd = -1};
	mode_t ltype = 0;
	int r;

	if (!S_ISDIR(dir->type))
		return -ENOTDIR;
	if (dir->unlinked)
		return -ENOENT;
	if (dir->lower_dir != NO_NODE) {
		r = lower_child(fs, dir->lower_dir, name, &f.lower);
		if (r < 0 && r != -ENOENT)
			return r;
		if (r >= 0) {
			r = lower_type(fs, f.lower, &ltype);
			if (r < 0)
				return r;
		}
	}
	if (dir->upper) {
		r = upper_fstatat(fs->upper, dir->dirfd, name, 0, &f.ust);
		if (r < 0 && r != -ENOENT)
			return r;
		if (r >= 0 && upper_is_whiteout(&f.ust)) {
			f.whiteout = true;
			*ret = f;
			return 0;
		}
		if (r >= 0) {
			f.kind = FOUND_UPPER;
			f.type = f.ust.st_mode & S_IFMT;
			if (S_ISDIR(f.ust.st_mode)) {
				char redirect[PATH_MAX];

				r = upper_open_dir(dir->dirfd, name, &f.dirfd);
				if (r < 0)
					return r;
				f.opaque = upper_is_opaque(fs->upper, f.dirfd);
				if (f.opaque)
					f.lower_dir = NO_NODE;
				else if (upper_get_redirect(fs->upper, f.dirfd, redirect,
				                            sizeof(redirect)) > 0)
					f.lower_dir = follow_redirect(fs, dir, redirect);
				else if (f.lower != NO_NODE && S_ISDIR(ltype))
					f.lower_dir = f.lower;
			}
			*ret = f;
			return 0;
		}
	}
	if (f.lower != NO_NODE) {
		f.kind = FOUND_LOWER;
		f.type = ltype;
		if (S_ISDIR(ltype))
			f.lower_dir = f.lower;
	}
	*ret = f;
	return 0;
}

/* The canonical node of a lower node and whether it is in a hardlink group. */
static int lower_identity(struct imgfs *fs, uint32_t node, uint32_t *ret_data, bool *ret_linked)
{
	struct stat st;
	uint32_t data;
	int r;

	r = lower_canonical(fs, node, &data);
	if (r < 0)
		return r;
	r = lower_stat(fs, node, &st);
	if (r < 0)
		return r;
	*ret_data = data;
	*ret_linked = !S_ISDIR(st.st_mode) && st.st_nlink > 1;
	return 0;
}

uint64_t upper_st_ino(const struct imgfs *fs, ino_t uino)
{
	/* Above the lower's range, so the two never collide. */
	return (uint64_t)fs->n_nodes + 1 + (uint64_t)uino;
}

int child_inode(struct imgfs *fs, struct inode *dir, const char *name, struct found *f,
                struct inode **ret)
{
	struct inode *inode, *old;
	uint32_t data = 0;
	bool linked = false;
	uint32_t lower = NO_NODE;
	int r;

	if (f->kind == FOUND_NONE)
		return -ENOENT;
	if (f->kind == FOUND_LOWER || (f->lower != NO_NODE && !S_ISDIR(f->type))) {
		mode_t ltype;

		/* An upper file over a lower file of the same type at the same place is its
		 * copy (overlayfs records it in an origin xattr; the place is enough here). */
		if (f->kind == FOUND_LOWER ||
		    (lower_type(fs, f->lower, &ltype) >= 0 && ltype == f->type))
			lower = f->lower;
	} else if (S_ISDIR(f->type))
		lower = f->lower_dir != NO_NODE ? f->lower_dir : NO_NODE;
	if (lower != NO_NODE) {
		r = lower_identity(fs, lower, &data, &linked);
		if (r < 0)
			return r;
	}

	pthread_mutex_lock(&fs->lock);
	if (f->kind == FOUND_UPPER) {
		old = uindex_find_locked(fs, f->ust.st_ino);
		if (old && (old->type == f->type)) {
			old->refs++;
			pthread_mutex_unlock(&fs->lock);
			*ret = old;
			return 0;
		}
	} else {
		old = table_find_locked(fs, (uint64_t)lower + 1);
		if (old && old->parent == dir && old->name && streq(old->name, name) &&
		    !old->upper) {
			old->refs++;
			pthread_mutex_unlock(&fs->lock);
			*ret = old;
			return 0;
		}
	}
	inode = calloc(1, sizeof(*inode));
	if (inode)
		inode->name = strdup(name);
	if (!inode || !inode->name) {
		pthread_mutex_unlock(&fs->lock);
		free(inode);
		return -ENOMEM;
	}
	inode->dirfd = -1;
	inode->pathfd = -1;
	inode->lower = lower;
	inode->data = lower != NO_NODE ? data : NO_NODE;
	inode->type = f->type;
	inode->lower_dir = S_ISDIR(f->type) ? f->lower_dir : NO_NODE;
	inode->opaque = f->opaque;
	if (lower != NO_NODE && !table_find_locked(fs, (uint64_t)lower + 1)) {
		inode->ino = (uint64_t)lower + 1;
		inode->generation = 0;
	} else if (f->kind == FOUND_UPPER && (uint64_t)f->ust.st_ino < UPPER_INO_BIT &&
	           !table_find_locked(fs, UPPER_INO_BIT | (uint64_t)f->ust.st_ino)) {
		inode->ino = UPPER_INO_BIT | (uint64_t)f->ust.st_ino;
		inode->generation = 1;
	} else {
		inode->ino = fs->next_ino++;
		inode->generation = 1;
	}
	inode->parent = dir;
	dir->refs++;
	inode->refs = 1;
	table_insert_locked(fs, inode);
	pthread_mutex_unlock(&fs->lock);

	if (f->kind == FOUND_UPPER) {
		inode->dirfd = f->dirfd;
		f->dirfd = -1;
		if (S_ISDIR(f->type))
			inode->st_ino = inode->lower_dir != NO_NODE
			                    ? (uint64_t)data + 1
			                    : upper_st_ino(fs, f->ust.st_ino);
		else
			/* A copy hardlinked in the upper has names with no lower at their place:
			 * every name shows the upper's number, as imgfs_link() does. */
			inode->st_ino = lower != NO_NODE && !linked && f->ust.st_nlink <= 1
			                    ? (uint64_t)data + 1
			                    : upper_st_ino(fs, f->ust.st_ino);
		if (!S_ISDIR(f->type) && f->ust.st_nlink > 1)
			/* The name is not enough to find a hardlinked file again. */
			inode->pathfd = openat(dir->dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		inode_set_upper(fs, inode, f->ust.st_ino);
	}
	*ret = inode;
	return 0;
}

int upper_ref(struct inode *inode, int *ret_fd, const char **ret_name)
{
	if (!inode->upper)
		return -EIO;
	if (S_ISDIR(inode->type)) {
		*ret_fd = inode->dirfd;
		*ret_name = "";
		return inode->dirfd >= 0 ? 0 : -EIO;
	}
	if (inode->pathfd >= 0) {
		*ret_fd = inode->pathfd;
		*ret_name = "";
		return 0;
	}
	if (inode->unlinked || !inode->parent || inode->parent->dirfd < 0)
		return -ESTALE;
	*ret_fd = inode->parent->dirfd;
	*ret_name = inode->name;
	return 0;
}

int stat_inode(struct imgfs *fs, struct inode *inode, int fd, struct stat *ret)
{
	struct stat st;
	int r;

	if (!inode->upper) {
		r = lower_stat(fs, inode->data, &st);
		if (r < 0)
			return r;
		*ret = st;
		return 0;
	}
	/* The link of a pending copy-up's work name is not the user's. */
	if (fd >= 0) {
		r = upper_fstatat(fs->upper, fd, "", AT_EMPTY_PATH, &st);
		if (r < 0)
			return r;
	} else {
		int dfd;
		const char *name;

		r = upper_ref(inode, &dfd, &name);
		if (r < 0)
			return r;
		r = upper_fstatat(fs->upper, dfd, name, name[0] ? 0 : AT_EMPTY_PATH, &st);
		if (r < 0)
			return r;
	}
	st.st_ino = (ino_t)inode->st_ino;
	/* The link that keeps an unlinked open file for a process taking over is not the
	 * user's. */
	if (inode->orphan && st.st_nlink > 0)
		st.st_nlink--;
	/* overlayfs: a merged directory has no meaningful link count. */
	if (S_ISDIR(inode->type) && inode->lower_dir != NO_NODE)
		st.st_nlink = 1;
	*ret = st;
	return 0;
}

struct name_ctx {
	uint32_t node;
	char *buf;
	size_t size;
	int r;
};

static int name_cb(const char *name, uint32_t node, uint64_t next_off, void *userdata)
{
	struct name_ctx *c = userdata;

	(void)next_off;
	if (node != c->node)
		return 0;
	if (strlen(name) >= c->size)
		c->r = -ENAMETOOLONG;
	else {
		strcpy(c->buf, name);
		c->r = (int)strlen(name);
	}
	return 1;
}

int lower_name(struct imgfs *fs, uint32_t node, char *buf, size_t size)
{
	struct name_ctx c = {.node = node, .buf = buf, .size = size, .r = -ENOENT};
	uint32_t parent;

	if (node == 0 || node >= fs->n_nodes)
		return -EINVAL;
	parent = fs->lower.ops->parent(fs->lower.data, node);
	if (parent >= fs->n_nodes || parent == node)
		return -EIO;
	(void)fs->lower.ops->readdir(fs->lower.data, parent, 0, name_cb, &c);
	return c.r;
}

int lower_path(struct imgfs *fs, uint32_t node, char *buf, size_t size)
{
	uint32_t chain[MAX_LOWER_DEPTH];
	size_t n = 0, len = 0;

	while (node != 0) {
		if (n == MAX_LOWER_DEPTH || node >= fs->n_nodes)
			return -EIO;
		chain[n++] = node;
		node = fs->lower.ops->parent(fs->lower.data, node);
	}
	if (n == 0) {
		if (size < 2)
			return -ENAMETOOLONG;
		strcpy(buf, "/");
		return 1;
	}
	while (n > 0) {
		char name[NAME_MAX + 1];
		int r = lower_name(fs, chain[--n], name, sizeof(name));

		if (r < 0)
			return r;
		if (len + 1 + (size_t)r + 1 > size)
			return -ENAMETOOLONG;
		buf[len++] = '/';
		memcpy(buf + len, name, (size_t)r + 1);
		len += (size_t)r;
	}
	return (int)len;
}

/* ---- node ids a process before this one gave out ---- */

/* Appends "/name" to path (of length *len). */
static int path_push(char *path, size_t *len, size_t size, const char *name)
{
	size_t n = strlen(name);

	if (*len + 1 + n + 1 > size)
		return -ENAMETOOLONG;
	path[(*len)++] = '/';
	memcpy(path + *len, name, n + 1);
	*len += n;
	return 0;
}

/* Looks for the entry with inode number uino below the upper directory dfd (closed),
 * depth first, appending its path to path. 1 when found, 0 when not. */
static int upper_find(int dfd, ino_t uino, char *path, size_t *len, size_t size, int depth)
{
	struct dirent *de;
	DIR *d;
	int r = 0;

	r = opendir_fd(dfd, &d);
	close(dfd);
	if (r < 0)
		return 0;
	while (r == 0 && (de = readdir(d))) {
		size_t keep = *len;
		int fd;

		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (path_push(path, len, size, de->d_name) < 0)
			continue;
		if (de->d_ino == uino) {
			r = 1;
			break;
		}
		if (de->d_type == DT_DIR && depth < 256) {
			fd = openat(dirfd(d), de->d_name,
			            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0)
				r = upper_find(fd, uino, path, len, size, depth + 1);
		}
		if (r == 0) {
			*len = keep;
			path[keep] = '\0';
		}
	}
	closedir(d);
	return r;
}

/* The inode at path (absolute, in the merged view), with a reference. With fs->ns held. */
static int walk_path(struct imgfs *fs, const char *path, struct inode **ret)
{
	char buf[PATH_MAX], *save = NULL, *tok;
	struct inode *dir = fs->root, *child = NULL;
	int r = 0;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	inode_ref(fs, dir);
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		struct found f;

		if (!S_ISDIR(dir->type)) {
			r = -ENOTDIR;
			break;
		}
		r = resolve(fs, dir, tok, &f);
		if (r >= 0)
			r = child_inode(fs, dir, tok, &f, &child);
		found_done(&f);
		if (r < 0)
			break;
		inode_put(fs, dir, false);
		dir = child;
	}
	if (r < 0) {
		inode_put(fs, dir, false);
		return r;
	}
	*ret = dir;
	return 0;
}

/* Inserts inode (restored, numbered inode->ino), unless another thread restored that number
 * first: then inode, its fd and its name are dropped and the other one is returned, with
 * a reference. */
static struct inode *insert_restored(struct imgfs *fs, struct inode *inode)
{
	struct inode *old;

	pthread_mutex_lock(&fs->lock);
	old = table_find_locked(fs, inode->ino);
	if (old) {
		old->refs++;
		pthread_mutex_unlock(&fs->lock);
		if (inode->pathfd >= 0)
			close(inode->pathfd);
		free(inode->name);
		free(inode);
		return old;
	}
	if (inode->parent)
		inode->parent->refs++;
	table_insert_locked(fs, inode);
	pthread_mutex_unlock(&fs->lock);
	return inode;
}

/* An open file unlinked before this process took over: its link in the work directory. */
static int restore_orphan(struct imgfs *fs, uint64_t ino, struct inode **ret)
{
	struct inode *inode;
	char name[32];
	struct stat st;
	int fd;

	orphan_name(ino, name);
	fd = openat(upper_work_fd(fs->upper), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -ENOENT;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -ENOENT;
	}
	inode = calloc(1, sizeof(*inode));
	if (!inode) {
		close(fd);
		return -ENOMEM;
	}
	*inode = (struct inode){
	    .ino = ino,
	    .generation = (ino & UPPER_INO_BIT) ? 1 : 0,
	    .lower = NO_NODE,
	    .data = NO_NODE,
	    .type = S_IFREG,
	    .refs = 1,
	    .nlookup = RESTORED_LOOKUPS,
	    .restored = true,
	    .upper = true,
	    .unlinked = true,
	    .orphan = true,
	    .lower_dir = NO_NODE,
	    .dirfd = -1,
	    .pathfd = fd,
	    .upper_ino = st.st_ino,
	    .st_ino = (ino & UPPER_INO_BIT) ? upper_st_ino(fs, st.st_ino) : ino,
	};
	*ret = insert_restored(fs, inode);
	return 0;
}

/* A second inode for the upper file of of (a hardlinked one, open by pathfd), numbered ino:
 * see inode_restore(). Called with fs->ns held. */
static int restore_alias(struct imgfs *fs, uint64_t ino, struct inode *of, struct inode **ret)
{
	struct inode *a = calloc(1, sizeof(*a));
	char *name = of->name ? strdup(of->name) : NULL;
	int fd = fcntl(of->pathfd, F_DUPFD_CLOEXEC, 3);

	if (!a || !name || fd < 0) {
		free(a);
		free(name);
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	*a = (struct inode){
	    .ino = ino,
	    .lower = of->lower,
	    .data = of->data,
	    .type = of->type,
	    .refs = 1,
	    .nlookup = RESTORED_LOOKUPS,
	    .restored = true,
	    .parent = of->parent,
	    .name = name,
	    .upper = true,
	    .lower_dir = NO_NODE,
	    .dirfd = -1,
	    .pathfd = fd,
	    .upper_ino = of->upper_ino,
	    .st_ino = of->st_ino,
	};
	*ret = insert_restored(fs, a);
	return 0;
}

int inode_restore(struct imgfs *fs, uint64_t ino, struct inode **ret)
{
	char path[PATH_MAX] = "";
	struct inode *inode;
	size_t len = 0;
	int r;

	r = restore_orphan(fs, ino, ret);
	if (r != -ENOENT)
		return r;
	if (ino & UPPER_INO_BIT) {
		int fd = fcntl(upper_root_fd(fs->upper), F_DUPFD_CLOEXEC, 3);

		if (fd < 0)
			return -errno;
		/* upper_find() closes fd. */
		if (upper_find(fd, (ino_t)(ino & ~UPPER_INO_BIT), path, &len, sizeof(path), 0) != 1)
			return -ESTALE;
	} else if (ino >= 1 && ino <= fs->n_nodes) {
		r = lower_path(fs, (uint32_t)(ino - 1), path, sizeof(path));
		if (r < 0)
			return r;
	} else
		return -ESTALE;
	pthread_rwlock_rdlock(&fs->ns);
	r = walk_path(fs, path, &inode);
	if (r >= 0 && inode->ino != ino) {
		struct inode *found = inode;

		/* A lower file copied up and hard-linked: this process may have numbered it by
		 * its upper inode (another of its names was looked up first), the dead one by
		 * its lower node. The kernel holds both numbers: the old one becomes an alias of
		 * the same upper file. Anything else is another object by now. */
		r = !(ino & UPPER_INO_BIT) && found->upper && !S_ISDIR(found->type) &&
		            found->pathfd >= 0
		        ? restore_alias(fs, ino, found, &inode)
		        : -ESTALE;
		inode_put(fs, found, false);
	}
	pthread_rwlock_unlock(&fs->ns);
	if (r < 0)
		return r == -ENOENT || r == -ENOTDIR ? -ESTALE : r;
	pthread_mutex_lock(&fs->lock);
	if (!inode->restored) {
		inode->restored = true;
		inode->nlookup += RESTORED_LOOKUPS;
	}
	pthread_mutex_unlock(&fs->lock);
	log_debug("inode %llu found again at '%s'", (unsigned long long)ino, path);
	*ret = inode;
	return 0;
}

/* ---- the operations ---- */

int inode_entry(struct imgfs *fs, struct inode *inode, struct imgfs_entry *ret)
{
	struct imgfs_entry e = {0};
	int r = stat_inode(fs, inode, -1, &e.st);

	if (r < 0)
		return r;
	e.ino = inode->ino;
	e.generation = inode->generation;
	*ret = e;
	return 0;
}

/* Looks name up in dir with fs->ns held; returns the inode with a reference. */
static int lookup_locked(struct imgfs *fs, struct inode *dir, const char *name, struct inode **ret)
{
	struct found f;
	int r;

	if (streq(name, ".")) {
		inode_ref(fs, dir);
		*ret = dir;
		return 0;
	}
	if (streq(name, "..")) {
		struct inode *p = dir->parent ? dir->parent : dir;

		inode_ref(fs, p);
		*ret = p;
		return 0;
	}
	r = resolve(fs, dir, name, &f);
	if (r < 0)
		return r;
	r = child_inode(fs, dir, name, &f, ret);
	found_done(&f);
	return r;
}

int merged_lookup(struct imgfs *fs, uint64_t parent, const char *name, struct imgfs_entry *ret)
{
	struct inode *dir, *child;
	struct imgfs_entry e;
	int r;

	r = lookup_name_check(name);
	if (r < 0)
		return r;
	r = inode_get(fs, parent, &dir);
	if (r < 0)
		return r;
	pthread_rwlock_rdlock(&fs->ns);
	r = lookup_locked(fs, dir, name, &child);
	if (r >= 0) {
		r = inode_entry(fs, child, &e);
		inode_put(fs, child, r >= 0);
	}
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, dir, false);
	if (r < 0)
		return r;
	*ret = e;
	return 0;
}

int merged_getattr(struct imgfs *fs, uint64_t ino, struct imgfs_file *f, struct stat *ret)
{
	struct inode *inode;
	int r;

	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	pthread_rwlock_rdlock(&fs->ns);
	if (f) {
		pthread_mutex_lock(&f->lock);
		r = stat_inode(fs, inode, inode->upper ? f->fd : -1, ret);
		pthread_mutex_unlock(&f->lock);
	} else
		r = stat_inode(fs, inode, -1, ret);
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, inode, false);
	return r;
}

int merged_readlink(struct imgfs *fs, uint64_t ino, char *buf, size_t size)
{
	struct inode *inode;
	int r;

	if (size == 0)
		return -ENAMETOOLONG;
	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	if (!S_ISLNK(inode->type)) {
		inode_put(fs, inode, false);
		return -EINVAL;
	}
	pthread_rwlock_rdlock(&fs->ns);
	if (inode->upper) {
		int dfd;
		const char *name;
		ssize_t n;

		r = upper_ref(inode, &dfd, &name);
		if (r >= 0) {
			n = readlinkat(dfd, name, buf, size);
			r = n < 0 ? -errno : (int)n;
		}
	} else
		r = fs->lower.ops->readlink(fs->lower.data, inode->data, buf, size);
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, inode, false);
	if (r < 0)
		return r;
	if ((size_t)r >= size)
		return -ENAMETOOLONG;
	buf[r] = '\0';
	return r;
}

/* ---- merged listings ---- */

struct snap_build {
	struct dir_snap_entry *v;
	size_t n, cap;
	char **hidden; /* sorted: upper names (entries and whiteouts) */
	size_t n_hidden;
	int r;
};

static int snap_add(struct snap_build *b, const char *name)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 32;
		struct dir_snap_entry *v = realloc(b->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n].name = strdup(name);
	if (!b->v[b->n].name)
		return -ENOMEM;
	b->n++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int snap_lower_cb(const char *name, uint32_t node, uint64_t next_off, void *userdata)
{
	struct snap_build *b = userdata;
	const char *key = name;

	(void)node, (void)next_off;
	if (!valid_name(name))
		return 0;
	if (b->n_hidden && bsearch(&key, b->hidden, b->n_hidden, sizeof(char *), cmp_str))
		return 0;
	b->r = snap_add(b, name);
	return b->r < 0;
}

static int build_snapshot(struct imgfs *fs, struct imgfs_dir *d)
{
	struct inode *dir = d->inode;
	struct snap_build b = {0};
	size_t cap_hidden = 0;
	int r = 0;

	if (dir->unlinked)
		return 0;
	if (dir->upper) {
		DIR *dp;
		struct dirent *de;
		int q = opendir_fd(dir->dirfd, &dp);

		if (q < 0)
			return q;
		while (r >= 0 && (de = readdir(dp))) {
			struct stat st;
			bool whiteout = false;

			if (!valid_name(de->d_name))
				continue;
			if (de->d_type == DT_CHR || de->d_type == DT_UNKNOWN)
				whiteout = upper_stat(dir->dirfd, de->d_name, &st) >= 0 &&
				           upper_is_whiteout(&st);
			if (!whiteout)
				r = snap_add(&b, de->d_name);
			if (r >= 0 && dir->lower_dir != NO_NODE) {
				if (b.n_hidden == cap_hidden) {
					size_t cap = cap_hidden ? cap_hidden * 2 : 32;
					char **h = realloc(b.hidden, cap * sizeof(*h));

					if (!h) {
						r = -ENOMEM;
						break;
					}
					b.hidden = h;
					cap_hidden = cap;
				}
				b.hidden[b.n_hidden] = strdup(de->d_name);
				if (!b.hidden[b.n_hidden])
					r = -ENOMEM;
				else
					b.n_hidden++;
			}
		}
		closedir(dp);
	}
	if (r >= 0 && dir->lower_dir != NO_NODE) {
		if (b.n_hidden > 1) /* b.hidden is NULL when there is none */
			qsort(b.hidden, b.n_hidden, sizeof(char *), cmp_str);
		r = fs->lower.ops->readdir(fs->lower.data, dir->lower_dir, 0, snap_lower_cb, &b);
		if (b.r < 0)
			r = b.r;
	}
	for (size_t i = 0; i < b.n_hidden; i++)
		free(b.hidden[i]);
	free(b.hidden);
	if (r < 0) {
		for (size_t i = 0; i < b.n; i++)
			free(b.v[i].name);
		free(b.v);
		return r;
	}
	d->snap = b.v;
	d->n_snap = b.n;
	d->have_snap = true;
	return 0;
}

int merged_readdir(struct imgfs *fs, struct imgfs_dir *d, uint64_t off, bool plus,
                   imgfs_dirent_fn fn, void *userdata)
{
	struct inode *dir = d->inode;
	int r = 0;

	pthread_mutex_lock(&d->lock);
	pthread_rwlock_rdlock(&fs->ns);
	/* A listing from the start (opendir, rewinddir) sees the directory as it is now;
	 * later offsets index the same snapshot. */
	if (off == 0 || !d->have_snap) {
		dir_snap_clear(d);
		r = build_snapshot(fs, d);
	}
	for (; r >= 0 && off < 2; off++) {
		struct imgfs_entry dot = {0};
		struct inode *di = off == 0 || !dir->parent ? dir : dir->parent;

		r = stat_inode(fs, di, -1, &dot.st);
		if (r < 0) {
			if (off == 0)
				break;
			r = 0;
			dot.st.st_mode = S_IFDIR;
		}
		if (fn(off == 0 ? "." : "..", &dot, off + 1, userdata))
			goto out;
	}
	for (; r >= 0 && off - 2 < d->n_snap; off++) {
		const char *name = d->snap[off - 2].name;
		struct inode *child;
		struct imgfs_entry e;

		/* Gone since the snapshot: skipped, as a directory that changed under a
		 * reader may do. */
		if (lookup_locked(fs, dir, name, &child) < 0)
			continue;
		if (inode_entry(fs, child, &e) < 0) {
			inode_put(fs, child, false);
			continue;
		}
		if (!plus)
			e.ino = 0;
		if (fn(name, &e, off + 1, userdata)) {
			inode_put(fs, child, false);
			break;
		}
		inode_put(fs, child, plus);
	}
out:
	pthread_rwlock_unlock(&fs->ns);
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* ---- merged listings without a handle ---- */

void ns_wrlock(struct imgfs *fs)
{
	pthread_rwlock_wrlock(&fs->ns);
	__atomic_add_fetch(&fs->ns_gen, 1, __ATOMIC_RELEASE);
}

/* Offsets 1 and 2 follow "." and ".."; a name's offset is LISTING_KEY_MIN or more. */
#define LISTING_KEY_MIN 3u

struct listing_entry {
	uint64_t key; /* the offset after this entry: listing_key(name) */
	char *name;
};

struct listing {
	uint64_t ino, gen;
	unsigned refs; /* protected by fs->listings_lock */
	size_t n;
	struct listing_entry *v; /* sorted by key */
};

/* A name's place in the listing: a 62-bit hash (FNV-1a, then a 64-bit finaliser), so
 * that it does not depend on which other names are there. Two names of one directory
 * with the same key (about one in 2^62 per pair) share an offset: a reader resuming
 * exactly between them misses the second, as with ext4's hashed directories. */
static uint64_t listing_key(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return (h >> 2) + LISTING_KEY_MIN;
}

static void listing_unref_locked(struct listing *l)
{
	if (!l || --l->refs > 0)
		return;
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	free(l);
}

static void listing_unref(struct imgfs *fs, struct listing *l)
{
	pthread_mutex_lock(&fs->listings_lock);
	listing_unref_locked(l);
	pthread_mutex_unlock(&fs->listings_lock);
}

void listings_free(struct imgfs *fs)
{
	for (size_t i = 0; i < LISTINGS_CACHED; i++) {
		listing_unref_locked(fs->listings[i]);
		fs->listings[i] = NULL;
	}
}

static int cmp_key(const void *a, const void *b)
{
	const struct listing_entry *x = a, *y = b;

	return x->key < y->key ? -1 : x->key > y->key;
}

/* The listing of dir at generation gen (fs->ns held for reading), from the cache or
 * built now and cached. */
static int listing_get(struct imgfs *fs, struct inode *dir, uint64_t gen, struct listing **ret)
{
	struct imgfs_dir d = {.inode = dir};
	struct listing *l;
	int r;

	pthread_mutex_lock(&fs->listings_lock);
	for (size_t i = 0; i < LISTINGS_CACHED; i++) {
		l = fs->listings[i];
		if (l && l->ino == dir->ino && l->gen == gen) {
			l->refs++;
			pthread_mutex_unlock(&fs->listings_lock);
			*ret = l;
			return 0;
		}
	}
	pthread_mutex_unlock(&fs->listings_lock);

	r = build_snapshot(fs, &d);
	if (r < 0)
		return r;
	l = calloc(1, sizeof(*l));
	if (!l) {
		dir_snap_clear(&d);
		return -ENOMEM;
	}
	l->ino = dir->ino;
	l->gen = gen;
	l->refs = 2; /* the caller's and the cache's */
	l->n = d.n_snap;
	/* The snapshot's entries become the listing's, name pointers and all. */
	l->v = d.n_snap ? calloc(d.n_snap, sizeof(*l->v)) : NULL;
	if (d.n_snap && !l->v) {
		dir_snap_clear(&d);
		free(l);
		return -ENOMEM;
	}
	for (size_t i = 0; i < d.n_snap; i++) {
		l->v[i].name = d.snap[i].name;
		l->v[i].key = listing_key(d.snap[i].name);
	}
	free(d.snap);
	if (l->n > 1)
		qsort(l->v, l->n, sizeof(*l->v), cmp_key);

	pthread_mutex_lock(&fs->listings_lock);
	/* The same directory's older listings go first, else the oldest slot. */
	size_t slot = fs->listings_next;
	for (size_t i = 0; i < LISTINGS_CACHED; i++)
		if (fs->listings[i] && fs->listings[i]->ino == dir->ino) {
			slot = i;
			break;
		}
	if (slot == fs->listings_next)
		fs->listings_next = (fs->listings_next + 1) % LISTINGS_CACHED;
	listing_unref_locked(fs->listings[slot]);
	fs->listings[slot] = l;
	pthread_mutex_unlock(&fs->listings_lock);
	*ret = l;
	return 0;
}

int merged_readdir_ino(struct imgfs *fs, uint64_t ino, uint64_t off, bool plus, imgfs_dirent_fn fn,
                       void *userdata)
{
	struct listing *l = NULL;
	struct inode *dir;
	size_t lo, hi;
	int r;

	r = inode_get(fs, ino, &dir);
	if (r < 0)
		return r;
	if (!S_ISDIR(dir->type)) {
		inode_put(fs, dir, false);
		return -ENOTDIR;
	}
	pthread_rwlock_rdlock(&fs->ns);
	for (; off < 2; off++) {
		struct imgfs_entry dot = {0};
		struct inode *di = off == 0 || !dir->parent ? dir : dir->parent;

		r = stat_inode(fs, di, -1, &dot.st);
		if (r < 0) {
			if (off == 0)
				goto out;
			r = 0;
			dot.st.st_mode = S_IFDIR;
		}
		if (fn(off == 0 ? "." : "..", &dot, off + 1, userdata))
			goto out;
	}
	if (dir->unlinked)
		goto out;
	r = listing_get(fs, dir, __atomic_load_n(&fs->ns_gen, __ATOMIC_ACQUIRE), &l);
	if (r < 0)
		goto out;
	/* The first entry after the reader's offset. */
	lo = 0;
	hi = l->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (l->v[mid].key <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < l->n; i++) {
		const char *name = l->v[i].name;
		struct inode *child;
		struct imgfs_entry e;

		if (lookup_locked(fs, dir, name, &child) < 0)
			continue;
		if (inode_entry(fs, child, &e) < 0) {
			inode_put(fs, child, false);
			continue;
		}
		if (!plus)
			e.ino = 0;
		if (fn(name, &e, l->v[i].key, userdata)) {
			inode_put(fs, child, false);
			break;
		}
		inode_put(fs, child, plus);
	}
out:
	pthread_rwlock_unlock(&fs->ns);
	if (l)
		listing_unref(fs, l);
	inode_put(fs, dir, false);
	return r;
}

/* ---- xattrs ---- */

ssize_t merged_getxattr(struct imgfs *fs, uint64_t ino, const char *name, void *buf, size_t size)
{
	struct inode *inode;
	ssize_t r;

	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	pthread_rwlock_rdlock(&fs->ns);
	if (inode->upper) {
		int dfd;
		const char *n;

		r = upper_ref(inode, &dfd, &n);
		if (r >= 0)
			r = upper_getxattr(fs->upper, dfd, S_ISDIR(inode->type) ? NULL : n, name,
			                   buf, size);
	} else {
		char stored[XATTR_NAME_MAX + 1];

		/* The lower's own overlay names are hidden too, escaped ones shown. */
		r = upper_xattr_store_name(fs->upper, name, stored, sizeof(stored));
		if (r >= 0)
			r = fs->lower.ops->getxattr(fs->lower.data, inode->data, stored, buf, size);
		else
			r = -ENODATA;
		if (r > 0 && size > 0 && (size_t)r > size)
			r = -EIO;
	}
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, inode, false);
	return r;
}

ssize_t merged_listxattr(struct imgfs *fs, uint64_t ino, char *buf, size_t size)
{
	struct inode *inode;
	ssize_t r;

	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	pthread_rwlock_rdlock(&fs->ns);
	if (inode->upper) {
		int dfd;
		const char *n;

		r = upper_ref(inode, &dfd, &n);
		if (r >= 0)
			r = upper_listxattr(fs->upper, dfd, S_ISDIR(inode->type) ? NULL : n, buf,
			                    size);
	} else {
		_cleanup_free_ char *list = NULL;

		r = fs->lower.ops->listxattr(fs->lower.data, inode->data, NULL, 0);
		if (r > 0) {
			list = malloc((size_t)r);
			if (!list)
				r = -ENOMEM;
			else
				r = fs->lower.ops->listxattr(fs->lower.data, inode->data, list,
				                             (size_t)r);
		}
		if (r > 0) {
			if (list[r - 1] != '\0')
				r = -EIO;
			else
				r = (ssize_t)upper_xattr_filter_list(fs->upper, list, (size_t)r);
		}
		if (r > 0 && size > 0) {
			if ((size_t)r > size)
				r = -ERANGE;
			else
				memcpy(buf, list, (size_t)r);
		}
	}
	pthread_rwlock_unlock(&fs->ns);
	inode_put(fs, inode, false);
	return r;
}
