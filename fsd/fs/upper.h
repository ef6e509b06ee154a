/* The upper directory of a writable mount, in the on-disk format of the kernel's overlayfs
 * (redirect_dir=on, index=off, metacopy=off), and the primitives the merge logic
 * (fs_merge.c, fs_write.c) builds on: whiteouts, opaque and redirect xattrs, escaping of the
 * overlay's own xattr names, atomic copy-up and creation through the work directory.
 *
 * Every path is one name relative to a directory fd the caller holds (the upper root or a
 * directory below it, opened by upper_open_dir()); nothing here resolves a path with '/',
 * follows a symlink inside the upper, or crosses a mount point, so whatever a container
 * writes into its rootfs cannot make the daemon touch files elsewhere.
 *
 * Objects are first built in the work directory (same filesystem) and renamed into place,
 * so an interrupted daemon leaves either the old or the new entry, never a half-copied one;
 * upper_open() empties the work directory of such leftovers.
 *
 * A copied-up regular file is not synced before it takes its place: it is built in the
 * work directory under a pending name (upper_pending_name: boot, image, lower node,
 * sequence), linked into place, and a syncer thread later fdatasyncs it, removes the
 * pending name and fsyncs the work directory. While the pending name exists the file has
 * one link more than the user sees: upper_fstatat() reports it without that link. After a
 * crash, upper_recover() syncs what the page cache still holds (same boot) or rewrites the
 * data from the lower file (another boot), so no crash leaves a zero-filled or empty file
 * where the image had content.
 *
 * Functions return >= 0 or -errno and write out-parameters only on success. Every function
 * is thread-safe (the pending copies have their own locks); serialising changes to one name
 * is the caller's business. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include "common/macros.h"

/* overlayfs' xattr namespaces: trusted.overlay.* when mounted by root, user.overlay.* for
 * an unprivileged mount (overlayfs' userxattr). */
#define UPPER_XATTR_TRUSTED "trusted.overlay."
#define UPPER_XATTR_USER "user.overlay."

/* renameat2() flags (<stdio.h>), for a libc that lacks them: the upper and the merge
 * logic's rename both pass them. */
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef RENAME_WHITEOUT
#define RENAME_WHITEOUT (1 << 2)
#endif

/* A pending name in the work directory: "p-BOOT-IMAGE-NODE-SEQ", BOOT the first 16 hex
 * digits of the kernel's boot_id, IMAGE 12 hex digits naming the image, NODE the lower
 * node (8 hex digits), SEQ 1-16 hex digits. Lower-case hex only. */
#define UPPER_BOOT_LEN 16
#define UPPER_IMAGE_LEN 12
#define UPPER_PENDING_NAME_MAX 64

struct upper_pending_name {
	char boot[UPPER_BOOT_LEN + 1];
	char image[UPPER_IMAGE_LEN + 1];
	uint32_t node;
	uint64_t seq;
};

/* Parses a name of the work directory; -EINVAL for anything not exactly of that form. */
int upper_pending_name_parse(const char *name, struct upper_pending_name *ret);
/* Formats p into buf (UPPER_PENDING_NAME_MAX bytes). */
void upper_pending_name_format(const struct upper_pending_name *p, char *buf);

struct upper;

/* Takes ownership of root_fd and work_fd (directories on one filesystem) and empties the
 * work directory but for pending names (see upper_recover()). prefix is
 * UPPER_XATTR_TRUSTED or UPPER_XATTR_USER (copied). The environment variable
 * IMGFS_TEST_SYNC_DELAY_MS (tests only) makes the syncer wait that long before it syncs
 * a copy. */
int upper_open(int root_fd, int work_fd, const char *prefix, struct upper **ret);

/* Names in the work directory that upper_open() leaves alone: files of the filesystem
 * kept for open descriptors (see fs_internal.h). */
#define UPPER_ORPHAN_PREFIX "orphan-"
/* Syncs the pending copies first (the syncer drains its queue), then frees. */
void upper_free(struct upper *u);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct upper *, upper_free);

/* A throwaway upper (deleted at the next mount anyway): copy-up does not make data
 * durable at all, as overlayfs' "volatile". Call before the first copy-up. */
void upper_set_volatile(struct upper *u);

/* The image this mount's lower nodes belong to, as UPPER_IMAGE_LEN hex digits (the
 * start of the manifest digest). Call before the first copy-up. -EINVAL when not hex. */
int upper_set_image(struct upper *u, const char *image);

/* Where a pending copy's data comes from again after a power loss: fills *ret for the
 * regular lower file of node, or -errno (-ENOENT: no such regular file). */
struct upper_src;
typedef int (*upper_src_fn)(void *ctx, uint32_t node, struct upper_src *ret);

/* Recovers the pending names a killed daemon left in the work directory, before the
 * first copy-up: a name whose file has no other link is removed; one of this boot is
 * fdatasynced (the page cache still holds its data); one of another boot whose image is
 * upper_set_image()'s gets its data rewritten from src_of (truncated, copied, times kept,
 * fdatasynced: writes after the copy-up that were never fsynced are lost, fsynced ones
 * were never pending); one of another image is only synced (logged as a warning). Then
 * the name is removed and the work directory fsynced. Objects that are not regular files
 * are removed, never opened. Returns the number of files rewritten, or -errno. */
int upper_recover(struct upper *u, upper_src_fn src_of, void *ctx);

/* lstat of name in dirfd (AT_EMPTY_PATH in flags: of dirfd itself) as the user sees it:
 * the link of a pending name is not counted. */
int upper_fstatat(struct upper *u, int dirfd, const char *name, int flags, struct stat *ret);

/* Makes the copy-up of upper inode ino durable if it is still pending, before returning:
 * fdatasync, the pending name removed, the work directory fsynced. For a user's fsync,
 * after the caller synced its own fd: recovery then never rewrites what was fsynced.
 * 0 when ino was not pending. */
int upper_sync_pending(struct upper *u, ino_t ino);
/* Waits until every copy queued so far is durable. */
int upper_flush(struct upper *u);

/* The upper root directory (O_RDONLY|O_DIRECTORY), borrowed for the life of u. */
int upper_root_fd(const struct upper *u);

/* lstat of name in dirfd (never follows). -ENOENT when absent. */
int upper_stat(int dirfd, const char *name, struct stat *ret);
/* Whether st is an overlayfs whiteout (a character device 0/0). */
bool upper_is_whiteout(const struct stat *st);
/* Opens directory name of dirfd (O_RDONLY|O_DIRECTORY|O_NOFOLLOW); name "." reopens dirfd. */
int upper_open_dir(int dirfd, const char *name, int *ret_fd);

/* Opaque and redirect marks of an upper directory (fd from upper_open_dir()). */
bool upper_is_opaque(const struct upper *u, int dirfd);
int upper_set_opaque(const struct upper *u, int dirfd);
/* The redirect into buf (NUL-terminated): its length, -ENODATA when there is none. */
int upper_get_redirect(const struct upper *u, int dirfd, char *buf, size_t size);
int upper_set_redirect(const struct upper *u, int dirfd, const char *redirect);

/* Extended attributes of name in dirfd, never following a symlink, with the overlay's
 * escaping: names the user sees as PREFIX.X are stored as PREFIX.overlay.X, and the
 * overlay's own PREFIX.* names are hidden. getxattr(2)/listxattr(2) conventions. */
ssize_t upper_getxattr(const struct upper *u, int dirfd, const char *name, const char *xname,
                       void *buf, size_t size);
ssize_t upper_listxattr(const struct upper *u, int dirfd, const char *name, char *buf, size_t size);
int upper_setxattr(const struct upper *u, int dirfd, const char *name, const char *xname,
                   const void *value, size_t size, int flags);
int upper_removexattr(const struct upper *u, int dirfd, const char *name, const char *xname);
/* The name a user's xattr name is stored under (escaped), in buf; -ERANGE when too long. */
int upper_xattr_store_name(const struct upper *u, const char *xname, char *buf, size_t size);
/* Whether a stored xattr name is one of the overlay's own (hidden and never copied). */
bool upper_xattr_is_private(const struct upper *u, const char *stored);
/* Filters a list of stored names (NUL-separated, len bytes) in place into the names a user
 * sees; returns the new length. */
size_t upper_xattr_filter_list(const struct upper *u, char *list, size_t len);

/* Where an object comes from, for upper_copy_up(): the lower file, seen through callbacks. */
struct upper_src {
	struct stat st;   /* type, mode, owner, size, times, rdev */
	uint32_t node;    /* the lower node, recorded in the pending name */
	const char *link; /* symlink target */
	void *ctx;
	ssize_t (*read)(void *ctx, void *buf, size_t size, uint64_t off);
	int64_t (*seek)(void *ctx, uint64_t off, int whence); /* SEEK_DATA/HOLE; may be NULL */
	ssize_t (*listxattr)(void *ctx, char *buf, size_t size);
	ssize_t (*getxattr)(void *ctx, const char *name, void *buf, size_t size);
};

/* Copies src up to name in parent_fd, which must not exist there: built in the work
 * directory (data, holes kept, owner, mode, xattrs but the overlay's own, times), then
 * linked (a regular file with data: it stays pending until the syncer made it durable) or
 * renamed into place; parent_fd's times are restored afterwards (a copy-up
 * is not a change of the parent). Without data, a regular file is copied empty (it is
 * about to be truncated). For a directory, *ret_dirfd (may be NULL) receives an fd from
 * upper_open_dir() on it. */
int upper_copy_up(struct upper *u, const struct upper_src *src, int parent_fd, const char *name,
                  bool data, int *ret_dirfd);

/* What to create with upper_create(). */
struct upper_new {
	mode_t mode; /* type and permission bits, umask applied unless default_acl */
	dev_t rdev;
	uid_t uid;
	gid_t gid;
	const char *link; /* symlink target */
	bool opaque;      /* directories: hide the lower directory of the same name */
	int open_flags;   /* regular files: O_ACCMODE and O_SYNC-like flags of the fd returned */
	/* The parent's system.posix_acl_default, or NULL: the object inherits it as on any
	 * filesystem with ACLs (the upper's own filesystem applies it; mode is the mode asked
	 * for, without the umask, which a default ACL replaces). */
	const void *default_acl;
	size_t default_acl_size;
};

/* The permission bits an object created with mode gets under the default ACL acl (the
 * kernel's posix_acl_create_masq()); mode itself when acl is malformed. */
mode_t upper_acl_create_mode(const void *acl, size_t size, mode_t mode);

/* Creates name in parent_fd. When replace_whiteout, name is a whiteout that is replaced
 * atomically (built in the work directory, then exchanged); otherwise name must not exist.
 * A regular file is returned open (open_flags) in *ret_fd, a directory as from
 * upper_open_dir(); other types return -1 there. ret_fd may be NULL. */
int upper_create(struct upper *u, int parent_fd, const char *name, const struct upper_new *n,
                 bool replace_whiteout, int *ret_fd);

/* Places a whiteout at name in parent_fd, where nothing is. */
int upper_whiteout(struct upper *u, int parent_fd, const char *name);

/* Removes name (a file or a directory holding nothing but whiteouts) from parent_fd; with
 * whiteout, a whiteout takes its place atomically. */
int upper_remove(struct upper *u, int parent_fd, const char *name, bool is_dir, bool whiteout);

/* 0 when directory dirfd holds nothing but whiteouts, else -ENOTEMPTY. */
int upper_dir_only_whiteouts(int dirfd);

/* Removes the whiteouts in the directory dirfd (so that it can be replaced by a rename);
 * -ENOTEMPTY when it holds anything else. */
int upper_clear_whiteouts(int dirfd);

/* Creates a hard link at new_name of new_parent_fd to the file at (old_fd, old_name), or to
 * old_fd itself when old_name is "" (an O_PATH fd). replace_whiteout as upper_create(). */
int upper_link(struct upper *u, int old_fd, const char *old_name, int new_parent_fd,
               const char *new_name, bool replace_whiteout);

/* A unique name for a temporary object in the work directory. */
void upper_tmpname(struct upper *u, char buf[32]);
int upper_work_fd(const struct upper *u);
