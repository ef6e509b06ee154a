/* FUSE low-level callbacks (op_<op>) over the filesystem core. See fuse_ops.h. */
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/xattr.h>
#include "common/log.h"
#include "fsd/fs/handles.h"
#include "fsd/fs/journal.h"
#include "fsd/fuse_ops.h"
#include "fsd/fuse_ops_ll.h"

/* The lower layer never changes, so the kernel may cache names, attributes, negative
 * lookups and file data for as long as it likes; changes made through this filesystem
 * later (the writable layer) invalidate the kernel's copies by themselves. */
#define LOWER_TIMEOUT 86400.0

#define DEFAULT_MAX_THREADS 16

struct fuse_ops_session {
	struct imgfs *fs; /* NULL for another filesystem (fuse_ops_mount_ll()) */
	void *ctx;        /* fuse_ops_ctx() */
	const struct fuse_ops_handle_ops *hops; /* fs == NULL: its handles (may be NULL) */
	struct fuse_session *se;
	bool mounted;
	bool signals;
	/* Set by op_init before the first request: OPENDIR is answered ENOSYS, so the kernel
	 * stops sending OPENDIR/RELEASEDIR and caches every listing (read-only mounts). */
	bool no_opendir;
	unsigned max_threads;
	bool supervised;
	struct handles *handles; /* fi->fh: a slot of this table */
	struct journal *journal; /* writable and supervised: changes in flight, else NULL */
	int kill_after;          /* tests: the enum journal_op after which to die, or 0 */
	uint8_t init[128];       /* supervised: the kernel's fuse_init_in */
	size_t init_len;
};

static struct fuse_ops_session *req_session(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct imgfs *req_fs(fuse_req_t req)
{
	return req_session(req)->fs;
}

static void *reopen(struct fuse_ops_session *s, uint64_t fh, enum handle_kind kind);

/* The open file of fi->fh: opened by this process, or, for a handle a process before it
 * gave out, opened again from the handle's record. NULL when fh is no open file. */
static struct imgfs_file *file_of(fuse_req_t req, struct fuse_file_info *fi)
{
	struct fuse_ops_session *s = req_session(req);
	struct imgfs_file *f = handles_get(s->handles, fi->fh);

	return f ? f : reopen(s, fi->fh, HANDLE_FILE);
}

/* The open directory of fi->fh, as file_of(). */
static struct imgfs_dir *dir_of(fuse_req_t req, struct fuse_file_info *fi)
{
	struct fuse_ops_session *s = req_session(req);
	struct imgfs_dir *d = handles_get(s->handles, fi->fh);

	return d ? d : reopen(s, fi->fh, HANDLE_DIR);
}

static void reply_error(fuse_req_t req, int r)
{
	/* A negative errno from the core; anything else would be a bug, never a success. */
	fuse_reply_err(req, r < 0 ? -r : EIO);
}

/* The kernel's view of an entry: lower entries never change, so it may keep them. */
static struct fuse_entry_param entry_param(const struct imgfs_entry *ent)
{
	return (struct fuse_entry_param){
	    .ino = ent->ino,
	    .generation = ent->generation,
	    .attr = ent->st,
	    .attr_timeout = LOWER_TIMEOUT,
	    .entry_timeout = LOWER_TIMEOUT,
	};
}

/* Replies with the attributes the core returned in r/st. */
static void reply_attr(fuse_req_t req, int r, const struct stat *st)
{
	if (r < 0) {
		reply_error(req, r);
		return;
	}
	fuse_reply_attr(req, st, LOWER_TIMEOUT);
}

/* libfuse reads a request into a buffer of max_write bytes plus one page for the headers
 * (its FUSE_BUFFER_HEADER_SIZE), and splices it only into a pipe that can hold a whole
 * buffer: otherwise it reads every request into memory. */
#define FUSE_HEADER_ROOM 4096u

/* The largest max_write, at most want (libfuse has already capped it at its buffer size),
 * whose requests libfuse can splice; 0 when this process cannot have a pipe large enough.
 * Pipes above /proc/sys/fs/pipe-max-size (1 MiB by default) need CAP_SYS_RESOURCE and
 * sizes are rounded up to a power of two pages, so without it 1 MiB requests (1 MiB +
 * 4 KiB buffers) are never spliced, 1020 KiB ones are. */
static unsigned splice_max_write(unsigned want)
{
	unsigned size = want + FUSE_HEADER_ROOM, got = 0;
	int p[2];

	if (want > (1u << 30) || pipe2(p, O_CLOEXEC) < 0)
		return 0;
	while (size >= 64 * 1024) {
		if (fcntl(p[0], F_SETPIPE_SZ, (int)size) >= 0) {
			got = size - FUSE_HEADER_ROOM;
			break;
		}
		/* Refused (too large, or the user has too many pipe pages): the power of two
		 * below. */
		size = 1u << (31 - __builtin_clz(size - 1));
	}
	close(p[0]);
	close(p[1]);
	return got;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	const unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_READDIRPLUS |
	                      FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_CACHE_SYMLINKS;

	struct fuse_ops_session *s = userdata;

	conn->want |= conn->capable & want;
	/* No writeback cache: a write is in the upper file when it returns, so a daemon
	 * that dies loses nothing written (see docs/decisions/0025-writable-write-path.md for
	 * its cost). */
	/* Without FUSE_POSIX_ACL the kernel caches no ACL and asks for system.posix_acl_access
	 * on every getxattr (ls -l: once per file); with it, once per inode, and it enforces
	 * the ACLs as a local disk would. On a writable mount the upper's filesystem keeps
	 * modes and ACLs in step (chmod, setfacl go to it; the kernel drops its cached ACL
	 * after either), and default ACLs apply on creation: the kernel then passes the mode
	 * unmasked with the umask (DONT_MASK), which the core applies only where the parent
	 * has no default ACL (create_common()). Without DONT_MASK the umask would already be
	 * gone from the mode, against what a default ACL asks. */
	if (imgfs_is_ro(s->fs))
		conn->want |= conn->capable & FUSE_CAP_POSIX_ACL;
	else if ((conn->capable & (FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK)) ==
	         (FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK))
		conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
	/* No directory handles: the first OPENDIR is answered ENOSYS, and the kernel then
	 * opens directories itself (no OPENDIR and RELEASEDIR round trips, two per directory
	 * of a walk) and caches listings (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE). A writable
	 * mount's listing changes only through the mount, and the kernel drops a cached
	 * listing itself when a create, mknod, mkdir, link, unlink, rmdir or rename goes
	 * through the directory; its READDIRs are served by imgfs_readdir_ino() with offsets
	 * that stay valid across changes (merged_readdir_ino()). */
	s->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
	/* Attributes are cheap here: always send them with the listing (ls -l, find). */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	/* Replies are memory buffers (inflated data), not fds: splicing them would only add
	 * copies. Requests are spliced on writable mounts: WRITE data then goes from the
	 * kernel's pages through a pipe into the upper file, one copy instead of two. Locks
	 * are left to the kernel (local locks suffice on a private view). */
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	if (!imgfs_is_ro(s->fs) && (conn->capable & FUSE_CAP_SPLICE_READ)) {
		unsigned max_write = splice_max_write(conn->max_write);

		if (max_write > 0) {
			conn->max_write = max_write;
			conn->want |= FUSE_CAP_SPLICE_READ;
		}
	}
	/* O_TRUNC reaches open, so a copy-up for it skips the data; the kernel clears
	 * setuid bits and security.capability itself on chown and buffered writes (direct
	 * writes: see open_direct()). */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
#ifdef FUSE_CAP_HANDLE_KILLPRIV_V2
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV_V2;
#endif
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	conn->time_gran = 1;
	log_debug("fuse: kernel protocol %u.%u, capable 0x%x, want 0x%x, max_write %u",
	          conn->proto_major, conn->proto_minor, conn->capable, conn->want, conn->max_write);
}

static void reply_entry(fuse_req_t req, int r, const struct imgfs_entry *ent);

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct imgfs_entry ent;
	int r;

	r = imgfs_lookup(req_fs(req), parent, name, &ent);
	log_debug("lookup %llu '%s': %d", (unsigned long long)parent, name, r);
	if (r == -ENOENT) {
		/* A negative entry: the kernel remembers the name is missing. */
		fuse_reply_entry(req, &(struct fuse_entry_param){.entry_timeout = LOWER_TIMEOUT});
		return;
	}
	reply_entry(req, r, &ent);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	imgfs_forget(req_fs(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		imgfs_forget(req_fs(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int r;

	struct imgfs_file *f = fi ? file_of(req, fi) : NULL;

	r = f ? imgfs_fgetattr(req_fs(req), ino, f, &st) : imgfs_getattr(req_fs(req), ino, &st);
	if (r < 0)
		log_debug("getattr %llu: %d", (unsigned long long)ino, r);
	reply_attr(req, r, &st);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	int r;

	r = imgfs_readlink(req_fs(req), ino, buf, sizeof(buf));
	if (r < 0) {
		reply_error(req, r);
		return;
	}
	fuse_reply_readlink(req, buf);
}

/* Whether a file opened with flags is served with FUSE direct I/O: files opened write-only
 * in a writable mount. Their writes then go from the writer's pages to the daemon without
 * filling the kernel's page cache of the mount (order-0 pages, a copy and an allocation
 * per 4 KiB) and without the GETXATTR of security.capability the kernel sends before each
 * buffered write; what the kernel no longer does for them (clearing setuid/setgid) the core
 * does. Nothing is lost: a write-only descriptor can be neither read nor mapped, and a
 * direct write drops the pages it covers from the cache of the file's other openers.
 * Files opened for reading and writing keep the page cache (shared mappings need it). */
static bool open_direct(fuse_req_t req, int flags)
{
	return (flags & O_ACCMODE) == O_WRONLY && !imgfs_is_ro(req_fs(req));
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct imgfs_file *f;
	int r;

	r = imgfs_open(req_fs(req), ino, fi->flags, &f);
	log_debug("open %llu flags 0%o: %d", (unsigned long long)ino, (unsigned)fi->flags, r);
	if (r < 0) {
		reply_error(req, r);
		return;
	}
	r = handles_add(req_session(req)->handles, ino, (uint32_t)fi->flags, HANDLE_FILE, f,
	                &fi->fh);
	if (r < 0) {
		imgfs_release(req_fs(req), f);
		reply_error(req, r);
		return;
	}
	/* Lower files never change: keep their pages across opens. */
	fi->keep_cache = 1;
	fi->direct_io = open_direct(req, fi->flags);
	fi->noflush = 1;
	fuse_ops_reply_open(req, fi, HANDLE_FILE);
}

char *fuse_ops_reply_buffer(fuse_req_t req, off_t off, size_t size)
{
	char *buf;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return NULL;
	}
	buf = malloc(size ? size : 1);
	if (!buf)
		fuse_reply_err(req, ENOMEM);
	return buf;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	_cleanup_free_ char *buf = NULL;
	struct imgfs_file *f = file_of(req, fi);
	ssize_t n;

	if (!f) {
		fuse_reply_err(req, EBADF);
		return;
	}
	buf = fuse_ops_reply_buffer(req, off, size);
	if (!buf)
		return;
	n = imgfs_read(req_fs(req), f, buf, size, (uint64_t)off);
	if (n < 0) {
		log_debug("read %llu: %d", (unsigned long long)ino, (int)n);
		reply_error(req, (int)n);
		return;
	}
	fuse_reply_buf(req, buf, (size_t)n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fuse_ops_reply_release(req, fi->fh, HANDLE_FILE);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
	int64_t r;

	(void)ino;
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	struct imgfs_file *f = file_of(req, fi);

	if (!f) {
		fuse_reply_err(req, EBADF);
		return;
	}
	r = imgfs_lseek(req_fs(req), f, (uint64_t)off, whence);
	if (r < 0) {
		reply_error(req, (int)r);
		return;
	}
	fuse_reply_lseek(req, (off_t)r);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct imgfs_dir *d;
	int r;

	if (req_session(req)->no_opendir) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	r = imgfs_opendir(req_fs(req), ino, &d);
	if (r < 0) {
		reply_error(req, r);
		return;
	}
	r = handles_add(req_session(req)->handles, ino, (uint32_t)fi->flags, HANDLE_DIR, d,
	                &fi->fh);
	if (r < 0) {
		imgfs_releasedir(req_fs(req), d);
		reply_error(req, r);
		return;
	}
	/* The kernel may cache a listing and keep it across opens: on a read-only mount it
	 * never changes, on a writable one it changes only through this mount, and the
	 * kernel drops a directory's cached listing itself when a create, mknod, mkdir,
	 * link, unlink, rmdir or rename goes through it (fuse_dir_changed()). Nothing else
	 * writes the upper while it is mounted (as with overlayfs). */
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_ops_reply_open(req, fi, HANDLE_DIR);
}

struct dirbuf {
	fuse_req_t req;
	char *buf;
	size_t size, pos;
	bool plus;
};

static int add_dirent(const char *name, const struct imgfs_entry *ent, uint64_t next_off,
                      void *userdata)
{
	struct dirbuf *b = userdata;
	size_t need;

	if (next_off > INT64_MAX)
		return 1;
	if (b->plus) {
		struct fuse_entry_param e = entry_param(ent);
		need = fuse_add_direntry_plus(b->req, NULL, 0, name, NULL, 0);
		if (b->pos + need > b->size)
			return 1;
		fuse_add_direntry_plus(b->req, b->buf + b->pos, b->size - b->pos, name, &e,
		                       (off_t)next_off);
	} else {
		need = fuse_add_direntry(b->req, NULL, 0, name, NULL, 0);
		if (b->pos + need > b->size)
			return 1;
		fuse_add_direntry(b->req, b->buf + b->pos, b->size - b->pos, name, &ent->st,
		                  (off_t)next_off);
	}
	b->pos += need;
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi, bool plus)
{
	_cleanup_free_ char *buf = NULL;
	struct dirbuf b = {.req = req, .size = size, .plus = plus};
	int r;

	buf = fuse_ops_reply_buffer(req, off, size);
	if (!buf)
		return;
	b.buf = buf;
	if (fi->fh) {
		struct imgfs_dir *d = dir_of(req, fi);

		r = d ? imgfs_readdir(req_fs(req), d, (uint64_t)off, plus, add_dirent, &b) : -EBADF;
	} else /* no OPENDIR (read-only mount) */
		r = imgfs_readdir_ino(req_fs(req), ino, (uint64_t)off, plus, add_dirent, &b);
	/* Entries already placed were counted as lookups in plus mode: they must reach the
	 * kernel even when a later entry failed. */
	if (r < 0 && b.pos == 0) {
		reply_error(req, r);
		return;
	}
	fuse_reply_buf(req, buf, b.pos);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

/* An object of the handle table closed: the filesystem's file or directory of kind. */
static void close_obj(struct fuse_ops_session *s, enum handle_kind kind, void *obj)
{
	if (!s->fs) {
		if (s->hops)
			s->hops->close(s->ctx, kind, obj);
	} else if (kind == HANDLE_FILE) {
		imgfs_release(s->fs, obj);
	} else {
		imgfs_releasedir(s->fs, obj);
	}
}

void fuse_ops_reply_open(fuse_req_t req, struct fuse_file_info *fi, enum handle_kind kind)
{
	struct fuse_ops_session *s = req_session(req);

	if (fuse_reply_open(req, fi) < 0) {
		void *obj = handles_remove(s->handles, fi->fh);

		if (obj)
			close_obj(s, kind, obj);
	}
}

void fuse_ops_reply_release(fuse_req_t req, uint64_t fh, enum handle_kind kind)
{
	struct fuse_ops_session *s = req_session(req);
	void *obj = handles_remove(s->handles, fh);

	if (obj)
		close_obj(s, kind, obj);
	fuse_reply_err(req, 0);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fuse_ops_reply_release(req, fi->fh, HANDLE_DIR);
}

void fuse_ops_reply_xattr(fuse_req_t req, uint64_t ino, const char *name, size_t size,
                          fuse_ops_xattr_fn fn, void *fs)
{
	_cleanup_free_ char *buf = NULL;
	ssize_t r;

	if (size > 0) {
		size = MIN(size, name ? (size_t)XATTR_SIZE_MAX : (size_t)XATTR_LIST_MAX);
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	r = fn(fs, ino, name, buf, size);
	if (r < 0)
		reply_error(req, (int)r);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
}

static ssize_t xattr_of(void *fs, uint64_t ino, const char *name, char *buf, size_t size)
{
	return name ? imgfs_getxattr(fs, ino, name, buf, size)
	            : imgfs_listxattr(fs, ino, buf, size);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	fuse_ops_reply_xattr(req, ino, name, size, xattr_of, req_fs(req));
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	fuse_ops_reply_xattr(req, ino, NULL, size, xattr_of, req_fs(req));
}

void fuse_ops_reply_statfs(fuse_req_t req, int r, const struct statvfs *sv)
{
	if (r < 0)
		reply_error(req, r);
	else
		fuse_reply_statfs(req, sv);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	fuse_ops_reply_statfs(req, imgfs_statfs(req_fs(req), ino, &sv), &sv);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[64];
	struct imgfs_cred cred = {.uid = ctx->uid, .gid = ctx->gid, .groups = groups};
	int n;

	/* Only asked without default_permissions (a user's -o choice), so rarely. */
	n = fuse_req_getgroups(req, (int)ARRAY_SIZE(groups), groups);
	if (n > 0)
		cred.n_groups = MIN((size_t)n, ARRAY_SIZE(groups));
	fuse_reply_err(req, -imgfs_access(req_fs(req), ino, &cred, mask));
}

static void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                     struct fuse_file_info *fi, unsigned flags, const void *in_buf, size_t in_bufsz,
                     size_t out_bufsz)
{
	(void)ino, (void)cmd, (void)arg, (void)fi, (void)flags, (void)in_buf, (void)in_bufsz;
	(void)out_bufsz;
	fuse_reply_err(req, ENOTTY);
}

/* ---- changes (the core answers -EROFS on a read-only mount) ---- */

static struct imgfs_cred req_cred(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	return (struct imgfs_cred){.uid = ctx->uid, .gid = ctx->gid, .umask = ctx->umask};
}

/* Replies with an entry, or undoes the lookup count imgfs took for it when the reply does
 * not reach the kernel (an interrupted request). */
static void reply_entry(fuse_req_t req, int r, const struct imgfs_entry *ent)
{
	struct fuse_entry_param e;

	if (r < 0) {
		reply_error(req, r);
		return;
	}
	struct imgfs *fs = req_fs(req); /* req is gone once answered */

	e = entry_param(ent);
	if (fuse_reply_entry(req, &e) < 0)
		imgfs_forget(fs, ent->ino, 1); /* interrupted: the kernel never saw it */
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
	unsigned valid = 0;
	struct stat st;
	int r;

	if (to_set & FUSE_SET_ATTR_MODE)
		valid |= IMGFS_SET_MODE;
	if (to_set & FUSE_SET_ATTR_UID)
		valid |= IMGFS_SET_UID;
	if (to_set & FUSE_SET_ATTR_GID)
		valid |= IMGFS_SET_GID;
	if (to_set & FUSE_SET_ATTR_SIZE)
		valid |= IMGFS_SET_SIZE;
	if (to_set & FUSE_SET_ATTR_ATIME)
		valid |= IMGFS_SET_ATIME;
	if (to_set & FUSE_SET_ATTR_MTIME)
		valid |= IMGFS_SET_MTIME;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		valid |= IMGFS_SET_ATIME_NOW;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		valid |= IMGFS_SET_MTIME_NOW;
	/* The change time alone (chown to -1, -1): overlayfs copies up and sets the upper's
	 * ctime, a local disk sets its ctime; a read-only view only answers. */
	if (valid == 0 && imgfs_is_ro(req_fs(req)))
		r = imgfs_getattr(req_fs(req), ino, &st);
	else
		r = imgfs_setattr(req_fs(req), ino, fi ? file_of(req, fi) : NULL, attr,
		                  valid ? valid : IMGFS_SET_CTIME, &st);
	log_debug("setattr %llu 0x%x: %d", (unsigned long long)ino, (unsigned)to_set, r);
	reply_attr(req, r, &st);
}

/* ---- changes of the namespace sent again after a takeover (fs/journal.h) ---- */

static struct journal_change change_of(fuse_req_t req, enum journal_op op, uint64_t parent,
                                       const char *name, uint64_t newparent, const char *newname)
{
	return (struct journal_change){.op = op,
	                               .pid = (uint32_t)fuse_req_ctx(req)->pid,
	                               .parent = parent,
	                               .name = name,
	                               .newparent = newparent,
	                               .newname = newname};
}

static void log_sent_again(const struct journal_change *c)
{
	log_msg(LOG_INFO, "a change sent again was made by the daemon before (pid %u)",
	        (unsigned)c->pid);
}

/* Whether c is a change a dead worker recorded and made, asked again by the request the
 * kernel sent again: the record matches and the change is in place. For a change that
 * makes a name, *ent is then its entry (a lookup counted). */
static bool already_made(fuse_req_t req, const struct journal_change *c, mode_t type,
                         struct imgfs_entry *ent)
{
	struct imgfs *fs = req_fs(req);
	struct imgfs_entry e;
	bool made;
	int r;

	if (!journal_take_prior(req_session(req)->journal, c))
		return false;
	switch (c->op) {
	case JOURNAL_UNLINK:
	case JOURNAL_RMDIR:
		r = imgfs_lookup(fs, c->parent, c->name, &e);
		if (r >= 0)
			imgfs_forget(fs, e.ino, 1);
		made = r == -ENOENT;
		break;
	case JOURNAL_RENAME:
		r = imgfs_lookup(fs, c->parent, c->name, &e);
		if (r >= 0)
			imgfs_forget(fs, e.ino, 1);
		made = r == -ENOENT && imgfs_lookup(fs, c->newparent, c->newname, &e) >= 0;
		if (made)
			imgfs_forget(fs, e.ino, 1);
		break;
	case JOURNAL_LINK:
		/* The answer names the inode linked, by the node id the kernel knows it by. */
		r = imgfs_lookup(fs, c->newparent, c->newname, &e);
		if (r < 0)
			return false;
		imgfs_forget(fs, e.ino, 1);
		made = imgfs_entry(fs, c->parent, ent) >= 0;
		if (made && ent->st.st_ino != e.st.st_ino) {
			imgfs_forget(fs, ent->ino, 1);
			made = false;
		}
		break;
	default:
		made = imgfs_lookup(fs, c->parent, c->name, ent) >= 0;
		if (made && (ent->st.st_mode & S_IFMT) != type) {
			imgfs_forget(fs, ent->ino, 1);
			made = false;
		}
		break;
	}
	if (made)
		log_sent_again(c);
	return made;
}

/* Records c until journal_end(); -1 when not recorded. */
static int change_begin(fuse_req_t req, const struct journal_change *c)
{
	return journal_begin(req_session(req)->journal, c);
}

/* Tests ($IMGFS_TEST_KILL_AFTER): the first worker dies after it made a change of this
 * kind and before it answers, the window a takeover must close. */
static void kill_point(fuse_req_t req, enum journal_op op)
{
	if (req_session(req)->kill_after == (int)op)
		(void)kill(getpid(), SIGKILL);
}

/* Makes a name (mknod, mkdir, symlink) and answers with its entry. */
static void make_entry(fuse_req_t req, const struct journal_change *c, mode_t type,
                       int (*make)(fuse_req_t req, const struct journal_change *c,
                                   struct imgfs_entry *ent, const void *arg),
                       const void *arg)
{
	struct journal *j = req_session(req)->journal; /* req is gone once answered */
	struct imgfs_entry ent;
	int slot, r;

	if (already_made(req, c, type, &ent)) {
		reply_entry(req, 0, &ent);
		return;
	}
	slot = change_begin(req, c);
	r = make(req, c, &ent, arg);
	kill_point(req, c->op);
	reply_entry(req, r, &ent);
	journal_end(j, slot);
}

struct mknod_arg {
	mode_t mode;
	dev_t rdev;
};

static int make_node(fuse_req_t req, const struct journal_change *c, struct imgfs_entry *ent,
                     const void *arg)
{
	const struct mknod_arg *a = arg;
	struct imgfs_cred cred = req_cred(req);

	return imgfs_mknod(req_fs(req), c->parent, c->name, a->mode, a->rdev, &cred, ent);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct journal_change c = change_of(req, JOURNAL_MKNOD, parent, name, 0, NULL);

	make_entry(req, &c, mode & S_IFMT, make_node, &(struct mknod_arg){mode, rdev});
}

static int make_dir(fuse_req_t req, const struct journal_change *c, struct imgfs_entry *ent,
                    const void *arg)
{
	struct imgfs_cred cred = req_cred(req);

	return imgfs_mkdir(req_fs(req), c->parent, c->name, *(const mode_t *)arg, &cred, ent);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct journal_change c = change_of(req, JOURNAL_MKDIR, parent, name, 0, NULL);

	make_entry(req, &c, S_IFDIR, make_dir, &mode);
}

static int make_symlink(fuse_req_t req, const struct journal_change *c, struct imgfs_entry *ent,
                        const void *arg)
{
	struct imgfs_cred cred = req_cred(req);

	return imgfs_symlink(req_fs(req), c->parent, c->name, arg, &cred, ent);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct journal_change c = change_of(req, JOURNAL_SYMLINK, parent, name, 0, NULL);

	make_entry(req, &c, S_IFLNK, make_symlink, link);
}

static int make_link(fuse_req_t req, const struct journal_change *c, struct imgfs_entry *ent,
                     const void *arg)
{
	(void)arg;
	return imgfs_link(req_fs(req), c->parent, c->newparent, c->newname, ent);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	/* parent: the inode linked. */
	struct journal_change c = change_of(req, JOURNAL_LINK, ino, NULL, newparent, newname);

	make_entry(req, &c, 0, make_link, NULL);
}

/* Removes or moves a name (unlink, rmdir, rename) and answers. */
static void change_name(fuse_req_t req, const struct journal_change *c, unsigned rename_flags)
{
	struct imgfs *fs = req_fs(req);
	struct journal *j = req_session(req)->journal; /* req is gone once answered */
	int slot, r;

	if (already_made(req, c, 0, NULL)) {
		fuse_reply_err(req, 0);
		return;
	}
	slot = change_begin(req, c);
	if (c->op == JOURNAL_UNLINK)
		r = imgfs_unlink(fs, c->parent, c->name);
	else if (c->op == JOURNAL_RMDIR)
		r = imgfs_rmdir(fs, c->parent, c->name);
	else
		r = imgfs_rename(fs, c->parent, c->name, c->newparent, c->newname, rename_flags);
	kill_point(req, c->op);
	fuse_reply_err(req, -r);
	journal_end(j, slot);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct journal_change c = change_of(req, JOURNAL_UNLINK, parent, name, 0, NULL);

	change_name(req, &c, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct journal_change c = change_of(req, JOURNAL_RMDIR, parent, name, 0, NULL);

	change_name(req, &c, 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
	struct journal_change c = change_of(req, JOURNAL_RENAME, parent, name, newparent, newname);
	unsigned f = 0;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (flags & RENAME_NOREPLACE)
		f |= IMGFS_RENAME_NOREPLACE;
	if (flags & RENAME_EXCHANGE) {
		/* Made twice, an exchange undoes itself, and its end state tells nothing: not
		 * recorded. */
		fuse_reply_err(req, -imgfs_rename(req_fs(req), parent, name, newparent, newname,
		                                  f | IMGFS_RENAME_EXCHANGE));
		return;
	}
	change_name(req, &c, f);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
	struct journal_change c = change_of(req, JOURNAL_CREATE, parent, name, 0, NULL);
	struct imgfs_cred cred = req_cred(req);
	struct imgfs_entry ent;
	struct fuse_entry_param e;
	struct imgfs_file *f;
	bool again = journal_take_prior(req_session(req)->journal, &c);
	int slot, r;

	slot = change_begin(req, &c);
	r = imgfs_create(req_fs(req), parent, name, mode, fi->flags, &cred, &ent, &f);
	log_debug("create %llu '%s' 0%o: %d", (unsigned long long)parent, name, (unsigned)mode, r);
	if (r == -EEXIST && (!(fi->flags & O_EXCL) || again)) {
		/* There by now: made by the CREATE of a process before us that died before it
		 * answered (the kernel sent it again; then also with O_EXCL, as the journal
		 * says), or by a racing one. open(2) without O_EXCL opens what is there. */
		r = imgfs_lookup(req_fs(req), parent, name, &ent);
		if (r >= 0) {
			int q = imgfs_open(req_fs(req), ent.ino, fi->flags & ~O_CREAT, &f);

			if (q < 0)
				imgfs_forget(req_fs(req), ent.ino, 1);
			r = q;
		}
		if (r >= 0 && again)
			log_sent_again(&c);
	}
	if (r < 0) {
		reply_error(req, r);
		journal_end(req_session(req)->journal, slot);
		return;
	}
	/* Opened again by a process taking over: not to be created or truncated again. */
	r = handles_add(req_session(req)->handles, ent.ino,
	                (uint32_t)fi->flags & ~(uint32_t)(O_CREAT | O_EXCL | O_TRUNC), HANDLE_FILE,
	                f, &fi->fh);
	if (r < 0) {
		imgfs_release(req_fs(req), f);
		imgfs_forget(req_fs(req), ent.ino, 1);
		reply_error(req, r);
		journal_end(req_session(req)->journal, slot);
		return;
	}
	fi->keep_cache = 1;
	fi->direct_io = open_direct(req, fi->flags);
	fi->noflush = 1;
	e = entry_param(&ent);
	kill_point(req, c.op);
	{
		/* req is gone once answered */
		struct fuse_ops_session *s = req_session(req);

		if (fuse_reply_create(req, &e, fi) < 0) {
			imgfs_release(s->fs, handles_remove(s->handles, fi->fh));
			imgfs_forget(s->fs, ent.ino, 1);
		}
		journal_end(s->journal, slot);
	}
}

/* Moves the request's data (userdata: its fuse_bufvec) into the upper file: from the pipe
 * the request was spliced into (the kernel's pages, not copied on the way), or from the
 * daemon's buffer (small requests, or no splice). fuse_buf_copy() falls back to read and
 * write where splice cannot be used, and leaves what it did not take for libfuse to drop. */
static ssize_t write_from_bufvec(int fd, uint64_t off, size_t size, void *userdata)
{
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);

	dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
	dst.buf[0].fd = fd;
	dst.buf[0].pos = (off_t)off;
	return fuse_buf_copy(&dst, userdata, 0);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
                         struct fuse_file_info *fi)
{
	struct imgfs_writeback wb;
	struct imgfs_cred writer;
	struct imgfs_file *f;
	bool direct = false;
	ssize_t n;

	(void)ino;
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* A direct write (the open's flags come with each write; a write from the page cache
	 * of a mapping carries none) has not been through the kernel's file_remove_privs(). */
	if (open_direct(req, fi->flags)) {
		writer = req_cred(req);
		direct = true;
	}
	f = file_of(req, fi);
	if (!f) {
		fuse_reply_err(req, EBADF);
		return;
	}
	n = imgfs_write_with(req_fs(req), f, (uint64_t)off, fuse_buf_size(in), write_from_bufvec,
	                     in, direct ? &writer : NULL, &wb);
	if (n < 0)
		reply_error(req, (int)n);
	else
		fuse_reply_write(req, (size_t)n);
	/* After the reply: the writer goes on with its next write (served by another thread)
	 * while this one submits the I/O. */
	imgfs_writeback(&wb);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct imgfs_file *f = file_of(req, fi);

	(void)ino;
	fuse_reply_err(req, f ? -imgfs_fsync(req_fs(req), f, datasync != 0) : EBADF);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)fi; /* no handle where the kernel opens directories itself */
	fuse_reply_err(req, -imgfs_fsyncdir(req_fs(req), ino, datasync != 0));
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
	fuse_reply_err(req, -imgfs_setxattr(req_fs(req), ino, name, value, size, flags));
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, -imgfs_removexattr(req_fs(req), ino, name));
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
	struct imgfs_file *f;

	(void)ino;
	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	f = file_of(req, fi);
	fuse_reply_err(
	    req,
	    f ? -imgfs_fallocate(req_fs(req), f, mode, (uint64_t)offset, (uint64_t)length) : EBADF);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                               struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
                               struct fuse_file_info *fi_out, size_t len, int flags)
{
	(void)ino_in, (void)off_in, (void)fi_in, (void)ino_out, (void)off_out, (void)fi_out;
	(void)len, (void)flags;
	/* The kernel copies through read and write instead. */
	fuse_reply_err(req, imgfs_is_ro(req_fs(req)) ? EROFS : ENOSYS);
}

/* Opens the object of a handle given out by a process before this one (which died or was
 * replaced) again, from its record: the same inode with the same flags, never created or
 * truncated again. */
static void *reopen(struct fuse_ops_session *s, uint64_t fh, enum handle_kind kind)
{
	struct handle_rec rec;
	void *obj = NULL, *cur;
	int r;

	r = handles_rec(s->handles, fh, &rec);
	if (r >= 0 && rec.kind != (uint32_t)kind)
		r = -EBADF;
	if (r >= 0 && !s->fs) {
		r = s->hops ? s->hops->reopen(s->ctx, &rec, &obj) : -EBADF;
		if (r >= 0 && !obj)
			r = -EIO;
	} else if (r >= 0 && kind == HANDLE_FILE) {
		struct imgfs_file *f;

		r = imgfs_open(s->fs, rec.ino,
		               (int)(rec.flags & ~(uint32_t)(O_CREAT | O_EXCL | O_TRUNC)), &f);
		obj = r >= 0 ? f : NULL;
	} else if (r >= 0) {
		struct imgfs_dir *d;

		r = imgfs_opendir(s->fs, rec.ino, &d);
		obj = r >= 0 ? d : NULL;
	}
	if (r < 0) {
		log_msg(LOG_WARNING, "cannot open handle %llu (inode %llu) again: %s",
		        (unsigned long long)fh, (unsigned long long)rec.ino, strerror(-r));
		return NULL;
	}
	cur = handles_set(s->handles, fh, obj);
	if (cur != obj) /* another thread was first, or the handle was released meanwhile */
		close_obj(s, kind, obj);
	return cur;
}

static const struct fuse_lowlevel_ops imgfs_ll_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .lseek = op_lseek,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .statfs = op_statfs,
    .access = op_access,
    .ioctl = op_ioctl,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .fsync = op_fsync,
    .fsyncdir = op_fsyncdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .create = op_create,
    .write_buf = op_write_buf,
    .setxattr = op_setxattr,
    .removexattr = op_removexattr,
    .fallocate = op_fallocate,
    .copy_file_range = op_copy_file_range,
};

/* libfuse builds some lines with several calls: collect them per thread up to the newline. */
static __thread char log_pending[1024];
static __thread size_t log_pending_len;

static void fuse_log_sink(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char *nl;
	int n;

	n = vsnprintf(log_pending + log_pending_len, sizeof(log_pending) - log_pending_len, fmt,
	              ap);
	if (n > 0)
		log_pending_len = MIN(log_pending_len + (size_t)n, sizeof(log_pending) - 1);
	while ((nl = memchr(log_pending, '\n', log_pending_len)) ||
	       log_pending_len == sizeof(log_pending) - 1) {
		size_t line = nl ? (size_t)(nl - log_pending) : log_pending_len;

		log_pending[line] = '\0';
		if (line > 0)
			log_msg((int)level, "%s", log_pending);
		line = MIN(line + 1, log_pending_len);
		memmove(log_pending, log_pending + line, log_pending_len - line);
		log_pending_len -= line;
	}
}

void fuse_ops_route_logs(void)
{
	fuse_set_log_func(fuse_log_sink);
}

/* Appends ",opt" to the option string, escaping the characters libfuse splits on. */
static int opt_add(char **opts, const char *opt, bool escape)
{
	size_t len = *opts ? strlen(*opts) : 0, add = strlen(opt);
	char *s, *p;

	s = realloc(*opts, len + 2 * add + 2);
	if (!s)
		return -ENOMEM;
	p = s + len;
	if (len > 0)
		*p++ = ',';
	for (const char *q = opt; *q; q++) {
		if (escape && (*q == ',' || *q == '\\'))
			*p++ = '\\';
		*p++ = *q;
	}
	*p = '\0';
	*opts = s;
	return 0;
}

/* Attributes of an inode changed behind the kernel's back (see imgfs_set_notify()). Only
 * the attributes are dropped (offset -1): that takes no lock the kernel could be holding
 * for the request in progress. */
static void notify_inval(void *userdata, uint64_t ino)
{
	struct fuse_ops_session *s = userdata;
	int r = fuse_lowlevel_notify_inval_inode(s->se, ino, -1, 0);

	if (r < 0 && r != -ENOENT)
		log_debug("invalidating inode %llu: %d", (unsigned long long)ino, r);
}

static int mount_session(const struct fuse_lowlevel_ops *ops, size_t ops_size, struct imgfs *fs,
                         void *ctx, const struct fuse_ops_handle_ops *hops, bool ro,
                         const struct fuse_ops_opts *o, struct fuse_ops_session **ret);

void *fuse_ops_ctx(fuse_req_t req)
{
	return req_session(req)->ctx;
}

int fuse_ops_handle_add(fuse_req_t req, uint64_t ino, uint32_t flags, enum handle_kind kind,
                        void *obj, uint64_t *ret_fh)
{
	return handles_add(req_session(req)->handles, ino, flags, kind, obj, ret_fh);
}

void *fuse_ops_handle(fuse_req_t req, uint64_t fh, enum handle_kind kind)
{
	struct fuse_ops_session *s = req_session(req);
	void *obj = handles_get(s->handles, fh);

	return obj ? obj : reopen(s, fh, kind);
}

void *fuse_ops_handle_remove(fuse_req_t req, uint64_t fh)
{
	return handles_remove(req_session(req)->handles, fh);
}

static void *reopen(struct fuse_ops_session *s, uint64_t fh, enum handle_kind kind);

/* Opens every file and directory the kernel holds open again before serving: a file that
 * is unlinked later must still have its data here, as it had in the process before. What
 * cannot be opened now is tried again at its first use. */
static void reopen_all(struct fuse_ops_session *s)
{
	uint64_t end = handles_end(s->handles);
	unsigned n = 0;

	for (uint64_t fh = 1; fh < end; fh++) {
		struct handle_rec rec;

		if (handles_rec(s->handles, fh, &rec) < 0 || handles_get(s->handles, fh))
			continue;
		if (reopen(s, fh, (enum handle_kind)rec.kind))
			n++;
	}
	if (n > 0)
		log_msg(LOG_INFO, "%u open file(s) and directories taken over", n);
}

/* The FUSE_INIT of a new mount, read before the loop starts: its fuse_init_in is kept for
 * the processes that take the connection over. */
static int receive_init(struct fuse_ops_session *s)
{
	struct fuse_buf buf = {0};
	const struct fuse_in_header *h;
	int r;

	do
		r = fuse_session_receive_buf(s->se, &buf);
	while (r == -EINTR);
	if (r <= 0) {
		free(buf.mem);
		return r < 0 ? r : -ENODEV;
	}
	h = buf.mem;
	if ((buf.flags & FUSE_BUF_IS_FD) || (size_t)r < sizeof(*h) || h->opcode != FUSE_INIT ||
	    h->len != (uint32_t)r || (size_t)r - sizeof(*h) > sizeof(s->init)) {
		free(buf.mem);
		return -EPROTO;
	}
	s->init_len = (size_t)r - sizeof(*h);
	memcpy(s->init, (const char *)buf.mem + sizeof(*h), s->init_len);
	buf.size = (size_t)r;
	fuse_session_process_buf(s->se, &buf);
	free(buf.mem);
	return 0;
}

/* Feeds the session the FUSE_INIT the first process received, so that it serves the
 * connection as negotiated then. The reply goes to the kernel under a request id it never
 * issued (the top bit is set only on resent requests, the low one only on interrupts): it
 * answers ENOENT, which libfuse ignores. */
#define TAKEOVER_INIT_UNIQUE ((UINT64_C(1) << 62) | 2)
/* FUSE_NOTIFY_RESEND (kernel 6.9, protocol 7.40): the kernel queues again every request
 * that was read from the connection and not answered. */
#define NOTIFY_RESEND 7

static int take_over(struct fuse_ops_session *s, const void *init, size_t init_len)
{
	struct {
		struct fuse_in_header h;
		uint8_t init[128];
	} msg = {0};
	struct fuse_out_header resend = {.len = sizeof(resend), .error = NOTIFY_RESEND};
	struct fuse_buf buf = {0};
	ssize_t n;

	if (init_len < 16 || init_len > sizeof(msg.init))
		return -EPROTO;
	msg.h = (struct fuse_in_header){
	    .len = (uint32_t)(sizeof(msg.h) + init_len),
	    .opcode = FUSE_INIT,
	    .unique = TAKEOVER_INIT_UNIQUE,
	};
	memcpy(msg.init, init, init_len);
	buf.mem = &msg;
	buf.size = msg.h.len;
	fuse_session_process_buf(s->se, &buf);
	if (fuse_session_exited(s->se))
		return -EPROTO;
	do
		n = write(fuse_session_fd(s->se), &resend, sizeof(resend));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return 0;
}

int fuse_ops_conn_fd(struct fuse_ops_session *s)
{
	return fuse_session_fd(s->se);
}

int fuse_ops_init_data(struct fuse_ops_session *s, const void **ret, size_t *ret_len)
{
	if (s->init_len == 0)
		return -ENOENT;
	*ret = s->init;
	*ret_len = s->init_len;
	return 0;
}

int fuse_ops_mount(struct imgfs *fs, const struct fuse_ops_opts *o, struct fuse_ops_session **ret)
{
	return mount_session(&imgfs_ll_ops, sizeof(imgfs_ll_ops), fs, fs, NULL, imgfs_is_ro(fs), o,
	                     ret);
}

int fuse_ops_mount_ll(const struct fuse_lowlevel_ops *ops, size_t size, void *ctx, bool ro,
                      const struct fuse_ops_handle_ops *hops, const struct fuse_ops_opts *o,
                      struct fuse_ops_session **ret)
{
	return mount_session(ops, size, NULL, ctx, hops, ro, o, ret);
}

/* $IMGFS_TEST_KILL_AFTER, for tests: the kind of change after which the first worker of a
 * supervised writable mount kills itself, before it answers (kill_point()); 0 when unset. */
static int test_kill_after(void)
{
	static const char *const names[] = {
	    [JOURNAL_MKNOD] = "mknod",   [JOURNAL_MKDIR] = "mkdir",   [JOURNAL_SYMLINK] = "symlink",
	    [JOURNAL_LINK] = "link",     [JOURNAL_UNLINK] = "unlink", [JOURNAL_RMDIR] = "rmdir",
	    [JOURNAL_RENAME] = "rename", [JOURNAL_CREATE] = "create"};
	const char *v = getenv("IMGFS_TEST_KILL_AFTER");

	for (size_t i = 1; v && i < ARRAY_SIZE(names); i++)
		if (streq(v, names[i]))
			return (int)i;
	return 0;
}

static int mount_session(const struct fuse_lowlevel_ops *ops, size_t ops_size, struct imgfs *fs,
                         void *ctx, const struct fuse_ops_handle_ops *hops, bool ro,
                         const struct fuse_ops_opts *o, struct fuse_ops_session **ret)
{
	_cleanup_free_ char *opts = NULL, *fsname = NULL;
	struct fuse_ops_session *s;
	int r;

	if (asprintf(&fsname, "fsname=%s", o->fsname) < 0)
		return log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", o->mountpoint);
	r = opt_add(&opts, fsname, true);
	if (r >= 0)
		r = opt_add(&opts, "subtype=imgfs,default_permissions", false);
	if (r >= 0 && ro)
		r = opt_add(&opts, "ro", false);
	if (r >= 0 && o->allow_other)
		r = opt_add(&opts, "allow_other", false);
	if (r >= 0 && o->suid_dev)
		r = opt_add(&opts, "suid,dev", false);
	if (r >= 0 && o->extra && o->extra[0])
		r = opt_add(&opts, o->extra, false);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot mount '%s'", o->mountpoint);

	char *argv[] = {(char *)"imgfs", (char *)"-o", opts, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);

	s = calloc(1, sizeof(*s));
	if (!s)
		return log_errno(LOG_ERR, -ENOMEM, "cannot mount '%s'", o->mountpoint);
	s->fs = fs;
	s->ctx = ctx;
	s->hops = hops;
	s->max_threads = o->max_threads ? o->max_threads : DEFAULT_MAX_THREADS;
	s->supervised = o->supervised || o->takeover;
	/* Room for a million open files and directories: sparse, so only what is used costs. */
	r = handles_open(s->supervised ? o->state_dirfd : -1, "handles", o->takeover, 1u << 20,
	                 &s->handles);
	if (r < 0) {
		free(s);
		return log_errno(LOG_ERR, r, "cannot mount '%s': cannot set up the handle table",
		                 o->mountpoint);
	}
	if (fs && !ro && s->supervised) {
		r = journal_open(o->state_dirfd, "journal", o->takeover, &s->journal);
		if (r < 0) {
			handles_free(s->handles);
			free(s);
			return log_errno(LOG_ERR, r, "cannot mount '%s': cannot set up the journal",
			                 o->mountpoint);
		}
		if (journal_prior_count(s->journal) > 0)
			log_msg(LOG_INFO, "%u change(s) of the dead daemon were in flight",
			        journal_prior_count(s->journal));
		if (!o->takeover)
			s->kill_after = test_kill_after();
	}
	log_debug("fuse options: %s", opts);
	s->se = fuse_session_new(&args, ops, ops_size, s);
	fuse_opt_free_args(&args);
	if (!s->se) {
		handles_free(s->handles);
		journal_free(s->journal);
		free(s);
		log_msg(LOG_ERR, "cannot mount '%s': invalid FUSE options '%s'", o->mountpoint,
		        opts);
		return -EINVAL;
	}
	if (fs)
		imgfs_set_notify(fs, notify_inval, s);
	if (!s->supervised && fuse_set_signal_handlers(s->se) == 0)
		s->signals = true;
	if (o->takeover) {
		char dev[32];

		/* libfuse takes "/dev/fd/N" for a connection that is already mounted. */
		snprintf(dev, sizeof(dev), "/dev/fd/%d", o->conn_fd);
		if (fuse_session_mount(s->se, dev) != 0) {
			fuse_ops_free(s);
			return log_errno(LOG_ERR, -EBADF, "cannot take over '%s'", o->mountpoint);
		}
		/* An image mount's open files must be open here before anything can unlink
		 * them; another filesystem's are opened at their first use. */
		if (fs)
			reopen_all(s);
		r = take_over(s, o->init, o->init_len);
		if (r < 0) {
			fuse_ops_free(s);
			return log_errno(LOG_ERR, r, "cannot take over '%s'", o->mountpoint);
		}
		*ret = s;
		return 0;
	}
	errno = 0;
	if (fuse_session_mount(s->se, o->mountpoint) != 0) {
		r = negative_errno();
		fuse_ops_free(s);
		return log_errno(LOG_ERR, r, "cannot mount '%s'", o->mountpoint);
	}
	s->mounted = !s->supervised;
	if (s->supervised) {
		r = receive_init(s);
		if (r < 0) {
			fuse_session_unmount(s->se);
			fuse_ops_free(s);
			return log_errno(LOG_ERR, r,
			                 "cannot mount '%s': no FUSE_INIT from the kernel",
			                 o->mountpoint);
		}
	}
	*ret = s;
	return 0;
}

int fuse_ops_loop(struct fuse_ops_session *s)
{
	struct fuse_loop_config *cfg;
	int r;

	/* Decoded spans (1-4 MiB, freed in any order by the span cache) get pages of their
	 * own, returned when a span is evicted: from the heap they left holes that kept the
	 * daemon at 2-3x the cache's size. A fixed threshold also stops glibc from raising it
	 * to the largest block freed. Reply buffers (the kernel asks for 128 KiB) stay in the
	 * heap, reused without page faults. */
	mallopt(M_MMAP_THRESHOLD, 512 << 10);
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	/* One /dev/fuse fd per worker thread: requests are read in parallel. Not when the
	 * connection must outlive us: the kernel aborts the requests read from a cloned fd
	 * when it closes, so a new process could not answer them. */
	fuse_loop_cfg_set_clone_fd(cfg, s->supervised ? 0 : 1);
	fuse_loop_cfg_set_max_threads(cfg, s->max_threads);
	fuse_loop_cfg_set_idle_threads(cfg, 4);
	r = fuse_session_loop_mt(s->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	/* A positive result is the signal that ended the loop: a clean exit. */
	return r < 0 ? r : 0;
}

void fuse_ops_free(struct fuse_ops_session *s)
{
	if (!s)
		return;
	if (s->mounted)
		fuse_session_unmount(s->se);
	if (s->signals)
		fuse_remove_signal_handlers(s->se);
	fuse_session_destroy(s->se);
	handles_free(s->handles);
	journal_free(s->journal);
	free(s);
}
