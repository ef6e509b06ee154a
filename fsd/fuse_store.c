/* The layer store's FUSE glue: op_<op>() -> layerstore_*() (layerstore.h) -> reply. Like
 * fuse_ops.c for an image mount, it holds no filesystem logic; the session (options, loop,
 * teardown, takeover) is fuse_ops.c's (fuse_ops_ll.h), and so is the handle table: fi->fh
 * is a slot of it, which a process taking the connection over opens again at first use. */
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include "common/log.h"
#include "fsd/fuse_ops_ll.h"
#include "fsd/fuse_store.h"
#include "fsd/layerstore.h"

/* What exists never changes (references and layers stay while the store lives), so the
 * kernel may keep names and attributes; what does not exist may appear at the next lookup
 * (a reference resolved once the registry answers): no negative entries are cached. */
#define TIMEOUT 86400.0

static struct layerstore *req_ls(fuse_req_t req)
{
	return fuse_ops_ctx(req);
}

static void reply_error(fuse_req_t req, int r)
{
	fuse_reply_err(req, r < 0 ? -r : EIO);
}

static void reply_entry(fuse_req_t req, int r, const struct imgfs_entry *ent)
{
	if (r < 0) {
		reply_error(req, r);
		return;
	}
	fuse_reply_entry(req, &(struct fuse_entry_param){
	                          .ino = ent->ino,
	                          .generation = ent->generation,
	                          .attr = ent->st,
	                          .attr_timeout = TIMEOUT,
	                          .entry_timeout = TIMEOUT,
	                      });
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->want |= conn->capable &
	              (FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_CACHE_SYMLINKS);
	conn->want &= ~(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_SPLICE_READ |
	                FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_POSIX_LOCKS |
	                FUSE_CAP_FLOCK_LOCKS);
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	conn->time_gran = 1;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct imgfs_entry ent;
	int r = layerstore_lookup(req_ls(req), parent, name, &ent);

	log_debug("lookup %llu '%s': %d", (unsigned long long)parent, name, r);
	reply_entry(req, r, &ent);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	layerstore_forget(req_ls(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		layerstore_forget(req_ls(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int r = layerstore_getattr(req_ls(req), ino, &st);

	(void)fi;
	if (r < 0)
		reply_error(req, r);
	else
		fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	int r = layerstore_readlink(req_ls(req), ino, buf, sizeof(buf));

	if (r < 0)
		reply_error(req, r);
	else
		fuse_reply_readlink(req, buf);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ls_file *f;
	int r = layerstore_open(req_ls(req), ino, fi->flags, &f);

	if (r < 0) {
		reply_error(req, r);
		return;
	}
	r = fuse_ops_handle_add(req, ino, (uint32_t)fi->flags, HANDLE_FILE, f, &fi->fh);
	if (r < 0) {
		layerstore_release(req_ls(req), f);
		reply_error(req, r);
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = 1;
	fuse_ops_reply_open(req, fi, HANDLE_FILE);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	_cleanup_free_ char *buf = NULL;
	struct ls_file *f;
	ssize_t n;

	buf = fuse_ops_reply_buffer(req, off, size);
	if (!buf)
		return;
	f = fuse_ops_handle(req, fi->fh, HANDLE_FILE);
	if (!f) {
		fuse_reply_err(req, EBADF);
		return;
	}
	n = layerstore_read(req_ls(req), f, buf, size, (uint64_t)off);
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

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ls_dir *d;
	int r = layerstore_opendir(req_ls(req), ino, &d);

	if (r < 0) {
		reply_error(req, r);
		return;
	}
	r = fuse_ops_handle_add(req, ino, (uint32_t)fi->flags, HANDLE_DIR, d, &fi->fh);
	if (r < 0) {
		layerstore_releasedir(req_ls(req), d);
		reply_error(req, r);
		return;
	}
	fuse_ops_reply_open(req, fi, HANDLE_DIR);
}

struct dirbuf {
	fuse_req_t req;
	char *buf;
	size_t size, pos;
};

static int add_dirent(const char *name, const struct imgfs_entry *ent, uint64_t next_off,
                      void *userdata)
{
	struct dirbuf *b = userdata;
	size_t need = fuse_add_direntry(b->req, NULL, 0, name, NULL, 0);

	if (next_off > INT64_MAX || b->pos + need > b->size)
		return 1;
	fuse_add_direntry(b->req, b->buf + b->pos, b->size - b->pos, name, &ent->st,
	                  (off_t)next_off);
	b->pos += need;
	return 0;
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
	_cleanup_free_ char *buf = NULL;
	struct dirbuf b = {.req = req, .size = size};
	struct ls_dir *d;
	int r;

	(void)ino;
	buf = fuse_ops_reply_buffer(req, off, size);
	if (!buf)
		return;
	d = fuse_ops_handle(req, fi->fh, HANDLE_DIR);
	if (!d) {
		fuse_reply_err(req, EBADF);
		return;
	}
	b.buf = buf;
	r = layerstore_readdir(req_ls(req), d, (uint64_t)off, add_dirent, &b);
	if (r < 0 && b.pos == 0) {
		reply_error(req, r);
		return;
	}
	fuse_reply_buf(req, buf, b.pos);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fuse_ops_reply_release(req, fi->fh, HANDLE_DIR);
}

static ssize_t xattr_of(void *ls, uint64_t ino, const char *name, char *buf, size_t size)
{
	return name ? layerstore_getxattr(ls, ino, name, buf, size)
	            : layerstore_listxattr(ls, ino, buf, size);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	fuse_ops_reply_xattr(req, ino, name, size, xattr_of, req_ls(req));
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	fuse_ops_reply_xattr(req, ino, NULL, size, xattr_of, req_ls(req));
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	fuse_ops_reply_statfs(req, layerstore_statfs(req_ls(req), ino, &sv), &sv);
}

/* `use` is created (O_CREAT) to take a reference: counted, then answered ENOENT. */
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
	(void)mode;
	(void)fi;
	reply_error(req, layerstore_create(req_ls(req), parent, name));
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)mode;
	(void)rdev;
	reply_error(req, layerstore_create(req_ls(req), parent, name));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_error(req, layerstore_rmdir(req_ls(req), parent, name));
}

static void op_refuse(fuse_req_t req)
{
	fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent;
	(void)name;
	op_refuse(req);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent;
	(void)name;
	(void)mode;
	op_refuse(req);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
	(void)ino;
	(void)attr;
	(void)to_set;
	(void)fi;
	op_refuse(req);
}

static const struct fuse_lowlevel_ops store_ll_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .statfs = op_statfs,
    .create = op_create,
    .mknod = op_mknod,
    .rmdir = op_rmdir,
    .unlink = op_unlink,
    .mkdir = op_mkdir,
    .setattr = op_setattr,
};

/* A file or directory a process before this one opened, opened again from its record. */
static int store_reopen(void *ctx, const struct handle_rec *rec, void **ret)
{
	struct layerstore *ls = ctx;
	struct ls_file *f = NULL;
	struct ls_dir *d = NULL;
	int r;

	if (rec->kind == HANDLE_DIR) {
		r = layerstore_opendir(ls, rec->ino, &d);
		*ret = d;
	} else {
		r = layerstore_open(
		    ls, rec->ino, (int)(rec->flags & ~(uint32_t)(O_CREAT | O_EXCL | O_TRUNC)), &f);
		*ret = f;
	}
	return r;
}

static void store_close(void *ctx, enum handle_kind kind, void *obj)
{
	if (kind == HANDLE_DIR)
		layerstore_releasedir(ctx, obj);
	else
		layerstore_release(ctx, obj);
}

static const struct fuse_ops_handle_ops store_handle_ops = {
    .reopen = store_reopen,
    .close = store_close,
};

int fuse_store_mount(struct layerstore *ls, const struct fuse_ops_opts *o,
                     struct fuse_ops_session **ret)
{
	/* Not mounted read-only: `use` and rmdir must reach the store. */
	return fuse_ops_mount_ll(&store_ll_ops, sizeof(store_ll_ops), ls, false, &store_handle_ops,
	                         o, ret);
}
