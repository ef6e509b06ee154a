/* The filesystem core: inode table, the read-only view of the lower tree and the merged
 * view of a writable mount (lookup and listing); changes live in fs_write.c.
 * See fs.h for the contract. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/statvfs.h>
#include "common/fileio.h"
#include "common/log.h"
#include "fs_internal.h"

static const uint64_t lower_generation = 0;

static void inode_free(struct imgfs *fs, struct inode *inode);
static void table_insert(struct imgfs *fs, struct inode *inode);

bool imgfs_is_ro(const struct imgfs *fs)
{
	return fs->ro;
}

void imgfs_set_notify(struct imgfs *fs, void (*fn)(void *userdata, uint64_t ino), void *userdata)
{
	fs->notify = fn;
	fs->notify_data = userdata;
}

void notify_attr(struct imgfs *fs, uint64_t ino)
{
	if (fs->notify)
		fs->notify(fs->notify_data, ino);
}

static int make_root(struct imgfs *fs)
{
	struct inode *root;
	struct stat st;
	int r;

	root = calloc(1, sizeof(*root));
	if (!root)
		return -ENOMEM;
	root->ino = IMGFS_ROOT_INO;
	root->lower = 0;
	root->type = S_IFDIR;
	root->pathfd = -1;
	root->dirfd = -1;
	r = lower_canonical(fs, 0, &root->data);
	if (r >= 0)
		r = upper_open_dir(upper_root_fd(fs->upper), ".", &root->dirfd);
	if (r >= 0 && fstat(root->dirfd, &st) < 0)
		r = -errno;
	if (r < 0) {
		inode_free(fs, root);
		return r;
	}
	root->upper = true;
	root->opaque = upper_is_opaque(fs->upper, root->dirfd);
	root->lower_dir = root->opaque ? NO_NODE : 0;
	root->st_ino = (uint64_t)root->data + 1;
	/* The kernel never forgets the root: one permanent reference. */
	root->refs = 1;
	fs->root = root;
	pthread_mutex_lock(&fs->lock);
	table_insert(fs, root);
	pthread_mutex_unlock(&fs->lock);
	inode_set_upper(fs, root, st.st_ino);
	return 0;
}

int imgfs_new(const struct lower *lower, const struct imgfs_opts *opts, struct imgfs **ret)
{
	struct imgfs *fs;
	int r;

	fs = calloc(1, sizeof(*fs));
	if (!fs) {
		if (lower->ops->close)
			lower->ops->close(lower->data);
		upper_free(opts ? opts->upper : NULL);
		return -ENOMEM;
	}
	fs->lower = *lower;
	fs->upper = opts ? opts->upper : NULL;
	fs->ro = !fs->upper;
	fs->no_security_labels = opts && opts->no_security_labels;
	fs->n_nodes = lower->ops->node_count(lower->data);
	fs->next_ino = (uint64_t)fs->n_nodes + 1;
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->stats_lock, NULL);
	pthread_rwlock_init(&fs->ns, NULL);
	pthread_mutex_init(&fs->listings_lock, NULL);
	fs->n_buckets = 1024;
	fs->buckets = calloc(fs->n_buckets, sizeof(*fs->buckets));
	fs->n_ubuckets = 4096;
	fs->ubuckets = calloc(fs->n_ubuckets, sizeof(*fs->ubuckets));
	if (!fs->buckets || !fs->ubuckets) {
		imgfs_free(fs);
		return -ENOMEM;
	}
	if (fs->n_nodes == 0) {
		/* Not even a root: a corrupt tree, refused before the kernel sees it. */
		imgfs_free(fs);
		return -EBADMSG;
	}
	if (fs->upper) {
		r = make_root(fs);
		if (r < 0) {
			imgfs_free(fs);
			return r;
		}
	}
	*ret = fs;
	return 0;
}

void orphan_name(uint64_t ino, char buf[32])
{
	snprintf(buf, 32, ORPHAN_PREFIX "%llx", (unsigned long long)ino);
}

static void inode_free(struct imgfs *fs, struct inode *inode)
{
	if (inode->orphan && fs->upper) {
		char name[32];

		orphan_name(inode->ino, name);
		(void)unlinkat(upper_work_fd(fs->upper), name, 0);
	}
	if (inode->dirfd >= 0)
		close(inode->dirfd);
	if (inode->pathfd >= 0)
		close(inode->pathfd);
	free(inode->name);
	free(inode);
}

void imgfs_free(struct imgfs *fs)
{
	if (!fs)
		return;
	for (size_t i = 0; fs->buckets && i < fs->n_buckets; i++) {
		struct inode *n, *next;

		for (n = fs->buckets[i]; n; n = next) {
			next = n->next;
			inode_free(fs, n);
		}
	}
	free(fs->buckets);
	free(fs->ubuckets);
	listings_free(fs);
	pthread_mutex_destroy(&fs->listings_lock);
	if (fs->lower.ops && fs->lower.ops->close)
		fs->lower.ops->close(fs->lower.data);
	upper_free(fs->upper);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->stats_lock);
	pthread_rwlock_destroy(&fs->ns);
	free(fs);
}

/* ---- inode table ---- */

static size_t hash_of(uint64_t key, size_t n)
{
	/* Fibonacci hashing: consecutive numbers spread over the table. */
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & (n - 1);
}

static size_t bucket_of(const struct imgfs *fs, uint64_t ino)
{
	return hash_of(ino, fs->n_buckets);
}

/* Called with fs->lock held. */
static struct inode *table_find(struct imgfs *fs, uint64_t ino)
{
	for (struct inode *n = fs->buckets[bucket_of(fs, ino)]; n; n = n->next)
		if (n->ino == ino)
			return n;
	return NULL;
}

/* Called with fs->lock held. Growing is best effort: a full table only gets slower. */
static void table_grow(struct imgfs *fs)
{
	size_t old_n = fs->n_buckets, new_n = old_n * 2;
	struct inode **old = fs->buckets, **nb;

	nb = calloc(new_n, sizeof(*nb));
	if (!nb)
		return;
	fs->buckets = nb;
	fs->n_buckets = new_n;
	for (size_t i = 0; i < old_n; i++) {
		struct inode *n, *next;

		for (n = old[i]; n; n = next) {
			size_t b = bucket_of(fs, n->ino);

			next = n->next;
			n->next = nb[b];
			nb[b] = n;
		}
	}
	free(old);
}

/* Called with fs->lock held. */
static void table_insert(struct imgfs *fs, struct inode *inode)
{
	size_t b;

	if (fs->n_inodes >= fs->n_buckets * 2)
		table_grow(fs);
	b = bucket_of(fs, inode->ino);
	inode->next = fs->buckets[b];
	fs->buckets[b] = inode;
	fs->n_inodes++;
}

/* Called with fs->lock held. The upper index does not grow: chains get longer. */
static struct inode *uindex_find(struct imgfs *fs, ino_t uino)
{
	for (struct inode *n = fs->ubuckets[hash_of(uino, fs->n_ubuckets)]; n; n = n->unext)
		if (n->upper_ino == uino)
			return n;
	return NULL;
}

static void uindex_remove(struct imgfs *fs, struct inode *inode)
{
	struct inode **p;

	if (!inode->indexed)
		return;
	for (p = &fs->ubuckets[hash_of(inode->upper_ino, fs->n_ubuckets)]; *p; p = &(*p)->unext) {
		if (*p == inode) {
			*p = inode->unext;
			break;
		}
	}
	inode->indexed = false;
}

/* Records the upper entry of inode (copied up or created). Called with fs->ns held for
 * writing (or the inode not yet visible). */
void inode_set_upper(struct imgfs *fs, struct inode *inode, ino_t upper_ino)
{
	pthread_mutex_lock(&fs->lock);
	uindex_remove(fs, inode);
	inode->upper = true;
	inode->upper_ino = upper_ino;
	inode->unext = fs->ubuckets[hash_of(upper_ino, fs->n_ubuckets)];
	fs->ubuckets[hash_of(upper_ino, fs->n_ubuckets)] = inode;
	inode->indexed = true;
	pthread_mutex_unlock(&fs->lock);
}

void inode_unindex(struct imgfs *fs, struct inode *inode)
{
	pthread_mutex_lock(&fs->lock);
	uindex_remove(fs, inode);
	pthread_mutex_unlock(&fs->lock);
}

/* Called with fs->lock held; frees inode and drops the reference it held on its parent
 * (which may free that one too). */
static void table_remove(struct imgfs *fs, struct inode *inode)
{
	while (inode) {
		struct inode **p = &fs->buckets[bucket_of(fs, inode->ino)];
		struct inode *parent = inode->parent;

		for (; *p; p = &(*p)->next) {
			if (*p == inode) {
				*p = inode->next;
				fs->n_inodes--;
				break;
			}
		}
		uindex_remove(fs, inode);
		inode_free(fs, inode);
		inode = NULL;
		if (parent) {
			parent->refs--;
			if (parent->refs == 0 && parent->nlookup == 0)
				inode = parent;
		}
	}
}

struct inode *table_find_locked(struct imgfs *fs, uint64_t ino)
{
	return table_find(fs, ino);
}

struct inode *uindex_find_locked(struct imgfs *fs, ino_t uino)
{
	return uindex_find(fs, uino);
}

void table_insert_locked(struct imgfs *fs, struct inode *inode)
{
	table_insert(fs, inode);
}

static bool is_lower_ino(const struct imgfs *fs, uint64_t ino)
{
	return ino >= 1 && ino <= fs->n_nodes;
}

/* The canonical node of node, range-checked. */
int lower_canonical(struct imgfs *fs, uint32_t node, uint32_t *ret)
{
	uint32_t c;

	if (node >= fs->n_nodes)
		return -EIO;
	c = fs->lower.ops->canonical(fs->lower.data, node);
	if (c >= fs->n_nodes)
		return -EIO;
	*ret = c;
	return 0;
}

/* Finds ino and takes a reference. In a read-only mount the object of a lower inode is
 * created when missing; a writable mount knows only what it handed out (-ESTALE). */
int inode_get(struct imgfs *fs, uint64_t ino, struct inode **ret)
{
	struct inode *inode;
	bool lower = is_lower_ino(fs, ino) && !fs->upper;
	uint32_t data = 0;

	/* Asked of the lower before locking: the table lock never waits for the lower. */
	if (lower) {
		int r = lower_canonical(fs, (uint32_t)(ino - 1), &data);

		if (r < 0)
			return r;
	}
	pthread_mutex_lock(&fs->lock);
	inode = table_find(fs, ino);
	if (!inode) {
		if (!lower) {
			pthread_mutex_unlock(&fs->lock);
			/* A number the kernel got from a process before this one. */
			return fs->upper ? inode_restore(fs, ino, ret) : -ESTALE;
		}
		inode = calloc(1, sizeof(*inode));
		if (!inode) {
			pthread_mutex_unlock(&fs->lock);
			return -ENOMEM;
		}
		inode->ino = ino;
		inode->generation = lower_generation;
		inode->lower = (uint32_t)(ino - 1);
		inode->data = data;
		inode->dirfd = -1;
		inode->pathfd = -1;
		inode->lower_dir = NO_NODE;
		table_insert(fs, inode);
	}
	inode->refs++;
	pthread_mutex_unlock(&fs->lock);
	*ret = inode;
	return 0;
}

void inode_ref(struct imgfs *fs, struct inode *inode)
{
	pthread_mutex_lock(&fs->lock);
	inode->refs++;
	pthread_mutex_unlock(&fs->lock);
}

/* Drops a reference taken by inode_get(); with count_lookup, turns it into a kernel lookup
 * instead. */
void inode_put(struct imgfs *fs, struct inode *inode, bool count_lookup)
{
	if (!inode)
		return;
	pthread_mutex_lock(&fs->lock);
	if (count_lookup)
		inode->nlookup++;
	inode->refs--;
	if (inode->refs == 0 && inode->nlookup == 0)
		table_remove(fs, inode);
	pthread_mutex_unlock(&fs->lock);
}

void imgfs_forget(struct imgfs *fs, uint64_t ino, uint64_t nlookup)
{
	struct inode *inode;

	pthread_mutex_lock(&fs->lock);
	inode = table_find(fs, ino);
	if (!inode) {
		pthread_mutex_unlock(&fs->lock);
		log_debug("forget of unknown inode %llu", (unsigned long long)ino);
		return;
	}
	if (inode->restored) {
		/* Its count is not known: the kernel forgets an inode all at once. */
		inode->restored = false;
		nlookup = inode->nlookup;
	}
	if (nlookup > inode->nlookup) {
		log_debug("forget of %llu lookups of inode %llu, which has %llu",
		          (unsigned long long)nlookup, (unsigned long long)ino,
		          (unsigned long long)inode->nlookup);
		nlookup = inode->nlookup;
	}
	inode->nlookup -= nlookup;
	if (inode->refs == 0 && inode->nlookup == 0)
		table_remove(fs, inode);
	pthread_mutex_unlock(&fs->lock);
}

uint64_t imgfs_lookup_count(struct imgfs *fs, uint64_t ino)
{
	struct inode *inode;
	uint64_t n = 0;

	pthread_mutex_lock(&fs->lock);
	inode = table_find(fs, ino);
	if (inode)
		n = inode->nlookup;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

size_t imgfs_inode_count(struct imgfs *fs)
{
	size_t n;

	pthread_mutex_lock(&fs->lock);
	n = fs->n_inodes;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

/* ---- lower access, checked: a corrupt tree gives -EIO, never a crash ---- */

static bool valid_type(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFDIR:
	case S_IFLNK:
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		return true;
	default:
		return false;
	}
}

/* Attributes of a lower node: those of its canonical node, whose number + 1 is st_ino. */
int lower_stat(struct imgfs *fs, uint32_t node, struct stat *ret)
{
	struct stat st;
	int r;

	r = lower_canonical(fs, node, &node);
	if (r < 0)
		return r;
	memset(&st, 0, sizeof(st));
	r = fs->lower.ops->stat(fs->lower.data, node, &st);
	if (r < 0)
		return r;
	if (!valid_type(st.st_mode)) {
		log_debug("lower node %u has an invalid mode %o", node, (unsigned)st.st_mode);
		return -EIO;
	}
	st.st_ino = (ino_t)node + 1;
	if (st.st_nlink == 0)
		st.st_nlink = 1;
	if (st.st_blksize == 0)
		st.st_blksize = 4096;
	*ret = st;
	return 0;
}

static int fill_entry(struct imgfs *fs, uint32_t node, struct imgfs_entry *ret)
{
	struct imgfs_entry e = {0};
	int r;

	r = lower_stat(fs, node, &e.st);
	if (r < 0)
		return r;
	e.ino = (uint64_t)node + 1;
	e.generation = lower_generation;
	*ret = e;
	return 0;
}

static int inode_stat(struct imgfs *fs, const struct inode *inode, struct stat *ret)
{
	return lower_stat(fs, inode->data, ret);
}

bool valid_name(const char *name)
{
	return name[0] && !strchr(name, '/') && !streq(name, ".") && !streq(name, "..") &&
	       strlen(name) <= NAME_MAX;
}

int lookup_name_check(const char *name)
{
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!name[0] || strchr(name, '/'))
		return -ENOENT;
	return 0;
}

/* ---- the operations ---- */

static int ro_lookup(struct imgfs *fs, uint64_t parent, const char *name, struct imgfs_entry *ret)
{
	struct inode *dir, *child;
	struct imgfs_entry e;
	uint32_t node;
	int r;

	r = lookup_name_check(name);
	if (r < 0)
		return r;
	r = inode_get(fs, parent, &dir);
	if (r < 0)
		return r;
	if (streq(name, "."))
		node = dir->lower;
	else if (streq(name, "..")) {
		/* Only asked for directories (NFS export's get_parent). */
		node = fs->lower.ops->parent(fs->lower.data, dir->lower);
	} else
		r = fs->lower.ops->lookup(fs->lower.data, dir->lower, name, &node);
	inode_put(fs, dir, false);
	if (r < 0)
		return r;
	r = fill_entry(fs, node, &e);
	if (r < 0)
		return r;
	r = inode_get(fs, e.ino, &child);
	if (r < 0)
		return r;
	inode_put(fs, child, true);
	*ret = e;
	return 0;
}

static int ro_getattr(struct imgfs *fs, uint64_t ino, struct stat *ret)
{
	struct inode *inode;
	int r;

	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	r = inode_stat(fs, inode, ret);
	inode_put(fs, inode, false);
	return r;
}

static int ro_readlink(struct imgfs *fs, uint64_t ino, char *buf, size_t size)
{
	struct inode *inode;
	int r;

	if (size == 0)
		return -ENAMETOOLONG;
	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	r = fs->lower.ops->readlink(fs->lower.data, inode->data, buf, size);
	inode_put(fs, inode, false);
	if (r < 0)
		return r;
	if ((size_t)r >= size)
		return -ENAMETOOLONG;
	buf[r] = '\0';
	return r;
}

static int file_new(struct inode *inode, int fd, bool writable, struct imgfs_file **ret)
{
	struct imgfs_file *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->inode = inode;
	f->fd = fd;
	f->writable = writable;
	pthread_mutex_init(&f->lock, NULL);
	pthread_mutex_init(&f->wb_lock, NULL);
	*ret = f;
	return 0;
}

static int ro_open(struct imgfs *fs, uint64_t ino, int flags, struct imgfs_file **ret)
{
	struct inode *inode;
	struct stat st;
	int r;

	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	r = inode_stat(fs, inode, &st);
	if (r < 0)
		goto fail;
	if (S_ISDIR(st.st_mode)) {
		r = -EISDIR;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		/* The kernel opens devices, fifos and sockets itself. */
		r = -EINVAL;
		goto fail;
	}
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) {
		r = -EROFS;
		goto fail;
	}
	r = file_new(inode, -1, false, ret);
	if (r < 0)
		goto fail;
	return 0;
fail:
	inode_put(fs, inode, false);
	return r;
}

int imgfs_open(struct imgfs *fs, uint64_t ino, int flags, struct imgfs_file **ret)
{
	struct inode *inode;
	bool write = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
	int fd = -1, r;

	if (!fs->upper)
		return ro_open(fs, ino, flags, ret);
	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	if (S_ISDIR(inode->type)) {
		r = -EISDIR;
		goto fail;
	}
	if (!S_ISREG(inode->type)) {
		r = -EINVAL;
		goto fail;
	}
	if (write)
		ns_wrlock(fs);
	else
		pthread_rwlock_rdlock(&fs->ns);
	if (write && !inode->upper)
		/* O_TRUNC: the data is about to go, copy none of it. */
		r = copy_up(fs, inode, !(flags & O_TRUNC));
	if (r >= 0 && inode->upper) {
		int oflags = (flags & (O_ACCMODE | O_TRUNC | O_SYNC | O_DSYNC | O_NOATIME)) |
		             O_NOFOLLOW | O_CLOEXEC;
		int dfd;
		const char *name;

		/* Written files are opened for reading too: the kernel's page cache reads
		 * around partial writes (writeback cache). */
		if ((oflags & O_ACCMODE) != O_RDONLY)
			oflags = (oflags & ~O_ACCMODE) | O_RDWR;
		r = upper_ref(inode, &dfd, &name);
		if (r >= 0) {
			if (name[0])
				fd = openat(dfd, name, oflags);
			else {
				char path[40];

				snprintf(path, sizeof(path), "/proc/self/fd/%d", dfd);
				fd = open(path, oflags & ~O_NOFOLLOW);
			}
			if (fd < 0)
				r = -errno;
		}
	}
	pthread_rwlock_unlock(&fs->ns);
	if (r < 0)
		goto fail;
	r = file_new(inode, fd, write, ret);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		goto fail;
	}
	return 0;
fail:
	inode_put(fs, inode, false);
	return r;
}

/* The fd of the upper file for f, opened when the file was copied up after f was opened
 * (readers then see the new data, as on overlayfs); -1 while it is a lower file. */
static int file_fd(struct imgfs *fs, struct imgfs_file *f)
{
	int fd;

	pthread_mutex_lock(&f->lock);
	fd = f->fd;
	if (fd < 0 && fs->upper) {
		pthread_rwlock_rdlock(&fs->ns);
		if (f->inode->upper) {
			int dfd;
			const char *name;

			if (upper_ref(f->inode, &dfd, &name) >= 0 && name[0])
				fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			f->fd = fd;
		}
		pthread_rwlock_unlock(&fs->ns);
	}
	pthread_mutex_unlock(&f->lock);
	return fd;
}

ssize_t imgfs_read(struct imgfs *fs, struct imgfs_file *f, void *buf, size_t size, uint64_t off)
{
	size_t done = 0;
	int fd = file_fd(fs, f);

	if (size > SSIZE_MAX)
		size = SSIZE_MAX;
	if (fd >= 0) {
		ssize_t n = pread(fd, buf, size, (off_t)off);

		return n < 0 ? -errno : n;
	}
	while (done < size) {
		ssize_t n = fs->lower.ops->read(fs->lower.data, f->inode->data, (char *)buf + done,
		                                size - done, off + done);
		if (n < 0)
			return done > 0 ? (ssize_t)done : n;
		if (n == 0)
			break;
		if ((size_t)n > size - done)
			return -EIO;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int64_t imgfs_lseek(struct imgfs *fs, struct imgfs_file *f, uint64_t off, int whence)
{
	int fd = file_fd(fs, f);
	int64_t r;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (off > INT64_MAX)
		return -ENXIO;
	if (fd >= 0) {
		off_t o = lseek(fd, (off_t)off, whence);

		return o < 0 ? -errno : (int64_t)o;
	}
	r = fs->lower.ops->seek(fs->lower.data, f->inode->data, off, whence);
	if (r >= 0 && (uint64_t)r < off)
		return -EIO;
	return r;
}

void imgfs_release(struct imgfs *fs, struct imgfs_file *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	pthread_mutex_destroy(&f->lock);
	pthread_mutex_destroy(&f->wb_lock);
	inode_put(fs, f->inode, false);
	free(f);
}

int imgfs_opendir(struct imgfs *fs, uint64_t ino, struct imgfs_dir **ret)
{
	struct imgfs_dir *d;
	struct inode *inode;
	struct stat st;
	int r;

	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	if (fs->upper)
		r = S_ISDIR(inode->type) ? 0 : -ENOTDIR;
	else {
		r = inode_stat(fs, inode, &st);
		if (r >= 0 && !S_ISDIR(st.st_mode))
			r = -ENOTDIR;
	}
	if (r < 0) {
		inode_put(fs, inode, false);
		return r;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		inode_put(fs, inode, false);
		return -ENOMEM;
	}
	d->inode = inode;
	pthread_mutex_init(&d->lock, NULL);
	*ret = d;
	return 0;
}

void dir_snap_clear(struct imgfs_dir *d)
{
	for (size_t i = 0; i < d->n_snap; i++)
		free(d->snap[i].name);
	free(d->snap);
	d->snap = NULL;
	d->n_snap = 0;
	d->have_snap = false;
}

void imgfs_releasedir(struct imgfs *fs, struct imgfs_dir *d)
{
	if (!d)
		return;
	dir_snap_clear(d);
	pthread_mutex_destroy(&d->lock);
	inode_put(fs, d->inode, false);
	free(d);
}

/* Directory offsets seen by the kernel: 0 ".", 1 "..", then 2 + the lower's offsets. */
#define DIR_OFF_CHILDREN 2u

struct readdir_ctx {
	struct imgfs *fs;
	bool plus;
	imgfs_dirent_fn fn;
	void *userdata;
	uint64_t lower_off; /* offset of the entry being handed out */
	int error;
	bool full;
};

static int readdir_child(const char *name, uint32_t node, uint64_t next_off, void *userdata)
{
	struct readdir_ctx *c = userdata;
	struct imgfs *fs = c->fs;
	struct inode *inode = NULL;
	struct imgfs_entry e;
	int r;

	/* Offsets must move forward, or a corrupt tree would make getdents loop forever. */
	if (next_off <= c->lower_off || next_off > UINT64_MAX - DIR_OFF_CHILDREN) {
		c->error = -EIO;
		return 1;
	}
	c->lower_off = next_off;
	if (!valid_name(name)) {
		log_debug("skipping directory entry with an invalid name");
		return 0;
	}
	r = fill_entry(fs, node, &e);
	if (r < 0) {
		log_debug("skipping entry '%s': corrupt lower node %u", name, node);
		return 0;
	}
	if (c->plus) {
		/* Hold the inode while the entry is handed out, so that the lookup it
		 * counts once taken cannot fail. */
		r = inode_get(fs, e.ino, &inode);
		if (r < 0) {
			c->error = r;
			return 1;
		}
	}
	if (c->fn(name, &e, next_off + DIR_OFF_CHILDREN, c->userdata)) {
		inode_put(fs, inode, false);
		c->full = true;
		return 1;
	}
	inode_put(fs, inode, true);
	return 0;
}

static int ro_readdir(struct imgfs *fs, const struct inode *dir, uint64_t off, bool plus,
                      imgfs_dirent_fn fn, void *userdata)
{
	struct readdir_ctx c = {.fs = fs, .plus = plus, .fn = fn, .userdata = userdata};
	struct imgfs_entry dot = {0};
	int r;

	/* No lookup is counted for "." and "..": the kernel does not link them. */
	for (; off < DIR_OFF_CHILDREN; off++) {
		uint32_t node = dir->lower;

		if (off == 1) {
			node = fs->lower.ops->parent(fs->lower.data, node);
			if (node >= fs->n_nodes)
				node = dir->lower;
		}
		memset(&dot, 0, sizeof(dot));
		if (plus) {
			r = lower_stat(fs, node, &dot.st);
			if (r < 0)
				return r;
		} else {
			dot.st.st_ino = (ino_t)node + 1;
			dot.st.st_mode = S_IFDIR;
		}
		if (fn(off == 0 ? "." : "..", &dot, off + 1, userdata))
			return 0;
	}
	c.lower_off = off - DIR_OFF_CHILDREN;
	r = fs->lower.ops->readdir(fs->lower.data, dir->lower, c.lower_off, readdir_child, &c);
	if (c.error < 0)
		return c.error;
	if (r < 0 && !c.full)
		return r;
	return 0;
}

/* Whether the view answers name with EOPNOTSUPP: security.selinux when no layer has one,
 * on a read-only mount, and on a writable one when the host labels nothing (no SELinux:
 * imgfs_opts.no_security_labels), where the upper then takes no label either. ls -l, cp -a
 * and tar ask for a file's SELinux label one file at a time and, on EOPNOTSUPP, stop
 * asking for the rest of the filesystem; the kernel caches no negative xattr, so each
 * ENODATA would be a round trip to the daemon (see bench/NOTES.md, "FUSE performance"). */
bool fs_xattr_unsupported(struct imgfs *fs, const char *name)
{
	int state;

	if (!streq(name, "security.selinux") || (fs->upper && !fs->no_security_labels))
		return false;
	state = __atomic_load_n(&fs->selinux_labels, __ATOMIC_RELAXED);
	if (state == 0) {
		int r = fs->lower.ops->has_xattr_name
		            ? fs->lower.ops->has_xattr_name(fs->lower.data, name)
		            : 1;

		state = r == 0 ? 1 : 2;
		__atomic_store_n(&fs->selinux_labels, state, __ATOMIC_RELAXED);
	}
	return state == 1;
}

static ssize_t ro_getxattr(struct imgfs *fs, uint64_t ino, const char *name, void *buf, size_t size)
{
	struct inode *inode;
	ssize_t r;

	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	r = fs->lower.ops->getxattr(fs->lower.data, inode->data, name, buf, size);
	inode_put(fs, inode, false);
	if (r > 0 && size > 0 && (size_t)r > size)
		return -EIO;
	return r;
}

static ssize_t ro_listxattr(struct imgfs *fs, uint64_t ino, char *buf, size_t size)
{
	struct inode *inode;
	ssize_t r;

	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	r = fs->lower.ops->listxattr(fs->lower.data, inode->data, buf, size);
	inode_put(fs, inode, false);
	if (r < 0)
		return r;
	if (size > 0) {
		/* The kernel expects a list of NUL-terminated names. */
		if ((size_t)r > size || (r > 0 && buf[r - 1] != '\0'))
			return -EIO;
	}
	return r;
}

/* Sums the blocks of the image once: proportional to the image, so not done at mount. */
static uint64_t image_bytes(struct imgfs *fs)
{
	uint64_t total = 0;

	pthread_mutex_lock(&fs->stats_lock);
	if (!fs->stats_valid) {
		for (uint32_t n = 0; n < fs->n_nodes; n++) {
			struct stat st;
			uint32_t c;

			if (lower_canonical(fs, n, &c) < 0 || c != n)
				continue;
			if (fs->lower.ops->stat(fs->lower.data, n, &st) < 0)
				continue;
			if (st.st_blocks > 0)
				total += (uint64_t)st.st_blocks * 512;
			else if (S_ISREG(st.st_mode) && st.st_size > 0)
				total += ((uint64_t)st.st_size + 4095) & ~4095ull;
		}
		fs->stats_bytes = total;
		fs->stats_valid = true;
	}
	total = fs->stats_bytes;
	pthread_mutex_unlock(&fs->stats_lock);
	return total;
}

int imgfs_statfs(struct imgfs *fs, uint64_t ino, struct statvfs *ret)
{
	struct statvfs sv = {0};

	(void)ino;
	if (fs->upper) {
		/* As overlayfs: the space that writes can use is the upper filesystem's. */
		if (fstatvfs(upper_root_fd(fs->upper), &sv) < 0)
			return -errno;
		sv.f_namemax = NAME_MAX;
		*ret = sv;
		return 0;
	}
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = image_bytes(fs) / 4096;
	sv.f_files = fs->n_nodes;
	sv.f_namemax = NAME_MAX;
	sv.f_flag = fs->ro ? ST_RDONLY : 0;
	*ret = sv;
	return 0;
}

static bool in_group(const struct imgfs_cred *cred, gid_t gid)
{
	if (cred->gid == gid)
		return true;
	for (size_t i = 0; cred->groups && i < cred->n_groups; i++)
		if (cred->groups[i] == gid)
			return true;
	return false;
}

int imgfs_access(struct imgfs *fs, uint64_t ino, const struct imgfs_cred *cred, int mask)
{
	struct stat st;
	mode_t bits;
	int r;

	r = imgfs_getattr(fs, ino, &st);
	if (r < 0)
		return r;
	if (mask == F_OK)
		return 0;
	if ((mask & W_OK) && fs->ro && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode) &&
	    !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
		return -EROFS;
	if (cred->uid == 0) {
		/* Root passes everything but executing a file nobody may execute. */
		if ((mask & X_OK) && !S_ISDIR(st.st_mode) && !(st.st_mode & 0111))
			return -EACCES;
		return 0;
	}
	if (cred->uid == st.st_uid)
		bits = (st.st_mode >> 6) & 7;
	else if (in_group(cred, st.st_gid))
		bits = (st.st_mode >> 3) & 7;
	else
		bits = st.st_mode & 7;
	if ((mask & R_OK) && !(bits & 4))
		return -EACCES;
	if ((mask & W_OK) && !(bits & 2))
		return -EACCES;
	if ((mask & X_OK) && !(bits & 1))
		return -EACCES;
	return 0;
}

int imgfs_lookup(struct imgfs *fs, uint64_t parent, const char *name, struct imgfs_entry *ret)
{
	return fs->upper ? merged_lookup(fs, parent, name, ret) : ro_lookup(fs, parent, name, ret);
}

int imgfs_entry(struct imgfs *fs, uint64_t ino, struct imgfs_entry *ret)
{
	struct inode *inode;
	int r;

	if (!fs->upper)
		return -EROFS;
	r = inode_get(fs, ino, &inode);
	if (r < 0)
		return r;
	r = inode_entry(fs, inode, ret);
	inode_put(fs, inode, r >= 0);
	return r;
}

int imgfs_getattr(struct imgfs *fs, uint64_t ino, struct stat *ret)
{
	return fs->upper ? merged_getattr(fs, ino, NULL, ret) : ro_getattr(fs, ino, ret);
}

int imgfs_fgetattr(struct imgfs *fs, uint64_t ino, struct imgfs_file *f, struct stat *ret)
{
	return fs->upper ? merged_getattr(fs, ino, f, ret) : ro_getattr(fs, ino, ret);
}

int imgfs_readlink(struct imgfs *fs, uint64_t ino, char *buf, size_t size)
{
	return fs->upper ? merged_readlink(fs, ino, buf, size) : ro_readlink(fs, ino, buf, size);
}

int imgfs_readdir(struct imgfs *fs, struct imgfs_dir *d, uint64_t off, bool plus,
                  imgfs_dirent_fn fn, void *userdata)
{
	return fs->upper ? merged_readdir(fs, d, off, plus, fn, userdata)
	                 : ro_readdir(fs, d->inode, off, plus, fn, userdata);
}

int imgfs_readdir_ino(struct imgfs *fs, uint64_t ino, uint64_t off, bool plus, imgfs_dirent_fn fn,
                      void *userdata)
{
	struct inode *dir;
	struct stat st;
	int r;

	if (fs->upper)
		return merged_readdir_ino(fs, ino, off, plus, fn, userdata);
	r = inode_get(fs, ino, &dir);
	if (r < 0)
		return r;
	r = inode_stat(fs, dir, &st);
	if (r >= 0 && !S_ISDIR(st.st_mode))
		r = -ENOTDIR;
	if (r >= 0)
		r = ro_readdir(fs, dir, off, plus, fn, userdata);
	inode_put(fs, dir, false);
	return r;
}

ssize_t imgfs_getxattr(struct imgfs *fs, uint64_t ino, const char *name, void *buf, size_t size)
{
	if (fs_xattr_unsupported(fs, name))
		return -EOPNOTSUPP;
	return fs->upper ? merged_getxattr(fs, ino, name, buf, size)
	                 : ro_getxattr(fs, ino, name, buf, size);
}

ssize_t imgfs_listxattr(struct imgfs *fs, uint64_t ino, char *buf, size_t size)
{
	return fs->upper ? merged_listxattr(fs, ino, buf, size) : ro_listxattr(fs, ino, buf, size);
}

int imgfs_drop_orphans(struct imgfs *fs)
{
	struct dirent *de;
	DIR *d;
	int r;

	if (!fs->upper)
		return 0;
	r = opendir_fd(upper_work_fd(fs->upper), &d);
	if (r < 0)
		return r;
	while ((de = readdir(d)))
		if (startswith(de->d_name, ORPHAN_PREFIX))
			(void)unlinkat(upper_work_fd(fs->upper), de->d_name, 0);
	closedir(d);
	return 0;
}
