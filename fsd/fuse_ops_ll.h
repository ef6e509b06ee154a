/* fuse_ops.c's session for a filesystem other than struct imgfs (the layer store's glue,
 * fuse_store.c): the same mount options, loop and teardown (fuse_ops.h), with the caller's
 * libfuse operations. Includes libfuse: for the files directly in fsd/ only. */
#pragma once

#include <fuse_lowlevel.h>
#include "fsd/fs/handles.h"
#include "fsd/fuse_ops.h"

/* How such a filesystem opens the object of a handle (fsd/fs/handles.h) again in a process
 * that took the connection over (rec: what was opened, as given to fuse_ops_handle_add()),
 * and closes one. */
struct fuse_ops_handle_ops {
	int (*reopen)(void *ctx, const struct handle_rec *rec, void **ret);
	void (*close)(void *ctx, enum handle_kind kind, void *obj);
};

/* fuse_ops_mount() with ops (size bytes) as the operations and ctx as what fuse_ops_ctx()
 * returns in them; ro mounts read-only. hops: how its handles are opened again after a
 * takeover (the ops must then give out handles with fuse_ops_handle_add()); NULL when it
 * keeps nothing open. Unlike an image mount's, the handles are not all opened again before
 * a new process serves (nothing can be unlinked under them): each one at its first use. */
int fuse_ops_mount_ll(const struct fuse_lowlevel_ops *ops, size_t size, void *ctx, bool ro,
                      const struct fuse_ops_handle_ops *hops, const struct fuse_ops_opts *o,
                      struct fuse_ops_session **ret);
/* The ctx given to fuse_ops_mount_ll(), from a request of its session. */
void *fuse_ops_ctx(fuse_req_t req);

/* The session's handle table, for fuse_ops_mount_ll() filesystems: a new handle for obj
 * (opened as ino with the open flags), -errno when the table is full; */
int fuse_ops_handle_add(fuse_req_t req, uint64_t ino, uint32_t flags, enum handle_kind kind,
                        void *obj, uint64_t *ret_fh);
/* the object of handle fh, opened again with hops->reopen when a process before this one
 * gave it out (NULL: no such handle, or it cannot be opened again: logged); */
void *fuse_ops_handle(fuse_req_t req, uint64_t fh, enum handle_kind kind);
/* frees handle fh and returns its object in this process (NULL when none); */
void *fuse_ops_handle_remove(fuse_req_t req, uint64_t fh);
/* answers an OPEN (HANDLE_FILE) or OPENDIR (HANDLE_DIR) with fi; when the answer does not
 * reach the kernel (the request was interrupted), frees handle fi->fh and closes its
 * object. req is gone once answered: nothing of it is used after. */
void fuse_ops_reply_open(fuse_req_t req, struct fuse_file_info *fi, enum handle_kind kind);

/* Answers that every ops table gives the same way. */

/* The buffer for a READ or READDIR reply of size bytes at offset off; NULL after replying
 * with the error (a negative offset, or no memory). Free it with free(). */
char *fuse_ops_reply_buffer(fuse_req_t req, off_t off, size_t size);
/* Reads name's value (name set) or the list of names (name NULL) of inode ino of fs into
 * buf, size bytes (size 0: the length only), as getxattr(2)/listxattr(2): the length, or
 * -errno. */
typedef ssize_t (*fuse_ops_xattr_fn)(void *fs, uint64_t ino, const char *name, char *buf,
                                     size_t size);
/* Answers GETXATTR (name set) or LISTXATTR (name NULL) of size bytes with fn(fs, ...): the
 * length alone when size is 0, else the bytes (size capped at the kernel's limits). */
void fuse_ops_reply_xattr(fuse_req_t req, uint64_t ino, const char *name, size_t size,
                          fuse_ops_xattr_fn fn, void *fs);
/* Answers STATFS with sv, or with the error r when r < 0. */
void fuse_ops_reply_statfs(fuse_req_t req, int r, const struct statvfs *sv);
/* Answers RELEASE (HANDLE_FILE) or RELEASEDIR (HANDLE_DIR): handle fh freed, its object in
 * this process (if any) closed as the session closes one of that kind. */
void fuse_ops_reply_release(fuse_req_t req, uint64_t fh, enum handle_kind kind);
