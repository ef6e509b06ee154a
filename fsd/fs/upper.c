/* The upper directory in overlayfs' format. See upper.h for the contract. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include "common/fileio.h"
#include "upper_internal.h"

/* Copy-up reads the lower in spans of this size: the layer reader decodes whole units
 * straight into the buffer, and the writes are large. */
#define COPY_CHUNK (1u << 20)

/* The first UPPER_BOOT_LEN hex digits of the kernel's boot_id, or zeros when unknown
 * (recovery then treats every pending name as one of another boot: the safe side). */
static void read_boot_id(char buf[UPPER_BOOT_LEN + 1])
{
	_cleanup_free_ char *id = NULL;
	size_t n = 0;

	memset(buf, '0', UPPER_BOOT_LEN);
	buf[UPPER_BOOT_LEN] = '\0';
	if (read_file_full(AT_FDCWD, "/proc/sys/kernel/random/boot_id", 64, &id, NULL) < 0)
		return;
	for (const char *c = id; *c && n < UPPER_BOOT_LEN; c++)
		if ((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))
			buf[n++] = *c;
	if (n < UPPER_BOOT_LEN)
		memset(buf, '0', UPPER_BOOT_LEN);
}

int upper_open(int root_fd, int work_fd, const char *prefix, struct upper **ret)
{
	struct upper *u;
	int r;

	if (strlen(prefix) >= sizeof(u->prefix) - 1) {
		close(root_fd);
		close(work_fd);
		return -EINVAL;
	}
	u = calloc(1, sizeof(*u));
	if (!u) {
		close(root_fd);
		close(work_fd);
		return -ENOMEM;
	}
	u->root_fd = root_fd;
	u->work_fd = work_fd;
	strcpy(u->prefix, prefix);
	u->prefix_len = strlen(prefix);
	snprintf(u->opaque, sizeof(u->opaque), "%sopaque", prefix);
	snprintf(u->redirect, sizeof(u->redirect), "%sredirect", prefix);
	snprintf(u->escaped, sizeof(u->escaped), "%soverlay.", prefix);
	u->euid = geteuid();
	u->egid = getegid();
	read_boot_id(u->boot);
	memset(u->image, '0', UPPER_IMAGE_LEN);
	{
		const char *d = getenv("IMGFS_TEST_SYNC_DELAY_MS");

		if (d)
			u->delay_ms = (unsigned)strtoul(d, NULL, 10);
	}
	pending_init(u);
	/* Modes arrive with the caller's umask applied by the kernel: ours must not apply
	 * a second time. */
	umask(0);
	/* Leftovers of an interrupted copy-up or removal; pending names are for
	 * upper_recover(), orphans for the filesystem (imgfs_drop_orphans()). */
	{
		DIR *d;
		struct dirent *de;
		int fd = dup(work_fd);

		if (fd < 0) {
			r = -errno;
			upper_free(u);
			return r;
		}
		d = fdopendir(fd);
		if (!d) {
			r = -errno;
			close(fd);
			upper_free(u);
			return r;
		}
		while ((de = readdir(d))) {
			struct upper_pending_name p;

			if (streq(de->d_name, ".") || streq(de->d_name, "..") ||
			    startswith(de->d_name, UPPER_ORPHAN_PREFIX) ||
			    upper_pending_name_parse(de->d_name, &p) >= 0)
				continue;
			(void)rm_rf_at(work_fd, de->d_name);
		}
		closedir(d);
	}
	*ret = u;
	return 0;
}

void upper_free(struct upper *u)
{
	if (!u)
		return;
	pending_done(u);
	if (u->root_fd >= 0)
		close(u->root_fd);
	if (u->work_fd >= 0)
		close(u->work_fd);
	free(u);
}

void upper_set_volatile(struct upper *u)
{
	u->is_volatile = true;
}

int upper_set_image(struct upper *u, const char *image)
{
	for (size_t i = 0; i < UPPER_IMAGE_LEN; i++)
		if (!((image[i] >= '0' && image[i] <= '9') || (image[i] >= 'a' && image[i] <= 'f')))
			return -EINVAL;
	memcpy(u->image, image, UPPER_IMAGE_LEN);
	u->image[UPPER_IMAGE_LEN] = '\0';
	return 0;
}

int upper_root_fd(const struct upper *u)
{
	return u->root_fd;
}

int upper_work_fd(const struct upper *u)
{
	return u->work_fd;
}

void upper_tmpname(struct upper *u, char buf[32])
{
	unsigned long n = atomic_fetch_add(&u->counter, 1);

	snprintf(buf, 32, "#%lx-%d", n, (int)getpid());
}

int upper_stat(int dirfd, const char *name, struct stat *ret)
{
	if (fstatat(dirfd, name, ret, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

bool upper_is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

int upper_open_dir(int dirfd, const char *name, int *ret_fd)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

bool upper_is_opaque(const struct upper *u, int dirfd)
{
	char v[2];
	ssize_t n = fgetxattr(dirfd, u->opaque, v, sizeof(v));

	return n == 1 && v[0] == 'y';
}

int upper_set_opaque(const struct upper *u, int dirfd)
{
	if (fsetxattr(dirfd, u->opaque, "y", 1, 0) < 0)
		return -errno;
	return 0;
}

int upper_get_redirect(const struct upper *u, int dirfd, char *buf, size_t size)
{
	ssize_t n;

	if (size == 0)
		return -ERANGE;
	n = fgetxattr(dirfd, u->redirect, buf, size - 1);
	if (n < 0)
		return errno == ENOTSUP ? -ENODATA : -errno;
	if (n == 0)
		return -ENODATA;
	buf[n] = '\0';
	if (strlen(buf) != (size_t)n)
		return -EINVAL;
	return (int)n;
}

int upper_set_redirect(const struct upper *u, int dirfd, const char *redirect)
{
	if (fsetxattr(dirfd, u->redirect, redirect, strlen(redirect), 0) < 0)
		return -errno;
	return 0;
}

/* ---- xattrs ---- */

bool upper_xattr_is_private(const struct upper *u, const char *stored)
{
	return startswith(stored, u->prefix) && !startswith(stored, u->escaped);
}

int upper_xattr_store_name(const struct upper *u, const char *xname, char *buf, size_t size)
{
	int n;

	if (startswith(xname, u->prefix))
		n = snprintf(buf, size, "%s%s", u->escaped, xname + u->prefix_len);
	else
		n = snprintf(buf, size, "%s", xname);
	if (n < 0 || (size_t)n >= size || n > XATTR_NAME_MAX)
		return -ERANGE;
	return 0;
}

size_t upper_xattr_filter_list(const struct upper *u, char *list, size_t len)
{
	size_t w = 0;

	for (size_t i = 0; i < len;) {
		size_t l = strnlen(list + i, len - i);
		const char *name = list + i;

		if (upper_xattr_is_private(u, name)) {
			/* hidden */
		} else if (startswith(name, u->escaped)) {
			/* PREFIX.overlay.X is shown as PREFIX.X */
			size_t skip = strlen(u->escaped) - u->prefix_len;

			memmove(list + w, u->prefix, u->prefix_len);
			memmove(list + w + u->prefix_len, name + u->prefix_len + skip,
			        l - u->prefix_len - skip);
			w += l - skip;
			list[w++] = '\0';
		} else {
			memmove(list + w, name, l);
			w += l;
			list[w++] = '\0';
		}
		i += l + 1;
	}
	return w;
}

/* An fd through which the xattrs of (dirfd, name) are reached without following a
 * symlink: dirfd itself when name is NULL, else an O_PATH fd, used through its /proc
 * magic link (which resolves to the object itself, even a symlink). */
struct xref {
	int fd;
	int own;
	char path[40];
};

static int xref_open(int dirfd, const char *name, struct xref *x)
{
	x->own = -1;
	x->fd = dirfd;
	x->path[0] = '\0';
	if (!name)
		return 0;
	if (!name[0]) {
		/* dirfd is an O_PATH fd of the object itself. */
		snprintf(x->path, sizeof(x->path), "/proc/self/fd/%d", dirfd);
		return 0;
	}
	x->own = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (x->own < 0)
		return -errno;
	x->fd = x->own;
	snprintf(x->path, sizeof(x->path), "/proc/self/fd/%d", x->own);
	return 0;
}

static void xref_close(struct xref *x)
{
	if (x->own >= 0)
		close(x->own);
}

static ssize_t x_get(struct xref *x, const char *name, void *buf, size_t size)
{
	ssize_t n =
	    !x->path[0] ? fgetxattr(x->fd, name, buf, size) : getxattr(x->path, name, buf, size);

	return n < 0 ? -errno : n;
}

static ssize_t x_list(struct xref *x, char *buf, size_t size)
{
	ssize_t n = !x->path[0] ? flistxattr(x->fd, buf, size) : listxattr(x->path, buf, size);

	return n < 0 ? -errno : n;
}

static int x_set(struct xref *x, const char *name, const void *v, size_t size, int flags)
{
	int r = !x->path[0] ? fsetxattr(x->fd, name, v, size, flags)
	                    : setxattr(x->path, name, v, size, flags);

	return r < 0 ? -errno : 0;
}

static int x_remove(struct xref *x, const char *name)
{
	int r = !x->path[0] ? fremovexattr(x->fd, name) : removexattr(x->path, name);

	return r < 0 ? -errno : 0;
}

ssize_t upper_getxattr(const struct upper *u, int dirfd, const char *name, const char *xname,
                       void *buf, size_t size)
{
	char stored[XATTR_NAME_MAX + 1];
	struct xref x;
	ssize_t r;

	if (upper_xattr_store_name(u, xname, stored, sizeof(stored)) < 0)
		return -ENODATA;
	r = xref_open(dirfd, name, &x);
	if (r < 0)
		return r;
	r = x_get(&x, stored, buf, size);
	xref_close(&x);
	return r;
}

ssize_t upper_listxattr(const struct upper *u, int dirfd, const char *name, char *buf, size_t size)
{
	_cleanup_free_ char *list = NULL;
	struct xref x;
	ssize_t n;
	size_t len;
	int r;

	r = xref_open(dirfd, name, &x);
	if (r < 0)
		return r;
	/* Filtering needs the whole list, whatever size the caller asked for. */
	for (;;) {
		n = x_list(&x, NULL, 0);
		if (n < 0)
			break;
		free(list);
		list = malloc((size_t)n + 1);
		if (!list) {
			n = -ENOMEM;
			break;
		}
		n = x_list(&x, list, (size_t)n + 1);
		if (n != -ERANGE)
			break;
	}
	xref_close(&x);
	if (n < 0)
		return n == -ENOTSUP ? 0 : n;
	len = upper_xattr_filter_list(u, list, (size_t)n);
	if (size == 0)
		return (ssize_t)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, list, len);
	return (ssize_t)len;
}

int upper_setxattr(const struct upper *u, int dirfd, const char *name, const char *xname,
                   const void *value, size_t size, int flags)
{
	char stored[XATTR_NAME_MAX + 1];
	struct xref x;
	int r;

	r = upper_xattr_store_name(u, xname, stored, sizeof(stored));
	if (r < 0)
		return r;
	r = xref_open(dirfd, name, &x);
	if (r < 0)
		return r;
	r = x_set(&x, stored, value, size, flags);
	xref_close(&x);
	return r;
}

int upper_removexattr(const struct upper *u, int dirfd, const char *name, const char *xname)
{
	char stored[XATTR_NAME_MAX + 1];
	struct xref x;
	int r;

	if (upper_xattr_store_name(u, xname, stored, sizeof(stored)) < 0)
		return -ENODATA;
	r = xref_open(dirfd, name, &x);
	if (r < 0)
		return r;
	r = x_remove(&x, stored);
	xref_close(&x);
	return r;
}

/* ---- copy-up ---- */

/* Copy-up of file data: COPY_READERS reader threads (decoding the lower) and one writer
 * (into the upper file), connected by COPY_SLOTS buffers of COPY_CHUNK bytes. Reading is
 * most of the work (the stored bytes, inflating, the span cache's copy), writing one copy
 * into the page cache; with two readers both cores stay busy. Chunk n goes to slot
 * n % COPY_SLOTS and is written in order. Chunks are small enough to be still in the CPU's
 * cache when they are written: with 2 MiB chunks the same copy-up took up to 3x longer
 * here. One writer: concurrent writes to one file serialise on its inode lock, and the
 * waiter spins. */
#define COPY_READERS 2
#define COPY_SLOTS 4

enum { SLOT_FREE, SLOT_BUSY, SLOT_FULL };

struct copy_slot {
	uint8_t *data;
	uint64_t seq, off;
	size_t len;
	int state; /* SLOT_FREE, SLOT_BUSY (a reader fills it), SLOT_FULL (to be written) */
};

struct copy_pipe {
	const struct upper_src *src;
	uint64_t size;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct copy_slot slot[COPY_SLOTS];
	uint64_t pos;      /* where the next chunk is looked for */
	uint64_t next_seq; /* the number of the next chunk handed out */
	uint64_t written;  /* chunks written (the writer's next one) */
	uint64_t end_seq;  /* the number of chunks, once eof */
	bool eof;          /* every chunk is handed out */
	bool stop;         /* give up: an error (error) or the writer failed */
	int error;
};

/* The next chunk of data of src at or after *pos (holes skipped): its offset and length
 * in *ret_off and *ret_len (0 at the end). */
static int next_chunk(const struct upper_src *src, uint64_t size, uint64_t *pos, uint64_t *ret_off,
                      size_t *ret_len)
{
	uint64_t p = *pos, stop = size;

	*ret_len = 0;
	if (p >= size)
		return 0;
	if (src->seek) {
		int64_t d = src->seek(src->ctx, p, SEEK_DATA);

		if (d == -ENXIO || (d >= 0 && (uint64_t)d >= size)) {
			*pos = size;
			return 0;
		}
		if (d >= 0) {
			int64_t h = src->seek(src->ctx, (uint64_t)d, SEEK_HOLE);

			p = (uint64_t)d;
			if (h > d && (uint64_t)h < stop)
				stop = (uint64_t)h;
		}
	}
	*ret_off = p;
	*ret_len = (size_t)MIN((uint64_t)COPY_CHUNK, stop - p);
	*pos = p + *ret_len;
	return 0;
}

static int read_chunk(const struct upper_src *src, uint8_t *buf, uint64_t off, size_t len)
{
	while (len > 0) {
		ssize_t n = src->read(src->ctx, buf, len, off);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO; /* shorter than its size */
		buf += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* Under cp->lock: records the first error and wakes everyone up to give up. */
static void pipe_fail(struct copy_pipe *cp, int r)
{
	if (!cp->stop)
		cp->error = r;
	cp->stop = true;
	pthread_cond_broadcast(&cp->cond);
}

static void *copy_reader(void *arg)
{
	struct copy_pipe *cp = arg;

	pthread_mutex_lock(&cp->lock);
	while (!cp->stop && !cp->eof) {
		struct copy_slot *sl;
		uint64_t off = 0, seq;
		size_t len;
		int r;

		/* At most COPY_SLOTS chunks between the writer and the readers: the slot of
		 * the next chunk is then free, its previous chunk written. */
		if (cp->next_seq >= cp->written + COPY_SLOTS) {
			pthread_cond_wait(&cp->cond, &cp->lock);
			continue;
		}
		r = next_chunk(cp->src, cp->size, &cp->pos, &off, &len);
		if (r < 0) {
			pipe_fail(cp, r);
			break;
		}
		if (len == 0) {
			cp->end_seq = cp->next_seq;
			cp->eof = true;
			pthread_cond_broadcast(&cp->cond);
			break;
		}
		seq = cp->next_seq++;
		sl = &cp->slot[seq % COPY_SLOTS];
		sl->state = SLOT_BUSY;
		pthread_mutex_unlock(&cp->lock);
		r = read_chunk(cp->src, sl->data, off, len);
		pthread_mutex_lock(&cp->lock);
		if (r < 0) {
			pipe_fail(cp, r);
			break;
		}
		sl->seq = seq;
		sl->off = off;
		sl->len = len;
		sl->state = SLOT_FULL;
		pthread_cond_broadcast(&cp->cond);
	}
	pthread_mutex_unlock(&cp->lock);
	return NULL;
}

static int copy_writer(struct copy_pipe *cp, int fd)
{
	for (uint64_t seq = 0;; seq++) {
		struct copy_slot *sl = &cp->slot[seq % COPY_SLOTS];
		int r = 0;

		pthread_mutex_lock(&cp->lock);
		while (!(sl->state == SLOT_FULL && sl->seq == seq) && !cp->stop &&
		       !(cp->eof && seq >= cp->end_seq))
			pthread_cond_wait(&cp->cond, &cp->lock);
		if (cp->stop)
			r = cp->error < 0 ? cp->error : -EIO;
		else if (!(sl->state == SLOT_FULL && sl->seq == seq))
			r = 1; /* every chunk written */
		pthread_mutex_unlock(&cp->lock);
		if (r != 0)
			return r < 0 ? r : 0;
		if (pwrite(fd, sl->data, sl->len, (off_t)sl->off) != (ssize_t)sl->len) {
			r = negative_errno();
			pthread_mutex_lock(&cp->lock);
			pipe_fail(cp, r);
			pthread_mutex_unlock(&cp->lock);
			return r;
		}
		pthread_mutex_lock(&cp->lock);
		sl->state = SLOT_FREE;
		cp->written = seq + 1;
		pthread_cond_broadcast(&cp->cond);
		pthread_mutex_unlock(&cp->lock);
	}
}

/* One thread, one buffer of COPY_CHUNK bytes. */
static int copy_simple(const struct upper_src *src, uint64_t size, int fd, uint8_t *buf)
{
	uint64_t pos = 0, off;
	size_t len;
	int r;

	for (;;) {
		r = next_chunk(src, size, &pos, &off, &len);
		if (r < 0 || len == 0)
			return r;
		r = read_chunk(src, buf, off, len);
		if (r < 0)
			return r;
		if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
			return negative_errno();
	}
}

int upper_copy_data(const struct upper_src *src, int fd)
{
	uint64_t size = (uint64_t)src->st.st_size;
	struct copy_pipe cp = {.src = src, .size = size};
	_cleanup_free_ uint8_t *mem = NULL;
	bool piped = size > 4 * (uint64_t)COPY_CHUNK;
	pthread_t t[COPY_READERS];
	unsigned readers = 0;
	int r;

	/* A file without holes gets its blocks in one step (no allocation per write). */
	if (size > COPY_CHUNK && (uint64_t)src->st.st_blocks * 512 >= size)
		(void)posix_fallocate(fd, 0, (off_t)size);
	mem = malloc((size_t)COPY_CHUNK * (piped ? COPY_SLOTS : 1));
	if (!mem)
		return -ENOMEM;
	if (!piped)
		r = copy_simple(src, size, fd, mem);
	else {
		for (unsigned k = 0; k < COPY_SLOTS; k++)
			cp.slot[k].data = mem + (size_t)k * COPY_CHUNK;
		pthread_mutex_init(&cp.lock, NULL);
		pthread_cond_init(&cp.cond, NULL);
		while (readers < COPY_READERS &&
		       pthread_create(&t[readers], NULL, copy_reader, &cp) == 0)
			readers++;
		r = readers > 0 ? copy_writer(&cp, fd) : copy_simple(src, size, fd, mem);
		for (unsigned k = 0; k < readers; k++)
			pthread_join(t[k], NULL);
		pthread_cond_destroy(&cp.cond);
		pthread_mutex_destroy(&cp.lock);
	}
	if (r < 0)
		return r;
	if (ftruncate(fd, (off_t)size) < 0)
		return -errno;
	return 0;
}

/* Copies every xattr of src but the overlay's own onto (dirfd, name). */
static int copy_xattrs(const struct upper *u, const struct upper_src *src, int dirfd,
                       const char *name)
{
	_cleanup_free_ char *list = NULL, *val = NULL;
	struct xref x;
	ssize_t n;
	int r = 0;

	if (!src->listxattr)
		return 0;
	n = src->listxattr(src->ctx, NULL, 0);
	if (n <= 0)
		return n == -ENOTSUP || n == 0 ? 0 : (int)n;
	list = malloc((size_t)n);
	val = malloc(XATTR_SIZE_MAX);
	if (!list || !val)
		return -ENOMEM;
	n = src->listxattr(src->ctx, list, (size_t)n);
	if (n < 0)
		return (int)n;
	r = xref_open(dirfd, name, &x);
	if (r < 0)
		return r;
	for (ssize_t i = 0; i < n && r >= 0;) {
		const char *xn = list + i;
		size_t l = strnlen(xn, (size_t)(n - i));
		ssize_t vl;

		i += (ssize_t)l + 1;
		if (l == 0 || upper_xattr_is_private(u, xn))
			continue;
		vl = src->getxattr(src->ctx, xn, val, XATTR_SIZE_MAX);
		if (vl == -ENODATA)
			continue;
		if (vl < 0) {
			r = (int)vl;
			break;
		}
		r = x_set(&x, xn, val, (size_t)vl, 0);
	}
	xref_close(&x);
	return r;
}

static bool needs_chown(const struct upper *u, uid_t uid, gid_t gid)
{
	return uid != u->euid || gid != u->egid;
}

/* Owner, mode (after the owner: chown clears setuid), times of (dirfd, name). */
static int set_attrs(const struct upper *u, int dirfd, const char *name, const struct stat *st,
                     bool times)
{
	bool lnk = S_ISLNK(st->st_mode);

	if (needs_chown(u, st->st_uid, st->st_gid) &&
	    fchownat(dirfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!lnk && fchmodat(dirfd, name, st->st_mode & 07777, 0) < 0)
		return -errno;
	if (times) {
		struct timespec ts[2] = {st->st_atim, st->st_mtim};

		if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	return 0;
}

int upper_copy_up(struct upper *u, const struct upper_src *src, int parent_fd, const char *name,
                  bool data, int *ret_dirfd)
{
	_cleanup_close_ int fd = -1;
	mode_t type = src->st.st_mode & S_IFMT;
	/* Data that must reach the disk before a crash may find the name: a pending copy. */
	bool pending = type == S_IFREG && data && src->st.st_size > 0 && !u->is_volatile;
	struct stat pst, st;
	char tmp[UPPER_PENDING_NAME_MAX];
	int r;

	if (fstat(parent_fd, &pst) < 0)
		return -errno;
	if (pending) {
		struct upper_pending_name p = {.node = src->node,
		                               .seq = atomic_fetch_add(&u->counter, 1)};

		memcpy(p.boot, u->boot, sizeof(p.boot));
		memcpy(p.image, u->image, sizeof(p.image));
		upper_pending_name_format(&p, tmp);
	} else
		upper_tmpname(u, tmp);
	switch (type) {
	case S_IFREG:
		fd = openat(u->work_fd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		            0600);
		if (fd < 0)
			return -errno;
		if (data) {
			r = upper_copy_data(src, fd);
			if (r < 0)
				goto fail;
		}
		break;
	case S_IFDIR:
		if (mkdirat(u->work_fd, tmp, 0700) < 0)
			return -errno;
		r = upper_open_dir(u->work_fd, tmp, &fd);
		if (r < 0)
			goto fail;
		break;
	case S_IFLNK:
		if (symlinkat(src->link ? src->link : "", u->work_fd, tmp) < 0)
			return -errno;
		break;
	default:
		if (mknodat(u->work_fd, tmp, type | 0600, src->st.st_rdev) < 0)
			return -errno;
		break;
	}
	r = set_attrs(u, u->work_fd, tmp, &src->st, false);
	if (r >= 0)
		r = copy_xattrs(u, src, u->work_fd, tmp);
	if (r >= 0) {
		struct timespec ts[2] = {src->st.st_atim, src->st.st_mtim};

		if (utimensat(u->work_fd, tmp, ts, AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
	}
	if (r < 0)
		goto fail;
	if (pending) {
		/* Not synced here: the pending name stays in work/ (a second link) until the
		 * syncer made the data durable, so recovery finds the file after a crash. */
		if (fstat(fd, &st) < 0) {
			r = -errno;
			goto fail;
		}
		r = pending_add(u, TAKE_FD(fd), tmp);
		if (r < 0)
			goto fail;
		if (linkat(u->work_fd, tmp, parent_fd, name, 0) < 0) {
			r = -errno;
			pending_cancel(u, st.st_ino);
			return r;
		}
		pending_queue(u, st.st_ino);
	} else if (renameat2(u->work_fd, tmp, parent_fd, name, RENAME_NOREPLACE) < 0) {
		r = -errno;
		goto fail;
	}
	{
		struct timespec ts[2] = {pst.st_atim, pst.st_mtim};

		(void)futimens(parent_fd, ts);
	}
	if (type == S_IFDIR && ret_dirfd)
		*ret_dirfd = TAKE_FD(fd);
	return 0;
fail:
	(void)rm_rf_at(u->work_fd, tmp);
	return r;
}

/* ---- creation and removal ---- */

/* Tags and header of the xattr form of a POSIX ACL (linux/posix_acl_xattr.h). */
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER_OBJ 0x01
#define ACL_TAG_GROUP_OBJ 0x04
#define ACL_TAG_MASK 0x10
#define ACL_TAG_OTHER 0x20

mode_t upper_acl_create_mode(const void *acl, size_t size, mode_t mode)
{
	const unsigned char *p = acl;
	unsigned group = 0, mask = 0;
	bool has_group = false, has_mask = false;
	mode_t m = mode;

	if (!acl || size < 4 || (size - 4) % 8 != 0 ||
	    (p[0] | (unsigned)p[1] << 8 | (unsigned)p[2] << 16 | (unsigned)p[3] << 24) !=
	        ACL_XATTR_VERSION)
		return mode;
	for (size_t off = 4; off < size; off += 8) {
		unsigned tag = p[off] | (unsigned)p[off + 1] << 8, perm = p[off + 2] & 7;

		switch (tag) {
		case ACL_TAG_USER_OBJ:
			m &= (mode_t)(perm << 6) | ~(mode_t)S_IRWXU;
			break;
		case ACL_TAG_OTHER:
			m &= (mode_t)perm | ~(mode_t)S_IRWXO;
			break;
		case ACL_TAG_GROUP_OBJ:
			group = perm;
			has_group = true;
			break;
		case ACL_TAG_MASK:
			mask = perm;
			has_mask = true;
			break;
		}
	}
	/* The group class is the mask when there is one, else the owning group. */
	if (has_mask)
		m &= (mode_t)(mask << 3) | ~(mode_t)S_IRWXG;
	else if (has_group)
		m &= (mode_t)(group << 3) | ~(mode_t)S_IRWXG;
	return m;
}

static int create_at(struct upper *u, int dirfd, const char *name, const struct upper_new *n,
                     int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	mode_t type = n->mode & S_IFMT;
	bool chown_needed = needs_chown(u, n->uid, n->gid);
	/* Under a default ACL the object's mode is the ACL's masking of the mode asked for:
	 * what a chmod after the chown must set. */
	mode_t perm = n->default_acl ? upper_acl_create_mode(n->default_acl, n->default_acl_size,
	                                                     n->mode & 07777)
	                             : n->mode & 07777;
	/* Until the owner is right, no setuid/setgid bit and no access for others. */
	mode_t first = chown_needed ? perm & 0700 : n->mode & 07777;
	int r;

	switch (type) {
	case S_IFREG: {
		int flags = (n->open_flags & (O_SYNC | O_DSYNC | O_NOATIME)) | O_RDWR;

		fd = openat(dirfd, name, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, first);
		if (fd < 0)
			return -errno;
		if (chown_needed) {
			if (fchown(fd, n->uid, n->gid) < 0 || fchmod(fd, perm) < 0) {
				r = -errno;
				goto undo;
			}
		}
		break;
	}
	case S_IFDIR:
		if (mkdirat(dirfd, name, first) < 0)
			return -errno;
		r = upper_open_dir(dirfd, name, &fd);
		if (r < 0)
			goto undo;
		if (chown_needed && (fchown(fd, n->uid, n->gid) < 0 || fchmod(fd, perm) < 0)) {
			r = -errno;
			goto undo;
		}
		if (perm != first && !chown_needed && fchmod(fd, perm) < 0) {
			r = -errno;
			goto undo;
		}
		if (n->opaque) {
			r = upper_set_opaque(u, fd);
			if (r < 0)
				goto undo;
		}
		break;
	case S_IFLNK:
		if (symlinkat(n->link, dirfd, name) < 0)
			return -errno;
		if (chown_needed &&
		    fchownat(dirfd, name, n->uid, n->gid, AT_SYMLINK_NOFOLLOW) < 0) {
			r = -errno;
			goto undo;
		}
		break;
	default:
		if (mknodat(dirfd, name, type | first, n->rdev) < 0)
			return -errno;
		if (chown_needed &&
		    (fchownat(dirfd, name, n->uid, n->gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		     fchmodat(dirfd, name, perm, 0) < 0)) {
			r = -errno;
			goto undo;
		}
		break;
	}
	if (ret_fd)
		*ret_fd = TAKE_FD(fd);
	return 0;
undo:
	(void)unlinkat(dirfd, name, type == S_IFDIR ? AT_REMOVEDIR : 0);
	return r;
}

/* upper_create() over a whiteout under a default ACL: the object is built in a directory
 * of the work directory that carries the same default ACL, so that it inherits as it
 * would in place, then exchanged with the whiteout. */
static int create_inheriting(struct upper *u, int parent_fd, const char *name,
                             const struct upper_new *n, const char *tmp, int *ret_fd)
{
	_cleanup_close_ int dfd = -1, fd = -1;
	int r;

	if (mkdirat(u->work_fd, tmp, 0700) < 0)
		return -errno;
	r = upper_open_dir(u->work_fd, tmp, &dfd);
	if (r >= 0 &&
	    fsetxattr(dfd, "system.posix_acl_default", n->default_acl, n->default_acl_size, 0) < 0)
		r = -errno;
	if (r >= 0)
		r = create_at(u, dfd, name, n, &fd);
	if (r >= 0 && renameat2(dfd, name, parent_fd, name, RENAME_EXCHANGE) < 0) {
		r = -errno;
		(void)rm_rf_at(dfd, name);
	}
	/* What is left in it is the whiteout, or nothing. */
	if (dfd >= 0)
		(void)unlinkat(dfd, name, 0);
	(void)unlinkat(u->work_fd, tmp, AT_REMOVEDIR);
	if (r >= 0 && ret_fd)
		*ret_fd = TAKE_FD(fd);
	return r;
}

int upper_create(struct upper *u, int parent_fd, const char *name, const struct upper_new *n,
                 bool replace_whiteout, int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	char tmp[32];
	int r;

	if (!replace_whiteout) {
		r = create_at(u, parent_fd, name, n, &fd);
		if (r < 0)
			return r;
		if (ret_fd)
			*ret_fd = TAKE_FD(fd);
		return 0;
	}
	upper_tmpname(u, tmp);
	if (n->default_acl)
		return create_inheriting(u, parent_fd, name, n, tmp, ret_fd);
	r = create_at(u, u->work_fd, tmp, n, &fd);
	if (r < 0)
		return r;
	if (S_ISDIR(n->mode)) {
		/* A directory cannot replace a file: swap it with the whiteout. */
		if (renameat2(u->work_fd, tmp, parent_fd, name, RENAME_EXCHANGE) < 0) {
			r = -errno;
			(void)rm_rf_at(u->work_fd, tmp);
			return r;
		}
		(void)unlinkat(u->work_fd, tmp, 0);
	} else if (renameat(u->work_fd, tmp, parent_fd, name) < 0) {
		r = -errno;
		(void)unlinkat(u->work_fd, tmp, 0);
		return r;
	}
	if (ret_fd)
		*ret_fd = TAKE_FD(fd);
	return 0;
}

int upper_whiteout(struct upper *u, int parent_fd, const char *name)
{
	(void)u;
	if (mknodat(parent_fd, name, S_IFCHR | 0000, makedev(0, 0)) < 0)
		return -errno;
	return 0;
}

/* Whether directory fd holds nothing but whiteouts. */
int upper_dir_only_whiteouts(int dirfd)
{
	DIR *d;
	struct dirent *de;
	int r = 0;

	r = opendir_fd(dirfd, &d);
	if (r < 0)
		return r;
	while ((de = readdir(d))) {
		struct stat st;

		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (de->d_type != DT_CHR && de->d_type != DT_UNKNOWN) {
			r = -ENOTEMPTY;
			break;
		}
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !upper_is_whiteout(&st)) {
			r = -ENOTEMPTY;
			break;
		}
	}
	closedir(d);
	return r;
}

int upper_clear_whiteouts(int dirfd)
{
	DIR *d;
	struct dirent *de;
	int r;

	r = upper_dir_only_whiteouts(dirfd);
	if (r < 0)
		return r;
	r = opendir_fd(dirfd, &d);
	if (r < 0)
		return r;
	while ((de = readdir(d))) {
		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (unlinkat(dirfd, de->d_name, 0) < 0 && errno != ENOENT) {
			r = -errno;
			break;
		}
	}
	closedir(d);
	return r;
}

int upper_remove(struct upper *u, int parent_fd, const char *name, bool is_dir, bool whiteout)
{
	char tmp[32];
	int r;

	if (is_dir) {
		_cleanup_close_ int fd = -1;

		r = upper_open_dir(parent_fd, name, &fd);
		if (r < 0)
			return r;
		r = upper_dir_only_whiteouts(fd);
		if (r < 0)
			return r;
	} else if (!whiteout) {
		if (unlinkat(parent_fd, name, 0) < 0)
			return -errno;
		return 0;
	}
	/* Out of the way in one step (leaving a whiteout when asked), then removed. */
	upper_tmpname(u, tmp);
	if (renameat2(parent_fd, name, u->work_fd, tmp, whiteout ? RENAME_WHITEOUT : 0) < 0) {
		if (errno != EINVAL || !whiteout)
			return -errno;
		/* No RENAME_WHITEOUT on this filesystem: not atomic, but correct. */
		if (renameat(parent_fd, name, u->work_fd, tmp) < 0)
			return -errno;
		r = upper_whiteout(u, parent_fd, name);
		if (r < 0) {
			(void)renameat(u->work_fd, tmp, parent_fd, name);
			return r;
		}
	}
	return rm_rf_at(u->work_fd, tmp);
}

int upper_link(struct upper *u, int old_fd, const char *old_name, int new_parent_fd,
               const char *new_name, bool replace_whiteout)
{
	int flags = old_name[0] ? 0 : AT_EMPTY_PATH;
	char tmp[32];

	if (!replace_whiteout) {
		if (linkat(old_fd, old_name, new_parent_fd, new_name, flags) < 0)
			return -errno;
		return 0;
	}
	upper_tmpname(u, tmp);
	if (linkat(old_fd, old_name, u->work_fd, tmp, flags) < 0)
		return -errno;
	if (renameat(u->work_fd, tmp, new_parent_fd, new_name) < 0) {
		int r = -errno;

		(void)unlinkat(u->work_fd, tmp, 0);
		return r;
	}
	return 0;
}
